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


# --------------------------------------------------------------------------------------------
# search.extend


def test_extension_stops_at_the_rates_the_config_accepts():
    import pandas as pd

    from lossjax import plan, sweep

    cfg = parse_config({"name": "t", "seeds": [0], "epochs": 1, "losses": ["mse"],
                        "model": {"hidden": [[4]]}, "search": {"extend": 5},
                        "optimizer": {"learning_rate": [1e-36, 1e-35]}})
    grid = sweep.expand_members(cfg)

    def rows(members):  # every rate ties: the lowest is chosen, at the lower edge
        return pd.DataFrame([{"member": m.index, "loss": m.loss, "optimizer": m.optimizer,
                              "hidden": "4", "learning_rate": m.learning_rate,
                              "weight_decay": 0.0, "init_scale": 1.0, "seed": m.seed,
                              "epoch": 1, "val_acc": 0.1, "test_acc": 0.1, "diverged": False}
                             for m in members])

    table = rows(grid)
    stages = plan.stages(cfg, grid, table)
    assert [m.learning_rate for m in stages[1].members] == [1e-37]
    table = pd.concat([table, rows(stages[1].members)], ignore_index=True)
    stages = plan.stages(cfg, grid, table)  # 1e-38 is a subnormal in float32: no more
    assert [s.kind for s in stages] == ["grid", "extend"]
    assert plan.range_ends(cfg, stages, table) == [
        "mse at 1e-37 (the next rate, 1e-38, float32 keeps only as a subnormal, losing "
        "precision)"]


# --------------------------------------------------------------------------------------------
# The environment: variables and paths that cannot run a sweep


@pytest.mark.parametrize("count", ["0", "-1", "5000", "100000"])
def test_a_host_device_count_xla_cannot_start_is_refused_at_once(count):
    from lossjax import xla_flags
    from lossjax.errors import LossjaxError

    flags = f"--xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count={count}"
    with pytest.raises(LossjaxError) as info:
        xla_flags.check({"XLA_FLAGS": flags})
    assert str(info.value).startswith(f"XLA_FLAGS: --xla_force_host_platform_device_count="
                                      f"{count}: give a count from 1 to 1,024")
    assert xla_flags._device_count_problem("--xla_force_host_platform_device_count=8") is None


def test_jax_platforms_this_machine_lacks_is_named(tmp_path):
    import os

    from lossjax import xla_flags
    from lossjax.errors import LossjaxError

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    with pytest.raises(LossjaxError) as info:  # no jax plugin for rocm is installed here
        xla_flags.check({**env, "JAX_PLATFORMS": "rocm"})
    msg = str(info.value)
    assert msg.startswith("JAX_PLATFORMS='rocm': jax cannot start it on this machine, which has ")
    assert "cpu" in msg.split("which has ")[1]


@pytest.mark.parametrize("kind", ["file", "fifo", "devnull"])
def test_a_data_dir_that_is_no_folder_is_named(tmp_path, monkeypatch, kind):
    import os

    from lossjax import data
    from lossjax.errors import DataError

    path = {"file": tmp_path / "f", "fifo": tmp_path / "p", "devnull": "/dev/null"}[kind]
    if kind == "file":
        path.write_text("x")
    elif kind == "fifo":
        os.mkfifo(path)
    monkeypatch.setenv("LOSSJAX_DATA_DIR", str(path))
    with pytest.raises(DataError) as info:
        data.info("mnist")
    assert str(info.value).startswith(f"$LOSSJAX_DATA_DIR: {path} is not a folder; give a folder")
    with pytest.raises(DataError) as info:
        data.load("mnist", data_dir=str(path))
    assert str(info.value).startswith(f"dataset.data_dir: {path} is not a folder")


def test_a_config_fifo_nothing_writes_to_is_refused(tmp_path, monkeypatch):
    import os
    import threading

    from lossjax import config

    monkeypatch.setattr(config, "FIFO_WAIT_S", 0.2)
    fifo = tmp_path / "c.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError) as info:
        config.load_config(fifo)
    assert str(info.value) == (f"{fifo}: a named pipe (FIFO) that nothing wrote to in 0.2 s; "
                               "give the config file itself")

    def write():
        with open(fifo, "w") as f:
            f.write("name: piped\n")

    monkeypatch.setattr(config, "FIFO_WAIT_S", 30.0)
    threading.Thread(target=write).start()  # a shell's <(...) is read as a file is
    assert config.load_config(fifo).name == "piped"


