"""``lossjax causal``: the causal analysis of finished results folders, written into each as
``causal.json`` and ``causal.md``, with one figure and one table across them.

    lossjax causal results/mnist_causal [results/fashion_causal ...] --out DIR

The paired effects are :mod:`lossjax.causal_effects`, the within-loss evidence
:mod:`lossjax.within_loss`; this module puts them together per folder (:func:`analyse`) and
renders them. Each folder is read and checked by ``lossjax.analysis`` and must hold a finished
sweep with at least one variant beside its base; otherwise one line on stderr, exit status 2,
and nothing is written. Writes ``causal.json``, ``causal.md`` and the figure of the paired
difference in test accuracy per epoch, ``paired_difference.{png,svg}``, into each folder, and
into ``DIR`` the figure of every folder's paired speed effects, ``causal_effects.{png,svg}``,
and one table of them all, ``causal_effects.md``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from lossjax import analysis, causal_curves, causal_effects, losses, plots
from lossjax.causal_curves import PAIRED_NAME
from lossjax.errors import ResultsError
from lossjax.folder import (
    check_out,
    locked,
    record_written,
    require_own,
    write_json,
    write_text,
)
from lossjax.tables import MATCH_COLUMNS
from lossjax.within_loss import BOOT_SEED, N_BOOT, member_table, within_loss

FIGURE_NAME = "causal_effects"


# --------------------------------------------------------------------------------------------
# One folder


def analyse(folder: str | os.PathLike, n_resamples: int = N_BOOT) -> dict:
    """The whole analysis of one results folder, as written to ``causal.json``. Raises
    ``ResultsError`` (one line) for a folder that cannot be read or has no variant beside its
    base."""
    return analyse_results(analysis.load_results(folder), n_resamples)


def analyse_results(res: analysis.Results, n_resamples: int = N_BOOT) -> dict:
    """:func:`analyse` of a folder already loaded (a caller that reads it for more than this
    analysis reads it once)."""
    target = causal_effects.target_accuracy(res)
    comps = causal_effects.comparisons(res, target)
    if not comps:
        names = ", ".join(analysis.loss_order(res.epochs["loss"]))
        raise ResultsError(
            f"{res.path} holds no loss variant beside its base (<base>-<edit>, base one of "
            f"{', '.join(losses.LOSSES)}; it has {names}): nothing to compare")
    return {
        "folder": str(res.path),
        # The length of training is part of what an effect means (10 against 20 epochs).
        "description": f"{analysis.describe(res)}, {int(res.epochs['epoch'].max())} epochs",
        "target_accuracy": target, "comparisons": comps,
        # A member a race dropped trained only to its rung: its speed would be an early one.
        "within_loss": within_loss(member_table(
            res.epochs[~res.epochs["member"].isin(analysis.dropped(res))]), n_resamples),
        "protocol": causal_effects.protocol(res),
        "bootstrap": {"resamples": n_resamples, "seed": BOOT_SEED, "method": "percentile"},
    }


def _finite(obj):
    """``obj`` with NaN and infinities as None (JSON has no NaN) and numpy scalars as Python."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# --------------------------------------------------------------------------------------------
# Markdown


def comparison_label(c: dict, varying: Iterable[str] = ()) -> str:
    """'mse → mse-no_push_up', with the group where more than one was swept."""
    extra = [f"hidden {c['hidden']}" if k == "hidden" else
             str(c[k]) if k == "optimizer" else f"{k} {c[k]:g}" for k in varying]
    tail = f" [{', '.join(extra)}]" if extra else ""
    return f"{c['base']} → {c['variant']}{tail}"


def _varying(comps: list[dict]) -> list[str]:
    keys = ["hidden", *(k for k in ("optimizer", *MATCH_COLUMNS) if k in comps[0])]
    return [k for k in keys if len({c[k] for c in comps}) > 1]


