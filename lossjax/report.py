"""``lossjax report RESULTS_DIR``: a short Markdown report of one sweep, from its tables.

``write_report(results_dir)`` writes ``RESULTS_DIR/report.md``: a title, one paragraph on what
was run, the summary table (chosen learning rate, test accuracy mean ± 95% interval, epochs to
the target accuracy, diverged members), a "Provenance" section from ``env.json``
(``lossjax.report_provenance``: the code, versions, devices and CPU the numbers came from) and
a calibration and a per-class accuracy table where the folder has them
(``lossjax.report_calibration``), and the plots as relative image links. An ``env.json`` from
before provenance was recorded
gives one "Environment" line instead. Plots that are missing, or older than the tables, are
redrawn first.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from lossjax import analysis, plots, report_calibration, report_provenance, tables
from lossjax.analysis import Results
from lossjax.errors import ResultsError, one_line
from lossjax.folder import require_own, write_text

REPORT_NAME = "report.md"

_CAPTIONS = {
    "reliability": (
        "Reliability",
        "Test accuracy against mean confidence per confidence bin (15 bins) at the last epoch, "
        "at each loss's chosen rate, seeds pooled; solid before, dashed after temperature "
        "scaling; the diagonal is perfect calibration.",
    ),
    "test_accuracy": (
        "Test accuracy",
        "Test accuracy against epoch at each loss's chosen learning rate; line = mean over seeds, "
        "band = min–max.",
    ),
    "test_error": (
        "Test error",
        "Test error (1 − test accuracy) against epoch on a log axis, where the differences "
        "between accurate losses show; line = mean over seeds, band = min–max.",
    ),
    "train_loss": (
        "Training loss",
        "Mean training loss against epoch (log scale). Each loss is in its own units, so compare "
        "shapes, not heights.",
    ),
    "lr_sensitivity": (
        "Learning-rate sensitivity",
        "Final validation accuracy against learning rate; ○ marks the chosen rate, □ each rate "
        "tied with it, × members that diverged.",
    ),
    "wrong_direction": (
        "Wrong-direction gradients",
        "Fraction of wrong-class logits whose gradient is negative (the update pushes them up), "
        "averaged over each epoch's training batches.",
    ),
}


def _num(v) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def _pct(v: float) -> str:
    return "—" if math.isnan(v) else f"{100 * v:.2f}"


def _md(text) -> str:
    return str(text).replace("|", "\\|")


def _plural(n: int, word: str) -> str:
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word}{'es' if word.endswith('s') else 's'}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _rates(grids: dict[str, tuple[float, ...]], losses: list[str]) -> str:
    """'3 learning rates (0.1, 0.3, 1)', or per loss where the grids differ."""
    def fmt(grid):
        return _listing(grid, lambda v: f"{v:g}")

    if len(set(grids.values())) == 1:
        grid = next(iter(grids.values()))
        return f"{_plural(len(grid), 'learning rate')} ({fmt(grid)})"
    sizes = sorted({len(g) for g in grids.values()})
    n = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]}"
    per = "; ".join(f"`{_md(loss)}` {fmt(grids[loss])}" for loss in losses)
    return f"{n} learning rates per loss ({per})"


def _grids(ep) -> dict[str, tuple[float, ...]]:
    """Each loss's learning-rate grid among the rows ``ep``."""
    return {loss: tuple(sorted(g.dropna().unique()))
            for loss, g in ep.groupby("loss")["learning_rate"]}


def _listing(values, fmt=str) -> str:
    return ", ".join(fmt(v) for v in values)


def _int(v) -> int:
    f = _num(v)
    return 0 if math.isnan(f) else int(f)


