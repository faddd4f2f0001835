"""What lossjax knows about each dataset before reading a byte: its name, class names, the
folder and file names its published forms use, and the official download URLs.

This module imports nothing, and the package imports numpy but never tensorflow-datasets at
import time, so code that only needs the list of datasets (config validation) can read
``lossjax.data.CLASS_NAMES`` cheaply.
"""

from __future__ import annotations

DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion_mnist", "cifar10")
# Datasets built from another one's verified files (lossjax.data.multidigit), and a user's own
# arrays (lossjax.data.arrays): every name ``dataset.name`` takes.
BUILT: dict[str, str] = {"double_mnist": "mnist", "triple_mnist": "mnist"}
NAMES: tuple[str, ...] = (*DATASETS, "cifar100", *BUILT, "arrays")

# Class names in label order, as each dataset publishes them: MNIST (LeCun et al. 1998) and
# scikit-learn's load_digits label each image with its digit; Fashion-MNIST's names are those of
# Xiao et al. 2017 (arXiv:1708.07747); CIFAR-10's are the order of batches.meta in the official
# archive (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html).
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "digits": tuple(str(i) for i in range(10)),
    "mnist": tuple(str(i) for i in range(10)),
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                "truck"),
    # CIFAR-100's fine labels, as the meta file of the official python version lists them
    # (lossjax.data.cifar100 reads the names from that file; these give the count up front).
    "cifar100": (
        "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
        "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
        "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
        "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
        "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
        "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
        "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
        "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
        "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
        "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
        "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
        "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm"
    ),
    # Multi-digit MNIST: the digits, leftmost first (label 10a + b, or 100a + 10b + c).
    "double_mnist": tuple(f"{i:02d}" for i in range(100)),
    "triple_mnist": tuple(f"{i:03d}" for i in range(1000)),
}

# CIFAR-100's 20 superclasses (dataset.label: coarse), in the official meta file's order.
CIFAR100_COARSE: tuple[str, ...] = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates", "people",
    "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2"
)

# The four IDX files of MNIST and Fashion-MNIST, in the order x_train, y_train, x_test, y_test.
MNIST_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")
# CIFAR-10's six batches: data_batch_1..5 are the training set in this order, test_batch the test.
CIFAR_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                 "test_batch")

# Folder names tried under a data folder before the folder itself, so that it may hold one
# folder per dataset or the files of one dataset directly. The hyphenated spellings are the
# ones the datasets' own pages and archives use.
FOLDERS: dict[str, tuple[str, ...]] = {
    "mnist": ("mnist",),
    "fashion_mnist": ("fashion_mnist", "fashion-mnist"),
    "cifar10": ("cifar10", "cifar-10"),
}

# keras-style archives: arrays x_train y_train x_test y_test, the layout of the mnist.npz that
# keras.datasets downloads, which people reuse for the other datasets under these names.
NPZ_NAMES: dict[str, tuple[str, ...]] = {
    "mnist": ("mnist.npz",),
    "fashion_mnist": ("fashion_mnist.npz", "fashion-mnist.npz"),
    "cifar10": ("cifar10.npz", "cifar-10.npz"),
}

# What a user may put in a data folder, as error messages spell it.
ACCEPTED: dict[str, str] = {
    "mnist": "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
             "t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz], or mnist.npz",
    "cifar10": "cifar-10-python.tar.gz, cifar-10-batches-py/ (data_batch_1..5, test_batch), "
               "cifar-10-binary.tar.gz, cifar-10-batches-bin/, or cifar10.npz",
}
ACCEPTED["fashion_mnist"] = ACCEPTED["mnist"].replace("mnist.npz", "fashion_mnist.npz")

# The published forms lossjax reads, by the key recorded in ``meta["source"]["form"]``, with the
# words ``lossjax data info`` uses for them.
FORMS: dict[str, str] = {
    "idx": "IDX files",
    "npz": "keras-style .npz",
    "cifar-py-dir": "CIFAR-10 python batches",
    "cifar-py-tar": "cifar-10-python.tar.gz",
    "cifar-bin-dir": "CIFAR-10 binary batches",
    "cifar-bin-tar": "cifar-10-binary.tar.gz",
    "tfds-array_record": "array_record",
    "cifar100-py-tar": "cifar-100-python.tar.gz",
    "cifar100-py-dir": "CIFAR-100 python files",
    "double_mnist": "double MNIST from MNIST",
    "triple_mnist": "triple MNIST from MNIST",
}

# How ``lossjax data info`` names the kinds of place (``meta["source"]["kind"]``) whose key is
# not already a word: the copies tensorflow-datasets keeps (lossjax.data.tfds_local).
KIND_WORDS: dict[str, str] = {
    "tfds-download": "tfds download",
    "tfds-prepared": "tfds prepared",
}

# The official files, at the URLs tensorflow-datasets' builders download them from, because tfds
# registers the sha256 of exactly those URLs and refuses a file that differs (a test checks that
# each URL here is registered). For CIFAR-10 tfds registers the binary version, which holds the
# same images as the python one (https://www.cs.toronto.edu/~kriz/cifar.html).
DOWNLOADS: dict[str, dict[str, str]] = {
    "mnist": {s: f"https://storage.googleapis.com/cvdf-datasets/mnist/{s}.gz"
              for s in MNIST_STEMS},
    "fashion_mnist": {s: f"http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{s}.gz"
                      for s in MNIST_STEMS},
    "cifar10": {"cifar-10-binary.tar.gz": "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"},
}


def check_name(name: str, names: tuple[str, ...] = DATASETS) -> str:
    """``name`` if it is one of ``names`` (by default those read from files), else a ValueError
    listing them."""
    if name not in names:
        raise ValueError(f"unknown dataset {name!r}: expected one of {', '.join(names)}")
    return name
