"""The four per-example classification losses that lossjax compares, their closed-form
gradients, and the gradient-sign statistic that motivates ``exp_mse``.

Every loss follows optax's convention: ``loss(logits, labels) -> per-example array``, no
reduction, labels one-hot (or any probability vector) over the last axis. Batch reduction is the
trainer's job. Notation throughout: logits ``s`` over ``K`` classes, target ``y``,
``p = softmax(s)``.

The gradient-sign argument: a gradient step moves logit ``j`` by ``-lr · g_j``, so a wrong-class
logit (``y_j = 0``) with ``g_j < 0`` is pushed *up*. ``exp_mse`` was proposed, in an unpublished
2023 note that started this project, because its wrong-class gradient is never negative, on the
claim that pushing wrong classes up hinders learning (docs/design.md, "The question").
:func:`gradient_sign_stats` measures how often it happens; ``experiments/gradient_sign.py``
tests the claim against convergence, and README.md (Findings) reports the answer.

What the functions check (``ValueError``, one line): logits are floating point with a class
axis, and labels have the logits' shape. These read only shapes and dtypes, so they cost no
device work, eager or under ``jit`` (where they run once, at trace time). Label *values* are not
checked: that would copy the labels from the device on every eager call, and under ``jit`` it
cannot be done at all. Rows that are not probability vectors give a number, not an error; it is
not the loss as defined.

References:
  - optax, ``optax.losses.softmax_cross_entropy``: conventions and the cross-entropy form.
  - L. Hui and M. Belkin, "Evaluation of neural architectures trained with square loss vs
    cross-entropy in classification tasks", ICLR 2021 (arXiv:2006.07322): the square loss on
    the logits, without a softmax (``mse``).
  - P. Golik, P. Doetsch and H. Ney, "Cross-entropy vs. squared error training: a theoretical
    and experimental comparison", Interspeech 2013: the squared error on softmax outputs
    (``softmax_mse``), which from random weights fails to reach a good optimum.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_inputs(logits, labels, name: str) -> tuple[jax.Array, jax.Array]:
    """Checks dtypes and shapes (never values: see the module docstring); labels are cast to the
    logits' dtype."""
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        raise ValueError(
            f"{name}: logits must be a floating-point array, got dtype {logits.dtype}; "
            "cast them with .astype(jnp.float32)."
        )
    if logits.ndim == 0:
        raise ValueError(f"{name}: logits must have a class axis, got a scalar.")
    if logits.shape != labels.shape:
        hint = (
            " Labels look like integer class ids: use one_hot(labels, num_classes) or "
            "with_integer_labels(loss)."
            if labels.shape == logits.shape[:-1]
            else ""
        )
        raise ValueError(
            f"{name}: logits shape {logits.shape} and labels shape {labels.shape} differ; "
            f"labels must be one-hot or probability vectors over the last axis.{hint}"
        )
    return logits, labels.astype(logits.dtype)


def one_hot(labels, num_classes: int, dtype=jnp.float32) -> jax.Array:
    """Integer class ids ``(...,)`` to one-hot vectors ``(..., num_classes)``.

    Raises ``ValueError`` for non-integer ids or, when the ids are concrete (not traced), ids
    outside ``[0, num_classes)``. Unlike the losses' checks this one reads values, so an eager
    call waits for the ids to reach the host: ``jax.nn.one_hot`` turns an out-of-range id into an
    all-zero row, which every loss here accepts and scores as if no class were true.

    >>> one_hot(jnp.array([0, 2]), 3)
    Array([[1., 0., 0.],
           [0., 0., 1.]], dtype=float32)
    """
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"one_hot: class ids must be integers, got dtype {labels.dtype}.")
    if _is_concrete(labels) and labels.size:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"one_hot: class ids must lie in [0, {num_classes}), got values from {lo} to {hi}."
            )
    return jax.nn.one_hot(labels, num_classes, dtype=dtype)


def with_integer_labels(loss: LossFn) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """Wraps a loss so it takes integer class ids ``(...,)`` instead of one-hot labels.

    >>> ce = with_integer_labels(cross_entropy)
    >>> ce(jnp.zeros((1, 4)), jnp.array([3]))  # log 4
    Array([1.3862944], dtype=float32)
    """

    def wrapped(logits, labels):
        logits = jnp.asarray(logits)
        return loss(logits, one_hot(labels, logits.shape[-1], dtype=logits.dtype))

    wrapped.__name__ = f"{getattr(loss, '__name__', 'loss')}_with_integer_labels"
    wrapped.__doc__ = f"{wrapped.__name__}(logits, class_ids): see {loss.__name__}."
    return wrapped


# --------------------------------------------------------------------------------------------
# Losses


