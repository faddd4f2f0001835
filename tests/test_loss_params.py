"""Parameterized losses in a sweep: every setting of one loss trains in one compiled program
(its parameters an array per member), its rows carry the loss's label, and the settings that
are another loss by definition train like it."""

import numpy as np
import pytest
from conftest import run_counting_groups

from lossjax import engine, resolve, sweep


def _data(n=240, d=20, k=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, d), np.float32)
    y = rng.integers(0, k, n)
    return x, y, x[:50], y[:50], x[50:110], y[50:110]


SETTINGS = engine.TrainSettings(hidden=(16,), num_classes=5, activation="relu",
                                init="lecun_normal", dtype="float32", optimizer="momentum",
                                momentum=0.9, schedule="constant", batch_size=32, epochs=2,
                                block_size=2)


@pytest.mark.slow  # a 2-epoch sweep per family, 7 s and more each
@pytest.mark.parametrize("family", ["focal", "rescaled_mse-no_push_up"])
def test_every_setting_of_a_loss_trains_in_one_program(family):
    labels = {"focal": ["focal(gamma=0)", "focal(gamma=1)", "focal(gamma=2)", "focal(gamma=5)"],
              "rescaled_mse-no_push_up": ["rescaled_mse(k=1,M=1)-no_push_up",
                                          "rescaled_mse(k=5,M=15)-no_push_up",
                                          "rescaled_mse(k=15,M=1)-no_push_up"]}[family]
    members = [engine.Member(i, label, 0.1, 0.0, 1.0, 0, (16,), resolve.loss_params(label))
               for i, label in enumerate(labels)]
    names, fns = sweep.group_losses(members, {})
    assert names == [family]
    engine.clear_programs()  # this group builds, and counts, its own programs
    g = engine.Group(SETTINGS, members, names, fns, _data(), engine.make_mesh())
    state = g.init_state()
    out = []
    for e in range(2):
        state, m = g.train_epoch(state, e)
        out.append(m["train_loss"])
        g.evaluate(state)
    # init, epoch, and evaluation per split shape: one each, whatever the settings
    assert g.compiled_counts() == {"init": 1, "epoch": 1, "eval": 2}
    assert len(set(out[-1].tolist())) == len(labels)  # each member its own loss
    assert np.isfinite(out[-1]).all()


def test_built_in_groups_get_no_parameter_array():
    # the built-in program keeps exactly its inputs, so its members keep their bits
    members = sweep.expand_members(sweep.load({"name": "t", "losses": ["mse", "focal"],
                                               "seeds": [0]}))
    groups = sweep.group_members(members)
    assert [[m.loss for m in g][0] for g in groups] == ["mse", "focal(gamma=2)"]
    assert all(m.loss_params == () for m in groups[0])
    assert groups[1][0].loss_params == (2.0,)


# ---- a digits sweep --------------------------------------------------------------------------

