"""Plots of a results folder, drawn from its tables, never the other way round.

``plot_results(results_dir)`` reads the folder through ``lossjax.analysis`` (``epochs.csv``,
``summary.csv``, and ``config.yaml`` for the titles) and writes these figures (the last one
only with ``final.csv``), each as PNG and SVG, into ``RESULTS_DIR/plots/``:

- ``test_accuracy``: test accuracy against epoch, one line per row of ``summary.csv`` (a loss,
  and its weight decay / init scale where those were swept) at the row's chosen learning rate;
  line = mean over seeds, band = min to max over seeds, a cross where a seed diverged.
- ``test_error``: the same runs' test error, 1 − test accuracy, on a log axis labelled in
  percent (1%, 2%, 5%, 10%): at 98% accuracy a difference of 1.6% against 2% error is a fifth
  of the errors, and invisible on an accuracy axis from 10% to 100%. Line and band as above
  (mean error = 1 − mean accuracy); an epoch where a seed makes no test error at all has no
  place on a log axis and leaves that seed out of the epoch's mean and band.
- ``train_loss``: training loss (each member's own loss) against epoch, log scale, same runs.
- ``lr_sensitivity``: final validation accuracy against learning rate (log scale), one line per
  row of ``summary.csv``; mean over the seeds that did not diverge, bars = min to max, a ring on
  the chosen rate, a square on each rate tied with it, diverged seeds counted in crosses along
  the bottom.
- ``wrong_direction``: fraction of wrong-class logits whose gradient is negative, i.e. that a
  gradient step pushes up, against epoch.
- ``reliability`` (only where the folder has ``final.csv``): the reliability diagram of each
  loss at its chosen rate, one panel per hidden size: test accuracy against mean confidence
  per confidence bin at the last epoch, the seeds' bins pooled, before (solid) and after
  (dashed) temperature scaling, and the diagonal of perfect calibration.

A legend label names a chosen rate that the seeds do not decide ('mse (lr 0.3 tied with 1)',
'mse (lr 0.3 from one seed)': ``analysis.undecided``); the rate is an estimate, and the curve is
one of several that the data cannot tell apart.

Each loss keeps one colour and marker in every figure (several optimizers, swept weight decay
or init scale change the line style, and the legend names the optimizer then). Several
hidden-size groups get one panel each. Figures are built on
``matplotlib.figure.Figure`` directly, so no pyplot state and no global backend are touched;
styles go through ``rc_context``.

A summary row without a learning rate is a group whose every member diverged: it has no curve,
so the figures mark it in the legend (and with crosses on the learning-rate plot).

A folder that cannot be read, or whose tables are incomplete or disagree, raises the one-line
``ResultsError`` of ``lossjax.analysis`` before anything is drawn; so does a plot that cannot be
written.

(Over 450 lines: the figures share one set of styles, panels and legends, which is why
they stay in one module.)
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import (
    FixedLocator,
    Formatter,
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
    NullLocator,
)
from matplotlib.transforms import blended_transform_factory

from lossjax import calibration_tables
from lossjax.analysis import (
    Choice,
    Results,
    chosen_runs,
    describe,
    diverged_groups,
    group_rows,
    hidden_order,
    last_epochs,
    load_results,
    loss_order,
)
from lossjax.errors import ResultsError, one_line
from lossjax.folder import atomic_write, require_own
from lossjax.loss_names import without_params

PLOT_NAMES = ("test_accuracy", "test_error", "train_loss", "lr_sensitivity", "wrong_direction")
#: Figures drawn only where a folder holds their data: ``reliability`` from final.csv.
DATA_PLOTS = ("reliability",)
FORMATS = ("png", "svg")
PLOTS_SUBDIR = "plots"

_BUILTIN_STYLE = {
    "cross_entropy": ("#1f77b4", "o"),
    "mse": ("#ff7f0e", "s"),
    "softmax_mse": ("#2ca02c", "^"),
    "exp_mse": ("#d62728", "D"),
}
_EXTRA_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
_EXTRA_MARKERS = ("v", "P", "X", "h", "p", "*")

STYLE = {
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "lossjax",  # stable element ids: same tables, same SVG
}
_DPI = 150


# --------------------------------------------------------------------------------------------
# Styles and what is drawn from a group's rows


def loss_styles(losses: Iterable[str]) -> dict[str, tuple[str, str]]:
    """``{loss: (colour, marker)}``: fixed for the built-ins, then the next free ones in order.
    The settings of one loss with parameters (``focal(gamma=1)``, ``focal(gamma=2)``) share a
    colour, their family's, and differ in their marker."""
    styles = {}
    family_color: dict[str, str] = {}
    family_size: dict[str, int] = {}
    for name in loss_order(losses):
        if name in _BUILTIN_STYLE:
            styles[name] = _BUILTIN_STYLE[name]
            continue
        family = without_params(name)
        if family not in family_color:
            family_color[family] = _EXTRA_COLORS[len(family_color) % len(_EXTRA_COLORS)]
        n = family_size[family] = family_size.get(family, -1) + 1
        # a family of one takes the marker its colour's position gives, as before families
        first = (len(family_color) - 1) % len(_EXTRA_MARKERS)
        styles[name] = (family_color[family],
                        _FAMILY_MARKERS[(_FAMILY_MARKERS.index(_EXTRA_MARKERS[first]) + n)
                                        % len(_FAMILY_MARKERS)])
    return styles