def cross_entropy(logits, labels) -> jax.Array:
    r"""Softmax cross-entropy, per example.

    .. math:: \ell(s, y) = -y^\top s + \operatorname{logsumexp}(s)

    Computed through ``logsumexp``, so it is finite for any finite logits; identical to
    ``optax.softmax_cross_entropy`` (for labels that sum to one).

    Args:
      logits: ``(..., K)`` floating-point scores.
      labels: ``(..., K)`` one-hot or probability vectors.

    Returns:
      ``(...,)`` per-example losses.

    >>> cross_entropy(jnp.array([[0.0, 0.0]]), jnp.array([[1.0, 0.0]]))  # log 2
    Array([0.6931472], dtype=float32)

    References:
      optax ``softmax_cross_entropy``.
    """
    s, y = _check_inputs(logits, labels, "cross_entropy")
    return -jnp.sum(y * s, axis=-1) + jax.nn.logsumexp(s, axis=-1) * jnp.sum(y, axis=-1)


def mse(logits, labels) -> jax.Array:
    r"""Mean squared error between the raw logits and the target, per example.

    .. math:: \ell(s, y) = \frac{1}{K} \lVert y - s \rVert^2

    Args:
      logits: ``(..., K)`` floating-point scores.
      labels: ``(..., K)`` one-hot or probability vectors.

    Returns:
      ``(...,)`` per-example losses.

    >>> mse(jnp.array([[0.5, -1.0]]), jnp.array([[1.0, 0.0]]))  # (0.25 + 1) / 2
    Array([0.625], dtype=float32)

    References:
      Hui & Belkin (2021), square loss on the logits (see the module docstring).
    """
    s, y = _check_inputs(logits, labels, "mse")
    return jnp.mean(jnp.square(y - s), axis=-1)


def _softmax(s: jax.Array) -> jax.Array:
    """``jax.nn.softmax(s, axis=-1)``, normalized by multiplying with the reciprocal of the sum.

    Written out so that a program computes the same bits on one device and on several: XLA's
    single-device compile rewrites a division by a broadcast sum (``e / sum(e)``, and the
    ``-g e / sum(e)²`` of its derivative) as a multiplication by the reciprocal, while the
    partitioned compile for several devices keeps the division, and the two round differently
    in the last bit. Spelled as the multiplication, both compiles see the same operations.
    """
    e = jnp.exp(s - jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True)))
    return e * (1.0 / jnp.sum(e, axis=-1, keepdims=True))


def softmax_mse(logits, labels) -> jax.Array:
    r"""Mean squared error between ``softmax(logits)`` and the target, per example.

    .. math:: \ell(s, y) = \frac{1}{K} \lVert y - \operatorname{softmax}(s) \rVert^2

    Bounded in ``[0, 2/K]``. Its gradient vanishes when the model is confidently wrong
    (``p`` near a vertex other than ``y``): the plateau measured by the harness.

    Args:
      logits: ``(..., K)`` floating-point scores.
      labels: ``(..., K)`` one-hot or probability vectors.

    Returns:
      ``(...,)`` per-example losses.

    >>> softmax_mse(jnp.array([[0.0, 0.0]]), jnp.array([[1.0, 0.0]]))  # (0.25 + 0.25) / 2
    Array([0.25], dtype=float32)

    References:
      Golik, Doetsch & Ney (2013), squared error on softmax outputs (see the module docstring).
    """
    s, y = _check_inputs(logits, labels, "softmax_mse")
    return jnp.mean(jnp.square(y - _softmax(s)), axis=-1)


def exp_mse(logits, labels) -> jax.Array:
    r"""The proposed loss: squared error between ``exp(logits)`` and the target.

    .. math:: \ell(s, y) = \frac{1}{K} \lVert y - e^{s} \rVert^2

    Its gradient on a wrong-class logit is ``(2/K) e^{2 s_j} > 0``: it never pushes a wrong
    class up, which is the property it was proposed for (see the module docstring).

    Implemented faithfully to the definition, with no clipping, so its hazards stay visible.
    In float32 the loss becomes ``inf`` once a logit passes ``log(3.4e38) / 2 ≈ 44.36``, where
    the square ``(y - e^s)^2 ≈ e^{2s}`` overflows (``e^s`` itself stays finite up to ``88.72``);
    the gradient ``(2/K)(e^s - y) e^s`` overflows to ``+inf`` a little later, past
    ``44.36 + log(K/2)/2`` (44.36 for K = 2, 46.3 for K = 100). Neither gives ``nan``; classes
    whose logits stay below the threshold keep finite gradients. In float64 the thresholds are
    about 354.9 (and 709.8 for ``e^s``). The true-class gradient
    ``-(2/K)(1 - e^{s_c}) e^{s_c}`` vanishes as ``s_c \to -\infty`` (confidently wrong examples
    stall).

    Args:
      logits: ``(..., K)`` floating-point scores.
      labels: ``(..., K)`` one-hot or probability vectors.

    Returns:
      ``(...,)`` per-example losses.

    >>> exp_mse(jnp.array([[0.0, 0.0]]), jnp.array([[1.0, 0.0]]))  # (0 + 1) / 2
    Array([0.5], dtype=float32)
    """
    s, y = _check_inputs(logits, labels, "exp_mse")
    return jnp.mean(jnp.square(y - jnp.exp(s)), axis=-1)


