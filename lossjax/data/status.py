"""What ``lossjax data info`` and ``lossjax data prepare`` report, as records: where each dataset
would load from, whether it is present and verified, and its sizes. Printing them is the CLI's
job (lossjax/cli.py)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from lossjax.data import cache as _cache
from lossjax.data import cifar100, multidigit, tfds_any, tfds_local
from lossjax.data.registry import (
    ACCEPTED,
    BUILT,
    CLASS_NAMES,
    DATASETS,
    FOLDERS,
    FORMS,
    KIND_WORDS,
    NAMES,
    check_name,
)
from lossjax.data.sources import data_root, find_local, from_source, resolve, root_origin
from lossjax.data.types import Missing
from lossjax.errors import DataError


@dataclass(frozen=True)
class DatasetStatus:
    """One dataset as :func:`info` or :func:`prepare` found it.

    ``status`` is "ok" (present, content verified), "missing" (no source has it) or "broken"
    (a source has it but fails to parse or verify); ``problem`` says why for the last two. For
    ``arrays`` and ``tfds:NAME``, which name no one dataset, it is "yours" and ``problem`` says
    where they are read from.
    ``source``, ``cache`` and ``verified`` are what :func:`lossjax.data.load` records in
    ``Dataset.meta`` under the same keys. ``notes``: one line per other copy found in
    tensorflow-datasets' folder, used or not (a tfrecord copy, which needs TensorFlow)."""

    name: str
    status: str
    problem: str = ""
    source: dict | None = None
    cache: dict | None = None
    verified: tuple[str, ...] = ()
    train_size: int = 0
    test_size: int = 0
    image_shape: tuple[int, ...] = ()
    num_classes: int = 0
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class DataInfo:
    """The data folder and cache folder in use, and each dataset's status."""

    data_dir: Path
    data_dir_origin: str  # "given", "from $LOSSJAX_DATA_DIR" or "default"
    cache_dir: Path
    datasets: tuple[DatasetStatus, ...]


def info(name: str | None = None, data_dir=None) -> DataInfo:
    """Where each dataset (or only ``name``) would load from, whether it is present and
    verified, and its sizes. Writes nothing and downloads nothing."""
    every = (*NAMES, "tfds:NAME")
    names = every if name is None else (check_name(name, every),)
    root = data_root(data_dir)
    found = []
    for n in names:
        if n not in DATASETS:
            found.append(_other(n, data_dir))
            continue
        try:
            arrays, meta = resolve(n, data_dir, cache="read", download=False)
        except Missing as e:  # its message already names the copies that cannot be read
            found.append(DatasetStatus(n, "missing", problem=str(e)))
        except DataError as e:
            found.append(DatasetStatus(n, "broken", problem=str(e), notes=_tfds_notes(n, None)))
        else:
            found.append(replace(_ok(n, arrays, meta), notes=_tfds_notes(n, meta["source"])))
    return DataInfo(root, root_origin(data_dir), _cache.cache_root(root), tuple(found))


def _tfds_notes(name: str, used: dict | None) -> tuple[str, ...]:
    """The copies in tensorflow-datasets' folder that ``used`` (a source record) is not: so
    that a user who keeps data there sees it was found, and why it is not read."""
    if name == "digits":
        return ()
    root = tfds_local.tfds_root()
    used = used or {}
    used_path = used.get("path") or (used.get("built_from") or {}).get("path")
    notes = [f"also found: {KIND_WORDS[s.kind]} {FORMS[s.form]} in {s.root}"
             for s in tfds_local.found_copies(name, root) if str(s.root) != used_path]
    return tuple(notes + tfds_local.unreadable(name, root))


def prepare(name: str, source_dir, data_dir=None) -> DatasetStatus | None:
    """Verifies the files of ``name`` in ``source_dir`` (or its ``<name>/`` folder) and caches
    them under the cache of ``data_dir``, so that later loads need neither the files nor a
    network. Raises DataError if the files are absent or wrong or the cache cannot be written;
    returns None for ``digits``, which is embedded and needs no preparing."""
    name = check_name(name)
    if name == "digits":
        return None
    src_root = Path(source_dir).expanduser()
    if not src_root.is_dir():
        raise DataError(f"{src_root}: no such directory (expected a folder holding "
                        f"{ACCEPTED[name]})")
    src = find_local(name, src_root, "local")
    if src is None:
        raise DataError(f"{src_root}: no {name} files found: expected {ACCEPTED[name]} "
                        f"in {src_root} or {src_root / FOLDERS[name][0]}")
    cache_root = _cache.cache_root(data_root(data_dir))
    arrays, meta = from_source(name, src, cache_root, cache="required")
    return _ok(name, arrays, meta)


def _ok(name: str, arrays, meta: dict) -> DatasetStatus:
    return DatasetStatus(
        name, "ok", source=meta["source"], cache=meta["cache"],
        verified=tuple(meta["verified"]), train_size=len(arrays["y_train"]),
        test_size=len(arrays["y_test"]), image_shape=tuple(arrays["x_train"].shape[1:]),
        num_classes=len(CLASS_NAMES[name]))


def _other(name: str, data_dir) -> DatasetStatus:
    """The datasets that are not read from official files: CIFAR-100 (files checked by md5),
    the multi-digit MNISTs (built from MNIST when loaded: nothing is built here), and the two
    that name no one dataset."""
    root = data_root(data_dir)
    if name == "arrays":
        return DatasetStatus(name, "yours", problem="your own .npz or folder of .npy files "
                             "(x_train, y_train, x_test, y_test), named by dataset.path")
    if name == "tfds:NAME":
        roots = [root, tfds_local.tfds_root()]
        ready = sorted({d.parent.name for r in roots if r.is_dir() for d in r.glob("*/*")
                        if tfds_any.find(d.parent.name, [r]) == d})
        return DatasetStatus(name, "yours", problem=f"datasets tensorflow-datasets prepared "
                             f"in array_record in {roots[0]} or {roots[1]}; found: "
                             f"{', '.join(ready) or 'none'}")
    try:
        if name == "cifar100":
            arrays, names, meta = cifar100.load(root)
        else:
            arrays, meta = resolve(BUILT[name], data_dir, cache="read", download=False)
            per_class = multidigit.PER_CLASS[name]
            names = CLASS_NAMES[name]
            width = arrays["x_train"].shape[2] * multidigit.DIGITS[name]
            shape = (*arrays["x_train"].shape[1:2], width)
            return DatasetStatus(
                name, "ok", source={"kind": "built", "form": name,
                                    "path": meta["source"].get("path", "")},
                cache={"path": str(_cache.prepared_dir(name + "-*", _cache.cache_root(root))),
                       "status": "built at the first load"},
                verified=tuple(meta["verified"]), train_size=per_class * len(names),
                test_size=per_class // multidigit.TEST_FRACTION * len(names), image_shape=shape,
                num_classes=len(names))
    except Missing as e:
        return DatasetStatus(name, "missing", problem=str(e))
    except DataError as e:
        return DatasetStatus(name, "broken", problem=str(e))
    return DatasetStatus(name, "ok", source=meta["source"], cache=meta["cache"],
                         verified=tuple(meta["verified"]), train_size=len(arrays["y_train"]),
                         test_size=len(arrays["y_test"]),
                         image_shape=tuple(arrays["x_train"].shape[1:]), num_classes=len(names))