# Markers for the settings of one family: the extras', then the built-ins', distinct.
_FAMILY_MARKERS = (*_EXTRA_MARKERS, "o", "s", "^", "D", "<", ">", "d")


_LINESTYLES = ("-", "--", ":", "-.")


def linestyle(c: Choice) -> str:
    """Solid for the first combination of swept weight decay / init scale, then dashed, dotted
    and dash-dotted: a loss keeps its colour and marker whatever those values are."""
    return _LINESTYLES[c.variant % len(_LINESTYLES)]


def band(rows: pd.DataFrame, column: str, positive: bool = False) -> pd.DataFrame:
    """Per epoch: mean, min and max over members of ``column``, ignoring non-finite values."""
    v = rows[["epoch", column]]
    ok = np.isfinite(v[column].to_numpy(float))
    if positive:
        ok &= v[column].to_numpy(float) > 0
    v = v[ok]
    return v.groupby("epoch")[column].agg(["mean", "min", "max", "count"]).sort_index()


def _first_divergence(rows: pd.DataFrame) -> list[int]:
    """The first diverged epoch of each member of ``rows`` that diverged."""
    d = rows[rows["diverged"]]
    return d.groupby("member")["epoch"].min().tolist()


# --------------------------------------------------------------------------------------------
# Figures


# Figure geometry in inches: a panel's width, and the heights of a panel (axes, tick labels and
# axis label), of one legend row below it, and of the three-line title.
_PANEL_W = {1: 8.0}
_PANEL_W_MANY = 5.6
_PANEL_H = 4.0
_LEGEND_ROW_H = 0.2
_TITLE_H = 0.8


