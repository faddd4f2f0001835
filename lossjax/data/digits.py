"""``digits``: scikit-learn's 1,797 8x8 handwritten digits (sklearn.datasets.load_digits),
embedded in ``lossjax/data_files`` so that lossjax always has one real dataset, with no download
and no scikit-learn at run time (provenance and licence: lossjax/data_files/README.md).

Its pixels are counts 0..16, not 0..255. It has no official test split, so a fixed,
class-stratified 20% (359 images, seed :data:`DIGITS_TEST_SEED`) is the test set: fixed and
independent of ``split_seed``, so every sweep, whatever its seeds, is scored on the same images.
"""

from __future__ import annotations

import gzip
import io
import zlib
from importlib import resources

import numpy as np

from lossjax.data.checksums import message_line, verify
from lossjax.data.splits import stratified_pick
from lossjax.errors import DataError

DIGITS_TEST_FRACTION = 0.2
DIGITS_TEST_SEED = 1797


def load_digits() -> tuple[dict[str, np.ndarray], dict]:
    """The embedded csv (64 pixel counts, then the label, per row), verified, split into
    ``x_train y_train x_test y_test`` (uint8), and the start of its meta."""
    ref = resources.files("lossjax").joinpath("data_files", "digits.csv.gz")
    where = str(ref)
    try:
        text = gzip.decompress(ref.read_bytes())
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{where}: unreadable embedded digits data (reinstall lossjax): "
                        f"{message_line(e)}") from e
    verified = {"digits.csv": verify("digits", "digits.csv", [text], f"{len(text)} bytes",
                                     where)}
    table = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.int64)
    x = table[:, :64].astype(np.uint8).reshape(-1, 8, 8)
    y = table[:, 64].astype(np.uint8)
    n_test = round(DIGITS_TEST_FRACTION * len(y))
    test = stratified_pick(y, n_test, np.random.default_rng(DIGITS_TEST_SEED))
    train = np.setdiff1d(np.arange(len(y)), test)
    arrays = {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}
    meta = {"name": "digits",
            "source": {"kind": "embedded", "form": "csv.gz", "path": where, "files": [where]},
            "cache": {"path": None, "status": "not needed (embedded)"},
            "verified": verified,
            "test_split": {"fraction": DIGITS_TEST_FRACTION, "seed": DIGITS_TEST_SEED,
                           "method": "stratified by class; fixed, independent of split_seed"}}
    return arrays, meta
