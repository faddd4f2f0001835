"""The loss library: autodiff against the closed forms in float64, finite differences, optax,
hand-computed values, jit/vmap, the gradient-sign facts, exp_mse's float32 overflow, input
validation (shapes and dtypes, never values), reference resolution, and import lightness.

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
# input validation: one clear line each


def _one_line(excinfo):
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


ALL_FNS = [*LOSSES.items(), *((f"{n}_grad", g) for n, g in GRADIENTS.items())]


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
