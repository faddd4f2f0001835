"""Plots of a results folder, drawn from its tables, never the other way round.

``plot_results(results_dir)`` reads ``epochs.csv`` and ``summary.csv`` (and ``config.yaml`` for
the titles) and writes four figures, each as PNG and SVG, into ``RESULTS_DIR/plots/``:

- ``test_accuracy``: test accuracy against epoch, one line per row of ``summary.csv`` (a loss,
  and its weight decay / init scale where those were swept) at the row's chosen learning rate;
  line = mean over seeds, band = min to max over seeds, a cross where a seed diverged.
- ``train_loss``: training loss (each member's own loss) against epoch, log scale, same runs.
- ``lr_sensitivity``: final validation accuracy against learning rate (log scale), one line per
  row of ``summary.csv``; mean over the seeds that did not diverge, bars = min to max, a ring on
  the chosen rate, diverged seeds counted in crosses along the bottom.
- ``wrong_direction``: fraction of wrong-class logits whose gradient is negative, against epoch.

Each loss keeps one colour and marker in every figure (swept weight decay / init scale change
the line style). Several hidden-size groups get one panel each. Figures are built on
``matplotlib.figure.Figure`` directly, so no pyplot state and no global backend are touched;
styles go through ``rc_context``.

A summary row without a learning rate is a group whose every member diverged: it has no curve,
so the figures mark it in the legend (and with crosses on the learning-rate plot).

Expected failures (folder or table missing, unreadable, cut short, lacking columns or rows,
tables that disagree) raise ``ResultsError`` with one line.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import (
    FixedLocator,
    Formatter,
    FuncFormatter,
    MaxNLocator,
    NullLocator,
)
from matplotlib.transforms import blended_transform_factory

from lossjax.errors import ResultsError
from lossjax.losses import LOSSES
from lossjax.results import atomic_write, is_complete

PLOT_NAMES = ("test_accuracy", "train_loss", "lr_sensitivity", "wrong_direction")
FORMATS = ("png", "svg")
PLOTS_SUBDIR = "plots"

BUILTIN_LOSSES = tuple(LOSSES)
_BUILTIN_STYLE = {
    "cross_entropy": ("#1f77b4", "o"),
    "mse": ("#ff7f0e", "s"),
    "softmax_mse": ("#2ca02c", "^"),
    "exp_mse": ("#d62728", "D"),
}
_EXTRA_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
_EXTRA_MARKERS = ("v", "P", "X", "h", "p", "*")

EPOCHS_COLUMNS = (
    "member", "loss", "hidden", "learning_rate", "seed", "epoch",
    "train_loss", "val_acc", "test_acc", "wrong_frac", "diverged",
)
SUMMARY_COLUMNS = (
    "loss", "hidden", "learning_rate", "n_seeds", "val_acc_mean", "test_acc_mean",
    "test_acc_ci95", "epochs_to_target_mean", "reached_target", "diverged",
)
# Swept values besides the learning rate that pick a summary row's members when present in both
# tables (floats, compared with a relative tolerance because they round-trip through CSV).
MATCH_COLUMNS = ("weight_decay", "init_scale")
_FLOAT_COLUMNS = (
    "learning_rate", "weight_decay", "init_scale", "train_loss", "train_acc", "val_acc",
    "test_acc", "test_ce", "wrong_frac", "grad_norm", "wall_time",
    "val_acc_mean", "test_acc_mean", "test_acc_ci95", "epochs_to_target_mean",
)
_STYLE = {
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
# Reading a results folder


@dataclass(frozen=True)
class Results:
    """The tables of one results folder. ``config`` is ``{}`` when ``config.yaml`` is absent."""

    path: Path
    config: dict
    epochs: pd.DataFrame
    summary: pd.DataFrame


def one_line(e: BaseException) -> str:
    return re.sub(r"\s+", " ", str(e)).strip() or type(e).__name__


def _read_csv(path: Path, required: Iterable[str]) -> pd.DataFrame:
    if not path.is_file():
        raise ResultsError(
            f"{path} is missing: a finished sweep writes epochs.csv and summary.csv "
            "(run `lossjax sweep CONFIG`, or `--resume` an interrupted one)"
        )
    try:
        df = pd.read_csv(path, dtype={"loss": str, "hidden": str})
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as e:
        raise ResultsError(f"{path} is unreadable: {one_line(e)}") from e
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ResultsError(
            f"{path} lacks column(s) {', '.join(missing)} (has: {', '.join(map(str, df.columns))})"
        )
    if df.empty:
        raise ResultsError(f"{path} has no rows")
    if not _ends_with_newline(path):
        # pandas fills a short last row with NaN (or reads "Tr" of "True" as False) without a
        # word; every table a sweep writes ends with a line break.
        raise ResultsError(
            f"{path} ends mid-row (no line break after its last line): the file was cut short "
            "after the sweep wrote it; restore it, or rerun the sweep"
        )
    for c in ("loss", "hidden"):
        if df[c].isna().any():  # a crash later on, in the sorting by name
            line = df.index[df[c].isna()][0] + 2  # 1-based, after the header
            raise ResultsError(f"{path}: line {line} has no {c}")
    for c in _FLOAT_COLUMNS:
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    df["loss"] = df["loss"].astype(str)
    df["hidden"] = df["hidden"].astype(str)
    return df


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _as_bool(col: pd.Series) -> pd.Series:
    if col.dtype == bool:
        return col
    if pd.api.types.is_numeric_dtype(col):
        return col.fillna(0).astype(float) != 0
    return col.astype(str).str.strip().str.lower().isin({"true", "1", "1.0", "yes"})


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ResultsError(f"{path} is unreadable: {one_line(e)}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ResultsError(f"{path} is not a mapping (got {type(data).__name__})")
    return data


def load_results(results_dir: str | os.PathLike) -> Results:
    """Reads and checks a results folder; raises ``ResultsError`` with one line if it can't."""
    path = Path(results_dir)
    if not path.exists():
        raise ResultsError(f"results folder {path} does not exist (run `lossjax sweep CONFIG`)")
    if not path.is_dir():
        raise ResultsError(f"{path} is not a folder; give the results folder a sweep wrote")
    epochs = _read_csv(path / "epochs.csv", EPOCHS_COLUMNS)
    summary = _read_csv(path / "summary.csv", SUMMARY_COLUMNS)
    config = _read_yaml(path / "config.yaml")
    for c in ("member", "seed", "epoch"):
        if epochs[c].isna().any() or not pd.api.types.is_numeric_dtype(epochs[c]):
            raise ResultsError(f"{path / 'epochs.csv'}: column {c} must hold integers")
        epochs[c] = epochs[c].astype(int)
    epochs["diverged"] = _as_bool(epochs["diverged"])
    epochs = epochs.sort_values(["member", "epoch"], kind="stable").reset_index(drop=True)
    check_complete(path / "epochs.csv", epochs, config)
    res = Results(path=path, config=config, epochs=epochs, summary=summary)
    _check_summary_covers(res)
    return res


