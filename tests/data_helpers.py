"""The data tests' shared builders: tiny dataset files in every published form, their checksums,
and the isolation from the machine's own data. A module of its own beside conftest.py because
they are as long as all the other shared helpers together and only the test_data*.py modules use
them.

The tiny files cannot match the official checksums, so each test that loads one puts the
files' own content checksums into ``data.CHECKSUMS`` (monkeypatched), with sha256 computed
independently of lossjax from the definitions in lossjax/data/checksums.py."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from lossjax import data
from lossjax.cli import build_parser
from lossjax.data import download, sources
from lossjax.errors import DataError

STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte")
KEYS = ("x_train", "y_train", "x_test", "y_test")
BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
           "test_batch")

#: Where the real datasets are, if anywhere: the folder $LOSSJAX_TEST_DATA names, by default the
#: copy that development machines keep beside the repository.
REAL = Path(os.environ.get("LOSSJAX_TEST_DATA")
            or Path(__file__).resolve().parents[2] / "shared" / "data")


def isolate(tmp_path, monkeypatch):
    """No test reads ~/.cache, ~/tensorflow_datasets, the system folders or the network unless
    it says so."""
    monkeypatch.setenv("LOSSJAX_DATA_DIR", str(tmp_path / "home"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tensorflow_datasets"))
    monkeypatch.delenv("LOSSJAX_CACHE_DIR", raising=False)
    monkeypatch.setattr(sources, "SYSTEM_DIRS", {})
    monkeypatch.setattr(download, "network_reachable",
                        lambda urls, timeout=3.0: "offline (tests)")


def sha(*chunks) -> str:
    """sha256 of the bytes, or of the arrays' C-order bytes, one after another."""
    h = hashlib.sha256()
    for c in chunks:
        h.update(c if isinstance(c, bytes) else np.ascontiguousarray(c).tobytes())
    return h.hexdigest()


def error(fn, *args, **kwargs) -> str:
    """The DataError message of fn(...); asserts it is one line."""
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def idx_bytes(a: np.ndarray) -> bytes:
    """``a`` as an uncompressed IDX file (uint8)."""
    return struct.pack(f">BBBB{a.ndim}I", 0, 0, 8, a.ndim, *a.shape) + a.tobytes()


def tiny_mnist(n_train=30, n_test=10, seed=0) -> dict[str, np.ndarray]:
    """Random 28x28 images; pixel [0, 0] holds the example's index so splits can be traced."""
    rng = np.random.default_rng(seed)
    x_train = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    x_train[:, 0, 0] = np.arange(n_train)
    x_test = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    x_test[:, 0, 0] = 200 + np.arange(n_test)
    return {"x_train": x_train, "y_train": (np.arange(n_train) % 10).astype(np.uint8),
            "x_test": x_test, "y_test": (np.arange(n_test) % 10).astype(np.uint8)}


def expect_mnist(monkeypatch, arrays, name="mnist"):
    """Makes ``arrays`` the content lossjax's checksums expect for ``name``."""
    monkeypatch.setitem(data.CHECKSUMS, name, {
        s: data.Expected(sha(idx_bytes(arrays[k])), "tiny", "test fixture")
        for s, k in zip(STEMS, KEYS, strict=True)})


def write_idx(folder: Path, arrays, gz=True, dotted=False, mtime=0, stems=STEMS) -> Path:
    """The IDX files of ``stems`` in ``folder``: gzipped or not, named with dots or dashes."""
    folder.mkdir(parents=True, exist_ok=True)
    for s, k in zip(STEMS, KEYS, strict=True):
        if s not in stems:
            continue
        name = s.replace("-idx", ".idx") if dotted else s
        raw = idx_bytes(arrays[k])
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(raw, mtime=mtime))
        else:
            (folder / name).write_bytes(raw)
    return folder


def tiny_cifar(per_batch=4, seed=0) -> dict[str, np.ndarray]:
    """Random 32x32x3 images: five training batches and a test batch of ``per_batch`` each."""
    rng = np.random.default_rng(seed)
    n = per_batch * 5
    return {"x_train": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
            "y_train": (np.arange(n) % 10).astype(np.uint8),
            "x_test": rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8),
            "y_test": (np.arange(per_batch) % 10).astype(np.uint8)}