# --------------------------------------------------------------------------------------------
# What a sweep will need, bounded before its members are listed


@pytest.mark.parametrize(("sets", "want"), [
    (["search.extend=100000000000000000000"],
     "search.extend: 100,000,000,000,000,000,000 lets later stages add up to "
     "12,000,000,000,000,000,000,000 members to the grid's 120, which need about"),
    (["search.extend=1000000"], "search.extend: 1,000,000 lets later stages add up to "
                                "120,000,000 members"),
    (["seeds=[" + ",".join(map(str, range(100_000))) + "]"],
     "seeds: 100,000 values make a sweep of 4,000,000 members, which need about 1.02e+03 GB"),
])
def test_members_that_cannot_fit_are_refused_from_the_config_alone(sets, want):
    from lossjax import preflight
    from lossjax.config import load_config

    cfg = load_config(CONFIGS / "digits.yaml", sets)
    with pytest.raises(ConfigError) as info:
        preflight.check_member_count(cfg)
    assert str(info.value).startswith(want)
    assert "beside their parameters, and " in str(info.value)
    preflight.check_member_count(load_config(CONFIGS / "digits.yaml", ["search.extend=2"]))


# --------------------------------------------------------------------------------------------
# search replay: a grid's members only


def _digits():
    from lossjax import analysis

    folder = CONFIGS.parent / "results" / "digits"
    if not (folder / "epochs.csv").exists():
        pytest.skip("no committed digits sweep")
    return analysis.load_results(folder)


def test_replay_refuses_a_raced_folder():
    import dataclasses

    from lossjax import search
    from lossjax.errors import ResultsError

    res = _digits()
    raced = dataclasses.replace(res, config={**res.config, "search": {"method": "race"}})
    with pytest.raises(ResultsError) as info:
        search.replay_folders([raced])
    assert str(info.value) == (f"{res.path}: a raced sweep (search.method: race) has no full "
                               "grid to replay the race against; give grid folders")


def test_replay_of_a_staged_folder_replays_its_grid_members_only():
    import dataclasses

    import pandas as pd

    from lossjax import search
    from lossjax.stats import summarize

    res = _digits()
    # As if mse's highest rate had been added past the grid's edge by search.extend: its rows
    # must not enter the replay, nor the grid choice it is compared with.
    ep = res.epochs
    top = ep[(ep["loss"] == "mse") & (ep["learning_rate"] == ep.loc[ep["loss"] == "mse",
                                                                   "learning_rate"].max())]
    added = pd.DataFrame({"member": sorted(top["member"].unique()), "stage": 1,
                          "reason": "extension above the highest rate tried"})
    staged = dataclasses.replace(res, added=added)
    table = search.replay_folders([staged])
    grid = ep[~ep["member"].isin(added["member"])]
    want = search.replay(grid, summarize(grid, 0.95), (3, 6, 9, 15), 0.5)
    assert table["left_out"].eq(len(added)).all()
    assert table["grid_lr"].tolist() == want["grid_lr"].tolist()
    assert table["member_epochs"].tolist() == want["member_epochs"].tolist()
    mse = table[table["loss"] == "mse"].iloc[0]
    assert mse["rates"] == ep.loc[ep["loss"] == "mse", "learning_rate"].nunique() - 1
    assert f"its grid's members only; the {len(added)} members its later stages added" in (
        search.replay_markdown(table, 0.5))


# --------------------------------------------------------------------------------------------
# Temperature fits that found no minimum


