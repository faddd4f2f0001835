"""``lossjax report RESULTS_DIR``: a short Markdown report of one sweep, from its tables.

``write_report(results_dir)`` writes ``RESULTS_DIR/report.md``: a title, one paragraph on what
was run, the summary table (chosen learning rate, test accuracy mean ± 95% interval, epochs to
the target accuracy, diverged members), a "Provenance" section from ``env.json`` (the lossjax
commit, with a warning where the git tree had uncommitted changes; how the sweep was started and
resumed; versions; devices; the host CPU, and where a resume continued on another CPU or
jax/jaxlib, from which epoch the rows are not bit-exact; the data's content checksums) and the
four plots as relative image links. An ``env.json`` from before provenance was recorded gives
one "Environment" line instead. Plots that are missing, or older than the tables, are redrawn
first.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from lossjax import analysis, machine, plots, provenance, tables
from lossjax.analysis import Results
from lossjax.errors import ResultsError, one_line
from lossjax.folder import require_own, write_text

REPORT_NAME = "report.md"

_CAPTIONS = {
    "test_accuracy": (
        "Test accuracy",
        "Test accuracy against epoch at each loss's chosen learning rate; line = mean over seeds, "
        "band = min–max.",
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

    head = ["Loss", "Hidden", "Learning rate"]
    head += [c.replace("_", " ").capitalize() for c in varying]
    head += ["Val acc. (%)", "Test acc. (%) mean ± 95% CI", "Epochs to target", "Diverged"]
    align = ["---"] * 2 + ["---:"] * (len(head) - 2)
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
        cells = [f"`{_md(r['loss'])}`", _md(r["hidden"]), lr_s]
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


def describe_sweep(res: Results) -> str:
    """One paragraph: dataset, model, optimizer, epochs, member count, seeds, grids."""
    ep, cfg = res.epochs, res.config
    get, fmt = analysis.config_value, analysis.format_value
    name = fmt(get(cfg, "name")) or res.path.resolve().name
    dataset = fmt(get(cfg, "dataset.name")) or "an unnamed dataset"
    hidden = analysis.hidden_order(ep["hidden"])
    sizes = " or ".join("none (linear)" if h == "linear" else h for h in hidden)
    model = f"an MLP with hidden sizes {sizes}"
    if act := fmt(get(cfg, "model.activation")):
        model += f" and {act} activations"
    opt = fmt(get(cfg, "optimizer.name"))
    batch = fmt(get(cfg, "batch_size"))
    epochs_cfg = fmt(get(cfg, "epochs"))
    last_epoch = int(ep["epoch"].max())
    epochs = epochs_cfg or str(last_epoch)
    losses = analysis.loss_order(ep["loss"])
    seeds = sorted(ep["seed"].unique())
    grids = {
        loss: tuple(sorted(g.dropna().unique()))
        for loss, g in ep.groupby("loss")["learning_rate"]
    }
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
        f"It ran {_plural(n_members, 'member')} together: "
        f"{_plural(len(losses), 'loss')} ({_listing(losses, lambda v: f'`{_md(v)}`')}) × "
        f"{_rates(grids, losses)}"
    )
    for c in analysis.varying_columns(res):
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
    if "wall_time" in ep.columns and np.isfinite(wall := ep["wall_time"].max()):
        text += f" Wall time of the sweep, as the table records it: {_duration(float(wall))}."
    return text


_PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "python")


def _environment_line(env: dict) -> str | None:
    """One line from an ``env.json`` without provenance: versions, devices, precision."""
    versions = env.get("versions") if isinstance(env.get("versions"), dict) else {
        k: env[k] for k in _PACKAGES if isinstance(env.get(k), str)}
    parts = [", ".join(f"{k} {v}" for k, v in versions.items() if v), *_device_parts(env),
             None if env.get("cpu") else "CPU not recorded"]
    return "; ".join(p for p in parts if p) or None


def _device_parts(env: dict) -> list[str]:
    parts = []
    devices, kind = env.get("devices"), env.get("device_kind")
    if isinstance(devices, list) and devices:
        parts.append(f"{len(devices)} × {kind or _short(devices[0])}")
    elif isinstance(devices, dict) and devices:
        parts.append("devices: " + ", ".join(f"{k} {_short(v)}" for k, v in devices.items()))
    elif devices:
        parts.append(f"devices: {_short(devices)}")
    if isinstance(n := env.get("process_count"), int) and n > 1:
        parts.append(f"{n} processes")
    if "x64" in env:
        parts.append(f"x64 {'on' if env['x64'] else 'off'}")
    if prec := env.get("default_matmul_precision"):
        parts.append(f"matmul precision {prec}")
    return parts


# ---- provenance (env.json from lossjax.provenance; older files have none of it) -----------

_SHOWN_PATHS = 5


def _provenance(env: dict | None) -> list[str] | None:
    """The "Provenance" section's lines, or None for an env.json written before provenance was
    recorded (the report then shows the one Environment line it always did)."""
    if not isinstance(env, dict) or not ({"git", "invocations"} & env.keys()):
        return None
    git = env.get("git") if isinstance(env.get("git"), dict) else {}
    warnings, items = [], []
    own, config = git.get("lossjax"), git.get("config")
    versions = env.get("versions") if isinstance(env.get("versions"), dict) else {}
    items.append(f"lossjax: {_tree(own, versions.get('lossjax'))}")
    warnings += _dirty_warning(own, "lossjax")
    if isinstance(config, dict):
        items.append(f"The config's project: {_tree(config, None)}")
        warnings += _dirty_warning(config, "the config's project")
    items += _starts(env)
    resumes = [r for r in env.get("resumes") or [] if isinstance(r, dict)]
    for i, r in enumerate(resumes, 1):
        warnings += _resume_warnings(i, r, env)
    # env.json is written with sorted keys; show them in the order provenance lists them.
    order = ("python", *provenance.PACKAGES)
    shown = sorted(versions, key=lambda k: order.index(k) if k in order else len(order))
    if line := ", ".join(f"{k} {versions[k]}" for k in shown if versions[k]):
        items.append(f"Versions: {line}")
    if parts := _device_parts(env):
        items.append(f"Devices: {'; '.join(parts)}")
    items += _cpu_items(env, resumes)
    if data := _data_line(env.get("data")):
        items.append(f"Data: {data}")
    out = ["## Provenance", ""]
    for w in warnings:  # each its own paragraph: adjacent lines would run together
        out += [f"**Warning: {w}**", ""]
    out += [f"- {item}" for item in items]
    return out


def _short_hash(commit) -> str:
    return f"`{str(commit)[:7]}`" if commit else "no commit yet"


def _tree(rec, version) -> str:
    """A work tree's git state in words (rec from provenance.git_state, or None)."""
    if rec is None:
        installed = f"version {version}, " if version else ""
        return f"{installed}not from a git work tree (an installed package)"
    if not isinstance(rec, dict):
        return "git state not recorded"
    where = f" in `{rec['root']}`" if rec.get("root") else ""
    if rec.get("state") != "ok":
        return f"git state unknown{where} ({rec.get('reason') or 'not recorded'})"
    text = f"commit {_short_hash(rec.get('commit'))}"
    text += f" on branch `{rec['branch']}`" if rec.get("branch") else " (detached HEAD)"
    text += where
    text += ", with uncommitted changes" if rec.get("dirty") else ", clean"
    if rec.get("config_tracked") is False:
        text += "; the config file itself is not tracked by git"
    return text


