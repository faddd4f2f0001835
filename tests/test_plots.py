"""Plots and report drawn from a results folder. The folder here is synthetic test data in the
layout a sweep writes (config.yaml, env.json, epochs.csv, summary.csv), made by
conftest's ``make_results``; no training runs. Reading and checking the folder is tested in
``tests/test_analysis.py``."""

from __future__ import annotations

import os

import pandas as pd
import pytest
from conftest import all_diverge, check_files, make_results, resummarize, tie_folder

from lossjax import analysis, cli, plots, report


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """A folder after `write_report` on it: the report drew the plots because they were missing.
    Drawing takes seconds, so the tests that only read the outcome share this one."""
    d = make_results(tmp_path_factory.mktemp("drawn") / "sweep")
    assert not (d / "plots").exists()
    return report.write_report(d)


def test_plots_are_png_and_svg_of_each(reported):
    paths = plots.plot_paths(reported.parent)
    expected = {f"{n}.{f}" for n in plots.PLOT_NAMES for f in ("png", "svg")}
    assert {p.name for p in paths} == expected
    assert all(p.parent == reported.parent / "plots" for p in paths)
    check_files(paths)
    assert not list(reported.parent.glob("**/.*tmp"))  # atomic writes leave nothing behind


def test_write_report(reported):
    assert reported.name == "report.md"
    text = reported.read_text()
    assert text.startswith("# synthetic-test: digits · MLP 64-64 relu · momentum, batch 64\n")
    assert "Sweep `synthetic-test`" in text and "8 members" in text and "2 seeds" in text
    assert "2 losses" in text and "1 member diverged" in text
    # Rate 1.0, at the grid's edge; with two seeds its gap to 0.1 has a 95% interval that
    # includes 0 (t = 12.7 for one degree of freedom), and the table says so.
    assert "| `cross_entropy` | 64-64 | 1 (tie: 0.1) † |" in text
    assert "2 of 2 rate choices are ties" in text
    assert "† the chosen rate is at the edge of its grid" in text
    assert "| `mse` | 64-64 |" in text
    assert "± 1.20" in text  # the 95% half-width as a percentage
    assert "— (0/2 seeds)" in text  # mse never reached the target
    assert "| 1 / 4 |" in text  # one of mse's four members diverged, not at the chosen rate
    assert "Environment: jax 0.0-test, python 3.11; 1 × cpu; x64 off" in text
    for name in plots.PLOT_NAMES:
        assert f"](plots/{name}.png)" in text and f"](plots/{name}.svg)" in text
    assert text.count("![") == len(plots.PLOT_NAMES)


def test_cli_plot_and_report_and_plots_are_reproducible(reported, results_dir, capsys):
    assert cli.main(["plot", str(results_dir)]) == 0
    out = capsys.readouterr().out.split()
    assert out == [str(p) for p in plots.plot_paths(results_dir)]
    check_files(plots.plot_paths(results_dir))
    # Same tables, same SVGs (`reported` was drawn from identical synthetic data).
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


@pytest.mark.slow
def test_several_hidden_groups_and_weight_decays(tmp_path):
    # One panel per hidden group; one summary row (and curve) per loss and weight decay, told
    # apart by the line style.
    d = make_results(tmp_path / "sweep", hidden=("64-64", "32"), weight_decays=(0.0, 1e-4))
    choices = analysis.chosen_runs(analysis.load_results(d))
    assert [(c.hidden, c.loss, c.row["weight_decay"], plots.linestyle(c)) for c in choices[:4]] == [
        ("32", "cross_entropy", 0.0, "-"), ("32", "cross_entropy", 1e-4, "--"),
        ("32", "mse", 0.0, "-"), ("32", "mse", 1e-4, "--"),
    ]
    check_files(plots.plot_results(d))
    text = report.write_report(d).read_text()
    assert "| Weight decay |" in text and "2 weight decays (0, 0.0001)" in text
    assert "| `mse` | 32 | 0.1 (tie: 1) † | 0.0001 |" in text
    assert "| `mse` | 64-64 | 0.1 (tie: 1) † | 0 |" in text
    assert "| 1 / 4 |" in text  # diverged counts are per loss, hidden and weight decay


def test_loss_colours_are_fixed_per_loss():
    a = plots.loss_styles(["mse", "cross_entropy"])
    b = plots.loss_styles(["exp_mse", "softmax_mse", "mse", "cross_entropy", "mod:fn"])
    assert a["mse"] == b["mse"] and a["cross_entropy"] == b["cross_entropy"]
    assert len({c for c, _ in b.values()}) == 5
    assert list(b) == ["cross_entropy", "mse", "softmax_mse", "exp_mse", "mod:fn"]


def test_missing_config_falls_back_to_folder_name(results_dir):
    (results_dir / "config.yaml").unlink()
    (results_dir / "env.json").unlink()
    res = analysis.load_results(results_dir)
    assert analysis.describe(res) == "sweep · MLP 64-64"
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
    check_files(plots.plot_results(results_dir))


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
    res = analysis.load_results(results_dir)
    fig = plots._test_accuracy(res, analysis.chosen_runs(res), [])
    formatter = fig.axes[0].yaxis.get_major_formatter()
    assert isinstance(formatter, plots.PercentLabels)
    assert formatter.format_ticks([0.125, 0.5, 0.9725]) == ["12.5%", "50%", "97.25%"]
    assert formatter(-0.05) == "\N{MINUS SIGN}5%"  # matplotlib's minus, like its other ticks


