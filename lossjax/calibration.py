"""How good a classifier's probabilities are: the sums an evaluation accumulates over a split
for the Brier score, the expected calibration error and per-class accuracy, and temperature
scaling.

Everything is about ``p = softmax(s)`` of a model's logits ``s`` over K classes, whatever loss
trained the model, so that the losses compare on one scale:

- negative log-likelihood ``-log p_y`` (the engine's ``val_ce``/``test_ce``; not computed here);
- Brier score ``sum_k (p_k - y_k)^2`` with one-hot ``y``, averaged over examples: the sum over
  classes, as Brier (1950) and Guo et al. (2017) define it (between 0 and 2; some libraries
  divide by K as well);
- expected calibration error (Guo, Pleiss, Sun & Weinberger, "On Calibration of Modern Neural
  Networks", ICML 2017): the confidence ``max_k p_k`` of each example falls into one of
  :data:`NUM_BINS` equal-width bins of [0, 1], bin b holding the confidences in
  ``(b/15, (b+1)/15]`` (as their code bins them); ``ECE = sum_b (n_b / n) |acc_b - conf_b|``
  with ``acc_b`` the accuracy and ``conf_b`` the mean confidence of the bin's ``n_b`` examples.
  The prediction is ``argmax_k s_k``, the same one accuracy counts.

An evaluation runs over a split in chunks padded to a whole number of chunks; :func:`chunk_sums`
gives one chunk's sums with the padding masked out, and sums of sums over the chunks make the
split's exact totals, from which :func:`finish` takes the means (on the device, in the compiled
evaluation).

Temperature scaling (Guo et al. 2017): one temperature ``T`` per model, fitted on the
validation split to minimize the NLL of ``softmax(s / T)``, then applied to the test split; it
changes no prediction, so no accuracy. The NLL is convex in ``beta = 1/T`` (its second
derivative is the variance of ``s`` under ``softmax(beta s)``), and its derivative is
``mean_i (E_{softmax(beta s_i)}[s_i] - s_{i,y_i})``; :func:`fit_inverse_temperature` bisects on
the sign of that derivative in ``log beta`` over ``[1/T_MAX, T_MAX]`` for a fixed number of
steps, on logits computed once. A minimum outside the bracket (an NLL still falling at its
edge: a split the model gets all right, say) gives the bracket's edge, which the summary and
the report mark (``lossjax.calibration_tables.unfit``) and leave out of the mean temperature. A
fit that ends inside the bracket where the NLL has no curvature, or its slope no value (logits
so large that float32's softmax is one-hot at every temperature near the end, or overflows),
found no minimum, only rounding: it gives NaN, a fit that did not converge.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NUM_BINS = 15  # Guo et al. 2017
T_MAX = 1e4  # the fitted temperature lies in [1/T_MAX, T_MAX]
BISECTION_STEPS = 40  # the bracket's 18.4 in log beta, halved 40 times: below float32's step


def softmax(s: jax.Array) -> jax.Array:
    """``jax.nn.softmax(s, axis=-1)``, normalized by multiplying with the reciprocal of the sum,
    as ``lossjax.losses`` writes it (one device and several then round alike)."""
    e = jnp.exp(s - jnp.max(s, axis=-1, keepdims=True))
    return e * (1.0 / jnp.sum(e, axis=-1, keepdims=True))


def chunk_sums(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
    """One chunk's sums over its real examples (``mask`` true), for ``logits`` (n, K) float32
    and integer ``labels`` (n,):

    - ``brier``: the sum of the examples' Brier scores;
    - ``bins`` (3, NUM_BINS): per confidence bin, the examples' count, the sum of their
      confidences and the number of them predicted right;
    - ``classes`` (2, K): per true class, the examples' count and the number predicted right.
    """
    k = logits.shape[-1]
    p = softmax(logits)
    y = jax.nn.one_hot(labels, k, dtype=p.dtype)
    m = mask.astype(p.dtype)
    brier = jnp.sum(jnp.sum((p - y) ** 2, axis=-1) * m)
    conf = jnp.max(p, axis=-1)
    right = (jnp.argmax(logits, -1) == labels).astype(p.dtype) * m
    # Bin b holds (b/15, (b+1)/15]; a confidence is at least 1/K > 0, and 1 goes to the last.
    b = jnp.clip(jnp.ceil(conf * NUM_BINS).astype(jnp.int32) - 1, 0, NUM_BINS - 1)
    in_bin = jax.nn.one_hot(b, NUM_BINS, dtype=p.dtype) * m[:, None]
    bins = jnp.stack([jnp.sum(in_bin, 0), jnp.sum(in_bin * conf[:, None], 0),
                      jnp.sum(in_bin * right[:, None], 0)])
    classes = jnp.stack([jnp.sum(y * m[:, None], 0), jnp.sum(y * right[:, None], 0)])
    return {"brier": brier, "bins": bins, "classes": classes}


def zero_sums(num_classes: int) -> dict[str, jax.Array]:
    """The sums of :func:`chunk_sums` over no example: a scan's start."""
    return {"brier": jnp.zeros((), jnp.float32),
            "bins": jnp.zeros((3, NUM_BINS), jnp.float32),
            "classes": jnp.zeros((2, num_classes), jnp.float32)}


