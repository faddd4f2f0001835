"""A user's own arrays (``dataset: {name: arrays, path: ...}``): a ``.npz``, or a folder of
``.npy`` files, holding ``x_train``, ``y_train``, ``x_test``, ``y_test`` and optionally
``class_names``.

Features are images or vectors of any shape (N, ...), uint8 (pixels, scaled by 255 later) or
float; labels are integers 0..K-1, K being ``len(class_names)`` or else the largest label + 1.
There is no official checksum to check such data against, so the sha256 of each file read goes
into the meta instead: a result still names exactly the data it was trained on.

Nothing is ever unpickled (``allow_pickle=False``): a ``.npz`` is a zip that anyone may hand
over, and unpickling runs code. Every problem is a one-line :class:`DataError` naming the file
or key and the fix.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from lossjax.data.checksums import PARTS
from lossjax.errors import DataError

SAVE_HINT = ("save them with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...) "
             "(class_names optional, as a str array)")


def read(path) -> tuple[dict[str, np.ndarray], tuple[str, ...], dict]:
    """The four arrays (checked), the class names, and the meta that records the files."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{p}: no such file; dataset.path names a .npz file or a folder of "
                        ".npy files holding x_train, y_train, x_test and y_test")
    raw, files = _read_folder(p) if p.is_dir() else _read_npz(p)
    missing = [k for k in PARTS if k not in raw]
    if missing:
        raise DataError(f"{p}: missing {', '.join(missing)} (found: "
                        f"{', '.join(sorted(raw)) or 'nothing'}); {SAVE_HINT}")
    arrays = {k: raw[k] for k in PARTS}
    names = check(p, arrays, raw.get("class_names"))
    meta = {"name": "arrays",
            "source": {"kind": "arrays", "form": "npz" if p.is_file() else "npy-dir",
                       "path": str(p), "files": [str(f) for f in files]},
            "files_sha256": {f.name: _sha256(f) for f in files},
            "shapes": {k: list(a.shape) for k, a in arrays.items()},
            "dtypes": {k: str(a.dtype) for k, a in arrays.items()},
            "verified": {}}  # there is no official checksum for a user's data
    return arrays, names, meta


def _read_npz(p: Path) -> tuple[dict[str, np.ndarray], list[Path]]:
    try:
        with np.load(p, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise DataError(f"{p}: a single .npy array, not a .npz archive; {SAVE_HINT}")
            out = {}
            for k in z.files:
                try:
                    out[k] = z[k]
                except ValueError as e:
                    if "allow_pickle" not in str(e):
                        raise
                    raise DataError(f"{p}: array {k!r} holds Python objects (a pickle), which "
                                    "lossjax never loads; save numbers, and class_names as a "
                                    "str array (np.array(names, dtype=str))") from None
    except DataError:
        raise
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{p}: not a readable .npz archive ({' '.join(str(e).split())[:120]}); "
                        f"{SAVE_HINT}") from None
    return out, [p]


def _read_folder(p: Path) -> tuple[dict[str, np.ndarray], list[Path]]:
    files = [p / f"{k}.npy" for k in (*PARTS, "class_names") if (p / f"{k}.npy").is_file()]
    if not files:
        raise DataError(f"{p}: a folder without x_train.npy, y_train.npy, x_test.npy or "
                        f"y_test.npy; put those four there, or {SAVE_HINT}")
    out = {}
    for f in files:
        try:
            out[f.stem] = np.load(f, allow_pickle=False)
        except ValueError as e:
            why = ("holds Python objects (a pickle), which lossjax never loads"
                   if "allow_pickle" in str(e) else f"is not a readable .npy file ({e})")
            raise DataError(f"{f}: {why}; save plain numeric arrays with np.save") from None
        except OSError as e:
            raise DataError(f"{f}: cannot read ({e})") from None
    return out, files


def check(p: Path, a: dict[str, np.ndarray], class_names) -> tuple[str, ...]:
    """Checks the arrays as the engine needs them, and returns the class names (made up as
    "0".."K-1" where the file has none)."""
    for s in ("train", "test"):
        x, y = a["x_" + s], a["y_" + s]
        if x.ndim < 2:
            raise DataError(f"{p}: x_{s} has shape {x.shape}; expected (N, ...) with one row per "
                            "example, e.g. (N, 28, 28) images or (N, D) features")
        if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
            raise DataError(f"{p}: x_{s} is {x.dtype}; expected uint8 pixels (0..255) or float "
                            f"features (convert with x_{s}.astype(np.float32))")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{p}: y_{s} is {y.dtype} with shape {y.shape}; expected integer "
                            f"class labels of shape (N,) (e.g. y_{s}.astype(np.int64) if they "
                            "are whole numbers)")
        if len(x) != len(y):
            raise DataError(f"{p}: x_{s} has {len(x)} examples but y_{s} has {len(y)} labels; "
                            "expected one label per example")
        if len(y) == 0:
            raise DataError(f"{p}: x_{s} and y_{s} are empty; expected at least one example")
        if y.min() < 0:
            raise DataError(f"{p}: y_{s} holds the negative label {int(y.min())}; expected "
                            "labels 0..K-1")
        if x.dtype != np.uint8 and not _all_finite(x):
            raise DataError(f"{p}: x_{s} holds NaN or infinite values; replace or drop those "
                            "examples")
    if a["x_train"].shape[1:] != a["x_test"].shape[1:] or a["x_train"].dtype != a["x_test"].dtype:
        raise DataError(f"{p}: x_train is {a['x_train'].dtype} {a['x_train'].shape[1:]} per "
                        f"example but x_test is {a['x_test'].dtype} {a['x_test'].shape[1:]}; "
                        "expected the same shape and dtype")
    top = int(max(a["y_train"].max(), a["y_test"].max()))
    if class_names is None:
        k = top + 1
        names = tuple(str(i) for i in range(k))
    else:
        if class_names.ndim != 1 or class_names.dtype.kind not in "US":
            raise DataError(f"{p}: class_names is {class_names.dtype} with shape "
                            f"{class_names.shape}; expected a 1-D str array, one name per class")
        names = tuple(str(n) for n in class_names.astype(str))
        k = len(names)
        if top >= k:
            which = "y_train" if a["y_train"].max() == top else "y_test"
            raise DataError(f"{p}: {which} holds the label {top} but class_names names {k} "
                            f"classes; expected labels 0..{k - 1}, or add the missing names")
        if len(set(names)) != k:
            raise DataError(f"{p}: class_names repeats a name; expected one distinct name per "
                            "class")
    if k < 2:
        raise DataError(f"{p}: only {k} class; a classifier needs labels of at least 2 classes")
    return names


def _all_finite(x: np.ndarray) -> bool:
    flat = x.reshape(len(x), -1)
    return all(np.isfinite(flat[i:i + 4096]).all() for i in range(0, len(flat), 4096))


def _sha256(f: Path) -> str:
    with open(f, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
