"""Where a dataset's raw files come from, in this order (the first that has them wins):

``data_dir`` is the ``data_dir`` argument, else ``$LOSSJAX_DATA_DIR``, else ``~/.cache/lossjax``
(:func:`default_data_dir`).

1. **Local files** in ``data_dir/<name>/``, ``data_dir/<alias>/`` or ``data_dir/`` itself, in
   their usual published forms (:mod:`lossjax.data.formats`):

   - MNIST / Fashion-MNIST: the four IDX files ``train-images-idx3-ubyte``,
     ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, gzipped
     or not (``.gz`` optional; the ``train-images.idx3-ubyte`` spelling is accepted too), or a
     keras-style ``mnist.npz`` / ``fashion_mnist.npz``.
   - CIFAR-10: ``cifar-10-batches-py/`` (``data_batch_1..5``, ``test_batch``), the original
     ``cifar-10-python.tar.gz``, the binary version ``cifar-10-batches-bin/`` or
     ``cifar-10-binary.tar.gz``, or a keras-style ``cifar10.npz``.

2. **The cache** of what was prepared before (:mod:`lossjax.data.cache`). When local files exist
   (source 1) the cache is used only if it was built from exactly those files.
3. **tensorflow-datasets' folder** (``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``): the raw
   files tfds downloaded before, else a dataset tfds prepared in array_record
   (:mod:`lossjax.data.tfds_local`).
4. **System folders** that Linux packages install (:data:`SYSTEM_DIRS`).
5. **Download** through tensorflow-datasets, where there is a network
   (:mod:`lossjax.data.download`).

User files come first so that a copy you name is the one used; the cache comes before the rest
because it is the fast path to the same verified content; copies a user's own tools keep come
before the system's, and any copy before a download.
``digits`` is embedded (:mod:`lossjax.data.digits`) and ignores all of this.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lossjax.data import cache as _cache
from lossjax.data import tfds_local
from lossjax.data.digits import load_digits
from lossjax.data.formats import parse
from lossjax.data.registry import (
    ACCEPTED,
    CIFAR_BATCHES,
    FOLDERS,
    MNIST_STEMS,
    NPZ_NAMES,
    check_name,
)
from lossjax.data.types import Missing, Source
from lossjax.errors import DataError

ENV_DATA_DIR = "LOSSJAX_DATA_DIR"

# Folders that Linux distribution packages install datasets into: Debian's
# dataset-fashion-mnist puts the original Fashion-MNIST files here.
SYSTEM_DIRS: dict[str, tuple[str, ...]] = {
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist",),
}


def default_data_dir() -> Path:
    """Where lossjax looks for data files and keeps its cache when no ``data_dir`` is given:
    ``$LOSSJAX_DATA_DIR`` if set, else ``~/.cache/lossjax``."""
    env = os.environ.get(ENV_DATA_DIR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lossjax"


def data_root(data_dir) -> Path:
    """The data folder; DataError, naming where it came from, if that path is something other
    than a folder (a file, a FIFO, /dev/null): no data file could be put in it."""
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if root.exists() and not root.is_dir():
        origin = {"given": "dataset.data_dir", "default": "the default data folder"}.get(
            root_origin(data_dir), f"${ENV_DATA_DIR}")
        raise DataError(f"{origin}: {root} is not a folder; give a folder (a new path is "
                        "made when a dataset is cached) for the data files and the cache")
    return root


def root_origin(data_dir) -> str:
    """How the data folder was chosen, in the words ``lossjax data info`` prints."""
    if data_dir is not None:
        return "given"
    return f"from ${ENV_DATA_DIR}" if os.environ.get(ENV_DATA_DIR) else "default"


def resolve(name: str, data_dir, cache: str = "write", download: bool = True
            ) -> tuple[dict[str, np.ndarray], dict]:
    """Finds ``name`` in the order above and returns its verified uint8 arrays (x_train,
    y_train, x_test, y_test; labels uint8) and the start of its meta.

    ``cache``: "write" (best effort), "read" (never write: for ``info``) or "required" (for
    ``prepare``, whose whole point is the cache). ``download=False`` raises :class:`Missing`
    instead of downloading."""
    if check_name(name) == "digits":
        return load_digits()
    root = data_root(data_dir)
    cache_root = _cache.cache_root(root)
    src = find_local(name, root, "local")
    if src is not None:
        return from_source(name, src, cache_root, cache)
    hit = _cache.read(name, cache_root, fingerprint=None)
    if hit is not None:
        arrays, meta = hit
        meta["source"] = {"kind": "cache", "built_from": meta.pop("built_from")}
        return arrays, meta
    tfds_root = tfds_local.tfds_root()
    src = tfds_local.find(name, tfds_root)
    if src is not None:
        return from_source(name, src, cache_root, cache)
    for d in SYSTEM_DIRS.get(name, ()):
        src = find_local(name, Path(d), "system")
        if src is not None:
            return from_source(name, src, cache_root, cache)
    where = f"put {ACCEPTED[name]} in {root / FOLDERS[name][0]} or {root}"
    unread = "".join(f"; {note}" for note in tfds_local.unreadable(name, tfds_root))
    if not download:
        raise Missing(f"no local files or cache; {where}, or let `lossjax.data.load` download "
                      f"them (needs a network){unread}")
    # Imported for a download only: its socket and urllib.request add ~20 ms to lossjax.data.
    from lossjax.data import download as _download

    try:
        src = _download.fetch(name, cache_root, where)
    except Missing as e:
        if unread:
            raise Missing(f"{e}{unread}") from e
        raise
    return from_source(name, src, cache_root, cache)


def from_source(name: str, src: Source, cache_root: Path, cache: str
                ) -> tuple[dict[str, np.ndarray], dict]:
    """Uses the cache if it was built from these very files; else parses and verifies them
    and (unless cache == "read") writes the cache."""
    fp = _cache.fingerprint(src.form, src.files)
    hit = _cache.read(name, cache_root, fingerprint=fp)
    if hit is not None:
        arrays, meta = hit
        meta.pop("built_from")
        meta["source"] = src.describe()
        return arrays, meta
    arrays, verified = parse(name, src.form, src.files)
    meta = {"name": name, "source": src.describe(), "verified": verified}
    if cache == "read":
        meta["cache"] = {"path": str(_cache.prepared_dir(name, cache_root)),
                         "status": "not written (info)"}
    else:
        meta["cache"] = _cache.write(name, cache_root, arrays, meta, fp,
                                     required=cache == "required")
    return arrays, meta


def find_local(name: str, root: Path, kind: str) -> Source | None:
    """Looks in root/<name>/, root/<alias>/ and root/ for one complete published form.

    A partial set (say three of the four IDX files) is an error, not a reason to look further:
    silently falling back to another copy would hide the problem."""
    for d in _candidate_dirs(name, root):
        if name in ("mnist", "fashion_mnist"):
            found = {s: _first_file(d, _idx_names(s)) for s in MNIST_STEMS}
            if all(found.values()):
                return Source(kind, "idx", d, found)
            if any(found.values()):
                missing = [s + "[.gz]" for s, p in found.items() if p is None]
                raise DataError(f"{d}: incomplete {name} IDX set: expected all of "
                                f"{', '.join(MNIST_STEMS)}, missing {', '.join(missing)}")
        else:
            src = _find_cifar(d, kind)
            if src is not None:
                return src
        npz = _first_file(d, NPZ_NAMES[name])
        if npz is not None:
            return Source(kind, "npz", d, {npz.name: npz})
    return None


def _find_cifar(d: Path, kind: str) -> Source | None:
    for sub, form, batch_names in (
        ("cifar-10-batches-py", "cifar-py-dir", CIFAR_BATCHES),
        ("cifar-10-batches-bin", "cifar-bin-dir", [b + ".bin" for b in CIFAR_BATCHES]),
    ):
        for folder in (d / sub, d):
            present = {b: folder / f for b, f in zip(CIFAR_BATCHES, batch_names, strict=True)
                       if (folder / f).is_file()}
            if len(present) == len(CIFAR_BATCHES):
                return Source(kind, form, folder, present)
            if present:
                missing = [f for b, f in zip(CIFAR_BATCHES, batch_names, strict=True)
                           if b not in present]
                raise DataError(f"{folder}: incomplete CIFAR-10 batches: expected "
                                f"{', '.join(batch_names)}, missing {', '.join(missing)}")
    for fname, form in (("cifar-10-python.tar.gz", "cifar-py-tar"),
                        ("cifar-10-binary.tar.gz", "cifar-bin-tar")):
        if (d / fname).is_file():
            return Source(kind, form, d, {fname: d / fname})
    return None


def _candidate_dirs(name: str, root: Path) -> list[Path]:
    dirs = [root / f for f in FOLDERS[name]] + [root]
    return [d for d in dirs if d.is_dir()]


def _first_file(folder: Path, names) -> Path | None:
    for n in names:
        if (folder / n).is_file():
            return folder / n
    return None


def _idx_names(stem: str) -> tuple[str, ...]:
    dotted = stem.replace("-idx", ".idx")  # train-images.idx3-ubyte: how some unzippers name it
    return (stem, stem + ".gz", dotted, dotted + ".gz")