def summary_table(res: Results) -> str:
    """The summary as a Markdown table, one row per ``summary.csv`` row in ``summary_rows``
    order (that of the plots' legends).

    The best test accuracy mean of each hidden group is bold; a chosen rate at the edge of its
    grid is marked (the best rate may lie outside the grid), and so is one that the seeds do
    not decide, ``0.3 (tie: 1)`` or ``0.3 (one seed)`` (``analysis.undecided``), with one
    sentence below counting them. A group whose every member
    diverged shows no rate and no accuracy (that of its frozen weights would mean nothing) and
    is never bold. It is judged from ``epochs.csv``, so a summary that chose a rate for it
    anyway (as older versions did) changes nothing.
    """
    rows = analysis.summary_rows(res)
    varying = analysis.varying_columns(res)
    groups = [analysis.group_rows(res, r["loss"], r["hidden"], r) for r in rows]
    gone = [analysis.all_diverged(g) for g in groups]
    best = _best_per_hidden([r for r, g in zip(rows, gone, strict=True) if not g])

    # The optimizer, where several were swept, is a name: beside the loss, left-aligned.
    names = [c for c in varying if c in ("optimizer", "model")]
    varying = [c for c in varying if c not in ("optimizer", "model")]
    head = ["Loss", *(c.capitalize() for c in names), "Hidden", "Learning rate"]
    head += [c.replace("_", " ").capitalize() for c in varying]
    head += ["Val acc. (%)", "Test acc. (%) mean ± 95% CI", "Epochs to target", "Diverged"]
    align = ["---"] * (2 + len(names)) + ["---:"] * (len(head) - 2 - len(names))
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |"]
    edge_seen = False
    for r, group, all_gone in zip(rows, groups, gone, strict=True):
        lr = _num(r["learning_rate"])
        lr_s = "—" if math.isnan(lr) or all_gone else f"{lr:g}"
        if not all_gone:
            lr_s += analysis.tie_mark(r)
        if not all_gone and _truthy(r.get("lr_at_grid_edge", "")):
            lr_s += " †"
            edge_seen = True
        cells = [f"`{_md(r['loss'])}`", *(_md(r[c]) for c in names), _md(r["hidden"]), lr_s]
        cells += ["—" if math.isnan(_num(r[c])) else f"{_num(r[c]):g}" for c in varying]
        total = group["member"].nunique()
        if all_gone:
            cells += ["—", f"diverged (all {total} members)", "—"]
        else:
            bold = len(rows) > 1 and _num(r["test_acc_mean"]) == best.get(r["hidden"])
            cells += _accuracy_cells(r, bold)
        cells.append(_diverged_cell(r, total, at_rate=not all_gone))
        lines.append("| " + " | ".join(cells) + " |")
    if edge_seen:
        lines += ["", "† the chosen rate is at the edge of its grid: a better one may lie beyond."]
    lines += ["", ties_sentence([r for r, g in zip(rows, gone, strict=True) if not g])]
    return "\n".join(lines)


def ties_sentence(rows) -> str:
    """How many of the rows' choices among several rates are ties, and the rule, in one
    sentence: a chosen rate is an estimate from a few seeds, and the reader must know which
    choices the data do not decide."""
    among = [r for r in rows if r.get("rate_choice") not in ("one rate", "none")]
    if not among:
        return "No loss had more than one learning rate to choose from."
    kinds = [analysis.undecided(r) for r in among]
    ties = sum(u is not None and u[0] == "tie" for u in kinds)
    one = sum(u is not None and u[0] == "one seed" for u in kinds)
    text = (f"{ties} of {len(among)} rate choices are ties (marked *tie*: with each rate "
            "listed, the paired validation gap, chosen − that rate per seed with a diverged "
            "member counting 0, has a 95% t-interval over seeds that includes 0)")
    if one:
        text += f" and {one} rest on a single paired seed, so nothing decides them (*one seed*)"
    return text + "."


def _truthy(v) -> bool:
    return str(v).strip().lower() in ("true", "1", "1.0")


def _best_per_hidden(rows) -> dict[str, float]:
    """The best finite test accuracy mean per hidden group (none where no row has one)."""
    best: dict[str, float] = {}
    for r in rows:
        if not math.isnan(m := _num(r["test_acc_mean"])):
            best[r["hidden"]] = max(best.get(r["hidden"], m), m)
    return best


def _accuracy_cells(r, bold: bool) -> list[str]:
    """Validation accuracy, test accuracy mean ± CI, and epochs to target of a summary row."""
    mean, ci = _num(r["test_acc_mean"]), _num(r["test_acc_ci95"])
    test = _pct(mean)
    if not math.isnan(mean) and not math.isnan(ci):
        test += f" ± {100 * ci:.2f}"
    if bold and not math.isnan(mean):
        test = f"**{test}**"
    ett = _num(r["epochs_to_target_mean"])
    ett_s = "—" if math.isnan(ett) else f"{ett:.1f}"
    reached = f"{ett_s} ({_int(r['reached_target'])}/{_int(r['n_seeds'])} seeds)"
    return [_pct(_num(r["val_acc_mean"])), test, reached]


def _diverged_cell(r, total: int, at_rate: bool) -> str:
    """'2 / 12', with '(1 at the rate)' where some of the chosen rate's seeds diverged."""
    div = _num(r["diverged"])
    if math.isnan(div):
        return "—"
    text = f"{int(div)} / {total}"
    if at_rate and "diverged_at_lr" in r.index and _int(r["diverged_at_lr"]):
        text += f" ({_int(r['diverged_at_lr'])} at the rate)"
    return text


