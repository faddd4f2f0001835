"""Hostile values, numerics and environment: numbers the engine's precision would change,
search stages past what the config accepts, and environments that cannot run a sweep; each
refused in one line naming the key or variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from lossjax.config import parse_config
from lossjax.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
F32 = "which float32 (the precision the engine trains with)"


def error(overrides=(), **raw) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config({"name": "t", **raw}, overrides)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# --------------------------------------------------------------------------------------------
# Numbers are judged in the precision the engine holds them in


@pytest.mark.parametrize("losses", [[{"name": "label_smoothing_ce", "alpha": 0.99999999}],
                                    ["label_smoothing_ce(alpha=0.99999999)"]])
def test_a_parameter_float32_rounds_out_of_its_range_is_refused(losses):
    msg = error(losses=losses)
    assert msg.startswith("losses[0]") and f"0.99999999, {F32} holds as 1.0; expected a " \
        "number in [0, 1) in float32" in msg


def test_rates_equal_in_float32_are_duplicates():
    assert error(optimizer={"learning_rate": [0.1, 0.10000000001]}) == (
        f"optimizer.learning_rate[1]: got 0.10000000001, {F32} holds as 0.1, a duplicate of "
        "optimizer.learning_rate[0]; each value may appear once")
    assert error(optimizer={"weight_decay": [0.001, 0.00100000000001]}).startswith(
        "optimizer.weight_decay[1]: got 0.00100000000001, which float32")


def test_losses_equal_in_float32_are_duplicates():
    assert error(losses=["focal(gamma=2)", "focal(gamma=2.0000000001)"]) == (
        f"losses[1]: got 'focal(gamma=2.0000000001)', {F32} holds as 'focal(gamma=2)', a "
        "duplicate of losses[0]; each loss may appear once")
    assert error(losses=[{"name": "focal", "gamma": [2, 2.0000000001]}]).startswith(
        f"losses[0].gamma[1]: got 2.0000000001, {F32} holds as 2, a duplicate")
    # float64 holds them apart: both train
    c = parse_config({"name": "t", "model": {"dtype": "float64"},
                      "losses": ["focal(gamma=2)", "focal(gamma=2.0000000001)"]})
    assert len(c.losses) == 2


@pytest.mark.parametrize(("label", "problem"), [
    ("focal(gamma=1e39)", "gamma of 'focal(gamma=1e+39)': got 1e+39, {} rounds to inf"),
    ("focal(gamma=1e-50)", "gamma of 'focal(gamma=1e-50)': got 1e-50, {} rounds to 0"),
    ("rescaled_mse(k=1,M=1e-45)", "M of 'rescaled_mse(k=1,M=1e-45)': got 1e-45, {} keeps only "
                                  "as a subnormal"),
    ("focal(gamma=1e-50)-no_push_up", "gamma of 'focal(gamma=1e-50)-no_push_up': got 1e-50"),
])
def test_a_label_gets_the_float32_checks_of_a_mapping(label, problem):
    assert error(losses=["mse", label]).startswith(f"losses[1]: {problem.format(F32)}")


@pytest.mark.parametrize(("optimizer", "want"), [
    ({"name": "sgd", "args": {"momentum": 1.5}},
     "optimizer.args.momentum: got 1.5, expected a number in [0, 1)"),
    ({"name": ["sgd", "adam"], "args": {"sgd": {"momentum": 1.5}}},
     "optimizer.args.sgd.momentum: got 1.5, expected a number in [0, 1)"),
    ({"name": ["momentum", "adam"], "args": {"adam": {"b2": -5}}},
     "optimizer.args.adam.b2: got -5, expected a number in [0, 1)"),
    ({"name": "adam", "args": {"eps": -1e-8}},
     "optimizer.args.eps: got -1e-08, expected a number >= 0"),
    ({"name": "adam", "args": {"b1": 0.99999999}},
     f"optimizer.args.b1: got 0.99999999, {F32} holds as 1.0; expected a number in [0, 1) in "
     "float32"),
])
def test_optimizer_args_are_held_to_the_top_level_rules(optimizer, want):
    assert error(optimizer=optimizer) == want


def test_optimizer_args_in_range_and_optax_defaults_pass():
    c = parse_config({"name": "t", "optimizer": {"name": ["sgd", "adam"], "args": {
        "sgd": {"momentum": None, "nesterov": True}, "adam": {"b1": 0.8, "b2": 0.99}}}})
    assert c.optimizer.args["adam"]["b2"] == 0.99


# --------------------------------------------------------------------------------------------
# --set on learning rates


def test_a_rate_for_a_loss_the_sweep_lacks_is_refused_after_narrowing():
    from lossjax.config import load_config

    for sets in (["losses=[mse,cross_entropy]", "optimizer.learning_rate.msee=[0.3]"],
                 ["optimizer.learning_rate.msee=[0.3]", "losses=[mse,cross_entropy]"]):
        with pytest.raises(ConfigError) as info:
            load_config(CONFIGS / "digits.yaml", sets)
        assert str(info.value).startswith("optimizer.learning_rate.msee: no such loss in losses "
                                          "(mse, cross_entropy)")
        assert str(info.value).endswith("did you mean 'mse'?")
    c = load_config(CONFIGS / "digits.yaml", ["losses=[mse]", "optimizer.learning_rate.mse=[0.3]"])
    assert c.optimizer.learning_rate == {"mse": (0.3,)}


def test_one_optimizers_rates_on_a_per_loss_mapping():
    from lossjax.config import load_config

    c = load_config(CONFIGS / "digits.yaml", ["optimizer.name=[momentum, adam]",
                                              "optimizer.learning_rate.adam=[1e-3]",
                                              "optimizer.learning_rate.adam.mse=[1e-2]"])
    rates = c.optimizer.learning_rate
    assert rates["momentum"]["mse"] == (0.03, 0.1, 0.3, 1.0, 3.0)  # the file's mapping
    assert rates["adam"]["cross_entropy"] == (1e-3,) and rates["adam"]["mse"] == (1e-2,)
    c = load_config(CONFIGS / "digits.yaml", ["optimizer.name=[momentum, adam]",
                                              "optimizer.learning_rate.adam.mse=[1e-2]"])
    assert c.optimizer.learning_rate["adam"]["mse"] == (1e-2,)
    assert c.optimizer.learning_rate["adam"]["focal(gamma=2)"] == (0.03, 0.1, 0.3, 1.0, 3.0)
