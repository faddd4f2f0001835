"""The per-example classification losses that lossjax compares, their closed-form gradients,
and the gradient-sign statistic that motivates ``exp_mse``.

(Over 450 lines: each loss is a small function with its closed-form gradient and references.)

``LOSSES`` holds the four that a sweep compares; ``PARAMETERIZED`` holds four from the
literature that take parameters (``rescaled_mse``, ``squentropy``, ``label_smoothing_ce``,
``focal``), each with test values spanning its parameters' ranges. Their parameters may be
given as arrays, traced under ``jit`` or ``vmap``; their ranges are checked only when concrete.

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
  - Hui & Belkin (2021) again: the rescaled square loss (``rescaled_mse``); L. Hui, M. Belkin
    and S. Wright (2023): ``squentropy``; C. Szegedy et al. (2016): label smoothing; T.-Y. Lin
    et al. (2017): the focal loss (full citations in each function's docstring).
  - P. Golik, P. Doetsch and H. Ney, "Cross-entropy vs. squared error training: a theoretical
    and experimental comparison", Interspeech 2013: the squared error on softmax outputs
    (``softmax_mse``), which from random weights fails to reach a good optimum.
"""

from __future__ import annotations

import difflib
import inspect
import itertools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp

from lossjax.loss_names import BUILTIN_LOSSES, without_params  # noqa: F401 (re-exported)

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
    return _xent(s, y)


def _xent(s: jax.Array, t: jax.Array) -> jax.Array:
    """Cross-entropy against any target ``t`` (the body of :func:`cross_entropy`)."""
    return -jnp.sum(t * s, axis=-1) + jax.nn.logsumexp(s, axis=-1) * jnp.sum(t, axis=-1)


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
    return _xent_grad(s, y)


def _xent_grad(s: jax.Array, t: jax.Array) -> jax.Array:
    return jax.nn.softmax(s, axis=-1) * jnp.sum(t, axis=-1, keepdims=True) - t


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
# Parameterized losses from the literature, each with its closed-form gradient. Not in LOSSES:
# the sweep engine compiles every entry of LOSSES into one program, and these need their
# parameters swept with them. Parameters may be traced (swept under ``jit`` or ``vmap``), so
# nothing here branches on a parameter's value.


def _param(value, fn: str, name: str, ok: Callable[[float], bool], rule: str, dtype) -> jax.Array:
    """A scalar parameter as an array of the logits' dtype, its range checked when it is
    concrete (a traced value cannot be read; a concrete array is read once, one scalar)."""
    if jnp.ndim(value) != 0:
        raise ValueError(f"{fn}: {name} must be a scalar, got shape {jnp.shape(value)}.")
    if _is_concrete(value):
        v = float(value)
        if not (math.isfinite(v) and ok(v)):
            raise ValueError(f"{fn}: {name} must be a finite number {rule}, got {v:g}.")
    return jnp.asarray(value, dtype=dtype)


# Each parameter's range, (test, rule): the functions check a concrete value against it, and a
# config checks its values against the same rule (``Parameterized.ranges``).
_K = (lambda v: v >= 1, ">= 1")
_M = (lambda v: v > 0, "> 0")
_ALPHA = (lambda v: 0 <= v < 1, "in [0, 1)")
_GAMMA = (lambda v: v >= 0, ">= 0")


def rescaled_mse(logits, labels, k=1.0, M=1.0) -> jax.Array:
    r"""Square loss on the logits with the true class weighted by ``k`` and its target at ``M``.

    .. math:: \ell(s, y) = \frac{1}{K} \Big[ k (s_c - M)^2 + \sum_{i \ne c} s_i^2 \Big]
              = \frac{1}{K} \sum_i \big(1 + (k - 1) y_i\big) (s_i - M y_i)^2

    The second form (the one computed) extends it to probability-vector labels. ``k = M = 1``
    is :func:`mse`: the weights are exactly 1 and the target exactly ``y``, so op by op (eager)
    the bits are the same; compiled, XLA may fuse the class sum differently (1 ulp at K = 10).

    Args:
      logits: ``(..., K)`` floating-point scores.
      labels: ``(..., K)`` one-hot or probability vectors.
      k: weight of the true class, ``k >= 1``; a scalar, possibly traced.
      M: target of the true class's logit, ``M > 0``; a scalar, possibly traced.

    Returns:
      ``(...,)`` per-example losses.

    >>> rescaled_mse(jnp.array([[0.5, -1.0]]), jnp.array([[1.0, 0.0]]), k=2.0, M=2.0)
    Array([2.75], dtype=float32)

    References:
      Hui & Belkin (2021) (see the module docstring): the rescaled square loss, ``k`` and
      ``M`` for many classes.
    """
    s, y = _check_inputs(logits, labels, "rescaled_mse")
    k = _param(k, "rescaled_mse", "k", *_K, s.dtype)
    M = _param(M, "rescaled_mse", "M", *_M, s.dtype)
    return jnp.mean((1.0 + (k - 1.0) * y) * jnp.square(M * y - s), axis=-1)


