"""The cache of prepared datasets: ``<cache>/prepared/<name>/{x,y}_{train,test}.npy`` plus
``meta.json``, so a later load reads four arrays instead of parsing archives (about 0.1 s for
MNIST).

Where it lives: ``$LOSSJAX_CACHE_DIR`` when set (useful when the data folder is read-only), else
the data folder itself. A folder whose mode has no write bit is never written, even by root
(who could): a deliberately read-only shared copy of the data then sends the cache to
``~/.cache/lossjax``.

It is fingerprinted: ``meta.json`` records the sha256 of the raw files it was built from, so a
cache is used for local files only while they are unchanged. Cached arrays are re-verified
against the official content checksums on every load, so a damaged cache is reported as a
warning and rebuilt rather than trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import uuid
import warnings
from pathlib import Path

import numpy as np

from lossjax.data.checksums import PARTS, message_line, verify_arrays
from lossjax.errors import DataError

ENV_CACHE_DIR = "LOSSJAX_CACHE_DIR"
CACHE_FORMAT = 1  # bump when the layout changes, so older caches are rebuilt, not misread


def check_writable(path: Path) -> None:
    """Raises PermissionError if the nearest existing folder of ``path`` has no write bit set.

    Root may write anywhere, so a shared, deliberately read-only data folder (mode r-x) would
    otherwise silently collect a cache when lossjax runs as root."""
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    if p.is_dir() and not stat.S_IMODE(p.stat().st_mode) & 0o222:
        raise PermissionError(f"{p} is read-only (mode {stat.S_IMODE(p.stat().st_mode):o})")


def cache_root(data_root: Path) -> Path:
    """``$LOSSJAX_CACHE_DIR`` when set, else beside the data; a read-only data folder sends the
    cache to ~/.cache/lossjax, so loads stay fast there too."""
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    try:
        check_writable(data_root)
    except PermissionError:
        return Path("~/.cache/lossjax").expanduser()
    return data_root


def prepared_dir(name: str, root: Path) -> Path:
    return root / "prepared" / name


def fingerprint(form: str, files: dict[str, Path]) -> str:
    """sha256 over the raw files as stored: cheap (about 0.25 s for CIFAR-10) and enough to tell
    whether the cache was built from exactly these files."""
    h = hashlib.sha256(form.encode())
    for key in sorted(files):
        with open(files[key], "rb") as f:
            h.update(key.encode() + hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()


def read(name: str, root: Path, fingerprint: str | None):
    """Returns (arrays, meta) from the cache, re-verified, or None if there is no usable cache.

    With a fingerprint, only a cache built from exactly those raw files counts. A cache that
    fails verification is reported as a warning and ignored, so it gets rebuilt."""
    d = prepared_dir(name, root)
    try:
        meta = json.loads((d / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if meta.get("format") != CACHE_FORMAT or meta.get("name") != name:
        return None
    if fingerprint is not None and meta.get("source_sha256") != fingerprint:
        return None
    try:
        arrays = {k: np.load(d / f"{k}.npy", allow_pickle=False) for k in PARTS}
        if any(a.dtype != np.uint8 for a in arrays.values()):
            raise DataError(f"{d}: cached arrays must be uint8")
        verified = verify_arrays(name, arrays, str(d), lambda k: f"{d}/{k}.npy")
    except (OSError, ValueError, DataError) as e:
        warnings.warn(f"ignoring damaged cache {d}: {message_line(e)}", stacklevel=3)
        return None
    out = {"name": name, "built_from": meta["source"], "verified": verified,
           "cache": {"path": str(d), "status": "hit"}}
    return arrays, out


def write(name: str, root: Path, arrays, meta: dict, fingerprint: str, required: bool) -> dict:
    """Writes the arrays as .npy plus meta.json, and returns the ``cache`` entry of the meta.

    meta.json goes last, so a half-written cache is never taken for a whole one; each file is
    written under a temporary name and renamed, so concurrent loads never see a partial file.
    When the cache is not ``required`` (a plain load), a failure is only a warning: the data
    itself was fine."""
    d = prepared_dir(name, root)
    tag = f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        check_writable(d)
        d.mkdir(parents=True, exist_ok=True)
        for k in PARTS:
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
            raise DataError(f"{d}: could not write the cache: {message_line(e)}") from e
        warnings.warn(f"could not cache {name} in {d} ({message_line(e)}); set ${ENV_CACHE_DIR} "
                      "to a writable folder to make later loads fast", stacklevel=4)
        return {"path": str(d), "status": f"not written: {message_line(e)}"}
    return {"path": str(d), "status": "written"}