def _dirty_warning(rec, whose: str, when: str = "") -> list[str]:
    if not (isinstance(rec, dict) and rec.get("dirty")):
        return []
    paths = [str(p) for p in rec.get("modified") or []]
    count = max(_int(rec.get("modified_count")), len(paths))
    shown = ", ".join(f"`{p}`" for p in paths[:_SHOWN_PATHS])
    if count > min(len(paths), _SHOWN_PATHS):
        shown += f" and {count - min(len(paths), _SHOWN_PATHS)} more"
    return [f"{when}made from a git tree with uncommitted changes: {shown or 'paths not recorded'} "
            f"({whose}, commit {_short_hash(rec.get('commit'))}); that commit alone does not "
            "reproduce these results."]


def _invocation(inv) -> str:
    if not isinstance(inv, dict):
        return "not recorded"
    for key in ("command", "call"):
        if isinstance(inv.get(key), str):
            return _code(inv[key])
    return _code(json.dumps(inv, sort_keys=True, default=str))


def _code(text: str) -> str:
    text = " ".join(text.split())
    fence = "``" if "`" in text else "`"
    return f"{fence} {text} {fence}" if fence == "``" else f"`{text}`"


def _starts(env: dict) -> list[str]:
    invocations = env.get("invocations") if isinstance(env.get("invocations"), list) else []
    first = _invocation(invocations[0] if invocations else None)
    at = f" at {env['started_at']}" if env.get("started_at") else ""
    items = [f"Started{at}: {first}"]
    resumes = env.get("resumes") if isinstance(env.get("resumes"), list) else []
    for i, inv in enumerate(invocations[1:], 1):
        r = resumes[i - 1] if i - 1 < len(resumes) and isinstance(resumes[i - 1], dict) else {}
        at = f" at {r['at']}" if r.get("at") else ""
        items.append(f"Resumed{at}: {_invocation(inv)}")
    return items


