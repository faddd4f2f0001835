"""The loss library: autodiff against the closed forms in float64, finite differences, optax,
hand-computed values, jit/vmap, the gradient-sign facts, exp_mse's float32 overflow, the
parameterized losses (special cases, exactness at saturation, extreme logits, traced
parameters, range errors), input validation (shapes and dtypes, never values), reference
resolution, and import lightness.

float64 is switched on for this module only (``jax.enable_x64`` as a context manager in a
module-scoped fixture): pytest-xdist runs other modules in the same worker processes, and a
global ``jax.config.update("jax_enable_x64", True)`` would change their dtypes (and the float32
doctests). Arrays are created inside the tests, so they are float64 while the fixture is active.
"""

from __future__ import annotations

import decimal
import functools
import math
import subprocess
import sys
from decimal import Decimal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from lossjax import losses
from lossjax.losses import (
    GRADIENTS,
    LOSSES,
    PARAMETERIZED,
    gradient_sign_stats,
    one_hot,
    with_integer_labels,
    wrong_direction_fraction,
)
from lossjax.resolve import resolve_loss

NAMES = list(LOSSES)
# Every distinct shape costs an XLA compilation per compiled function, so shapes come from a
# small set of (K, batch shape) pairs that still spans K = 2..100 and batch ranks 0..2; the
# values vary freely. Hypothesis-driven tests go through functions compiled once per shape.
SHAPES = ((2, ()), (3, (8,)), (10, (2, 3)), (37, (4,)), (100, (2, 3)))
MAX_SCALE = {"cross_entropy": 50.0, "mse": 50.0, "softmax_mse": 50.0, "exp_mse": 20.0}
RTOL = 1e-10
# Saturated softmax-MSE: each gradient component is p_i·[(y_i − p_i) − ⟨y − p, p⟩], a difference
# of O(1) terms that cancel to a residue far below float64's resolution of them (near a one-hot
# p the true gradient can be ~1e-40 while rounding leaves ~1e-17). No formula, autodiff or
# closed, keeps relative precision there, so that loss is held to ‖Δ‖ ≤ 1e-10·‖g‖ + 1e-12: the
# absolute floor is rounding of O(1) quantities with ~4500 ulps to spare. The other losses have
# no such cancellation and are held to the pure relative bound.
ATOL = {"cross_entropy": 0.0, "mse": 0.0, "softmax_mse": 1e-12, "exp_mse": 0.0}
HYP = settings(max_examples=60, deadline=None)


@pytest.fixture(autouse=True, scope="module")
def _float64():
    with jax.enable_x64(True):
        yield


def f64(x):
    return jnp.asarray(x, dtype=jnp.float64)


