"""The models a sweep member trains (``model.kind``): the MLP (Dense layers with one activation,
logits out), a small CNN, or a user's own Flax module (``'module:Class'``)."""

from __future__ import annotations

import importlib
import math
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
        return _dense_head(self, x)


def _layer_settings(module):
    """(activation, computation dtype, parameter dtype, kernel initializer) of ``module``."""
    param_dtype = jnp.float64 if module.dtype == "float64" else jnp.float32
    return (ACTIVATIONS[module.activation], DTYPES[module.dtype], param_dtype,
            INITIALIZERS[module.initializer]())


def _dense_head(module, x: jax.Array) -> jax.Array:
    """``module``'s Dense ``hidden`` layers and its logits on flat ``x``, called inside its
    compact ``__call__`` (the layers are its own, named Dense_0, Dense_1, ...)."""
    act, dtype, param_dtype, kernel_init = _layer_settings(module)
    for width in module.hidden:
        x = act(nn.Dense(width, dtype=dtype, param_dtype=param_dtype,
                         kernel_init=kernel_init)(x))
    logits = nn.Dense(module.num_classes, dtype=dtype, param_dtype=param_dtype,
                      kernel_init=kernel_init)(x)
    # Losses are computed in float32 at least: exp_mse's overflow threshold is a property of
    # the loss we study, not of a bfloat16 matmul.
    return logits.astype(jnp.promote_types(dtype, jnp.float32))


def flops_per_example(features: int, hidden: Sequence[int], num_classes: int) -> int:
    """Training FLOPs per example: forward 2·MACs, backward 2·MACs for the weight gradients and
    2·MACs for the input gradients of every layer but the first (nobody needs d loss / d x).
    784-512-512-10, the reference MLP of experiments/benchmark.py, gives 3.21 MFLOP."""
    sizes = [features, *hidden, num_classes]
    macs = [a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    return 6 * sum(macs) - 2 * macs[0]


class CNN(nn.Module):
    """``3x3 conv -> activation -> 2x2 average pool`` per entry of ``channels``, then the Dense
    ``hidden`` layers and the logits, on images (N, H, W, C), in the style of Flax's MNIST example.

    Average pooling, as in that example: its gradient reaches every input (max pooling's goes to
    one per window, chosen by comparisons), and on a CPU its backward pass is a plain
    convolution where max pooling's is a select-and-scatter, several times slower in XLA.
    ``dtype`` and parameters as in :class:`MLP`.
    """

    channels: Sequence[int]
    hidden: Sequence[int]
    num_classes: int
    activation: str = "relu"
    initializer: str = "lecun_normal"
    dtype: str = "float32"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act, dtype, param_dtype, kernel_init = _layer_settings(self)
        for width in self.channels:
            x = act(nn.Conv(width, (3, 3), padding="SAME", dtype=dtype, param_dtype=param_dtype,
                            kernel_init=kernel_init)(x))
            x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        return _dense_head(self, x.reshape(x.shape[0], -1))


def user_module_class(kind: str) -> type:
    """The class of ``'module:package.file:Class'`` (imported; ``lossjax.preflight`` has checked
    it and reports failures)."""
    module_name, _, attr = kind.removeprefix("module:").partition(":")
    cls = importlib.import_module(module_name)
    for part in attr.split("."):
        cls = getattr(cls, part)
    return cls


def make_model(kind: str, hidden: Sequence[int], num_classes: int, activation: str = "relu",
               initializer: str = "lecun_normal", dtype: str = "float32",
               channels: Sequence[int] = ()) -> nn.Module:
    """The Flax module of ``model.kind``: ``mlp``, ``cnn`` or ``'module:Class'`` (which takes
    ``num_classes`` alone: its other choices are its own)."""
    if kind == "mlp":
        return MLP(hidden=tuple(hidden), num_classes=num_classes, activation=activation,
                   initializer=initializer, dtype=dtype)
    if kind == "cnn":
        return CNN(channels=tuple(channels), hidden=tuple(hidden), num_classes=num_classes,
                   activation=activation, initializer=initializer, dtype=dtype)
    return user_module_class(kind)(num_classes=num_classes)


def pooled_shapes(image_shape: Sequence[int], channels: Sequence[int]) -> list[tuple[int, ...]]:
    """The CNN's feature maps (H, W, C): the image, then after each convolution and pooling."""
    h, w, c = image_shape
    shapes = [(h, w, c)]
    for width in channels:
        h, w, c = h // 2, w // 2, width
        shapes.append((h, w, c))
    return shapes


def cnn_param_count(image_shape: Sequence[int], channels: Sequence[int], hidden: Sequence[int],
                    num_classes: int) -> int:
    """The CNN's parameters: (9·C_in + 1)·C_out per convolution, then the Dense layers on the
    last pooled map, flattened."""
    maps = pooled_shapes(image_shape, channels)
    convs = sum((9 * a[2] + 1) * b[2] for a, b in zip(maps[:-1], maps[1:], strict=True))
    sizes = [math.prod(maps[-1]), *hidden, num_classes]
    return convs + sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def cnn_flops_per_example(image_shape: Sequence[int], channels: Sequence[int],
                          hidden: Sequence[int], num_classes: int) -> int:
    """Training FLOPs per example as :func:`flops_per_example` counts them (6·MACs, less the
    first layer's input gradient), a 3x3 "same" convolution being H·W·9·C_in·C_out MACs at
    its input's resolution; pooling and activations are not counted (a few per value).
    MNIST [32, 64] + [128] (configs/mnist_cnn.yaml): 25.0 MFLOP and 421,642 parameters;
    CIFAR-10 [32, 64, 128] + [128] (configs/cifar10_cnn.yaml): 61.7 MFLOP and 356,810
    parameters (the reference MLP: 3.21 MFLOP)."""
    maps = pooled_shapes(image_shape, channels)
    macs = [a[0] * a[1] * 9 * a[2] * b[2] for a, b in zip(maps[:-1], maps[1:], strict=True)]
    sizes = [math.prod(maps[-1]), *hidden, num_classes]
    macs += [a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    return 6 * sum(macs) - 2 * macs[0]
