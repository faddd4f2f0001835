"""Source 3: what tensorflow-datasets already keeps in a user's ``$TFDS_DATA_DIR`` (default
``~/tensorflow_datasets``, as tfds itself chooses it), so that data tfds fetched or prepared
before is neither fetched nor stored again. Both forms pass the same content check as every
other source.

- **tfds downloads**: ``downloads/<name>/`` (``downloads/`` itself for older tfds releases) holds
  the official files under names tfds derives from the URL and the file's sha256
  (``get_dl_fname`` in tfds's download code), each beside a ``<file>.INFO`` JSON whose ``urls``
  say where it came from. Files are matched to :data:`~lossjax.data.registry.DOWNLOADS` by those
  URLs, not by their names (tfds has renamed them before, and its naming code is private); tfds
  itself counts a download as present only with its INFO file. They are the IDX ``.gz`` files
  and the CIFAR-10 binary archive, parsed as any local copy. Nothing here imports tfds.
- **tfds prepared**: ``<name>/<version>/``, as ``download_and_prepare`` leaves it. The
  ``array_record`` format is read through tfds's public API without TensorFlow
  (``tfds.builder_from_directory(...).as_data_source()``; tfds decodes the PNG images with PIL
  or OpenCV). The ``tfrecord`` format, tfds's default, only TensorFlow reads: it is reported
  (:func:`unreadable`), never read.

A prepared split is stored shuffled: tfds sorts examples by the md5 of the split name and the
example's key, and the MNIST and CIFAR-10 builders use the example's index in the official files
as its key. :func:`_official_order` undoes that, so the arrays get the same content check as
every other form; were tfds ever to order differently, that check would fail, not pass wrong
data.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
from pathlib import Path

import numpy as np

from lossjax.data.checksums import PARTS, message_line, verify_arrays
from lossjax.data.registry import DOWNLOADS
from lossjax.data.types import Source
from lossjax.errors import DataError

ENV_TFDS_DATA_DIR = "TFDS_DATA_DIR"
PREPARED_FORM = "tfds-array_record"
_VERSION = re.compile(r"\d+\.\d+\.\d+")
_CHUNK = 10_000  # examples decoded per call: a few MB of images at a time


def tfds_root() -> Path:
    """tfds's own data folder: ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``."""
    env = os.environ.get(ENV_TFDS_DATA_DIR)
    return Path(env).expanduser() if env else Path.home() / "tensorflow_datasets"


def find(name: str, root: Path) -> Source | None:
    """The first readable tfds copy of ``name`` under ``root``: raw downloads first (parsed in
    well under a second), then a prepared array_record dataset (decoding takes tens of seconds
    for 70,000 images, once: the result is cached)."""
    found = found_copies(name, root)
    return found[0] if found else None


def found_copies(name: str, root: Path) -> list[Source]:
    """Every readable tfds copy of ``name`` under ``root``, in the order :func:`find` uses."""
    out = []
    downloads = root / "downloads"
    for folder in (downloads / name, downloads):
        files = _downloaded(folder, DOWNLOADS[name])
        if files is not None:
            form = "cifar-bin-tar" if name == "cifar10" else "idx"
            out.append(Source("tfds-download", form, folder, files))
            break
    for version_dir, formats in _prepared(name, root):
        if "array_record" in formats and _has_array_record():
            files = {p.name: p for p in sorted(version_dir.iterdir())
                     if p.name in ("dataset_info.json", "features.json")
                     or ".array_record-" in p.name}
            out.append(Source("tfds-prepared", PREPARED_FORM, version_dir, files))
            break
    return out


def unreadable(name: str, root: Path) -> list[str]:
    """One line per prepared copy of ``name`` that lossjax cannot read, with the fix: the
    tfrecord format needs TensorFlow, array_record the array_record package."""
    notes = []
    for version_dir, formats in _prepared(name, root):
        if "array_record" in formats:
            if not _has_array_record():
                notes.append(f"{version_dir}: tfds prepared {name} in array_record, but the "
                             "array_record package is not installed to read it; not used "
                             "(pip install array_record)")
            continue
        if formats:
            fmt = " and ".join(sorted(formats))
            notes.append(f"{version_dir}: tfds prepared {name} in {fmt}, which only TensorFlow "
                         "reads; not used (with tensorflow installed, `tfds convert_format "
                         f"--dataset_version_dir={version_dir} --out_file_format=array_record` "
                         "adds an array_record copy that lossjax reads)")
    return notes


