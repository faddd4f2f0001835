"""Real datasets, offline first: ``digits`` (embedded), ``mnist``, ``fashion_mnist``, ``cifar10``.

A result is only as trustworthy as the data under it, so every array this module returns has had
its content checked against a known official checksum, whichever way it arrived. The raw formats
are simple, so lossjax parses them itself with numpy: one code path, no TensorFlow
(``../shared/DESIGN.md`` §5 explains why TensorFlow stays out).

Where data comes from, in this order (the first that exists wins)
------------------------------------------------------------------
``data_dir`` is the ``data_dir`` argument, else ``$LOSSJAX_DATA_DIR``, else ``~/.cache/lossjax``
(see :func:`default_data_dir`). The cache lives in ``$LOSSJAX_CACHE_DIR`` when that is set (useful
when the data directory is read-only), else in ``data_dir`` itself. A folder whose mode has no
write bit (like ``../shared/data``) is never written, even by root; the cache then goes to
``~/.cache/lossjax``.

1. **Local files** in ``data_dir/<name>/``, ``data_dir/<alias>/`` or ``data_dir/`` itself, in
   their usual published forms:

   - MNIST / Fashion-MNIST: the four IDX files ``train-images-idx3-ubyte``,
     ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, gzipped
     or not (``.gz`` optional; the ``train-images.idx3-ubyte`` spelling is accepted too), or a
     keras-style ``mnist.npz`` / ``fashion_mnist.npz``.
   - CIFAR-10: ``cifar-10-batches-py/`` (``data_batch_1..5``, ``test_batch``), the original
     ``cifar-10-python.tar.gz``, the binary version ``cifar-10-batches-bin/`` or
     ``cifar-10-binary.tar.gz`` (what tensorflow-datasets downloads), or a keras-style
     ``cifar10.npz``.
   - keras-style ``.npz``: arrays ``x_train y_train x_test y_test``, images uint8 (N, H, W) or
     (N, H, W, C), labels (N,) or (N, 1).

2. **The cache** of what was prepared before: ``<cache>/prepared/<name>/{x,y}_{train,test}.npy``
   plus ``meta.json``. It records the sha256 of the raw files it was built from; when local files
   exist (source 1) the cache is used only if they still have that checksum, else it is rebuilt.
   Cached arrays are re-verified against the official content checksums on every load (about
   0.1 s for MNIST), so a damaged cache is noticed, reported as a warning and rebuilt.
3. **System folders** that Linux packages install (:data:`SYSTEM_DIRS`; e.g. Debian's
   ``dataset-fashion-mnist`` puts Fashion-MNIST in ``/usr/share/datasets/fashion-mnist``).
4. **Download**, where there is a network: the official files through tensorflow-datasets'
   download manager (``tfds.download.DownloadManager``): its URLs (:data:`DOWNLOADS`), the
   sha256 it registers for each (``tensorflow_datasets/url_checksums/<name>.txt``; unregistered
   URLs are refused) and its download cache (``<cache>/downloads/<name>/``). A quick connection
   test runs first, because without a network tfds retries for minutes; with no network the load
   fails at once with one line saying where to put the files and which names are accepted.

``digits`` is scikit-learn's 1,797 8x8 handwritten digits, shipped in ``lossjax/data_files`` so
it never needs a download (nor scikit-learn). Its pixels are counts 0..16, not 0..255. It has no
official test split: a fixed class-stratified 20% (359 images, seed :data:`DIGITS_TEST_SEED`,
independent of ``split_seed``) is the test set.

Checksums
---------
:data:`CHECKSUMS` holds, per dataset and part, the sha256 of the *content*, so a re-compressed or
re-packaged copy of the right data passes and anything else fails:

- MNIST / Fashion-MNIST: sha256 of each decompressed IDX file (header + bytes). A ``.npz`` copy
  is checked by rebuilding the identical IDX bytes from its arrays.
- CIFAR-10: sha256 of ``x.tobytes() + y.tobytes()`` with x uint8 (N, 32, 32, 3) (HWC, RGB) and y
  uint8, per batch file (``data_batch_1..5``, ``test_batch``) for the batch forms, and over
  ``x_train y_train x_test y_test`` (part ``all``) for a ``.npz`` and for the cache. Python
  batches, binary batches and ``.npz`` therefore share one content check.
- digits: sha256 of the decompressed embedded csv.

Each entry says where its value came from. Tests replace entries to check tiny fixtures.

Errors
------
Every expected failure (missing file, checksum mismatch, truncated file, wrong IDX magic number,
a count that disagrees with the header, no network) raises :class:`lossjax.errors.DataError`
with one line naming the file, what was expected and what was found.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import pickle
import socket
import stat
import struct
import sys
import tarfile
import urllib.parse
import urllib.request
import uuid
import warnings
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np

from lossjax.errors import DataError

__all__ = [
    "CHECKSUMS",
    "DATASETS",
    "DOWNLOADS",
    "SYSTEM_DIRS",
    "Dataset",
    "Expected",
    "default_data_dir",
    "info_command",
    "load",
    "prepare_command",
    "preprocess",
]

DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion_mnist", "cifar10")

ENV_DATA_DIR = "LOSSJAX_DATA_DIR"
ENV_CACHE_DIR = "LOSSJAX_CACHE_DIR"
CACHE_FORMAT = 1

CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "digits": tuple(str(i) for i in range(10)),
    "mnist": tuple(str(i) for i in range(10)),
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                "truck"),
}

# Folder names tried under data_dir before data_dir itself (so `data_dir` may hold one folder
# per dataset, like ../shared/data, or the files of one dataset directly).
_FOLDERS = {
    "mnist": ("mnist",),
    "fashion_mnist": ("fashion_mnist", "fashion-mnist"),
    "cifar10": ("cifar10", "cifar-10"),
}

# Digits has no official test split: a fixed, stratified 20% is held out with its own seed, so
# the test set is the same whatever split_seed a sweep uses.
DIGITS_TEST_FRACTION = 0.2
DIGITS_TEST_SEED = 1797


class Expected(NamedTuple):
    """One official content checksum: the sha256, what it covers, and where the value came
    from (so the table can be audited)."""

    sha256: str
    what: str
    origin: str


_MNIST_ORIGIN = (
    "../shared/data/mnist/SOURCE.md (sha256 of the decompressed original IDX files; its two t10k "
    ".gz files are byte-identical to the downloads tfds registers in url_checksums/mnist.txt)"
)
_FASHION_ORIGIN = (
    "computed here from Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1 "
    "(/usr/share/datasets/fashion-mnist, decompressed). Those .gz files lack only the gzip name "
    "field and original mtime: restoring them (train mtime 1504176606, t10k 1504176627) makes "
    "each byte-identical to the official download whose sha256 tfds registers "
    "(url_checksums/fashion_mnist.txt)"
)
_CIFAR_ORIGIN = (
    "../shared/data/cifar10/SOURCE.md gives the sha256 over x_train y_train x_test y_test of "
    "cifar10.npz (part 'all'); the per-batch values were computed here from that npz, rows "
    "10000*(k-1):10000*k for data_batch_k (the npz keeps the original batch order)"
)
_DIGITS_ORIGIN = (
    "computed here from scikit-learn 1.9.1's sklearn/datasets/data/digits.csv.gz "
    "(decompressed), which lossjax/data_files/digits.csv.gz copies"
)

CHECKSUMS: dict[str, dict[str, Expected]] = {
    "digits": {
        "digits.csv": Expected(
            "6ebb3d2fee246a4e99363262ddf8a00a3c41bee6014c373ed9d9216ba7f651b8",
            "1797 rows of 64 pixel counts + label", _DIGITS_ORIGIN),
    },
    "mnist": {
        "train-images-idx3-ubyte": Expected(
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "60000x28x28", _MNIST_ORIGIN),
        "train-labels-idx1-ubyte": Expected(
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "60000", _MNIST_ORIGIN),
        "t10k-images-idx3-ubyte": Expected(
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "10000x28x28", _MNIST_ORIGIN),
        "t10k-labels-idx1-ubyte": Expected(
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            "10000", _MNIST_ORIGIN),
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte": Expected(
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "60000x28x28", _FASHION_ORIGIN),
        "train-labels-idx1-ubyte": Expected(
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "60000", _FASHION_ORIGIN),
        "t10k-images-idx3-ubyte": Expected(
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "10000x28x28", _FASHION_ORIGIN),
        "t10k-labels-idx1-ubyte": Expected(
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            "10000", _FASHION_ORIGIN),
    },
    "cifar10": {
        "data_batch_1": Expected(
            "8350d89ba6404c270d263d84bf037e74b0158eecac79f27405efcf23445a6997",
            "10000x32x32x3+10000", _CIFAR_ORIGIN),
        "data_batch_2": Expected(
            "28d2d506ff2e052a3c902ac74931514d4c22d54b3f23622088bee441ab096cf0",
            "10000x32x32x3+10000", _CIFAR_ORIGIN),
        "data_batch_3": Expected(
            "e56532de152c7a77fc2a722499682f2699ce5177bbfac2ed2e415096184fa1d9",
            "10000x32x32x3+10000", _CIFAR_ORIGIN),
        "data_batch_4": Expected(
            "bb996a8ffff861dd5cca88c397fdfb884f0c482c5588bd32cea3dc7b648709bb",
            "10000x32x32x3+10000", _CIFAR_ORIGIN),
        "data_batch_5": Expected(
            "efb6334c7c1f88ac69032959408d9eeccb983002e83119b66de7309d3d2c7915",
            "10000x32x32x3+10000", _CIFAR_ORIGIN),
        "test_batch": Expected(
            "8193b3fbce55bec361cd1b8fd4880cb1649832dc4d6de6da1e7a21847a4843aa",
            "10000x32x32x3+10000", _CIFAR_ORIGIN),
        "all": Expected(
            "80387ddb9a0edf3fc4a964ee3770296169bb26a651050df20035579673099660",
            "50000x32x32x3+50000+10000x32x32x3+10000", _CIFAR_ORIGIN),
    },
}

# The official files, as tensorflow-datasets' builders name them. Each URL must be registered in
# tfds's url_checksums (a test checks this), so tfds verifies every download's sha256. For
# CIFAR-10 tfds registers the binary version, which holds the same images as the python one.
_MNIST_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte")
DOWNLOADS: dict[str, dict[str, str]] = {
    "mnist": {s: f"https://storage.googleapis.com/cvdf-datasets/mnist/{s}.gz"
              for s in _MNIST_STEMS},
    "fashion_mnist": {s: f"http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{s}.gz"
                      for s in _MNIST_STEMS},
    "cifar10": {"cifar-10-binary.tar.gz": "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"},
}

# Folders that Linux distribution packages install datasets into (source 3).
SYSTEM_DIRS: dict[str, tuple[str, ...]] = {
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist",),
}

_CIFAR_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                  "test_batch")
_NPZ_NAMES = {
    "mnist": ("mnist.npz",),
    "fashion_mnist": ("fashion_mnist.npz", "fashion-mnist.npz"),
    "cifar10": ("cifar10.npz", "cifar-10.npz"),
}
_ACCEPTED = {
    "mnist": "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
             "t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz], or mnist.npz",
    "cifar10": "cifar-10-python.tar.gz, cifar-10-batches-py/ (data_batch_1..5, test_batch), "
               "cifar-10-binary.tar.gz, cifar-10-batches-bin/, or cifar10.npz",
}
_ACCEPTED["fashion_mnist"] = _ACCEPTED["mnist"].replace("mnist.npz", "fashion_mnist.npz")

_FORMS = {
    "idx": "IDX files",
    "npz": "keras-style .npz",
    "cifar-py-dir": "CIFAR-10 python batches",
    "cifar-py-tar": "cifar-10-python.tar.gz",
    "cifar-bin-dir": "CIFAR-10 binary batches",
    "cifar-bin-tar": "cifar-10-binary.tar.gz",
}


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Train / validation / test arrays of one dataset, plus what is known about them.

    From :func:`load`, images are uint8, shape (N, H, W) (grayscale) or (N, H, W, C); for
    ``digits`` they are uint8 (N, 8, 8) holding counts 0..16 (``meta["pixel_max"]`` says which).
    Labels are int32 (N,). :func:`preprocess` turns images into float32 features (N, D).
    ``meta`` is JSON-serialisable: the source, the checksums verified, the split, class counts.
    The arrays from :func:`load` are read-only (they may be views of parsed file bytes; making
    all of them read-only keeps behaviour the same whichever source served them).
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


def default_data_dir() -> Path:
    """Where lossjax looks for data files and keeps its cache when no ``data_dir`` is given:
    ``$LOSSJAX_DATA_DIR`` if set, else ``~/.cache/lossjax``."""
    env = os.environ.get(ENV_DATA_DIR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lossjax"


def load(name: str, data_dir: str | os.PathLike | None = None, val_size: int | float = 0.1,
         split_seed: int = 0) -> Dataset:
    """Loads ``name`` (one of :data:`DATASETS`) from the first source that has it (see the
    module docstring), verified against :data:`CHECKSUMS`, and carves a validation split.

    ``val_size``: an int is a number of training examples, a float in (0, 1) a fraction of the
    training set (0 gives an empty validation set). The split is stratified by class and depends
    only on ``split_seed``; it is taken from the training set alone, so it never overlaps test and
    no choice ever looks at test. Images stay uint8 here; see :func:`preprocess`.
    ``data_dir`` is ignored for ``digits``, which is embedded.
    """
    name = _check_name(name)
    _check_val_size(val_size)
    arrays, meta = _resolve(name, data_dir)
    y_train = arrays["y_train"].astype(np.int32)
    n_val = _val_count(val_size, len(y_train))
    val_idx = _stratified_pick(y_train, n_val, np.random.default_rng(split_seed))
    keep = np.ones(len(y_train), bool)
    keep[val_idx] = False
    train_idx = np.flatnonzero(keep)
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
        split={"val_size": n_val, "split_seed": split_seed,
               "method": "stratified by class, carved from the official training set only"},
    )
    return dataclasses.replace(ds, meta=meta)


def preprocess(ds: Dataset, standardize: bool = False) -> Dataset:
    """Turns uint8 images into what the MLP trains on: float32 features (N, D), scaled to [0, 1]
    (``digits``: divided by 16). Done once, on the host, so the big float arrays exist only from
    here on (CIFAR-10 train alone is 600 MB as float32).

    ``standardize=True`` then subtracts a mean and divides by a standard deviation computed on the
    training split only (validation and test never inform it): per channel for images (one
    channel for MNIST / Fashion-MNIST, R G B for CIFAR-10), per feature for ``digits``, whose 64
    block counts are features rather than pixels of a photograph. Constant features get std 1.
    """
    if ds.x_train.dtype != np.uint8:
        raise ValueError(f"{ds.name}: already preprocessed (x_train is {ds.x_train.dtype}); "
                         "call preprocess once, on what load() returns")
    pmax = float(ds.meta.get("pixel_max", 255))
    n = len(ds.x_train)
    per_feature = ds.name == "digits"
    info: dict = {"scale": f"1/{pmax:g}", "standardize": standardize}
    shift = scale = None
    if standardize:
        x = ds.x_train.reshape(n, -1)
        if per_feature or n == 0:
            xf = x.astype(np.float64) / pmax
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
        out = a.reshape(len(a), -1).astype(np.float32)
        np.divide(out, np.float32(pmax), out=out)
        if shift is not None:
            out -= shift
            out /= scale
        return out

    return dataclasses.replace(
        ds, x_train=convert(ds.x_train), x_val=convert(ds.x_val), x_test=convert(ds.x_test),
        meta={**ds.meta, "preprocess": info})


def info_command(name: str | None, data_dir=None) -> int:
    """Prints, per dataset (or for ``name``), where it would load from, whether it is present
    and verified, and its sizes. Writes nothing and downloads nothing.

    Returns 1 if a dataset is present but fails verification, or if the one dataset asked for
    is missing; else 0.
    """
    names = DATASETS if name is None else (_check_name(name),)
    root = _data_root(data_dir)
    print(f"data dir: {root}  ({_root_origin(data_dir)}); cache: {_cache_root(root)}")
    status = 0
    for n in names:
        try:
            arrays, meta = _resolve(n, data_dir, cache="read", download=False)
        except _Missing as e:
            print(f"{n:<14} missing   {e}")
            status = max(status, 1 if name is not None else 0)
            continue
        except DataError as e:
            print(f"{n:<14} BROKEN    {e}")
            status = 1
            continue
        print(f"{n:<14} ok        {_describe(meta)}")
        print(f"{'':<14}           train {len(arrays['y_train'])}, test {len(arrays['y_test'])}, "
              f"images {'x'.join(map(str, arrays['x_train'].shape[1:]))} uint8, "
              f"{len(CLASS_NAMES[n])} classes; content sha256 verified: "
              f"{', '.join(meta['verified'])}")
    return status


def prepare_command(name: str, source_dir, data_dir=None) -> int:
    """Verifies the files of ``name`` in ``source_dir`` (or its ``<name>/`` folder) and caches
    them under the cache of ``data_dir`` so that later loads need neither the files nor a
    network. Fails if the cache cannot be written."""
    name = _check_name(name)
    if name == "digits":
        print("digits is embedded in lossjax; nothing to prepare")
        return 0
    src_root = Path(source_dir).expanduser()
    if not src_root.is_dir():
        raise DataError(f"{src_root}: no such directory (expected a folder holding "
                        f"{_ACCEPTED[name]})")
    src = _find_local(name, src_root, "local")
    if src is None:
        raise DataError(f"{src_root}: no {name} files found: expected {_ACCEPTED[name]} "
                        f"in {src_root} or {src_root / _FOLDERS[name][0]}")
    arrays, meta = _from_source(name, src, _cache_root(_data_root(data_dir)), cache="required")
    print(f"{name}: {_describe(meta)}")
    print(f"{name}: train {len(arrays['y_train'])}, test {len(arrays['y_test'])}; "
          f"content sha256 verified: {', '.join(meta['verified'])}")
    return 0


# --------------------------------------------------------------------------------------------
# Where the data comes from
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    """A set of raw files found somewhere: which kind of place, which published form."""

    kind: str  # "local" | "system" | "download"
    form: str  # a key of _FORMS
    root: Path
    files: dict[str, Path]

    def describe(self) -> dict:
        return {"kind": self.kind, "form": self.form, "path": str(self.root),
                "files": [str(p) for p in self.files.values()]}


class _Missing(DataError):
    """No source has the dataset (info reports it as missing rather than broken)."""


def _check_name(name: str) -> str:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}")
    return name


def _data_root(data_dir) -> Path:
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


def _root_origin(data_dir) -> str:
    if data_dir is not None:
        return "given"
    return f"from ${ENV_DATA_DIR}" if os.environ.get(ENV_DATA_DIR) else "default"


def _cache_root(root: Path) -> Path:
    """The cache goes to $LOSSJAX_CACHE_DIR when set, else beside the data; a read-only data
    folder (like a shared copy) sends it to ~/.cache/lossjax, so loads stay fast there too."""
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    try:
        _check_writable(root)
    except PermissionError:
        return Path("~/.cache/lossjax").expanduser()
    return root


def _resolve(name: str, data_dir, cache: str = "write", download: bool = True
             ) -> tuple[dict[str, np.ndarray], dict]:
    """Finds ``name`` in the documented source order and returns its verified uint8 arrays
    (x_train, y_train, x_test, y_test; labels uint8) and the start of its meta.

    ``cache``: "write" (best effort), "read" (never write: for info) or "required"."""
    if name == "digits":
        return _load_digits()
    root = _data_root(data_dir)
    cache_root = _cache_root(root)
    src = _find_local(name, root, "local")
    if src is not None:
        return _from_source(name, src, cache_root, cache)
    hit = _read_cache(name, cache_root, fingerprint=None)
    if hit is not None:
        arrays, meta = hit
        meta["source"] = {"kind": "cache", "built_from": meta.pop("built_from")}
        return arrays, meta
    for d in SYSTEM_DIRS.get(name, ()):
        src = _find_local(name, Path(d), "system")
        if src is not None:
            return _from_source(name, src, cache_root, cache)
    where = f"put {_ACCEPTED[name]} in {root / _FOLDERS[name][0]} or {root}"
    if not download:
        raise _Missing(f"no local files or cache; {where}, or let `lossjax.data.load` download "
                       f"them (needs a network)")
    src = _download(name, cache_root, where)
    return _from_source(name, src, cache_root, cache)


def _candidate_dirs(name: str, root: Path) -> list[Path]:
    dirs = [root / f for f in _FOLDERS[name]] + [root]
    return [d for d in dirs if d.is_dir()]


def _first_file(folder: Path, names) -> Path | None:
    for n in names:
        if (folder / n).is_file():
            return folder / n
    return None


def _idx_names(stem: str) -> tuple[str, ...]:
    dotted = stem.replace("-idx", ".idx")  # train-images.idx3-ubyte: how some unzippers name it
    return (stem, stem + ".gz", dotted, dotted + ".gz")


def _find_local(name: str, root: Path, kind: str) -> _Source | None:
    """Looks in root/<name>/, root/<alias>/ and root/ for one complete published form.

    A partial set (say three of the four IDX files) is an error, not a reason to look further:
    silently falling back to another copy would hide the problem."""
    for d in _candidate_dirs(name, root):
        if name in ("mnist", "fashion_mnist"):
            found = {s: _first_file(d, _idx_names(s)) for s in _MNIST_STEMS}
            if all(found.values()):
                return _Source(kind, "idx", d, found)
            if any(found.values()):
                missing = [s + "[.gz]" for s, p in found.items() if p is None]
                raise DataError(f"{d}: incomplete {name} IDX set: expected all of "
                                f"{', '.join(_MNIST_STEMS)}, missing {', '.join(missing)}")
        else:
            for sub, form, batch_names in (
                ("cifar-10-batches-py", "cifar-py-dir", _CIFAR_BATCHES),
                ("cifar-10-batches-bin", "cifar-bin-dir", [b + ".bin" for b in _CIFAR_BATCHES]),
            ):
                for folder in (d / sub, d):
                    present = {b: folder / f for b, f in zip(_CIFAR_BATCHES, batch_names,
                                                             strict=True)
                               if (folder / f).is_file()}
                    if len(present) == len(_CIFAR_BATCHES):
                        return _Source(kind, form, folder, present)
                    if present:
                        missing = [f for b, f in zip(_CIFAR_BATCHES, batch_names, strict=True)
                                   if b not in present]
                        raise DataError(f"{folder}: incomplete CIFAR-10 batches: expected "
                                        f"{', '.join(batch_names)}, missing {', '.join(missing)}")
            for fname, form in (("cifar-10-python.tar.gz", "cifar-py-tar"),
                                ("cifar-10-binary.tar.gz", "cifar-bin-tar")):
                if (d / fname).is_file():
                    return _Source(kind, form, d, {fname: d / fname})
        npz = _first_file(d, _NPZ_NAMES[name])
        if npz is not None:
            return _Source(kind, "npz", d, {npz.name: npz})
    return None


def _fingerprint(src: _Source) -> str:
    """sha256 over the raw files as stored: cheap (about 0.25 s for CIFAR-10) and enough to tell
    whether the cache was built from exactly these files."""
    h = hashlib.sha256(src.form.encode())
    for key in sorted(src.files):
        with open(src.files[key], "rb") as f:
            h.update(key.encode() + hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()


def _from_source(name: str, src: _Source, cache_root: Path, cache: str
                 ) -> tuple[dict[str, np.ndarray], dict]:
    """Uses the cache if it was built from these very files; else parses and verifies them
    and (unless cache == "read") writes the cache."""
    fp = _fingerprint(src)
    hit = _read_cache(name, cache_root, fingerprint=fp)
    if hit is not None:
        arrays, meta = hit
        meta.pop("built_from")
        meta["source"] = src.describe()
        return arrays, meta
    arrays, verified = _parse(name, src)
    meta = {"name": name, "source": src.describe(), "verified": verified}
    if cache == "read":
        meta["cache"] = {"path": str(_cache_dir(name, cache_root)), "status": "not written (info)"}
    else:
        meta["cache"] = _write_cache(name, cache_root, arrays, meta, fp,
                                     required=cache == "required")
    return arrays, meta


def _describe(meta: dict) -> str:
    src = meta["source"]
    if src["kind"] == "embedded":
        return f"embedded {src['path']}"
    if src["kind"] == "cache":
        b = src["built_from"]
        return f"cache {meta['cache']['path']} (built from {_FORMS[b['form']]} in {b['path']})"
    return (f"{src['kind']} {_FORMS[src['form']]} in {src['path']}; "
            f"cache {meta['cache']['path']}: {meta['cache']['status']}")


# --------------------------------------------------------------------------------------------
# Download through tensorflow-datasets
# --------------------------------------------------------------------------------------------


def _network_reachable(urls, timeout: float = 3.0) -> str | None:
    """Returns None if each host (or the proxy requests would use) accepts a TCP connection,
    else the reason. Without this, tfds retries an unreachable host for about 3.5 minutes."""
    proxies = urllib.request.getproxies()
    for url in urls:
        u = urllib.parse.urlsplit(url)
        target = u.hostname or ""
        if u.scheme in proxies and not urllib.request.proxy_bypass(target):
            u = urllib.parse.urlsplit(proxies[u.scheme])
        host, port = u.hostname or "", u.port or (443 if u.scheme == "https" else 80)
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as e:
            return f"cannot reach {host}:{port} ({e.strerror or e})"
    return None


def _tfds_cached(download_dir: Path, name: str, urls) -> bool:
    """Whether tfds's download cache already holds every file (then no network is needed)."""
    try:
        from tensorflow_datasets.core.download import checksums, resource

        infos = checksums.get_all_url_infos()
        return all(resource.is_locally_cached(
            download_dir / name / resource.get_dl_fname(u, infos[u].checksum)) for u in urls)
    except Exception:  # any tfds internals changed: just probe the network
        return False


