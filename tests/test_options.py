"""Every config option that reaches the engine, trained once in a tiny digits sweep through
``lossjax sweep`` (``cli.main``), each checked for its effect, not only for finishing.

A sweep compiles once per group (several seconds on a CPU), so the options are packed into a
few sweeps, each run once per module (module-scoped fixtures; ``make test`` keeps a module's
tests on one pytest-xdist worker with ``--dist loadscope``) and shared by the tests that read
it. An option's effect is read from what the engine started from and ended with (recorded by
wrapping ``engine.Group.init_state`` and ``train_epoch``), from ``epochs.csv``, and by
recomputing the evaluation metrics from the final parameters with the model the option
describes.

Plots are not drawn here (tests/test_plots.py and tests/test_pinned.py draw them): they would
add two seconds to every sweep and check nothing about the options.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest
import yaml
from conftest import run_in_subprocess

from lossjax import cli, data, engine, plots
from lossjax.model import MLP

BASE = {
    "name": "options",
    "seeds": [0],
    "epochs": 2,
    "batch_size": 64,
    "block_size": 1,
    "losses": ["cross_entropy"],
    "dataset": {"name": "digits"},
    "model": {"hidden": [[8]]},
    "optimizer": {"learning_rate": [0.1]},
    "eval": {"target_accuracy": 0.5},
}

# A user loss: cross-entropy plus 10. Its gradient is cross-entropy's, so it learns as
# cross-entropy does, and its value (what train_loss reports) tells it apart from any built-in.
USER_LOSSES = textwrap.dedent("""
    from lossjax.losses import cross_entropy

    def shifted_ce(logits, labels):
        return cross_entropy(logits, labels) + 10.0