def _pm(e: dict, scale: float = 1.0, digits: int = 2) -> str:
    if e["n"] == 0:
        return "–"
    m = f"{scale * e['mean']:+.{digits}f}"
    h = e["ci95"]
    return f"{m} ± {scale * h:.{digits}f} (n {e['n']})" if np.isfinite(h) else f"{m} (n {e['n']})"


def _num(v: float, fmt: str = ".3f") -> str:
    return format(v, fmt) if np.isfinite(v) else "–"


def _rho(r: dict) -> str:
    text = f"ρ = {_num(r['spearman'], '.2f')}"
    lo, hi = r["ci95"]
    if np.isfinite(lo) and np.isfinite(hi):
        text += f" [{lo:.2f}, {hi:.2f}]"
    return f"{text}, n = {r['n']}"


def _tie_note(r: dict) -> str:
    if r.get("rate_choice") == "one seed":
        return " (one seed)"
    tied = r.get("tied_lrs") or []
    return f" (tie: {', '.join(f'{v:g}' for v in tied)})" if tied else ""


def tied_section(comps: list[dict], varying: list[str]) -> list[str]:
    """The *Tied rate choices* section of ``causal.md``: per comparison with a tied side, the
    headline row and one row per tied rate of either side, the other side at its chosen rate."""
    tied = [c for c in comps if c.get("tied_rate_effects")]
    lines = ["", "## Tied rate choices", ""]
    if not tied:
        return lines + ["Every rate choice here is decided (or has no rival): the headline "
                        "effects are the only ones the validation data allow."]
    robust = sum(bool(c["robust_to_rate_choice"]) for c in tied)
    lines += [
        f"{len(tied)} of {len(comps)} comparisons have a side whose chosen rate is tied with "
        "other rates of its grid: the paired validation gap (chosen − other, per seed, a "
        "diverged member scoring 0) has a 95% interval that includes 0, or rests on one seed. "
        "For those, the effects are also taken with one side at a time at each of its tied "
        "rates, the other side staying at its chosen rate; **headline** marks the row at both "
        f"chosen rates, the one reported above. In {robust} of {len(tied)} the speed effect "
        "reads the same (CI above 0, below 0, or including 0) at every tied rate.", "",
        "| comparison | row | lr (base → variant) | Δ speed (points) | speed CI | Δ final test "
        "acc (points) | left out |",
        "| --- | --- | --- | ---: | --- | ---: | --- |",
    ]
    for c in tied:
        for t in c["tied_rate_effects"]:
            row = "**headline**" if t["headline"] else f"{t['moved']} at tied rate"
            left = [f"{t['diverged_pairs']} diverged"] if t["diverged_pairs"] else []
            left += [f"{t['unpaired_seeds']} unpaired"] if t["unpaired_seeds"] else []
            lines.append(
                f"| `{comparison_label(c, varying)}` | {row} | "
                f"{t['base_learning_rate']:g} → {t['variant_learning_rate']:g} | "
                f"{_pm(t['speed'], 100)} | {t['speed_direction']} | "
                f"{_pm(t['final_test_acc'], 100)} | {', '.join(left) or '–'} |")
    return lines


