"""The stages after a sweep's grid (``lossjax.plan``): rates added past a grid edge, confirmation
seeds at the chosen rates, what the summary makes of them, and that a staged sweep trains the
grid's numbers and resumes exactly."""

import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import assert_same_files

from lossjax import analysis, cli, config, plan, sweep
from lossjax.stats import summarize

BASE = {"name": "staged", "seeds": [0, 1], "epochs": 2, "losses": ["mse"],
        "model": {"hidden": [[16]]}, "optimizer": {"learning_rate": [0.1, 0.3]}}


def _cfg(extend=2, confirm=(), method="grid"):
    search = {"method": method, "extend": extend}
    if method == "race":
        search["rungs"] = [1]
    return config.parse_config({**BASE, "search": search, "confirm": {"seeds": list(confirm)}})


def _rows(members, acc: dict[float, float], epochs=2, diverged=()) -> pd.DataFrame:
    """Each member's rows: validation accuracy by rate (plus a little per seed), every epoch."""
    return pd.DataFrame([{"member": m.index, "loss": m.loss, "optimizer": m.optimizer,
                          "hidden": "16", "learning_rate": m.learning_rate, "weight_decay": 0.0,
                          "init_scale": 1.0, "seed": m.seed, "epoch": e,
                          "val_acc": acc[m.learning_rate] + 0.001 * m.seed,
                          "test_acc": acc[m.learning_rate],
                          "diverged": m.learning_rate in diverged}
                         for m in members for e in range(1, epochs + 1)])


def _all(stages):
    return [m for s in stages for m in s.members]


def test_a_rate_at_the_top_edge_adds_the_next_one_on_every_seed_until_extend_runs_out():
    cfg = _cfg(extend=2, confirm=[5])
    grid = sweep.expand_members(cfg)
    table = _rows(grid, {0.1: 0.5, 0.3: 0.8})
    stages = plan.stages(cfg, grid, table)
    assert [s.kind for s in stages] == ["grid", "extend"]
    added = stages[1].members
    assert [(m.index, m.learning_rate, m.seed) for m in added] == [(4, 0.9, 0), (5, 0.9, 1)]
    # Nothing more until the added members have finished.
    assert plan.stages(cfg, grid, table) == stages
    table = pd.concat([table, _rows(added, {0.9: 0.9})], ignore_index=True)
    stages = plan.stages(cfg, grid, table)
    assert [s.kind for s in stages] == ["grid", "extend", "extend"]
    assert {m.learning_rate for m in stages[2].members} == {2.7}
    # 2.7 is worse: the choice, 0.9, is no edge any more; the confirmation seed trains there.
    table = pd.concat([table, _rows(stages[2].members, {2.7: 0.2})], ignore_index=True)
    stages = plan.stages(cfg, grid, table)
    assert [s.kind for s in stages] == ["grid", "extend", "extend", "confirm"]
    assert [(m.index, m.learning_rate, m.seed) for m in stages[3].members] == [(8, 0.9, 5)]
    assert plan.added_table(stages)["stage"].tolist() == [1, 1, 2, 2, 3]
    table = pd.concat([table, _rows(stages[3].members, {0.9: 0.9})], ignore_index=True)
    assert plan.stages(cfg, grid, table) == stages  # the last stage


def test_extend_bounds_the_rates_a_group_adds_and_the_lower_edge_extends_downwards():
    cfg = _cfg(extend=1)
    grid = sweep.expand_members(cfg)
    table = _rows(grid, {0.1: 0.9, 0.3: 0.5})
    stages = plan.stages(cfg, grid, table)
    assert [m.learning_rate for m in stages[1].members] == [0.0333333333333] * 2
    table = pd.concat([table, _rows(stages[1].members, {0.0333333333333: 0.95})],
                      ignore_index=True)
    assert [s.kind for s in plan.stages(cfg, grid, table)] == ["grid", "extend"]
    # A choice inside the grid, or a group whose every member diverged, adds nothing.
    inside = config.parse_config({**BASE, "optimizer": {"learning_rate": [0.1, 0.3, 1.0]},
                                  "search": {"extend": 1}})
    members = sweep.expand_members(inside)
    assert len(plan.stages(inside, members, _rows(members, {0.1: .5, 0.3: .9, 1.0: .5}))) == 1
    gone = _rows(members, {0.1: .5, 0.3: .9, 1.0: .5}, diverged=(0.1, 0.3, 1.0))
    assert len(plan.stages(inside, members, gone)) == 1