def panels(hidden: list[str]) -> tuple[Figure, dict[str, object]]:
    """One panel per hidden-size group, up to three a row; sized later by ``fit_panels``."""
    n = len(hidden)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(_panel_width(n) * ncols, 5.0 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    flat = axes.ravel()
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, dict(zip(hidden, flat, strict=False))


def _panel_width(n_panels: int) -> float:
    return _PANEL_W.get(n_panels, _PANEL_W_MANY)


def fit_panels(fig: Figure, axes: dict[str, object], legend_rows: int) -> None:
    """Sizes the figure so that each panel keeps its size whatever its legend holds."""
    n = len(axes)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    row_h = _PANEL_H + _LEGEND_ROW_H * legend_rows
    fig.set_size_inches(_panel_width(n) * ncols, _TITLE_H + row_h * nrows)


def _slots(choices: list[Choice]) -> tuple[list[int], int]:
    """Each choice's position within its panel, and the most choices any panel holds."""
    seen: dict[str, int] = {}
    slots = []
    for c in choices:
        slots.append(seen.get(c.hidden, 0))
        seen[c.hidden] = slots[-1] + 1
    return slots, max(seen.values(), default=0)


def percent_label(v: float) -> str:
    """A fraction as a percentage with the digits it needs: 0.125 → '12.5%', 0.9 → '90%',
    0.9725 → '97.25%'. Rounded to 6 decimals so that float noise (0.1 + 0.2) never shows."""
    text = f"{round(100 * v, 6) + 0.0:.6f}".rstrip("0").rstrip(".")  # + 0.0: no "-0"
    return f"{text}%"


class PercentLabels(Formatter):
    """Tick labels by ``percent_label``. (``PercentFormatter`` gives every tick the same number
    of decimals: with none, 12.5% shows as '12%'.)"""

    def __call__(self, x, pos=None):
        return self.fix_minus(percent_label(x))


def _diverged_handles(gone: list[Choice], styles) -> dict[str, list[Line2D]]:
    """Per hidden group, a legend entry for each of its groups whose every member diverged
    (they have no curve, but the reader must learn that they were run)."""
    handles: dict[str, list[Line2D]] = {}
    for c in gone:
        handles.setdefault(c.hidden, []).append(Line2D(
            [], [], linestyle="none", marker="x", color=styles[c.loss][0], markersize=8,
            markeredgewidth=2, label=f"{c.label(with_lr=False)}: every member diverged"))
    return handles


def _empty_note(ax, why: str, choices: list[Choice], hidden: str) -> None:
    """A note in the middle of a panel with nothing drawn in it: ``why``, or that every member
    diverged where the panel has no chosen rate at all."""
    text = why if any(c.hidden == hidden for c in choices) else "every member diverged"
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


_CROSS_STEP = 0.045  # axes fraction between stacked crosses


def _bottom_cross(ax, x: float, level: int, color: str, text: str | None = None) -> None:
    """A cross near the bottom of ``ax`` at data ``x``; ``level`` stacks crosses upwards."""
    tr = blended_transform_factory(ax.transData, ax.transAxes)
    y = 0.03 + _CROSS_STEP * level
    ax.plot([x], [y], "x", transform=tr, color=color, markersize=9, markeredgewidth=2.2,
            clip_on=False, zorder=5)
    if text:
        ax.annotate(text, (x, y), xycoords=tr, xytext=(6, -3), textcoords="offset points",
                    fontsize=8, color=color)


def _plain_log_label(v: float, _pos=None) -> str:
    """'0.3' for ticks at 1, 2, 3 and 5 times a power of ten; no label for the others."""
    if v <= 0:
        return ""
    lead = round(v / 10 ** math.floor(math.log10(v)), 6)
    return f"{v:g}" if lead in (1, 2, 3, 5) else ""


def legend_below(ax, handles: list, panel_width: float) -> int:
    """Below the panel, so it never hides a curve: two columns where the labels fit, else one.
    Returns the number of rows."""
    longest = max(len(h.get_label()) for h in handles)
    column_w = 0.075 * longest + 0.8  # about 9 pt characters, plus the handle and spacing
    ncols = 2 if 2 * column_w <= 0.95 * panel_width else 1
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=ncols,
              frameon=False, handlelength=2.5, columnspacing=1.5)
    return math.ceil(len(handles) / ncols)


def _seeds_note(choices: list[Choice]) -> str:
    if not choices:
        return "every member diverged: no curve to draw"
    n = sorted({c.rows["seed"].nunique() for c in choices})
    seeds = f"{n[0]}" if len(n) == 1 else f"{n[0]}–{n[-1]}"
    if n[-1] == 1:
        return "one seed: no spread to show"
    return f"line: mean over {seeds} seeds, band: min–max over seeds"