def cifar_batches(arrays) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``arrays`` split into CIFAR-10's batches: {batch name: (x, y)}."""
    xs = np.split(arrays["x_train"], 5) + [arrays["x_test"]]
    ys = np.split(arrays["y_train"], 5) + [arrays["y_test"]]
    return dict(zip(BATCHES, zip(xs, ys, strict=True), strict=True))


def expect_cifar(monkeypatch, arrays):
    """Makes ``arrays`` the content lossjax's checksums expect for cifar10, per batch and all."""
    table = {b: data.Expected(sha(x, y), "tiny", "test fixture")
             for b, (x, y) in cifar_batches(arrays).items()}
    table["all"] = data.Expected(sha(*(arrays[k] for k in KEYS)), "tiny", "test fixture")
    monkeypatch.setitem(data.CHECKSUMS, "cifar10", table)


class Py2Pickler(pickle._Pickler):
    """Writes pickles the way Python 2 wrote the official CIFAR-10 batches: str and bytes as
    py2 strings, numpy's functions under numpy.core."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        b = obj.encode("latin1") if isinstance(obj, str) else obj
        n = len(b)
        self.write((pickle.SHORT_BINSTRING + bytes([n]) if n < 256
                    else pickle.BINSTRING + struct.pack("<i", n)) + b)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)


def py_batch(x, y, py2=True) -> bytes:
    """One batch of the python version: a pickle as Python 2 wrote it, or as Python 3 does."""
    d = {"batch_label": "a batch", "labels": [int(v) for v in y],
         "data": np.ascontiguousarray(x.transpose(0, 3, 1, 2).reshape(len(x), 3072)),
         "filenames": [f"img_{i}.png" for i in range(len(x))]}
    if not py2:
        return pickle.dumps({k.encode(): v for k, v in d.items()}, protocol=2)
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(d)
    return buf.getvalue()


def bin_batch(x, y) -> bytes:
    """One batch of the binary version: label byte, then 3072 pixel bytes, per record."""
    rows = x.transpose(0, 3, 1, 2).reshape(len(x), 3072)
    return np.concatenate([y[:, None], rows], axis=1).astype(np.uint8).tobytes()


def write_cifar(folder: Path, arrays, form: str) -> Path:
    """form: py-dir, py-tar, bin-dir, bin-tar or npz (keras-style, labels (N, 1))."""
    folder.mkdir(parents=True, exist_ok=True)
    if form == "npz":
        np.savez_compressed(folder / "cifar10.npz", x_train=arrays["x_train"],
                            y_train=arrays["y_train"][:, None], x_test=arrays["x_test"],
                            y_test=arrays["y_test"][:, None])
        return folder
    binary = form.startswith("bin")
    sub = "cifar-10-batches-bin" if binary else "cifar-10-batches-py"
    members = {b + (".bin" if binary else ""): (bin_batch if binary else py_batch)(x, y)
               for b, (x, y) in cifar_batches(arrays).items()}
    if form.endswith("dir"):
        (folder / sub).mkdir(exist_ok=True)
        for fname, payload in members.items():
            (folder / sub / fname).write_bytes(payload)
    else:
        archive = "cifar-10-binary.tar.gz" if binary else "cifar-10-python.tar.gz"
        with tarfile.open(folder / archive, "w:gz") as tf:
            for fname, payload in {"batches.meta": b"meta", **members}.items():
                info = tarfile.TarInfo(f"{sub}/{fname}")
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
    return folder


def same_arrays(ds: data.Dataset, arrays, val_size=0):
    """``ds`` holds exactly ``arrays`` (no validation split taken)."""
    assert val_size == 0
    assert np.array_equal(ds.x_train, arrays["x_train"])
    assert np.array_equal(ds.y_train, arrays["y_train"])
    assert np.array_equal(ds.x_test, arrays["x_test"])
    assert np.array_equal(ds.y_test, arrays["y_test"])


def run_cli(*argv: str) -> int:
    """A ``lossjax`` subcommand as main() runs it, minus main()'s signal watcher and error
    printing (test_cli_data_info_exit_code covers those)."""
    args = build_parser().parse_args(argv)
    return args.func(args)


def serve_mnist(tmp_path, monkeypatch, serve, **registration):
    """Tiny MNIST files, expected by lossjax's checksums and served over HTTP by ``serve``
    (the first of the ``hosts`` fixture)."""
    arrays = tiny_mnist()
    expect_mnist(monkeypatch, arrays)
    files = write_idx(tmp_path / "server", arrays)
    for s in STEMS:
        serve("mnist", s, files / (s + ".gz"), **registration)
    return arrays