SWEEP = {
    "name": "params",
    "seeds": [0, 1],
    "epochs": 2,
    "batch_size": 128,
    "block_size": 1,
    "losses": ["cross_entropy", "mse", {"name": "rescaled_mse", "k": [1, 5], "M": [1]},
               {"name": "focal", "gamma": [0, 2]}],
    "dataset": {"name": "digits"},
    "model": {"hidden": [[8]]},
    "optimizer": {"learning_rate": [0.03, 0.1]},
    "eval": {"target_accuracy": 0.5},
}
LABELS = ["cross_entropy", "mse", "rescaled_mse(k=1,M=1)", "rescaled_mse(k=5,M=1)",
          "focal(gamma=0)", "focal(gamma=2)"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The sweep, with every Group it built."""
    engine.clear_programs()  # each group builds, and counts, its own programs
    return run_counting_groups(SWEEP, tmp_path_factory.mktemp("runs"))


@pytest.mark.slow
def test_one_compile_per_program(swept):
    _, built = swept
    # the built-in program, rescaled_mse's and focal's: each compiled once, for all its members
    assert [g.members[0].loss for g in built] == ["cross_entropy", "rescaled_mse(k=1,M=1)",
                                                  "focal(gamma=0)"]
    # init, the epoch, evaluation of val and of test, and the last epoch's temperature fit
    assert [g.compiled_counts() for g in built] == [
        {"init": 1, "epoch": 1, "eval": 2, "final": 1}] * 3
    assert [len(g.members) for g in built] == [8, 8, 8]


@pytest.mark.slow
def test_labels_are_the_loss_column(swept):
    res, _ = swept
    assert res.summary["loss"].tolist() == LABELS
    assert sorted(set(res.epochs["loss"])) == sorted(LABELS)
    assert res.config["losses"] == LABELS
    assert set(res.config["optimizer"]["learning_rate"]) == set(LABELS)


def _rows(res, loss):
    cols = ["train_loss", "train_acc", "val_acc", "val_ce", "test_acc", "test_ce", "wrong_frac",
            "grad_norm"]
    rows = res.epochs[res.epochs["loss"] == loss]
    return rows.sort_values(["learning_rate", "seed", "epoch"])[cols].to_numpy(float)


@pytest.mark.slow
def test_special_settings_train_like_the_loss_they_are(swept):
    res, _ = swept
    # rescaled_mse(k=1,M=1) is mse by definition; in its own program XLA may fuse the class
    # sum differently, so equality is asked to float32 tolerance (on this CPU: bitwise)
    np.testing.assert_allclose(_rows(res, "rescaled_mse(k=1,M=1)"), _rows(res, "mse"),
                               rtol=1e-5, atol=1e-6)
    # focal(gamma=0) is cross_entropy to rounding (measured: 2e-7 in val_ce after 2 epochs)
    np.testing.assert_allclose(_rows(res, "focal(gamma=0)"), _rows(res, "cross_entropy"),
                               rtol=1e-4, atol=1e-5)
    assert not np.allclose(_rows(res, "focal(gamma=2)"), _rows(res, "cross_entropy"))


# ---- variants of them, styles ----------------------------------------------------------------


def test_a_variant_of_a_parameterized_loss_has_its_closed_form():
    import jax
    import jax.numpy as jnp

    from lossjax import interventions, losses

    name = "rescaled_mse(k=5,M=15)-no_push_up"
    v = interventions.Variant.parse(name)
    assert (str(v), v.base, v.base_name, v.params) == (name, "rescaled_mse(k=5,M=15)",
                                                      "rescaled_mse", {"k": 5.0, "M": 15.0})
    rng = np.random.default_rng(0)
    s = jnp.asarray(rng.normal(size=(8, 5)) * 3, jnp.float32)
    y = jax.nn.one_hot(np.arange(8) % 5, 5)
    auto = jax.grad(lambda s: interventions.variant(name)(s, y).sum())(s)
    np.testing.assert_allclose(auto, interventions.closed_form(name)(s, y), rtol=1e-6)
    base = losses.rescaled_mse_grad(s, y, k=5.0, M=15.0)
    assert (base < 0)[y == 0].any() and not (auto < 0)[y == 0].any()  # the pushes are gone
    # the family (parameters traced) computes what the fixed setting does
    fam = resolve.family_loss("rescaled_mse-no_push_up")
    traced = jax.jit(jax.grad(lambda s, p: fam(s, y, p).sum()))(s, jnp.asarray([5.0, 15.0]))
    np.testing.assert_allclose(traced, auto, rtol=1e-6)


def test_a_minus_sign_in_a_parameter_is_no_variant():
    from lossjax import interventions

    assert not interventions.is_variant("label_smoothing_ce(alpha=1e-05)")
    assert resolve.canonical("label_smoothing_ce(alpha=0.00001)") == (
        "label_smoothing_ce(alpha=1e-05)")


def test_each_setting_has_its_own_style_in_its_family_colour():
    from lossjax import plots

    names = ["mse", "rescaled_mse(k=15,M=1)", "rescaled_mse(k=5,M=1)", "rescaled_mse(k=1,M=1)",
             "focal(gamma=1)", "focal(gamma=2)", "my_losses:focal"]
    styles = plots.loss_styles(names)
    assert len(set(styles.values())) == len(names)
    assert len({styles[n][0] for n in names if n.startswith("rescaled_mse")}) == 1
    assert styles["focal(gamma=1)"][0] == styles["focal(gamma=2)"][0] != styles["mse"][0]
    assert list(styles)[1:4] == ["focal(gamma=1)", "focal(gamma=2)", "my_losses:focal"]
    assert list(styles)[4:] == ["rescaled_mse(k=1,M=1)", "rescaled_mse(k=5,M=1)",
                                "rescaled_mse(k=15,M=1)"]  # numbers by value