def _curve_figure(
    res: Results,
    choices: list[Choice],
    gone: list[Choice],
    column: str,
    title: str,
    ylabel: str,
    *,
    log_y: bool = False,
    percent: bool = False,
    label: Callable[[Choice, pd.DataFrame], str],
) -> Figure:
    hidden = hidden_order(c.hidden for c in choices + gone)
    fig, axes = panels(hidden)
    styles = loss_styles(res.epochs["loss"])
    slots, _ = _slots(choices)
    any_diverged = False
    missing: dict[str, list[Line2D]] = {}
    diverged = _diverged_handles(gone, styles)
    for c, slot in zip(choices, slots, strict=True):
        color, marker = styles[c.loss]
        b = band(c.rows, column, positive=log_y)
        if b.empty:
            missing.setdefault(c.hidden, []).append(
                Line2D([], [], color=color, marker=marker, linestyle=":",
                       label=f"{c.label()}: no finite values"))
            continue
        any_diverged |= _draw_band(axes[c.hidden], c, b, slot, styles[c.loss], label(c, b))
    first, last = (int(v) for v in res.epochs["epoch"].agg(["min", "max"]))
    pad = max(0.5, 0.02 * (last - first))
    rows = 0
    for h, ax in axes.items():
        _epoch_axes(ax, (first - pad, last + pad), f"hidden {h}" if len(axes) > 1 else None,
                    log_y=log_y, percent=percent)
        handles, _ = ax.get_legend_handles_labels()
        if not handles:
            _empty_note(ax, "no finite values recorded", choices, h)
        handles += missing.get(h, []) + diverged.get(h, [])
        if any_diverged:
            handles.append(Line2D([], [], linestyle="none", marker="x", color="0.25",
                                  markersize=8, markeredgewidth=2,
                                  label="a seed diverged here"))
        if handles:
            rows = max(rows, legend_below(ax, handles, _panel_width(len(axes))))
    axes[hidden[0]].set_ylabel(ylabel)
    fig.suptitle(f"{title}\n{describe(res)}\n{_seeds_note(choices)}", fontsize=11)
    fit_panels(fig, axes, rows)
    return fig


def _draw_band(ax, c: Choice, b: pd.DataFrame, slot: int, style: tuple[str, str],
               label: str) -> bool:
    """One run's mean line and min–max band, with a cross on the line where each of its seeds
    diverged; True if there was such a cross."""
    color, marker = style
    x = b.index.to_numpy()
    # Thin the markers on long runs, staggered per curve so that curves lying on top of each
    # other (e.g. two losses at a wrong-direction fraction of exactly 0) both stay visible.
    every = 1 if len(x) < 8 else max(2, len(x) // 12)
    ax.plot(x, b["mean"], color=color, marker=marker, markevery=(slot % every, every),
            markersize=5, linewidth=2, linestyle=linestyle(c), label=label, zorder=3)
    if (b["max"] > b["min"]).any():
        ax.fill_between(x, b["min"], b["max"], color=color, alpha=0.18, linewidth=0)
    crossed = False
    for e in _first_divergence(c.rows):
        before = b.index[b.index <= e]
        if len(before):  # on the line, where the mean stood when the seed diverged
            crossed = True
            ax.plot([e], [b["mean"].loc[before[-1]]], "x", color=color, markersize=11,
                    markeredgewidth=2.5, zorder=5)
    return crossed


def _epoch_axes(ax, xlim: tuple[float, float], title: str | None, *, log_y: bool,
                percent: bool) -> None:
    """A panel's axes against epoch: integer ticks, and a log or percentage y axis."""
    ax.set_xlabel("epoch")
    ax.set_xlim(*xlim)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if title:
        ax.set_title(title)
    if log_y:
        ax.set_yscale("log")
        lo, hi = ax.get_ylim()
        if lo > 0 and hi / lo < 100:  # under two decades: plain numbers, not 6×10⁻¹
            plain = FuncFormatter(_plain_log_label)
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)
    if percent:
        ax.yaxis.set_major_formatter(PercentLabels())


def _final_label(fmt: str) -> Callable[[Choice, pd.DataFrame], str]:
    def label(c: Choice, b: pd.DataFrame) -> str:
        return f"{c.label()}: final {format(b['mean'].iloc[-1], fmt)}"

    return label


def _test_accuracy(res: Results, choices: list[Choice], gone: list[Choice]) -> Figure:
    return _curve_figure(
        res, choices, gone, "test_acc", "Test accuracy at each loss's chosen learning rate",
        "test accuracy", percent=True, label=_final_label(".1%"),
    )


