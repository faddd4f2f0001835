"""The race rule of ``lossjax.search``: what it drops, its error rate when nothing differs, that
its decisions depend only on rows up to each rung, and its replay on finished grids."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import assert_same_files

from lossjax import analysis, cli, config, search

REPO = Path(__file__).resolve().parents[1]
GROUP = {"loss": "mse", "optimizer": "momentum", "hidden": "16", "weight_decay": 0.0,
         "init_scale": 1.0}


def _at_rung(accs: dict[float, list[float]], diverged=()) -> pd.DataFrame:
    """One group's rows at a rung: ``accs`` maps a rate to its seeds' validation accuracies."""
    return pd.DataFrame([{**GROUP, "learning_rate": lr, "seed": s, "val_acc": v,
                          "diverged": (lr, s) in diverged}
                         for lr, vs in accs.items() for s, v in enumerate(vs)])


def test_a_clearly_worse_rate_is_dropped_and_a_close_one_kept():
    rows = _at_rung({0.1: [0.90, 0.91, 0.92], 1.0: [0.50, 0.52, 0.49],
                     0.3: [0.89, 0.92, 0.91]})
    assert search.rates_to_drop(rows) == [1.0]


def test_one_paired_seed_decides_nothing_and_the_leader_is_never_dropped():
    assert search.rates_to_drop(_at_rung({0.1: [0.9], 1.0: [0.1]})) == []
    # The leader (best mean) stays even where every other rate is dropped.
    rows = _at_rung({0.1: [0.95, 0.96, 0.97], 1.0: [0.1, 0.11, 0.12], 3.0: [0.1, 0.1, 0.1]})
    assert sorted(search.rates_to_drop(rows)) == [1.0, 3.0]


def test_a_diverged_member_scores_zero():
    rows = _at_rung({0.1: [0.90, 0.91, 0.92], 1.0: [0.93, 0.94, 0.95]},
                    diverged={(1.0, s) for s in range(3)})
    assert search.rates_to_drop(rows) == [1.0]


@pytest.mark.parametrize(("rates", "seeds"), [
    (2, 3), pytest.param(5, 3, marks=pytest.mark.slow), pytest.param(4, 5, marks=pytest.mark.slow)])
def test_when_no_rate_differs_anything_is_dropped_at_most_alpha_of_the_time(rates, seeds):
    rng = np.random.default_rng(rates * 10 + seeds)
    trials, alpha = 1500, 0.2
    hits = 0
    for _ in range(trials):
        seed_effect = rng.normal(size=seeds)  # shared by a seed's members: what pairing removes
        accs = {10.0 ** -r: list(0.9 + 0.01 * seed_effect + 0.01 * rng.normal(size=seeds))
                for r in range(rates)}
        hits += bool(search.rates_to_drop(_at_rung(accs), alpha))
    # Binomial(1500, 0.2) exceeds 0.2 + 3 standard deviations (0.031) once in ~700 runs.
    assert hits / trials <= alpha + 0.031


def _grid(epochs: int = 10) -> pd.DataFrame:
    """A grid's epochs.csv: one good rate, one slow one, one that diverges at epoch 2."""
    rows, member = [], 0
    for lr, ceiling in ((0.1, 0.95), (1.0, 0.60), (3.0, 0.30)):
        for seed in range(3):
            for e in range(1, epochs + 1):
                diverged = lr == 3.0 and e >= 2
                acc = ceiling * (1 - 0.5 ** e) + 0.002 * seed
                rows.append({**GROUP, "member": member, "learning_rate": lr, "seed": seed,
                             "epoch": e, "val_acc": acc, "test_acc": acc, "diverged": diverged})
            member += 1
    return pd.DataFrame(rows)


def test_stops_drop_diverged_members_at_once_and_slow_rates_at_a_rung():
    stopped = search.stops(_grid(), rungs=(2, 5))
    assert {m: (s.epoch, s.reason) for m, s in stopped.items()} == {
        3: (2, "dropped at epoch 2"), 4: (2, "dropped at epoch 2"), 5: (2, "dropped at epoch 2"),
        6: (2, "diverged"), 7: (2, "diverged"), 8: (2, "diverged")}