# --------------------------------------------------------------------------------------------
# Test error on a log axis


def test_test_error_is_one_minus_accuracy_on_a_log_percent_axis(results_dir):
    res = analysis.load_results(results_dir)
    choices = analysis.chosen_runs(res)
    fig = plots.figures(res, ["test_error"])["test_error"]
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    lo, hi = ax.get_ylim()
    expected = [plots.percent_label(t) for t in plots.log_percent_ticks(lo, hi)]
    assert [t.get_text() for t in ax.get_yticklabels()] == expected and len(expected) >= 2
    assert ax.get_ylim()[1] <= 1.0  # no error above 100%
    for c, line in zip(choices, [x for x in ax.lines if x.get_label()[0] != "_"], strict=True):
        mean_acc = c.rows.groupby("epoch")["test_acc"].mean()
        assert line.get_ydata() == pytest.approx(1 - mean_acc.to_numpy(), rel=1e-6)
        assert line.get_label().startswith(f"{c.loss} (lr ")
        assert line.get_label().endswith(f": final {1 - mean_acc.iloc[-1]:.2%}")


@pytest.mark.parametrize(
    ("lo", "hi", "ticks"),
    [(0.013, 1.0, [0.02, 0.05, 0.1, 0.2, 0.5, 1.0]),  # 1, 2 and 5 times a power of ten
     (0.0066, 0.9, [0.01, 0.02, 0.05, 0.1, 0.2, 0.5]),
     (0.011, 0.035, [0.02, 0.03]),  # not two of 1-2-5 in view: then 1-2-3-5
     (0.013, 0.019, [0.01, 0.02]),  # not two digits in view: the two ticks around it
     (1e-5, 0.5, [1e-5, 1e-4, 1e-3, 1e-2, 0.1])],  # past three decades: powers of ten
)
def test_log_percent_ticks(lo, hi, ticks):
    assert plots.log_percent_ticks(lo, hi) == pytest.approx(ticks)


# --------------------------------------------------------------------------------------------
# A loss whose every member diverged


def _table_row(text, loss):
    return next(line for line in text.splitlines() if line.startswith(f"| `{loss}` |"))


def test_fully_diverged_loss_is_plotted_and_reported_as_diverged(tmp_path):
    d = make_results(tmp_path / "sweep", diverge=all_diverge(["mse"]))
    resummarize(d)
    check_files(plots.plot_results(d))
    text = report.write_report(d).read_text()
    mse = _table_row(text, "mse")
    assert mse == "| `mse` | 64-64 | — | — | diverged (all 4 members) | — | 4 / 4 |"
    assert "**" in _table_row(text, "cross_entropy")


def test_report_never_bolds_a_fully_diverged_loss_even_with_a_stale_summary(tmp_path):
    # A summary.csv from before: it chose a rate for mse and reported its frozen accuracy,
    # the best of the table.
    d = make_results(tmp_path / "sweep", diverge=all_diverge(["mse"]))
    s = pd.read_csv(d / "summary.csv")
    s.loc[s["loss"] == "mse", "test_acc_mean"] = 0.99
    s.to_csv(d / "summary.csv", index=False)
    table = report.summary_table(analysis.load_results(d))
    assert "**" not in _table_row(table, "mse")
    assert "diverged (all 4 members)" in _table_row(table, "mse")
    assert "99.00" not in table
    assert "**" in _table_row(table, "cross_entropy")


def test_every_loss_diverged(tmp_path):
    d = make_results(tmp_path / "sweep", diverge=all_diverge(["cross_entropy", "mse"]))
    resummarize(d)
    check_files(plots.plot_results(d))
    text = report.write_report(d).read_text()
    assert "**" not in report.summary_table(analysis.load_results(d))  # no winner at all
    assert "diverged (all 4 members)" in _table_row(text, "cross_entropy")
    assert "diverged (all 4 members)" in _table_row(text, "mse")


@pytest.mark.parametrize("rewrite", [False, True])  # an old summary.csv, and one with ties
def test_tied_choices_are_marked_in_legends_and_the_report(tmp_path, rewrite):
    d = tie_folder(tmp_path / "sweep")
    if rewrite:
        assert list(resummarize(d)["rate_choice"]) == ["decided", "tied"]
    res = analysis.load_results(d)
    figs = plots.figures(res, ["test_accuracy", "lr_sensitivity"])
    legend = [t.get_text() for t in figs["test_accuracy"].axes[0].get_legend().get_texts()]
    assert legend[0].startswith("cross_entropy (lr 1): final ")
    assert legend[1].startswith("mse (lr 0.1 tied with 1): final ")
    ax = figs["lr_sensitivity"].axes[0]
    assert "rate tied with the chosen one" in [t.get_text() for t in ax.get_legend().get_texts()]
    squares = [line for line in ax.lines if line.get_marker() == "s"
               and line.get_markerfacecolor() == "none"]  # mse's own markers are filled
    assert len(squares) == 1 and squares[0].get_xdata()[0] == pytest.approx(1.0, rel=0.1)
    text = report.render(res)
    assert "| `cross_entropy` | 64-64 | 1 † |" in text
    assert "| `mse` | 64-64 | 0.1 (tie: 1) † |" in text
    assert "1 of 2 rate choices are ties" in text
