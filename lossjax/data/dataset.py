"""The :class:`Dataset` record and :func:`load`, which assembles it from a verified source and
a validation split."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np

from lossjax.data.registry import CLASS_NAMES, check_name
from lossjax.data.sources import resolve
from lossjax.data.splits import check_val_size, split_validation


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Train / validation / test arrays of one dataset, plus what is known about them.

    From :func:`load`, images are uint8, shape (N, H, W) (grayscale) or (N, H, W, C); for
    ``digits`` they are uint8 (N, 8, 8) holding counts 0..16 (``meta["pixel_max"]`` says which).
    Labels are int32 (N,). :func:`~lossjax.data.preprocess` turns images into float32 features
    (N, D). ``meta`` is JSON-serialisable: the source, the checksums verified, the split, class
    counts. The arrays from :func:`load` are read-only (they may be views of parsed file bytes;
    making all of them read-only keeps behaviour the same whichever source served them).
    ``eq=False``: comparing arrays element-wise is never what ``==`` on a dataset should mean.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]
    meta: dict

    def __repr__(self) -> str:
        parts = ", ".join(f"{s}={getattr(self, 'x_' + s).shape}/{getattr(self, 'x_' + s).dtype}"
                          for s in ("train", "val", "test"))
        return f"Dataset({self.name!r}, {parts}, num_classes={self.num_classes})"


def load(name: str, data_dir: str | os.PathLike | None = None, val_size: int | float = 0.1,
         split_seed: int = 0) -> Dataset:
    """Loads ``name`` (one of :data:`~lossjax.data.DATASETS`) from the first source that has it
    (see :mod:`lossjax.data.sources`), verified against the official content checksums
    (:mod:`lossjax.data.checksums`), and carves a validation split.

    ``val_size``: an int is a number of training examples, a float in (0, 1) a fraction of the
    training set (0 gives an empty validation set). The split is stratified by class and depends
    only on ``split_seed``; it is taken from the training set alone, so it never overlaps test and
    no choice ever looks at test. Images stay uint8 here; see :func:`~lossjax.data.preprocess`.
    ``data_dir`` is ignored for ``digits``, which is embedded.
    """
    name = check_name(name)
    check_val_size(val_size)
    arrays, meta = resolve(name, data_dir)
    y_train = arrays["y_train"].astype(np.int32)
    train_idx, val_idx = split_validation(y_train, val_size, split_seed)
    x = arrays["x_train"]
    ds = Dataset(
        name=name,
        x_train=x[train_idx], y_train=y_train[train_idx],
        x_val=x[val_idx], y_val=y_train[val_idx],
        x_test=arrays["x_test"], y_test=arrays["y_test"].astype(np.int32),
        num_classes=len(CLASS_NAMES[name]), class_names=CLASS_NAMES[name], meta={},
    )
    for a in (ds.x_train, ds.y_train, ds.x_val, ds.y_val, ds.x_test, ds.y_test):
        a.flags.writeable = False  # the same whether parsed or cached; see Dataset
    k = ds.num_classes
    meta.update(
        pixel_max=16 if name == "digits" else 255,
        image_shape=list(x.shape[1:]),
        sizes={"train": len(train_idx), "val": len(val_idx), "test": len(ds.y_test)},
        class_counts={s: np.bincount(getattr(ds, "y_" + s), minlength=k).tolist()
                      for s in ("train", "val", "test")},
        split={"val_size": len(val_idx), "split_seed": split_seed,
               "method": "stratified by class, carved from the official training set only"},
    )
    return dataclasses.replace(ds, meta=meta)
