"""Plots and report drawn from a results folder. The folder here is synthetic test data in the
layout a sweep writes (config.yaml, env.json, epochs.csv, summary.csv); no training runs."""

from __future__ import annotations

import itertools
import json
import math
import os
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
import yaml

from lossjax import cli, plots, report, results
from lossjax.errors import ResultsError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_results(
    path,
    losses=("cross_entropy", "mse"),
    lrs=(0.1, 1.0),
    seeds=(0, 1),
    epochs=3,
    hidden=("64-64",),
    diverge=(("mse", 1.0, 1, 2),),
    weight_decays=(0.0,),
):
    """Writes a synthetic results folder. ``diverge`` holds (loss, lr, seed, epoch) members that
    go NaN at that epoch: their train_loss is NaN from then on, other metrics frozen."""
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows, member = [], 0
    for h, loss, lr, wd in itertools.product(hidden, losses, lrs, weight_decays):
        for seed in seeds:
            speed = (1.0 if loss == "cross_entropy" else 0.6) * (1 + 0.3 * math.log10(lr))
            div_at = next((e for (lo, r, s, e) in diverge
                           if (lo, r, s) == (loss, lr, seed)), None)
            last = None
            for epoch in range(1, epochs + 1):
                if div_at is not None and epoch >= div_at:
                    rows.append({**last, "epoch": epoch, "train_loss": math.nan,
                                 "diverged": True, "wall_time": 0.1 * epoch})
                    continue
                acc = 0.1 + 0.85 * (1 - math.exp(-speed * epoch)) + 0.01 * rng.normal()
                last = {
                    "member": member, "loss": loss, "hidden": h, "learning_rate": lr,
                    "weight_decay": wd, "init_scale": 1.0, "seed": seed,
                    "epoch": epoch, "train_loss": 2.3 * math.exp(-speed * epoch),
                    "train_acc": acc + 0.02, "val_acc": acc - 0.01, "test_acc": acc,
                    "test_ce": 2.0 * math.exp(-speed * epoch),
                    "wrong_frac": 0.0 if loss in ("cross_entropy", "exp_mse")
                    else 0.4 / epoch,
                    "grad_norm": 0.5 / epoch, "diverged": False,
                    "wall_time": 0.1 * epoch,
                }
                rows.append(last)
            member += 1
    ep = pd.DataFrame(rows)
    ep.to_csv(path / "epochs.csv", index=False)

    final = ep[ep["epoch"] == epochs]
    summ = []
    for (loss, h, wd), g in final.groupby(["loss", "hidden", "weight_decay"], sort=False):
        # The sweep's rule: best mean final validation accuracy, a diverged member scoring 0.
        score = g["val_acc"].where(~g["diverged"], 0.0)
        lr = float(score.groupby(g["learning_rate"]).mean().idxmax())
        c = g[g["learning_rate"] == lr]
        summ.append({
            "loss": loss, "hidden": h, "weight_decay": wd, "init_scale": 1.0,
            "learning_rate": lr, "lr_at_grid_edge": lr in (min(lrs), max(lrs)),
            "n_seeds": len(c), "val_acc_mean": c["val_acc"].mean(),
            "test_acc_mean": c["test_acc"].mean(), "test_acc_ci95": 0.012,
            "epochs_to_target_mean": 2.0 if loss == "cross_entropy" else math.nan,
            "reached_target": len(c) if loss == "cross_entropy" else 0,
            "diverged_at_lr": int(c["diverged"].sum()), "diverged": int(g["diverged"].sum()),
        })
    pd.DataFrame(summ).to_csv(path / "summary.csv", index=False)
    config = {  # the keys plots and report read, and the grids whose product is the members
        "name": "synthetic-test", "dataset": {"name": "digits"}, "seeds": list(seeds),
        "losses": list(losses),
        "model": {"hidden": [[int(w) for w in h.split("-") if w.isdigit()] for h in hidden],
                  "activation": "relu", "init_scale": [1.0]},
        "optimizer": {"name": "momentum", "learning_rate": {loss: list(lrs) for loss in losses},
                      "weight_decay": list(weight_decays)},
        "batch_size": 64, "epochs": epochs, "eval": {"target_accuracy": 0.9},
    }
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    (path / "env.json").write_text(json.dumps({
        "python": "3.11", "jax": "0.0-test", "devices": ["TFRT_CPU_0"], "device_kind": "cpu",
        "process_count": 1, "x64": False, "default_matmul_precision": "default"}))
    return path