def _download(name: str, cache_root: Path, where: str) -> _Source:
    """Fetches the official files with tfds's DownloadManager, which checks each against the
    sha256 tfds registers and keeps them in ``<cache>/downloads/<name>/``."""
    urls = DOWNLOADS[name]
    download_dir = cache_root / "downloads"
    try:
        _check_writable(download_dir)
    except PermissionError as e:
        raise _Missing(f"{name}: no local files or cache, and nowhere to download them "
                       f"({_short(e)}; set ${ENV_CACHE_DIR}); {where}") from e
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise _Missing(f"{name}: no local files or cache, and tensorflow-datasets is not "
                       f"installed to download them ({_short(e)}); {where}") from e
    if not _tfds_cached(download_dir, name, urls.values()):
        reason = _network_reachable(urls.values())
        if reason is not None:
            raise _Missing(f"{name}: no local files or cache, and no network to download them "
                           f"({reason}); {where}, or run `lossjax data prepare {name} --from DIR`")
    try:
        dm = tfds.download.DownloadManager(download_dir=download_dir, dataset_name=name,
                                           force_checksums_validation=True)
        paths = dm.download(dict(urls))
    except Exception as e:  # requests, tfds checksum and filesystem errors all end here
        raise DataError(f"{name}: download through tensorflow-datasets failed: "
                        f"{type(e).__name__}: {_short(e)}; {where}") from e
    form = "idx" if name != "cifar10" else "cifar-bin-tar"
    return _Source("download", form, download_dir / name,
                   {k: Path(os.fspath(p)) for k, p in paths.items()})


