"""The validation split, and turning uint8 images into the float features the MLP trains on.

Both take what they need from the training set alone, so no choice (which examples validate,
which mean and std standardize) ever looks at the test set.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import numpy as np

from lossjax.errors import ConfigError

if TYPE_CHECKING:
    from lossjax.data.dataset import Dataset


def check_val_size(val_size) -> None:
    """Rejects a ``val_size`` that is neither a count >= 0 nor a fraction in [0, 1), before any
    file is read."""
    ok = (isinstance(val_size, int | np.integer) and not isinstance(val_size, bool)
          and val_size >= 0) or (isinstance(val_size, float | np.floating)
                                 and 0.0 <= val_size < 1.0)
    if not ok:
        raise ValueError(f"val_size must be a count >= 0 or a fraction in [0, 1), "
                         f"found {val_size!r}")


def val_count(val_size, n_train: int) -> int:
    """The number of validation examples. Its errors are ConfigErrors naming dataset.val_size:
    the value comes from the sweep config, which cannot check it without the dataset's size."""
    fraction = isinstance(val_size, float | np.floating)  # int() would floor an np.float32 to 0
    val_size = float(val_size) if fraction else int(val_size)  # plain, for the messages
    n = round(val_size * n_train) if fraction else val_size
    if n == 0 and val_size > 0:  # a fraction too small; 0 itself asks for no validation set
        raise ConfigError(f"dataset.val_size: got {val_size!r}, which leaves 0 of the {n_train} "
                          f"training examples for validation; expected a fraction >= 1/{n_train} "
                          f"(about {1 / n_train:.2g}) or a count >= 1")
    if n >= n_train:
        raise ConfigError(f"dataset.val_size: got {val_size!r}, which leaves no training data: "
                          f"the training set has {n_train} examples; expected a count below "
                          f"{n_train} or a smaller fraction")
    return n


def stratified_pick(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of n examples, each class contributing in proportion to its size (largest
    remainders get the leftover places), chosen at random within the class. Stratifying keeps a
    small validation set's class balance that of the training set, so validation accuracy is
    not skewed by which classes the draw happened to favour."""
    classes, counts = np.unique(y, return_counts=True)
    quota = n * counts / max(len(y), 1)
    take = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - take), kind="stable")
    take[order[: n - int(take.sum())]] += 1
    picked = [rng.permutation(np.flatnonzero(y == c))[:k]
              for c, k in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(picked + [np.zeros(0, np.int64)]))


def split_validation(y_train: np.ndarray, val_size, split_seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices) of the official training set, both sorted, so the
    examples keep their original order; the draw depends only on ``split_seed``."""
    n_val = val_count(val_size, len(y_train))
    val_idx = stratified_pick(y_train, n_val, np.random.default_rng(split_seed))
    keep = np.ones(len(y_train), bool)
    keep[val_idx] = False
    return np.flatnonzero(keep), val_idx


def preprocess(ds: Dataset, standardize: bool = False) -> Dataset:
    """Turns uint8 images into what the MLP trains on: float32 features (N, D), scaled to [0, 1]
    (``digits``: divided by 16; a user's float features are not scaled). Done once, on the
    host, so the big float arrays exist only from here on (CIFAR-10 train alone is 600 MB as
    float32).

    ``standardize=True`` then subtracts a mean and divides by a standard deviation computed on the
    training split only (validation and test never inform it): per channel for images (one
    channel for MNIST / Fashion-MNIST, R G B for CIFAR-10), per feature for ``digits``, whose 64
    block counts are features rather than pixels of a photograph, and for a user's float
    feature vectors (N, D). Constant features get std 1.
    """
    if "preprocess" in ds.meta or (ds.x_train.dtype != np.uint8 and "pixel_max" not in ds.meta):
        raise ValueError(f"{ds.name}: already preprocessed (x_train is {ds.x_train.dtype}); "
                         "call preprocess once, on what load() returns")
    pmax = float(ds.meta.get("pixel_max", 255))
    n = len(ds.x_train)
    # A user's float vectors are features too; float images (N, H, W[, C]) get channel stats.
    floats = ds.x_train.dtype != np.uint8
    per_feature = ds.name == "digits" or (floats and ds.x_train.ndim == 2)
    info: dict = {"scale": f"1/{pmax:g}", "standardize": standardize}
    shift = scale = None
    if standardize:
        x = ds.x_train.reshape(n, -1)
        if per_feature or n == 0:
            xf = x.astype(np.float64) / pmax
            mean, std = xf.mean(axis=0), xf.std(axis=0)
        elif floats:
            channels = ds.x_train.shape[-1] if ds.x_train.ndim == 4 else 1
            xf = ds.x_train.reshape(-1, channels).astype(np.float64) / pmax
            mean, std = xf.mean(axis=0), xf.std(axis=0)
        else:
            channels = ds.x_train.shape[-1] if ds.x_train.ndim == 4 else 1
            mean, std = _channel_stats(ds.x_train.reshape(-1, channels), pmax)
        std = np.where(std > 0, std, 1.0)
        reps = 1 if per_feature else x.shape[1] // max(len(mean), 1)
        shift = np.tile(mean, reps).astype(np.float32)
        scale = np.tile(std, reps).astype(np.float32)
        info.update(stats_from="train", per="feature" if per_feature else "channel",
                    mean=[float(v) for v in mean], std=[float(v) for v in std])

    def convert(a: np.ndarray) -> np.ndarray:
        out = a.reshape(len(a), math.prod(a.shape[1:])).astype(np.float32)  # -1: not if empty
        np.divide(out, np.float32(pmax), out=out)  # in place: no second float copy
        if shift is not None:
            out -= shift
            out /= scale
        return out

    return dataclasses.replace(
        ds, x_train=convert(ds.x_train), x_val=convert(ds.x_val), x_test=convert(ds.x_test),
        meta={**ds.meta, "preprocess": info})


def _channel_stats(pixels: np.ndarray, pmax: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean and std (in [0, 1] units) of uint8 pixels (P, C), summed as
    integers in chunks so that no float copy of the whole training set is made."""
    total = np.zeros(pixels.shape[1], np.int64)
    squares = np.zeros(pixels.shape[1], np.int64)
    for start in range(0, len(pixels), 1 << 20):
        v = pixels[start:start + (1 << 20)].astype(np.int64)
        total += v.sum(axis=0)
        squares += (v * v).sum(axis=0)
    n = len(pixels)
    mean = total / n
    var = np.maximum(squares / n - mean * mean, 0.0)
    return mean / pmax, np.sqrt(var) / pmax