@pytest.fixture
def results_dir(tmp_path):
    return make_results(tmp_path / "sweep")


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """A folder after `write_report` on it: the report drew the plots because they were missing.
    Drawing takes seconds, so the tests that only read the outcome share this one."""
    d = make_results(tmp_path_factory.mktemp("drawn") / "sweep")
    assert not (d / "plots").exists()
    return report.write_report(d)


def _check_files(paths):
    for p in paths:
        assert p.is_file() and p.stat().st_size > 0, p
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == PNG_MAGIC, p
        else:
            assert ET.parse(p).getroot().tag.endswith("svg"), p


def test_plots_are_png_and_svg_of_each(reported):
    paths = plots.plot_paths(reported.parent)
    expected = {f"{n}.{f}" for n in plots.PLOT_NAMES for f in ("png", "svg")}
    assert {p.name for p in paths} == expected
    assert all(p.parent == reported.parent / "plots" for p in paths)
    _check_files(paths)
    assert not list(reported.parent.glob("**/.*tmp"))  # atomic writes leave nothing behind


def test_write_report(reported):
    assert reported.name == "report.md"
    text = reported.read_text()
    assert text.startswith("# synthetic-test: digits · MLP 64-64 relu · momentum, batch 64\n")
    assert "Sweep `synthetic-test`" in text and "8 members" in text and "2 seeds" in text
    assert "2 losses" in text and "1 member diverged" in text
    assert "| `cross_entropy` | 64-64 | 1 † |" in text  # rate 1.0, at the grid's edge
    assert "† the chosen rate is at the edge of its grid" in text
    assert "| `mse` | 64-64 |" in text
    assert "± 1.20" in text  # the 95% half-width as a percentage
    assert "— (0/2 seeds)" in text  # mse never reached the target
    assert "| 1 / 4 |" in text  # one of mse's four members diverged, not at the chosen rate
    assert "Environment: jax 0.0-test, python 3.11; 1 × cpu; x64 off" in text
    for name in plots.PLOT_NAMES:
        assert f"](plots/{name}.png)" in text and f"](plots/{name}.svg)" in text
    assert text.count("![") == 4


def test_cli_plot_and_report_and_plots_are_reproducible(reported, results_dir, capsys):
    assert cli.main(["plot", str(results_dir)]) == 0
    out = capsys.readouterr().out.split()
    assert out == [str(p) for p in plots.plot_paths(results_dir)]
    _check_files(plots.plot_paths(results_dir))
    # Same tables, same SVGs (the shared folder was drawn from identical synthetic data).
    for name in plots.PLOT_NAMES:
        a = (results_dir / "plots" / f"{name}.svg").read_bytes()
        assert a == (reported.parent / "plots" / f"{name}.svg").read_bytes(), name
    assert cli.main(["report", str(results_dir)]) == 0
    assert capsys.readouterr().out.strip() == str(results_dir / "report.md")
    assert (results_dir / "report.md").read_text() == reported.read_text()