def test_a_race_judges_an_added_rate_against_the_rates_still_training_and_drops_only_it():
    cfg = _cfg(extend=1, method="race")
    grid = sweep.expand_members(cfg)
    table = _rows(grid, {0.1: 0.5, 0.3: 0.8})
    stages = plan.stages(cfg, grid, table)
    stopped = plan.stops(cfg, stages, table)
    assert sorted(stopped) == [0, 1]  # 0.1 dropped at the rung; 0.3 is the leader
    # The added 0.9 is far behind 0.3 at the rung: dropped; 0.3's members keep their fate.
    table = pd.concat([table, _rows(stages[1].members, {0.9: 0.1}, epochs=1)], ignore_index=True)
    stopped = plan.stops(cfg, stages, table)
    assert sorted(stopped) == [0, 1, 4, 5]
    assert {stopped[m].reason for m in (4, 5)} == {"dropped at epoch 1"}
    # Had it led, it could drop nothing of the grid's after the fact.
    lead = pd.concat([table[table["member"] < 4], _rows(stages[1].members, {0.9: 0.99})],
                     ignore_index=True)
    assert sorted(plan.stops(cfg, stages, lead)) == [0, 1]


def test_the_summary_chooses_on_the_searched_seeds_and_reports_every_seed_at_the_rate():
    cfg = _cfg(extend=0, confirm=[5, 6])
    grid = sweep.expand_members(cfg)
    table = _rows(grid, {0.1: 0.5, 0.3: 0.8})
    stages = plan.stages(cfg, grid, table)
    assert [(m.learning_rate, m.seed) for m in stages[1].members] == [(0.3, 5), (0.3, 6)]
    # The confirmation seeds do worse: they must not move the choice, only what it reports.
    table = pd.concat([table, _rows(stages[1].members, {0.3: 0.1})], ignore_index=True)
    confirm = plan.confirming(plan.stages(cfg, grid, table))
    row = summarize(table, 0.5, confirm=confirm).iloc[0]
    assert row["learning_rate"] == 0.3 and row["n_seeds"] == 4
    assert math.isclose(row["test_acc_mean"], (0.8 * 2 + 0.1 * 2) / 4, rel_tol=1e-6)
    assert row["rate_choice"] == "decided"  # the gap to 0.1, from seeds 0 and 1 alone
    assert summarize(table, 0.5).iloc[0]["learning_rate"] == 0.1  # what mixing them would do


