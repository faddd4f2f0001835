"""``experiments/generality.py``: the answer tables and the best-loss table across sweeps. The
folder is synthetic (conftest's ``make_results``): two optimizers' worth of rows is not needed to
check the pivot, one cell of a real sweep layout is; the numbers are checked against
``lossjax causal``'s analysis of the same folder and against paired gaps computed here."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import experiment, make_results, resummarize

from lossjax import causal_report
from lossjax.stats import ci95_halfwidth

SEEDS = (0, 1, 2, 3, 4)


@pytest.fixture(scope="module")
def script():
    return experiment("generality")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("gen") / "generality_digits_constant"
    make_results(path, losses=("cross_entropy", "mse", "mse-no_push_up"), lrs=(0.1, 1.0),
                 seeds=SEEDS, epochs=3, diverge=())
    ep = pd.read_csv(path / "epochs.csv", dtype={"hidden": str})
    # A per-seed spread so that the paired gaps have intervals of their own.
    ep["test_acc"] += 0.004 * ep["seed"] * (ep["loss"] == "mse")
    ep.to_csv(path / "epochs.csv", index=False)
    resummarize(path)
    return path


@pytest.fixture(scope="module")
def written(script, folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    assert script.main([str(folder), "--out", str(out)]) == 0
    return out


def test_each_cell_is_the_causal_effect_in_points(script, folder, written):
    got = json.loads((written / "generality.json").read_text())
    analysis = causal_report.analyse(folder, n_resamples=100)
    (c,) = analysis["comparisons"]
    (e,) = got["effects"]
    assert e["cell"] == ["digits", "momentum", "constant 3 ep", "2×64"]
    assert e["variant"] == "mse-no_push_up"
    assert e["speed"]["mean"] == pytest.approx(100 * c["speed"]["mean"])
    assert e["final"]["ci95"] == pytest.approx(100 * c["final_test_acc"]["ci95"])
    md = (written / "generality.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| `mse-no_push_up` |"))
    assert f"{e['speed']['mean']:+.2f} ± {e['speed']['ci95']:.2f}" in row
    assert "of 1;" in row  # the reading counts the one cell
    # The command that remakes the page, as it was given.
    assert f"Made by `python experiments/generality.py {folder} --out {written}`" in md


def test_the_best_loss_and_its_ties_follow_the_paired_gaps(folder, written):
    best = json.loads((written / "generality.json").read_text())["best"]
    assert {r["loss"] for r in best} == {"cross_entropy", "mse"}  # an edit is no loss of its own
    ep = pd.read_csv(folder / "epochs.csv", dtype={"hidden": str})
    final = {r["loss"]: ep[(ep["loss"] == r["loss"]) & (ep["learning_rate"] == r["learning_rate"])
                           & (ep["epoch"] == 3)].set_index("seed")["test_acc"] for r in best}
    top = max(best, key=lambda r: r["test_acc"])
    other = next(r for r in best if r is not top)
    gap = (final[top["loss"]] - final[other["loss"]]).to_numpy()
    assert top["best"] and not other["best"]
    assert other["gap_to_best"]["mean"] == pytest.approx(100 * gap.mean())
    assert other["tied_with_best"] == (abs(gap.mean()) <= ci95_halfwidth(gap))
    md = (written / "generality.md").read_text()
    pivot = md[md.index("### Test accuracy (%)"):md.index("### Speed")]
    assert f"| digits | momentum | `{top['loss']}` | **{top['test_acc']:.2f}** |" in pivot
    mark = "= " if other["tied_with_best"] else ""
    assert f"| digits | momentum | `{other['loss']}` | {mark}{other['test_acc']:.2f} |" in pivot
    summary = pd.read_csv(folder / "summary.csv").set_index("loss")
    assert top["test_nll_mean"] == pytest.approx(summary.loc[top["loss"], "test_nll_mean"])


def test_a_folder_that_is_no_sweep_is_one_line(script, tmp_path, capsys):
    assert script.main([str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("generality: ") and err.count("\n") == 1
