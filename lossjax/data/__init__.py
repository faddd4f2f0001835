"""Real datasets, offline first: ``digits`` (embedded), ``mnist``, ``fashion_mnist``, ``cifar10``;
``double_mnist`` and ``triple_mnist`` built from MNIST; and a user's own arrays (``arrays``).

A result is only as trustworthy as the data under it, so every array this package returns has
had its content checked against a known official checksum, whichever way it arrived::

    from lossjax import data
    ds = data.preprocess(data.load("mnist", val_size=0.1, split_seed=0))

One job per module:

- :mod:`~lossjax.data.registry`: dataset names, class names, file names, official URLs.
- :mod:`~lossjax.data.types`: the types several modules share (``Source``, ``Missing``).
- :mod:`~lossjax.data.checksums`: the official content checksums and the check itself.
- :mod:`~lossjax.data.formats`: parsers for IDX, CIFAR-10's python and binary batches, ``.npz``.
- :mod:`~lossjax.data.digits`: the embedded digits and their fixed test split.
- :mod:`~lossjax.data.sources`: where files come from, in order (your folder, the cache,
  tensorflow-datasets' folder, system folders, a download).
- :mod:`~lossjax.data.tfds_local`: what tensorflow-datasets downloaded or prepared before, in
  ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets`` (tfds is imported only to decode a prepared
  array_record dataset; the tfrecord format needs TensorFlow and is reported, not read).
- :mod:`~lossjax.data.cache`: the fingerprinted cache of prepared arrays.
- :mod:`~lossjax.data.download`: downloads through tensorflow-datasets (imported only when a
  download is needed, so importing this package never loads tensorflow-datasets).
- :mod:`~lossjax.data.arrays`: a user's own ``.npz`` or folder of ``.npy`` files, checked.
- :mod:`~lossjax.data.multidigit`: double / triple MNIST, built from the verified MNIST.
- :mod:`~lossjax.data.subsets`: class subsets and a cap on examples per class, for any dataset.
- :mod:`~lossjax.data.splits`: the validation split and preprocessing.
- :mod:`~lossjax.data.dataset`: :class:`Dataset` and :func:`load`.
- :mod:`~lossjax.data.status`: what ``lossjax data info`` / ``prepare`` report, as records.

Every expected failure (missing file, checksum mismatch, truncated file, wrong IDX magic number,
a count that disagrees with the header, no network) raises :class:`lossjax.errors.DataError`
with one line naming the file, what was expected and what was found.
"""

from lossjax.data.cache import ENV_CACHE_DIR
from lossjax.data.checksums import CHECKSUMS, Expected
from lossjax.data.dataset import Dataset, load, planned_num_classes
from lossjax.data.digits import DIGITS_TEST_FRACTION, DIGITS_TEST_SEED
from lossjax.data.registry import BUILT, CLASS_NAMES, DATASETS, DOWNLOADS, FORMS, NAMES
from lossjax.data.sources import ENV_DATA_DIR, SYSTEM_DIRS, default_data_dir
from lossjax.data.splits import preprocess
from lossjax.data.status import DataInfo, DatasetStatus, info, prepare

__all__ = [
    "BUILT",
    "CHECKSUMS",
    "CLASS_NAMES",
    "DATASETS",
    "DIGITS_TEST_FRACTION",
    "DIGITS_TEST_SEED",
    "DOWNLOADS",
    "ENV_CACHE_DIR",
    "ENV_DATA_DIR",
    "FORMS",
    "NAMES",
    "SYSTEM_DIRS",
    "DataInfo",
    "Dataset",
    "DatasetStatus",
    "Expected",
    "default_data_dir",
    "info",
    "load",
    "planned_num_classes",
    "prepare",
    "preprocess",
]