def test_decisions_depend_only_on_rows_up_to_each_rung():
    full = _grid()
    for k in range(1, 11):
        partial = search.stops(full[full["epoch"] <= k], rungs=(2, 5))
        assert partial == {m: s for m, s in search.stops(full, (2, 5)).items() if s.epoch <= k}


def test_default_rungs():
    assert config.default_rungs(20) == (2, 4, 6, 10)
    assert config.default_rungs(3) == (1, 2)
    assert config.default_rungs(1) == ()


def test_replay_of_the_committed_digits_sweep(tmp_path, capsys):
    folder = REPO / "results" / "digits"
    if not (folder / "epochs.csv").exists():
        pytest.skip("no committed digits sweep")
    assert cli.main(["search", "replay", str(folder), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(tmp_path / "search_replay.csv")
    summary = pd.read_csv(folder / "summary.csv")
    assert len(table) == len(summary) and set(table["verdict"]) <= {"same", "tied", "different"}
    assert (table["member_epochs"] <= table["grid_member_epochs"]).all()
    assert table["member_epochs"].sum() < table["grid_member_epochs"].sum()
    assert (tmp_path / "search_replay.md").read_text() in printed


@pytest.mark.parametrize(("args", "needle"), [
    (["--rungs", "5,2"], "increasing"), (["--rungs", "a"], "give epochs"),
    (["--alpha", "0"], "between 0 and 1")])
def test_bad_arguments_are_one_line(args, needle, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["search", "replay", "results/digits", *args])
    assert e.value.code == 2 and needle in capsys.readouterr().err


# ---- the config ---------------------------------------------------------------------------


def _parse(**search):
    return config.parse_config({"name": "r", "epochs": 10, "search": search,
                                "optimizer": {"learning_rate": [0.1, 1.0]}})


def test_a_race_resolves_its_rungs_and_a_grid_leaves_no_trace():
    race = _parse(method="race")
    assert race.search == config.SearchConfig("race", (1, 2, 3, 5), 0.5)
    assert config.config_to_dict(race)["search"] == {"method": "race", "rungs": [1, 2, 3, 5],
                                                    "alpha": 0.5}
    assert config.parse_config(config.config_to_dict(race)) == race
    assert "search" not in config.config_to_dict(_parse(method="grid"))  # as before races


@pytest.mark.parametrize(("search", "needle"), [
    ({"method": "grid", "rungs": [2]}, "search.rungs: applies to method: race only"),
    ({"method": "grid", "alpha": 0.1}, "search.alpha: applies to method: race only"),
    ({"method": "swim"}, "search.method"),
    ({"method": "race", "rungs": [5, 2]}, "search.rungs[1]: got 2 after 5"),
    ({"method": "race", "rungs": [2, 10]}, "search.rungs[1]"),
    ({"method": "race", "rungs": [0]}, "search.rungs[0]"),
    ({"method": "race", "alpha": 1.0}, "search.alpha"),
    ({"method": "race", "extend": -1}, "search.extend: got -1, expected an integer >= 0"),
    ({"method": "grid", "rungs": [2]}, "search.rungs: applies to method: race only"),
    ({"extend": True}, "search.extend: got true"),
    ({"method": "race", "exten": 2}, "search.exten: unknown key; did you mean 'search.extend'"),
])
def test_bad_search_sections_are_one_line(search, needle):
    with pytest.raises(config.ConfigError, match=re.escape(needle)):
        _parse(**search)


def test_a_race_needs_several_rates_and_rungs_at_evaluations():
    with pytest.raises(config.ConfigError, match=r"optimizer.learning_rate.mse has one"):
        config.parse_config({"name": "r", "losses": ["cross_entropy", "mse"],
                             "search": {"method": "race"}, "optimizer": {"learning_rate": {
                                 "cross_entropy": [0.1, 1.0], "mse": [0.1]}}})
    with pytest.raises(config.ConfigError, match=r"search.rungs\[0\]: epoch 3 has no evaluation"):
        config.parse_config({"name": "r", "eval": {"every": 2},
                             "search": {"method": "race", "rungs": [3]}})


# ---- a race against the grid --------------------------------------------------------------

RACE = {"name": "race", "seeds": [0, 1, 2], "epochs": 6, "batch_size": 64, "block_size": 1,
        "losses": ["cross_entropy", "mse"], "dataset": {"name": "digits"},
        "model": {"hidden": [[16]]},
        "optimizer": {"learning_rate": {"cross_entropy": [0.003, 0.1, 0.3],
                                        "mse": [0.01, 0.3, 30.0]}},
        "eval": {"target_accuracy": 0.5}}


def _sweep(tmp: Path, name: str, *args: str) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**RACE, "name": name, "output": {"dir": str(tmp)}}))
    assert cli.main(["sweep", str(path), "--quiet", *args]) == 0
    return tmp / name