def _resume_warnings(i: int, r: dict, env: dict) -> list[str]:
    """What a resume ran with that differs from the start: other code, versions or devices."""
    when = f"resume {i} was "
    git = r.get("git") if isinstance(r.get("git"), dict) else {}
    start_git = env.get("git") if isinstance(env.get("git"), dict) else {}
    out = []
    for key, whose in (("lossjax", "lossjax"), ("config", "the config's project")):
        now, then = git.get(key), start_git.get(key)
        if not _same_changes(now, then):
            out += _dirty_warning(now, whose, when)
        if (isinstance(now, dict) and isinstance(then, dict) and now.get("commit")
                and then.get("commit") and now["commit"] != then["commit"]):
            out.append(f"resume {i} ran {whose} at commit {_short_hash(now['commit'])}, the "
                       f"start at {_short_hash(then['commit'])}.")
    before = env.get("versions") if isinstance(env.get("versions"), dict) else {}
    after = r.get("versions") if isinstance(r.get("versions"), dict) else {}
    changed = [f"{k} {before.get(k)} → {after[k]}" for k in after
               if k in before and after[k] != before[k]]
    if changed:
        out.append(f"resume {i} ran other versions: {', '.join(changed)}.")
    if "device_kind" in r and (r.get("device_kind"), len(r.get("devices") or [])) != (
            env.get("device_kind"), len(env.get("devices") or [])):
        out.append(f"resume {i} ran on other devices: {'; '.join(_device_parts(r))}.")
    return out + _machine_break(i, env)


def _cpu_items(env: dict, resumes: list[dict]) -> list[str]:
    """The start's CPU, and each resume's where it is another (XLA's kernels differ by CPU)."""
    start = env.get("cpu") if isinstance(env.get("cpu"), dict) else None
    items = [f"CPU: {_cpu_words(start)}" if start else "CPU not recorded"]
    for i, r in enumerate(resumes, 1):
        cpu = r.get("cpu") if isinstance(r.get("cpu"), dict) else None
        if cpu is not None and (start is None or machine.compare_machines(
                {"cpu": start}, {"cpu": cpu}) is not None):
            items.append(f"CPU of resume {i}: {_cpu_words(cpu)}")
    return items


def _cpu_words(cpu: dict) -> str:
    model = f"`{cpu['model']}`" if cpu.get("model") else "model unknown"
    about = ", ".join(str(cpu[k]) for k in ("vendor", "signature", "machine") if cpu.get(k))
    if isinstance(cpu.get("logical_cpus"), int):
        about += f"{', ' if about else ''}{_plural(cpu['logical_cpus'], 'logical CPU')}"
    features = cpu.get("features")
    text = f"{model}{f' ({about})' if about else ''}; XLA compiles for "
    text += ", ".join(features) if features else ("no SIMD features" if features == []
                                                  else "features unknown")
    if cpu.get("xla_cpu_max_isa") is not None:
        text += f" (`--xla_cpu_max_isa={cpu['xla_cpu_max_isa']}`)"
    return text


