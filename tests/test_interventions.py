"""Gradient interventions (lossjax.interventions): the value is the base loss's, the gradient is
the edit's, checked against explicit closed forms in float64; names work in configs; and a
variant's member is paired with its base's (same initial weights, same batches)."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from lossjax import cli, interventions, losses, resolve
from lossjax.config import parse_config
from lossjax.errors import ConfigError

K = 10


@pytest.fixture
def batch():
    with jax.enable_x64(True):
        s = jax.random.normal(jax.random.key(1), (64, K), jnp.float64) * 3
        y = jax.nn.one_hot(jnp.arange(64) % K, K, dtype=jnp.float64)
        yield s, y


def _grad(name, s, y):
    f = resolve.resolve_loss(name)
    return jax.grad(lambda z: jnp.sum(f(z, y)))(s)


def test_mse_no_push_up(batch):
    s, y = batch
    expected = (2 / K) * jnp.where(y == 0, jnp.maximum(s, 0), s - 1)
    np.testing.assert_allclose(_grad("mse-no_push_up", s, y), expected, rtol=1e-14)
    frac, _ = losses.gradient_sign_stats(_grad("mse-no_push_up", s, y), y)
    assert float(frac) == 0 < float(losses.gradient_sign_stats(_grad("mse", s, y), y)[0])


@pytest.mark.parametrize(("pct", "flipped"), [(50, 5), (100, 9), (10, 1), (0, 0)])
def test_cross_entropy_push_up(batch, pct, flipped):
    s, y = batch
    p = jax.nn.softmax(s)
    c = jnp.argmax(y, -1)[:, None]
    offset = (jnp.arange(K) - c) % K
    expected = jnp.where((offset >= 1) & (offset <= flipped), -p, p - y)
    g = _grad(f"cross_entropy-push_up_{pct}", s, y)
    np.testing.assert_allclose(g, expected, rtol=1e-13, atol=1e-300)
    frac, _ = losses.gradient_sign_stats(g, y)
    assert float(frac) == pytest.approx(flipped / (K - 1))


@pytest.mark.parametrize("scale", [0.1, 0.3])
def test_a_graded_push_up_scales_the_flipped_components(batch, scale):
    s, y = batch
    p = jax.nn.softmax(s)
    offset = (jnp.arange(K) - jnp.argmax(y, -1)[:, None]) % K
    expected = jnp.where(offset == 1, -scale * p, p - y)  # 11% of 9 wrong classes: one
    g = _grad(f"cross_entropy-push_up_11x{scale}", s, y)
    np.testing.assert_allclose(g, expected, rtol=1e-13, atol=1e-300)
    f = interventions.push_up(losses.cross_entropy, 0.11, scale=scale)
    np.testing.assert_array_equal(jax.grad(lambda z: jnp.sum(f(z, y)))(s), g)


def test_a_graded_push_up_name_is_canonical():
    v = interventions.Variant.parse("cross_entropy-push_up_11x0.30-balanced")
    assert (v.percent, v.scale, v.balanced) == (11, 0.3, True)
    assert str(v) == "cross_entropy-push_up_11x0.3-balanced"
    assert resolve.canonical("cross_entropy-push_up_11x0.30") == "cross_entropy-push_up_11x0.3"
    assert interventions.Variant.parse("cross_entropy-push_up_11").scale == 1.0


def test_exp_mse_true_pull(batch):
    s, y = batch
    e = jnp.exp(s)
    expected = (2 / K) * jnp.where(y == 1, (e - 1) * jnp.maximum(e, 1), e * e)
    np.testing.assert_allclose(_grad("exp_mse-true_pull", s, y), expected, rtol=1e-14)
    # Below zero the pull no longer vanishes: at s_c = -10 it is about 2/K, not 2/K * e^-10.
    one = jnp.zeros((1, K), jnp.float64).at[0, 0].set(-10.0)
    g = _grad("exp_mse-true_pull", one, jax.nn.one_hot(jnp.array([0]), K, dtype=jnp.float64))
    assert float(g[0, 0]) == pytest.approx(-(2 / K) * (1 - np.exp(-10)))


@pytest.mark.parametrize("name", ["mse-no_push_up-norm_matched",
                                  "cross_entropy-push_up_50-norm_matched"])
def test_norm_matched_keeps_the_size_and_the_edited_direction(batch, name):
    s, y = batch
    base, edited = name.split("-")[0], name.rsplit("-", 1)[0]
    g, e, m = (_grad(n, s, y) for n in (base, edited, name))
    np.testing.assert_allclose(jnp.linalg.norm(m, axis=-1), jnp.linalg.norm(g, axis=-1),
                               rtol=1e-13)
    cos = jnp.sum(m * e, -1) / (jnp.linalg.norm(m, axis=-1) * jnp.linalg.norm(e, axis=-1))
    np.testing.assert_allclose(cos, 1.0, rtol=1e-13)


def test_softmax_mse_no_push_up_balanced(batch):
    s, y = batch
    g = _grad("softmax_mse", s, y)
    pushes = jnp.where((y == 0) & (g < 0), g, 0.0)
    expected = g - pushes + y * jnp.sum(pushes, -1, keepdims=True)
    b = _grad("softmax_mse-no_push_up-balanced", s, y)
    np.testing.assert_allclose(b, expected, rtol=1e-13, atol=1e-300)
    # The unbalanced edit leaves a positive sum where it removed pushes; the balanced one sums
    # to 0 like the base, and still pushes no wrong class up.
    unbalanced = jnp.sum(_grad("softmax_mse-no_push_up", s, y), -1)
    assert float(jnp.min(unbalanced)) > -1e-15 and float(jnp.max(unbalanced)) > 1e-3
    np.testing.assert_allclose(jnp.sum(b, -1), 0.0, atol=1e-15)
    assert float(losses.gradient_sign_stats(b, y)[0]) == 0


def test_cross_entropy_push_up_balanced(batch):
    s, y = batch
    p = jax.nn.softmax(s)
    c = jnp.argmax(y, -1)[:, None]
    flipped = ((jnp.arange(K) - c) % K >= 1) & ((jnp.arange(K) - c) % K <= 5)
    expected = jnp.where(flipped, -p, p - y) + y * 2 * jnp.sum(jnp.where(flipped, p, 0), -1,
                                                               keepdims=True)
    g = _grad("cross_entropy-push_up_50-balanced", s, y)
    np.testing.assert_allclose(g, expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(jnp.sum(g, -1), 0.0, atol=1e-14)


@pytest.mark.parametrize("name", interventions.STANDARD)
def test_value_is_the_base_loss_and_closed_form_matches_autodiff(batch, name):
    s, y = batch
    base = losses.LOSSES[name.split("-")[0]]
    np.testing.assert_array_equal(resolve.resolve_loss(name)(s, y), base(s, y))
    np.testing.assert_allclose(_grad(name, s, y), interventions.closed_form(name)(s, y),
                               rtol=1e-12, atol=1e-15)


def test_usable_in_code_under_jit_and_vmap(batch):
    s, y = batch
    f = interventions.no_push_up(losses.mse)
    g = jax.jit(jax.vmap(jax.grad(lambda z, t: f(z[None], t[None])[0])))(s, y)
    np.testing.assert_allclose(g, _grad("mse-no_push_up", s, y), rtol=1e-14)


@pytest.mark.parametrize(("make", "name"), [
    (lambda: interventions.no_push_up(losses.softmax_mse, balanced=True),
     "softmax_mse-no_push_up-balanced"),
    (lambda: interventions.no_push_up(losses.mse, norm_matched=True),
     "mse-no_push_up-norm_matched"),
    (lambda: interventions.push_up(losses.cross_entropy, 0.5, balanced=True, norm_matched=True),
     "cross_entropy-push_up_50-balanced-norm_matched"),
    (lambda: interventions.true_pull(losses.exp_mse, norm_matched=True),
     "exp_mse-true_pull-norm_matched"),
])
def test_keywords_in_code_are_the_name_suffixes(batch, make, name):
    s, y = batch
    g = jax.grad(lambda z: jnp.sum(make()(z, y)))(s)
    np.testing.assert_array_equal(g, _grad(name, s, y))
    assert not np.array_equal(g, _grad(name.split("-")[0], s, y))


def test_package_level_names(batch):
    import lossjax

    s, y = batch
    g = jax.grad(lambda z: jnp.sum(lossjax.no_push_up(lossjax.mse)(z, y)))(s)
    np.testing.assert_array_equal(g, _grad("mse-no_push_up", s, y))
    assert all(getattr(lossjax, name) is not None for name in lossjax.__all__)


@pytest.mark.parametrize(("name", "needle"), [
    ("mse-no_push", "edit one of"),
    ("hinge-no_push_up", "base one of"),
    ("cross_entropy-push_up_150", "P in 0..100"),
    ("cross_entropy-push_up_11x1", r"A in \(0, 1\)"),
    ("cross_entropy-push_up_11x0", r"A in \(0, 1\)"),
    ("cross_entropy-push_up_11x.1.", r"A in \(0, 1\)"),
    ("mse-true_pull", "exp_mse-true_pull"),
])
def test_a_bad_variant_name_is_one_line(name, needle):
    raw = {"name": "t", "losses": [name], "dataset": {"name": "digits"},
           "optimizer": {"learning_rate": {name: [0.1]}}}
    with pytest.raises(ConfigError, match=needle) as e:
        parse_config(raw)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", [*interventions.STANDARD, "cross_entropy-push_up_050"])
def test_a_variant_name_comes_apart_and_back(name):
    v = interventions.Variant.parse(name)
    assert str(v) == name and v.base == name.split("-")[0]
    assert v.percent == (50 if "push_up" in name and "no_push_up" not in name else None)


def test_variant_fields():
    v = interventions.Variant.parse("softmax_mse-no_push_up-balanced-norm_matched")
    assert v == interventions.Variant("softmax_mse", "no_push_up", True, True)
    assert interventions.Variant.parse("exp_mse-true_pull") == interventions.Variant(
        "exp_mse", "true_pull")


@pytest.mark.slow
def test_a_variant_trains_from_its_bases_weights_on_its_bases_batches(tmp_path):
    # push_up_0 edits nothing: had the variant's member other initial weights or other batches
    # than its base's, their curves would differ far beyond float32 rounding (as two seeds do).
    cfg = tmp_path / "paired.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump({
        "name": "paired", "seeds": [0, 1], "epochs": 2, "batch_size": 64, "block_size": 2,
        "losses": ["cross_entropy", "cross_entropy-push_up_0", "cross_entropy-push_up_50"],
        "dataset": {"name": "digits"}, "model": {"hidden": [[16]]},
        "optimizer": {"learning_rate": {"cross_entropy": [0.1], "cross_entropy-push_up_0": [0.1],
                                        "cross_entropy-push_up_50": [0.1]}},
        "output": {"dir": str(tmp_path / "runs")}}))
    assert cli.main(["sweep", str(cfg), "--quiet"]) == 0
    t = pd.read_csv(tmp_path / "runs" / "paired" / "epochs.csv")
    cols = ["train_loss", "val_acc", "test_acc", "grad_norm"]

    def rows(loss, seed):
        return t[(t.loss == loss) & (t.seed == seed)].sort_values("epoch")[cols].to_numpy()

    for seed in (0, 1):
        np.testing.assert_allclose(rows("cross_entropy-push_up_0", seed),
                                   rows("cross_entropy", seed), rtol=1e-5)
    assert not np.allclose(rows("cross_entropy", 0), rows("cross_entropy", 1), rtol=1e-3)
    flipped = t[t.loss == "cross_entropy-push_up_50"]["wrong_frac"]
    # (below 5/9: a flipped p_j that underflows to 0 pushes nothing)
    assert (flipped > 0).all() and (t[t.loss == "cross_entropy"]["wrong_frac"] == 0).all()