def expected_members(config: dict) -> int | None:
    """The number of members ``config.yaml`` implies (the sweep's product: hidden sizes × the
    learning rates of every loss × weight decays × init scales × seeds), or None where it lacks
    one of those grids (a hand-written config)."""
    grids = [config_value(config, k) for k in (
        "model.hidden", "optimizer.weight_decay", "model.init_scale", "seeds")]
    losses = config_value(config, "losses")
    rates = config_value(config, "optimizer.learning_rate")
    if not isinstance(losses, list):
        return None
    # The resolved config stores a grid per loss; a hand-written one may give a single list.
    if isinstance(rates, dict):
        per_loss = [rates.get(loss) for loss in losses]
    else:
        per_loss = [rates] * len(losses)
    if not all(isinstance(g, list) for g in grids + per_loss):
        return None
    return sum(len(r) for r in per_loss) * math.prod(len(g) for g in grids)


def _config_epochs(config: dict) -> int | None:
    e = config.get("epochs")
    return e if isinstance(e, int) and not isinstance(e, bool) and e >= 1 else None


def check_complete(path: Path, epochs: pd.DataFrame, config: dict) -> None:
    """Raises ``ResultsError`` unless ``epochs`` holds exactly epochs 1..E of members 0..N-1.

    N and E come from ``config.yaml`` when it gives them, else from the table itself. A sweep
    rewrites the table after every epoch, so an unfinished one lacks the last epochs of some
    members, or whole members: drawn anyway, it would pass off early epochs as final results
    and drop losses without a word. ``status.json`` is not consulted (the sweep draws its plots
    before it marks itself complete), except to word the way out.
    """
    n_members = expected_members(config) or int(epochs["member"].max()) + 1
    n_epochs = _config_epochs(config) or int(epochs["epoch"].max())
    twice = epochs.duplicated(["member", "epoch"])
    if twice.any():
        r = epochs[twice].iloc[0]
        raise ResultsError(f"{path} holds member {r['member']} epoch {r['epoch']} twice")
    outside = ~(epochs["member"].between(0, n_members - 1) & epochs["epoch"].between(1, n_epochs))
    if outside.any():
        r = epochs[outside].iloc[0]
        why = "the table and config.yaml belong to different sweeps" if config else "it is corrupt"
        raise ResultsError(
            f"{path} holds member {r['member']} epoch {r['epoch']}, outside the sweep's members "
            f"0-{n_members - 1} × epochs 1-{n_epochs}: {why}"
        )
    if len(epochs) < n_members * n_epochs:
        # `--resume` has nothing to do on a folder marked complete.
        fix = ("restore the file, or rerun the sweep with --overwrite" if is_complete(path.parent)
               else "finish it with `lossjax sweep CONFIG --resume`")
        raise ResultsError(
            f"{path} has {len(epochs)} of {n_members * n_epochs} rows ({n_members} members × "
            f"{n_epochs} epochs): the sweep is unfinished or the file was cut short; {fix}"
        )