def _test_error(res: Results, choices: list[Choice], gone: list[Choice]) -> Figure:
    # 1 - accuracy of each member, then the usual band: mean over seeds = 1 - mean accuracy.
    err = [dataclasses.replace(c, rows=c.rows.assign(test_error=1.0 - c.rows["test_acc"]))
           for c in choices]
    fig = _curve_figure(
        res, err, gone, "test_error", "Test error at each loss's chosen learning rate",
        "test error (1 − test accuracy, log scale)", log_y=True, label=_final_label(".2%"),
    )
    for ax in fig.axes:
        if ax.get_visible():
            log_percent_axis(ax)
    return fig


#: Where ``log_percent_axis`` puts labelled ticks: these times each power of ten.
_LOG_TICKS = ((1.0,), (1.0, 2.0, 5.0), (1.0, 2.0, 3.0, 5.0), tuple(range(1, 10)))


def log_percent_ticks(lo: float, hi: float) -> list[float]:
    """Labelled ticks for a log axis of fractions from ``lo`` to ``hi``: 1, 2 and 5 times each
    power of ten (1%, 2%, 5%, 10%, ...), thinned to powers of ten past three decades and made
    denser (3, then every digit) where that leaves fewer than two in view; at worst the two
    ticks around the view, which ``log_percent_axis`` then widens to."""
    if not (0 < lo < hi):
        return []
    decades = range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
    sets = _LOG_TICKS if hi / lo > 1000 else _LOG_TICKS[1:]
    ticks: list[float] = []
    for subs in sets:
        every = sorted(round(s * 10.0**d, 12) for d in decades for s in subs)
        ticks = [t for t in every if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]
        if len(ticks) >= 2:
            return ticks
    # Fewer than two digits' ticks in view: the nearest one below and above it.
    return [max(t for t in every if t <= lo), min(t for t in every if t >= hi)]


def log_percent_axis(ax) -> None:
    """A log y axis of fractions labelled as percentages (``percent_label``: 1%, 2%, 5%, 10%),
    with unlabelled minor ticks at every digit, capped at 100%. A view too narrow for two
    labelled ticks is widened to the ticks around it."""
    lo, hi = ax.get_ylim()
    hi = min(hi, 1.0)
    ticks = log_percent_ticks(lo, hi)
    if not ticks:
        return
    ax.set_ylim(min(lo, ticks[0]), max(hi, ticks[-1]))
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(PercentLabels())
    ax.yaxis.set_minor_locator(LogLocator(base=10, subs=tuple(range(2, 10))))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _train_loss(res: Results, choices: list[Choice], gone: list[Choice]) -> Figure:
    return _curve_figure(
        res, choices, gone, "train_loss", "Training loss at each loss's chosen learning rate",
        "mean training loss (each loss in its own units, log scale)", log_y=True,
        label=_final_label(".3g"),
    )


def _wrong_direction(res: Results, choices: list[Choice], gone: list[Choice]) -> Figure:
    fig = _curve_figure(
        res, choices, gone, "wrong_frac",
        "Wrong-class logits pushed up: fraction with a negative gradient",
        "wrong-class logits with negative gradient", percent=True, label=_final_label(".1%"),
    )
    for ax in fig.axes:
        if ax.get_visible():
            lo, hi = ax.get_ylim()
            ax.set_ylim(min(lo, -0.02), max(hi, 0.05))
    return fig


@dataclasses.dataclass(frozen=True)
class LrCurve:
    """One chosen run's line on the learning-rate plot."""

    choice: Choice
    points: np.ndarray  # per rate: (rate, mean, min, max) of the final val_acc of live seeds
    dodge: float  # factor on the rates that keeps the error bars of one panel's lines apart
    chosen: np.ndarray  # per point: at the chosen rate
    tied: np.ndarray  # per point: at a rate tied with the chosen one


@dataclasses.dataclass(frozen=True)
class LrSensitivity:
    """What the learning-rate plot draws, computed from the tables."""

    hidden: list[str]  # the panels, in order
    curves: list[LrCurve]  # the chosen runs with a validation accuracy, in the choices' order
    # Per (panel, rate) the crosses stacked there, bottom up: (x, loss, 'diverged/seeds').
    crosses: dict[tuple[str, float], list[tuple[float, str, str]]]
    rates: dict[str, list[float]]  # per panel, every rate run, ascending

    @property
    def any_tied(self) -> bool:
        return any(c.tied.any() for c in self.curves)