def _machine_break(i: int, env: dict) -> list[str]:
    """Where resume ``i`` continued on another machine (CPU, or jax/jaxlib) than the part
    before it ran on: which epochs ran where, and from where rows are not bit-exact."""
    resumes = [r if isinstance(r, dict) else {} for r in env.get("resumes") or []]
    r = resumes[i - 1]
    after = r.get("resumed_after_epochs")
    if not isinstance(after, list) or not all(isinstance(b, int) for b in after):
        return []  # an older resume entry: its versions are compared above
    before = resumes[i - 2] if i > 1 else env
    differs = machine.compare_machines(machine.machine_of(before), machine.machine_of(r))
    if differs is None:
        return []
    total = _int(r.get("epochs")) or max(after, default=0)
    lows = _epochs_list(resumes[i - 2] if i > 1 else None, len(after), default=0)
    highs = _epochs_list(resumes[i] if i < len(resumes) else None, len(after), default=total)
    spans = {(lo + 1, b, hi) for lo, b, hi in zip(lows, after, highs, strict=True) if b < hi}
    if not spans:
        return []
    if len(spans) == 1 and (span := spans.pop())[1] >= span[0]:
        lo, b, hi = span
        return [f"{_span(lo, b)} ran on {differs[0]}, {_span(b + 1, hi)} on {differs[1]}: rows "
                f"after epoch {b} are not bit-reproducible with an uninterrupted run."]
    listing = ", ".join(f"group {g} after epoch {b}" for g, (b, hi) in
                        enumerate(zip(after, highs, strict=True)) if b < hi)
    return [f"resume {i} continued on {differs[1]}, after {differs[0]}: {listing}; each of "
            "those groups' rows after that epoch is not bit-reproducible with an uninterrupted "
            "run."]


def _epochs_list(resume: dict | None, n: int, default: int) -> list[int]:
    got = (resume or {}).get("resumed_after_epochs")
    if isinstance(got, list) and len(got) == n and all(isinstance(b, int) for b in got):
        return got
    return [default] * n


def _span(lo: int, hi: int) -> str:
    return f"epoch {lo}" if lo == hi else f"epochs {lo}–{hi}"


def _same_changes(now, then) -> bool:
    """Whether a resume's tree had the start's uncommitted changes (known only from their
    hashes; without them, the same list of paths is taken as the same)."""
    if not (isinstance(now, dict) and isinstance(then, dict) and then.get("dirty")):
        return False
    keys = ("commit", "diff_sha256") if now.get("diff_sha256") else ("commit", "modified")
    return all(now.get(k) == then.get(k) for k in keys)


def _data_line(data) -> str | None:
    if not isinstance(data, dict):
        return None
    text = f"`{data['name']}`" if data.get("name") else "dataset not named"
    source = data.get("source") if isinstance(data.get("source"), dict) else {}
    if kind := source.get("kind"):
        text += f" ({kind}{', ' + str(source['form']) if source.get('form') else ''})"
    verified = data.get("verified") if isinstance(data.get("verified"), dict) else {}
    if verified:
        sums = ", ".join(f"{part} `{str(h)[:12]}…`" for part, h in verified.items())
        text += f"; content sha256, verified against the official checksums: {sums}"
    return text


def _short(v) -> str:
    s = v if isinstance(v, str) else json.dumps(v, separators=(",", ":"), default=str)
    return s if len(s) <= 80 else s[:77] + "..."


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
    env = tables.read_env(res.path)
    if provenance := _provenance(env):
        out += ["", *provenance]
    elif env is not None and (line := _environment_line(env)):
        out += ["", f"Environment: {_md(line)}."]
    out += ["", "## Plots", ""]
    for name in plots.PLOT_NAMES:
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
