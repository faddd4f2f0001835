"""Comparing sweeps (``lossjax.compare``). The folders here are synthetic test data in the layout
a sweep writes, made by conftest's ``make_results``; no training runs. Figures are built on
``matplotlib.figure.Figure``, so no pyplot backend is involved."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from conftest import all_diverge, check_files, make_results, resummarize, tie_folder

from lossjax import analysis, plots, tables
from lossjax.comparison import Comparison, compare
from lossjax.errors import ResultsError


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """A base sweep and a variant: same folder name, another weight decay, one more loss and
    epoch. Reading is fast; the tests share the folders and never write into them."""
    root = tmp_path_factory.mktemp("compare")
    base = make_results(root / "base" / "sweep")
    variant = make_results(root / "variant" / "sweep", losses=("cross_entropy", "mse", "exp_mse"),
                           weight_decays=(1e-4,), epochs=4)
    return base, variant


def _summary(path) -> pd.DataFrame:
    return pd.read_csv(path / "summary.csv", dtype={"hidden": str})


def test_table_rows_labels_and_values_come_from_each_summary(two):
    base, variant = two
    c = compare([base, variant])
    assert c.labels == ("base/sweep", "variant/sweep")  # same name: the parents tell them apart
    t = c.table
    assert list(t.columns) == [
        "sweep", "dataset", "loss", "hidden", "learning_rate", "weight_decay", "runner_up_lr",
        "val_gap_mean", "val_gap_ci95", "rate_tied", "rate_choice", "tied_lrs", "n_seeds",
        "val_acc_mean", "test_acc_mean", "test_acc_ci95", "epochs_to_target_mean",
        "reached_target", "diverged"]
    assert list(zip(t["sweep"], t["loss"], strict=True)) == [
        ("base/sweep", "cross_entropy"), ("base/sweep", "mse"),
        ("variant/sweep", "cross_entropy"), ("variant/sweep", "mse"),
        ("variant/sweep", "exp_mse")]
    assert set(t["dataset"]) == {"digits"}
    for label, path in zip(c.labels, (base, variant), strict=True):
        mine = t[t["sweep"] == label].set_index("loss")
        theirs = _summary(path).set_index("loss").loc[mine.index]
        # These summaries predate the rate-choice columns: compare computes them (tested below).
        for col in mine.columns.drop(["sweep", "dataset", *tables.RATE_CHOICE_COLUMNS]):
            np.testing.assert_array_equal(mine[col].to_numpy(), theirs[col].to_numpy(), col)


def test_labels_given_or_made_unique(two):
    base, variant = two
    assert compare([base, variant], labels=["wd 0", "wd 1e-4"]).labels == ("wd 0", "wd 1e-4")
    assert compare([base, base]).labels == ("sweep", "sweep (2)")
    one = compare(base)  # a single folder is a comparison too
    assert one.labels == ("sweep",) and "weight_decay" not in one.table.columns
    with pytest.raises(ValueError, match="2 labels for 1 results folders"):
        compare([base], labels=["a", "b"])
    with pytest.raises(ValueError, match="must differ"):
        compare([base, variant], labels=["a", "a"])


def test_package_level_call_after_the_module_is_imported(two):
    import lossjax

    assert lossjax.compare(list(two)).labels == compare(list(two)).labels


def test_no_folder_or_a_broken_one(two, tmp_path):
    with pytest.raises(ValueError, match="at least one results folder"):
        compare([])
    not_results = tmp_path / "empty"
    not_results.mkdir()
    with pytest.raises(ResultsError) as got:
        compare([two[0], not_results])
    with pytest.raises(ResultsError) as direct:
        analysis.load_results(not_results)
    assert str(got.value) == str(direct.value) and "\n" not in str(got.value)


def test_markdown_formats_percentages_like_the_report(two):
    text = compare(list(two)).to_markdown()
    lines = text.splitlines()
    assert lines[0] == (
        "| Sweep | Dataset | Loss | Hidden | Learning rate | Weight decay | Runner-up (val gap, "
        "points) | Rate choice | Val acc. (%) | Test acc. (%) mean ± 95% CI | Epochs to target "
        "| Diverged |")
    assert len(lines) == 2 + 5
    s = _summary(two[0]).set_index("loss").loc["cross_entropy"]
    t = compare(list(two)).table.set_index(["sweep", "loss"]).loc[("base/sweep", "cross_entropy")]
    assert t.rate_choice == "tied" and t.tied_lrs == "0.1"  # two seeds: t = 12.7
    assert lines[2] == (
        f"| base/sweep | digits | `cross_entropy` | 64-64 | 1 (tie: 0.1) | 0 | "
        f"0.1 ({100 * t.val_gap_mean:+.2f} ± {100 * t.val_gap_ci95:.2f}) | tied | "
        f"{100 * s.val_acc_mean:.2f} | {100 * s.test_acc_mean:.2f} ± 1.20 | 2.0 (2/2 seeds) | 0 |")
    assert lines[3].endswith("| — (0/2 seeds) | 1 |")  # mse: never reached the target


def test_figure_one_panel_per_sweep_sharing_y(two):
    c = compare(list(two))
    fig = c.figure()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2
    assert axes[0].get_ylim() == axes[1].get_ylim()
    assert axes[0].get_shared_y_axes().joined(axes[0], axes[1])
    styles = plots.loss_styles(c.table["loss"])
    for ax, label, path in zip(axes, c.labels, two, strict=True):
        assert ax.get_title().startswith(label)
        ep = pd.read_csv(path / "epochs.csv")
        summary = _summary(path).set_index("loss")
        lines = ax.get_lines()
        assert len(lines) == len(summary)
        for line in lines:
            loss = line.get_label().split(" ")[0]
            chosen = ep[(ep["loss"] == loss)
                        & np.isclose(ep["learning_rate"], summary.loc[loss, "learning_rate"])]
            mean = chosen.groupby("epoch")["test_acc"].mean()
            np.testing.assert_array_equal(line.get_xdata(), mean.index.to_numpy())
            np.testing.assert_allclose(line.get_ydata(), mean.to_numpy(), rtol=1e-12)
            assert line.get_color() == styles[loss][0]  # one colour per loss in every panel


def test_a_fully_diverged_loss_is_noted_not_drawn(tmp_path, two):
    gone = make_results(tmp_path / "gone", diverge=all_diverge(["mse"]))
    resummarize(gone)
    c = compare([two[0], gone])
    row = c.table[(c.table["sweep"] == "gone") & (c.table["loss"] == "mse")].iloc[0]
    assert math.isnan(row["learning_rate"]) and row["diverged"] == 4
    # Its NLL and ECE columns (the other sweep has them) are empty too.
    assert ("| gone | digits | `mse` | 64-64 | — | — | none | — | every member diverged "
            "| — | — | — | — | — | 4 |" in c.to_markdown())
    ax = c.figure().axes[1]
    assert [line.get_label().split(" ")[0] for line in ax.get_lines()] == ["cross_entropy"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "mse: every member diverged" in legend


def test_save_writes_four_files_and_leaves_others_alone(two, tmp_path):
    c: Comparison = compare(list(two))
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "comparison.md").write_text("stale")
    paths = c.save(out)
    assert [p.name for p in paths] == [
        "comparison.csv", "comparison.md", "comparison.png", "comparison.svg"]
    check_files(paths[2:])
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == sorted(["notes.txt", *(p.name for p in paths)])
    back = pd.read_csv(out / "comparison.csv", dtype={"hidden": str, "tied_lrs": str})
    back["tied_lrs"] = back["tied_lrs"].fillna("")  # an empty cell: no tied rate
    pd.testing.assert_frame_equal(back, c.table, check_dtype=False)
    md = (out / "comparison.md").read_text()
    assert c.to_markdown() in md and "](comparison.png)" in md
    assert c.save(tmp_path / "new" / "folder")[0].is_file()  # created where asked
    (tmp_path / "file").write_text("x")
    with pytest.raises(ResultsError, match="it is a file, not a folder"):
        c.save(tmp_path / "file")


def test_runner_up_gap_and_tie_in_the_table_and_markdown(tmp_path):

    c = compare([tie_folder(tmp_path / "ties")])
    t = c.table.set_index("loss")
    assert list(t["rate_choice"]) == ["decided", "tied"]
    assert list(t["runner_up_lr"]) == [0.1, 1.0] and list(t["tied_lrs"]) == ["", "1.0"]
    assert t.loc["mse", "val_gap_mean"] == pytest.approx(np.mean([0.02, -0.04, 0.03]), abs=1e-6)
    gap, half = 100 * t.loc["mse", "val_gap_mean"], 100 * t.loc["mse", "val_gap_ci95"]
    lines = c.to_markdown().splitlines()
    assert "| ties | digits | `cross_entropy` | 64-64 | 1 | 0.1 (+10.00 ± 2.48) | decided |" in (
        lines[2])
    assert f"| `mse` | 64-64 | 0.1 (tie: 1) | 1 ({gap:+.2f} ± {half:.2f}) | tied |" in lines[3]
    legend = [t.get_text() for t in c.figure().axes[0].get_legend().get_texts()]
    assert legend[1].startswith("mse (lr 0.1 tied with 1): final ")