def lr_sensitivity_data(res: Results, choices: list[Choice], gone: list[Choice]) -> LrSensitivity:
    """Final validation accuracy per learning rate of each chosen run's group, and its diverged
    seeds; a group whose every member diverged gets only crosses, with its count, at each rate."""
    hidden = hidden_order(c.hidden for c in choices + gone)
    slots, n_slots = _slots(choices)
    crosses: dict[tuple[str, float], list[tuple[float, str, str]]] = {}
    rates: dict[str, set[float]] = {h: set() for h in hidden}
    for c in gone:
        for lr, g in last_epochs(c.rows).groupby("learning_rate"):
            rates[c.hidden].add(float(lr))
            crosses.setdefault((c.hidden, float(lr)), []).append(
                (lr, c.loss, f"{len(g)}/{len(g)}"))
    curves = []
    for c, slot in zip(choices, slots, strict=True):
        last = last_epochs(group_rows(res, c.loss, c.hidden, c.row))
        dodge = 10 ** (0.06 / n_slots * (slot - (n_slots - 1) / 2))
        pts = []
        for lr, g in last.groupby("learning_rate"):
            rates[c.hidden].add(float(lr))
            n_div = int(g["diverged"].sum())
            vals = g.loc[~g["diverged"], "val_acc"].dropna()
            if len(vals):
                pts.append((lr, vals.mean(), vals.min(), vals.max()))
            if n_div:
                crosses.setdefault((c.hidden, float(lr)), []).append(
                    (lr * dodge, c.loss, f"{n_div}/{len(g)}"))
        if pts:
            p = np.array(pts, dtype=float)
            curves.append(LrCurve(
                c, p, dodge, chosen=np.isclose(p[:, 0], c.learning_rate, rtol=1e-6),
                tied=np.isin(np.round(np.log10(p[:, 0]), 6), np.round(np.log10(c.tied_lrs), 6))))
    return LrSensitivity(hidden, curves, crosses, {h: sorted(v) for h, v in rates.items()})


def _draw_lr_curve(ax, curve: LrCurve, style: tuple[str, str]) -> None:
    """The error bars of one run, a ring on its chosen rate and a square on each tied one."""
    c, p, dodge = curve.choice, curve.points, curve.dodge
    color, marker = style
    ax.errorbar(
        p[:, 0] * dodge, p[:, 1],
        # float32 values read back as float64: a mean can exceed its max by an ulp.
        yerr=np.clip([p[:, 1] - p[:, 2], p[:, 3] - p[:, 1]], 0, None),
        color=color, marker=marker, markersize=6, linewidth=1.8, linestyle=linestyle(c),
        capsize=3, label=c.label(with_lr=False), zorder=3,
    )
    if curve.chosen.any():
        ax.plot(p[curve.chosen, 0] * dodge, p[curve.chosen, 1], "o", markersize=15,
                markerfacecolor="none", markeredgecolor=color, markeredgewidth=1.8, zorder=4)
    if curve.tied.any():  # as good as the chosen rate, as far as the seeds tell
        ax.plot(p[curve.tied, 0] * dodge, p[curve.tied, 1], "s", markersize=13,
                markerfacecolor="none", markeredgecolor=color, markeredgewidth=1.2, zorder=4)


def _draw_lr_crosses(axes: dict[str, object], crosses, styles) -> None:
    """A strip along the bottom of every panel, clear of the error bars, and the crosses in it."""
    strip = 0.04 + _CROSS_STEP * max(len(v) for v in crosses.values())
    for ax in axes.values():
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo - strip / (1 - strip) * (hi - lo), hi)
    for (h, _), marks in crosses.items():
        for level, (x, loss, text) in enumerate(marks):
            _bottom_cross(axes[h], x, level, styles[loss][0], text)