def _effects_section(out: dict, varying: list[str]) -> list[str]:
    """The title, the table of paired effects and the verdicts of ``causal.md``."""
    comps = out["comparisons"]
    name = Path(out["folder"]).name
    t = out["target_accuracy"]
    lines = [
        f"# Gradient-edit interventions: {name}", "", out["description"], "",
        "Paired by seed: each variant at its own chosen learning rate against its base at the "
        "base's, same initial weights and batches. Differences are variant − base, mean ± 95% "
        "Student-t half-width over seeds (n seeds). Speed: mean test accuracy over the evaluated "
        "epochs (area under the accuracy curve), in accuracy points. Epochs to target: first "
        f"epoch with test accuracy ≥ {plots.percent_label(t)}, over the pairs where both "
        "reached it; a pair where either did not is censored and left out (counted). Final: "
        "test accuracy at the last epoch, in points. A pair with a diverged member is left "
        "out (counted). Wrong-dir.: mean fraction of wrong-class logits a step pushed up; "
        "grad norm: mean per-example norm of d loss / d logits; both base → variant, over the "
        "paired members' epochs.", "",
        "| comparison | lr (base → variant) | Δ speed (points) | Δ epochs to target | censored "
        "| Δ final test acc (points) | wrong-dir. | grad norm | left out |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | --- | --- |",
    ]
    for c in comps:
        b, v = c["base_profile"], c["variant_profile"]
        e = c["epochs_to_target"]
        left = [f"{c['diverged_pairs']} diverged"] if c["diverged_pairs"] else []
        left += [f"{c['unpaired_seeds']} unpaired"] if c["unpaired_seeds"] else []
        lr = (f"{c['base_learning_rate']:g} → {c['variant_learning_rate']:g}"
              if np.isfinite(c["base_learning_rate"]) and np.isfinite(c["variant_learning_rate"])
              else "–")
        if c.get("tied_rate_effects"):
            lr += " ‡"
        lines.append(
            f"| `{comparison_label(c, varying)}` | {lr} | {_pm(c['speed'], 100)} | {_pm(e)} | "
            f"{e['censored']} of {c['n_pairs']} | {_pm(c['final_test_acc'], 100)} | "
            f"{_num(b['wrong_frac'])} → {_num(v['wrong_frac'])} | "
            f"{_num(b['grad_norm'], '.3g')} → {_num(v['grad_norm'], '.3g')} | "
            f"{', '.join(left) or '–'} |")
    if any(c.get("tied_rate_effects") for c in comps):
        lines += ["", "‡ a rate choice the seeds do not decide: see *Tied rate choices*."]
    lines += ["", "Speed effect against the seed claim's prediction:", ""]
    for c in comps:
        pred = c["prediction"] or "none"
        note = f" ({c['note']})" if c["note"] else ""
        lines.append(f"- `{comparison_label(c, varying)}` (predicted: {pred}): "
                     f"{c['verdict']}{note}")
    return lines


def _within_section(out: dict, varying: list[str]) -> list[str]:
    """The *Within-loss evidence* section of ``causal.md``."""
    w = out["within_loss"]
    lines = [
        "", "## Within-loss evidence", "",
        "Spearman's ρ between a member's mean wrong-direction fraction and its speed, across "
        "every learning rate and seed of one loss (non-diverged members; "
        f"{w['diverged_members_excluded']} diverged left out).", "",
        "| loss | hidden | n | ρ | note |", "| --- | --- | ---: | ---: | --- |",
    ]
    for g in w["groups"]:
        extra = "".join(f", {g[k]}" if k == "optimizer" else f", {k} {g[k]:g}"
                        for k in ("optimizer", *MATCH_COLUMNS) if k in g and k in varying)
        lines.append(f"| `{g['loss']}`{extra} | {g['hidden']} | {g['n']} | "
                     f"{_num(g['spearman'], '.2f')} | {g['note'] or ''} |")
    p, x = w["pooled_within_loss"], w["pooled_across_losses_confounded"]
    b = out["bootstrap"]
    return lines + [
        "",
        f"- Pooled within loss, controlling for the loss: {_rho(p)} over {p['groups']} "
        "loss group(s) where both variables vary. Both variables are ranked within each loss, "
        "the ranks centred and scaled to (−½, ½); ρ is taken over the pooled scaled ranks. "
        f"Interval: percentile bootstrap ({b['resamples']} resamples, seed {b['seed']}), "
        "members resampled within each loss.",
        f"- Pooled across losses, **confounded by loss** (for contrast only): {_rho(x)}; "
        "paired percentile bootstrap interval.",
    ]