def _check_summary_covers(res: Results) -> None:
    """Raises ``ResultsError`` if a group of ``epochs.csv`` has no ``summary.csv`` row (a
    summary cut short would silently drop a loss from the plots and the report)."""
    keys = ["loss", "hidden", *_match_columns(res)]
    s = res.summary
    for g in res.epochs[keys].drop_duplicates().itertuples(index=False):
        mask = (s["loss"] == g.loss) & (s["hidden"] == g.hidden)
        for c in keys[2:]:
            mask &= _close(s[c], getattr(g, c))
        if not mask.any():
            where = ", ".join(f"{k} {getattr(g, k)}" for k in keys)
            raise ResultsError(
                f"{res.path / 'summary.csv'} has no row for {where}, which epochs.csv holds: "
                "it was cut short or belongs to another sweep"
            )


# --------------------------------------------------------------------------------------------
# What to draw


def loss_order(losses: Iterable[str]) -> list[str]:
    """The built-in losses in their canonical order, then any user losses sorted by name."""
    present = set(losses)
    return [n for n in BUILTIN_LOSSES if n in present] + sorted(present - set(BUILTIN_LOSSES))


def loss_styles(losses: Iterable[str]) -> dict[str, tuple[str, str]]:
    """``{loss: (colour, marker)}``: fixed for the built-ins, then the next free ones in order."""
    styles = {}
    extra = 0
    for name in loss_order(losses):
        if name in _BUILTIN_STYLE:
            styles[name] = _BUILTIN_STYLE[name]
        else:
            styles[name] = (
                _EXTRA_COLORS[extra % len(_EXTRA_COLORS)],
                _EXTRA_MARKERS[extra % len(_EXTRA_MARKERS)],
            )
            extra += 1
    return styles


def hidden_order(hidden: Iterable[str]) -> list[str]:
    """Hidden-size groups ordered by depth, then widths (``"64" < "64-64" < "128-128"``).

    ``"linear"`` (no hidden layer, as the sweep writes it) comes first.
    """

    def key(h: str):
        if h == "linear":
            return (0, 0, [], h)
        try:
            widths = [int(w) for w in h.split("-")]
        except ValueError:
            return (1, 0, [], h)
        return (0, len(widths), widths, h)

    return sorted(set(hidden), key=key)


def format_value(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, (list, tuple)):
        parts = [p for p in (format_value(x) for x in v) if p]
        return " / ".join(parts) if parts else None
    return str(v)