# --------------------------------------------------------------------------------------------
# Parsing and verifying
# --------------------------------------------------------------------------------------------


def _parse(name: str, src: _Source) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Parses one source into uint8 arrays and checks their content; returns the arrays and
    {part: sha256} of what was verified."""
    if src.form == "idx":
        return _read_idx_set(name, src.files)
    if src.form == "npz":
        return _read_npz(name, next(iter(src.files.values())))
    if src.form in ("cifar-py-dir", "cifar-bin-dir"):
        raw = {b: (lambda p=p: p.read_bytes(), str(p)) for b, p in src.files.items()}
        return _read_cifar_batches(raw, binary=src.form == "cifar-bin-dir")
    archive = next(iter(src.files.values()))
    return _read_cifar_batches(_tar_members(archive), binary=src.form == "cifar-bin-tar")


def _sha256(chunks) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(memoryview(np.ascontiguousarray(c)).cast("B") if isinstance(c, np.ndarray)
                 else c)
    return h.hexdigest()


def _verify(name: str, part: str, chunks, found_what: str, where: str) -> str:
    """Compares the content sha256 of one part with CHECKSUMS; names the file on mismatch and,
    when the content is another known part (MNIST given as Fashion-MNIST), says which."""
    exp = CHECKSUMS[name][part]
    got = _sha256(chunks)
    if got != exp.sha256:
        hint = next((f" (that is the content of {n} {p})" for n, parts in CHECKSUMS.items()
                     for p, e in parts.items() if e.sha256 == got), "")
        raise DataError(f"{where}: content is not the official {name} {part}: expected "
                        f"{exp.what} with sha256 {exp.sha256}, found {found_what} with sha256 "
                        f"{got}{hint}")
    return got


def _short(e: BaseException) -> str:
    """An exception's text on one line (DataError messages are one line)."""
    return " ".join(str(e).split())