def _lr_axes(ax, lrs: list[float], title: str | None) -> None:
    """A panel's log learning-rate axis, ticked at each rate run when there are few."""
    ax.set_xscale("log")
    if 0 < len(lrs) <= 10:
        ax.xaxis.set_major_locator(FixedLocator(lrs))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{v:g}" for v in lrs])
    if lrs:
        ax.set_xlim(lrs[0] / 10**0.15, lrs[-1] * 10**0.15)
    ax.set_xlabel("learning rate (log scale)")
    if title:
        ax.set_title(title)
    ax.yaxis.set_major_formatter(PercentLabels())


def _lr_key_handles(any_tied: bool, any_diverged: bool) -> list[Line2D]:
    """The legend's key to the rings, squares and crosses."""
    handles = [Line2D([], [], linestyle="none", marker="o", markersize=11,
                      markerfacecolor="none", markeredgecolor="0.25", markeredgewidth=1.5,
                      label="chosen rate")]
    if any_tied:
        handles.append(Line2D([], [], linestyle="none", marker="s", markersize=10,
                              markerfacecolor="none", markeredgecolor="0.25",
                              markeredgewidth=1.2, label="rate tied with the chosen one"))
    if any_diverged:
        handles.append(Line2D([], [], linestyle="none", marker="x", color="0.25",
                              markersize=8, markeredgewidth=2,
                              label="diverged seeds (count/seeds)"))
    return handles


def _lr_sensitivity(res: Results, choices: list[Choice], gone: list[Choice]) -> Figure:
    data = lr_sensitivity_data(res, choices, gone)
    fig, axes = panels(data.hidden)
    styles = loss_styles(res.epochs["loss"])
    diverged = _diverged_handles(gone, styles)
    for curve in data.curves:
        _draw_lr_curve(axes[curve.choice.hidden], curve, styles[curve.choice.loss])
    if data.crosses:
        _draw_lr_crosses(axes, data.crosses, styles)
    rows = 0
    for h, ax in axes.items():
        _lr_axes(ax, data.rates[h], f"hidden {h}" if len(axes) > 1 else None)
        handles, _ = ax.get_legend_handles_labels()
        if not handles:
            _empty_note(ax, "no validation accuracy recorded", choices, h)
        handles += diverged.get(h, []) + _lr_key_handles(data.any_tied, bool(data.crosses))
        rows = max(rows, legend_below(ax, handles, _panel_width(len(axes))))
    axes[data.hidden[0]].set_ylabel("final validation accuracy")
    note = "mean over seeds that did not diverge, bars: min–max"
    fig.suptitle(f"Learning-rate sensitivity: final validation accuracy\n{describe(res)}\n{note}",
                 fontsize=11)
    fit_panels(fig, axes, rows)
    return fig


_FIGURES: dict[str, Callable[[Results, list[Choice], list[Choice]], Figure]] = {
    "test_accuracy": _test_accuracy,
    "test_error": _test_error,
    "train_loss": _train_loss,
    "lr_sensitivity": _lr_sensitivity,
    "wrong_direction": _wrong_direction,
}


def _reliability(res: Results, choices: list[Choice], gone: list[Choice]) -> Figure:
    final = calibration_tables.final_table(res.path)
    hidden = hidden_order(c.hidden for c in choices) or ["—"]
    styles = loss_styles(c.loss for c in choices)
    fig, axes = panels(hidden)
    handles: dict[str, list[Line2D]] = {h: [] for h in hidden}
    for c in choices:
        ax = axes[c.hidden]
        color, marker = styles[c.loss]
        for kind, ls, text in (("reliability", "-", ""), ("reliability_ts", "--", ", T-scaled")):
            b = calibration_tables.pooled_bins(final, c.rows["member"].unique(), kind)
            b = b[b["count"] > 0]
            if b.empty:
                continue
            (line,) = ax.plot(b["confidence"], b["accuracy"], color=color, marker=marker,
                              linestyle=ls, markersize=4, label=f"{c.label()}{text}")
            handles[c.hidden].append(line)
    rows = 1
    for h, ax in axes.items():
        ax.plot([0, 1], [0, 1], color="0.6", linewidth=1, zorder=0)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("mean confidence in bin (max softmax probability)")
        ax.set_ylabel("test accuracy in bin")
        if len(axes) > 1:
            ax.set_title(f"hidden {h}")
        if handles[h]:
            rows = max(rows, legend_below(ax, handles[h], _panel_width(len(axes))))
    # on two lines, as the other figures: one overflows the figure with a long dataset name
    fig.suptitle(f"Reliability at the last epoch, chosen rates\n{describe(res)}")
    fit_panels(fig, axes, rows)
    return fig