@pytest.fixture(scope="module")
def raced(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("race")
    return (_sweep(tmp, "grid"), _sweep(tmp, "race", "--set", "search.method=race",
                                        "--set", "search.rungs=[1,2,4]"))


@pytest.mark.slow
def test_a_race_trains_the_grids_numbers_and_what_its_replay_says(raced):
    grid, race = raced
    g = pd.read_csv(grid / "epochs.csv", dtype=str, keep_default_na=False).drop(columns="wall_time")
    r = pd.read_csv(race / "epochs.csv", dtype=str, keep_default_na=False).drop(columns="wall_time")
    assert len(r) < len(g)
    # Every row the race trained is the grid's, to the last digit: a member's arithmetic is
    # its own, so stopping others changes none of its bits.
    merged = r.merge(g, on=["member", "epoch"], how="left", suffixes=("", "_grid"))
    for c in r.columns.drop(["member", "epoch"]):
        assert (merged[c] == merged[c + "_grid"]).all(), c
    # The race chose what the replay of its rule on the grid predicts, with that work.
    res = analysis.load_results(grid)
    replayed = search.replay(res.epochs, res.summary, (1, 2, 4), 0.5)
    summary = pd.read_csv(race / "summary.csv")
    assert list(summary["learning_rate"]) == list(replayed["race_lr"])
    assert len(r) == replayed["member_epochs"].sum()
    stops = pd.read_csv(race / "stops.csv")
    assert len(stops) and set(stops["reason"]) <= {"diverged", "dropped at epoch 1",
                                                   "dropped at epoch 2", "dropped at epoch 4"}
    last = r.astype({"member": int, "epoch": int}).groupby("member")["epoch"].max()
    assert (last[stops["member"]].to_numpy() == stops["epoch"].to_numpy()).all()
    assert analysis.load_results(race).stops  # a stopped member never looks finished


@pytest.mark.slow
def test_a_race_killed_midway_resumes_exactly(raced, tmp_path, monkeypatch):
    from lossjax import engine

    real = engine.Group.train_epoch

    def interrupted(self, state, epoch, active=None):
        if epoch == 3:  # after the rungs at epochs 1 and 2 decided
            raise KeyboardInterrupt
        return real(self, state, epoch, active)

    path = tmp_path / "race.yaml"
    path.write_text(yaml.safe_dump({**RACE, "output": {"dir": str(tmp_path)}}))
    args = ["sweep", str(path), "--quiet", "--set", "search.method=race",
            "--set", "search.rungs=[1,2,4]"]
    monkeypatch.setattr(engine.Group, "train_epoch", interrupted)
    assert cli.main(args) == 130
    monkeypatch.setattr(engine.Group, "train_epoch", real)
    assert cli.main([*args, "--resume"]) == 0
    assert_same_files(raced[1], tmp_path / "race")
    assert (raced[1] / "stops.csv").read_bytes() == (tmp_path / "race" / "stops.csv").read_bytes()