def config_value(config: dict, dotted: str):
    node = config
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def describe(res: Results) -> str:
    """One line naming data, model and optimizer: 'digits · MLP 64-64 relu · momentum, batch 64'.

    Hidden sizes come from ``epochs.csv`` (what was run); the rest from ``config.yaml`` when
    present, falling back to the folder's name for the dataset.
    """
    cfg = res.config
    dataset = format_value(config_value(cfg, "dataset.name")) or res.path.resolve().name
    groups = hidden_order(res.epochs["hidden"])
    model = "linear model" if groups == ["linear"] else f"MLP {' | '.join(groups)}"
    if act := format_value(config_value(cfg, "model.activation")):
        model += f" {act}"
    parts = [dataset, model]
    opt = format_value(config_value(cfg, "optimizer.name"))
    batch = format_value(config_value(cfg, "batch_size"))
    train = ", ".join(p for p in (opt, f"batch {batch}" if batch else None) if p)
    if train:
        parts.append(train)
    return " · ".join(parts)


def _close(a: pd.Series, b: float) -> pd.Series:
    if b is None or (isinstance(b, float) and math.isnan(b)):
        return a.isna()
    return pd.Series(np.isclose(a.to_numpy(float), float(b), rtol=1e-6, atol=0.0), index=a.index)


def _match_columns(res: Results) -> list[str]:
    return [c for c in MATCH_COLUMNS if c in res.epochs.columns and c in res.summary.columns]


def varying_columns(res: Results) -> list[str]:
    """The swept values besides the learning rate that take more than one value in the sweep."""
    return [c for c in _match_columns(res) if res.epochs[c].nunique(dropna=False) > 1]


_LINESTYLES = ("-", "--", ":", "-.")


@dataclass(frozen=True)
class Choice:
    """One row of ``summary.csv`` (a loss, hidden sizes, and any weight decay / init scale) with
    its chosen learning rate, and the ``epochs.csv`` rows of the members it selects."""

    loss: str
    hidden: str
    row: pd.Series  # the summary.csv row
    rows: pd.DataFrame  # its members' epochs.csv rows (all seeds, all epochs)
    varying: tuple[str, ...] = ()  # swept values besides the rate that differ in the sweep
    linestyle: str = "-"  # tells apart rows of one loss that differ in those values

    @property
    def learning_rate(self) -> float:
        return float(self.row["learning_rate"])

    def label(self, with_lr: bool = True) -> str:
        """'mse (lr 0.1)', or 'mse (lr 0.1, wd 0.0001)' where weight decay was swept."""
        short = {"weight_decay": "wd", "init_scale": "init"}
        parts = [f"lr {self.learning_rate:g}"] if with_lr else []
        parts += [f"{short[c]} {self.row[c]:g}" for c in self.varying]
        return f"{self.loss} ({', '.join(parts)})" if parts else self.loss


def group_rows(res: Results, loss: str, hidden: str, row: pd.Series | None) -> pd.DataFrame:
    """The ``epochs.csv`` rows of one summary group, every learning rate (``row``: its
    ``summary.csv`` row, whose weight decay and init scale narrow the group; None: all)."""
    ep = res.epochs
    mask = (ep["loss"] == loss) & (ep["hidden"] == hidden)
    if row is not None:
        for c in _match_columns(res):
            mask &= _close(ep[c], row[c])
    return ep[mask]


def summary_rows(res: Results) -> list[pd.Series]:
    """The rows of ``summary.csv`` in drawing order: hidden sizes, loss, then the other keys.

    Raises ``ResultsError`` if two rows share loss, hidden, weight decay and init scale.
    """
    summary = res.summary
    keys = ["loss", "hidden", *_match_columns(res)]
    dup = summary.duplicated(keys, keep=False)
    if dup.any():
        r = summary[dup].iloc[0]
        where = ", ".join(f"{k} {r[k]}" for k in keys)
        raise ResultsError(f"{res.path / 'summary.csv'} has several rows for {where}")
    order = {h: i for i, h in enumerate(hidden_order(summary["hidden"]))}
    losses = loss_order(summary["loss"])
    extra = _match_columns(res)
    return sorted(
        (r for _, r in summary.iterrows()),
        key=lambda r: (order[r["hidden"]], losses.index(r["loss"]),
                       *(float(r[c]) for c in extra)),
    )