def _shape_str(a: np.ndarray) -> str:
    return "x".join(map(str, a.shape))


def _idx_header(a: np.ndarray) -> bytes:
    return bytes([0, 0, 8, a.ndim]) + np.asarray(a.shape, ">u4").tobytes()


def _read_maybe_gzip(path: Path) -> bytes:
    """Reads a file, decompressing it if it starts with the gzip magic (whatever its name)."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError as e:
        raise DataError(f"{path}: truncated gzip stream: expected a complete gzip file, found "
                        f"{len(raw)} bytes ending early ({_short(e)})") from e
    except (OSError, zlib.error) as e:
        raise DataError(f"{path}: corrupt gzip data: {_short(e)}") from e


def _parse_idx(data: bytes, where: str, ndim: int) -> np.ndarray:
    """Parses an unsigned-byte IDX file: magic 0x0000080N, N big-endian uint32 sizes, bytes."""
    kind = "images, 3 dimensions" if ndim == 3 else "labels, 1 dimension"
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{where}: truncated: expected an IDX header of {header} bytes, found "
                        f"{len(data)} bytes")
    magic = int.from_bytes(data[:4], "big")
    if magic != 0x0800 + ndim:
        raise DataError(f"{where}: wrong IDX magic number: expected 0x{0x0800 + ndim:08x} "
                        f"(unsigned bytes, {kind}), found 0x{magic:08x}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    n = int(np.prod(dims, dtype=np.int64))
    body = len(data) - header
    if body != n:
        what = "truncated" if body < n else "count disagrees with the header"
        raise DataError(f"{where}: {what}: header says {'x'.join(map(str, dims))} = {n} bytes "
                        f"of data, found {body} bytes")
    return np.frombuffer(data, np.uint8, count=n, offset=header).reshape(dims)


def _read_idx_set(name: str, files: dict[str, Path]):
    arrays, verified = {}, {}
    keys = dict(zip(_MNIST_STEMS, ("x_train", "y_train", "x_test", "y_test"), strict=True))
    for stem, key in keys.items():
        path = files[stem]
        a = _parse_idx(_read_maybe_gzip(path), str(path), 3 if key[0] == "x" else 1)
        verified[stem] = _verify(name, stem, [_idx_header(a), a], _shape_str(a), str(path))
        arrays[key] = a
    for split, stem in (("train", "train"), ("test", "t10k")):
        nx, ny = len(arrays["x_" + split]), len(arrays["y_" + split])
        if nx != ny:  # only reachable when CHECKSUMS is replaced (tests); kept for clarity
            raise DataError(f"{files[stem + '-labels-idx1-ubyte']}: count disagrees with the "
                            f"images: expected {nx} labels, found {ny}")
    return arrays, verified


def _read_npz(name: str, path: Path):
    """A keras-style .npz; its arrays get the same content check as the official files."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in z.files]
            if missing:
                raise DataError(f"{path}: expected arrays x_train y_train x_test y_test, found "
                                f"{' '.join(z.files) or 'none'}")
            arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except DataError:
        raise
    except Exception as e:  # zipfile.BadZipFile, EOFError, zlib.error, ValueError...
        raise DataError(f"{path}: not a readable .npz (truncated or corrupt): "
                        f"{type(e).__name__}: {_short(e)}") from e
    for s in ("train", "test"):
        x, y = arrays["x_" + s], arrays["y_" + s]
        if x.dtype != np.uint8:
            raise DataError(f"{path}: x_{s} must be uint8 images, found {x.dtype}")
        if name == "cifar10" and x.ndim == 4 and x.shape[1] == 3 and x.shape[-1] != 3:
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # CHW copy -> canonical HWC
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or len(y) != len(x):
            raise DataError(f"{path}: y_{s} must be {len(x)} integer labels, found "
                            f"{y.dtype} {_shape_str(y)}")
        if len(y) and (y.min() < 0 or y.max() > 255):
            raise DataError(f"{path}: y_{s} must hold class indices, found values "
                            f"{y.min()}..{y.max()}")
        arrays["x_" + s], arrays["y_" + s] = x, y.astype(np.uint8)
    if name == "cifar10":
        order = [arrays[k] for k in ("x_train", "y_train", "x_test", "y_test")]
        found = "+".join(_shape_str(a) for a in order)
        return arrays, {"all": _verify(name, "all", order, found, str(path))}
    verified = {}
    for stem, key in zip(_MNIST_STEMS, ("x_train", "y_train", "x_test", "y_test"), strict=True):
        a = arrays[key]
        verified[stem] = _verify(name, stem, [_idx_header(a), a], _shape_str(a),
                                 f"{path}[{key}]")
    return arrays, verified