@st.composite
def logits_labels(draw, max_scale=50.0, soft=True):
    """(logits, labels) as float64 numpy arrays of shape (*batch, K).

    Logits are uniform in [-scale, scale]; in the "confident" modes one logit per example is
    pushed to ±scale (saturated softmax, right or wrong). Labels are one-hot, or with ``soft``
    sometimes Dirichlet probability vectors.
    """
    k, batch = draw(st.sampled_from(SHAPES))
    scale = draw(st.floats(min_value=1e-3, max_value=max_scale))
    mode = draw(st.sampled_from(["uniform", "confident_right", "confident_wrong"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    s = rng.uniform(-scale, scale, size=(*batch, k))
    cls = rng.integers(0, k, size=batch)
    y = np.eye(k)[cls]
    idx = np.expand_dims(cls, -1)
    if mode == "confident_right":
        np.put_along_axis(s, idx, scale, axis=-1)
    elif mode == "confident_wrong":
        s[..., :] = np.minimum(s, scale / 2)
        np.put_along_axis(s, (idx + 1) % k, scale, axis=-1)
        np.put_along_axis(s, idx, -scale, axis=-1)
    if soft and draw(st.booleans()):
        y = rng.dirichlet(np.ones(k), size=batch)
    return s, y


@functools.cache
def _autodiff_and_closed(name):
    """jit of (autodiff, closed form, wrong-direction fraction from each).

    Autodiff is ``jax.grad`` of the summed per-example losses: they are independent, so that is
    the per-example gradient. The fractions come from ``gradient_sign_stats`` on the closed form
    and ``wrong_direction_fraction`` (which differentiates the loss itself).
    """
    loss, grad = LOSSES[name], GRADIENTS[name]

    def both(s, y):
        auto = jax.grad(lambda s: jnp.sum(loss(s, y)))(s)
        closed = grad(s, y)
        frac_closed = gradient_sign_stats(closed, y)[0]
        frac_auto = wrong_direction_fraction(loss, s, y)[0]
        return auto, closed, frac_closed, frac_auto

    return jax.jit(both)


def assert_grads_agree(auto, closed, rtol=RTOL, atol=0.0):
    auto, closed = np.asarray(auto), np.asarray(closed)
    assert auto.dtype == closed.dtype == np.float64
    d = np.linalg.norm(auto - closed, axis=-1)
    g = np.linalg.norm(closed, axis=-1)
    bad = ~(d <= rtol * g + atol)
    assert not bad.any(), f"‖Δ‖ {d[bad]} vs ‖g‖ {g[bad]}"


# ---------------------------------------------------------------------------------------------
# autodiff vs closed forms, float64


@pytest.mark.parametrize("name", NAMES)
@HYP
@given(data=st.data())
def test_autodiff_matches_closed_form(name, data):
    s, y = data.draw(logits_labels(max_scale=MAX_SCALE[name]))
    auto, closed, _, _ = _autodiff_and_closed(name)(f64(s), f64(y))
    assert auto.shape == closed.shape == s.shape
    assert_grads_agree(auto, closed, atol=ATOL[name])


def _softmax_mse_grad_exact(logits, labels):
    """The closed form evaluated in 60-digit decimal arithmetic: the true gradient."""
    with decimal.localcontext() as ctx:
        ctx.prec = 60
        e = [Decimal(v).exp() for v in logits]
        p = [x / sum(e) for x in e]
        r = [Decimal(v) - q for v, q in zip(labels, p, strict=True)]
        rp = sum(a * b for a, b in zip(r, p, strict=True))
        return np.array(
            [float(Decimal(-2) / len(p) * q * (a - rp)) for q, a in zip(p, r, strict=True)]
        )


def test_saturated_softmax_mse_needs_the_absolute_floor():
    """Why softmax_mse has an absolute term: at saturation neither autodiff nor the closed form
    is within 1e-10 relative of the true gradient, while both are within ~1e-16 absolute."""
    s, y = [0.0, 30.0, 0.0], [1.0, 0.0, 0.0]  # confidently wrong: p ≈ e_1, true class 0
    auto, closed, _, _ = _autodiff_and_closed("softmax_mse")(f64([s]), f64([y]))
    exact = _softmax_mse_grad_exact(s, y)
    g = np.linalg.norm(exact)
    assert g < 1e-12  # the gradient is a residue of O(1) terms that cancel
    errors = [np.linalg.norm(np.asarray(x[0]) - exact) for x in (auto, closed)]
    assert max(errors) > 1e-10 * g  # the pure relative bound fails, for one or both ...
    assert max(errors) < 1e-15  # ... while the absolute error is at the rounding level
    d = float(jnp.linalg.norm(auto - closed))
    assert d > 1e-10 * float(jnp.linalg.norm(closed))
    assert d <= 1e-10 * float(jnp.linalg.norm(closed)) + 1e-12  # the rule used above


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("shape", "scale"), [((3, 5), 1.0), ((2, 2, 10), 4.0)])
def test_check_grads_finite_differences(name, shape, scale):
    rng = np.random.default_rng(sum(shape))
    s = f64(rng.uniform(-scale, scale, size=shape))
    y = f64(np.eye(shape[-1])[rng.integers(0, shape[-1], size=shape[:-1])])
    y = y.at[0].set(f64(rng.dirichlet(np.ones(shape[-1]), size=shape[1:-1])))  # some soft rows
    # jit: the transformed programs compile once instead of primitive by primitive.
    loss = jax.jit(lambda s: LOSSES[name](s, y))
    check_grads(loss, (s,), order=1, modes=("fwd", "rev"))


@jax.jit
def _ce_and_optax(s, y):
    return losses.cross_entropy(s, y), optax.softmax_cross_entropy(s, y)


@HYP
@given(data=st.data())
def test_cross_entropy_equals_optax(data):
    s, y = data.draw(logits_labels(max_scale=50.0))
    ours, ref = _ce_and_optax(f64(s), f64(y))
    assert ours.shape == ref.shape == s.shape[:-1]
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# hand-computed values

_Z = 1 + math.exp(-1) + math.exp(-2)
HAND = [
    # name, logits, labels, loss, gradient
    (
        "cross_entropy",
        [1.0, 2.0, 3.0],
        [0.0, 0.0, 1.0],
        math.log(_Z),  # -3 + log(e + e² + e³)
        [math.exp(-2) / _Z, math.exp(-1) / _Z, 1 / _Z - 1],
    ),
    ("cross_entropy", [0.0] * 4, [0.0, 0.0, 0.0, 1.0], math.log(4), [0.25] * 3 + [-0.75]),
    ("cross_entropy", [0.0, 0.0], [0.25, 0.75], math.log(2), [0.25, -0.25]),  # soft label
    ("mse", [0.5, -1.0], [1.0, 0.0], (0.25 + 1.0) / 2, [-0.5, -1.0]),
    ("mse", [0.0, 0.0, 0.0], [0.2, 0.3, 0.5], (0.04 + 0.09 + 0.25) / 3, [-0.4 / 3, -0.2, -1 / 3]),
    ("softmax_mse", [0.0, 0.0], [1.0, 0.0], 0.25, [-0.25, 0.25]),
    # p = (1/4, 3/4): loss = (0.75² + 0.75²)/2; d/ds0 = 2·p1·(−p0·p1) = −0.28125
    ("softmax_mse", [0.0, math.log(3)], [1.0, 0.0], 0.5625, [-0.28125, 0.28125]),
    # p = (1/4, 1/4, 1/2), y = e0: r = (3/4, −1/4, −1/2), ⟨r, p⟩ = −1/8,
    # grad = (−2/3)·p ⊙ (r + 1/8) = (−7/48, 1/48, 1/8)
    (
        "softmax_mse",
        [0.0, 0.0, math.log(2)],
        [1.0, 0.0, 0.0],
        (0.5625 + 0.0625 + 0.25) / 3,
        [-7 / 48, 1 / 48, 1 / 8],
    ),
    ("exp_mse", [0.0, 0.0], [1.0, 0.0], 0.5, [0.0, 1.0]),
    # e^s = (2, 1/2): loss = (1 + 1/4)/2; grad = −(y − e^s)·e^s = (2, 1/4)
    ("exp_mse", [math.log(2), math.log(0.5)], [1.0, 0.0], 0.625, [2.0, 0.25]),
]


@functools.cache
def _value_closed_autodiff(name):
    loss, grad = LOSSES[name], GRADIENTS[name]
    return jax.jit(
        lambda s, y: (loss(s, y), grad(s, y), jax.grad(lambda s: jnp.sum(loss(s, y)))(s))
    )


@pytest.mark.parametrize(("name", "logits", "labels", "value", "grad"), HAND)
def test_hand_computed_values(name, logits, labels, value, grad):
    s, y = f64([logits]), f64([labels])
    loss, closed, auto = _value_closed_autodiff(name)(s, y)
    np.testing.assert_allclose(loss, [value], rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(closed, [grad], rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(auto, [grad], rtol=1e-14, atol=1e-15)


def test_gradient_sign_stats_hand_computed():
    g = f64([[-0.5, 0.2, -0.1], [0.3, 0.4, -1.2]])
    y = f64([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    frac, norm = gradient_sign_stats(g, y)
    assert float(frac) == 0.25  # wrong-class entries: 0.2, -0.1, 0.3, 0.4
    expected = (math.sqrt(0.25 + 0.04 + 0.01) + math.sqrt(0.09 + 0.16 + 1.44)) / 2
    assert float(norm) == pytest.approx(expected, rel=1e-15)


# ---------------------------------------------------------------------------------------------
# jit and vmap


@pytest.mark.parametrize("name", NAMES)
def test_jit_and_vmap(name):
    loss, grad = LOSSES[name], GRADIENTS[name]
    rng = np.random.default_rng(7)
    s = f64(rng.uniform(-3, 3, size=(3, 4, 5)))
    y = f64(np.eye(5)[rng.integers(0, 5, size=(3, 4))])
    ids = jnp.argmax(y, axis=-1)
    value, closed = loss(s, y), grad(s, y)  # eager references
    assert value.shape == (3, 4) and closed.shape == (3, 4, 5)
    wrapped = with_integer_labels(loss)

    @jax.jit  # one program holding every variant: compiled, and vmapped inside compiled code
    def variants(s, y, ids):
        return {
            "loss": loss(s, y),
            "vmap loss": jax.vmap(loss)(s, y),
            "vmap vmap loss (rank-1 logits)": jax.vmap(jax.vmap(loss))(s, y),
            "integer labels": wrapped(s, ids),
            "vmap integer labels": jax.vmap(wrapped)(s, ids),
            "grad": grad(s, y),
            "vmap vmap grad": jax.vmap(jax.vmap(grad))(s, y),
            "vmap vmap jax.grad": jax.vmap(jax.vmap(jax.grad(loss)))(s, y),
            "wrong_direction_fraction": wrong_direction_fraction(loss, s, y),
        }

    out = variants(s, y, ids)
    for key in ("loss", "vmap loss", "vmap vmap loss (rank-1 logits)", "integer labels"):
        np.testing.assert_allclose(out[key], value, rtol=1e-13, err_msg=key)
    np.testing.assert_allclose(out["vmap integer labels"], value, rtol=1e-13)
    np.testing.assert_allclose(jax.vmap(loss)(s, y), value, rtol=1e-13)  # vmap, not compiled
    np.testing.assert_allclose(jax.vmap(grad)(s, y), closed, rtol=1e-13, atol=1e-16)
    for key in ("grad", "vmap vmap grad"):
        np.testing.assert_allclose(out[key], closed, rtol=1e-13, atol=1e-16, err_msg=key)
    assert_grads_agree(out["vmap vmap jax.grad"], closed, atol=ATOL[name])
    frac, norm = out["wrong_direction_fraction"]
    frac2, norm2 = gradient_sign_stats(closed, y)
    assert float(frac) == float(frac2)
    assert float(norm) == pytest.approx(float(norm2), rel=1e-10)


# ---------------------------------------------------------------------------------------------
# gradient-sign facts: which losses push a wrong-class logit up


@pytest.mark.parametrize("name", ["cross_entropy", "exp_mse"])
@HYP
@given(data=st.data())
def test_wrong_class_gradient_always_positive(name, data):
    s, y = data.draw(logits_labels(max_scale=MAX_SCALE[name], soft=False))
    auto, closed, frac_closed, frac_auto = _autodiff_and_closed(name)(f64(s), f64(y))
    wrong = y == 0
    assert np.all(np.asarray(closed)[wrong] > 0)
    assert np.all(np.asarray(auto)[wrong] > 0)
    assert float(frac_closed) == float(frac_auto) == 0.0


@jax.jit
def _mse_smse_grads(s, y):
    return losses.mse_grad(s, y), losses.softmax_mse_grad(s, y), jax.nn.softmax(s, axis=-1)


@HYP
@given(data=st.data())
def test_wrong_class_sign_criteria_mse_and_softmax_mse(data):
    """mse: g_j < 0 exactly when s_j < 0. softmax_mse: g_j = (2/K)·p_j·(p_j + p_c − ‖p‖²), so
    g_j < 0 exactly when p_j + p_c < ‖p‖² (entries within rounding of the boundary skipped)."""
    s, y = data.draw(logits_labels(max_scale=50.0, soft=False))
    wrong = y == 0
    g_mse, g, p = map(np.asarray, _mse_smse_grads(f64(s), f64(y)))
    np.testing.assert_array_equal((g_mse < 0)[wrong], (s < 0)[wrong])

    p_c = np.sum(p * y, axis=-1, keepdims=True)
    margin = np.sum(p * p, axis=-1, keepdims=True) - p - p_c  # > 0: pushed the wrong way
    clear = wrong & (np.abs(margin) > 1e-12)
    np.testing.assert_array_equal((g < 0)[clear], (margin > 0)[clear])


# the loss is a static argument: one compiled program per loss instead of op-by-op dispatch
_wrong_direction_fraction = jax.jit(wrong_direction_fraction, static_argnums=0)


def test_mse_negative_wrong_class_gradient_constructed():
    s = f64([[0.5, -1.0, 0.2]])  # true class 0; wrong logit 1 is below zero
    y = f64([[1.0, 0.0, 0.0]])
    g = GRADIENTS["mse"](s, y)
    assert float(g[0, 1]) == pytest.approx(-2 / 3)  # (2/K)·s_1 < 0: pushes class 1 up
    assert float(g[0, 2]) > 0
    assert float(gradient_sign_stats(g, y)[0]) == 0.5
    assert float(_wrong_direction_fraction(losses.mse, s, y)[0]) == 0.5


def test_softmax_mse_negative_wrong_class_gradient_constructed():
    s = f64([[0.0, 0.0, 5.0]])  # true class 0, class 2 dominates: p ≈ (0.0066, 0.0066, 0.987)
    y = f64([[1.0, 0.0, 0.0]])
    p = jax.nn.softmax(s)[0]
    sq = float(jnp.sum(p * p))
    assert float(p[1] + p[0]) < sq  # the pushed-up condition holds for class 1 ...
    assert float(p[2] + p[0]) > sq  # ... and not for class 2
    g = GRADIENTS["softmax_mse"](s, y)
    assert float(g[0, 1]) < 0 < float(g[0, 2])
    assert float(g[0, 1]) == pytest.approx((2 / 3) * float(p[1] * (p[1] + p[0] - sq)), rel=1e-12)
    assert float(gradient_sign_stats(g, y)[0]) == 0.5
    assert float(_wrong_direction_fraction(losses.softmax_mse, s, y)[0]) == 0.5
    # the same logits never push a wrong class up under cross-entropy or exp-MSE
    assert float(_wrong_direction_fraction(losses.cross_entropy, s, y)[0]) == 0.0
    assert float(_wrong_direction_fraction(losses.exp_mse, s, y)[0]) == 0.0


# ---------------------------------------------------------------------------------------------
# exp_mse overflow (documented in its docstring)


@functools.partial(jax.jit, static_argnums=1)
def _exp_mse_f32_compiled(v, k):
    return _exp_mse_f32_eager(v, k)


def _exp_mse_f32_eager(v, k):
    s = jnp.zeros((1, k), jnp.float32).at[0, 1].set(v)  # true class 0, wrong logit 1 at v
    y = one_hot(jnp.array([0]), k, dtype=jnp.float32)
    loss = losses.exp_mse(s, y)
    auto = jax.grad(lambda s: jnp.sum(losses.exp_mse(s, y)))(s)
    return loss[0], auto[0], losses.exp_mse_grad(s, y)[0]


def _exp_mse_f32(v, k, compiled=True):
    """(loss, autodiff gradient, closed-form gradient) at logits (0, v, 0, ...), class 0 true."""
    fn = _exp_mse_f32_compiled if compiled else _exp_mse_f32_eager
    loss, auto, closed = fn(jnp.float32(v), k)
    return float(loss), np.asarray(auto), np.asarray(closed)


def test_exp_mse_float32_overflow():
    """float32: the loss overflows past log(max)/2 ≈ 44.36 (the square e^{2s}), not at 88.7
    where e^s does; the gradient (2/K)e^{2s} overflows past 44.36 + log(K/2)/2. Both go to
    +inf, never nan, and the other classes' gradients stay finite. Checked compiled (as the
    trainer runs it) and, at two points, op by op."""
    with jax.enable_x64(False):
        assert float(np.log(np.finfo(np.float32).max)) == pytest.approx(88.7228, abs=1e-4)
        for k, grad_limit in ((2, 44.36), (100, 46.32)):
            loss, auto, closed = _exp_mse_f32(44.3, k)
            assert np.isfinite(loss) and np.all(np.isfinite(auto)) and np.all(np.isfinite(closed))
            for v in (44.4, 60.0, 88.0, 89.0, 1000.0):  # the loss: inf from 44.4 on
                loss, auto, closed = _exp_mse_f32(v, k)
                assert loss == math.inf
                assert not np.any(np.isnan(auto)) and not np.any(np.isnan(closed))
                np.testing.assert_array_equal(auto, closed)
                assert np.all(np.isfinite(np.delete(auto, 1)))  # other classes unaffected
            _, auto, _ = _exp_mse_f32(grad_limit - 0.05, k)
            assert np.isfinite(auto[1]) and auto[1] > 1e37
            _, auto, _ = _exp_mse_f32(grad_limit + 0.05, k)
            assert auto[1] == math.inf
            _, auto, _ = _exp_mse_f32(89.0, k)  # e^s itself is inf: still +inf, not nan
            assert auto[1] == math.inf
        # K = 100 at 45: the loss is already inf while the gradient is still finite
        loss, auto, _ = _exp_mse_f32(45.0, 100)
        assert loss == math.inf and np.isfinite(auto[1])
        for v in (44.3, 89.0):  # op by op: the same
            eager, compiled = _exp_mse_f32(v, 2, compiled=False), _exp_mse_f32(v, 2)
            assert eager[0] == compiled[0]
            np.testing.assert_array_equal(eager[1], compiled[1])
    # float64 has room to spare at the same logits
    loss = losses.exp_mse(f64([[0.0, 89.0]]), f64([[1.0, 0.0]]))
    assert np.isfinite(float(loss[0]))


# ---------------------------------------------------------------------------------------------
# parameterized losses (losses.PARAMETERIZED): rescaled_mse, squentropy, label_smoothing_ce, focal

P_NAMES = list(PARAMETERIZED)
# Parameter draws for the property tests: each parameter's test values, or any value in a range
# a little wider than theirs (inside the valid range).
P_RANGES = {"k": (1.0, 20.0), "M": (1e-3, 30.0), "alpha": (0.0, 0.99), "gamma": (0.0, 6.0)}


def _settings():
    return [(n, p) for n in P_NAMES for p in PARAMETERIZED[n].settings()]


def _setting_id(case):
    name, params = case
    return PARAMETERIZED[name].label(params)


@st.composite
def parameters(draw, name):
    out = {}
    for p, values in PARAMETERIZED[name].test_values.items():
        lo, hi = P_RANGES[p]
        out[p] = draw(st.one_of(st.sampled_from(values), st.floats(lo, hi)))
    return out


@functools.cache
def _p_autodiff_and_closed(name):
    """jit of (loss, autodiff, closed form) with the parameters as traced arguments: one
    compilation per shape serves every parameter value."""
    entry = PARAMETERIZED[name]

    def both(s, y, params):
        loss = functools.partial(entry.loss, **params)
        auto = jax.grad(lambda s: jnp.sum(loss(s, y)))(s)
        return loss(s, y), auto, entry.grad(s, y, **params)

    return jax.jit(both)


# The slowest two (about 4-7 s each) run in the slow tier; check-grads covers all four there too.
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow)
                                  if n in ("focal", "label_smoothing_ce") else n
                                  for n in P_NAMES])
@HYP
@given(data=st.data())
def test_parameterized_autodiff_matches_closed_form(name, data):
    # The pure relative bound, as for the built-ins, including focal at saturation: its log p
    # and 1 − p keep relative precision as p → 1 (see test_focal_gradient_is_exact_at_saturation).
    s, y = data.draw(logits_labels(max_scale=50.0))
    params = data.draw(parameters(name))
    value, auto, closed = _p_autodiff_and_closed(name)(f64(s), f64(y), params)
    assert value.shape == s.shape[:-1] and auto.shape == closed.shape == s.shape
    assert np.isfinite(value).all()
    assert_grads_agree(auto, closed)


@pytest.mark.slow  # every setting of every parameterized loss
@pytest.mark.parametrize("case", _settings(), ids=_setting_id)
@pytest.mark.parametrize(("shape", "scale"), [((3, 5), 1.0), ((2, 2, 10), 4.0)])
def test_parameterized_check_grads(case, shape, scale):
    name, params = case
    rng = np.random.default_rng(sum(shape))
    s = f64(rng.uniform(-scale, scale, size=shape))
    y = f64(np.eye(shape[-1])[rng.integers(0, shape[-1], size=shape[:-1])])
    y = y.at[0].set(f64(rng.dirichlet(np.ones(shape[-1]), size=shape[1:-1])))  # some soft rows
    loss = jax.jit(lambda s: PARAMETERIZED[name].loss(s, y, **params))
    check_grads(loss, (s,), order=1, modes=("fwd", "rev"))


def _soft_and_one_hot(rng, batch, k):
    y = rng.dirichlet(np.ones(k), size=batch)
    y[::2] = np.eye(k)[rng.integers(0, k, size=len(y[::2]))]
    return y


@pytest.mark.parametrize(("k", "batch"), [(2, 16), pytest.param(10, 33, marks=pytest.mark.slow)])
def test_special_cases(k, batch):
    """rescaled_mse(k=1, M=1) is mse and label_smoothing_ce(alpha=0) is cross_entropy: the same
    bits op by op (the weights are exactly 1, the targets exactly y), to rounding compiled (XLA
    may sum the classes in another order: 1 ulp seen at K = 10). focal(gamma=0) is
    cross_entropy to rounding, where cross_entropy keeps precision (see the next test)."""
    rng = np.random.default_rng(k)
    s, y = f64(rng.uniform(-50, 50, size=(batch, k))), f64(_soft_and_one_hot(rng, batch, k))
    same = [
        (losses.rescaled_mse, {"k": 1.0, "M": 1.0}, losses.mse),
        (losses.rescaled_mse_grad, {"k": 1, "M": 1}, losses.mse_grad),
        (losses.label_smoothing_ce, {"alpha": 0.0}, losses.cross_entropy),
        (losses.label_smoothing_ce_grad, {"alpha": 0}, losses.cross_entropy_grad),
    ]
    for fn, params, ref in same:
        np.testing.assert_array_equal(fn(s, y, **params), ref(s, y), err_msg=fn.__name__)
        compiled = jax.jit(functools.partial(fn, **params))(s, y)
        np.testing.assert_allclose(compiled, jax.jit(ref)(s, y), rtol=1e-15, atol=0)
    np.testing.assert_allclose(losses.focal(s, y, gamma=0.0), losses.cross_entropy(s, y),
                               rtol=1e-13, atol=1e-13)
    # cross_entropy's p − y and −s_c + logsumexp(s) are exact only to ~eps absolute near p_c = 1
    np.testing.assert_allclose(losses.focal_grad(s, y, gamma=0.0),
                               losses.cross_entropy_grad(s, y), rtol=1e-13, atol=4e-16)


@jax.jit
def _smoothing_and_optax(s, y, alpha):
    ref = optax.softmax_cross_entropy(s, optax.smooth_labels(y, alpha))
    return losses.label_smoothing_ce(s, y, alpha), ref


@HYP
@given(data=st.data())
def test_label_smoothing_equals_optax(data):
    s, y = data.draw(logits_labels(max_scale=50.0))
    alpha = data.draw(parameters("label_smoothing_ce"))["alpha"]
    ours, ref = _smoothing_and_optax(f64(s), f64(y), alpha)
    assert ours.shape == ref.shape == s.shape[:-1]
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)


def _focal_grad_exact(logits, labels, gamma):
    """The focal gradient from its definition, dℓ/ds_j = Σ_i y_i ℓ'(p_i) p_i (δ_ij − p_j) with
    ℓ'(p) = γ q^{γ−1} log p − q^γ / p, in 80-digit decimal arithmetic."""
    with decimal.localcontext() as ctx:
        ctx.prec = 80
        e = [Decimal(v).exp() for v in logits]
        p = [x / sum(e) for x in e]
        g = Decimal(gamma)

        def dl(pi):
            q = 1 - pi
            return g * q ** (g - 1) * pi.ln() - q**g / pi if gamma else -1 / pi

        return np.array([
            float(sum(Decimal(yi) * dl(pi) * pi * ((i == j) - p[j])
                      for i, (yi, pi) in enumerate(zip(labels, p, strict=True))))
            for j in range(len(p))
        ])


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 5.0])
def test_focal_gradient_is_exact_at_saturation(gamma):
    """focal's closed form and its autodiff are within a few ulps of the true gradient even where
    p_c is 1 to within 1e-16 and the gradient is ~1e-26; cross_entropy_grad (p − y) rounds to 0
    there, so its relative error is 100%."""
    cases = [
        ([36.2, -22.9], [1.0, 0.0]),  # confidently right: q ≈ 2e-26
        ([0.0, 30.0, 0.0], [0.0, 1.0, 0.0]),
        ([0.0, 30.0, 0.0], [1.0, 0.0, 0.0]),  # confidently wrong
        ([-50.0, 50.0], [1.0, 0.0]),
        ([40.0, 0.0], [0.9, 0.1]),  # a soft label with p_a near 1
        ([20.0, 19.9999, -3.0], [1.0, 0.0, 0.0]),  # near tie at the top
        ([5.0, -5.0, 1.0], [0.2, 0.5, 0.3]),
    ]
    for s, y in cases:
        exact = _focal_grad_exact(s, y, gamma)
        _, auto, closed = _p_autodiff_and_closed("focal")(f64([s]), f64([y]), {"gamma": gamma})
        for got in (closed[0], auto[0]):
            assert np.linalg.norm(got - exact) <= 4e-15 * np.linalg.norm(exact), (s, y, got)
    ce = losses.cross_entropy_grad(f64([[36.2, -22.9]]), f64([[1.0, 0.0]]))[0]
    assert float(ce[0]) == 0.0  # the true value is -2e-26