def chosen_runs(res: Results) -> list[Choice]:
    """One ``Choice`` per ``summary.csv`` row with a learning rate, in ``summary_rows`` order.

    The members are the ``epochs.csv`` rows with the row's loss, hidden sizes, learning rate,
    weight decay and init scale. Raises ``ResultsError`` when the tables disagree.
    """
    choices = []
    varying = tuple(varying_columns(res))
    rows = summary_rows(res)
    combos = sorted({tuple(float(r[c]) for c in varying) for r in rows})
    for r in rows:
        if math.isnan(r["learning_rate"]):
            continue  # every member diverged: see diverged_groups
        group = group_rows(res, r["loss"], r["hidden"], r)
        sel = group[_close(group["learning_rate"], r["learning_rate"])]
        if sel.empty:
            raise ResultsError(
                f"{res.path / 'summary.csv'}: the row for loss {r['loss']}, hidden {r['hidden']}, "
                f"learning rate {r['learning_rate']:g} matches no member of epochs.csv"
            )
        style = _LINESTYLES[combos.index(tuple(float(r[c]) for c in varying)) % 4]
        choices.append(Choice(r["loss"], r["hidden"], r, sel, varying, style))
    return choices


def all_diverged(rows: pd.DataFrame) -> bool:
    """Whether every member among ``rows`` (at least one) diverged."""
    return len(rows) > 0 and bool(rows.groupby("member")["diverged"].any().all())


def diverged_groups(res: Results) -> list[Choice]:
    """One ``Choice`` per ``summary.csv`` row without a learning rate, whose ``rows`` are all its
    group's members (every rate): no rate was chosen because every one of them diverged.

    Raises ``ResultsError`` where such a row has members that did not diverge, or none.
    """
    varying = tuple(varying_columns(res))
    gone = []
    for r in summary_rows(res):
        if not math.isnan(r["learning_rate"]):
            continue
        group = group_rows(res, r["loss"], r["hidden"], r)
        if not all_diverged(group):
            raise ResultsError(
                f"{res.path / 'summary.csv'}: the row for loss {r['loss']}, hidden {r['hidden']} "
                "has no learning rate, yet not every member of its group in epochs.csv diverged"
            )
        gone.append(Choice(r["loss"], r["hidden"], r, group, varying))
    return gone


def _band(rows: pd.DataFrame, column: str, positive: bool = False) -> pd.DataFrame:
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


def _panels(hidden: list[str]) -> tuple[Figure, dict[str, object]]:
    """One panel per hidden-size group, up to three a row; sized later by ``_fit``."""
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


def _fit(fig: Figure, axes: dict[str, object], legend_rows: int) -> None:
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