def _tar_members(archive: Path) -> dict:
    """Reads the six batch files out of a CIFAR-10 tar.gz in one streaming pass (no extraction
    to disk, so member paths cannot escape anywhere)."""
    wanted = {b: b for b in _CIFAR_BATCHES} | {b + ".bin": b for b in _CIFAR_BATCHES}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, mode="r|*") as tf:
            for m in tf:
                base = m.name.rsplit("/", 1)[-1]
                if m.isfile() and base in wanted:
                    found[wanted[base]] = tf.extractfile(m).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"{archive}: truncated or corrupt archive: {type(e).__name__}: "
                        f"{_short(e)}") from e
    missing = [b for b in _CIFAR_BATCHES if b not in found]
    if missing:
        raise DataError(f"{archive}: expected members data_batch_1..5 and test_batch, "
                        f"missing {', '.join(missing)}")
    return {b: (lambda d=found[b]: d, f"{archive}[{b}]") for b in _CIFAR_BATCHES}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR-10 python batches allowing only what they contain (a dict, lists, bytes
    and one numpy array), so a malicious pickle cannot run code."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"),
                ("numpy._core.multiarray", "_reconstruct"),
                ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if module.startswith("numpy.core."):  # how numpy 1.x (and the original files) spell it
            module = "numpy._core." + module[len("numpy.core."):]
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}")
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        if module.startswith("numpy._core.") and int(np.__version__.split(".")[0]) < 2:
            module = "numpy.core." + module[len("numpy._core."):]
        return super().find_class(module, name)


