"""lossjax: which classification loss trains an MLP best, measured fast and honestly.

Importing the package stays light: it loads only the loss library. The data, engine, results
and plotting modules are imported by name when needed (``from lossjax import engine``).
"""

from lossjax.losses import (
    GRADIENTS,
    LOSSES,
    cross_entropy,
    exp_mse,
    gradient_sign_stats,
    mse,
    one_hot,
    softmax_mse,
    with_integer_labels,
)

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
