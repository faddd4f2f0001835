"""Any optax optimizer and schedule by name (optimizer.name, .args, .schedule, .schedule_args):
the engine trains with exactly what optax computes, weight decay means what config.py says,
a group still compiles once, and a bad name or argument is a one-line config error."""

import dataclasses
import json

import jax
import numpy as np
import optax
import pandas as pd
import pytest
import yaml
from conftest import (
    TOY_BATCH,
    TOY_EPOCHS,
    TOY_HIDDEN,
    TOY_MOMENTUM,
    TOY_N,
    TOY_SEED,
    compare_params,
    textbook_params,
    toy_data,
    toy_settings,
)

from lossjax import cli, engine, losses, optimizers
from lossjax.config import config_to_dict, parse_config
from lossjax.errors import ConfigError

TOTAL_STEPS = TOY_N // TOY_BATCH * TOY_EPOCHS
F32 = lambda x: float(np.float32(x))  # noqa: E731 (the engine holds rates and decays in float32)

def _error(optimizer: dict, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config({"name": "t", "optimizer": optimizer}, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message

# ---- the engine against a plain optax loop ------------------------------------------------------

# (optimizer.name, args, schedule, schedule_args, learning rate, weight decay, the optax
# transformation a plain loop would write for it, from the float32 rate).
CASES = {
    # Unchanged from before: momentum's decay is L2 on the gradient, before the momentum.
    "momentum": ("momentum", {}, "constant", {}, 0.1, 1e-3, lambda lr: optax.chain(
        optax.add_decayed_weights(F32(1e-3)), optax.sgd(lr, momentum=TOY_MOMENTUM))),
    # ... and adam's is AdamW's decoupled decay.
    "adam": ("adam", {}, "constant", {}, 1e-3, 1e-2, lambda lr: optax.adamw(
        lr, weight_decay=F32(1e-2))),
    "cosine": ("momentum", {}, "cosine", {}, 0.1, 0.0, lambda lr: optax.sgd(
        optax.cosine_decay_schedule(lr, TOTAL_STEPS), momentum=TOY_MOMENTUM)),
    # Optimizers without a decay of their own take L2 before them, with their args.
    "sgd_nesterov": ("sgd", {"momentum": 0.8, "nesterov": True}, "constant", {}, 0.1, 1e-3,
                     lambda lr: optax.chain(optax.add_decayed_weights(F32(1e-3)),
                                            optax.sgd(lr, momentum=0.8, nesterov=True))),
    # Those with their own take it there; without decay, 0 and not their default (lion: 1e-3).
    "lion": ("lion", {"b1": 0.95}, "constant", {}, 1e-3, 1e-2, lambda lr: optax.lion(
        lr, b1=0.95, weight_decay=F32(1e-2))),
    "lion_no_decay": ("lion", {}, "constant", {}, 1e-3, 0.0, lambda lr: optax.lion(
        lr, weight_decay=0.0)),
}

def _engine_final(name, args, schedule, schedule_args, rate, wd):
    settings = dataclasses.replace(
        toy_settings("float32"), optimizer=name, optimizer_args=tuple(args.items()),
        schedule=schedule, schedule_args=tuple(schedule_args.items()), weight_decay=wd > 0)
    member = engine.Member(0, "cross_entropy", rate, wd, 1.0, TOY_SEED, TOY_HIDDEN)
    # Only the member's loss in the program: bit for bit with the loop (test_pinned says why).
    g = engine.Group(settings, [member], ["cross_entropy"], [losses.LOSSES["cross_entropy"]],
                     toy_data(), engine.make_mesh())
    state = g.init_state()
    for epoch in range(TOY_EPOCHS):
        state, _ = g.train_epoch(state, epoch)
    return jax.tree.map(lambda a: np.array(a[0]), state[0]["params"])

@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_engine_equals_a_plain_optax_loop(case):
    name, args, schedule, schedule_args, rate, wd, make = CASES[case]
    final = _engine_final(name, args, schedule, schedule_args, rate, wd)
    # The textbook loop (test_pinned's reference) with the case's transformation, at the case's
    # float32 rate, in place of its optax.sgd(rate, momentum=...).
    _, book_final = textbook_params("float32", "cross_entropy", tx=make(F32(rate)))
    compare_params(book_final, final)

# ---- one program for the whole group --------------------------------------------------------

def _count(settings, rates, decays):
    members = [engine.Member(i, "cross_entropy", lr, wd, 1.0, i, TOY_HIDDEN)
               for i, (lr, wd) in enumerate(zip(rates, decays, strict=True))]
    engine.clear_programs()  # this group builds, and counts, its own programs
    g = engine.Group(settings, members, ["cross_entropy"], [losses.LOSSES["cross_entropy"]],
                     toy_data(), engine.make_mesh())
    state = g.init_state()
    state, _ = g.train_epoch(state, 0)
    g.evaluate(state)
    first = g.compiled_counts()
    state, _ = g.train_epoch(state, 1)
    g.evaluate(state)
    assert g.compiled_counts() == first  # nothing new in the second epoch
    return first, g, state

@pytest.mark.slow
def test_a_group_of_rates_compiles_as_often_as_before():
    base = dataclasses.replace(toy_settings("float32"), block_size=2)
    before, _, _ = _count(base, [0.1], [0.0])
    rates, decays = [1e-4, 3e-4, 1e-3, 3e-3], [1e-2, 1e-3, 1e-2, 1e-3]
    lion = dataclasses.replace(base, optimizer="lion", optimizer_args=(("b1", 0.95),),
                               schedule="warmup_cosine_decay",
                               schedule_args=(("warmup_steps", 3),), weight_decay=True)
    after, g, state = _count(lion, rates, decays)
    # Four members in two calls, a schedule and decoupled decay: still one program each for
    # init, epoch and evaluation per split, as one plain momentum member.
    assert after == before == {"init": 1, "epoch": 1, "eval": 2}
    # The rates and decays are data: the optimizer state holds each member's own.
    held = {k: np.concatenate([np.asarray(st["opt"].hyperparams[k]) for st in state])
            for k in ("learning_rate", "weight_decay")}
    np.testing.assert_array_equal(held["weight_decay"], np.float32(decays))
    # The rate at the last step, through the schedule: the member's rate times the same
    # fraction for all.
    fraction = held["learning_rate"] / np.float32(rates)
    np.testing.assert_allclose(fraction, fraction[0], rtol=1e-6)
    assert 0 < fraction[0] < 1

def test_state_slots():
    base = toy_settings("float32")
    slots = {name: optimizers.state_slots(name, base.momentum, base.optimizer_args,
                                          base.weight_decay, base.dtype)
             for name in ("sgd", "momentum", "adam", "lion", "adan")}
    assert slots == {"sgd": 0, "momentum": 1, "adam": 2, "lion": 1, "adan": 4}

# ---- the config -------------------------------------------------------------------------------

def test_any_optax_optimizer_and_schedule_by_name():
    c = parse_config({"name": "t", "optimizer": {
        "name": "adamw", "args": {"b1": 0.95, "nesterov": True},
        "schedule": "warmup_cosine_decay",
        "schedule_args": {"warmup_steps": 100, "end_value": 0.01}}})
    assert (c.optimizer.name, c.optimizer.schedule) == ("adamw", "warmup_cosine_decay")
    assert c.optimizer.args == {"b1": 0.95, "nesterov": True}
    assert c.optimizer.schedule_args == {"warmup_steps": 100, "end_value": 0.01}
    assert parse_config(config_to_dict(c)) == c and hash(c)
    # Lists are kept as tuples, mappings read-only: the config stays hashable.
    c = parse_config({"name": "t", "optimizer": {
        "schedule": "piecewise_constant",
        "schedule_args": {"boundaries_and_scales": {100: 0.1, 200: 0.1}}}})
    assert parse_config(config_to_dict(c)) == c and hash(c)
    for name in ("sgd", "rmsprop", "adagrad", "adafactor", "lamb", "nadam"):
        assert parse_config({"name": "t", "optimizer": {"name": name}}).optimizer.name == name

def test_args_by_override():
    c = parse_config({"name": "t"}, ["optimizer.name=lion", "optimizer.args.b1=0.8",
                                     "optimizer.schedule=cosine",
                                     "optimizer.schedule_args.alpha=0.1"])
    assert c.optimizer.args == {"b1": 0.8} and c.optimizer.schedule_args == {"alpha": 0.1}

@pytest.mark.parametrize(
    "optimizer, message",
    [
        ({"name": "lino"}, "optimizer.name: got 'lino', expected one of sgd, momentum, adam, "),
        ({"name": "lion", "args": {"beta1": 0.9}},
         "optimizer.args.beta1: not an argument of optax.lion; its arguments are b1, b2, "
         "mu_dtype, mask"),
        ({"name": "adam", "args": {"b_1": 0.9}},
         "optimizer.args.b_1: not an argument of optax.adam; its arguments are b1, b2, eps, "
         "eps_root, mu_dtype, nesterov; did you mean 'optimizer.args.b1'?"),
        ({"name": "momentum", "args": {"momentum": 0.5}},
         "optimizer.args.momentum: is set by optimizer.momentum; give it there and remove it "
         "from optimizer.args"),
        ({"name": "adamw", "args": {"weight_decay": 0.1}},
         "optimizer.args.weight_decay: is set by optimizer.weight_decay"),
        ({"name": "adafactor", "args": {"weight_decay_rate": 0.1}},
         "optimizer.args.weight_decay_rate: is set by optimizer.weight_decay"),
        ({"name": "sgd", "args": {"learning_rate": 0.1}},
         "optimizer.args.learning_rate: is set by optimizer.learning_rate"),
        ({"name": "adam", "args": [0.9]},
         "optimizer.args: got [0.9], expected a mapping of keyword arguments of optax.adam"),
        ({"name": "adam", "args": {"b1": ".9"}},
         "optimizer.args: got {'b1': '.9'}: building optax.adam with it and tracing one step "
         "raised TypeError"),
        ({"name": "adam", "args": {"b1": float("nan")}},
         "optimizer.args.b1: got nan, expected a finite number"),
        ({"schedule": "warmup_cosine_decay_schedule"},
         "did you mean 'warmup_cosine_decay'?"),
        ({"schedule": "warmup_cosine_decay"},
         "optimizer.schedule_args: got {}, missing warmup_steps: "
         "optax.warmup_cosine_decay_schedule has no default for it; add it"),
        ({"schedule": "cosine", "schedule_args": {"init_value": 1.0}},
         "optimizer.schedule_args.init_value: is set by optimizer.learning_rate"),
        ({"schedule": "constant", "schedule_args": {"alpha": 0.1}},
         "optimizer.schedule_args.alpha: not an argument of the 'constant' schedule; it takes "
         "none"),
        ({"schedule": "piecewise_interpolate", "schedule_args": {"interpolate_type": "cubic"}},
         "optimizer.schedule_args: got {'interpolate_type': 'cubic'}: building "
         "optax.piecewise_interpolate_schedule with it and tracing one step raised ValueError"),
    ],
)
def test_bad_optimizer_is_a_one_line_error(optimizer, message):
    assert message in _error(optimizer)

# ---- a sweep ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_lion_sweep_on_digits(tmp_path):
    cfg = {
        "name": "lion", "seeds": [0], "epochs": 2, "batch_size": 64, "block_size": 1,
        "losses": ["cross_entropy"], "dataset": {"name": "digits"}, "model": {"hidden": [[16]]},
        "optimizer": {"name": "lion", "args": {"b1": 0.9}, "learning_rate": [3e-2],
                      "weight_decay": [1e-2], "schedule": "cosine"},
        "eval": {"splits": ["val", "test"]},
        "output": {"dir": str(tmp_path)},
    }
    path = tmp_path / "lion.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli.main(["sweep", str(path), "--quiet"]) == 0
    folder = tmp_path / "lion"
    assert json.loads((folder / "status.json").read_text()) == {"complete": True, "format": 2}
    saved = yaml.safe_load((folder / "config.yaml").read_text())["optimizer"]
    assert (saved["name"], saved["args"], saved["schedule"]) == ("lion", {"b1": 0.9}, "cosine")

    table = pd.read_csv(folder / "epochs.csv")
    last = table[table["epoch"] == 2]
    assert len(last) == 1 and not last["diverged"].any()
    assert (last["test_acc"] > 0.7).all()  # lion learns digits in two epochs


def test_schedule_checked_against_the_run_length():
    # The config does not know the run's length and accepts a warmup of 100 steps; a run of 50
    # steps cannot hold it.
    optimizers.check_schedule("warmup_cosine_decay", {"warmup_steps": 100})
    with pytest.raises(ValueError, match="decay_steps"):
        optimizers.check_schedule("warmup_cosine_decay", {"warmup_steps": 100}, total_steps=50)