def _latin1_encode(text, encoding="latin1", errors="strict"):
    """How protocol-2 pickles from Python 3 store bytes; only latin1 is allowed."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with {encoding!r}")
    return text.encode("latin1", errors)


def _decode_py_batch(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        d = _BatchUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # truncated or foreign pickles fail in many ways
        raise DataError(f"{where}: not a CIFAR-10 python batch (truncated or corrupt pickle): "
                        f"{type(e).__name__}: {_short(e)}") from e
    if not isinstance(d, dict):
        raise DataError(f"{where}: expected a pickled dict with data and labels, found "
                        f"{type(d).__name__}")
    x = d.get(b"data", d.get("data"))
    y = d.get(b"labels", d.get("labels"))
    if not (isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 2
            and x.shape[1] == 3072) or y is None or len(y) != len(x):
        found = f"data {getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}, " \
                f"{'no' if y is None else len(y)} labels"
        raise DataError(f"{where}: expected data (N x 3072 uint8) and N labels, found {found}")
    return x, np.asarray(y, dtype=np.int64)


def _decode_bin_batch(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Binary version: records of 1 label byte + 3072 pixel bytes (R plane, G, B; row-major)."""
    if len(data) % 3073:
        raise DataError(f"{where}: truncated: expected whole 3073-byte records (label + "
                        f"32x32x3 pixels), found {len(data)} bytes = {len(data) / 3073:.2f} "
                        "records")
    rec = np.frombuffer(data, np.uint8).reshape(-1, 3073)
    return rec[:, 1:], rec[:, 0]