def _legend(ax, handles: list, panel_width: float) -> int:
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
    fig, axes = _panels(hidden)
    styles = loss_styles(res.epochs["loss"])
    slots, _ = _slots(choices)
    any_diverged = False
    missing: dict[str, list[Line2D]] = {}
    diverged = _diverged_handles(gone, styles)
    for c, slot in zip(choices, slots, strict=True):
        ax = axes[c.hidden]
        color, marker = styles[c.loss]
        b = _band(c.rows, column, positive=log_y)
        if b.empty:
            missing.setdefault(c.hidden, []).append(
                Line2D([], [], color=color, marker=marker, linestyle=":",
                       label=f"{c.label()}: no finite values"))
            continue
        x = b.index.to_numpy()
        # Thin the markers on long runs, staggered per curve so that curves lying on top of each
        # other (e.g. two losses at a wrong-direction fraction of exactly 0) both stay visible.
        every = 1 if len(x) < 8 else max(2, len(x) // 12)
        ax.plot(x, b["mean"], color=color, marker=marker, markevery=(slot % every, every),
                markersize=5, linewidth=2, linestyle=c.linestyle, label=label(c, b), zorder=3)
        if (b["max"] > b["min"]).any():
            ax.fill_between(x, b["min"], b["max"], color=color, alpha=0.18, linewidth=0)
        for e in _first_divergence(c.rows):
            before = b.index[b.index <= e]
            if len(before):  # on the line, where the mean stood when the seed diverged
                any_diverged = True
                ax.plot([e], [b["mean"].loc[before[-1]]], "x", color=color, markersize=11,
                        markeredgewidth=2.5, zorder=5)
    first, last = (int(v) for v in res.epochs["epoch"].agg(["min", "max"]))
    pad = max(0.5, 0.02 * (last - first))
    rows = 0
    for h, ax in axes.items():
        ax.set_xlabel("epoch")
        ax.set_xlim(first - pad, last + pad)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if len(axes) > 1:
            ax.set_title(f"hidden {h}")
        if log_y:
            ax.set_yscale("log")
            lo, hi = ax.get_ylim()
            if lo > 0 and hi / lo < 100:  # under two decades: plain numbers, not 6×10⁻¹
                plain = FuncFormatter(_plain_log_label)
                ax.yaxis.set_major_formatter(plain)
                ax.yaxis.set_minor_formatter(plain)
        if percent:
            ax.yaxis.set_major_formatter(PercentLabels())
        handles, _ = ax.get_legend_handles_labels()
        if not handles:
            _empty_note(ax, "no finite values recorded", choices, h)
        handles += missing.get(h, []) + diverged.get(h, [])
        if any_diverged:
            handles.append(Line2D([], [], linestyle="none", marker="x", color="0.25",
                                  markersize=8, markeredgewidth=2,
                                  label="a seed diverged here"))
        if handles:
            rows = max(rows, _legend(ax, handles, _panel_width(len(axes))))
    axes[hidden[0]].set_ylabel(ylabel)
    fig.suptitle(f"{title}\n{describe(res)}\n{_seeds_note(choices)}", fontsize=11)
    _fit(fig, axes, rows)
    return fig


def _final_label(fmt: str) -> Callable[[Choice, pd.DataFrame], str]:
    def label(c: Choice, b: pd.DataFrame) -> str:
        return f"{c.label()}: final {format(b['mean'].iloc[-1], fmt)}"

    return label


def _test_accuracy(res: Results, choices: list[Choice], gone: list[Choice]) -> Figure:
    return _curve_figure(
        res, choices, gone, "test_acc", "Test accuracy at each loss's chosen learning rate",
        "test accuracy", percent=True, label=_final_label(".1%"),
    )


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


def _lr_sensitivity(res: Results, choices: list[Choice], gone: list[Choice]) -> Figure:
    hidden = hidden_order(c.hidden for c in choices + gone)
    fig, axes = _panels(hidden)
    styles = loss_styles(res.epochs["loss"])
    slots, n_slots = _slots(choices)
    crosses: dict[tuple[str, float], list[tuple[float, str, str]]] = {}
    all_lrs: dict[str, set[float]] = {h: set() for h in hidden}
    diverged = _diverged_handles(gone, styles)
    for c in gone:  # no line: a cross with its count at every rate
        last = c.rows.loc[c.rows.groupby("member")["epoch"].idxmax()]
        for lr, g in last.groupby("learning_rate"):
            all_lrs[c.hidden].add(float(lr))
            crosses.setdefault((c.hidden, float(lr)), []).append(
                (lr, styles[c.loss][0], f"{len(g)}/{len(g)}"))
    for c, slot in zip(choices, slots, strict=True):
        ax = axes[c.hidden]
        color, marker = styles[c.loss]
        group = group_rows(res, c.loss, c.hidden, c.row)
        last = group.loc[group.groupby("member")["epoch"].idxmax()]
        dodge = 10 ** (0.06 / n_slots * (slot - (n_slots - 1) / 2))  # keep error bars apart
        pts = []
        for lr, g in last.groupby("learning_rate"):
            all_lrs[c.hidden].add(float(lr))
            n_div = int(g["diverged"].sum())
            vals = g.loc[~g["diverged"], "val_acc"].dropna()
            if len(vals):
                pts.append((lr, vals.mean(), vals.min(), vals.max()))
            if n_div:
                crosses.setdefault((c.hidden, float(lr)), []).append(
                    (lr * dodge, color, f"{n_div}/{len(g)}"))
        if not pts:
            continue
        p = np.array(pts, dtype=float)
        ax.errorbar(
            p[:, 0] * dodge, p[:, 1],
            # float32 values read back as float64: a mean can exceed its max by an ulp.
            yerr=np.clip([p[:, 1] - p[:, 2], p[:, 3] - p[:, 1]], 0, None),
            color=color, marker=marker, markersize=6, linewidth=1.8, linestyle=c.linestyle,
            capsize=3, label=c.label(with_lr=False), zorder=3,
        )
        at = np.isclose(p[:, 0], c.learning_rate, rtol=1e-6)
        if at.any():
            ax.plot(p[at, 0] * dodge, p[at, 1], "o", markersize=15, markerfacecolor="none",
                    markeredgecolor=color, markeredgewidth=1.8, zorder=4)
    any_diverged = bool(crosses)
    if any_diverged:  # a strip along the bottom for the crosses, clear of the error bars
        strip = 0.04 + _CROSS_STEP * max(len(v) for v in crosses.values())
        for ax in axes.values():
            lo, hi = ax.get_ylim()
            ax.set_ylim(lo - strip / (1 - strip) * (hi - lo), hi)
        for (h, _), marks in crosses.items():
            for level, (x, color, text) in enumerate(marks):
                _bottom_cross(axes[h], x, level, color, text)
    rows = 0
    for h, ax in axes.items():
        ax.set_xscale("log")
        lrs = sorted(all_lrs[h])
        if 0 < len(lrs) <= 10:
            ax.xaxis.set_major_locator(FixedLocator(lrs))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xticklabels([f"{v:g}" for v in lrs])
        if lrs:
            ax.set_xlim(lrs[0] / 10**0.15, lrs[-1] * 10**0.15)
        ax.set_xlabel("learning rate (log scale)")
        if len(axes) > 1:
            ax.set_title(f"hidden {h}")
        ax.yaxis.set_major_formatter(PercentLabels())
        handles, _ = ax.get_legend_handles_labels()
        if not handles:
            _empty_note(ax, "no validation accuracy recorded", choices, h)
        handles += diverged.get(h, [])
        handles.append(Line2D([], [], linestyle="none", marker="o", markersize=11,
                              markerfacecolor="none", markeredgecolor="0.25",
                              markeredgewidth=1.5, label="chosen rate"))
        if any_diverged:
            handles.append(Line2D([], [], linestyle="none", marker="x", color="0.25",
                                  markersize=8, markeredgewidth=2,
                                  label="diverged seeds (count/seeds)"))
        rows = max(rows, _legend(ax, handles, _panel_width(len(axes))))
    axes[hidden[0]].set_ylabel("final validation accuracy")
    note = "mean over seeds that did not diverge, bars: min–max"
    fig.suptitle(f"Learning-rate sensitivity: final validation accuracy\n{describe(res)}\n{note}",
                 fontsize=11)
    _fit(fig, axes, rows)
    return fig


_FIGURES: dict[str, Callable[[Results, list[Choice], list[Choice]], Figure]] = {
    "test_accuracy": _test_accuracy,
    "train_loss": _train_loss,
    "lr_sensitivity": _lr_sensitivity,
    "wrong_direction": _wrong_direction,
}


def _save(fig: Figure, path: Path, fmt: str) -> None:
    # No date in SVGs: the same tables give byte-identical files.
    metadata = {"Date": None} if fmt == "svg" else None
    atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=_DPI, metadata=metadata))


