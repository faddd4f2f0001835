"""The race rule of ``lossjax.search``: what it drops, its error rate when nothing differs, that
its decisions depend only on rows up to each rung, and its replay on finished grids."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lossjax import cli, search

REPO = Path(__file__).resolve().parents[1]
GROUP = {"loss": "mse", "hidden": "16", "weight_decay": 0.0, "init_scale": 1.0}


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


@pytest.mark.parametrize(("rates", "seeds"), [(2, 3), (5, 3), (4, 5)])
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
    assert search.default_rungs(20) == (2, 4, 6, 10)
    assert search.default_rungs(3) == (1, 2)
    assert search.default_rungs(1) == ()


def test_replay_of_the_committed_digits_sweep(tmp_path, capsys):
    folder = REPO / "results" / "digits"
    if not (folder / "epochs.csv").exists():
        pytest.skip("no committed digits sweep")
    assert cli.main(["search", "replay", str(folder), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(tmp_path / "search_replay.csv")
    assert len(table) == 4 and set(table["verdict"]) <= {"same", "tied", "different"}
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
