"""The MLP that every sweep member trains: Dense layers with one activation, logits out."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# The names a config may give for model.activation, model.init and model.dtype: lossjax.config
# checks them against these keys, and no other list of them exists.
ACTIVATIONS = {"relu": nn.relu, "gelu": nn.gelu, "tanh": jnp.tanh, "sigmoid": nn.sigmoid}
INITIALIZERS = {
    "lecun_normal": nn.initializers.lecun_normal,
    "he_normal": nn.initializers.he_normal,
    "glorot_uniform": nn.initializers.glorot_uniform,
    "glorot_normal": nn.initializers.glorot_normal,
}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float64": jnp.float64}


class MLP(nn.Module):
    """``features -> hidden[0] -> ... -> hidden[-1] -> num_classes`` with ``activation``.

    ``dtype`` is the computation dtype; parameters stay float32 (float64 when asked), as in
    Flax's mixed-precision convention, so bfloat16 runs keep full-precision optimizer state.
    """

    hidden: Sequence[int]
    num_classes: int
    activation: str = "relu"
    initializer: str = "lecun_normal"
    dtype: str = "float32"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        dtype = DTYPES[self.dtype]
        param_dtype = jnp.float64 if self.dtype == "float64" else jnp.float32
        kernel_init = INITIALIZERS[self.initializer]()
        for width in self.hidden:
            x = act(nn.Dense(width, dtype=dtype, param_dtype=param_dtype,
                             kernel_init=kernel_init)(x))
        logits = nn.Dense(self.num_classes, dtype=dtype, param_dtype=param_dtype,
                          kernel_init=kernel_init)(x)
        # Losses are computed in float32 at least: exp_mse's overflow threshold is a property
        # of the loss we study, not of a bfloat16 matmul.
        return logits.astype(jnp.promote_types(dtype, jnp.float32))


def flops_per_example(features: int, hidden: Sequence[int], num_classes: int) -> int:
    """Training FLOPs per example: forward 2·MACs, backward 2·MACs for the weight gradients and
    2·MACs for the input gradients of every layer but the first (nobody needs d loss / d x).
    784-512-512-10, the reference MLP of experiments/benchmark.py, gives 3.21 MFLOP."""
    sizes = [features, *hidden, num_classes]
    macs = [a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    return 6 * sum(macs) - 2 * macs[0]