# --------------------------------------------------------------------------------------------
# Closed-form gradients d loss / d logits, per example (same shape as the logits).


def cross_entropy_grad(logits, labels) -> jax.Array:
    r"""Closed form of d cross_entropy / d s: ``softmax(s) · Σy − y`` (``p − y`` when Σy = 1)."""
    s, y = _check_inputs(logits, labels, "cross_entropy_grad")
    return jax.nn.softmax(s, axis=-1) * jnp.sum(y, axis=-1, keepdims=True) - y


def mse_grad(logits, labels) -> jax.Array:
    r"""Closed form of d mse / d s: ``(-2/K) (y - s)``."""
    s, y = _check_inputs(logits, labels, "mse_grad")
    return (-2.0 / s.shape[-1]) * (y - s)


def softmax_mse_grad(logits, labels) -> jax.Array:
    r"""Closed form of d softmax_mse / d s: ``(-2/K) p ⊙ [(y - p) - <y - p, p> 1]``.

    This is ``(-2/K) Jᵀ (y - p)`` with the softmax Jacobian ``J = diag(p) - p pᵀ`` (symmetric,
    so ``Jᵀ = J``): component ``j`` is ``(-2/K) Σ_i (y_i - p_i) p_i (1_{i=j} - p_j)``. The
    derivation in the note that proposed ``exp_mse`` gets the components right, but its final
    vector line leaves the index and ``1_{i=j}`` inside a vector expression; this is the vector
    form, and ``lossjax check-grads`` and tests/test_losses.py check it against autodiff.
    """
    s, y = _check_inputs(logits, labels, "softmax_mse_grad")
    p = jax.nn.softmax(s, axis=-1)
    r = y - p
    return (-2.0 / s.shape[-1]) * p * (r - jnp.sum(r * p, axis=-1, keepdims=True))


def exp_mse_grad(logits, labels) -> jax.Array:
    r"""Closed form of d exp_mse / d s: ``(-2/K) (y - e^s) ⊙ e^s``."""
    s, y = _check_inputs(logits, labels, "exp_mse_grad")
    e = jnp.exp(s)
    return (-2.0 / s.shape[-1]) * (y - e) * e


# --------------------------------------------------------------------------------------------
# Registries: the names that configs and the CLI accept (lossjax.config reads them here). Order
# is fixed: the engine gives each member the index of its loss in LOSSES (engine._select_loss).

LOSSES: dict[str, LossFn] = {
    "cross_entropy": cross_entropy,
    "mse": mse,
    "softmax_mse": softmax_mse,
    "exp_mse": exp_mse,
}

GRADIENTS: dict[str, LossFn] = {
    "cross_entropy": cross_entropy_grad,
    "mse": mse_grad,
    "softmax_mse": softmax_mse_grad,
    "exp_mse": exp_mse_grad,
}


def get_loss(name: str) -> LossFn:
    """Looks a loss up by registry name, with a clear error naming the choices."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(
            f"unknown loss {name!r}; choose one of {', '.join(LOSSES)} or give 'module:function'."
        ) from None


# --------------------------------------------------------------------------------------------
# The gradient-sign statistic.


def gradient_sign_stats(logit_grads, labels) -> tuple[jax.Array, jax.Array]:
    """How often a batch's gradient pushes a wrong class up, from per-example logit gradients.

    A gradient step moves each logit by ``-lr · g``; a wrong-class logit (``y_j = 0``) with
    ``g_j < 0`` is therefore pushed *up*, which the argument behind ``exp_mse`` says hinders
    learning.

    Args:
      logit_grads: ``(B, K)`` per-example gradients d loss_i / d s_i (any positive scaling, e.g.
        of a batch mean, leaves the fraction unchanged but scales the norm).
      labels: ``(B, K)`` one-hot labels.

    Returns:
      ``(fraction, mean_norm)``: the fraction of wrong-class entries whose gradient is negative,
      and the mean over examples of the L2 norm of the logit gradient.

    >>> g = jnp.array([[-0.5, 0.2, -0.1]])
    >>> frac, norm = gradient_sign_stats(g, jnp.array([[1.0, 0.0, 0.0]]))
    >>> float(frac)  # one of the two wrong-class entries is negative
    0.5
    """
    g = jnp.asarray(logit_grads)
    wrong = jnp.asarray(labels) == 0
    frac = jnp.sum(wrong & (g < 0)) / jnp.maximum(jnp.sum(wrong), 1)
    mean_norm = jnp.mean(jnp.linalg.norm(g, axis=-1))
    return frac, mean_norm


def wrong_direction_fraction(loss: LossFn, logits, labels) -> tuple[jax.Array, jax.Array]:
    """``gradient_sign_stats`` of ``loss`` at ``logits``, with the gradient from autodiff."""
    per_example_grad = jax.grad(lambda s: jnp.sum(loss(s, labels)))(jnp.asarray(logits))
    return gradient_sign_stats(per_example_grad, labels)