_FIGURES["reliability"] = _reliability


def figure_names(res: Results) -> tuple[str, ...]:
    """The figures of a folder: :data:`PLOT_NAMES`, then those of :data:`DATA_PLOTS` whose
    data it holds."""
    return PLOT_NAMES + (DATA_PLOTS if _has_final(res.path) else ())


def _has_final(results_dir) -> bool:
    return (Path(results_dir) / "final.csv").is_file()


def save_figure(fig: Figure, path: Path, fmt: str) -> None:
    # No date in SVGs: the same tables give byte-identical files.
    metadata = {"Date": None} if fmt == "svg" else None
    atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=_DPI, metadata=metadata))


def save_formats(fig: Figure, folder: Path, name: str) -> list[Path]:
    """Saves ``fig`` as ``folder/name`` in every format of :data:`FORMATS`; call it inside
    ``rc_context(STYLE)`` (the SVG's hash salt is read at save time)."""
    written = []
    for fmt in FORMATS:
        path = Path(folder) / f"{name}.{fmt}"
        try:
            save_figure(fig, path, fmt)
        except OSError as e:
            raise ResultsError(f"cannot write {path}: {one_line(e)}") from e
        written.append(path)
        # The first save laid the figure out; keep that layout for the other formats
        # (identical positions, and about a third less time per figure).
        fig.set_layout_engine("none")
    return written


def plot_paths(results_dir: str | os.PathLike) -> list[Path]:
    """Where ``plot_results`` writes: ``RESULTS_DIR/plots/{name}.{png,svg}``, in that order
    (``reliability`` too where the folder has final.csv)."""
    out = Path(results_dir) / PLOTS_SUBDIR
    names = PLOT_NAMES + (("reliability",) if _has_final(results_dir) else ())
    return [out / f"{name}.{fmt}" for name in names for fmt in FORMATS]


def figures(res: Results, names: Iterable[str] = PLOT_NAMES) -> dict[str, Figure]:
    """The figures of a loaded results folder, drawn but not saved (a notebook shows a returned
    ``Figure`` inline)."""
    choices, gone = chosen_runs(res), diverged_groups(res)
    unknown = [n for n in names if n not in _FIGURES]
    if unknown:
        raise ValueError(f"no plot named {unknown[0]!r}; the plots are "
                         f"{', '.join(PLOT_NAMES + DATA_PLOTS)}")
    if "reliability" in names and not _has_final(res.path):
        raise ValueError(f"no reliability plot: {res.path} has no final.csv (a sweep without a "
                         "test split, or from before lossjax wrote one)")
    with rc_context(STYLE):
        return {name: _FIGURES[name](res, choices, gone) for name in names}


def plot_results(results_dir: str | os.PathLike) -> list[Path]:
    """Draws the figures of a results folder from its tables (``PLOT_NAMES``); returns the
    file paths (``plot_paths``).

    Raises ``ResultsError`` (one line) when the folder or a table is missing, unreadable or
    incomplete, or when ``summary.csv`` and ``epochs.csv`` disagree; and, before reading
    anything, when the folder is not one a sweep made (no ``status.json``) or ``plots/`` is a
    link: lossjax writes only into its own folders (``lossjax.folder.require_own``).
    """
    require_own(results_dir)  # before anything in it is opened
    res = load_results(results_dir)
    choices, gone = chosen_runs(res), diverged_groups(res)
    out = res.path / PLOTS_SUBDIR
    try:
        out.mkdir(exist_ok=True)
    except OSError as e:
        raise ResultsError(f"cannot create {out}: {one_line(e)}") from e
    written = []
    with rc_context(STYLE):
        for name in figure_names(res):
            written += save_formats(_FIGURES[name](res, choices, gone), out, name)
    return written