def test_a_temperature_fit_without_a_minimum_says_so():
    import jax.numpy as jnp
    import numpy as np

    from lossjax import calibration, calibration_tables

    assert calibration_tables.TEMPERATURE_BOUNDS == (1 / calibration.T_MAX, calibration.T_MAX)
    rng = np.random.default_rng(0)
    y = jnp.asarray(rng.integers(0, 10, 200))
    mask = jnp.ones(200, bool)
    s = jnp.asarray(rng.normal(size=(200, 10)), jnp.float32) + 3 * jnp.eye(10)[y]

    def temperature(logits):
        return 1 / float(calibration.fit_inverse_temperature(logits, y, mask))

    assert 0.2 < temperature(s) < 0.5  # a minimum inside the bracket
    assert calibration_tables.unfit([temperature(s)]).tolist() == [False]
    # Constant logits: the NLL is flat, the bisection runs to a bound, which is kept and marked.
    flat = temperature(jnp.zeros((200, 10)))
    assert flat == pytest.approx(1e-4, rel=1e-3) and calibration_tables.unfit([flat])[0]
    # Logits so large that float32's softmax is one-hot: the NLL (~1e17) has no curvature left,
    # and the bisection stopped on rounding (it said exactly 1.0): no fit.
    huge = jnp.asarray(rng.normal(size=(200, 10)) * 1e17, jnp.float32)
    assert np.isnan(temperature(huge))


def test_the_mean_temperature_leaves_out_fits_at_a_bound():
    import pandas as pd

    from lossjax.stats import summarize

    rows = pd.DataFrame([{"member": i, "loss": "mse", "optimizer": "momentum", "hidden": "4",
                          "learning_rate": 0.1, "weight_decay": 0.0, "init_scale": 1.0,
                          "seed": i, "epoch": 1, "val_acc": 0.5, "test_acc": 0.5,
                          "diverged": False, "temperature": t}
                         for i, t in enumerate([1e-4, 10000.001, 2.0])])
    assert summarize(rows, 0.95)["temperature_mean"].iloc[0] == pytest.approx(2.0)
    assert summarize(rows.iloc[:2], 0.95)["temperature_mean"].isna().all()


def test_the_report_marks_fits_that_found_no_minimum():
    from lossjax import analysis, report_calibration

    folder = CONFIGS.parent / "results" / "generality_mnist_cosine"
    if not (folder / "epochs.csv").exists():
        pytest.skip("no committed generality sweep")
    lines = report_calibration.calibration_table(analysis.load_results(folder))
    assert any("10 ‡" in line or "‡ |" in line for line in lines if line.startswith("| `"))
    note = next(line for line in lines if line.startswith("‡ Temperature fits"))
    assert "ended at a bound of [0.0001, 10000]" in note and "leaves them out" in note


def test_memory_for_what_later_stages_add_names_search_extend(tmp_path):
    from lossjax import preflight, sweep
    from lossjax.config import load_config

    cfg = load_config(CONFIGS / "digits.yaml", [
        "model.hidden=[[8192, 8192]]", "search.extend=3000", "losses=[mse]", "block_size=1",
        "optimizer.learning_rate=[0.1, 0.3]"])
    grid = sweep.expand_members(cfg)
    groups = [*sweep.group_members(grid), [grid[0]] * 9000]
    with pytest.raises(ConfigError) as info:
        preflight.check_resources(cfg, groups, 64, 10, tmp_path, reserve=True)
    assert str(info.value).startswith("search.extend: later stages can add 9,000 members, which "
                                      "need about ")
    assert str(info.value).endswith("give a smaller search.extend")


def test_a_user_loss_that_ends_the_process_is_named(tmp_path, monkeypatch):
    from lossjax import preflight

    (tmp_path / "exiting_losses.py").write_text(
        "import os\n\nimport jax.numpy as jnp\n\n\n"
        "def quits(logits, labels):\n    os._exit(0)\n\n\n"
        "def fine(logits, labels):\n    return jnp.sum((logits - labels) ** 2, -1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as info:
        preflight.check_loss_exits("exiting_losses:quits", 10, "float32")
    assert str(info.value).startswith("losses: exiting_losses:quits: ended the process (exit "
                                      "status 0) when called once on a (2, 10) batch")
    preflight.check_loss_exits("exiting_losses:fine", 10, "float32")
    preflight.check_loss_exits("mse", 10, "float32")  # lossjax's own: no child
