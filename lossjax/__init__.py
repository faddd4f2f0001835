"""lossjax: which classification loss trains a network best, measured fast and honestly.

    import lossjax
    res = lossjax.run("configs/digits.yaml")        # a sweep; returns its Results
    res = lossjax.load("runs/digits")               # a finished results folder
    lossjax.compare(["runs/a", "runs/b"])           # one table and one figure across folders
    lossjax.causal(["runs/mnist_causal"], "runs")   # paired effects of the gradient edits
    lossjax.exp_mse(logits, one_hot_labels)         # the losses, one value per example
    lossjax.no_push_up(lossjax.mse)                 # a loss with its gradient edited

Importing the package is cheap: each name below loads its module (and with it JAX) on first
use, so the ``lossjax`` command can answer Ctrl-C and ``--help`` at once. The data, engine,
results and plotting modules are imported by name when needed (``from lossjax import engine``).
"""

import importlib

_HOMES = {
    **dict.fromkeys(("GRADIENTS", "LOSSES", "cross_entropy", "exp_mse", "gradient_sign_stats",
                     "mse", "one_hot", "softmax_mse", "with_integer_labels"), "lossjax.losses"),
    **dict.fromkeys(("edit_gradient", "no_push_up", "push_up", "true_pull"),
                    "lossjax.interventions"),
    **dict.fromkeys(("run", "load", "Results"), "lossjax.api"),
    **dict.fromkeys(("compare", "causal"), "lossjax.api"),
    **dict.fromkeys(("LossjaxError", "ConfigError", "DataError", "ResultsError"),
                    "lossjax.errors"),
}
__all__ = sorted(_HOMES)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'lossjax' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
