"""Config loading and validation: defaults, every error class with its one-line message,
did-you-mean, --set overrides, the per-loss learning-rate mapping, and the round trip."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from lossjax.config import (
    SWEPT,
    Config,
    FrozenDict,
    check_batch_size,
    config_to_dict,
    learning_rates,
    load_config,
    parse_config,
)
from lossjax.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def cfg(overrides=(), **raw):
    """parse_config on {'name': 't', **raw}."""
    return parse_config({"name": "t", **raw}, overrides)


def error(overrides=(), **raw) -> str:
    """The ConfigError message for {'name': 't', **raw}; asserts it is one line."""
    with pytest.raises(ConfigError) as info:
        cfg(overrides, **raw)
    message = str(info.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------------------------
# Defaults and the resolved form


def test_defaults():
    c = cfg()
    assert c == Config(name="t")
    assert c.seeds == (0, 1, 2)
    assert (c.epochs, c.batch_size, c.block_size) == (20, 64, "auto")
    assert c.losses == ("cross_entropy", "mse", "softmax_mse", "exp_mse")
    assert c.dataset.name == "digits" and c.dataset.data_dir is None
    assert c.dataset.val_size == 0.1 and c.dataset.split_seed == 0
    assert c.dataset.standardize is False
    assert c.model.hidden == ((64, 64),)
    assert (c.model.activation, c.model.init, c.model.dtype) == ("relu", "lecun_normal", "float32")
    assert c.model.init_scale == (1.0,)
    assert (c.optimizer.name, c.optimizer.momentum, c.optimizer.schedule) == (
        "momentum",
        0.9,
        "constant",
    )
    assert c.optimizer.learning_rate == {loss: (0.01, 0.1) for loss in c.losses}
    assert c.optimizer.weight_decay == (0.0,)
    assert c.eval.splits == ("train", "val", "test")
    assert (c.eval.every, c.eval.target_accuracy) == (1, 0.95)
    assert c.output.dir == "runs"  # never results/, the committed reference runs


def test_empty_sections_take_defaults():
    assert cfg(dataset=None, model={}, optimizer=None, eval={}, output=None) == cfg()


def test_block_size():
    assert cfg().block_size == "auto"
    assert cfg(block_size=1).block_size == 1
    assert cfg(["block_size=32"]).block_size == 32
    tail = "expected an integer >= 1 or 'auto'"
    assert error(block_size=0) == f"block_size: got 0, {tail}"
    assert error(block_size=True) == f"block_size: got true (a boolean), {tail}"
    assert error(block_size=2.5) == f"block_size: got 2.5, {tail}"
    assert error(block_size="Auto") == f"block_size: got 'Auto', {tail}"


def test_config_is_frozen_and_hashable():
    c = cfg()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.epochs = 3  # type: ignore[misc]
    with pytest.raises(TypeError, match="read-only"):
        c.optimizer.learning_rate["mse"] = (1.0,)
    with pytest.raises(TypeError):
        c.optimizer.learning_rate.update(mse=(1.0,))
    assert hash(c) == hash(cfg())
    assert len({c, cfg(), cfg(epochs=3)}) == 2


def test_frozen_dict_copies_pickles_and_dumps():
    c = cfg()
    for clone in (copy.deepcopy(c), pickle.loads(pickle.dumps(c)), dataclasses.replace(c)):
        assert clone == c
        assert isinstance(clone.optimizer.learning_rate, FrozenDict)
    lr = c.optimizer.learning_rate
    assert isinstance(lr, dict) and json.loads(json.dumps(lr)) == {
        k: list(v) for k, v in lr.items()
    }


def test_swept_keys_documented():
    import lossjax.config as module

    for key in SWEPT:
        assert key in module.__doc__


def _leaves(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "learning_rate":
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def test_documented_schema_is_the_defaults():
    # The docstring shows the defaults for the reader; the dataclasses hold them.
    import lossjax.config as module

    block = module.__doc__.split("(only ``name`` is required)::\n\n")[1].split("\n\n")[0]
    documented = yaml.safe_load(textwrap.dedent(block))
    assert documented["name"] == "digits"
    assert parse_config(documented) == Config(name="digits")
    # config_to_dict leaves out the dataset keys added later, at their defaults
    optional = {f"dataset.{k}" for k in module._DATASET_OPTIONAL}
    written = set(_leaves(config_to_dict(Config(name="digits"))))
    assert set(_leaves(documented)) == written | optional


def test_choices_are_the_registries(monkeypatch):
    # No list of names of its own: a name added where it is implemented is accepted at once.
    from lossjax import losses, model, optimizers
    from lossjax.data import CLASS_NAMES

    c = cfg()
    assert c.losses == tuple(losses.LOSSES)
    monkeypatch.setitem(model.ACTIVATIONS, "swish", None)
    monkeypatch.setitem(model.INITIALIZERS, "he_uniform", None)
    monkeypatch.setitem(model.DTYPES, "float16", None)
    # The optimizer and schedule registries hold optax functions, whose signatures are read.
    monkeypatch.setitem(optimizers.OPTIMIZERS, "my_sgd", optimizers.OPTIMIZERS["sgd"])
    monkeypatch.setitem(optimizers.SCHEDULES, "my_cosine", optimizers.SCHEDULES["cosine"])
    monkeypatch.setitem(CLASS_NAMES, "svhn", tuple("0123456789"))
    c = cfg(
        dataset={"name": "svhn"},
        model={"activation": "swish", "init": "he_uniform", "dtype": "float16"},
        optimizer={"name": "my_sgd", "schedule": "my_cosine"},
    )
    assert (c.dataset.name, c.model.activation, c.model.init, c.model.dtype) == (
        "svhn",
        "swish",
        "he_uniform",
        "float16",
    )
    assert (c.optimizer.name, c.optimizer.schedule) == ("my_sgd", "my_cosine")


def test_import_does_not_load_jax():
    code = "import sys\nimport lossjax.config\nprint('jax' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False"


def test_validation_does_not_load_the_engine():
    # The optimizer and schedule registries live in lossjax.optimizers, beside the engine.
    code = ("import sys\nfrom lossjax.config import parse_config\nparse_config({'name': 't'})\n"
            "print('lossjax.engine' in sys.modules)")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False"


def test_raw_mapping_not_modified():
    raw = {"name": "t", "optimizer": {"learning_rate": {"mse": [1.0]}}, "losses": ["mse"]}
    before = copy.deepcopy(raw)
    parse_config(raw, ["optimizer.learning_rate.mse=[2.0]", "epochs=2"])
    assert raw == before


# --------------------------------------------------------------------------------------------
# Round trip


def test_round_trip_defaults_and_yaml():
    c = cfg()
    d = config_to_dict(c)
    assert parse_config(d) == c
    assert parse_config(yaml.safe_load(yaml.safe_dump(d))) == c
    assert json.loads(json.dumps(d)) == d
    assert isinstance(d["optimizer"]["learning_rate"], dict)
    assert type(d["optimizer"]["learning_rate"]) is dict
    assert d["model"]["hidden"] == [[64, 64]]


def test_round_trip_rich_config():
    c = cfg(
        seeds=[3, 1],
        losses=["mse", "lossjax.losses:exp_mse"],
        dataset={"name": "mnist", "data_dir": "/d", "val_size": 500, "standardize": True},
        model={"hidden": [[], [32, 16]], "init_scale": [1, 1e-3], "dtype": "bfloat16"},
        optimizer={
            "name": "adam",
            "learning_rate": {"mse": 1e-4, "lossjax.losses:exp_mse": [1e-5, 3e-5]},
            "weight_decay": [0, 1e-4],
            "schedule": "cosine",
        },
        eval={"splits": ["test", "val"], "every": 5, "target_accuracy": 1},
    )
    assert c.dataset.val_size == 500 and isinstance(c.dataset.val_size, int)
    assert c.model.init_scale == (1.0, 0.001)
    assert c.eval.splits == ("val", "test")  # canonical order
    text = yaml.safe_dump(config_to_dict(c))
    assert parse_config(yaml.load(text, Loader=yaml.SafeLoader)) == c


def test_learning_rates_helper():
    c = cfg(losses=["mse", "exp_mse"], optimizer={"learning_rate": [0.1, 1]})
    assert learning_rates(c, "mse") == (0.1, 1.0)
    assert learning_rates(c, "exp_mse") == (0.1, 1.0)
    with pytest.raises(ConfigError, match=r"optimizer\.learning_rate: no grid for loss 'xent'"):
        learning_rates(c, "xent")


# --------------------------------------------------------------------------------------------
# Swept values: scalar = one-element list


@pytest.mark.parametrize(
    ("raw", "get", "want"),
    [
        ({"seeds": 3}, lambda c: c.seeds, (3,)),
        ({"losses": "mse"}, lambda c: c.losses, ("mse",)),
        ({"model": {"hidden": [64, 64]}}, lambda c: c.model.hidden, ((64, 64),)),
        ({"model": {"hidden": 128}}, lambda c: c.model.hidden, ((128,),)),
        ({"model": {"hidden": [[]]}}, lambda c: c.model.hidden, ((),)),
        ({"model": {"hidden": [[8], [16, 16]]}}, lambda c: c.model.hidden, ((8,), (16, 16))),
        ({"model": {"init_scale": 10}}, lambda c: c.model.init_scale, (10.0,)),
        ({"optimizer": {"weight_decay": 0}}, lambda c: c.optimizer.weight_decay, (0.0,)),
        (
            {"losses": ["mse"], "optimizer": {"learning_rate": 0.5}},
            lambda c: c.optimizer.learning_rate,
            {"mse": (0.5,)},
        ),
    ],
)
def test_scalar_is_one_element_list(raw, get, want):
    assert get(cfg(**raw)) == want


# --------------------------------------------------------------------------------------------
# Per-loss learning-rate mapping


def test_lr_mapping_resolves_in_loss_order():
    c = cfg(
        losses=["mse", "cross_entropy"],
        optimizer={"learning_rate": {"cross_entropy": [0.1], "mse": [1, 2]}},
    )
    assert list(c.optimizer.learning_rate) == ["mse", "cross_entropy"]
    assert c.optimizer.learning_rate == {"mse": (1.0, 2.0), "cross_entropy": (0.1,)}


def test_lr_list_expands_to_every_loss():
    c = cfg(losses=["mse", "exp_mse"], optimizer={"learning_rate": [0.1, 0.2]})
    assert c.optimizer.learning_rate == {"mse": (0.1, 0.2), "exp_mse": (0.1, 0.2)}


def test_lr_mapping_missing_loss():
    msg = error(losses=["mse", "exp_mse"], optimizer={"learning_rate": {"mse": [0.1]}})
    assert msg.startswith("optimizer.learning_rate: got entries for mse; missing exp_mse")


def test_lr_mapping_extra_loss():
    msg = error(losses=["mse"], optimizer={"learning_rate": {"mse": [0.1], "exp_mse": [1]}})
    assert msg.startswith("optimizer.learning_rate.exp_mse: no such loss in losses (mse)")


def test_lr_mapping_extra_loss_did_you_mean():
    msg = error(losses=["mse"], optimizer={"learning_rate": {"mes": [0.1]}})
    assert msg.startswith("optimizer.learning_rate.mes:")
    assert "did you mean 'mse'?" in msg


def test_lr_mapping_bad_value():
    msg = error(losses=["mse"], optimizer={"learning_rate": {"mse": [0.1, 0]}})
    assert msg == "optimizer.learning_rate.mse[1]: got 0, expected a number > 0"
    msg = error(losses=["mse"], optimizer={"learning_rate": {"mse": []}})
    assert msg.startswith("optimizer.learning_rate.mse: got [], expected a non-empty list")


# --------------------------------------------------------------------------------------------
# Errors: unknown keys and did-you-mean


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ({"model": {"hiden": [[1]]}}, "model.hiden: unknown key; did you mean 'model.hidden'?"),
        ({"epoch": 3}, "epoch: unknown key; did you mean 'epochs'?"),
        (
            {"learning_rate": [0.1]},
            "learning_rate: unknown key; did you mean 'optimizer.learning_rate'?",
        ),
        ({"model": {"epochs": 3}}, "model.epochs: unknown key; did you mean 'epochs'?"),
        ({"optimizer": {"lr_schedule": "cosine"}}, "did you mean 'optimizer.schedule'?"),
        ({"evaluation": {}}, "evaluation: unknown key; did you mean 'eval'?"),
    ],
)
def test_unknown_key_did_you_mean(raw, want):
    msg = error(**raw)
    assert want in msg


def test_unknown_key_without_close_match_lists_keys():
    msg = error(model={"zzz": 1})
    assert msg == (
        "model.zzz: unknown key; the keys under 'model' are hidden, activation, init, "
        "init_scale, dtype, kind, channels"
    )


def test_unknown_key_checked_before_missing_name():
    with pytest.raises(ConfigError, match=r"^nme: unknown key; did you mean 'name'\?$"):
        parse_config({"nme": "x"})


# --------------------------------------------------------------------------------------------
# Errors: wrong type, bool is not an int


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ({"epochs": True}, "epochs: got true (a boolean), expected an integer >= 1"),
        ({"batch_size": False}, "batch_size: got false (a boolean), expected an integer >= 1"),
        (
            {"seeds": [0, True]},
            "seeds[1]: got true (a boolean), expected an integer in [0, 4294967295]",
        ),
        (
            {"model": {"hidden": [[64, True]]}},
            "model.hidden[0][1]: got true (a boolean), expected an integer in [1, 2147483647]",
        ),
        (
            {"optimizer": {"momentum": True}},
            "optimizer.momentum: got true (a boolean), expected a number in [0, 1)",
        ),
        (
            {"optimizer": {"learning_rate": [True]}},
            "optimizer.learning_rate[0]: got true (a boolean), expected a number > 0",
        ),
        (
            {"dataset": {"val_size": True}},
            "dataset.val_size: got true (a boolean), expected a fraction in (0, 1) or a count",
        ),
        (
            {"eval": {"every": True}},
            "eval.every: got true (a boolean), expected an integer >= 1",
        ),
    ],
)
def test_bool_is_not_an_int(raw, want):
    assert error(**raw).startswith(want)


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ({"epochs": 3.0}, "epochs: got 3.0, expected an integer >= 1"),
        ({"epochs": "3"}, "epochs: got '3' (a string), expected an integer >= 1"),
        ({"epochs": None}, "epochs: got null, expected an integer >= 1"),
        (
            {"optimizer": {"learning_rate": ["0.1"]}},
            "optimizer.learning_rate[0]: got '0.1' (a string), expected a number > 0",
        ),
        (
            {"dataset": {"standardize": "yes"}},
            "dataset.standardize: got 'yes' (a string), expected true or false",
        ),
        (
            {"dataset": {"standardize": 1}},
            "dataset.standardize: got 1, expected true or false",
        ),
        ({"dataset": {"data_dir": 3}}, "dataset.data_dir: got 3, expected a folder path or null"),
        ({"seeds": {"a": 1}}, "seeds: got {'a': 1} (a mapping), expected a list of integers"),
        ({"dataset": "mnist"}, "dataset: got 'mnist', expected a mapping with keys name,"),
        ({"model": {"hidden": [[64], "32"]}}, "model.hidden[1]: got '32' (a string)"),
        ({"model": {"activation": 1}}, "model.activation: got 1, expected one of relu,"),
        ({"output": {"dir": ""}}, "output.dir: got '', expected a folder path"),
        ({"eval": {"splits": "val"}}, "eval.splits: got 'val', expected a list of splits"),
        ({"losses": [3]}, "losses[0]: got 3, expected a loss name"),
    ],
)
def test_wrong_type(raw, want):
    assert error(**raw).startswith(want)


# --------------------------------------------------------------------------------------------
# Errors: out of range, empty grid, duplicates, unknown choices


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ({"epochs": 0}, "epochs: got 0, expected an integer >= 1"),
        ({"batch_size": -64}, "batch_size: got -64, expected an integer >= 1"),
        ({"seeds": [0, -1]}, "seeds[1]: got -1, expected an integer in [0, 4294967295]"),
        ({"seeds": -1}, "seeds: got -1, expected an integer in [0, 4294967295]"),
        (
            {"optimizer": {"learning_rate": [0.01, -0.1]}},
            "optimizer.learning_rate[1]: got -0.1, expected a number > 0",
        ),
        (
            {"optimizer": {"learning_rate": [float("inf")]}},
            "optimizer.learning_rate[0]: got inf, expected a number > 0",
        ),
        (
            {"optimizer": {"weight_decay": [-1e-4]}},
            "optimizer.weight_decay[0]: got -0.0001, expected a number >= 0",
        ),
        (
            {"optimizer": {"weight_decay": [float("nan")]}},
            "optimizer.weight_decay[0]: got nan, expected a number >= 0",
        ),
        ({"optimizer": {"momentum": 1}}, "optimizer.momentum: got 1, expected a number in [0, 1)"),
        ({"model": {"init_scale": [0]}}, "model.init_scale[0]: got 0, expected a number > 0"),
        (
            {"model": {"hidden": [[64, 0]]}},
            "model.hidden[0][1]: got 0, expected an integer in [1, 2147483647]",
        ),
        (
            {"dataset": {"val_size": 1.0}},
            "dataset.val_size: got 1.0, expected a fraction in (0, 1) or a count",
        ),
        ({"dataset": {"val_size": 0}}, "dataset.val_size: got 0, expected an integer >= 1"),
        ({"dataset": {"split_seed": -2}}, "dataset.split_seed: got -2, expected an integer >= 0"),
        (
            {"eval": {"target_accuracy": 0}},
            "eval.target_accuracy: got 0, expected a number in (0, 1]",
        ),
        (
            {"eval": {"target_accuracy": 95}},
            "eval.target_accuracy: got 95, expected a number in (0, 1]",
        ),
        ({"eval": {"every": 0}}, "eval.every: got 0, expected an integer >= 1"),
    ],
)
def test_out_of_range(raw, want):
    assert error(**raw).startswith(want)


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"seeds": []}, "seeds"),
        ({"losses": []}, "losses"),
        ({"model": {"hidden": []}}, "model.hidden"),
        ({"model": {"init_scale": []}}, "model.init_scale"),
        ({"optimizer": {"learning_rate": []}}, "optimizer.learning_rate"),
        ({"optimizer": {"weight_decay": []}}, "optimizer.weight_decay"),
        ({"eval": {"splits": []}}, "eval.splits"),
    ],
)
def test_empty_grid(raw, path):
    assert error(**raw).startswith(f"{path}: got [], expected a non-empty list of ")


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ({"seeds": [0, 1, 0]}, "seeds[2]: got 0, a duplicate of seeds[0]"),
        ({"losses": ["mse", "mse"]}, "losses[1]: got 'mse', a duplicate of losses[0]"),
        (
            {"model": {"hidden": [[64], [64]]}},
            "model.hidden[1]: got [64], a duplicate of model.hidden[0]",
        ),
        (
            {"optimizer": {"learning_rate": [1, 1.0]}},
            "optimizer.learning_rate[1]: got 1.0, a duplicate of optimizer.learning_rate[0]",
        ),
        ({"eval": {"splits": ["val", "val"]}}, "eval.splits[1]: got 'val', a duplicate"),
    ],
)
def test_duplicates(raw, want):
    assert error(**raw).startswith(want)


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (
            {"dataset": {"name": "mnsit"}},
            "dataset.name: got 'mnsit', expected one of digits, mnist, fashion_mnist, cifar10, "
            "cifar100, double_mnist, triple_mnist, arrays, tfds:NAME; "
            "did you mean 'mnist'?",
        ),
        (
            {"dataset": {"name": "imagenet"}},
            "dataset.name: got 'imagenet', expected one of digits, mnist, fashion_mnist, cifar10, "
            "cifar100, double_mnist, triple_mnist, arrays, tfds:NAME",
        ),
        ({"model": {"activation": "relu6"}}, "model.activation: got 'relu6', expected one of"),
        ({"model": {"init": "he_uniform"}}, "model.init: got 'he_uniform', expected one of"),
        ({"model": {"dtype": "float16"}}, "model.dtype: got 'float16', expected one of"),
        ({"optimizer": {"name": "rmsprob"}}, "optimizer.name: got 'rmsprob', expected one of"),
        ({"optimizer": {"schedule": "linaer"}}, "optimizer.schedule: got 'linaer', expected"),
        ({"eval": {"splits": ["val", "dev"]}}, "eval.splits[1]: got 'dev', expected one of"),
        (
            {"eval": {"splits": ["train", "test"]}},
            "eval.splits: got ['train', 'test'], expected a subset of train, val, test that "
            "includes 'val'",
        ),
    ],
)
def test_unknown_choice(raw, want):
    assert error(**raw).startswith(want)


@pytest.mark.parametrize(
    ("hidden", "want"),
    [
        ([[64], 32], "model.hidden[1]: got 32, expected a list of layer sizes; a list of numbers"),
        ([64, [32]], "model.hidden[1]: got [32], expected an integer >= 1; a list of numbers"),
        ([64, "a"], "model.hidden[1]: got 'a', expected an integer in [1, 2147483647]"),
        (0, "model.hidden: got 0, expected an integer in [1, 2147483647]"),
        ("64", "model.hidden: got '64' (a string), expected a list of hidden-size lists"),
    ],
)
def test_bad_hidden(hidden, want):
    assert error(model={"hidden": hidden}).startswith(want)


def test_hidden_accepts_tuples():
    assert cfg(model={"hidden": ((8,), ())}).model.hidden == ((8,), ())


# --------------------------------------------------------------------------------------------
# Errors: values the engine cannot hold (uint32 seeds, int32 layer sizes, float32 hyperparameters)


def test_seed_must_fit_uint32():
    assert cfg(seeds=[0, 4294967295]).seeds == (0, 4294967295)
    assert error(seeds=[4294967296]) == (
        "seeds[0]: got 4294967296, expected an integer in [0, 4294967295] (seeds are uint32)"
    )
    assert error(["seeds=4294967296"]).startswith("seeds: got 4294967296, expected an integer in")


def test_split_seed_has_no_upper_bound():
    # numpy's default_rng takes any int >= 0; only the engine's seeds are uint32.
    assert cfg(dataset={"split_seed": 2**40}).dataset.split_seed == 2**40


def test_hidden_size_must_fit_int32():
    assert cfg(model={"hidden": [[2**31 - 1]]}).model.hidden == ((2**31 - 1,),)
    assert error(model={"hidden": [[10**20]]}) == (
        "model.hidden[0][0]: got 100000000000000000000, expected an integer in [1, 2147483647]"
    )
    assert error(model={"hidden": 2**31}).startswith("model.hidden: got 2147483648, expected")


F32 = "which float32 (the precision the engine trains with)"


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (
            {"losses": ["mse"], "optimizer": {"learning_rate": {"mse": [1e-300]}}},
            f"optimizer.learning_rate.mse[0]: got 1e-300, {F32} rounds to 0; "
            "expected a number in [1.2e-38, 3.4e+38]",
        ),
        (
            {"optimizer": {"learning_rate": [0.1, 1e39]}},
            f"optimizer.learning_rate[1]: got 1e+39, {F32} rounds to inf; "
            "expected a number in [1.2e-38, 3.4e+38]",
        ),
        (
            {"model": {"init_scale": [1e-40]}},
            f"model.init_scale[0]: got 1e-40, {F32} keeps only as a subnormal, losing precision; "
            "expected a number in [1.2e-38, 3.4e+38]",
        ),
        (
            {"optimizer": {"weight_decay": [0, 1e-300]}},
            f"optimizer.weight_decay[1]: got 1e-300, {F32} rounds to 0; "
            "expected 0 or a number in [1.2e-38, 3.4e+38]",
        ),
        (
            {"optimizer": {"momentum": 1e-300}},
            f"optimizer.momentum: got 1e-300, {F32} rounds to 0; "
            "expected a number in [0, 1): 0 or at least 1.2e-38",
        ),
    ],
)
def test_float32_hyperparameter_out_of_range(raw, want):
    assert error(**raw) == want


def test_float32_hyperparameters_in_range():
    c = cfg(
        model={"init_scale": [1e-30, 1e30]},
        optimizer={"learning_rate": [2e-38, 3e38], "weight_decay": [0, 1e-37], "momentum": 0},
    )
    assert c.optimizer.learning_rate["mse"] == (2e-38, 3e38)
    assert c.optimizer.weight_decay == (0.0, 1e-37) and c.optimizer.momentum == 0.0


def test_int_too_large_for_a_float_is_an_error_not_a_crash():
    msg = error(optimizer={"learning_rate": [10**400]})
    assert msg.startswith("optimizer.learning_rate[0]: got 1000")
    assert msg.endswith(", expected a number > 0")


# --------------------------------------------------------------------------------------------
# Errors: losses (through lossjax.losses.resolve_loss)


def test_unknown_loss_name_with_did_you_mean():
    msg = error(losses=["mse", "crossentropy"])
    assert msg.startswith("losses[1]: unknown loss 'crossentropy'; choose one of cross_entropy,")
    assert msg.endswith("Did you mean 'cross_entropy'?")


def test_user_loss_module_missing():
    msg = error(losses=["no_such_module_xyz:focal"])
    assert msg.startswith("losses[0]: loss 'no_such_module_xyz:focal': cannot import module")


def test_user_loss_attribute_missing():
    msg = error(losses="lossjax.losses:nothing")
    assert (
        msg == "losses: loss 'lossjax.losses:nothing': module 'lossjax.losses' has no attribute "
        "'nothing'."
    )


def test_user_loss_accepted(tmp_path, monkeypatch):
    (tmp_path / "my_losses_cfgtest.py").write_text(
        "def focal(logits, labels):\n    return (logits - labels).sum(-1)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        c = cfg(
            losses=["cross_entropy", "my_losses_cfgtest:focal"],
            optimizer={"learning_rate": {"cross_entropy": [0.1], "my_losses_cfgtest:focal": 1}},
        )
    finally:
        sys.modules.pop("my_losses_cfgtest", None)
    assert c.losses == ("cross_entropy", "my_losses_cfgtest:focal")
    assert learning_rates(c, "my_losses_cfgtest:focal") == (1.0,)


# --------------------------------------------------------------------------------------------
# Errors: the sweep name


def test_missing_name():
    with pytest.raises(ConfigError, match=r"^name: missing; give the sweep a name"):
        parse_config({"epochs": 3})


@pytest.mark.parametrize("bad", ["my sweep", "a/b", "..", "", 3, None])
def test_bad_name(bad):
    with pytest.raises(ConfigError) as info:
        parse_config({"name": bad})
    msg = str(info.value)
    assert msg.startswith("name: got ")
    assert "expected a folder name" in msg


def test_name_at_most_255_bytes():
    assert cfg(name="a" * 255).name == "a" * 255
    msg = error(name="a" * 256)
    assert msg.startswith("name: got 'aaa")
    assert msg.endswith(
        "..., 256 bytes long; expected at most 255 bytes (it names the results folder, "
        "and filesystems refuse longer names)"
    )


# --------------------------------------------------------------------------------------------
# Overrides


def test_overrides_valid():
    c = cfg(
        [
            "epochs=3",
            "optimizer.name=adam",
            "seeds=[0,1]",
            "dataset.data_dir=/tmp/data",
            "model.hidden=[32]",
            "eval.every=2",
            " batch_size = 16",
        ]
    )
    assert c.epochs == 3 and c.optimizer.name == "adam" and c.seeds == (0, 1)
    assert c.dataset.data_dir == "/tmp/data" and c.model.hidden == ((32,),)
    assert c.eval.every == 2 and c.batch_size == 16


def test_override_scalar_seed_and_null():
    c = cfg(["seeds=3", "dataset.data_dir=null"], dataset={"data_dir": "/x"})
    assert c.seeds == (3,) and c.dataset.data_dir is None


def test_override_later_wins():
    assert cfg(["epochs=3", "epochs=4"]).epochs == 4


def test_override_whole_section():
    c = cfg(["model={hidden: [[32]]}"], model={"activation": "tanh"})
    assert c.model.hidden == ((32,),) and c.model.activation == "relu"


def test_override_value_is_validated():
    assert error(["epochs=0"]) == "epochs: got 0, expected an integer >= 1"
    assert error(["epochs=true"]).startswith("epochs: got true (a boolean)")


def test_override_scientific_notation_is_a_number():
    c = cfg(["optimizer.learning_rate=[1e-3, 3E-2]"])
    assert c.optimizer.learning_rate["mse"] == (0.001, 0.03)


def test_override_one_loss_grid_on_shared_list():
    c = cfg(["optimizer.learning_rate.mse=[0.5]"], optimizer={"learning_rate": [0.1]})
    assert c.optimizer.learning_rate["mse"] == (0.5,)
    assert c.optimizer.learning_rate["cross_entropy"] == (0.1,)


def test_override_one_loss_grid_on_mapping():
    raw = {"losses": ["mse", "exp_mse"], "optimizer": {"learning_rate": {"mse": 1, "exp_mse": 2}}}
    c = cfg(["optimizer.learning_rate.exp_mse=[0.03]"], **raw)
    assert c.optimizer.learning_rate == {"mse": (1.0,), "exp_mse": (0.03,)}


def test_override_whole_learning_rate_drops_earlier_loss_patch():
    c = cfg(["optimizer.learning_rate.mse=[0.5]", "optimizer.learning_rate=[0.2]"])
    assert set(c.optimizer.learning_rate.values()) == {(0.2,)}


def test_override_narrowing_losses_keeps_mapping_entries():
    raw = {
        "optimizer": {
            "learning_rate": {
                k: [i + 1] for i, k in enumerate(["cross_entropy", "mse", "softmax_mse", "exp_mse"])
            }
        }
    }
    c = cfg(["losses=[mse]"], **raw)
    assert c.losses == ("mse",) and c.optimizer.learning_rate == {"mse": (2.0,)}
    # In the file itself, an extra entry stays an error.
    assert error(losses=["mse"], **raw).startswith("optimizer.learning_rate.cross_entropy:")


def test_override_user_loss_with_dots():
    c = cfg(["optimizer.learning_rate.lossjax.losses:mse=[3]"], losses=["lossjax.losses:mse"])
    assert c.optimizer.learning_rate == {"lossjax.losses:mse": (3.0,)}


def test_override_lr_for_loss_not_swept():
    msg = error(["optimizer.learning_rate.mes=[1]"], losses=["mse"])
    assert msg.startswith("optimizer.learning_rate.mes: no such loss in losses (mse)")
    assert "did you mean 'mse'?" in msg


def test_override_unknown_path_did_you_mean():
    msg = error(["optimizer.nme=adam"])
    assert (
        msg == "optimizer.nme: unknown key in --set 'optimizer.nme=adam'; "
        "did you mean 'optimizer.name'?"
    )
    assert error(["epoch=3"]).startswith("epoch: unknown key in --set 'epoch=3'; did you mean")
    assert "did you mean 'optimizer.learning_rate'?" in error(["learning_rate=[1]"])


def test_override_unknown_path_without_match():
    msg = error(["qqq=1"])
    assert msg.startswith("qqq: unknown key in --set 'qqq=1'; the keys are name, seeds,")


def test_override_into_a_leaf():
    assert (
        error(["epochs.x=3"])
        == "epochs.x: unknown key in --set 'epochs.x=3'; 'epochs' has no sub-keys"
    )
    assert error(["model.hidden.x=3"]).startswith("model.hidden.x: unknown key")


def test_override_malformed():
    msg = error(["epochs"])
    assert msg.startswith("--set 'epochs': expected KEY=VALUE")
    assert error(["=3"]).startswith("--set '=3': the key before '=' is empty")


def test_override_value_not_yaml():
    msg = error(["seeds=[0,"])
    assert msg.startswith("seeds: value '[0,' in --set 'seeds=[0,' is not valid YAML")


def test_override_into_non_mapping_section():
    assert error(["model.hidden=[1]"], model=3).startswith("model: got 3, expected a mapping")


# --------------------------------------------------------------------------------------------
# Files


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def test_load_yaml(tmp_path):
    path = write(
        tmp_path,
        "name: s\nseeds: [4]\nlosses: [mse]\n"
        "optimizer:\n  learning_rate: {mse: [1e-3, 1.0e-2]}\n"
        "model:\n  hidden: [[16]]\n",
    )
    c = load_config(path)
    assert c.seeds == (4,) and c.losses == ("mse",) and c.model.hidden == ((16,),)
    assert c.optimizer.learning_rate == {"mse": (0.001, 0.01)}
    assert load_config(str(path), ["epochs=2"]).epochs == 2


def test_load_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found$"):
        load_config(path)


def test_load_folder(tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)


def test_load_not_yaml(tmp_path):
    path = write(tmp_path, "name: s\nseeds: [0, 1\nepochs: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: not valid YAML: ") and "line " in msg and "\n" not in msg


def test_load_duplicate_key(tmp_path):
    path = write(tmp_path, "name: s\nepochs: 3\nepochs: 4\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'epochs' at line 3, column 1"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("- name: s\n", "top level got [{'name': 's'}]"),
        ("just text\n", "top level got 'just text'"),
    ],
)
def test_load_top_level_not_mapping(tmp_path, text, want):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: {want}, expected a mapping")


def test_load_empty_file(tmp_path):
    with pytest.raises(ConfigError, match="the file is empty"):
        load_config(write(tmp_path, "# nothing\n"))


def test_load_binary_file(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(ConfigError, match="not a text file"):
        load_config(path)


def test_load_quoted_number_is_a_string(tmp_path):
    path = write(tmp_path, "name: s\nepochs: '3'\n")
    with pytest.raises(ConfigError, match=r"^epochs: got '3' \(a string\), expected an integer"):
        load_config(path)


# --------------------------------------------------------------------------------------------
# Batch size against the dataset


def test_check_batch_size():
    c = cfg(batch_size=500)
    check_batch_size(c, 500)
    with pytest.raises(ConfigError) as info:
        check_batch_size(c, 300)
    assert str(info.value) == (
        "batch_size: got 500, larger than the 300 training examples of digits; use at most 300"
    )


# --------------------------------------------------------------------------------------------
# Shipped configs


def shipped_configs():
    return sorted(CONFIGS.glob("*.yaml")) + sorted(CONFIGS.glob("*.yml"))


def test_configs_folder_has_digits():
    assert CONFIGS / "digits.yaml" in shipped_configs()


@pytest.mark.parametrize("path", shipped_configs(), ids=lambda p: p.name)
def test_shipped_config_validates(path):
    c = load_config(path)
    assert parse_config(config_to_dict(c)) == c
    assert c.output.dir == "runs"  # results/ holds the committed reference runs


def test_digits_config_contents():
    c = load_config(CONFIGS / "digits.yaml")
    assert c.dataset.name == "digits"
    assert c.losses == ("cross_entropy", "mse", "softmax_mse", "exp_mse",
                        "rescaled_mse(k=1,M=1)", "squentropy", "label_smoothing_ce(alpha=0.1)",
                        "focal(gamma=2)")
    assert c.seeds == (0, 1, 2) and c.epochs == 30 and c.batch_size == 64
    assert c.model.hidden == ((64, 64),) and c.optimizer.name == "momentum"
    assert c.block_size == "auto"
    assert all(len(learning_rates(c, loss)) == 5 for loss in c.losses)


# --------------------------------------------------------------------------------------------
# Losses with parameters: labels, mappings expanded into their product, ranges, variants

PARAM_LOSSES = ["cross_entropy", "squentropy",
                {"name": "rescaled_mse", "k": [1, 5], "M": [1, 15]},
                {"name": "focal", "gamma": [1, 2]},
                {"name": "label_smoothing_ce", "alpha": 0.1}]
PARAM_LABELS = ("cross_entropy", "squentropy", "rescaled_mse(k=1,M=1)", "rescaled_mse(k=1,M=15)",
                "rescaled_mse(k=5,M=1)", "rescaled_mse(k=5,M=15)", "focal(gamma=1)",
                "focal(gamma=2)", "label_smoothing_ce(alpha=0.1)")


def test_mappings_expand_into_labels_and_round_trip():
    c = cfg(losses=PARAM_LOSSES)
    assert c.losses == PARAM_LABELS
    assert tuple(c.optimizer.learning_rate) == PARAM_LABELS
    assert parse_config(config_to_dict(c)) == c
    assert parse_config(yaml.safe_load(yaml.safe_dump(config_to_dict(c)))) == c


@pytest.mark.parametrize(
    ("given", "label"),
    [
        ("rescaled_mse", "rescaled_mse(k=1,M=1)"),  # a bare name: its defaults, written out
        ("focal", "focal(gamma=2)"),
        ("focal(gamma=2.0)", "focal(gamma=2)"),
        ("rescaled_mse(M=15)", "rescaled_mse(k=1,M=15)"),
        ("label_smoothing_ce(alpha=0.00001)", "label_smoothing_ce(alpha=1e-05)"),
        ("squentropy-no_push_up", "squentropy-no_push_up"),
        ("rescaled_mse-no_push_up", "rescaled_mse(k=1,M=1)-no_push_up"),
        ("focal(gamma=1)-push_up_50-balanced", "focal(gamma=1)-push_up_50-balanced"),
        ({"name": "rescaled_mse", "k": 5, "M": 15, "variant": "no_push_up"},
         "rescaled_mse(k=5,M=15)-no_push_up"),
        ({"name": "mse", "variant": "no_push_up"}, "mse-no_push_up"),
    ],
)
def test_loss_labels_are_canonical(given, label):
    c = cfg(losses=[given])
    assert c.losses == (label,)
    assert parse_config(config_to_dict(c)) == c


def test_variant_list_is_swept_after_the_parameters():
    c = cfg(losses=[{"name": "focal", "gamma": [1, 2], "variant": ["no_push_up", "push_up_50"]}])
    assert c.losses == ("focal(gamma=1)-no_push_up", "focal(gamma=1)-push_up_50",
                        "focal(gamma=2)-no_push_up", "focal(gamma=2)-push_up_50")


def test_a_config_of_today_resolves_as_before():
    raw = {"losses": ["cross_entropy", "mse-no_push_up", "exp_mse"],
           "optimizer": {"learning_rate": {"cross_entropy": 0.1, "mse-no_push_up": [0.01],
                                           "exp_mse": [0.03, 0.1]}}}
    d = config_to_dict(cfg(**raw))
    assert d["losses"] == ["cross_entropy", "mse-no_push_up", "exp_mse"]
    assert d["optimizer"]["learning_rate"] == {"cross_entropy": [0.1], "mse-no_push_up": [0.01],
                                               "exp_mse": [0.03, 0.1]}


@pytest.mark.parametrize(
    ("losses", "want"),
    [
        ([{"name": "rescaled_mse", "k": [1, 5]}, "mse", {"name": "rescaled_mse", "k": [1, 0.5]}],
         "losses[2].k[1]: got 0.5, expected a number >= 1"),
        ([{"name": "rescaled_mse", "M": 0}], "losses[0].M: got 0, expected a number > 0"),
        ([{"name": "label_smoothing_ce", "alpha": [0.1, 1]}],
         "losses[0].alpha[1]: got 1, expected a number in [0, 1)"),
        ([{"name": "focal", "gamma": -1}], "losses[0].gamma: got -1, expected a number >= 0"),
        ([{"name": "focal", "gamma": True}], "losses[0].gamma: got true (a boolean)"),
        ([{"name": "focal", "gamma": []}], "losses[0].gamma: got [], expected a non-empty list"),
        ([{"name": "focal", "gamma": [1, 1.0]}], "losses[0].gamma[1]: got 1.0, a duplicate of"),
        ([{"name": "focal", "gama": 1}],
         "losses[0].gama: 'gama' is not a parameter of focal; did you mean 'gamma'? its "
         "parameters are gamma"),
        ([{"name": "squentropy", "k": 1}], "losses[0].k: squentropy takes no parameters; the "
                                           "losses that do are rescaled_mse(k, M)"),
        ([{"name": "cross_entropy", "alpha": 0.1}], "losses[0].alpha: cross_entropy takes no "
                                                    "parameters"),
        (["mse", {"gamma": 1}], "losses[1]: got {'gamma': 1} (a mapping) without 'name'"),
        ([{"name": "focall"}], "losses[0].name: got 'focall', expected a loss name without"),
        ([{"name": "focal(gamma=1)"}], "losses[0].name: got 'focal(gamma=1)', expected a loss"),
        ([{"name": "focal", "variant": "bogus"}], "losses[0].variant: unknown loss "
                                                  "'focal(gamma=2)-bogus'; a variant is"),
        ([{"name": "focal", "variant": [1]}], "losses[0].variant[0]: got 1, expected an edit"),
        (["rescaled_mse(k=1,M=0)"],
         "losses[0]: loss 'rescaled_mse(k=1,M=0)': M: got 0, expected a number > 0"),
        (["rescaled_mse(k=2,Mx=1)"], "losses[0]: loss 'rescaled_mse(k=2,Mx=1)': 'Mx' is not a "
                                     "parameter of rescaled_mse; did you mean 'M'?"),
        (["focal(gamma=x)"], "losses[0]: loss 'focal(gamma=x)': gamma: got x, expected a number"),
        (["focal(gamma=1,gamma=2)"], "losses[0]: loss 'focal(gamma=1,gamma=2)': gamma is given "
                                     "twice"),
        (["squentropy(k=1)"], "losses[0]: loss 'squentropy(k=1)': squentropy takes no "
                              "parameters"),
        (["focal(gamma=-1)-no_push_up"], "losses[0]: loss 'focal(gamma=-1)-no_push_up': gamma: "
                                         "got -1, expected a number >= 0"),
        ([{"name": "rescaled_mse", "k": [1, 5]}, "rescaled_mse(k=5)"],
         "losses[1]: got 'rescaled_mse(k=5)', which gives 'rescaled_mse(k=5,M=1)', a duplicate "
         "of losses[0]"),
        (["focal", "focal(gamma=2)"], "losses[1]: got 'focal(gamma=2)', a duplicate of losses[0]"),
    ],
)
def test_bad_loss_parameters(losses, want):
    assert error(losses=losses).startswith(want)


def test_learning_rates_by_label_or_by_name_without_parameters():
    losses = ["mse", {"name": "focal", "gamma": [1, 2]},
              {"name": "rescaled_mse", "k": [1, 5], "variant": "no_push_up"}]
    lr = {"mse": 0.1, "focal": [0.3], "focal(gamma=2.0)": [1.0],  # a label's own entry wins
          "rescaled_mse-no_push_up": [0.01]}
    c = cfg(losses=losses, optimizer={"learning_rate": lr})
    assert dict(c.optimizer.learning_rate) == {
        "mse": (0.1,), "focal(gamma=1)": (0.3,), "focal(gamma=2)": (1.0,),
        "rescaled_mse(k=1,M=1)-no_push_up": (0.01,), "rescaled_mse(k=5,M=1)-no_push_up": (0.01,)}
    assert parse_config(config_to_dict(c)) == c
    over = cfg(["optimizer.learning_rate.focal=[0.5]",
                "optimizer.learning_rate.focal(gamma=2)=[0.7]"], losses=losses)
    assert over.optimizer.learning_rate["focal(gamma=1)"] == (0.5,)
    assert over.optimizer.learning_rate["focal(gamma=2)"] == (0.7,)
    assert over.optimizer.learning_rate["mse"] == (0.01, 0.1)


@pytest.mark.parametrize(
    ("lr", "want"),
    [
        ({"mse": [0.1], "focal": [0.3]},
         "optimizer.learning_rate: got entries for mse, focal; missing "
         "rescaled_mse(k=1,M=1)-no_push_up"),
        ({"mse": [0.1], "focal": [0.3], "rescaled_mse": [1]},  # the variant is another loss
         "optimizer.learning_rate.rescaled_mse: no such loss in losses"),
        ({"mse": [0.1], "focal(gamma=1)": [0.3], "focal(gamma=1.0)": [1], "focal": [1],
          "rescaled_mse-no_push_up": [0.01]},
         "optimizer.learning_rate.focal(gamma=1.0): gives the rates of focal(gamma=1), as the "
         "entry 'focal(gamma=1)' does"),
        ({"mse": [0.1], "focal": [0.3, 0], "rescaled_mse-no_push_up": [0.01]},
         "optimizer.learning_rate.focal[1]: got 0, expected a number > 0"),
    ],
)
def test_bad_learning_rate_keys_for_parameterized_losses(lr, want):
    losses = ["mse", {"name": "focal", "gamma": [1, 2]},
              {"name": "rescaled_mse", "k": [1, 5], "variant": "no_push_up"}]
    assert error(losses=losses, optimizer={"learning_rate": lr}).startswith(want)


def test_narrowing_losses_keeps_the_entries_of_a_family():
    raw = {"losses": ["mse", {"name": "focal", "gamma": [1, 2]}],
           "optimizer": {"learning_rate": {"mse": [0.1], "focal": [0.3]}}}
    c = cfg(["losses=[{name: focal, gamma: 5}]"], **raw)
    assert dict(c.optimizer.learning_rate) == {"focal(gamma=5)": (0.3,)}


# ---- several optimizers ------------------------------------------------------------------------

TWO = {"name": ["momentum", "adam"]}


def test_one_optimizer_given_as_a_list_resolves_as_a_name():
    for name in ("adam", ["adam"]):
        c = cfg(losses=["mse"], optimizer={"name": name, "args": {"b1": 0.8}})
        assert c.optimizer.name == "adam" and c.optimizer.names == ("adam",)
        assert config_to_dict(c)["optimizer"] == config_to_dict(
            cfg(losses=["mse"], optimizer={"name": "adam", "args": {"b1": 0.8}}))["optimizer"]
        assert c.optimizer.learning_rate == {"mse": (0.01, 0.1)}
        assert c.optimizer.args == {"b1": 0.8}


def test_committed_configs_resolve_as_before():
    # A single-optimizer config keeps its resolved dict, so an old folder's config.yaml matches.
    for name in ("digits", "mnist_causal", "cifar10_causal"):
        saved = yaml.safe_load((CONFIGS.parent / "results" / name / "config.yaml").read_text())
        assert config_to_dict(parse_config(saved)) == saved, name


def test_several_optimizers_resolve_per_optimizer_and_round_trip():
    c = cfg(losses=["cross_entropy", "mse"], optimizer={
        **TWO, "args": {"adam": {"b1": 0.95}},
        "learning_rate": {"adam": {"cross_entropy": [1e-4, 1e-3], "mse": [1e-3]},
                          "momentum": [0.01, 0.1]}})
    assert c.optimizer.name == ("momentum", "adam")
    assert c.optimizer.args == {"momentum": {}, "adam": {"b1": 0.95}}
    assert c.optimizer.args_of("adam") == {"b1": 0.95}
    assert c.optimizer.learning_rate == {
        "momentum": {"cross_entropy": (0.01, 0.1), "mse": (0.01, 0.1)},
        "adam": {"cross_entropy": (1e-4, 1e-3), "mse": (1e-3,)}}
    assert learning_rates(c, "mse", "adam") == (1e-3,)
    d = config_to_dict(c)
    assert d["optimizer"]["name"] == ["momentum", "adam"]
    assert parse_config(d) == c and parse_config(yaml.safe_load(yaml.safe_dump(d))) == c
    hash(c)


def test_a_shared_grid_applies_to_every_optimizer():
    c = cfg(losses=["mse", "exp_mse"], optimizer={**TWO, "learning_rate": {
        "mse": [0.1], "exp_mse": [0.01, 0.03]}})
    assert c.optimizer.learning_rate == {o: {"mse": (0.1,), "exp_mse": (0.01, 0.03)}
                                         for o in ("momentum", "adam")}


def test_overrides_set_one_optimizers_grid_or_argument():
    c = cfg(["optimizer.name=[momentum, adam]", "optimizer.learning_rate.adam=[0.001]",
             "optimizer.learning_rate.adam.exp_mse=[0.002]", "optimizer.args.adam.b1=0.8"],
            losses=["mse", "exp_mse"])
    assert c.optimizer.learning_rate == {"momentum": {"mse": (0.01, 0.1),
                                                      "exp_mse": (0.01, 0.1)},
                                         "adam": {"mse": (0.001,), "exp_mse": (0.002,)}}
    assert c.optimizer.args == {"momentum": {}, "adam": {"b1": 0.8}}


def test_loss_and_optimizer_names_do_not_overlap():
    # What lets optimizer.learning_rate's keys tell a loss from an optimizer.
    from lossjax import losses, optimizers

    names = set(losses.LOSSES) | set(getattr(losses, "PARAMETERIZED", ()))
    assert not names & set(optimizers.OPTIMIZERS)
    # Variants hold '-' and user losses ':', which no optimizer name holds.
    assert not any("-" in o or ":" in o for o in optimizers.OPTIMIZERS)


@pytest.mark.parametrize(
    ("optimizer", "want"),
    [
        ({"name": ["momentum", "adma"]},
         "optimizer.name[1]: got 'adma', expected one of sgd, momentum, adam, "),
        ({"name": ["adam", "adam"]},
         "optimizer.name[1]: got 'adam', a duplicate of optimizer.name[0]"),
        ({"name": []}, "optimizer.name: got [], expected a non-empty list of optimizer names"),
        ({**TWO, "args": {"b1": 0.9}},
         "optimizer.args.b1: not an optimizer of optimizer.name (momentum, adam); with several "
         "optimizers, args are given per optimizer, e.g. optimizer.args: {adam: {b1: ...}}"),
        ({**TWO, "args": {"adam": {"b9": 0.9}}},
         "optimizer.args.adam.b9: not an argument of optax.adam; its arguments are b1, b2"),
        ({**TWO, "args": [0.9]},
         "optimizer.args: got [0.9], expected a mapping {optimizer: {argument: value}} over "
         "the optimizers momentum, adam"),
        ({**TWO, "args": {"adam": {"b1": "x"}}}, "optimizer.args.adam: got {'b1': 'x'}: "),
        ({**TWO, "learning_rate": {"adamw": [0.1], "adam": [0.1], "momentum": [0.1]}},
         "optimizer.learning_rate.adamw: no such optimizer in optimizer.name (momentum, adam); "
         "every entry must name one of them"),
        ({**TWO, "learning_rate": {"adam": [0.1]}},
         "optimizer.learning_rate: got entries for adam; missing momentum: with a mapping "
         "keyed by optimizer every optimizer in optimizer.name needs its own grid"),
        ({**TWO, "learning_rate": {"adam": [0.1], "mse": [0.1]}},
         "optimizer.learning_rate.mse: a mapping keyed by optimizer (momentum, adam) cannot "
         "also hold a loss"),
        ({**TWO, "learning_rate": {"adam": {"msee": [0.1]}, "momentum": [0.1]}},
         "optimizer.learning_rate.adam.msee: no such loss in losses (mse); every entry must "
         "name a loss of the sweep; did you mean 'mse'?"),
        ({**TWO, "learning_rate": {"adam": [-1], "momentum": [0.1]}},
         "optimizer.learning_rate.adam[0]: got -1, expected a number > 0"),
        ({"name": "adam", "learning_rate": {"momentum": [0.1]}},
         "optimizer.learning_rate.momentum: no such optimizer in optimizer.name (adam)"),
    ],
)
def test_bad_optimizer_lists(optimizer, want):
    assert error(losses=["mse"], optimizer=optimizer).startswith(want)


def test_race_checks_every_optimizers_grids():
    msg = error(losses=["mse"], search={"method": "race"},
                optimizer={**TWO, "learning_rate": {"adam": [0.1], "momentum": [0.1, 1.0]}})
    assert msg.startswith("search.method: race compares each group's learning rates, and "
                          "optimizer.learning_rate.adam.mse has one")