def rescaled_mse_grad(logits, labels, k=1.0, M=1.0) -> jax.Array:
    r"""Closed form of d rescaled_mse / d s: ``(-2/K) (1 + (k-1) y) ⊙ (M y - s)``."""
    s, y = _check_inputs(logits, labels, "rescaled_mse_grad")
    k = _param(k, "rescaled_mse_grad", "k", *_K, s.dtype)
    M = _param(M, "rescaled_mse_grad", "M", *_M, s.dtype)
    return (-2.0 / s.shape[-1]) * (1.0 + (k - 1.0) * y) * (M * y - s)


def _check_two_classes(s: jax.Array, fn: str) -> None:
    if s.shape[-1] < 2:
        raise ValueError(f"{fn}: needs at least 2 classes, got K = {s.shape[-1]}.")


def squentropy(logits, labels) -> jax.Array:
    r"""Cross-entropy plus the mean square of the wrong-class logits.

    .. math:: \ell(s, y) = -y^\top s + \operatorname{logsumexp}(s)
              + \frac{1}{K - 1} \sum_i (1 - y_i)\, s_i^2

    For one-hot labels the sum is :math:`\sum_{i \ne c} s_i^2`; weighting class ``i`` by
    ``1 - y_i`` extends it to probability vectors. Needs ``K >= 2``.

    Args:
      logits: ``(..., K)`` floating-point scores.
      labels: ``(..., K)`` one-hot or probability vectors.

    Returns:
      ``(...,)`` per-example losses.

    >>> squentropy(jnp.array([[0.0, 1.0]]), jnp.array([[1.0, 0.0]]))  # log(1 + e) + 1
    Array([2.3132615], dtype=float32)

    References:
      L. Hui, M. Belkin and S. Wright, "Cut your losses with squentropy", ICML 2023
      (arXiv:2302.03952).
    """
    s, y = _check_inputs(logits, labels, "squentropy")
    _check_two_classes(s, "squentropy")
    return _xent(s, y) + jnp.sum((1.0 - y) * jnp.square(s), axis=-1) / (s.shape[-1] - 1)


def squentropy_grad(logits, labels) -> jax.Array:
    r"""Closed form of d squentropy / d s: ``p · Σy − y + (2/(K−1)) (1 − y) ⊙ s``."""
    s, y = _check_inputs(logits, labels, "squentropy_grad")
    _check_two_classes(s, "squentropy_grad")
    return _xent_grad(s, y) + (2.0 / (s.shape[-1] - 1)) * (1.0 - y) * s


def _smoothed(y: jax.Array, alpha, fn: str) -> jax.Array:
    alpha = _param(alpha, fn, "alpha", *_ALPHA, y.dtype)
    return (1.0 - alpha) * y + alpha / y.shape[-1]


def label_smoothing_ce(logits, labels, alpha=0.1) -> jax.Array:
    r"""Cross-entropy against the smoothed target ``t = (1 − α) y + α/K``.

    .. math:: \ell(s, y) = -t^\top s + \operatorname{logsumexp}(s) \textstyle\sum_i t_i

    ``alpha = 0`` is :func:`cross_entropy` (``t`` is exactly ``y``: the same bits op by op,
    to rounding compiled); for any ``alpha`` it equals
    ``optax.softmax_cross_entropy(logits, optax.smooth_labels(labels, alpha))`` to rounding.

    Args:
      logits: ``(..., K)`` floating-point scores.
      labels: ``(..., K)`` one-hot or probability vectors.
      alpha: smoothing, ``0 <= alpha < 1``; a scalar, possibly traced.

    Returns:
      ``(...,)`` per-example losses.

    >>> s = jnp.array([[0.0, jnp.log(3.0)]])  # p = (1/4, 3/4); t = (3/4, 1/4)
    >>> label_smoothing_ce(s, jnp.array([[1.0, 0.0]]), alpha=0.5)  # -(3/4)log(1/4) - (1/4)log(3/4)
    Array([1.1116413], dtype=float32)

    References:
      C. Szegedy, V. Vanhoucke, S. Ioffe, J. Shlens and Z. Wojna, "Rethinking the Inception
      architecture for computer vision", CVPR 2016 (arXiv:1512.00567), section 7; optax
      ``smooth_labels``.
    """
    s, y = _check_inputs(logits, labels, "label_smoothing_ce")
    return _xent(s, _smoothed(y, alpha, "label_smoothing_ce"))


