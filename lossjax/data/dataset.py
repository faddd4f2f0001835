"""The :class:`Dataset` record and :func:`load`, which assembles it from a verified source and
a validation split."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np

from lossjax.data import cifar100, multidigit, subsets, tfds_any
from lossjax.data.arrays import read as read_arrays
from lossjax.data.cache import cache_root
from lossjax.data.registry import BUILT, CIFAR100_COARSE, CLASS_NAMES, NAMES, check_name
from lossjax.data.sources import data_root, resolve
from lossjax.data.splits import check_val_size, split_validation
from lossjax.data.tfds_local import tfds_root
from lossjax.errors import ConfigError


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Train / validation / test arrays of one dataset, plus what is known about them.

    From :func:`load`, images are uint8, shape (N, H, W) (grayscale) or (N, H, W, C); for
    ``digits`` they are uint8 (N, 8, 8) holding counts 0..16 (``meta["pixel_max"]`` says which);
    a user's ``arrays`` may also be float features of any shape (N, ...) (``pixel_max`` 1).
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
         split_seed: int = 0, *, path: str | os.PathLike | None = None, classes=None,
         subset_seed: int = 0, per_class: int | None = None, label: str = "fine") -> Dataset:
    """Loads ``name`` (one of :data:`~lossjax.data.NAMES`) and carves a validation split.

    The datasets read from files (:data:`~lossjax.data.DATASETS`) come from the first source that
    has them (see :mod:`lossjax.data.sources`), verified against the official content checksums
    (:mod:`lossjax.data.checksums`); ``double_mnist`` and ``triple_mnist`` are built from the
    verified MNIST (:mod:`lossjax.data.multidigit`); ``arrays`` reads the user's own ``.npz`` or
    folder of ``.npy`` files at ``path`` (:mod:`lossjax.data.arrays`), recording its sha256;
    ``"tfds:NAME"`` any image classification dataset tensorflow-datasets prepared in array_record
    (:mod:`lossjax.data.tfds_any`).

    ``classes`` (a number K, or a list of class indices or names) keeps a subset of the classes,
    relabelled 0..K-1; a number keeps the first K of a permutation drawn from ``subset_seed``, so
    the subsets of one seed are nested. ``per_class`` caps the training examples of each class
    (drawn with ``split_seed``; for the multi-digit datasets it is the number built). See
    :mod:`lossjax.data.subsets`. ``label="coarse"``: CIFAR-100's 20 superclasses
    (:mod:`lossjax.data.cifar100`).

    ``val_size``: an int is a number of training examples, a float in (0, 1) a fraction of the
    training set (0 gives an empty validation set). The split is stratified by class and depends
    only on ``split_seed``; it is taken from the training set alone, so it never overlaps test and
    no choice ever looks at test. Images stay uint8 here (a user's float features stay float);
    see :func:`~lossjax.data.preprocess`. ``data_dir`` is ignored for ``digits``, which is
    embedded.
    """
    if not name.startswith(tfds_any.PREFIX):
        name = check_name(name, NAMES)
    elif not tfds_any.NAME.fullmatch(name[len(tfds_any.PREFIX):]):
        raise ValueError(f"unknown dataset {name!r}: expected tfds: and a tensorflow-datasets "
                         "name such as tfds:svhn_cropped")
    check_val_size(val_size)
    if label not in ("fine", "coarse") or (label == "coarse" and name != "cifar100"):
        raise ConfigError(f"dataset.label: got {label!r}; expected fine, or coarse for "
                          "cifar100's 20 superclasses")
    arrays, names, meta = _source(name, data_dir, path, per_class, split_seed, label)
    if classes is not None:
        kept = subsets.pick(names, classes, subset_seed)
        arrays = subsets.keep_classes(arrays, kept)
        names = tuple(names[i] for i in kept)
        meta["classes"] = {"kept": kept.tolist(), "subset_seed": subset_seed,
                           "asked": classes if isinstance(classes, int) else list(classes)}
    y_all = arrays["y_train"].astype(np.int32)
    rows = np.arange(len(y_all))
    if per_class is None or name in BUILT:  # built ones were built with per_class per class
        subsets.check_every_class(y_all, names, "the training set", "give each class an "
                                  "example, or leave it out with dataset.classes")
    else:
        rows = subsets.cap_per_class(y_all, per_class, split_seed)
        meta["per_class"] = {"cap": per_class, "split_seed": split_seed}
        subsets.check_every_class(y_all[rows], names, "dataset.per_class",
                                  "choose other classes or a larger per_class")
    train_idx, val_idx = split_validation(y_all[rows], val_size, split_seed)
    train_idx, val_idx = rows[train_idx], rows[val_idx]
    subsets.check_every_class(y_all[train_idx], names, "dataset.val_size",
                              "use a smaller val_size, or more examples per class")
    x = arrays["x_train"]
    ds = Dataset(
        name=name,
        x_train=x[train_idx], y_train=y_all[train_idx],
        x_val=x[val_idx], y_val=y_all[val_idx],
        x_test=arrays["x_test"], y_test=arrays["y_test"].astype(np.int32),
        num_classes=len(names), class_names=names, meta={},
    )
    for a in (ds.x_train, ds.y_train, ds.x_val, ds.y_val, ds.x_test, ds.y_test):
        a.flags.writeable = False  # the same whether parsed or cached; see Dataset
    k = ds.num_classes
    meta.update(
        # a user's float features are used as they are
        pixel_max=16 if name == "digits" else 255 if x.dtype == np.uint8 else 1,
        image_shape=list(x.shape[1:]),
        sizes={"train": len(train_idx), "val": len(val_idx), "test": len(ds.y_test)},
        class_counts={s: np.bincount(getattr(ds, "y_" + s), minlength=k).tolist()
                      for s in ("train", "val", "test")},
        split={"val_size": len(val_idx), "split_seed": split_seed,
               "method": "stratified by class, carved from the official training set only"},
    )
    if names != CLASS_NAMES.get(name):
        meta["class_names"] = list(names)  # a subset's or a user's: a result names its classes
    return dataclasses.replace(ds, meta=meta)


def _source(name: str, data_dir, path, per_class, split_seed: int, label: str):
    """(arrays, class names, meta) of the whole dataset, from wherever ``name`` comes from."""
    if name == "cifar100":
        return cifar100.load(data_root(data_dir), label)
    if name.startswith(tfds_any.PREFIX):
        return tfds_any.load(name[len(tfds_any.PREFIX):], [data_root(data_dir), tfds_root()])
    if name == "arrays":
        if path is None:
            raise ConfigError("dataset.path: the arrays dataset reads your own file; give the "
                              "path of a .npz (or a folder of .npy files)")
        return read_arrays(path)
    if name in BUILT:
        mnist, mnist_meta = resolve(BUILT[name], data_dir)
        arrays, meta = multidigit.build(name, mnist, mnist_meta, per_class, split_seed,
                                        cache_root(data_root(data_dir)))
    else:
        arrays, meta = resolve(name, data_dir)
    return arrays, CLASS_NAMES[name], meta


def planned_num_classes(dataset_config) -> int:
    """The number of classes a config's ``dataset`` section asks for, as far as it is known
    before any file is read, for the losses' first check: a user's arrays, unread yet, count
    as 2 (the fewest) unless ``classes`` says how many."""
    classes = dataset_config.classes
    if classes is not None:
        return classes if isinstance(classes, int) else len(classes)
    if dataset_config.label == "coarse":
        return len(CIFAR100_COARSE)
    return len(CLASS_NAMES.get(dataset_config.name, "ab"))
