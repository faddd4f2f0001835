"""Parsers for the published forms of MNIST, Fashion-MNIST and CIFAR-10, with numpy alone.

Each returns uint8 arrays ``x_train y_train x_test y_test`` (labels uint8; CIFAR-10 images HWC,
RGB) and ``{part: sha256}`` of the content it verified against
:data:`lossjax.data.checksums.CHECKSUMS`. The formats are simple enough that reading them here
is shorter than depending on a library: tensorflow-datasets can only *prepare* these datasets
with TensorFlow installed (it encodes images with ``tf.image``), about 1.4 GB for a few pages of
parsing. Every expected failure is a one-line :class:`~lossjax.errors.DataError` naming the file,
what was expected and what was found.

Forms (keys of :data:`lossjax.data.registry.FORMS`):

- ``idx``: the four IDX files of MNIST (LeCun et al. 1998, http://yann.lecun.com/exdb/mnist/)
  and Fashion-MNIST (Xiao et al. 2017), gzipped or not.
- ``npz``: keras-style ``.npz`` with ``x_train y_train x_test y_test``: images uint8 (N, H, W)
  or (N, H, W, C), labels (N,) or (N, 1).
- ``cifar-py-dir`` / ``cifar-py-tar``: CIFAR-10's python version (pickled batches), as a folder
  or the original ``cifar-10-python.tar.gz`` (https://www.cs.toronto.edu/~kriz/cifar.html).
- ``cifar-bin-dir`` / ``cifar-bin-tar``: its binary version (what tensorflow-datasets downloads).
- ``tfds-array_record``: a dataset tensorflow-datasets prepared in array_record, which needs
  tfds to decode (:mod:`lossjax.data.tfds_local`), though not TensorFlow.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np

from lossjax.data.checksums import PARTS, idx_header, message_line, shape_str, verify, verify_arrays
from lossjax.data.registry import CIFAR_BATCHES, MNIST_STEMS
from lossjax.data.tfds_local import read_prepared
from lossjax.errors import DataError

Arrays = dict[str, np.ndarray]


def parse(name: str, form: str, files: dict[str, Path]) -> tuple[Arrays, dict[str, str]]:
    """Parses one set of raw files (``files`` keyed by IDX stem or CIFAR batch name, or a single
    archive) into uint8 arrays and checks their content."""
    if form == "idx":
        return read_idx_set(name, files)
    if form == "npz":
        return read_npz(name, next(iter(files.values())))
    if form == "tfds-array_record":
        return read_prepared(name, files)
    if form in ("cifar-py-dir", "cifar-bin-dir"):
        raw = {b: (lambda p=p: p.read_bytes(), str(p)) for b, p in files.items()}
        return read_cifar_batches(raw, binary=form == "cifar-bin-dir")
    archive = next(iter(files.values()))
    return read_cifar_batches(_tar_members(archive), binary=form == "cifar-bin-tar")


# --------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)


def read_maybe_gzip(path: Path) -> bytes:
    """Reads a file, decompressing it if it starts with the gzip magic, whatever its name: tfds's
    download cache, for one, stores the .gz files under names of its own."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError as e:
        raise DataError(f"{path}: truncated gzip stream: expected a complete gzip file, found "
                        f"{len(raw)} bytes ending early ({message_line(e)})") from e
    except (OSError, zlib.error) as e:
        raise DataError(f"{path}: corrupt gzip data: {message_line(e)}") from e


def parse_idx(data: bytes, where: str, ndim: int) -> np.ndarray:
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


def read_idx_set(name: str, files: dict[str, Path]) -> tuple[Arrays, dict[str, str]]:
    arrays, verified = {}, {}
    for stem, key in zip(MNIST_STEMS, PARTS, strict=True):
        path = files[stem]
        a = parse_idx(read_maybe_gzip(path), str(path), 3 if key[0] == "x" else 1)
        verified[stem] = verify(name, stem, [idx_header(a), a], shape_str(a), str(path))
        arrays[key] = a
    for split, stem in (("train", "train"), ("test", "t10k")):
        nx, ny = len(arrays["x_" + split]), len(arrays["y_" + split])
        if nx != ny:  # the official checksums rule this out; a replaced table (tests) does not
            raise DataError(f"{files[stem + '-labels-idx1-ubyte']}: count disagrees with the "
                            f"images: expected {nx} labels, found {ny}")
    return arrays, verified