""")

# name: the changes to BASE. Each sweep carries several options whose effects can be told
# apart; "default" is the twin that cosine and weight decay are compared with.
SWEEPS = {
    # momentum 0.9, constant rate, relu, lecun_normal, float32, every split, every epoch;
    # two init scales and two weight decays: two groups (decay or not), four members.
    "default": {"model": {"hidden": [[8]], "init_scale": [1.0, 2.0]},
                "optimizer": {"learning_rate": [0.1], "weight_decay": [0.0, 0.05]}},
    "cosine": {"optimizer": {"learning_rate": [0.1], "schedule": "cosine"}},
    "sgd": {"epochs": 3, "batch_size": 32,
            "dataset": {"name": "digits", "standardize": True},
            "model": {"hidden": [[8]], "activation": "gelu", "init": "he_normal"},
            "optimizer": {"name": "sgd", "learning_rate": [0.3]},
            "eval": {"every": 2, "splits": ["train", "val"], "target_accuracy": 0.5}},
    "adam": {"seeds": [0, 1], "block_size": 2,
             "losses": ["options_user_losses:shifted_ce"],
             "model": {"hidden": [[8]], "activation": "tanh", "init": "glorot_uniform"},
             "optimizer": {"name": "adam", "learning_rate": [0.01]},
             "eval": {"splits": ["val", "test"], "target_accuracy": 0.5}},
    "bfloat16": {"model": {"hidden": [[8, 8]], "activation": "sigmoid", "init": "glorot_normal",
                           "dtype": "bfloat16"},
                 "optimizer": {"learning_rate": [2.0], "momentum": 0.5}},
}


@dataclasses.dataclass
class Recorded:
    """One engine group of a sweep: its settings and members, and its state (host arrays with a
    leading member axis) after init and after each epoch."""

    settings: engine.TrainSettings
    members: list[engine.Member]
    init: dict
    epochs: list[dict] = dataclasses.field(default_factory=list)

    def member(self, **fields) -> int:
        (i,) = [i for i, m in enumerate(self.members)
                if all(getattr(m, k) == v for k, v in fields.items())]
        return i


@dataclasses.dataclass
class Run:
    config: dict  # as the sweep resolved it (its config.yaml): every default filled in
    folder: Path
    table: pd.DataFrame
    groups: list[Recorded]


def _host_state(group, state) -> dict:
    return jax.tree.map(lambda *xs: np.concatenate([engine.to_host(x) for x in xs])
                        [: len(group.members)], *state)


def _merge(base: dict, changes: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in changes.items():
        out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def run_sweep(tmp: Path, changes: dict, monkeypatch) -> Run:
    """Runs BASE + ``changes`` through ``cli.main`` into ``tmp`` and records every group."""
    cfg = _merge(BASE, changes)
    cfg["output"] = {"dir": str(tmp / "runs")}
    path = tmp / "options.yaml"
    path.write_text(yaml.safe_dump(cfg))
    (tmp / "options_user_losses.py").write_text(USER_LOSSES)
    monkeypatch.syspath_prepend(str(tmp))

    groups: dict[int, Recorded] = {}
    real_init, real_epoch = engine.Group.init_state, engine.Group.train_epoch

    def init_state(self):
        state = real_init(self)
        groups[id(self)] = Recorded(self.settings, list(self.members), _host_state(self, state))
        return state

    def train_epoch(self, state, epoch, active=None):
        state, metrics = real_epoch(self, state, epoch, active)
        groups[id(self)].epochs.append(_host_state(self, state))
        return state, metrics

    monkeypatch.setattr(engine.Group, "init_state", init_state)
    monkeypatch.setattr(engine.Group, "train_epoch", train_epoch)
    monkeypatch.setattr(plots, "plot_results", lambda results_dir: [])
    try:
        assert cli.main(["sweep", str(path), "--quiet"]) == 0
    finally:
        sys.modules.pop("options_user_losses", None)
    folder = tmp / "runs" / cfg["name"]
    resolved = yaml.safe_load((folder / "config.yaml").read_text())
    return Run(resolved, folder, pd.read_csv(folder / "epochs.csv"), list(groups.values()))


def _sweep_fixture(name: str):
    @pytest.fixture(scope="module")
    def fixture(tmp_path_factory):
        with pytest.MonkeyPatch.context() as mp:
            return run_sweep(tmp_path_factory.mktemp(name), SWEEPS[name], mp)

    return fixture


default_run = _sweep_fixture("default")
cosine_run = _sweep_fixture("cosine")
sgd_run = _sweep_fixture("sgd")
adam_run = _sweep_fixture("adam")
bfloat16_run = _sweep_fixture("bfloat16")


# ---- helpers ----------------------------------------------------------------------------------


def _params(state: dict, i: int) -> dict:
    return jax.tree.map(lambda a: a[i], state["params"])


def _kernels(params) -> list[np.ndarray]:
    return [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)
            if path[-1].key == "kernel"]


def _flat(params) -> np.ndarray:
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(params)])


def _param_shaped_opt_leaves(state: dict) -> int:
    """How many optimizer-state leaves have a parameter's shape (momentum: 1 per parameter,
    Adam: 2, SGD: 0)."""
    shapes = [x.shape for x in jax.tree.leaves(state["params"])]
    return sum(x.shape in shapes for x in jax.tree.leaves(state["opt"]))


def _flax_init(model_cfg: dict, seed: int, hidden) -> dict:
    """What ``init`` should draw: Flax's initializer for the seed's init key (init_scale 1)."""
    dtype = model_cfg["dtype"]
    model = MLP(hidden=tuple(hidden), num_classes=10, activation=model_cfg["activation"],
                initializer=model_cfg["init"], dtype=dtype)
    feat = jnp.float64 if dtype == "float64" else jnp.float32
    params = model.init(jax.random.fold_in(jax.random.key(seed), 0), jnp.zeros((1, 64), feat))
    return jax.tree.map(np.asarray, params)


def _assert_tree_equal(a, b) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


_DIGITS: dict[tuple, data.Dataset] = {}


def _evaluate(run: Run, params, split: str, activation: str, standardize: bool,
              dtype: str = "float32", hidden=(8,)) -> tuple[float, float]:
    """Accuracy and softmax cross-entropy of ``params`` on a split of the run's dataset,
    computed here."""
    d = run.config["dataset"]
    key = (d["name"], d["val_size"], d["split_seed"], standardize)
    if key not in _DIGITS:
        _DIGITS[key] = data.preprocess(
            data.load(d["name"], val_size=d["val_size"], split_seed=d["split_seed"]),
            standardize=standardize)
    ds = _DIGITS[key]
    x, y = {"val": (ds.x_val, ds.y_val), "test": (ds.x_test, ds.y_test)}[split]
    model = MLP(hidden=tuple(hidden), num_classes=10, activation=activation, dtype=dtype)
    feat = np.float64 if dtype == "float64" else np.float32

    @jax.jit  # compiled as the engine's evaluation is (bfloat16 rounds otherwise op by op)
    def metrics(params, x, y):
        logits = model.apply(params, x).astype(jnp.float32)
        return (jnp.mean(jnp.argmax(logits, -1) == y),
                jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y)))

    acc, ce = metrics(params, x.astype(feat), y)
    return float(acc), float(ce)


def _last(run: Run, member: int = 0) -> pd.Series:
    rows = run.table[run.table["member"] == member]
    return rows[rows["epoch"] == rows["epoch"].max()].iloc[0]


def _assert_recomputed(run: Run, group: Recorded, member: int, split: str, **model) -> None:
    """The engine's final metrics for ``member`` are those of the model that ``model``
    describes (to float32 rounding), and not those of the model with any one of its options
    changed back (relu, features standardized or not, float32): each option had its effect."""
    params = _params(group.epochs[-1], member)
    row = _last(run, group.members[member].index)
    acc, ce = _evaluate(run, params, split, **model)
    assert abs(acc - row[f"{split}_acc"]) < 1e-6
    np.testing.assert_allclose(ce, row[f"{split}_ce"], rtol=1e-6)
    others = [{"standardize": not model["standardize"]}]
    if model["activation"] != "relu":
        others.append({"activation": "relu"})
    if model.get("dtype", "float32") == "bfloat16":
        others.append({"dtype": "float32"})  # measured: 1.4e-4 relative off
    for change in others:
        _, other = _evaluate(run, params, split, **{**model, **change})
        assert abs(other - row[f"{split}_ce"]) > 2e-5 * row[f"{split}_ce"], change


def _check_trained(run: Run, chance: float = 0.1) -> None:
    """Finished, every member finite and learning: loss down, validation above chance."""
    t = run.table
    epochs = run.config["epochs"]
    assert sorted(t["epoch"].unique()) == list(range(1, epochs + 1))
    assert not t["diverged"].any()
    assert np.isfinite(t["train_loss"]).all() and np.isfinite(t["grad_norm"]).all()
    for _, rows in t.groupby("member"):
        rows = rows.sort_values("epoch")
        assert rows["train_loss"].iloc[-1] < rows["train_loss"].iloc[0]
        assert rows["val_acc"].iloc[-1] > 3 * chance
    for g in run.groups:
        assert len(g.epochs) == epochs
        for state in (g.init, *g.epochs):
            assert all(np.isfinite(x).all() for x in jax.tree.leaves(state["params"]))


def _check_settings(run: Run) -> None:
    """The config's values are what each engine group was built with."""
    cfg, model, opt = run.config, run.config["model"], run.config["optimizer"]
    for g in run.groups:
        s = g.settings
        assert (s.activation, s.init, s.dtype) == (
            model["activation"], model["init"], model["dtype"])
        assert (s.optimizer, s.momentum, s.schedule) == (
            opt["name"], opt["momentum"], opt["schedule"])
        assert (s.batch_size, s.epochs, s.block_size) == (
            cfg["batch_size"], cfg["epochs"], cfg["block_size"])
        assert s.weight_decay == any(m.weight_decay > 0 for m in g.members)
    members = sorted((m for g in run.groups for m in g.members), key=lambda m: m.index)
    assert [m.index for m in members] == sorted(run.table["member"].unique().tolist())
    assert {m.seed for m in members} == set(cfg["seeds"])
    assert {m.hidden for m in members} == {tuple(h) for h in model["hidden"]}
    assert {m.init_scale for m in members} == set(model["init_scale"])
    assert {m.weight_decay for m in members} == set(opt["weight_decay"])
    assert {(m.loss, m.learning_rate) for m in members} == {
        (loss, lr) for loss, rates in opt["learning_rate"].items() for lr in rates}


