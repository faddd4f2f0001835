"""``lossjax.pooled``, ``experiments/more_seeds.py`` and ``generality.py --pool``: a follow-up
sweep's seeds join a finished sweep's at its chosen rates. The folders are synthetic (conftest's
``make_results``): a first sweep on seeds 0-4 and a follow-up on seeds 5-9 at every rate, so
that pooling has a rate to leave out."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import experiment, make_results, resummarize

from lossjax import analysis, causal_report, pooled
from lossjax import config as lossjax_config
from lossjax.errors import ResultsError

LOSSES = ("cross_entropy", "mse", "mse-no_push_up")
REPO = Path(__file__).resolve().parents[1]


def _folder(path, seeds, spread=0.004):
    make_results(path, losses=LOSSES, lrs=(0.1, 1.0), seeds=seeds, epochs=3, diverge=())
    ep = pd.read_csv(path / "epochs.csv", dtype={"hidden": str})
    ep["test_acc"] += spread * ep["seed"] * (ep["loss"] == "mse")
    ep.to_csv(path / "epochs.csv", index=False)
    resummarize(path)
    return path


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    return _folder(tmp_path_factory.mktemp("pool") / "first", (0, 1, 2, 3, 4))


@pytest.fixture(scope="module")
def more(tmp_path_factory):
    return _folder(tmp_path_factory.mktemp("pool") / "more", (5, 6, 7, 8, 9))


def _speed(ep, loss, lr):
    rows = ep[(ep["loss"] == loss) & (ep["learning_rate"] == lr)]
    return rows.groupby("seed")["test_acc"].mean()


def test_pooled_seeds_join_at_the_chosen_rates_only(first, more):
    res = analysis.load_results(first)
    got = pooled.pool_seeds(res, analysis.load_results(more))
    pd.testing.assert_series_equal(got.summary["learning_rate"], res.summary["learning_rate"])
    assert set(got.summary["n_seeds"]) == {10}
    ep_more = pd.read_csv(more / "epochs.csv", dtype={"hidden": str})
    for _, r in res.summary.iterrows():
        mine = got.epochs[(got.epochs["loss"] == r["loss"])]
        at = mine[mine["learning_rate"] == r["learning_rate"]]
        other = mine[mine["learning_rate"] != r["learning_rate"]]
        assert sorted(at["seed"].unique()) == list(range(10))
        assert sorted(other["seed"].unique()) == list(range(5))  # tied rates: the first seeds
        theirs = ep_more[(ep_more["loss"] == r["loss"])
                         & (ep_more["learning_rate"] == r["learning_rate"])
                         & (ep_more["epoch"] == 3)]
        last = at[at["epoch"] == 3]
        assert got.summary.set_index("loss").loc[r["loss"], "test_acc_mean"] == pytest.approx(
            last["test_acc"].mean())
        assert set(theirs["test_acc"]) <= set(last["test_acc"])
    # The pooled members are numbered past the first sweep's: no member mixes two seeds.
    assert got.epochs.groupby("member")["seed"].nunique().max() == 1


def test_the_paired_effect_uses_every_pooled_seed(first, more):
    res = pooled.pool_seeds(analysis.load_results(first), analysis.load_results(more))
    (c,) = causal_report.analyse_results(res, n_resamples=50)["comparisons"]
    assert c["n_pairs"] == 10
    ep = res.epochs
    base = _speed(ep, "mse", c["base_learning_rate"])
    var = _speed(ep, "mse-no_push_up", c["variant_learning_rate"])
    assert c["speed"]["mean"] == pytest.approx(float((var - base).mean()), rel=1e-5)


def test_a_seed_the_first_sweep_has_is_refused(first, tmp_path):
    again = _folder(tmp_path / "again", (4, 5))
    with pytest.raises(ResultsError, match=r"seed\(s\) \[4\].*count twice"):
        pooled.pool_seeds(analysis.load_results(first), analysis.load_results(again))


def test_another_setup_is_refused_naming_the_key(first, more, tmp_path):
    other = tmp_path / "other"
    _folder(other, (5, 6))
    cfg = yaml.safe_load((other / "config.yaml").read_text())
    cfg["batch_size"] = 128
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ResultsError, match="no follow-up of .*: batch_size is 128 there and 64"):
        pooled.pool_seeds(analysis.load_results(first), analysis.load_results(other))


def test_more_seeds_writes_a_config_at_the_chosen_rates(first, tmp_path):
    script = experiment("more_seeds")
    out = tmp_path / "first_seeds5-9.yaml"
    assert script.main([str(first), "--losses", "mse", "mse-no_push_up", "--seeds", "5", "6",
                        "--out", str(out)]) == 0
    cfg = yaml.safe_load(out.read_text())
    chosen = pd.read_csv(first / "summary.csv").set_index("loss")["learning_rate"]
    assert cfg["name"] == "first_seeds5-9" and cfg["seeds"] == [5, 6]
    assert cfg["losses"] == ["mse", "mse-no_push_up"]
    assert cfg["optimizer"]["learning_rate"] == {
        loss: [float(chosen[loss])] for loss in ("mse", "mse-no_push_up")}
    assert cfg["search"] == {"method": "grid"} and cfg["confirm"] == {"seeds": []}
    for key in ("epochs", "batch_size", "dataset", "model", "eval"):
        assert cfg[key] == yaml.safe_load((first / "config.yaml").read_text())[key]
    assert "experiments/more_seeds.py" in out.read_text().splitlines()[3]


def test_more_seeds_config_of_a_real_study_is_one_a_sweep_accepts(tmp_path):
    """A committed study's folder (every default written out): the follow-up config parses,
    and its only grids are the rates the study chose, per optimizer."""
    folder = REPO / "results" / "generality_mnist_constant"
    if not (folder / "summary.csv").exists():
        pytest.skip("the committed study folder is absent")
    out = tmp_path / "follow.yaml"
    assert experiment("more_seeds").main([str(folder), "--losses", "mse", "mse-no_push_up",
                                          "--seeds", "5", "6", "--out", str(out)]) == 0
    cfg = lossjax_config.load_config(out)
    assert cfg.seeds == (5, 6) and cfg.losses == ("mse", "mse-no_push_up")
    summary = pd.read_csv(folder / "summary.csv")
    for opt in ("momentum", "adam"):
        for loss in cfg.losses:
            chosen = summary[(summary["loss"] == loss) & (summary["optimizer"] == opt)]
            assert cfg.optimizer.learning_rate[opt][loss] == tuple(
                sorted(set(chosen["learning_rate"])))


def test_generality_pool_marks_the_pooled_cells(first, more, tmp_path):
    script = experiment("generality")
    before = (tmp_path / "alone")
    assert script.main([str(first), "--out", str(before)]) == 0
    alone = (first / "causal.md").read_text()
    out = tmp_path / "out"
    assert script.main([str(first), "--pool", str(first), str(more), "--out", str(out)]) == 0
    got = json.loads((out / "generality.json").read_text())
    (e,) = got["effects"]
    assert e["speed"]["n"] == 10
    assert got["pooled"] == [[str(first), str(more)]]
    md = (out / "generality.md").read_text()
    assert f"--pool {first} {more}" in md
    row = next(line for line in md.splitlines() if line.startswith("| `mse-no_push_up` |"))
    assert "(n 10)" in row
    assert (first / "causal.md").read_text() == alone  # the first folder keeps its own
    assert "pooled from" in json.loads((more / "causal.json").read_text())["description"]


def test_generality_pool_of_a_folder_not_given_is_one_line(first, more, tmp_path, capsys):
    script = experiment("generality")
    assert script.main([str(first), "--pool", str(more), str(first),
                        "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not one of the folders given" in err
    assert not (tmp_path / "x").exists()


def test_pooled_seeds_take_no_part_in_the_rate_choice(first, tmp_path):
    """Follow-up seeds far worse on validation at every rate: counted in the choice, they would
    move it to the other rate; pooled, the first sweep's choice and its clarity stand."""
    bad = _folder(tmp_path / "bad", (5, 6, 7))
    ep = pd.read_csv(bad / "epochs.csv", dtype={"hidden": str})
    ep["val_acc"] -= 0.5
    ep.to_csv(bad / "epochs.csv", index=False)
    resummarize(bad)
    res = analysis.load_results(first)
    got = pooled.pool_seeds(res, analysis.load_results(bad))
    for col in ("learning_rate", "runner_up_lr", "val_gap_mean", "rate_choice", "tied_lrs"):
        pd.testing.assert_series_equal(got.summary[col], res.summary[col], check_dtype=False)
    assert set(got.summary["n_seeds"]) == {8}