_Q = 0.25 * math.log(0.75) * 1.5 - 0.0625  # focal, gamma = 2, p_c = 3/4: h = γ q p log p − q²
_H3 = 0.25 * math.log(0.25) - 0.75  # focal, gamma = 1, p_c = 1/4: h = p log p − q
_E = math.e / (1 + math.e)
HAND_PARAM = [
    # name, parameters, logits, labels, loss, gradient
    # (1/2)[2·(0.5 − 2)² + 1]; (−2/2)·[2·(2 − 0.5), 1·(0 + 1)]
    ("rescaled_mse", {"k": 2.0, "M": 2.0}, [0.5, -1.0], [1.0, 0.0], 2.75, [-3.0, -1.0]),
    # soft label: weights 1 + 3y = (1.75, 3.25), targets M·y = (1, 3): (1.75 + 3.25·9) / 2;
    # (−2/2)·(1.75·1, 3.25·3)
    ("rescaled_mse", {"k": 4.0, "M": 4.0}, [0.0, 0.0], [0.25, 0.75], 15.5, [-1.75, -9.75]),
    # log(1 + e) + 1; (p − y) + 2·(1 − y) ⊙ s
    ("squentropy", {}, [0.0, 1.0], [1.0, 0.0], math.log1p(math.e) + 1, [-_E, _E + 2]),
    # t = (3/4, 1/4), p = (1/4, 3/4): −(3/4) log(1/4) − (1/4) log(3/4); p − t
    (
        "label_smoothing_ce",
        {"alpha": 0.5},
        [0.0, math.log(3)],
        [1.0, 0.0],
        -0.75 * math.log(0.25) - 0.25 * math.log(0.75),
        [-0.5, 0.5],
    ),
    # p = (1/4, 3/4), y = e1, q = 1/4: −q² log(3/4); g = (−p_0 h, h q)
    ("focal", {"gamma": 2.0}, [0.0, math.log(3)], [0.0, 1.0], -math.log(0.75) / 16,
     [-_Q / 4, _Q / 4]),
    # p = (1/4, 1/4, 1/2), y = e0, q = 3/4: −(3/4) log(1/4); g = (h q, −p_1 h, −p_2 h)
    ("focal", {"gamma": 1.0}, [0.0, 0.0, math.log(2)], [1.0, 0.0, 0.0],
     -0.75 * math.log(0.25), [0.75 * _H3, -_H3 / 4, -_H3 / 2]),
]