# ---- default: momentum, constant rate, init_scale, weight decay -------------------------------


def test_default_options_train_with_momentum(default_run):
    _check_trained(default_run)
    _check_settings(default_run)
    assert len(default_run.groups) == 2  # with and without weight decay
    for g in default_run.groups:
        assert _param_shaped_opt_leaves(g.epochs[-1]) == len(jax.tree.leaves(g.init["params"]))
    # every epoch, every split evaluated
    assert default_run.table[["train_acc", "val_acc", "test_acc", "test_ce"]].notna().all().all()


def test_init_scale_multiplies_the_initial_weights(default_run):
    expected = _flax_init(default_run.config["model"], seed=0, hidden=(8,))
    for g in default_run.groups:
        one = _params(g.init, g.member(init_scale=1.0))
        two = _params(g.init, g.member(init_scale=2.0))
        _assert_tree_equal(one, expected)  # lecun_normal, as Flax draws it for the seed
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(one),
                                jax.tree.leaves(two), strict=True):
            # kernels doubled (exactly: a power of two), biases (zeros) unchanged
            factor = 2.0 if path[-1].key == "kernel" else 1.0
            np.testing.assert_array_equal(b, a * np.float32(factor))
    # and the larger start trains to other numbers
    t = default_run.table
    final = t[t["epoch"] == 2].set_index(["init_scale", "weight_decay"])["train_loss"]
    assert final[(1.0, 0.0)] != final[(2.0, 0.0)]