def _parameters(res: Results, hidden: list[str]) -> str:
    """`` (N parameters)`` per member, from env.json's model record (none in folders written
    before it)."""
    env = tables.read_env(res.path) or {}
    record = env.get("model") if isinstance(env.get("model"), dict) else {}
    counts = record.get("parameters") if isinstance(record.get("parameters"), dict) else {}
    shown = [f"{counts[h]:,}" for h in hidden if isinstance(counts.get(h), int)]
    if not shown or len(shown) != len(hidden):
        return ""
    return f" ({' / '.join(shown)} parameters per member)"


def describe_sweep(res: Results) -> str:
    """One paragraph: dataset, model, optimizer, epochs, member count, seeds, grids."""
    ep, cfg = res.epochs, res.config
    get, fmt = analysis.config_value, analysis.format_value
    name = fmt(get(cfg, "name")) or res.path.resolve().name
    dataset = fmt(get(cfg, "dataset.name")) or "an unnamed dataset"
    hidden = analysis.hidden_order(ep["hidden"])
    sizes = " or ".join("none (linear)" if h == "linear" else h for h in hidden)
    model = f"an MLP with hidden sizes {sizes}"
    names = analysis.model_names(res)
    if names != ["mlp"]:
        model = " and ".join(
            f"a CNN (3x3 convolutions of {n[4:]} channels, each followed by 2x2 average pooling) "
            f"with hidden sizes {sizes}" if n.startswith("cnn ") else
            f"the Flax module `{_md(n.removeprefix('module:'))}`" for n in names)
    act = fmt(get(cfg, "model.activation"))
    if act and not all(n.startswith("module:") for n in names):  # a module's are its own
        model += f" and {act} activations"
    model += _parameters(res, hidden)
    opt = fmt(get(cfg, "optimizer.name"))
    batch = fmt(get(cfg, "batch_size"))
    epochs_cfg = fmt(get(cfg, "epochs"))
    last_epoch = int(ep["epoch"].max())
    epochs = epochs_cfg or str(last_epoch)
    losses = analysis.loss_order(ep["loss"])
    grid = ep[~ep["member"].isin(res.added["member"])]  # the config's product
    seeds = sorted(grid["seed"].unique())
    grids = _grids(grid)
    per_member = ep.groupby("member")  # ids are 0..N-1 over the sweep (load_results checks)
    n_members = per_member.ngroups
    n_div = int(per_member["diverged"].any().sum())

    text = f"Sweep `{_md(name)}` trained {model} on **{_md(dataset)}**"
    train = []
    if opt:
        train.append(f"with {opt}")
    if batch:
        train.append(f"batch size {batch}")
    n_epochs = _plural(int(epochs), "epoch") if epochs.isdigit() else f"{epochs} epochs"
    text += (" " + ", ".join(train) if train else "") + f", for {n_epochs}. "
    text += (
        f"It ran {_plural(grid['member'].nunique(), 'member')} together: "
        f"{_plural(len(losses), 'loss')} ({_listing(losses, lambda v: f'`{_md(v)}`')}) × "
        f"{_rates(grids, losses)}"
    )
    varying = analysis.varying_columns(res)
    if "optimizer" in varying:  # each optimizer has its own grids: no product with the rates
        opts = analysis.optimizer_order(res)
        text = text[:-len(_rates(grids, losses))] + f"{len(opts)} optimizers ("
        text += "; ".join(f"{_md(o)} with {_rates(_grids(ep[ep['optimizer'] == o]), losses)}"
                          for o in opts) + ")"
    for c in varying:
        if c in ("optimizer", "model"):  # an optimizer's grids are above; models are named
            continue
        vals = sorted(ep[c].dropna().unique())
        text += f" × {len(vals)} {c.replace('_', ' ')}s ({_listing(vals, lambda v: f'{v:g}')})"
    if len(hidden) > 1:
        text += f" × {len(hidden)} hidden-size groups"
    text += f" × {_plural(len(seeds), 'seed')} ({_listing(seeds)}). "
    text += (
        "Each loss's learning rate was chosen on its mean final validation accuracy over seeds "
        "(a diverged member counting as 0); test accuracy is reported only at that rate."
    )
    target = _num(get(cfg, "eval.target_accuracy"))
    if not math.isnan(target):
        text += (
            f" Epochs to target counts the epochs until test accuracy first reached {target:.0%}."
        )
    if n_div:
        was = "was" if n_div == 1 else "were"
        text += f" {_plural(n_div, 'member')} diverged (NaN or inf) and {was} frozen from then on."
    if res.stops:
        text += " " + _race_sentence(res, n_members, int(epochs) if epochs.isdigit() else None)
    if len(res.added):
        text += " " + _added_sentence(res)
    if "wall_time" in ep.columns and np.isfinite(wall := ep["wall_time"].max()):
        text += f" Wall time of the sweep, as the table records it: {_duration(float(wall))}."
    return text


