"""CIFAR-100 (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html) from its official
python version: ``cifar-100-python.tar.gz`` or the folder it unpacks to, ``cifar-100-python/``
(pickled ``train`` and ``test`` dicts with ``data``, ``fine_labels`` and ``coarse_labels``, and
``meta`` with ``fine_label_names`` and ``coarse_label_names``), in ``<data_dir>/cifar100/``,
``<data_dir>/cifar-100/`` or ``<data_dir>/``.

Each of the three files is checked against the md5 the dataset's page publishes for the python
version (the same values torchvision checks), and its sha256 is recorded. tensorflow-datasets
registers a checksum for the binary version only (url_checksums/cifar100.txt), which is not read
here. A keras-style ``.npz`` carries no published checksum, so it is not accepted; load such a
copy as your own arrays (``dataset.name: arrays``) instead, where its sha256 is recorded.

Nothing is cached: parsing the archive takes a few seconds, no more than checking a cache would
with no official content checksum to check it against. ``label="coarse"`` gives the 20
superclasses instead of the 100 fine classes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from lossjax.data.formats import read_tar_members, unpickle_dict
from lossjax.data.types import Missing
from lossjax.errors import DataError

ARCHIVE = "cifar-100-python.tar.gz"
FOLDER = "cifar-100-python"
FOLDERS = ("cifar100", "cifar-100")
PARTS = ("train", "test", "meta")

# md5 of the files in the official cifar-100-python.tar.gz (whose own md5 is
# eb9058c3a382ffc7106e4002c42a8d85), as https://www.cs.toronto.edu/~kriz/cifar.html and
# torchvision.datasets.CIFAR100 give them. Tests replace them to check tiny fixtures.
MD5: dict[str, str] = {
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "meta": "7973b15100ade9c7d40fb424638fde48",
}
LABELS = ("fine", "coarse")


def find(root: Path) -> tuple[str, Path] | None:
    """("dir", folder) or ("tar", archive) for the first copy under ``root``, else None."""
    for d in [root / f for f in FOLDERS] + [root]:
        for folder in (d / FOLDER, d):
            present = [p for p in PARTS if (folder / p).is_file()]
            if len(present) == len(PARTS):
                return "dir", folder
            if present and folder.name == FOLDER:
                missing = ", ".join(p for p in PARTS if p not in present)
                raise DataError(f"{folder}: incomplete CIFAR-100 python folder: expected "
                                f"train, test and meta, missing {missing}")
        if (d / ARCHIVE).is_file():
            return "tar", d / ARCHIVE
    return None


def load(root: Path, label: str = "fine"
         ) -> tuple[dict[str, np.ndarray], tuple[str, ...], dict]:
    """Verified uint8 arrays (images HWC, RGB), the class names and the start of the meta."""
    found = find(root)
    if found is None:
        raise Missing(f"no CIFAR-100 found; put {ARCHIVE} or its {FOLDER}/ folder (train, test, "
                      f"meta) in {root / FOLDERS[0]} or {root}")
    form, path = found
    raw = ({p: (path / p).read_bytes() for p in PARTS} if form == "dir"
           else _members(path))
    verified = {}
    for part in PARTS:
        where = f"{path}/{part}" if form == "dir" else f"{path}[{part}]"
        md5 = hashlib.md5(raw[part], usedforsecurity=False).hexdigest()
        if md5 != MD5[part]:
            raise DataError(f"{where}: not the official CIFAR-100 {part} file: expected md5 "
                            f"{MD5[part]}, found {md5}")
        verified[part] = hashlib.sha256(raw[part]).hexdigest()
    meta_dict = _unpickle(raw["meta"], f"{path}[meta]")
    names = tuple(n.decode() if isinstance(n, bytes) else str(n)
                  for n in _field(meta_dict, f"{label}_label_names", f"{path}[meta]"))
    arrays = {}
    for split in ("train", "test"):
        d = _unpickle(raw[split], f"{path}[{split}]")
        x = _field(d, "data", f"{path}[{split}]")
        y = np.asarray(_field(d, f"{label}_labels", f"{path}[{split}]"), np.int64)
        if not (isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 2
                and x.shape[1] == 3072 and len(y) == len(x)):
            raise DataError(f"{path}[{split}]: expected data (N x 3072 uint8) and N labels, "
                            f"found {getattr(x, 'shape', type(x).__name__)} and {len(y)} labels")
        if len(y) and (y.min() < 0 or y.max() >= len(names)):
            raise DataError(f"{path}[{split}]: labels must lie in 0..{len(names) - 1}, found "
                            f"{y.min()}..{y.max()}")
        arrays["x_" + split] = np.ascontiguousarray(x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        arrays["y_" + split] = y.astype(np.uint8)
    meta = {"name": "cifar100",
            "source": {"kind": "local", "form": f"cifar100-py-{form}", "path": str(path),
                       "files": [str(path)]},
            "verified": verified, "label": label,
            "cache": {"path": None, "status": "not used (read from the files each time)"}}
    return arrays, names, meta


def _members(archive: Path) -> dict[str, bytes]:
    """train, test and meta read out of the archive in one streaming pass, extracting nothing."""
    found = read_tar_members(archive, {p: p for p in PARTS})
    if missing := [p for p in PARTS if p not in found]:
        raise DataError(f"{archive}: expected members train, test and meta, missing "
                        f"{', '.join(missing)}")
    return found


def _unpickle(data: bytes, where: str) -> dict:
    return unpickle_dict(data, where, "a CIFAR-100 python file", "a pickled dict")


def _field(d: dict, key: str, where: str):
    value = d.get(key.encode(), d.get(key))
    if value is None:
        raise DataError(f"{where}: expected the key {key!r}, found {sorted(map(str, d))}")
    return value