def _read_cifar_batches(raw: dict, binary: bool):
    """Decodes the six batches (CHW rows -> canonical HWC) and checks each batch's content."""
    xs, ys, verified = [], [], {}
    for b in _CIFAR_BATCHES:
        read, where = raw[b]
        data = read()
        x, y = (_decode_bin_batch if binary else _decode_py_batch)(data, where)
        if len(y) and (y.min() < 0 or y.max() > 255):
            raise DataError(f"{where}: labels must be class indices, found {y.min()}..{y.max()}")
        x = np.ascontiguousarray(x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        y = y.astype(np.uint8)
        verified[b] = _verify("cifar10", b, [x, y], f"{_shape_str(x)}+{len(y)}", where)
        xs.append(x)
        ys.append(y)
    arrays = {"x_train": np.concatenate(xs[:5]), "y_train": np.concatenate(ys[:5]),
              "x_test": xs[5], "y_test": ys[5]}
    return arrays, verified


def _load_digits() -> tuple[dict[str, np.ndarray], dict]:
    """The embedded digits csv (64 pixel counts 0..16, then the label per row), verified, with
    its fixed stratified 20% test split (seed DIGITS_TEST_SEED, independent of split_seed)."""
    ref = resources.files("lossjax").joinpath("data_files", "digits.csv.gz")
    where = str(ref)
    try:
        text = gzip.decompress(ref.read_bytes())
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{where}: unreadable embedded digits data (reinstall lossjax): "
                        f"{_short(e)}") from e
    verified = {"digits.csv": _verify("digits", "digits.csv", [text], f"{len(text)} bytes",
                                      where)}
    table = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.int64)
    x = table[:, :64].astype(np.uint8).reshape(-1, 8, 8)
    y = table[:, 64].astype(np.uint8)
    n_test = round(DIGITS_TEST_FRACTION * len(y))
    test = _stratified_pick(y, n_test, np.random.default_rng(DIGITS_TEST_SEED))
    train = np.setdiff1d(np.arange(len(y)), test)
    arrays = {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}
    meta = {"name": "digits",
            "source": {"kind": "embedded", "form": "csv.gz", "path": where, "files": [where]},
            "cache": {"path": None, "status": "not needed (embedded)"},
            "verified": verified,
            "test_split": {"fraction": DIGITS_TEST_FRACTION, "seed": DIGITS_TEST_SEED,
                           "method": "stratified by class; fixed, independent of split_seed"}}
    return arrays, meta


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------