def test_report_redraws_only_missing_or_stale_plots(results_dir, monkeypatch):
    calls = []
    monkeypatch.setattr(plots, "plot_results", lambda d: calls.append(d))
    report.write_report(results_dir)  # no plots yet
    assert len(calls) == 1
    out = results_dir / "plots"
    out.mkdir()
    for p in plots.plot_paths(results_dir):
        p.write_bytes(b"x")
    report.write_report(results_dir)  # all present and newer than the tables
    assert len(calls) == 1
    old = (results_dir / "epochs.csv").stat().st_mtime - 10
    os.utime(out / "train_loss.svg", (old, old))
    report.write_report(results_dir)  # one older than the tables
    assert len(calls) == 2
    (out / "train_loss.svg").unlink()
    report.write_report(results_dir)
    assert len(calls) == 3


def test_chosen_runs_follow_summary(results_dir):
    res = plots.load_results(results_dir)
    choices = plots.chosen_runs(res)
    assert [c.loss for c in choices] == ["cross_entropy", "mse"]
    for c in choices:
        assert set(c.rows["learning_rate"]) == {c.learning_rate}
        assert sorted(c.rows["seed"].unique()) == [0, 1]
    assert res.epochs["diverged"].dtype == bool
    assert int(res.epochs["diverged"].sum()) == 2  # epochs 2 and 3 of the diverged member
    assert res.epochs["train_loss"].isna().sum() == 2


def test_several_hidden_groups_and_weight_decays(tmp_path):
    # One panel per hidden group; one summary row (and curve) per loss and weight decay.
    # "32" would be read as an integer without an explicit dtype; it must stay the string "32".
    d = make_results(tmp_path / "sweep", hidden=("64-64", "32"), weight_decays=(0.0, 1e-4))
    res = plots.load_results(d)
    assert set(res.epochs["hidden"]) == {"32", "64-64"}
    assert plots.describe(res) == "digits · MLP 32 | 64-64 relu · momentum, batch 64"
    choices = plots.chosen_runs(res)
    assert [(c.hidden, c.loss, c.row["weight_decay"], c.linestyle) for c in choices[:4]] == [
        ("32", "cross_entropy", 0.0, "-"), ("32", "cross_entropy", 1e-4, "--"),
        ("32", "mse", 0.0, "-"), ("32", "mse", 1e-4, "--"),
    ]
    assert choices[1].label() == "cross_entropy (lr 1, wd 0.0001)"
    assert all(set(c.rows["weight_decay"]) == {c.row["weight_decay"]} for c in choices)
    _check_files(plots.plot_results(d))
    text = report.write_report(d).read_text()
    assert "| Weight decay |" in text and "2 weight decays (0, 0.0001)" in text
    assert "| `mse` | 32 | 0.1 † | 0.0001 |" in text and "| `mse` | 64-64 | 0.1 † | 0 |" in text
    assert "| 1 / 4 |" in text  # diverged counts are per loss, hidden and weight decay


def test_hidden_order_and_linear_model():
    assert plots.hidden_order(["64-64", "128", "linear", "32", "64"]) == [
        "linear", "32", "64", "128", "64-64"]


def test_loss_colours_are_fixed_per_loss():
    a = plots.loss_styles(["mse", "cross_entropy"])
    b = plots.loss_styles(["exp_mse", "softmax_mse", "mse", "cross_entropy", "mod:fn"])
    assert a["mse"] == b["mse"] and a["cross_entropy"] == b["cross_entropy"]
    assert len({c for c, _ in b.values()}) == 5
    assert plots.loss_order(b) == ["cross_entropy", "mse", "softmax_mse", "exp_mse", "mod:fn"]


def test_diverged_column_spellings(results_dir):
    ep = pd.read_csv(results_dir / "epochs.csv")
    ep["diverged"] = ep["diverged"].astype(int)  # 0/1 instead of False/True
    ep.to_csv(results_dir / "epochs.csv", index=False)
    assert int(plots.load_results(results_dir).epochs["diverged"].sum()) == 2


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("lossjax: error: ")
    return err[0]


@pytest.mark.parametrize("command", ["plot", "report"])
def test_cli_missing_folder(tmp_path, capsys, command):
    missing = tmp_path / "nope"
    assert cli.main([command, str(missing)]) == 2
    line = _one_error_line(capsys)
    assert str(missing) in line and "does not exist" in line
    assert not missing.exists()