@pytest.mark.parametrize(("name", "params", "logits", "labels", "value", "grad"), HAND_PARAM)
def test_parameterized_hand_computed_values(name, params, logits, labels, value, grad):
    loss, auto, closed = _p_autodiff_and_closed(name)(f64([logits]), f64([labels]), params)
    np.testing.assert_allclose(loss, [value], rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(closed, [grad], rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(auto, [grad], rtol=1e-14, atol=1e-15)


@pytest.mark.slow  # every setting of every parameterized loss
@pytest.mark.parametrize("x64", [True, False], ids=["float64", "float32"])
@pytest.mark.parametrize("case", _settings(), ids=_setting_id)
def test_parameterized_finite_at_extreme_logits(case, x64):
    """Loss, closed form and autodiff finite (never nan) at ±50 and ±500, confidently right and
    wrong, at a tie, in float64 and float32; at (500, −500, −500) every exp(s_j − s_max)
    underflows, so focal meets q = 1 − p_c = 0 exactly, where its gradient is 0 for gamma > 0
    (the limit) and p − y for gamma = 0."""
    name, params = case
    entry = PARAMETERIZED[name]
    with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        for v in (50.0, 500.0):
            s = jnp.array([[v, -v, -v], [v, -v, 0], [-v, v, 0], [v, -v, -v], [v, v, -v]], dtype)
            y = jnp.array([[1, 0, 0], [1, 0, 0], [1, 0, 0], [0.5, 0.25, 0.25], [0, 1, 0]], dtype)
            value, auto, closed = _p_autodiff_and_closed(name)(s, y, params)
            assert value.dtype == auto.dtype == closed.dtype == dtype
            for a in (value, auto, closed):
                assert np.isfinite(np.asarray(a)).all(), (v, a)
            if name == "focal" and v == 500.0:  # row 0: q = 0 exactly
                expect = 0.0 if params["gamma"] > 0 else losses.cross_entropy_grad(s, y)[0]
                np.testing.assert_array_equal(closed[0], expect)
                np.testing.assert_array_equal(auto[0], expect)
        assert np.asarray(entry.loss(s, y, **params)).dtype == dtype  # eager too


@pytest.mark.slow  # every setting of every parameterized loss
@pytest.mark.parametrize("name", P_NAMES)
def test_parameterized_traced_parameters(name):
    """Parameters as arrays: traced under jit, and vmapped over an array of settings (as a sweep
    will run them), they give what eager calls with Python numbers give; an out-of-range traced
    value cannot be checked and gives a number, not an error."""
    entry = PARAMETERIZED[name]
    settings = entry.settings()
    rng = np.random.default_rng(3)
    s = f64(rng.uniform(-5, 5, size=(4, 6)))
    y = f64(_soft_and_one_hot(rng, 4, 6))
    eager = [(entry.loss(s, y, **p), entry.grad(s, y, **p)) for p in settings]
    stacked = {k: f64([p[k] for p in settings]) for k in entry.test_values}

    @jax.jit
    def swept(stacked, s, y):
        def one(params):
            auto = jax.grad(lambda s: jnp.sum(entry.loss(s, y, **params)))(s)
            return entry.loss(s, y, **params), entry.grad(s, y, **params), auto

        if not stacked:  # squentropy: no parameters
            return jax.tree.map(lambda a: a[None], one({}))
        return jax.vmap(one)(stacked)

    values, grads, autos = swept(stacked, s, y)
    assert values.shape == (len(settings), 4) and grads.shape == (len(settings), 4, 6)
    for j, (value, grad) in enumerate(eager):
        np.testing.assert_allclose(values[j], value, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(grads[j], grad, rtol=1e-13, atol=1e-15)
        assert_grads_agree(autos[j], grad)
    for p in settings:  # one at a time, jit with the parameters as arguments
        np.testing.assert_allclose(jax.jit(entry.loss)(s, y, **{k: f64(v) for k, v in p.items()}),
                                   entry.loss(s, y, **p), rtol=1e-13)
    if entry.test_values:
        bad = dict.fromkeys(entry.test_values, -1.0)
        assert jax.jit(entry.loss)(s, y, **bad).shape == (4,)  # not checked: traced


BAD_PARAMS = [
    # function, parameters, message
    ("rescaled_mse", {"k": 0.5}, "k must be a finite number >= 1, got 0.5."),
    ("rescaled_mse", {"M": 0.0}, "M must be a finite number > 0, got 0."),
    ("rescaled_mse", {"M": -1.0}, "M must be a finite number > 0, got -1."),
    ("rescaled_mse", {"k": math.inf}, "k must be a finite number >= 1, got inf."),
    ("label_smoothing_ce", {"alpha": 1.0}, "alpha must be a finite number in [0, 1), got 1."),
    ("label_smoothing_ce", {"alpha": -0.1}, "alpha must be a finite number in [0, 1), got -0.1."),
    ("focal", {"gamma": -0.5}, "gamma must be a finite number >= 0, got -0.5."),
    ("focal", {"gamma": math.nan}, "gamma must be a finite number >= 0, got nan."),
]


@pytest.mark.parametrize(("name", "params", "message"), BAD_PARAMS)
def test_parameter_range_errors(name, params, message):
    s = f64([[0.1, 0.2, 0.3]])
    y = f64([[1.0, 0.0, 0.0]])
    entry = PARAMETERIZED[name]
    for fn in (entry.loss, entry.grad):
        for given_as in (float, f64):  # a Python number and a concrete array
            with pytest.raises(ValueError) as e:
                fn(s, y, **{k: given_as(v) for k, v in params.items()})
            assert _one_line(e) == f"{fn.__name__}: {message}"
        (param,) = params
        with pytest.raises(ValueError) as e:
            fn(s, y, **{param: f64([1.0, 2.0])})
        assert _one_line(e) == f"{fn.__name__}: {param} must be a scalar, got shape (2,)."


def test_squentropy_needs_two_classes():
    for fn in (losses.squentropy, losses.squentropy_grad):
        with pytest.raises(ValueError) as e:
            fn(f64([[0.3]]), f64([[1.0]]))
        assert _one_line(e) == f"{fn.__name__}: needs at least 2 classes, got K = 1."


def test_parameterized_registry():
    assert list(PARAMETERIZED) == ["rescaled_mse", "squentropy", "label_smoothing_ce", "focal"]
    assert not set(PARAMETERIZED) & set(LOSSES)  # swept only with their parameters
    for name, entry in PARAMETERIZED.items():
        assert entry.loss.__name__ == name and entry.grad.__name__ == f"{name}_grad"
        assert entry.loss is getattr(losses, name)
    focal = PARAMETERIZED["focal"]
    assert [focal.label(p) for p in focal.settings()] == [
        "focal(gamma=0)", "focal(gamma=0.5)", "focal(gamma=1)", "focal(gamma=2)",
        "focal(gamma=5)",
    ]
    rescaled = PARAMETERIZED["rescaled_mse"]
    assert len(rescaled.settings()) == 6
    assert rescaled.label(rescaled.settings()[-1]) == "rescaled_mse(k=15,M=15)"
    assert PARAMETERIZED["squentropy"].settings() == [{}]
    assert PARAMETERIZED["squentropy"].label({}) == "squentropy"


# ---------------------------------------------------------------------------------------------
# input validation: one clear line each


def _one_line(excinfo):
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


ALL_FNS = [
    *LOSSES.items(),
    *((f"{n}_grad", g) for n, g in GRADIENTS.items()),
    *((n, e.loss) for n, e in PARAMETERIZED.items()),  # at their default parameters
    *((f"{n}_grad", e.grad) for n, e in PARAMETERIZED.items()),
]


@pytest.mark.parametrize(("name", "fn"), ALL_FNS)
def test_validation_errors(name, fn):
    s = f64([[0.1, 0.2, 0.3], [0.0, 1.0, -1.0]])
    y = f64([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    with pytest.raises(ValueError, match=r"logits shape \(2, 3\) and labels shape \(2, 4\) differ"):
        fn(s, jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="Labels look like integer class ids") as e:
        fn(s, jnp.array([0, 2]))
    assert _one_line(e).startswith(f"{name}: ")
    with pytest.raises(ValueError, match="logits must be a floating-point array, got dtype int"):
        fn(jnp.array([[1, 2, 3]]), y[:1])
    with pytest.raises(ValueError, match="logits must have a class axis, got a scalar"):
        fn(f64(1.0), f64(1.0))
    with pytest.raises(ValueError, match=r"logits shape \(2, 3\) and labels shape \(2, 4\) differ"):
        jax.jit(fn)(s, jnp.zeros((2, 4)))  # the same check at trace time
    assert fn(s, y).shape in {(2,), (2, 3)}  # and valid input passes


@pytest.mark.parametrize(("name", "fn"), ALL_FNS)
def test_label_values_are_not_checked(name, fn):
    # Reading them would copy the labels to the host on every eager call (and is impossible
    # under jit): rows that are not probability vectors give a number, eager as under jit.
    s = f64([[0.1, 0.2, 0.3], [0.0, 1.0, -1.0], [0.5, 0.5, 0.5]])
    y = f64([[0.5, 0.6, 0.0], [1.5, -0.5, 0.0], [math.nan, 1.0, 0.0]])
    eager = np.asarray(fn(s, y))
    np.testing.assert_allclose(eager, jax.jit(fn)(s, y), rtol=1e-12, equal_nan=True)
    assert np.isfinite(eager[:2]).all() and np.isnan(eager[2]).any()


@pytest.mark.skipif(
    jax.default_backend() == "cpu",
    reason="on a CPU the arrays are in host memory already: there is no transfer to guard",
)
@pytest.mark.parametrize(("name", "fn"), ALL_FNS)
def test_eager_call_does_not_copy_labels_to_the_host(name, fn):
    s = f64([[0.1, 0.2, 0.3], [0.0, 1.0, -1.0]])
    y = f64([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    with jax.transfer_guard_device_to_host("disallow"):
        out = fn(s, y)
    assert out.shape in {(2,), (2, 3)}


def test_integer_label_errors():
    with pytest.raises(ValueError, match=r"class ids must lie in \[0, 3\), got values from 0 to 3"):
        one_hot(jnp.array([0, 3]), 3)
    with pytest.raises(ValueError, match="got values from -1 to 1"):
        one_hot(jnp.array([-1, 1]), 3)
    with pytest.raises(ValueError, match="class ids must be integers, got dtype float"):
        one_hot(jnp.array([0.0, 1.0]), 3)
    ce = with_integer_labels(losses.cross_entropy)
    with pytest.raises(ValueError, match=r"one_hot: class ids must lie in \[0, 3\)") as e:
        ce(f64([[0.0, 0.0, 0.0]]), jnp.array([5]))
    _one_line(e)
    np.testing.assert_allclose(ce(f64([[0.0, 0.0, 0.0]]), jnp.array([2])), [math.log(3)])
    assert ce.__name__ == "cross_entropy_with_integer_labels"


def test_resolve_loss():
    assert resolve_loss("mse") is losses.mse
    # a module:function comes back wrapped (a sys.exit in it becomes one line naming it)
    assert resolve_loss("lossjax.losses:exp_mse").__wrapped__ is losses.exp_mse
    cases = [
        ("hinge", "unknown loss 'hinge'; choose one of cross_entropy, mse, softmax_mse, exp_mse"),
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        ("lossjax.losses:nope", "module 'lossjax.losses' has no attribute 'nope'"),
        ("lossjax.losses:LOSSES", "'LOSSES' is a dict, not a function"),
        (":f", "must be 'module:function'"),
        ("lossjax.losses:", "must be 'module:function'"),
    ]
    for spec, message in cases:
        with pytest.raises(ValueError) as e:
            resolve_loss(spec)
        assert message in _one_line(e)
        # raised "from None": printed alone, without a chained traceback
        assert e.value.__cause__ is None
        assert e.value.__context__ is None or e.value.__suppress_context__


def test_resolve_loss_broken_user_module(tmp_path, monkeypatch):
    (tmp_path / "broken_loss_mod.py").write_text("def f(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError) as e:
        resolve_loss("broken_loss_mod:f")
    assert "importing 'broken_loss_mod' failed with SyntaxError" in _one_line(e)


def test_registries_agree():
    assert list(LOSSES) == list(GRADIENTS) == ["cross_entropy", "mse", "softmax_mse", "exp_mse"]
    assert losses.get_loss("softmax_mse") is losses.softmax_mse


# ---------------------------------------------------------------------------------------------
# import lightness


def test_import_is_light():
    heavy = [
        "tensorflow_datasets",
        "tensorflow",
        "matplotlib",
        "pandas",
        "lossjax.engine",
        "lossjax.sweep",
        "lossjax.data",
        "lossjax.plots",
    ]
    code = (
        "import sys\nimport lossjax\nfrom lossjax import losses\n"
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "", f"importing lossjax loaded: {out.stdout.strip()}"