_PARTS = ("x_train", "y_train", "x_test", "y_test")


def _check_writable(path: Path) -> None:
    """Raises PermissionError if the nearest existing folder of ``path`` has no write bit set.

    Root may write anywhere, so a shared, deliberately read-only data folder (mode r-x) would
    otherwise silently collect a cache when lossjax runs as root."""
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    if p.is_dir() and not stat.S_IMODE(p.stat().st_mode) & 0o222:
        raise PermissionError(f"{p} is read-only (mode {stat.S_IMODE(p.stat().st_mode):o})")


def _cache_dir(name: str, cache_root: Path) -> Path:
    return cache_root / "prepared" / name


def _read_cache(name: str, cache_root: Path, fingerprint: str | None):
    """Returns (arrays, meta) from the cache, re-verified, or None if there is no usable cache.

    With a fingerprint, only a cache built from exactly those raw files counts. A cache that
    fails verification is reported as a warning and ignored, so it gets rebuilt."""
    d = _cache_dir(name, cache_root)
    try:
        meta = json.loads((d / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if meta.get("format") != CACHE_FORMAT or meta.get("name") != name:
        return None
    if fingerprint is not None and meta.get("source_sha256") != fingerprint:
        return None
    try:
        arrays = {k: np.load(d / f"{k}.npy", allow_pickle=False) for k in _PARTS}
        if any(a.dtype != np.uint8 for a in arrays.values()):
            raise DataError(f"{d}: cached arrays must be uint8")
        verified = _verify_arrays(name, arrays, str(d))
    except (OSError, ValueError, DataError) as e:
        warnings.warn(f"ignoring damaged cache {d}: {_short(e)}", stacklevel=3)
        return None
    out = {"name": name, "built_from": meta["source"], "verified": verified,
           "cache": {"path": str(d), "status": "hit"}}
    return arrays, out


def _verify_arrays(name: str, arrays: dict[str, np.ndarray], where: str) -> dict[str, str]:
    """Content check of assembled arrays: per IDX part for MNIST-like data, 'all' for CIFAR."""
    if name == "cifar10":
        order = [arrays[k] for k in _PARTS]
        return {"all": _verify(name, "all", order, "+".join(_shape_str(a) for a in order), where)}
    return {stem: _verify(name, stem, [_idx_header(arrays[k]), arrays[k]],
                          _shape_str(arrays[k]), f"{where}/{k}.npy")
            for stem, k in zip(_MNIST_STEMS, _PARTS, strict=True)}


def _write_cache(name: str, cache_root: Path, arrays, meta: dict, fingerprint: str,
                 required: bool) -> dict:
    """Writes the arrays as .npy plus meta.json (last, so a half-written cache is never taken
    for a whole one). Each file is written under a temporary name and renamed."""
    d = _cache_dir(name, cache_root)
    tag = f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _check_writable(d)
        d.mkdir(parents=True, exist_ok=True)
        for k in _PARTS:
            tmp = d / f"{k}{tag}.npy"
            np.save(tmp, arrays[k], allow_pickle=False)
            os.replace(tmp, d / f"{k}.npy")
        record = {"format": CACHE_FORMAT, "name": name, "source": meta["source"],
                  "source_sha256": fingerprint, "verified": meta["verified"]}
        tmp = d / f"meta{tag}.json"
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, d / "meta.json")
    except OSError as e:
        if required:
            raise DataError(f"{d}: could not write the cache: {_short(e)}") from e
        warnings.warn(f"could not cache {name} in {d} ({_short(e)}); set ${ENV_CACHE_DIR} to a "
                      "writable folder to make later loads fast", stacklevel=4)
        return {"path": str(d), "status": f"not written: {_short(e)}"}
    return {"path": str(d), "status": "written"}


# --------------------------------------------------------------------------------------------
# Splits and statistics
# --------------------------------------------------------------------------------------------


def _check_val_size(val_size) -> None:
    ok = (isinstance(val_size, int | np.integer) and not isinstance(val_size, bool)
          and val_size >= 0) or (isinstance(val_size, float | np.floating)
                                 and 0.0 <= val_size < 1.0)
    if not ok:
        raise ValueError(f"val_size must be a count >= 0 or a fraction in [0, 1), "
                         f"found {val_size!r}")


def _val_count(val_size, n_train: int) -> int:
    """The number of validation examples. Its errors are ConfigErrors naming dataset.val_size:
    the value comes from the sweep config, which cannot check it without the dataset's size."""
    from lossjax.errors import ConfigError  # here only to keep this edit in this function

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


def _stratified_pick(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of n examples, each class contributing in proportion to its size (largest
    remainders get the leftover places), chosen at random within the class."""
    classes, counts = np.unique(y, return_counts=True)
    quota = n * counts / max(len(y), 1)
    take = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - take), kind="stable")
    take[order[: n - int(take.sum())]] += 1
    picked = [rng.permutation(np.flatnonzero(y == c))[:k]
              for c, k in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(picked + [np.zeros(0, np.int64)]))


def _channel_stats(pixels: np.ndarray, pmax: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean and std (in [0, 1] units) of uint8 pixels (P, C), in chunks so
    that no float copy of the whole training set is made."""
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


if __name__ == "__main__":  # python -m lossjax.data [NAME]: same as `lossjax data info`
    sys.exit(info_command(sys.argv[1] if len(sys.argv) > 1 else None))