def finish(sums: dict[str, jax.Array], n) -> dict[str, jax.Array]:
    """The split's ``brier`` (mean Brier score) and ``ece`` from its summed :func:`chunk_sums`
    over its ``n`` examples; ``bins`` and ``classes`` stay sums. ``n_b/n |acc_b - conf_b|`` is
    ``|right_b - conf_sum_b| / n``."""
    inv = 1.0 / n  # a multiplication by the reciprocal: see softmax
    return {"brier": sums["brier"] * inv,
            "ece": jnp.sum(jnp.abs(sums["bins"][2] - sums["bins"][1])) * inv,
            "bins": sums["bins"], "classes": sums["classes"]}


def nll_slope(beta, logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
    """The derivative in ``beta`` of the summed NLL of ``softmax(beta s)`` over the real
    examples: ``sum_i E_{softmax(beta s_i)}[s_i] - s_{i,y_i}``."""
    p = softmax(beta * logits)
    true = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(mask, jnp.sum(p * logits, -1) - true, 0.0))


def fit_inverse_temperature(logits: jax.Array, labels: jax.Array, mask: jax.Array,
                            steps: int = BISECTION_STEPS) -> jax.Array:
    """``beta = 1/T`` that minimizes the NLL of ``softmax(beta s)`` over the real examples of
    ``logits`` (..., K) (any leading shape, e.g. chunks × chunk, with ``labels`` and ``mask``
    of that shape): bisection on the slope's sign in ``log beta`` over ``[1/T_MAX, T_MAX]``,
    ``steps`` halvings, then the bracket's midpoint."""
    def halve(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        rising = nll_slope(jnp.exp(mid), logits, labels, mask) > 0
        return jnp.where(rising, lo, mid), jnp.where(rising, mid, hi)

    edge = jnp.log(jnp.float32(T_MAX))
    lo, hi = jax.lax.fori_loop(0, steps, halve, (-edge, edge))
    beta = jnp.exp(0.5 * (lo + hi))
    at_edge = (lo == -edge) | (hi == edge)
    found = at_edge | ((nll_curvature(beta, logits, mask) > 0)
                       & jnp.isfinite(nll_slope(beta, logits, labels, mask)))
    return jnp.where(found, beta, jnp.nan)


def nll_curvature(beta, logits: jax.Array, mask: jax.Array) -> jax.Array:
    """The second derivative in ``beta`` of the summed NLL of ``softmax(beta s)``: the summed
    variance of ``s`` under it, 0 where float32's softmax is one-hot (NaN if it overflows)."""
    p = softmax(beta * logits)
    mean = jnp.sum(p * logits, -1, keepdims=True)
    return jnp.sum(jnp.where(mask, jnp.sum(p * (logits - mean) ** 2, -1), 0.0))