def _race_sentence(res: Results, n_members: int, n_epochs: int | None) -> str:
    """What a race stopped (``lossjax.search``), and the work it saved."""
    race = res.config.get("search", {})
    dropped = analysis.dropped(res)
    rungs = _listing(race.get("rungs") or [])
    text = (f"It raced its rates (rungs at epochs {rungs}, alpha {race.get('alpha')}): "
            f"{_plural(len(dropped), 'member')} stopped at a rung as clearly behind, "
            f"{_plural(len(res.stops) - len(dropped), 'member')} at divergence; the rates are "
            "chosen among the rest, and the dropped rates are not drawn")
    if n_epochs:
        text += (f"; {len(res.epochs)} of {n_members * n_epochs} member-epochs trained "
                 f"({len(res.epochs) / (n_members * n_epochs):.0%})")
    return text + "."


def _added_sentence(res: Results) -> str:
    """What the stages after the grid added (``lossjax.plan``): rates past a grid edge, and
    confirmation seeds at the chosen rates."""
    added = res.added.merge(res.epochs.drop_duplicates("member"), on="member")
    confirm = added["reason"].str.startswith("confirmation")
    parts = []
    if (~confirm).any():
        ext = added[~confirm].drop_duplicates(["loss", "hidden", "learning_rate"])
        rates = "; ".join(f"`{_md(r.loss)}` {r.learning_rate:g}" for r in ext.itertuples())
        parts.append(f"{_plural(len(ext), 'rate')} past a grid edge, where a group's chosen rate "
                     f"sat at it ({rates}), trained from epoch 0 on every seed")
    if confirm.any():
        seeds = _listing(sorted(added.loc[confirm, "seed"].unique()))
        parts.append(f"{_plural(int(confirm.sum()), 'member')} on the confirmation seeds "
                     f"({seeds}) at each group's chosen rate, chosen on the other seeds alone "
                     "(the seed counts below include them)")
    return f"Later stages added {' and '.join(parts)}."


def _plots_stale(res: Results) -> bool:
    paths = plots.plot_paths(res.path)
    if not all(p.is_file() and p.stat().st_size > 0 for p in paths):
        return True
    tables = [res.path / "epochs.csv", res.path / "summary.csv"]
    newest = max(t.stat().st_mtime for t in tables)
    return any(p.stat().st_mtime < newest for p in paths)


def render(res: Results) -> str:
    """The report's Markdown text (plots are referenced, not drawn)."""
    name = analysis.format_value(analysis.config_value(res.config, "name"))
    dataset = analysis.format_value(analysis.config_value(res.config, "dataset.name"))
    described = analysis.describe(res)
    title = f"{name}: {described}" if name and name != dataset else described
    out = [f"# {_md(title)}", "", describe_sweep(res), "", "## Summary", ""]
    out += [summary_table(res), ""]
    out.append(
        "Test accuracy is at the chosen learning rate: mean ± half-width of the 95% interval over "
        "seeds. Epochs to target: mean over the seeds that reached it (seeds that reached it / "
        "seeds). Diverged: members that diverged over the whole learning-rate grid / members."
    )
    if calibration := report_calibration.sections(res):
        out += ["", *calibration[:-1]]
    env = tables.read_env(res.path)
    if section := report_provenance.section(env):
        out += ["", *section]
    elif env is not None and (line := report_provenance.environment_line(env)):
        out += ["", f"Environment: {_md(line)}."]
    out += ["", "## Plots", ""]
    for name in plots.figure_names(res):
        title, caption = _CAPTIONS[name]
        out += [
            f"### {title}",
            "",
            f"![{title}]({plots.PLOTS_SUBDIR}/{name}.png)",
            "",
            f"{caption} ([SVG]({plots.PLOTS_SUBDIR}/{name}.svg))",
            "",
        ]
    return "\n".join(out).rstrip() + "\n"


def write_report(results_dir: str | os.PathLike) -> Path:
    """Writes ``RESULTS_DIR/report.md`` (redrawing missing or stale plots) and returns its path.

    Only into a folder a sweep made (``lossjax.folder.require_own``): a folder of yours with
    lossjax's tables copied into it keeps its own ``report.md``; :func:`render` gives the text
    without writing."""
    require_own(results_dir)  # before anything in it is opened
    res = analysis.load_results(results_dir)
    if _plots_stale(res):
        plots.plot_results(res.path)
    text = render(res)
    path = res.path / REPORT_NAME
    try:
        write_text(path, text)
    except OSError as e:
        raise ResultsError(f"cannot write {path}: {one_line(e)}") from e
    return path


__all__ = ["REPORT_NAME", "describe_sweep", "render", "summary_table", "write_report"]
