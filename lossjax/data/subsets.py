"""Class subsets (``dataset.classes``) and a cap on training examples per class
(``dataset.per_class``), for any dataset.

``classes: K`` keeps the first K classes of one permutation of all classes drawn from
``subset_seed``, so that for one seed the 10 classes lie inside the 20, which lie inside the 50:
a curve over K then changes only the number of classes, never which ones. A list names the
classes instead, by index or by name. Kept classes are renumbered 0..K-1 in their original order,
and their original names are kept.

Both apply to the official training and test sets before the validation split, so the split
sees only what will be trained on. Errors are ConfigErrors naming the key: the values come from
the sweep config, which cannot check them without the dataset.
"""

from __future__ import annotations

import numpy as np

from lossjax.errors import ConfigError


def pick(class_names: tuple[str, ...], classes, subset_seed: int) -> np.ndarray:
    """The original indices of the classes kept, sorted."""
    total = len(class_names)
    if isinstance(classes, int | np.integer) and not isinstance(classes, bool):
        if not 2 <= classes <= total:
            raise ConfigError(f"dataset.classes: got {classes}, but the dataset has {total} "
                              f"classes; expected a number from 2 to {total}")
        order = np.random.default_rng(subset_seed).permutation(total)
        return np.sort(order[:classes])
    index = {n: i for i, n in enumerate(class_names)}
    kept = []
    for c in classes:
        if isinstance(c, str) and c in index:
            kept.append(index[c])
        elif isinstance(c, int | np.integer) and not isinstance(c, bool) and 0 <= c < total:
            kept.append(int(c))
        else:
            raise ConfigError(f"dataset.classes: {c!r} is not a class of this dataset; expected "
                              f"indices 0..{total - 1} or names such as {class_names[0]!r}")
    if len(set(kept)) != len(kept):
        twice = next(class_names[i] for i in kept if kept.count(i) > 1)
        raise ConfigError(f"dataset.classes: class {twice!r} is listed twice; list each once")
    if len(kept) < 2:
        raise ConfigError("dataset.classes: a classifier needs at least 2 classes; list more")
    return np.sort(np.asarray(kept, np.int64))


def keep_classes(arrays: dict[str, np.ndarray], kept: np.ndarray) -> dict[str, np.ndarray]:
    """The examples of the kept classes, in their original order, relabelled 0..K-1."""
    relabel = np.full(int(max(kept.max(), *(arrays[f"y_{s}"].max() for s in ("train", "test"))))
                      + 1, -1, np.int64)
    relabel[kept] = np.arange(len(kept))
    out = {}
    for s in ("train", "test"):
        new = relabel[arrays[f"y_{s}"].astype(np.int64)]
        rows = np.flatnonzero(new >= 0)
        out[f"x_{s}"] = arrays[f"x_{s}"][rows]
        out[f"y_{s}"] = new[rows].astype(np.int32)
    return out


def cap_per_class(y: np.ndarray, per_class: int, split_seed: int) -> np.ndarray:
    """Sorted indices of at most ``per_class`` training examples of each class, drawn at random
    within the class from ``split_seed`` (a stream of its own, so that the validation split's
    draw is unchanged by it)."""
    rng = np.random.default_rng([split_seed, 1])
    picked = [rng.permutation(np.flatnonzero(y == c))[:per_class] for c in np.unique(y)]
    return np.sort(np.concatenate(picked))


def check_every_class(y: np.ndarray, class_names: tuple[str, ...], what: str, fix: str) -> None:
    """Refuses a training set in which some class has no example: its output would train on
    nothing but pushes away."""
    counts = np.bincount(y, minlength=len(class_names))
    if (empty := np.flatnonzero(counts == 0)).size:
        names = ", ".join(repr(class_names[i]) for i in empty[:5])
        more = f" and {empty.size - 5} more" if empty.size > 5 else ""
        raise ConfigError(f"{what} leaves class {names}{more} with no training example; {fix}")
