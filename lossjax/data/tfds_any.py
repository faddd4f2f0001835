"""Any image-classification dataset that tensorflow-datasets has already prepared in the
``array_record`` format (``dataset.name: "tfds:NAME"``), read through tfds without TensorFlow.

It is looked for as ``NAME/<version>/`` under the data folder, then under tfds's own folder
(``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``), newest version first. It must have
features ``image`` (uint8, any size; one channel is dropped to (H, W)) and ``label`` (a
ClassLabel, whose names become the class names), and splits ``train`` and ``test``.

There is no official checksum for an arbitrary dataset, so, as for a user's arrays, the sha256
of each file read (dataset_info.json and the array_record shards) goes into the meta. Nothing is
cached: the arrays are decoded from the shards at every load.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import numpy as np

from lossjax.data import tfds_local
from lossjax.data.checksums import message_line
from lossjax.data.types import Missing
from lossjax.errors import DataError

PREFIX = "tfds:"
# tfds dataset names are snake_case (tfds.core.naming); configs ("name/config") are not read.
NAME = re.compile(r"[a-z][a-z0-9_]*")
_CHUNK = 10_000  # examples decoded per call


def find(name: str, roots: list[Path]) -> Path | None:
    """The newest version folder of ``name`` prepared in array_record under one of ``roots``."""
    for root in roots:
        for version_dir, formats in tfds_local._prepared(name, root):
            if "array_record" in formats:
                return version_dir
    return None


def load(name: str, roots: list[Path]) -> tuple[dict[str, np.ndarray], tuple[str, ...], dict]:
    """Decoded uint8 images, integer labels, class names and the start of the meta."""
    folder = find(name, roots)
    if folder is None:
        looked = ", ".join(str(r / name) for r in roots)
        raise Missing(f"{PREFIX}{name}: no copy prepared by tensorflow-datasets in the "
                      f"array_record format in {looked}; prepare one with tfds "
                      f"(file_format='array_record'), or name the folder that holds it as "
                      "dataset.data_dir")
    if not tfds_local._has_array_record():
        raise DataError(f"{folder}: reading array_record needs the array_record package "
                        "(pip install array_record)")
    arrays: dict[str, np.ndarray] = {}
    absl_logger = logging.getLogger("absl")
    quiet = tfds_local._QuietOpenCVAdvice()
    absl_logger.addFilter(quiet)
    try:
        import tensorflow_datasets as tfds  # only this form needs it (~0.5 s)

        builder = tfds.builder_from_directory(folder)
        features = builder.info.features
        if "image" not in features or "label" not in features:
            raise DataError(f"{folder}: expected features 'image' and 'label', found "
                            f"{', '.join(features.keys())}; lossjax reads image classification")
        names = tuple(features["label"].names)
        for split in ("train", "test"):
            source = builder.as_data_source(split)
            examples = []
            for start in range(0, len(source), _CHUNK):
                examples += source.__getitems__(list(range(start, min(len(source),
                                                                      start + _CHUNK))))
            arrays["x_" + split], arrays["y_" + split] = _stack(examples, names,
                                                                f"{folder}[{split}]")
    except DataError:
        raise
    except Exception as e:  # missing splits, a foreign feature spec, unreadable shards...
        raise DataError(f"{folder}: tensorflow-datasets cannot read it: {type(e).__name__}: "
                        f"{message_line(e)}") from e
    finally:
        absl_logger.removeFilter(quiet)
    files = sorted(p for p in folder.iterdir()
                   if p.name == "dataset_info.json" or ".array_record-" in p.name)
    meta = {"name": PREFIX + name,
            "source": {"kind": "tfds-prepared", "form": tfds_local.PREPARED_FORM,
                       "path": str(folder), "files": [str(p) for p in files]},
            "files_sha256": {p.name: _sha256(p) for p in files},
            "shapes": {k: list(a.shape) for k, a in arrays.items()},
            "verified": {},  # no official checksum for an arbitrary dataset
            "cache": {"path": None, "status": "not used (decoded at every load)"}}
    return arrays, names, meta


def _stack(examples: list, names: tuple[str, ...], where: str) -> tuple[np.ndarray, np.ndarray]:
    if not examples:
        raise DataError(f"{where}: expected examples, found an empty split")
    x = np.stack([e["image"] for e in examples])
    y = np.asarray([e["label"] for e in examples])
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]  # grayscale as (H, W), as lossjax's other datasets
    if x.dtype != np.uint8:
        raise DataError(f"{where}: images must be uint8, found {x.dtype}")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= len(names):
        raise DataError(f"{where}: labels must lie in 0..{len(names) - 1}, found {y.dtype} "
                        f"{y.min()}..{y.max()}")
    return np.ascontiguousarray(x), y.astype(np.int64)


def _sha256(p: Path) -> str:
    with open(p, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