def plot_paths(results_dir: str | os.PathLike) -> list[Path]:
    """Where ``plot_results`` writes: ``RESULTS_DIR/plots/{name}.{png,svg}``, in that order."""
    out = Path(results_dir) / PLOTS_SUBDIR
    return [out / f"{name}.{fmt}" for name in PLOT_NAMES for fmt in FORMATS]


def plot_results(results_dir: str | os.PathLike) -> list[Path]:
    """Draws the four figures of a results folder from its tables; returns the 8 file paths.

    Raises ``ResultsError`` (one line) when the folder or a table is missing, unreadable or
    incomplete, or when ``summary.csv`` and ``epochs.csv`` disagree.
    """
    res = load_results(results_dir)
    choices, gone = chosen_runs(res), diverged_groups(res)
    out = res.path / PLOTS_SUBDIR
    try:
        out.mkdir(exist_ok=True)
    except OSError as e:
        raise ResultsError(f"cannot create {out}: {one_line(e)}") from e
    written = []
    with rc_context(_STYLE):
        for name in PLOT_NAMES:
            fig = _FIGURES[name](res, choices, gone)
            for fmt in FORMATS:
                path = out / f"{name}.{fmt}"
                try:
                    _save(fig, path, fmt)
                except OSError as e:
                    raise ResultsError(f"cannot write {path}: {one_line(e)}") from e
                written.append(path)
                # The first save laid the figure out; keep that layout for the other formats
                # (identical positions, and about a third less time per figure).
                fig.set_layout_engine("none")
    return written
