"""The built-in losses' names and label rules, without JAX: what code that only reads a results
folder (``lossjax.load``, ``compare``, ``plot``, ``report``) needs to order and group losses.

:mod:`lossjax.losses` defines the functions under these names and checks at import that its
registry keeps this order, which the engine relies on (each member's loss is an index into
it).
"""

from __future__ import annotations

import re

#: The four losses a sweep compares, in the engine's order.
BUILTIN_LOSSES = ("cross_entropy", "mse", "softmax_mse", "exp_mse")


def without_params(label: str) -> str:
    """A loss name with the parameters taken out of its label: ``'focal(gamma=2)-no_push_up'``
    is ``'focal-no_push_up'``, the name of the program all its settings share."""
    return re.sub(r"\([^()]*\)", "", label)