def test_weight_decay_shrinks_the_weights(default_run):
    (plain,) = [g for g in default_run.groups if not g.settings.weight_decay]
    (decayed,) = [g for g in default_run.groups if g.settings.weight_decay]
    i, j = plain.member(init_scale=1.0), decayed.member(init_scale=1.0)
    _assert_tree_equal(_params(plain.init, i), _params(decayed.init, j))  # same start
    norm = [np.linalg.norm(np.concatenate([k.ravel() for k in _kernels(_params(g.epochs[-1], m))]))
            for g, m in ((plain, i), (decayed, j))]
    # measured: 0.59 of the undecayed norm after 44 steps at rate 0.1, momentum 0.9
    assert norm[1] < 0.9 * norm[0]


# ---- schedule -----------------------------------------------------------------------------------


def _epoch_steps(g: Recorded, member: int) -> list[float]:
    """How far the parameters moved in each epoch."""
    states = [g.init, *g.epochs]
    return [float(np.linalg.norm(_flat(_params(b, member)) - _flat(_params(a, member))))
            for a, b in zip(states[:-1], states[1:], strict=True)]


@pytest.mark.slow
def test_cosine_schedule_slows_the_last_epoch(default_run, cosine_run):
    _check_trained(cosine_run)
    _check_settings(cosine_run)
    (plain,) = [g for g in default_run.groups if not g.settings.weight_decay]
    (cos,) = cosine_run.groups
    i = plain.member(init_scale=1.0)
    # Same start and batches as the default sweep's member; the cosine rate averages 82% of the
    # peak over the first epoch and 18% over the last. Measured: the last epoch moves the
    # parameters 0.42 times as far as the first under cosine, 1.44 times under constant.
    _assert_tree_equal(_params(cos.init, 0), _params(plain.init, i))
    constant, decayed = _epoch_steps(plain, i), _epoch_steps(cos, 0)
    assert decayed[0] < constant[0]
    assert decayed[-1] / decayed[0] < 0.5 * constant[-1] / constant[0]


# ---- sgd: gelu, he_normal, standardize, eval.every, eval.splits without test ------------------


def test_sgd_gelu_he_normal_standardized(sgd_run):
    _check_trained(sgd_run)
    _check_settings(sgd_run)
    (g,) = sgd_run.groups
    assert _param_shaped_opt_leaves(g.epochs[-1]) == 0  # plain SGD keeps no velocity
    he = _flax_init(sgd_run.config["model"], seed=0, hidden=(8,))
    _assert_tree_equal(_params(g.init, 0), he)
    lecun = _flax_init({**sgd_run.config["model"], "init": "lecun_normal"}, seed=0, hidden=(8,))
    assert not np.array_equal(_kernels(he)[0], _kernels(lecun)[0])
    # gelu on standardized features is what was trained and evaluated
    _assert_recomputed(sgd_run, g, 0, "val", activation="gelu", standardize=True)


def test_eval_every_2_and_splits_without_test(sgd_run):
    t = sgd_run.table.set_index("epoch")
    # epochs 1, 2, 3: evaluated after 2 and after the last; never on test
    assert t["val_acc"].isna().tolist() == [True, False, False]
    assert t["val_ce"].isna().tolist() == [True, False, False]
    assert t[["test_acc", "test_ce"]].isna().all().all()
    assert t[["train_loss", "train_acc"]].notna().all().all()


# ---- adam: tanh, glorot_uniform, a user loss, splits without train, block_size 2 -------------


@pytest.mark.slow  # its own sweep: kept out of the fast tier
def test_adam_tanh_glorot_uniform(adam_run):
    _check_trained(adam_run)
    _check_settings(adam_run)
    (g,) = adam_run.groups
    params = jax.tree.leaves(g.init["params"])
    assert _param_shaped_opt_leaves(g.epochs[-1]) == 2 * len(params)  # first and second moments
    for seed in (0, 1):
        i = g.member(seed=seed)
        init = _params(g.init, i)
        _assert_tree_equal(init, _flax_init(adam_run.config["model"], seed=seed, hidden=(8,)))
        for k, (fan_in, fan_out) in zip(_kernels(init), [(64, 8), (8, 10)], strict=True):
            assert np.abs(k).max() <= math.sqrt(6 / (fan_in + fan_out))
        _assert_recomputed(adam_run, g, i, "test", activation="tanh",
                           standardize=False)