def read_prepared(name: str, files: dict[str, Path]) -> tuple[dict[str, np.ndarray],
                                                             dict[str, str]]:
    """Decodes a prepared array_record dataset through tfds, restores the official order and
    checks the content against :data:`~lossjax.data.checksums.CHECKSUMS`."""
    folder = files["dataset_info.json"].parent
    arrays: dict[str, np.ndarray] = {}
    quiet = _QuietOpenCVAdvice()
    absl_logger = logging.getLogger("absl")
    absl_logger.addFilter(quiet)
    try:
        import tensorflow_datasets as tfds  # here: ~0.5 s to import, and only this form needs it

        builder = tfds.builder_from_directory(folder)
        shuffled = not builder.info.disable_shuffling
        for split in ("train", "test"):
            data = builder.as_data_source(split)
            examples = []
            for start in range(0, len(data), _CHUNK):
                keys = list(range(start, min(len(data), start + _CHUNK)))
                examples += data.__getitems__(keys)
            x, y = _stack(name, examples, f"{folder}[{split}]")
            if shuffled:
                x, y = _official_order(split, x), _official_order(split, y)
            arrays["x_" + split], arrays["y_" + split] = x, y
    except DataError:
        raise
    except Exception as e:  # missing splits, a foreign feature spec, unreadable shards...
        raise DataError(f"{folder}: tensorflow-datasets cannot read this prepared {name}: "
                        f"{type(e).__name__}: {message_line(e)}; delete the folder, or put the "
                        f"raw files in a data folder") from e
    finally:
        absl_logger.removeFilter(quiet)
    return arrays, verify_arrays(name, {k: arrays[k] for k in PARTS}, str(folder),
                                 lambda k: f"{folder}[{k}]")


def _stack(name: str, examples: list, where: str) -> tuple[np.ndarray, np.ndarray]:
    if not examples:
        raise DataError(f"{where}: expected examples, found an empty split")
    if not all(isinstance(e, dict) and "image" in e and "label" in e for e in examples[:1]):
        raise DataError(f"{where}: expected examples with 'image' and 'label', found "
                        f"{sorted(examples[0]) if isinstance(examples[0], dict) else examples[0]}")
    x = np.stack([e["image"] for e in examples])
    y = np.asarray([e["label"] for e in examples])
    if name != "cifar10" and x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]  # tfds stores grayscale as (28, 28, 1); lossjax's canonical form is 28x28
    if x.dtype != np.uint8:
        raise DataError(f"{where}: images must be uint8, found {x.dtype}")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() > 255:
        raise DataError(f"{where}: labels must be class indices, found {y.dtype} "
                        f"{y.min()}..{y.max()}")
    return np.ascontiguousarray(x), y.astype(np.uint8)


def _official_order(split: str, a: np.ndarray) -> np.ndarray:
    """Record j of a shuffled split is the example whose key has the j-th smallest hash; the
    hash is tfds's (md5 salted with the split name, over ``str(key)``), whose docs promise it
    changes only with a dataset's major version."""
    salt = hashlib.md5(split.encode())
    hashes = []
    for key in range(len(a)):
        h = salt.copy()
        h.update(str(key).encode())
        hashes.append(h.digest())  # big-endian bytes sort as tfds's 128-bit integers do
    keys = np.asarray(sorted(range(len(a)), key=hashes.__getitem__))
    out = np.empty_like(a)
    out[keys] = a
    return out


def _downloaded(folder: Path, urls: dict[str, str]) -> dict[str, Path] | None:
    """{key: file} if ``folder`` holds a tfds download of every URL in ``urls``, else None. A
    partial set is what an interrupted tfds download leaves: not a copy, not an error."""
    if not folder.is_dir():
        return None
    by_url: dict[str, Path] = {}
    for info in sorted(folder.glob("*.INFO")):
        try:
            record = json.loads(info.read_text())
        except (OSError, ValueError):
            continue
        f = info.with_name(info.name[: -len(".INFO")])
        if isinstance(record, dict) and f.is_file():
            for url in record.get("urls") or ():
                by_url.setdefault(url, f)
    found = {key: by_url.get(url) for key, url in urls.items()}
    return found if all(found.values()) else None


def _prepared(name: str, root: Path) -> list[tuple[Path, set[str]]]:
    """(version folder, file formats with shards for both train and test), newest version
    first; tfds's unfinished ``incomplete.*`` folders do not look like versions."""
    base = root / name
    if not base.is_dir():
        return []
    out = []
    for d in base.iterdir():
        if d.is_dir() and _VERSION.fullmatch(d.name) and (d / "dataset_info.json").is_file():
            # Only the two formats tfds prepares these datasets in; lossjax has not tried
            # tfds's others (parquet, riegeli), so it neither reads nor judges them.
            formats = {fmt for fmt in ("array_record", "tfrecord")
                       if all(any(d.glob(f"{name}-{split}.{fmt}-*"))
                              for split in ("train", "test"))}
            out.append((d, formats))
    return sorted(out, key=lambda v: tuple(map(int, v[0].name.split("."))), reverse=True)


def _has_array_record() -> bool:
    return importlib.util.find_spec("array_record") is not None


class _QuietOpenCVAdvice(logging.Filter):
    """tfds advises installing OpenCV the first time it decodes with PIL: advice about speed,
    printed in the middle of ``lossjax data info``; PIL decodes the same pixels."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "OpenCV is not installed" not in record.getMessage()
