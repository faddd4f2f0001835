"""Reading and querying a results folder (``lossjax.analysis``): the checks that refuse a folder
that is incomplete, cut short or inconsistent, with one line, and the runs chosen from it. The
folder is synthetic test data (conftest's ``make_results``) in the layout a sweep writes
(config.yaml, env.json, epochs.csv, summary.csv); no training runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import all_diverge, make_results, resummarize

from lossjax import analysis, cli, folder, stats, tables
from lossjax.errors import ResultsError


def drop_rows(d, keep):
    ep = pd.read_csv(d / "epochs.csv")
    ep[keep(ep)].to_csv(d / "epochs.csv", index=False)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("lossjax: error: ")
    return err[0]


# --------------------------------------------------------------------------------------------
# The runs chosen from a folder, and their order


def test_chosen_runs_follow_summary(results_dir):
    res = analysis.load_results(results_dir)
    choices = analysis.chosen_runs(res)
    assert [c.loss for c in choices] == ["cross_entropy", "mse"]
    for c in choices:
        assert set(c.rows["learning_rate"]) == {c.learning_rate}
        assert sorted(c.rows["seed"].unique()) == [0, 1]
    assert res.epochs["diverged"].dtype == bool
    assert int(res.epochs["diverged"].sum()) == 2  # epochs 2 and 3 of the diverged member
    assert res.epochs["train_loss"].isna().sum() == 2


def test_several_hidden_groups_and_weight_decays(tmp_path):
    # One summary row (and choice) per loss and weight decay, numbered per weight decay.
    # "32" would be read as an integer without an explicit dtype; it must stay the string "32".
    d = make_results(tmp_path / "sweep", hidden=("64-64", "32"), weight_decays=(0.0, 1e-4))
    res = analysis.load_results(d)
    assert set(res.epochs["hidden"]) == {"32", "64-64"}
    assert analysis.describe(res) == "digits · MLP 32 | 64-64 relu · momentum, batch 64"
    assert analysis.varying_columns(res) == ["weight_decay"]
    choices = analysis.chosen_runs(res)
    assert [(c.hidden, c.loss, c.row["weight_decay"], c.variant) for c in choices[:4]] == [
        ("32", "cross_entropy", 0.0, 0), ("32", "cross_entropy", 1e-4, 1),
        ("32", "mse", 0.0, 0), ("32", "mse", 1e-4, 1),
    ]
    assert choices[1].label() == "cross_entropy (lr 1, wd 0.0001)"
    assert choices[1].label(with_lr=False) == "cross_entropy (wd 0.0001)"
    assert all(set(c.rows["weight_decay"]) == {c.row["weight_decay"]} for c in choices)


def test_hidden_order_and_linear_model():
    assert analysis.hidden_order(["64-64", "128", "linear", "32", "64"]) == [
        "linear", "32", "64", "128", "64-64"]


def test_loss_order():
    names = ["exp_mse", "softmax_mse", "mse", "cross_entropy", "mod:fn"]
    assert analysis.loss_order(names) == [
        "cross_entropy", "mse", "softmax_mse", "exp_mse", "mod:fn"]


def test_diverged_column_spellings(results_dir):
    ep = pd.read_csv(results_dir / "epochs.csv")
    ep["diverged"] = ep["diverged"].astype(int)  # 0/1 instead of False/True
    ep.to_csv(results_dir / "epochs.csv", index=False)
    assert int(analysis.load_results(results_dir).epochs["diverged"].sum()) == 2


def test_expected_members_from_the_config_grids(results_dir):
    cfg = yaml.safe_load((results_dir / "config.yaml").read_text())
    # 2 losses × 2 rates × 1 hidden × 1 weight decay × 1 init scale × 2 seeds
    assert analysis.expected_members(cfg) == 8
    cfg["optimizer"]["learning_rate"] = [0.1, 0.3, 1.0]  # one grid for every loss
    assert analysis.expected_members(cfg) == 12
    del cfg["seeds"]  # a hand-written config without a grid: the table decides
    assert analysis.expected_members(cfg) is None


def test_last_epochs(results_dir):
    res = analysis.load_results(results_dir)
    last = analysis.last_epochs(res.epochs)
    assert list(last["member"]) == list(range(8)) and set(last["epoch"]) == {3}
    group = analysis.group_rows(res, "mse", "64-64", None)
    assert set(analysis.last_epochs(group)["member"]) == {4, 5, 6, 7}
    assert not analysis.all_diverged(group)
    assert analysis.all_diverged(group[group["member"] == 7])  # lr 1, seed 1: diverged


# --------------------------------------------------------------------------------------------
# Folders and tables that cannot be read


@pytest.mark.parametrize("command", ["plot", "report"])
def test_cli_missing_folder(tmp_path, capsys, command):
    missing = tmp_path / "nope"
    assert cli.main([command, str(missing)]) == 2
    line = one_error_line(capsys)
    assert str(missing) in line and "does not exist" in line
    assert not missing.exists()


@pytest.mark.parametrize("command", ["plot", "report"])
@pytest.mark.parametrize("table", ["epochs.csv", "summary.csv"])
def test_cli_missing_table(results_dir, capsys, command, table):
    (results_dir / table).unlink()
    assert cli.main([command, str(results_dir)]) == 2
    line = one_error_line(capsys)
    assert table in line and "missing" in line
    assert not (results_dir / "plots").exists()


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("", "unreadable"),
        ("member,loss\n", "lacks column(s)"),
        ("\x00\xff\xfe garbage", "lacks column(s)"),
    ],
)
def test_bad_epochs_table(results_dir, content, needle):
    (results_dir / "epochs.csv").write_text(content)
    with pytest.raises(ResultsError, match=r"epochs\.csv") as e:
        analysis.load_results(results_dir)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_summary_that_matches_no_member(results_dir):
    s = pd.read_csv(results_dir / "summary.csv")
    s.loc[0, "learning_rate"] = 0.5
    s.to_csv(results_dir / "summary.csv", index=False)
    res = analysis.load_results(results_dir)
    with pytest.raises(ResultsError, match="matches no member"):
        analysis.chosen_runs(res)


def test_corrupt_config_is_an_error(results_dir):
    (results_dir / "config.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ResultsError, match=r"config\.yaml is unreadable"):
        analysis.load_results(results_dir)


def test_env_json_is_optional(results_dir):
    assert tables.read_env(results_dir)["device_kind"] == "cpu"
    (results_dir / "env.json").write_text("[1, 2]")  # not a mapping: nothing to report
    assert tables.read_env(results_dir) is None
    (results_dir / "env.json").write_text("{not json")
    with pytest.raises(ResultsError, match=r"env\.json is unreadable"):
        tables.read_env(results_dir)
    (results_dir / "env.json").unlink()
    assert tables.read_env(results_dir) is None


def test_missing_config_falls_back_to_folder_name(results_dir):
    (results_dir / "config.yaml").unlink()
    res = analysis.load_results(results_dir)
    assert res.config == {}
    assert analysis.describe(res) == "sweep · MLP 64-64"


# --------------------------------------------------------------------------------------------
# A loss whose every member diverged


def test_fully_diverged_loss_is_a_diverged_group_not_a_choice(tmp_path):
    d = make_results(tmp_path / "sweep", diverge=all_diverge(["mse"]))
    summary = resummarize(d)
    assert summary.loc[summary["loss"] == "mse", "learning_rate"].isna().all()
    res = analysis.load_results(d)
    assert [c.loss for c in analysis.chosen_runs(res)] == ["cross_entropy"]
    assert [c.loss for c in analysis.diverged_groups(res)] == ["mse"]


def test_summary_row_without_a_rate_for_members_that_did_not_diverge(results_dir):
    s = pd.read_csv(results_dir / "summary.csv")
    s.loc[s["loss"] == "cross_entropy", "learning_rate"] = math.nan
    s.to_csv(results_dir / "summary.csv", index=False)
    res = analysis.load_results(results_dir)
    with pytest.raises(ResultsError, match="has no learning rate, yet not every member"):
        analysis.diverged_groups(res)


# --------------------------------------------------------------------------------------------
# Incomplete or cut tables


@pytest.mark.parametrize("command", ["plot", "report"])
def test_cli_refuses_an_unfinished_table(results_dir, capsys, command):
    # Interrupted after epoch 2: the last epoch of every member is missing.
    drop_rows(results_dir, lambda ep: ep["epoch"] <= 2)
    assert cli.main([command, str(results_dir)]) == 2
    line = one_error_line(capsys)
    assert "epochs.csv has 16 of 24 rows (8 members × 3 epochs)" in line
    assert "`lossjax sweep CONFIG --resume`" in line
    assert not (results_dir / "plots").exists() and not (results_dir / "report.md").exists()


def test_table_cut_after_some_rows(results_dir):
    # A file cut at a line break: the last members lack their last epochs.
    drop_rows(results_dir, lambda ep: ep.index < 20)
    with pytest.raises(ResultsError, match="has 20 of 24 rows") as e:
        analysis.load_results(results_dir)
    assert "--resume" in str(e.value)
    # In a folder marked complete, --resume has nothing to do: the way out is another.
    (results_dir / "status.json").write_text(json.dumps({"complete": True}))
    with pytest.raises(ResultsError, match="has 20 of 24 rows") as e:
        analysis.load_results(results_dir)
    assert "--overwrite" in str(e.value) and "--resume" not in str(e.value)


def test_missing_hidden_group_is_found_through_the_config(tmp_path):
    # Interrupted before the second hidden group started: members 8..15 have no row at all,
    # which only config.yaml's grids reveal.
    d = make_results(tmp_path / "sweep", hidden=("64-64", "32"))
    drop_rows(d, lambda ep: ep["hidden"].astype(str) == "64-64")
    s = pd.read_csv(d / "summary.csv", dtype={"hidden": str})
    s[s["hidden"] == "64-64"].to_csv(d / "summary.csv", index=False)
    with pytest.raises(ResultsError, match=r"has 24 of 48 rows \(16 members × 3 epochs\)"):
        analysis.load_results(d)


def test_config_with_more_seeds_than_the_table(results_dir):
    cfg = yaml.safe_load((results_dir / "config.yaml").read_text())
    cfg["seeds"] = [0, 1, 2]
    (results_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ResultsError, match=r"has 24 of 36 rows \(12 members × 3 epochs\)"):
        analysis.load_results(results_dir)


def test_table_beyond_the_config(results_dir):
    cfg = yaml.safe_load((results_dir / "config.yaml").read_text())
    cfg["epochs"] = 2
    (results_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ResultsError, match="member 0 epoch 3, outside .* config.yaml belong"):
        analysis.load_results(results_dir)


def test_incomplete_table_without_config(results_dir):
    (results_dir / "config.yaml").unlink()
    full = pd.read_csv(results_dir / "epochs.csv")
    drop_rows(results_dir, lambda ep: ep["member"] != 3)  # a member missing in the middle
    with pytest.raises(ResultsError, match=r"has 21 of 24 rows \(8 members × 3 epochs\)"):
        analysis.load_results(results_dir)
    full.to_csv(results_dir / "epochs.csv", index=False)
    drop_rows(results_dir, lambda ep: ~((ep["member"] == 5) & (ep["epoch"] == 3)))
    with pytest.raises(ResultsError, match="has 23 of 24 rows"):
        analysis.load_results(results_dir)


def test_repeated_row(results_dir):
    ep = pd.read_csv(results_dir / "epochs.csv")
    pd.concat([ep, ep.iloc[[4]]]).to_csv(results_dir / "epochs.csv", index=False)
    with pytest.raises(ResultsError, match="holds member 1 epoch 2 twice"):
        analysis.load_results(results_dir)


@pytest.mark.parametrize("table", ["epochs.csv", "summary.csv"])
@pytest.mark.parametrize("keep", [1, 5, 12, -2, -1])
def test_last_line_cut_mid_row(results_dir, capsys, table, keep):
    """``keep`` characters of the last line survive (negative: all but that many)."""
    text = (results_dir / table).read_text()
    start = text.rstrip("\n").rfind("\n") + 1
    last = text[start:].rstrip("\n")
    (results_dir / table).write_text(text[:start] + last[:keep])
    with pytest.raises(ResultsError, match=f"{table} ends mid-row") as e:
        analysis.load_results(results_dir)
    assert "\n" not in str(e.value)
    assert cli.main(["report", str(results_dir)]) == 2
    assert "ends mid-row" in one_error_line(capsys)


def test_summary_row_without_hidden_sizes(results_dir):
    s = pd.read_csv(results_dir / "summary.csv")
    s.loc[1, "hidden"] = None
    s.to_csv(results_dir / "summary.csv", index=False)
    with pytest.raises(ResultsError, match="summary.csv: line 3 has no hidden"):
        analysis.load_results(results_dir)


def test_summary_cut_at_a_line_break(results_dir):
    s = pd.read_csv(results_dir / "summary.csv")
    s.iloc[:1].to_csv(results_dir / "summary.csv", index=False)
    with pytest.raises(ResultsError, match="summary.csv has no row for loss mse, hidden 64-64"):
        analysis.load_results(results_dir)


# --------------------------------------------------------------------------------------------
# The rate-choice columns, read or (for an older summary.csv) computed


def _epochs32(d):
    """epochs.csv with its metrics in float32, as a sweep holds them when it summarizes."""
    return tables.normalize(pd.read_csv(d / "epochs.csv", dtype={"hidden": str}))


def test_old_summary_without_rate_choice_columns_gets_them_from_epochs(results_dir):
    # make_results writes a summary.csv as sweeps did before the rate-choice columns.
    written = pd.read_csv(results_dir / "summary.csv", dtype={"hidden": str})
    assert not set(tables.RATE_CHOICE_COLUMNS) & set(written.columns)
    res = analysis.load_results(results_dir)
    s = res.summary
    cols = list(s.columns)
    at = cols.index("lr_at_grid_edge") + 1
    assert cols[at:at + len(tables.RATE_CHOICE_COLUMNS)] == list(tables.RATE_CHOICE_COLUMNS)
    # The same numbers as a sweep writes today, from the same epochs.csv.
    fresh = stats.summarize(_epochs32(results_dir), 0.9).set_index("loss")
    got = s.set_index("loss").loc[fresh.index]
    for c in tables.RATE_CHOICE_COLUMNS:
        np.testing.assert_array_equal(got[c].to_numpy(), fresh[c].to_numpy(), c)
    # Every column the file had keeps its written value (0.012 is make_results's, not today's).
    for c in written.columns:
        np.testing.assert_array_equal(s[c].to_numpy(), written[c].to_numpy(), c)
    assert set(s["test_acc_ci95"]) == {0.012}


def test_rate_choice_columns_in_the_file_are_read_not_recomputed(results_dir):
    s = stats.summarize(_epochs32(results_dir), 0.9)
    s.loc[s["loss"] == "mse", ["rate_choice", "tied_lrs", "rate_tied"]] = ["decided", "", False]
    s.loc[s["loss"] == "cross_entropy", ["rate_choice", "tied_lrs"]] = ["tied", "0.1;0.3"]
    folder.write_table(results_dir / "summary.csv", s)
    got = analysis.load_results(results_dir).summary.set_index("loss")
    assert got.loc["mse", "rate_choice"] == "decided" and got.loc["mse", "tied_lrs"] == ""
    assert got["rate_tied"].dtype == bool and not got.loc["mse", "rate_tied"]
    assert got.loc["cross_entropy", "tied_lrs"] == "0.1;0.3"


def _choice(**row) -> analysis.Choice:
    r = pd.Series({"loss": "mse", "hidden": "64", "learning_rate": 0.3, "weight_decay": 1e-4,
                   **row})
    return analysis.Choice("mse", "64", r, pd.DataFrame(), varying=("weight_decay",))


def test_labels_mark_a_rate_the_seeds_do_not_decide():
    assert _choice(rate_choice="decided", tied_lrs="").label() == "mse (lr 0.3, wd 0.0001)"
    tied = _choice(rate_choice="tied", tied_lrs="0.1;1.0")
    assert tied.label() == "mse (lr 0.3 tied with 0.1 and 1, wd 0.0001)"
    assert tied.tied_lrs == (0.1, 1.0) and analysis.undecided(tied.row) == ("tie", (0.1, 1.0))
    assert tied.label(with_lr=False) == "mse (wd 0.0001)"
    one = _choice(rate_choice="one seed", tied_lrs="0.1")
    assert one.label() == "mse (lr 0.3 from one seed, wd 0.0001)"
    # Decided against the runner-up, yet a noisier rate is tied: still no clear choice.
    assert analysis.undecided(_choice(rate_choice="decided", tied_lrs="3.0").row) == (
        "tie", (3.0,))
    assert analysis.undecided(_choice(rate_choice="one rate", tied_lrs="").row) is None
    assert analysis.undecided(pd.Series({"learning_rate": 0.3})) is None  # a hand-made row