def label_smoothing_ce_grad(logits, labels, alpha=0.1) -> jax.Array:
    r"""Closed form of d label_smoothing_ce / d s: ``p · Σt − t`` (``p − t`` when Σy = 1)."""
    s, y = _check_inputs(logits, labels, "label_smoothing_ce_grad")
    return _xent_grad(s, _smoothed(y, alpha, "label_smoothing_ce_grad"))


def _log_p_p_q(s: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``log p``, ``p = softmax(s)`` and ``q = 1 − p``, each to relative precision.

    With ``a`` the arg-max class and ``T = Σ_{j≠a} e^{s_j − s_a}``: ``log p = s − s_a −
    log1p(T)``, and ``q_a = T / (1 + T)``, which ``1 − p_a`` would round to 0 once ``T`` is
    below the epsilon; every other class has ``p ≤ 1/2``, so ``1 − p`` is exact enough there.
    ``s_a`` is picked by a mask, not by ``max``, so the identity holds at ties, and autodiff
    through it keeps the relative precision too.
    """
    a = jax.nn.one_hot(jnp.argmax(s, axis=-1), s.shape[-1], dtype=bool)
    # z_a is 0 as a constant, not s_a − s_a: autodiff would add its two cotangents, ±O(1),
    # to the O(q) ones of the other classes and round those away as p_a → 1
    z = jnp.where(a, 0.0, s - jnp.sum(jnp.where(a, s, 0.0), axis=-1, keepdims=True))
    e = jnp.exp(z)
    t = jnp.sum(jnp.where(a, 0.0, e), axis=-1, keepdims=True)
    inv = 1.0 / (1.0 + t)  # times the reciprocal, as in _softmax: the same bits on any devices
    p = e * inv
    return z - jnp.log1p(t), p, jnp.where(a, t * inv, 1.0 - p)


def _check_gamma(gamma, fn: str, dtype) -> jax.Array:
    return _param(gamma, fn, "gamma", *_GAMMA, dtype)


def _pow_q(q: jax.Array, gamma: jax.Array) -> jax.Array:
    """``q^γ`` with ``0^γ`` as its limit (1 at γ = 0, else 0) and a finite derivative at q = 0,
    where ``γ q^{γ−1}`` is infinite for γ < 1 and autodiff would give ``inf · 0 = nan``."""
    pos = q > 0
    return jnp.where(pos, jnp.power(jnp.where(pos, q, 1.0), gamma), (gamma == 0).astype(q.dtype))


def focal(logits, labels, gamma=2.0) -> jax.Array:
    r"""Softmax focal loss: cross-entropy scaled down on well-classified examples.

    .. math:: \ell(s, y) = -\sum_i y_i (1 - p_i)^\gamma \log p_i,
              \qquad p = \operatorname{softmax}(s)

    For one-hot labels, ``-(1 - p_c)^γ log p_c``. ``gamma = 0`` is :func:`cross_entropy` to
    rounding, and more precise as ``p_c → 1``: ``log p_c = −log1p(T)`` (see :func:`_log_p_p_q`)
    where cross-entropy's ``−s_c + logsumexp(s)`` rounds to 0, and likewise its gradient.
    Stable for any finite logits: ``log p`` comes from the logits, never ``log(softmax)``, and
    ``1 − p_c`` keeps relative precision as ``p_c → 1``.

    Args:
      logits: ``(..., K)`` floating-point scores.
      labels: ``(..., K)`` one-hot or probability vectors.
      gamma: focusing exponent, ``gamma >= 0``; a scalar, possibly traced.

    Returns:
      ``(...,)`` per-example losses.

    >>> s = jnp.array([[0.0, jnp.log(3.0)]])  # p = (1/4, 3/4)
    >>> focal(s, jnp.array([[0.0, 1.0]]), gamma=2.0)  # -(1/4)^2 log(3/4)
    Array([0.01798013], dtype=float32)

    References:
      T.-Y. Lin, P. Goyal, R. Girshick, K. He and P. Dollár, "Focal loss for dense object
      detection", ICCV 2017 (arXiv:1708.02002): ``FL(p_t) = −(1 − p_t)^γ log p_t``, here
      without its α weight and with ``p_t`` the softmax probability of the true class.
    """
    s, y = _check_inputs(logits, labels, "focal")
    gamma = _check_gamma(gamma, "focal", s.dtype)
    log_p, _, q = _log_p_p_q(s)
    return -jnp.sum(y * _pow_q(q, gamma) * log_p, axis=-1)


def focal_grad(logits, labels, gamma=2.0) -> jax.Array:
    r"""Closed form of d focal / d s: ``g_j = y_j h_j − p_j Σ_i y_i h_i``, with
    ``h_i = −q_i^γ (1 + γ p_i r_i)``, ``q = 1 − p`` and ``r_i = −log p_i / q_i``.

    ``h_i = p_i ∂ℓ_i/∂p_i`` for ``ℓ_i = −q_i^γ log p_i``, with ``∂ℓ_i/∂p_i = γ q_i^{γ−1} log p_i −
    q_i^γ / p_i`` multiplied through by ``p_i``, which takes the softmax Jacobian
    ``p_i(δ_ij − p_j)`` to the form above. Writing ``q^{γ−1} log p = −q^γ r`` removes
    ``q^{γ−1}``, infinite at ``q = 0`` for γ < 1: ``r`` is finite everywhere (``r ≥ 1``, ``r → 1``
    as ``q → 0``, ``p r → 0`` as ``p → 0``). At ``q_i = 0`` exactly (``p_i = 1`` in floating
    point) ``r_i`` is its limit 1 and ``q_i^γ`` is ``0^γ``: ``h_i = 0`` for γ > 0 (the gradient
    is 0 for a one-hot label there), and ``h_i = −1`` for γ = 0 (cross-entropy's ``p − y``).
    """
    s, y = _check_inputs(logits, labels, "focal_grad")
    gamma = _check_gamma(gamma, "focal_grad", s.dtype)
    log_p, p, q = _log_p_p_q(s)
    pos = q > 0
    r = jnp.where(pos, -log_p / jnp.where(pos, q, 1.0), 1.0)
    yh = -y * _pow_q(q, gamma) * (1.0 + gamma * p * r)
    # y_j h_j (1 − p_j) − p_j Σ_{i≠j} y_i h_i: the form of y_j h_j − p_j Σ_i y_i h_i that does
    # not cancel at the arg-max as p_a → 1 (q, not 1 − p; exact zero for a one-hot label)
    return yh * q - p * (jnp.sum(yh, axis=-1, keepdims=True) - yh)


# --------------------------------------------------------------------------------------------
# Registries: the names that configs and the CLI accept (lossjax.config reads them here). Order
# is fixed: the engine gives each member the index of its loss in LOSSES (engine._select_loss).

LOSSES: dict[str, LossFn] = {
    "cross_entropy": cross_entropy,
    "mse": mse,
    "softmax_mse": softmax_mse,
    "exp_mse": exp_mse,
}

if tuple(LOSSES) != BUILTIN_LOSSES:  # the JAX-free readers order losses by that tuple
    raise ImportError("losses.LOSSES and loss_names.BUILTIN_LOSSES disagree")

GRADIENTS: dict[str, LossFn] = {
    "cross_entropy": cross_entropy_grad,
    "mse": mse_grad,
    "softmax_mse": softmax_mse_grad,
    "exp_mse": exp_mse_grad,
}



def format_param(v: float) -> str:
    """A parameter's value as a label writes it: the shortest text that reads back as the same
    float (``repr``), a whole number without its ``.0`` (``5``, ``0.1``, ``1e-05``)."""
    v = float(v)
    return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)


@dataclass(frozen=True)
class Parameterized:
    """A loss that takes parameters, its closed-form gradient (same parameters), and a few test
    values per parameter spanning its range; the tests and ``lossjax check-grads`` check every
    combination of them. ``ranges`` holds each parameter's (test, rule), as the loss checks a
    concrete value; the parameters' order is ``test_values``'s, their defaults the loss's."""

    loss: Callable[..., jax.Array]
    grad: Callable[..., jax.Array]
    test_values: dict[str, tuple[float, ...]]
    ranges: dict[str, tuple[Callable[[float], bool], str]] = field(default_factory=dict)

    def range(self, name: str) -> tuple[Callable[[float], bool], str]:
        """(test, rule) of parameter ``name``; any finite number where none is given."""
        return self.ranges.get(name, (lambda v: True, "(any finite one)"))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.test_values)

    def defaults(self) -> dict[str, float]:
        """Each parameter's default, from the loss's signature."""
        sig = inspect.signature(self.loss).parameters
        return {n: float(sig[n].default) for n in self.names}

    def settings(self) -> list[dict[str, float]]:
        """Every combination of the test values (one empty setting for no parameters)."""
        names = list(self.test_values)
        return [dict(zip(names, v, strict=True))
                for v in itertools.product(*self.test_values.values())]

    def label(self, params: dict[str, float]) -> str:
        """``focal(gamma=0.5)``, the parameters in their order (``format_param``); no spaces,
        so a table row stays one field. ``parse_label`` reads it back."""
        args = ",".join(f"{k}={format_param(params[k])}" for k in self.names if k in params)
        return f"{self.loss.__name__}({args})" if args else self.loss.__name__


PARAMETERIZED: dict[str, Parameterized] = {
    "rescaled_mse": Parameterized(rescaled_mse, rescaled_mse_grad,
                                  {"k": (1, 5, 15), "M": (1, 15)}, {"k": _K, "M": _M}),
    "squentropy": Parameterized(squentropy, squentropy_grad, {}, {}),
    "label_smoothing_ce": Parameterized(label_smoothing_ce, label_smoothing_ce_grad,
                                        {"alpha": (0, 0.1, 0.5)}, {"alpha": _ALPHA}),
    "focal": Parameterized(focal, focal_grad, {"gamma": (0, 0.5, 1, 2, 5)}, {"gamma": _GAMMA}),
}

_LABEL = re.compile(r"^(?P<name>[a-z_]+)(?:\((?P<args>[^()]*)\))?$")


def parse_label(text: str) -> tuple[str, dict[str, float]]:
    """A parameterized loss's label taken apart, checked and completed: ``'focal(gamma=2)'``
    gives ``('focal', {'gamma': 2.0})``; a parameter left out takes its default (the bare name
    ``'rescaled_mse'`` is ``k = M = 1``), so ``PARAMETERIZED[name].label(params)`` is the
    canonical label. ``ValueError`` (one line) for an unknown loss or parameter, a value that is
    not a number or outside its range."""
    m = _LABEL.match(text)
    if not m or m["name"] not in PARAMETERIZED:
        raise ValueError(f"unknown loss {text!r}; a loss with parameters is one of "
                         f"{', '.join(signature(n) for n in PARAMETERIZED)}, e.g. "
                         "'rescaled_mse(k=5,M=15)'")
    name, entry = m["name"], PARAMETERIZED[m["name"]]
    params, seen = entry.defaults(), set()
    for part in m["args"].split(",") if m["args"] else ():
        key, _, value = part.partition("=")
        if key in seen:
            raise ValueError(f"loss {text!r}: {key} is given twice")
        seen.add(key)
        if key not in entry.names:
            raise ValueError(f"loss {text!r}: {parameter_problem(name, key)}")
        try:
            params[key] = float(value)
        except ValueError:
            params[key] = math.nan
        if problem := range_problem(name, key, params[key]):
            raise ValueError(f"loss {text!r}: {key}: got {value or 'nothing'}, {problem}")
    return name, params


def signature(name: str) -> str:
    """``rescaled_mse(k, M)``, ``squentropy``: a parameterized loss and its parameters."""
    names = PARAMETERIZED[name].names
    return f"{name}({', '.join(names)})" if names else name


def parameter_problem(name: str, key: str) -> str:
    """Why ``key`` is no parameter of loss ``name`` (any name), with the closest one if any."""
    entry = PARAMETERIZED.get(name)
    if entry is None or not entry.names:
        takes = ", ".join(signature(n) for n in PARAMETERIZED if PARAMETERIZED[n].names)
        return f"{name} takes no parameters; the losses that do are {takes}"
    close = difflib.get_close_matches(key, entry.names, n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return (f"{key!r} is not a parameter of {name}; {hint}its parameters are "
            f"{', '.join(entry.names)}")


def range_problem(name: str, key: str, value: float) -> str | None:
    """None if ``value`` is a finite number in the range of ``name``'s parameter ``key``, else
    what it should be (``'expected a number >= 1'``)."""
    ok, rule = PARAMETERIZED[name].range(key)
    if isinstance(value, int | float) and math.isfinite(value) and ok(float(value)):
        return None
    return f"expected a number {rule}"


def get_loss(name: str) -> LossFn:
    """Looks a loss up by registry name, with a clear error naming the choices."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(
            f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}, a loss with parameters "
            f"({', '.join(signature(n) for n in PARAMETERIZED)}; e.g. 'focal(gamma=2)') or "
            "give 'module:function'."
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
