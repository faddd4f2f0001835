"""lossjax: which classification loss trains an MLP best, measured fast and honestly.

Importing the package is cheap: the loss library (and with it JAX) loads on first use of one
of the names below, so the ``lossjax`` command can answer Ctrl-C and ``--help`` at once. The
data, engine, results and plotting modules are imported by name when needed
(``from lossjax import engine``).
"""

import importlib

__all__ = [
    "GRADIENTS",
    "LOSSES",
    "cross_entropy",
    "exp_mse",
    "gradient_sign_stats",
    "mse",
    "one_hot",
    "softmax_mse",
    "with_integer_labels",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module("lossjax.losses"), name)
    raise AttributeError(f"module 'lossjax' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