@pytest.mark.slow
def test_a_user_loss_is_what_trains(adam_run):
    # train_loss is the mean of the user's loss: cross-entropy (between 0 and log 10 here)
    # plus 10; the model learns, as with cross-entropy.
    t = adam_run.table
    assert t["loss"].eq("options_user_losses:shifted_ce").all()
    assert (t["train_loss"] > 10).all() and (t["train_loss"] < 10 + math.log(10)).all()
    assert (t[t["epoch"] == 2]["val_acc"] > 0.6).all()


@pytest.mark.slow
def test_splits_without_train_and_block_of_two(adam_run):
    t = adam_run.table
    assert t["train_acc"].isna().all()
    assert t[["train_loss", "val_acc", "test_acc"]].notna().all().all()
    # two seeds in one block: two members with their own numbers
    assert sorted(t["seed"].unique()) == [0, 1]
    last = t[t["epoch"] == 2]
    assert last["train_loss"].nunique() == 2


# ---- bfloat16: sigmoid, glorot_normal, momentum 0.5, two hidden layers -------------------------


def _per_parameter(state) -> list:
    """The parameters and the parameter-shaped optimizer state (a member axis and at least one
    more), without the optimizer's per-member step count and injected hyperparameters."""
    return [x for x in jax.tree.leaves((state["params"], state["opt"])) if x.ndim >= 2]


@pytest.mark.slow  # its own sweep: kept out of the fast tier
def test_bfloat16_sigmoid_glorot_normal(bfloat16_run):
    _check_trained(bfloat16_run)
    _check_settings(bfloat16_run)
    (g,) = bfloat16_run.groups
    init = _params(g.init, 0)
    _assert_tree_equal(init, _flax_init(bfloat16_run.config["model"], seed=0, hidden=(8, 8)))
    assert [k.shape for k in _kernels(init)] == [(64, 8), (8, 8), (8, 10)]
    # bfloat16 computes, float32 parameters (and optimizer state) are kept
    final = g.epochs[-1]
    assert {x.dtype for x in _per_parameter(final)} == {np.dtype(np.float32)}
    _assert_recomputed(bfloat16_run, g, 0, "val", activation="sigmoid",
                       standardize=False, dtype="bfloat16", hidden=(8, 8))


# ---- float64 ---------------------------------------------------------------------------------

FLOAT64 = textwrap.dedent("""
    import sys
    from pathlib import Path
    import jax, numpy as np, pytest
    sys.path.insert(0, {tests!r})
    import test_options as t
    changes = {{"model": {{"hidden": [[8], []], "dtype": "float64"}}}}  # and a linear model
    with pytest.MonkeyPatch.context() as mp:
        run = t.run_sweep(Path({tmp!r}), changes, mp)
    t._check_trained(run)
    t._check_settings(run)
    assert [g.settings.hidden for g in run.groups] == [(8,), ()]
    assert not jax.config.jax_enable_x64  # the sweep's 64-bit mode ended with it
    with jax.enable_x64(True):  # the references, in float64 too
        for g in run.groups:
            for state in (g.init, g.epochs[-1]):
                assert {{x.dtype for x in t._per_parameter(state)}} == {{np.dtype(np.float64)}}
            init = t._params(g.init, 0)
            t._assert_tree_equal(init, t._flax_init(run.config["model"], seed=0,
                                                    hidden=g.settings.hidden))
            shapes = [k.shape for k in t._kernels(init)]
            assert shapes == ([(64, 8), (8, 10)] if g.settings.hidden else [(64, 10)])
            t._assert_recomputed(run, g, 0, "val", activation="relu", standardize=False,
                                 dtype="float64", hidden=g.settings.hidden)
    print("FLOAT64-OK")
""")


@pytest.mark.slow
def test_float64_and_a_linear_model(tmp_path):
    # A subprocess: the float64 run must not share compiled programs or 64-bit state with
    # the float32 tests of this process.
    code = FLOAT64.format(tests=str(Path(__file__).parent), tmp=str(tmp_path))
    run_in_subprocess(code, "FLOAT64-OK")
