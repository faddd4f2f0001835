"""The official content checksums, and the one check every array passes before lossjax uses it.

:data:`CHECKSUMS` holds, per dataset and part, the sha256 of the *content* rather than of a file
as stored, so a re-compressed or re-packaged copy of the right data passes and anything else
fails:

- MNIST / Fashion-MNIST: sha256 of each decompressed IDX file (header + bytes). A ``.npz`` copy,
  and the cache, are checked by rebuilding the identical IDX bytes from their arrays.
- CIFAR-10: sha256 of ``x.tobytes() + y.tobytes()`` with x uint8 (N, 32, 32, 3) (HWC, RGB) and y
  uint8, per batch file (``data_batch_1..5``, ``test_batch``) for the batch forms, and over
  ``x_train y_train x_test y_test`` (part ``all``) for a ``.npz`` and for the cache. Python
  batches, binary batches and ``.npz`` therefore share one content check.
- digits: sha256 of the decompressed embedded csv.

Each entry says where its value came from, so the table can be audited. Tests replace entries to
check tiny fixtures.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from lossjax.data.registry import MNIST_STEMS
from lossjax.errors import DataError

PARTS = ("x_train", "y_train", "x_test", "y_test")


class Expected(NamedTuple):
    """One official content checksum: the sha256, what it covers, and where the value came
    from."""

    sha256: str
    what: str
    origin: str


_MNIST_ORIGIN = (
    "sha256 of the decompressed IDX files of the official MNIST release (LeCun et al. 1998, "
    "http://yann.lecun.com/exdb/mnist/): what the .gz downloads whose sha256 tensorflow-datasets "
    "registers (url_checksums/mnist.txt) decompress to"
)
_FASHION_ORIGIN = (
    "computed from Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1 "
    "(/usr/share/datasets/fashion-mnist, decompressed), the data of Xiao et al. 2017 "
    "(arXiv:1708.07747). Those .gz files lack only the gzip name field and original mtime: "
    "restoring them (train mtime 1504176606, t10k 1504176627) makes each byte-identical to the "
    "official download whose sha256 tensorflow-datasets registers "
    "(url_checksums/fashion_mnist.txt)"
)
_CIFAR_ORIGIN = (
    "computed from a lossless copy of the official python version of CIFAR-10 (Krizhevsky 2009, "
    "https://www.cs.toronto.edu/~kriz/cifar.html), not from the official archive itself: part "
    "'all' over x_train y_train x_test y_test in the original order, data_batch_k over training "
    "rows 10000*(k-1):10000*k, test_batch over the test set. The copy agrees with the data's "
    "published facts (first labels and pixels, 5000 images per class in train and 1000 in test, "
    "which the real-data tests recheck) and with the CIFAR-10H human labels on 99.2% of test "
    "images. A download through tensorflow-datasets (registered sha256 of the official "
    "cifar-10-binary.tar.gz) is checked against these values too, so any difference fails there"
)
_DIGITS_ORIGIN = (
    "computed from scikit-learn 1.9.1's sklearn/datasets/data/digits.csv.gz (the data of "
    "sklearn.datasets.load_digits), decompressed; lossjax/data_files/digits.csv.gz is a "
    "byte-for-byte copy (lossjax/data_files/README.md)"
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


def verify(name: str, part: str, chunks, found_what: str, where: str) -> str:
    """Compares the content sha256 of one part with :data:`CHECKSUMS` and returns it; names the
    file on mismatch and, when the content is another known part (MNIST given as
    Fashion-MNIST), says which, because that mistake is common and otherwise baffling."""
    exp = CHECKSUMS[name][part]
    got = _sha256(chunks)
    if got != exp.sha256:
        hint = next((f" (that is the content of {n} {p})" for n, parts in CHECKSUMS.items()
                     for p, e in parts.items() if e.sha256 == got), "")
        raise DataError(f"{where}: content is not the official {name} {part}: expected "
                        f"{exp.what} with sha256 {exp.sha256}, found {found_what} with sha256 "
                        f"{got}{hint}")
    return got


def verify_arrays(name: str, arrays: dict[str, np.ndarray], where: str,
                  where_of: Callable[[str], str]) -> dict[str, str]:
    """The content check of assembled arrays (a ``.npz`` or the cache): per IDX part for
    MNIST-like data, so a message names the array that differs (``where_of(key)``), and part
    ``all`` for CIFAR-10 (``where``)."""
    if name == "cifar10":
        order = [arrays[k] for k in PARTS]
        return {"all": verify(name, "all", order, "+".join(shape_str(a) for a in order), where)}
    return {stem: verify(name, stem, [idx_header(arrays[k]), arrays[k]], shape_str(arrays[k]),
                         where_of(k))
            for stem, k in zip(MNIST_STEMS, PARTS, strict=True)}


def idx_header(a: np.ndarray) -> bytes:
    """The header an unsigned-byte IDX file of ``a`` starts with (magic 0x0000080N, then the N
    sizes as big-endian uint32), so arrays can be checked against IDX checksums."""
    return bytes([0, 0, 8, a.ndim]) + np.asarray(a.shape, ">u4").tobytes()


def _sha256(chunks) -> str:
    h = hashlib.sha256()
    for c in chunks:
        # memoryview: hashes an array in place, without a copy of a 150 MB training set
        h.update(memoryview(np.ascontiguousarray(c)).cast("B") if isinstance(c, np.ndarray)
                 else c)
    return h.hexdigest()


def message_line(e: BaseException) -> str:
    """An exception's text on one line (DataError messages are one line), empty where it has none:
    errors.one_line would put the type's name there, which many of these messages print already."""
    return " ".join(str(e).split())


def shape_str(a: np.ndarray) -> str:
    return "x".join(map(str, a.shape))