def _protocol_section(out: dict) -> list[str]:
    """The *Protocol checks* section of ``causal.md``."""
    lines = [
        "", "## Protocol checks", "",
        "Each loss and variant at its chosen rate: whether the rate is at an edge of its grid "
        "(the optimum may lie beyond it), and the mean validation-accuracy gain over the last "
        f"{causal_effects.LATE_EPOCHS} epochs (over {100 * causal_effects.STILL_IMPROVING:g} "
        "points: still improving at the end).", "",
    ]
    rows = out.get("protocol", [])
    opt = len({r.get("optimizer") for r in rows} - {None}) > 1  # a column only when swept
    lines += [
        "| loss | " + ("optimizer | " if opt else "") + "hidden | chosen lr | at grid edge | "
        "late val gain (points) | test acc |",
        "| --- | " + ("--- | " if opt else "") + "--- | ---: | --- | ---: | ---: |",
    ]
    for r in rows:
        still = " (still improving)" if r["still_improving"] else ""
        o = f"{r.get('optimizer', '')} | " if opt else ""
        lines.append(
            f"| `{r['loss']}` | {o}{r['hidden']} | {r['learning_rate']:g}{_tie_note(r)} | "
            f"{'yes' if r['lr_at_grid_edge'] else 'no'} | "
            f"{_num(100 * r['late_val_gain'], '+.2f')}{still} | "
            f"{_num(100 * r['test_acc_mean'], '.2f')} |")
    return lines