@pytest.mark.parametrize(("changes", "needle"), [
    ({"confirm": {"seeds": [1, 9]}}, "confirm.seeds[0]: got 1, which seeds already holds"),
    ({"confirm": {"seeds": [9, 9]}}, "confirm.seeds[1]: got 9, a duplicate of confirm.seeds[0]"),
    ({"confirm": {"seeds": [-1]}}, "confirm.seeds[0]: got -1"),
    ({"confirm": {"sed": [9]}}, "confirm.sed: unknown key; did you mean 'confirm.seeds'"),
    ({"search": {"extend": -1}}, "search.extend: got -1, expected an integer >= 0"),
    ({"search": {"extend": 1}, "optimizer": {"learning_rate": [0.1]}},
     "search.extend: an extension steps past a grid's edge"),
])
def test_bad_stage_settings_are_one_line(changes, needle):
    with pytest.raises(config.ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        config.parse_config({**BASE, **changes})


def test_stages_round_trip_and_a_plain_grid_leaves_no_trace():
    staged = _cfg(extend=2, confirm=[5])
    d = config.config_to_dict(staged)
    assert d["search"] == {"method": "grid", "extend": 2} and d["confirm"] == {"seeds": [5]}
    assert config.parse_config(d) == staged
    plain = config.config_to_dict(config.parse_config(BASE))
    assert "search" not in plain and "confirm" not in plain


# ---- a staged race against the grid ---------------------------------------------------------

STAGED = {"name": "staged", "seeds": [0, 1, 2], "epochs": 4, "batch_size": 64, "block_size": 1,
          "losses": ["cross_entropy", "mse"], "dataset": {"name": "digits"},
          "model": {"hidden": [[16]]},
          "optimizer": {"learning_rate": {"cross_entropy": [0.03, 0.1], "mse": [0.01, 0.03]}},
          "eval": {"target_accuracy": 0.5},
          "search": {"method": "race", "rungs": [1, 2], "extend": 1},
          "confirm": {"seeds": [7]}}


def _run(tmp: Path, cfg: dict, *args: str) -> int:
    path = tmp / f"{cfg['name']}.yaml"
    path.write_text(yaml.safe_dump({**cfg, "output": {"dir": str(tmp)}}))
    return cli.main(["sweep", str(path), "--quiet", *args])


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("staged")
    assert _run(tmp, STAGED) == 0
    return tmp / "staged"


@pytest.mark.slow
def test_a_staged_race_trains_the_grids_numbers(staged, tmp_path):
    res = analysis.load_results(staged)
    added = res.added.merge(res.epochs.drop_duplicates("member"), on="member")
    assert set(added["stage"]) == {1, 2} and len(res.stops)
    assert (added[added["stage"] == 2]["seed"] == 7).all()
    # A grid over every rate and seed the stages tried trains the same bits for each of them.
    rates = res.epochs.groupby("loss")["learning_rate"].unique()
    grid = {**STAGED, "name": "grid", "seeds": [0, 1, 2, 7],
            "optimizer": {"learning_rate": {k: sorted(map(float, v)) for k, v in rates.items()}}}
    del grid["search"], grid["confirm"]
    assert _run(tmp_path, grid) == 0
    keys = ["loss", "learning_rate", "seed", "epoch"]

    def rows(folder):
        t = pd.read_csv(folder / "epochs.csv", dtype=str, keep_default_na=False)
        return t.drop(columns=["member", "wall_time"]).set_index(keys)

    s, g = rows(staged), rows(tmp_path / "grid")
    assert len(s) < len(g)
    assert s.equals(g.loc[s.index])
    summary = pd.read_csv(staged / "summary.csv")
    assert (summary["n_seeds"] == 4).all()  # 3 searched + 1 confirmation seed at the rate
    assert "Later stages added" in (staged / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [5, 9])  # in the extension stage; in the confirmation
def test_a_staged_race_killed_in_a_later_stage_resumes_exactly(staged, tmp_path, monkeypatch,
                                                               kill_at):
    from lossjax import engine

    real, calls = engine.Group.train_epoch, []

    def interrupted(self, state, epoch, active=None):
        calls.append(epoch)
        if len(calls) == kill_at:
            raise KeyboardInterrupt
        return real(self, state, epoch, active)

    monkeypatch.setattr(engine.Group, "train_epoch", interrupted)
    assert _run(tmp_path, STAGED) == 130
    monkeypatch.setattr(engine.Group, "train_epoch", real)
    assert _run(tmp_path, STAGED, "--resume") == 0
    assert_same_files(staged, tmp_path / "staged")
    for name in ("stops.csv", "added.csv"):
        assert (staged / name).read_bytes() == (tmp_path / "staged" / name).read_bytes()
