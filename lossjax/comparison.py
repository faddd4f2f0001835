"""Several sweeps side by side: a base loss against its variants, or one config on two datasets.

``compare(paths)`` reads each results folder through ``lossjax.analysis`` (so a folder that is
missing, unfinished or inconsistent raises its one-line ``ResultsError``) and returns a
``Comparison``:

- ``table``: one row per sweep and ``summary.csv`` row, sweeps in the order given, rows in
  ``analysis.summary_rows`` order within each, with how clearly each rate was chosen (runner-up,
  paired validation gap, tie: ``stats.rate_choice``; computed for an older folder);
- ``figure()``: test accuracy against epoch at each row's chosen learning rate, one panel per
  sweep, the panels sharing their y axis; a loss keeps its colour in every panel;
- ``to_markdown()``: the table in Markdown, percentages as in ``report.md``;
- ``save(folder)``: ``comparison.{csv,md,png,svg}`` in ``folder``, and nothing else there is
  touched.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from lossjax.analysis import (
    Choice,
    Results,
    chosen_runs,
    config_value,
    describe,
    diverged_groups,
    format_value,
    hidden_order,
    load_results,
    summary_rows,
    tie_mark,
    varying_columns,
)
from lossjax.folder import check_out, write_table, write_text
from lossjax.plots import (
    FORMATS,
    STYLE,
    PercentLabels,
    band,
    fit_panels,
    legend_below,
    linestyle,
    loss_styles,
    panels,
    save_formats,
)
from lossjax.tables import MATCH_COLUMNS, RATE_CHOICE_COLUMNS, SUMMARY_REQUIRED

NAME = "comparison"


@dataclass(frozen=True)
class Comparison:
    """The sweeps being compared, their labels, and the table of their summary rows."""

    labels: tuple[str, ...]
    results: tuple[Results, ...]
    table: pd.DataFrame

    def figure(self) -> Figure:
        """Test accuracy against epoch, one panel per sweep (up to three a row), y axis shared."""
        styles = loss_styles(self.table["loss"])  # over every sweep: one colour per loss
        with rc_context(STYLE):
            fig, axes = panels(list(self.labels))
            panel_w = fig.get_figwidth() / min(len(axes), 3)
            legend_rows = 0
            for label, res in zip(self.labels, self.results, strict=True):
                ax = axes[label]
                handles = _draw_sweep(ax, res, styles)
                ax.set_title(f"{label}\n{describe(res)}")
                ax.set_xlabel("epoch")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
                ax.yaxis.set_major_formatter(PercentLabels())
                if handles:
                    legend_rows = max(legend_rows, legend_below(ax, handles, panel_w))
            axes[self.labels[0]].set_ylabel("test accuracy")
            fig.suptitle("Test accuracy at each loss's chosen learning rate\n"
                         "line: mean over seeds, band: min–max over seeds", fontsize=11)
            fit_panels(fig, axes, legend_rows)
        return fig

    def to_markdown(self) -> str:
        """The table in Markdown: accuracies in percent with two decimals, as in ``report.md``;
        a row whose every member diverged shows no rate and no accuracy. Where a sweep has them,
        the test NLL and ECE after temperature scaling follow the test accuracy ('—' for a
        sweep from before them)."""
        extra = [c for c in MATCH_COLUMNS if c in self.table.columns]
        names = [c for c in ("optimizer",) if c in self.table.columns]
        head = ["Sweep", "Dataset", "Loss", *(c.capitalize() for c in names), "Hidden",
                "Learning rate"]
        head += [c.replace("_", " ").capitalize() for c in extra]
        head += ["Runner-up (val gap, points)", "Rate choice"]
        head += ["Val acc. (%)", "Test acc. (%) mean ± 95% CI"]
        calibrated = (all(c in self.table.columns for c in CALIBRATION_SHOWN)
                      and bool(self.table[list(CALIBRATION_SHOWN)].notna().any().any()))
        if calibrated:
            head += ["Test NLL", "Test ECE (%)", "Test NLL, T-scaled", "Test ECE, T-scaled (%)"]
        head += ["Epochs to target", "Diverged"]
        align = ["---" if h in ("Sweep", "Dataset", "Loss", "Optimizer", "Hidden",
                                   "Rate choice") else "---:" for h in head]
        lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |"]
        for r in self.table.itertuples(index=False):
            dataset = "—" if pd.isna(r.dataset) else _md(r.dataset)
            row = pd.Series(r._asdict())
            cells = [_md(r.sweep), dataset, f"`{_md(r.loss)}`",
                     *(_md(getattr(r, c)) for c in names), _md(r.hidden),
                     _number(r.learning_rate) + tie_mark(row)]
            cells += [_number(getattr(r, c)) for c in extra]
            cells += [_runner_up(r), str(r.rate_choice)]
            if math.isnan(r.learning_rate):
                cells += ["—", "every member diverged", *["—"] * (4 * calibrated), "—"]
            else:
                test = _pct(r.test_acc_mean)
                if not math.isnan(r.test_acc_ci95):
                    test += f" ± {100 * r.test_acc_ci95:.2f}"
                ett = r.epochs_to_target_mean
                ett_s = "—" if math.isnan(ett) else f"{ett:.1f}"
                reached = f"{ett_s} ({_int(r.reached_target)}/{_int(r.n_seeds)} seeds)"
                cells += [_pct(r.val_acc_mean), test]
                if calibrated:
                    for nll, ece in ((r.test_nll_mean, r.test_ece_mean),
                                     (r.test_nll_ts_mean, r.test_ece_ts_mean)):
                        cells += ["—" if pd.isna(nll) else f"{nll:.4f}",
                                  "—" if pd.isna(ece) else f"{100 * ece:.2f}"]
                cells.append(reached)
            cells.append(str(_int(r.diverged)))
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def save(self, folder: str | os.PathLike) -> list[Path]:
        """Writes ``comparison.csv``, ``.md``, ``.png`` and ``.svg`` into ``folder`` (created if
        need be) and returns their paths. Each is written atomically; any other file in
        ``folder`` is left alone. Raises ``ResultsError`` (one line) where one cannot be written.
        """
        out = Path(folder)
        check_out(out)
        paths = [out / f"{NAME}.{ext}" for ext in ("csv", "md", *FORMATS)]
        write_table(paths[0], self.table)
        write_text(paths[1], self._document())
        with rc_context(STYLE):  # also at save time: the SVG's hash salt is read then
            save_formats(self.figure(), out, NAME)
        return paths

    def _document(self) -> str:
        out = [f"# Comparison of {len(self.labels)} sweep{'s' if len(self.labels) > 1 else ''}",
               ""]
        out += [f"- **{_md(label)}** (`{res.path}`): {_md(describe(res))}"
                for label, res in zip(self.labels, self.results, strict=True)]
        out += ["", self.to_markdown(), "",
                "Each loss's learning rate was chosen on validation accuracy within its sweep; "
                "test accuracy is at that rate: mean ± half-width of the 95% interval over "
                "seeds. Epochs to target: mean over the seeds that reached it (seeds that "
                "reached it / seeds). Diverged: members that diverged over the whole "
                "learning-rate grid. Runner-up: the rate with the second best mean validation "
                "score (a diverged member scoring 0) and the paired gap, chosen − runner-up per "
                "seed, mean ± 95% t half-width in points. Rate choice: *decided*, *tied* (that "
                "interval includes 0), *one seed* (a single paired seed decides nothing), *one "
                "rate* or *none* (every member diverged); a rate marked *tie* is no better, by "
                "that test, than each rate listed.", "",
                f"![Test accuracy against epoch]({NAME}.png) ([SVG]({NAME}.svg))", ""]
        return "\n".join(out)


def compare(paths, labels=None) -> Comparison:
    """Reads the results folders ``paths`` (one or more) and returns their ``Comparison``.

    ``labels`` name the sweeps in the table and the figure; by default each folder's name, with
    as many parent folders as it takes to tell apart folders of the same name.
    """
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    if not paths:
        raise ValueError("compare needs at least one results folder")
    if labels is None:
        labels = _default_labels(paths)
    else:
        labels = [str(v) for v in labels]
        if len(labels) != len(paths):
            raise ValueError(f"{len(labels)} labels for {len(paths)} results folders")
        if len(set(labels)) < len(labels):
            raise ValueError(f"labels must differ from each other (got {', '.join(labels)})")
    results = tuple(load_results(p) for p in paths)
    return Comparison(tuple(labels), results, _table(labels, results))


def _default_labels(paths: list[Path]) -> list[str]:
    """Each folder's name, or its shortest tail of parent folders that no other folder shares;
    the same folder given twice becomes 'name', 'name (2)'."""
    full = [p.resolve() for p in paths]
    labels = []
    for p in full:
        others = [q.parts for q in full if q != p]
        k = next((k for k in range(1, len(p.parts)) if all(q[-k:] != p.parts[-k:] for q in others)),
                 len(p.parts))
        labels.append(str(Path(*p.parts[-k:])))
    seen = Counter()
    for i, label in enumerate(labels):
        seen[label] += 1
        if seen[label] > 1:
            labels[i] = f"{label} ({seen[label]})"
    return labels


def _table(labels, results) -> pd.DataFrame:
    frames = []
    for label, res in zip(labels, results, strict=True):
        rows = pd.DataFrame(summary_rows(res)).reset_index(drop=True)
        rows.insert(0, "sweep", label)
        rows.insert(1, "dataset", format_value(config_value(res.config, "dataset.name")))
        frames.append(rows)
    table = pd.concat(frames, ignore_index=True)
    # Weight decay and init scale matter where they tell rows apart: swept within a sweep, or
    # the one value changed between a base sweep and its variant.
    extra = [c for c in MATCH_COLUMNS
             if c in table.columns and table[c].nunique(dropna=False) > 1]
    # The optimizer where a sweep swept several (then its rows differ by it); a sweep of one
    # names it in its panel's title (describe), and its table stays as before optimizers were
    # swept.
    names = ["optimizer"] if any("optimizer" in varying_columns(r) for r in results) else []
    loss, hidden, *rest = SUMMARY_REQUIRED
    # Probability quality after temperature scaling, where any sweep has it (older ones: NaN).
    calibrated = [c for c in CALIBRATION_SHOWN if c in table.columns]
    return table[["sweep", "dataset", loss, *names, hidden, rest[0], *extra,
                  *RATE_CHOICE_COLUMNS, *rest[1:], *calibrated]]


#: summary.csv's calibration means a comparison shows beside the accuracy, where present:
#: test NLL and ECE, then both after temperature scaling.
CALIBRATION_SHOWN = ("test_nll_mean", "test_ece_mean", "test_nll_ts_mean", "test_ece_ts_mean")


def _draw_sweep(ax, res: Results, styles) -> list[Line2D]:
    """Draws one sweep's curves into ``ax``; returns its legend entries."""
    choices, gone = chosen_runs(res), diverged_groups(res)
    hidden = hidden_order(res.summary["hidden"])
    several = len(hidden) > 1
    # Within one panel the hidden sizes share it too: each (hidden, swept-value) combination
    # gets its own line style, where plots.py gives each hidden size a panel of its own.
    combos = sorted({(hidden.index(c.hidden), c.variant) for c in choices})
    for c in choices:
        b = band(c.rows, "test_acc")
        if b.empty:
            continue
        color, marker = styles[c.loss]
        style = linestyle(replace(c, variant=combos.index((hidden.index(c.hidden), c.variant))))
        x = b.index.to_numpy()
        every = 1 if len(x) < 8 else max(2, len(x) // 12)
        ax.plot(x, b["mean"], color=color, marker=marker, markevery=every, markersize=5,
                linewidth=2, linestyle=style, zorder=3,
                label=f"{_name(c, several)}: final {b['mean'].iloc[-1]:.1%}")
        if (b["max"] > b["min"]).any():
            ax.fill_between(x, b["min"], b["max"], color=color, alpha=0.18, linewidth=0)
    handles, _ = ax.get_legend_handles_labels()
    if not handles:
        ax.text(0.5, 0.5, "every member diverged" if gone else "no finite values recorded",
                transform=ax.transAxes, ha="center", va="center", color="0.4")
    # A group whose every member diverged has no curve: the legend says it was run.
    handles += [Line2D([], [], linestyle="none", marker="x", color=styles[c.loss][0],
                       markersize=8, markeredgewidth=2,
                       label=f"{_name(c, several, with_lr=False)}: every member diverged")
                for c in gone]
    return handles


def _name(c: Choice, several_hidden: bool, with_lr: bool = True) -> str:
    name = c.label(with_lr=with_lr)
    return f"{name} [hidden {c.hidden}]" if several_hidden else name


def _runner_up(r) -> str:
    """'1 (+0.12 ± 0.30)': the runner-up rate and the paired validation gap to it, in points."""
    if math.isnan(r.runner_up_lr):
        return "—"
    text = f"{r.runner_up_lr:g} ({100 * r.val_gap_mean:+.2f}"
    return text + ("" if math.isnan(r.val_gap_ci95) else f" ± {100 * r.val_gap_ci95:.2f}") + ")"


def _md(text) -> str:
    return str(text).replace("|", "\\|")


def _pct(v: float) -> str:
    return "—" if math.isnan(v) else f"{100 * v:.2f}"


def _number(v) -> str:
    return "—" if v is None or math.isnan(v) else f"{v:g}"


def _int(v) -> int:
    return 0 if v is None or math.isnan(v) else int(v)


__all__ = ["Comparison", "compare"]