def markdown(out: dict, figure: Path | None = None) -> str:
    """``causal.md``: the paired effects, the verdicts, the within-loss table, the per-folder
    paired-difference figure and, where given, the path of the cross-folder ``figure``."""
    varying = _varying(out["comparisons"])
    lines = _effects_section(out, varying)
    lines += tied_section(out["comparisons"], varying)
    lines += _within_section(out, varying)
    lines += _protocol_section(out)
    if figure is not None:
        lines += ["", f"Figure of the speed effects: `{figure}`"]
    lines += ["", f"![Paired difference in test accuracy per epoch]({PAIRED_NAME}.png)", "",
              "Paired difference in test accuracy per epoch, variant − base, each at its "
              "chosen rate: mean over the paired seeds, band = 95% t-interval; the last "
              f"epoch's value is Δ final test acc above ([SVG]({PAIRED_NAME}.svg))."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# The figure


def _tied_cell(c: dict) -> str:
    """'–' where both rate choices are decided; else whether the speed effect reads the same
    at every tied rate ('same at 3 rates' / 'differs at 1 of 3 rates')."""
    rows = [t for t in c.get("tied_rate_effects") or [] if not t["headline"]]
    if not rows:
        return "–"
    head = causal_effects.direction(c["speed"])
    off = sum(t["speed_direction"] != head for t in rows)
    n = f"{len(rows)} rate{'s' if len(rows) > 1 else ''}"
    return f"same at {n}" if not off else f"differs at {off} of {n}"


def effects_table(outs: list[dict]) -> str:
    """``causal_effects.md``: one row per comparison of every folder, the figure's numbers, and
    whether the speed effect reads the same where a side's rate choice is tied (the rows of
    *Tied rate choices* in the folder's causal.md)."""
    lines = [
        "| folder | variant | Δ speed (points) | Δ final test acc (points) | pushes (base → "
        "variant) | gradient norm (base → variant) | at tied rates |",
        "| --- | --- | ---: | ---: | --- | --- | --- |",
    ]
    for out in outs:
        name = Path(out["folder"]).name
        for c in out["comparisons"]:
            b, v = c["base_profile"], c["variant_profile"]
            # Under which optimizer, where the folder swept several.
            variant = f"`{c['variant']}`" + (f" ({c['optimizer']})" if "optimizer" in c else "")
            if not c["n_pairs"]:
                lines.append(f"| `{name}` | {variant} | no pairs | | | | |")
                continue
            lines.append(
                f"| `{name}` | {variant} | {_pm(c['speed'], 100)} | "
                f"{_pm(c['final_test_acc'], 100)} | {_num(100 * b['wrong_frac'], '.1f')}% → "
                f"{_num(100 * v['wrong_frac'], '.1f')}% | {_num(b['grad_norm'], '.3g')} → "
                f"{_num(v['grad_norm'], '.3g')} | {_tied_cell(c)} |")
    return "\n".join(lines) + "\n"


def effects_figure(outs: list[dict]) -> Figure:
    """One panel per folder, stacked so that the row labels line up, one row per comparison:
    the mean paired speed effect (points) with its 95% interval, a line at 0, and the seed
    claim's prediction at the right. The panels share a symmetric-log axis, linear within ±1
    point: effects run from tenths of a point to the whole accuracy range."""
    sizes = [max(1, len(o["comparisons"])) for o in outs]
    fig = Figure(figsize=(11.0, 1.6 + sum(0.42 * n + 0.9 for n in sizes)), layout="constrained")
    axes = fig.subplots(len(outs), 1, squeeze=False, sharex=True,
                        gridspec_kw={"height_ratios": [0.42 * n + 0.9 for n in sizes]})[:, 0]
    styles = plots.loss_styles(losses.LOSSES)
    for ax, out in zip(axes, outs, strict=True):
        comps = out["comparisons"]
        varying = _varying(comps)
        ys = -np.arange(len(comps), dtype=float)
        for y, c in zip(ys, comps, strict=True):
            e = c["speed"]
            color = styles.get(c["base"], ("0.3", "o"))[0]
            if e["n"] == 0:
                ax.annotate("no pairs", (0, y), xytext=(4, 0), textcoords="offset points",
                            va="center", fontsize=8, color="0.4")
            else:
                m, h = 100 * e["mean"], 100 * e["ci95"]
                if np.isfinite(h):
                    ax.plot([m - h, m + h], [y, y], color=color, linewidth=2, zorder=3)
                clear = e["low"] > 0 or e["high"] < 0
                ax.plot([m], [y], "o", color=color, markersize=7, zorder=4,
                        markerfacecolor=color if clear else "white", markeredgewidth=1.8)
                ax.annotate(f"{m:+.2g}", (m, y), xytext=(0, 7), textcoords="offset points",
                            ha="center", fontsize=7, color="0.25")
            if c["prediction"]:
                ax.annotate(f"seed predicts {c['prediction']}", (1.0, y),
                            xycoords=("axes fraction", "data"), xytext=(6, 0),
                            textcoords="offset points", va="center", fontsize=8, color="0.35")
        ax.axvline(0, color="0.3", linewidth=1, zorder=1)
        ax.set_yticks(ys, [f"{comparison_label(c, varying)} (n={c['speed']['n']})"
                           for c in comps])
        ax.set_ylim(-len(comps) + 0.5, 0.5)
        ax.grid(axis="y", visible=False)
        # Two lines: the row labels leave the axes too narrow for one.
        ax.set_title(f"{Path(out['folder']).name}\n{out['description']}", fontsize=9)
    axes[-1].set_xscale("symlog", linthresh=1.0)
    axes[-1].set_xlim(-100, 100)
    ticks = [-100, -10, -1, 0, 1, 10, 100]  # an effect is a difference of accuracies: ±100
    axes[-1].set_xticks(ticks, [f"{t:g}".replace("-", "−") for t in ticks])
    axes[-1].set_xlabel("Δ speed, variant − base, points\n(mean test accuracy over epochs; "
                        "symlog axis)")
    fig.legend(handles=[
        Line2D([], [], marker="o", color="0.3", markerfacecolor="0.3", linestyle="-",
               label="95% CI excludes 0"),
        Line2D([], [], marker="o", color="0.3", markerfacecolor="white", linestyle="-",
               label="95% CI includes 0")], loc="outside lower center", ncols=2, frameon=False)
    fig.suptitle("Effect of each gradient edit on learning speed: paired by seed, "
                 "mean ± 95% t-interval", fontsize=11)
    return fig


def write_figure(outs: list[dict], folder: Path) -> list[Path]:
    """Draws :func:`effects_figure` and writes it as PNG and SVG into ``folder``."""
    with rc_context(plots.STYLE):
        return plots.save_formats(effects_figure(outs), Path(folder), FIGURE_NAME)


# --------------------------------------------------------------------------------------------
# The files


def write(folders: Iterable[str | os.PathLike], out_dir: str | os.PathLike) -> list[dict]:
    """Analyses every folder (:func:`analyse`), then writes ``causal.json`` and ``causal.md``
    into each, and the figure and the table across them into ``out_dir``; returns the analyses.
    Every folder is analysed before anything is written: one bad folder (``ResultsError``), no
    files."""
    folders = [folders] if isinstance(folders, str | os.PathLike) else list(folders)
    if not folders:
        raise ResultsError("causal needs at least one results folder")
    out_dir = Path(out_dir)
    check_out(out_dir)
    outs = [analyse(f) for f in folders]
    _check_own(outs)
    with locked([out_dir, *(o["folder"] for o in outs)]):
        # Recorded as lossjax's before they are written: --overwrite of a folder removes them.
        record_written(out_dir, [f"{FIGURE_NAME}.{e}" for e in ("md", "png", "svg")])
        _record_folders(outs)  # every folder's too, before anything is written
        figure = write_figure(outs, out_dir)[0]
        write_text(out_dir / f"{FIGURE_NAME}.md", effects_table(outs))
        _write_folder_files(outs, figure)
    return outs


def _check_own(outs: list[dict]) -> None:
    """As ``plot`` and ``report``: causal.* go only into folders a sweep made (status.json),
    where they are recorded; copies of a sweep's tables beside files of yours are refused."""
    for out in outs:
        require_own(Path(out["folder"]))


def _record_folders(outs: list[dict]) -> None:
    for out in outs:
        record_written(Path(out["folder"]), ["causal.json", "causal.md",
                                             *(f"{PAIRED_NAME}.{f}" for f in plots.FORMATS)])


def write_folders(outs: list[dict], figure: Path | None = None) -> None:
    """Writes each analysed folder's ``causal.json``, ``causal.md`` (linking ``figure``, the
    cross-folder figure, where one was drawn) and paired-difference figure."""
    _check_own(outs)
    with locked(o["folder"] for o in outs):
        _record_folders(outs)
        _write_folder_files(outs, figure)


def _write_folder_files(outs: list[dict], figure: Path | None) -> None:
    """:func:`write_folders` once every folder's files are recorded."""
    for out in outs:
        folder = Path(out["folder"])
        write_json(folder / "causal.json", _finite(out))
        varying = _varying(out["comparisons"])
        causal_curves.write_paired_figure(out, folder, lambda c, v=varying: comparison_label(c, v))
        rel = (Path(os.path.relpath(figure.resolve(), folder.resolve()))
               if figure is not None else None)
        write_text(folder / "causal.md", markdown(out, rel))


def summary(outs: list[dict], out_dir: str | os.PathLike) -> str:
    """What ``lossjax causal`` prints after :func:`write`: each folder's files and speed
    effects, then where the figure and the table are."""
    lines = []
    for out in outs:
        lines.append(f"{out['folder']}: causal.json, causal.md, {PAIRED_NAME}.png (+ .svg)")
        for c in out["comparisons"]:
            label = comparison_label(c, [k for k in ("optimizer",) if k in c])
            lines.append(f"  {label}: Δ speed {_pm(c['speed'], 100)} points; {c['verdict']}")
    out_dir = Path(out_dir)
    lines.append(f"figure: {out_dir / FIGURE_NAME}.png (+ .svg), table: {out_dir / FIGURE_NAME}.md")
    return "\n".join(lines)