@pytest.mark.parametrize("command", ["plot", "report"])
@pytest.mark.parametrize("table", ["epochs.csv", "summary.csv"])
def test_cli_missing_table(results_dir, capsys, command, table):
    (results_dir / table).unlink()
    assert cli.main([command, str(results_dir)]) == 2
    line = _one_error_line(capsys)
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
        plots.plot_results(results_dir)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_summary_that_matches_no_member(results_dir):
    s = pd.read_csv(results_dir / "summary.csv")
    s.loc[0, "learning_rate"] = 0.5
    s.to_csv(results_dir / "summary.csv", index=False)
    with pytest.raises(ResultsError, match="matches no member"):
        plots.plot_results(results_dir)


def test_corrupt_config_is_an_error(results_dir):
    (results_dir / "config.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ResultsError, match=r"config\.yaml is unreadable"):
        plots.plot_results(results_dir)


def test_missing_config_falls_back_to_folder_name(results_dir):
    (results_dir / "config.yaml").unlink()
    (results_dir / "env.json").unlink()
    res = plots.load_results(results_dir)
    assert plots.describe(res) == "sweep · MLP 64-64"
    text = report.render(res)
    assert text.startswith("# sweep · MLP 64-64\n") and "Sweep `sweep`" in text
    assert "Environment" not in text


def test_seeds_stuck_at_the_same_accuracy(tmp_path):
    # Real case (Fashion-MNIST, mse at lr 3): three seeds all at exactly 0.1 validation
    # accuracy; their mean, 0.1 + 2e-17, exceeded their max and broke the error bars.
    results_dir = make_results(tmp_path / "sweep", seeds=(0, 1, 2))
    ep = pd.read_csv(results_dir / "epochs.csv")
    ep.loc[ep["learning_rate"] == 1.0, "val_acc"] = 0.1
    ep.to_csv(results_dir / "epochs.csv", index=False)
    _check_files(plots.plot_results(results_dir))


# --------------------------------------------------------------------------------------------
# Percent tick labels


@pytest.mark.parametrize(
    ("fraction", "label"),
    [(0.125, "12.5%"), (0.9, "90%"), (0.9725, "97.25%"), (0.0, "0%"), (1.0, "100%"),
     (0.1 + 0.2, "30%"), (0.07, "7%"), (-0.05, "-5%"), (-0.0, "0%"), (0.0001, "0.01%")],
)
def test_percent_label_shows_the_digits_it_needs(fraction, label):
    assert plots.percent_label(fraction) == label


def test_accuracy_axes_use_percent_labels(results_dir):
    res = plots.load_results(results_dir)
    fig = plots._test_accuracy(res, plots.chosen_runs(res), [])
    formatter = fig.axes[0].yaxis.get_major_formatter()
    assert isinstance(formatter, plots.PercentLabels)
    assert formatter.format_ticks([0.125, 0.5, 0.9725]) == ["12.5%", "50%", "97.25%"]
    assert formatter(-0.05) == "\N{MINUS SIGN}5%"  # matplotlib's minus, like its other ticks


# --------------------------------------------------------------------------------------------
# A loss whose every member diverged


def _all_diverge(losses, lrs=(0.1, 1.0), seeds=(0, 1)):
    return tuple((loss, lr, seed, 2) for loss in losses for lr in lrs for seed in seeds)


def _resummarize(d):
    """Rewrites summary.csv as the sweep does, from epochs.csv."""
    summary = results.summarize(pd.read_csv(d / "epochs.csv", dtype={"hidden": str}), 0.9)
    results.write_table(d / "summary.csv", summary)
    return summary


def _table_row(text, loss):
    return next(line for line in text.splitlines() if line.startswith(f"| `{loss}` |"))


def test_fully_diverged_loss_is_plotted_and_reported_as_diverged(tmp_path):
    d = make_results(tmp_path / "sweep", diverge=_all_diverge(["mse"]))
    summary = _resummarize(d)
    assert summary.loc[summary["loss"] == "mse", "learning_rate"].isna().all()
    res = plots.load_results(d)
    assert [c.loss for c in plots.chosen_runs(res)] == ["cross_entropy"]
    assert [c.loss for c in plots.diverged_groups(res)] == ["mse"]
    _check_files(plots.plot_results(d))
    text = report.write_report(d).read_text()
    mse = _table_row(text, "mse")
    assert mse == "| `mse` | 64-64 | — | — | diverged (all 4 members) | — | 4 / 4 |"
    assert "**" in _table_row(text, "cross_entropy")


def test_report_never_bolds_a_fully_diverged_loss_even_with_a_stale_summary(tmp_path):
    # A summary.csv from before: it chose a rate for mse and reported its frozen accuracy,
    # the best of the table.
    d = make_results(tmp_path / "sweep", diverge=_all_diverge(["mse"]))
    s = pd.read_csv(d / "summary.csv")
    s.loc[s["loss"] == "mse", "test_acc_mean"] = 0.99
    s.to_csv(d / "summary.csv", index=False)
    table = report.summary_table(plots.load_results(d))
    assert "**" not in _table_row(table, "mse")
    assert "diverged (all 4 members)" in _table_row(table, "mse")
    assert "99.00" not in table
    assert "**" in _table_row(table, "cross_entropy")


def test_every_loss_diverged(tmp_path):
    d = make_results(tmp_path / "sweep", diverge=_all_diverge(["cross_entropy", "mse"]))
    _resummarize(d)
    _check_files(plots.plot_results(d))
    text = report.write_report(d).read_text()
    assert "**" not in report.summary_table(plots.load_results(d))  # no winner at all
    assert "diverged (all 4 members)" in _table_row(text, "cross_entropy")
    assert "diverged (all 4 members)" in _table_row(text, "mse")


def test_summary_row_without_a_rate_for_members_that_did_not_diverge(results_dir):
    s = pd.read_csv(results_dir / "summary.csv")
    s.loc[s["loss"] == "cross_entropy", "learning_rate"] = math.nan
    s.to_csv(results_dir / "summary.csv", index=False)
    with pytest.raises(ResultsError, match="has no learning rate, yet not every member"):
        plots.plot_results(results_dir)


# --------------------------------------------------------------------------------------------
# Incomplete or cut tables


def _drop_rows(d, keep):
    ep = pd.read_csv(d / "epochs.csv")
    ep[keep(ep)].to_csv(d / "epochs.csv", index=False)


@pytest.mark.parametrize("command", ["plot", "report"])
def test_cli_refuses_an_unfinished_table(results_dir, capsys, command):
    # Interrupted after epoch 2: the last epoch of every member is missing.
    _drop_rows(results_dir, lambda ep: ep["epoch"] <= 2)
    assert cli.main([command, str(results_dir)]) == 2
    line = _one_error_line(capsys)
    assert "epochs.csv has 16 of 24 rows (8 members × 3 epochs)" in line
    assert "`lossjax sweep CONFIG --resume`" in line
    assert not (results_dir / "plots").exists() and not (results_dir / "report.md").exists()


def test_table_cut_after_some_rows(results_dir):
    # A file cut at a line break: the last members lack their last epochs.
    _drop_rows(results_dir, lambda ep: ep.index < 20)
    with pytest.raises(ResultsError, match="has 20 of 24 rows") as e:
        plots.load_results(results_dir)
    assert "--resume" in str(e.value)
    # In a folder marked complete, --resume has nothing to do: the way out is another.
    (results_dir / "status.json").write_text(json.dumps({"complete": True}))
    with pytest.raises(ResultsError, match="has 20 of 24 rows") as e:
        plots.load_results(results_dir)
    assert "--overwrite" in str(e.value) and "--resume" not in str(e.value)


def test_missing_hidden_group_is_found_through_the_config(tmp_path):
    # Interrupted before the second hidden group started: members 8..15 have no row at all,
    # which only config.yaml's grids reveal.
    d = make_results(tmp_path / "sweep", hidden=("64-64", "32"))
    _drop_rows(d, lambda ep: ep["hidden"].astype(str) == "64-64")
    s = pd.read_csv(d / "summary.csv", dtype={"hidden": str})
    s[s["hidden"] == "64-64"].to_csv(d / "summary.csv", index=False)
    with pytest.raises(ResultsError, match=r"has 24 of 48 rows \(16 members × 3 epochs\)"):
        plots.load_results(d)


def test_config_with_more_seeds_than_the_table(results_dir):
    cfg = yaml.safe_load((results_dir / "config.yaml").read_text())
    cfg["seeds"] = [0, 1, 2]
    (results_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ResultsError, match=r"has 24 of 36 rows \(12 members × 3 epochs\)"):
        plots.load_results(results_dir)


def test_table_beyond_the_config(results_dir):
    cfg = yaml.safe_load((results_dir / "config.yaml").read_text())
    cfg["epochs"] = 2
    (results_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ResultsError, match="member 0 epoch 3, outside .* config.yaml belong"):
        plots.load_results(results_dir)


def test_incomplete_table_without_config(results_dir):
    (results_dir / "config.yaml").unlink()
    full = pd.read_csv(results_dir / "epochs.csv")
    _drop_rows(results_dir, lambda ep: ep["member"] != 3)  # a member missing in the middle
    with pytest.raises(ResultsError, match=r"has 21 of 24 rows \(8 members × 3 epochs\)"):
        plots.load_results(results_dir)
    full.to_csv(results_dir / "epochs.csv", index=False)
    _drop_rows(results_dir, lambda ep: ~((ep["member"] == 5) & (ep["epoch"] == 3)))
    with pytest.raises(ResultsError, match="has 23 of 24 rows"):
        plots.load_results(results_dir)


def test_repeated_row(results_dir):
    ep = pd.read_csv(results_dir / "epochs.csv")
    pd.concat([ep, ep.iloc[[4]]]).to_csv(results_dir / "epochs.csv", index=False)
    with pytest.raises(ResultsError, match="holds member 1 epoch 2 twice"):
        plots.load_results(results_dir)


@pytest.mark.parametrize("table", ["epochs.csv", "summary.csv"])
@pytest.mark.parametrize("keep", [1, 5, 12, -2, -1])
def test_last_line_cut_mid_row(results_dir, capsys, table, keep):
    """``keep`` characters of the last line survive (negative: all but that many)."""
    text = (results_dir / table).read_text()
    start = text.rstrip("\n").rfind("\n") + 1
    last = text[start:].rstrip("\n")
    (results_dir / table).write_text(text[:start] + last[:keep])
    with pytest.raises(ResultsError, match=f"{table} ends mid-row") as e:
        plots.load_results(results_dir)
    assert "\n" not in str(e.value)
    assert cli.main(["report", str(results_dir)]) == 2
    assert "ends mid-row" in _one_error_line(capsys)


def test_summary_row_without_hidden_sizes(results_dir):
    s = pd.read_csv(results_dir / "summary.csv")
    s.loc[1, "hidden"] = None
    s.to_csv(results_dir / "summary.csv", index=False)
    with pytest.raises(ResultsError, match="summary.csv: line 3 has no hidden"):
        plots.load_results(results_dir)


def test_summary_cut_at_a_line_break(results_dir):
    s = pd.read_csv(results_dir / "summary.csv")
    s.iloc[:1].to_csv(results_dir / "summary.csv", index=False)
    with pytest.raises(ResultsError, match="summary.csv has no row for loss mse, hidden 64-64"):
        plots.load_results(results_dir)