# --------------------------------------------------------------------------------------------
# keras-style .npz


def read_npz(name: str, path: Path) -> tuple[Arrays, dict[str, str]]:
    """A keras-style .npz; its arrays get the same content check as the official files."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in PARTS if k not in z.files]
            if missing:
                raise DataError(f"{path}: expected arrays x_train y_train x_test y_test, found "
                                f"{' '.join(z.files) or 'none'}")
            arrays = {k: z[k] for k in PARTS}
    except DataError:
        raise
    except Exception as e:  # zipfile.BadZipFile, EOFError, zlib.error, ValueError...
        raise DataError(f"{path}: not a readable .npz (truncated or corrupt): "
                        f"{type(e).__name__}: {message_line(e)}") from e
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
                            f"{y.dtype} {shape_str(y)}")
        if len(y) and (y.min() < 0 or y.max() > 255):
            raise DataError(f"{path}: y_{s} must hold class indices, found values "
                            f"{y.min()}..{y.max()}")
        arrays["x_" + s], arrays["y_" + s] = x, y.astype(np.uint8)
    return arrays, verify_arrays(name, arrays, str(path), lambda k: f"{path}[{k}]")


# --------------------------------------------------------------------------------------------
# CIFAR-10 python and binary batches


def read_tar_members(archive: Path, wanted: dict[str, str]) -> dict[str, bytes]:
    """The files of a tar archive whose base names are keys of ``wanted``, each under its value,
    read in one streaming pass: nothing is extracted to disk, so member paths cannot escape
    anywhere. A damaged archive is a ``DataError``."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, mode="r|*") as tf:
            for m in tf:
                base = m.name.rsplit("/", 1)[-1]
                if m.isfile() and base in wanted:
                    found[wanted[base]] = tf.extractfile(m).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"{archive}: truncated or corrupt archive: {type(e).__name__}: "
                        f"{message_line(e)}") from e
    return found


def _tar_members(archive: Path) -> dict:
    """The six batch files of a CIFAR-10 tar.gz (python or binary version)."""
    found = read_tar_members(
        archive, {b: b for b in CIFAR_BATCHES} | {b + ".bin": b for b in CIFAR_BATCHES})
    missing = [b for b in CIFAR_BATCHES if b not in found]
    if missing:
        raise DataError(f"{archive}: expected members data_batch_1..5 and test_batch, "
                        f"missing {', '.join(missing)}")
    return {b: (lambda d=found[b]: d, f"{archive}[{b}]") for b in CIFAR_BATCHES}


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


def unpickle_dict(data: bytes, where: str, what: str, expected: str) -> dict:
    """A CIFAR python file's dict, through the restricted unpickler; a file that is not one is
    a ``DataError`` saying it is not ``what`` (or not ``expected``: a pickle of another type)."""
    try:
        d = _BatchUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # truncated or foreign pickles fail in many ways
        raise DataError(f"{where}: not {what}: {type(e).__name__}: {message_line(e)}") from e
    if not isinstance(d, dict):
        raise DataError(f"{where}: expected {expected}, found {type(d).__name__}")
    return d


def _decode_py_batch(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    d = unpickle_dict(data, where, "a CIFAR-10 python batch (truncated or corrupt pickle)",
                      "a pickled dict with data and labels")
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


def read_cifar_batches(raw: dict, binary: bool) -> tuple[Arrays, dict[str, str]]:
    """Decodes the six batches (``raw``: batch -> (read function, where), so archive members and
    files are read alike), turns CHW rows into canonical HWC and checks each batch's content:
    a mismatch then names the one batch that differs."""
    xs, ys, verified = [], [], {}
    for b in CIFAR_BATCHES:
        read, where = raw[b]
        data = read()
        x, y = (_decode_bin_batch if binary else _decode_py_batch)(data, where)
        if len(y) and (y.min() < 0 or y.max() > 255):
            raise DataError(f"{where}: labels must be class indices, found {y.min()}..{y.max()}")
        x = np.ascontiguousarray(x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        y = y.astype(np.uint8)
        verified[b] = verify("cifar10", b, [x, y], f"{shape_str(x)}+{len(y)}", where)
        xs.append(x)
        ys.append(y)
    arrays = {"x_train": np.concatenate(xs[:5]), "y_train": np.concatenate(ys[:5]),
              "x_test": xs[5], "y_test": ys[5]}
    return arrays, verified
