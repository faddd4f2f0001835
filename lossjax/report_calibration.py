"""report.md's probability-quality sections: a calibration table at the chosen rates (from
``summary.csv``'s calibration means) and a per-class test accuracy table (from ``final.csv``).
A folder without those columns or that file gets neither, and its report is what it was.
"""

from __future__ import annotations

import math

from lossjax import analysis, calibration_tables
from lossjax.analysis import Results

# Up to this many classes the per-class table has a column per class; beyond, a summary.
MAX_CLASS_COLUMNS = 20


def _cell(v, fmt: str) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "—"
    return "—" if math.isnan(f) else format(f, fmt)


def _name(r) -> list[str]:
    return [f"`{r['loss']}`", str(r["hidden"]), _cell(r["learning_rate"], "g")]


def calibration_table(res: Results) -> list[str]:
    """The calibration means at each summary row's chosen rate, or nothing where
    ``summary.csv`` lacks them."""
    if not calibration_tables.has_summary_columns(res.summary):
        return []
    head = ["Loss", "Hidden", "Learning rate", "Test NLL", "Brier", "ECE (%)", "Temperature",
            "NLL, scaled", "Brier, scaled", "ECE, scaled (%)"]
    lines = ["## Calibration", "",
             "| " + " | ".join(head) + " |",
             "| " + " | ".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + " |"]
    marked = []
    for c in analysis.chosen_runs(res):
        r = c.row
        temperature = _cell(r["temperature_mean"], ".3g")
        if n := _unfit_fits(c.rows):
            temperature += " ‡"
            marked.append(f"`{r['loss']}` hidden {r['hidden']}: {n} of {r['n_seeds']}")
        cells = _name(r) + [
            _cell(r["test_nll_mean"], ".4f"), _cell(r["test_brier_mean"], ".4f"),
            _cell(100 * float(r["test_ece_mean"]), ".2f"), temperature,
            _cell(r["test_nll_ts_mean"], ".4f"), _cell(r["test_brier_ts_mean"], ".4f"),
            _cell(100 * float(r["test_ece_ts_mean"]), ".2f")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Means over the chosen rate's seeds at the last epoch, on the test split, of "
              "softmax(logits) whatever the loss: NLL (the test cross-entropy), Brier score "
              "(summed over classes) and expected calibration error (15 equal-width confidence "
              "bins, Guo et al. 2017); then with one temperature per model fitted on the "
              "validation split (temperature scaling), which changes no accuracy."]
    if marked:
        low, high = calibration_tables.TEMPERATURE_BOUNDS
        lines += ["", f"‡ Temperature fits that found no minimum ({'; '.join(marked)}): "
                  f"they ended at a bound of [{low:g}, {high:g}] (the NLL still falling "
                  "there) or did not converge (NaN in epochs.csv); the mean temperature "
                  "leaves them out, the scaled metrics are those of the temperature reached."]
    return lines


def _unfit_fits(rows) -> int:
    """How many of a chosen rate's members, not diverged, have a temperature fit that found no
    minimum at their last epoch (0 where epochs.csv has no temperature)."""
    if "temperature" not in rows.columns:
        return 0
    last = rows.loc[rows.groupby("member")["epoch"].idxmax()]
    last = last[~last["diverged"].astype(bool) & (last["epoch"] == rows["epoch"].max())]
    return int(calibration_tables.unfit(last["temperature"]).sum())


def class_table(res: Results) -> list[str]:
    """Per-class test accuracy (%) at each loss's chosen rate, or nothing without final.csv."""
    final = calibration_tables.final_table(res.path)
    if final is None:
        return []
    rows = []
    for c in analysis.chosen_runs(res):
        acc = calibration_tables.class_accuracy(final, c.rows["member"].unique())
        if len(acc):
            rows.append((c, acc))
    if not rows:
        return []
    classes = sorted({int(k) for _, acc in rows for k in acc.index})
    if len(classes) > MAX_CLASS_COLUMNS:
        return _class_summary(rows, len(classes))
    head = ["Loss", "Hidden", "Learning rate", *map(str, classes)]
    lines = ["## Per-class test accuracy", "",
             "| " + " | ".join(head) + " |",
             "| " + " | ".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + " |"]
    for c, acc in rows:
        lines.append("| " + " | ".join(_name(c.row) + [_cell(100 * acc.get(k, math.nan), ".1f")
                                                      for k in classes]) + " |")
    lines += ["", "Test accuracy (%) per true class at the last epoch, mean over the chosen "
              "rate's seeds."]
    return lines


def _class_summary(rows, k: int) -> list[str]:
    """The per-class table for many classes: a column per class would be unreadable at 100
    and unrenderable at 1,000, so each row summarises the spread and names the extremes."""
    head = ["Loss", "Hidden", "Learning rate", "Mean", "Median", "Worst 5 (class: %)",
            "Best 5 (class: %)", "Classes < 50%", "Classes at 100%"]
    lines = ["## Per-class test accuracy", "",
             "| " + " | ".join(head) + " |",
             "| " + " | ".join(["---"] * 2 + ["---:"] * 3 + ["---"] * 2 + ["---:"] * 2) + " |"]
    for c, acc in rows:
        acc = acc.dropna().sort_values(kind="stable")

        def named(part) -> str:
            return ", ".join(f"{int(i)}: {100 * v:.0f}" for i, v in part.items())

        lines.append("| " + " | ".join(_name(c.row) + [
            _cell(100 * acc.mean(), ".1f"), _cell(100 * acc.median(), ".1f"),
            named(acc.head(5)), named(acc.tail(5).iloc[::-1]),
            str(int((acc < 0.5).sum())), str(int((acc >= 1.0).sum()))]) + " |")
    lines += ["", f"Test accuracy (%) per true class at the last epoch, mean over the chosen "
              f"rate's seeds, summarised over the {k} classes (classes by label index; "
              "env.json's data record names them)."]
    return lines


def sections(res: Results) -> list[str]:
    """Both tables, each followed by a blank line; nothing where there is nothing to show."""
    out = []
    for part in (calibration_table(res), class_table(res)):
        if part:
            out += [*part, ""]
    return out
