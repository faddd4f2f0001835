"""The paired difference of each gradient-edit variant against its base, per epoch: one figure
per results folder, ``paired_difference.{png,svg}``, which ``lossjax causal`` writes beside
``causal.md``.

It draws the ``per_epoch`` entries of a folder's analysis (:func:`lossjax.causal_report.
analyse`, as in ``causal.json``): per comparison and epoch, the variant's test accuracy minus
its base's, each at its own chosen rate, over the seeds :func:`lossjax.causal_effects.
seed_pairs` pairs (same seed: same initial weights and batches), mean with its 95% Student-t
interval. The whole curve shows when an edit's effect appears and whether it lasts, which the
speed (its mean) and the final effect (its last point) summarise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from lossjax import losses, plots

PAIRED_NAME = "paired_difference"

_BASE_LINESTYLES = ("-", "--", ":", "-.")


def paired_figure(out: dict, label: Callable[[dict], str], column: str = "test_acc") -> Figure:
    """One folder's paired difference V − B in ``column`` (test accuracy) per epoch, in
    accuracy points: one line per comparison, named by ``label`` (each side at its chosen
    rate, paired by seed: ``per_epoch`` of :func:`lossjax.causal_effects.compare`), the mean
    over seeds with its 95% Student-t band, and a line at 0. Colour: the base's (as in every
    lossjax figure); line style: the variant among its base's. The last point of each line is
    the comparison's Δ final test accuracy in ``causal.md``. A symmetric-log axis, linear
    within ±1 point: effects run from tenths of a point to the whole accuracy range."""
    comps = out["comparisons"]
    styles = plots.loss_styles(losses.LOSSES)
    fig = Figure(figsize=(9.0, 5.0 + 0.22 * len(comps)), layout="constrained")
    ax = fig.subplots()
    seen: dict[str, int] = {}
    handles = []
    reach = 0.0  # the largest |mean ± half-width| drawn, in points
    for c in comps:
        color, marker = styles.get(c["base"], ("0.3", "o"))
        style = _BASE_LINESTYLES[seen.get(c["base"], 0) % len(_BASE_LINESTYLES)]
        seen[c["base"]] = seen.get(c["base"], 0) + 1
        per = c.get("per_epoch") or {"epoch": []}
        x = np.asarray(per["epoch"], float)
        mean = 100 * np.asarray((per.get(column) or {}).get("mean", []), float)
        half = 100 * np.asarray((per.get(column) or {}).get("ci95", []), float)
        ok = np.isfinite(mean)
        name = label(c)
        if not ok.any():
            handles.append(Line2D([], [], color=color, linestyle=style,
                                  label=f"{name}: no pairs"))
            continue
        last = np.flatnonzero(ok)[-1]
        n = int(per[column]["n"][last])
        end = f"{mean[last]:+.2f}" + (f" ± {half[last]:.2f}" if np.isfinite(half[last]) else "")
        lr = f"lr {c['base_learning_rate']:g} → {c['variant_learning_rate']:g}"
        (line,) = ax.plot(x[ok], mean[ok], color=color, linestyle=style, marker=marker,
                          markersize=4, linewidth=1.8, zorder=3,
                          label=f"{name} ({lr}): last {end} (n {n})")
        handles.append(line)
        reach = max(reach, float(np.nanmax(np.abs(mean[ok]) + np.nan_to_num(half[ok]))))
        band = ok & np.isfinite(half)
        if band.any():
            ax.fill_between(x[band], (mean - half)[band], (mean + half)[band], color=color,
                            alpha=0.15, linewidth=0)
    ax.axhline(0, color="0.3", linewidth=1, zorder=1)
    ax.set_yscale("symlog", linthresh=1.0)
    # Symmetric, to the power of ten above the largest excursion (at least the linear ±1).
    lim = 10.0 ** max(0, math.ceil(math.log10(max(reach, 1.0) * (1 + 1e-9))))
    ax.set_ylim(-lim, lim)
    ax.set_yticks([0.0, *(s * 10.0**k for k in range(round(math.log10(lim)) + 1)
                          for s in (-1, 1))])
    ax.yaxis.set_major_formatter(FuncFormatter(
        lambda v, _: f"{v:+g}".replace("-", "\N{MINUS SIGN}") if v else "0"))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel("epoch")
    what = {"test_acc": "test accuracy", "val_acc": "validation accuracy"}.get(column, column)
    ax.set_ylabel(f"Δ {what}, variant − base, points\n(symlog axis, linear within ±1)")
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=1, frameon=False)
    fig.suptitle(f"Paired difference in {what} per epoch: {Path(out['folder']).name}\n"
                 f"{out['description']}\neach at its own chosen rate, paired by seed; line: mean "
                 "over seeds, band: 95% t-interval", fontsize=10)
    return fig


def write_paired_figure(out: dict, folder: Path, label: Callable[[dict], str]) -> list[Path]:
    """Draws :func:`paired_figure` and writes it into ``folder`` as PNG and SVG."""
    with rc_context(plots.STYLE):
        return plots.save_formats(paired_figure(out, label), Path(folder), PAIRED_NAME)
