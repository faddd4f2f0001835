"""The provenance section of ``report.md``, from ``env.json``.

:func:`section` gives the "Provenance" section: the lossjax commit, with a warning where the git
tree had uncommitted changes; how the sweep was started and resumed; versions; devices; the
host CPU, and where a resume continued on another CPU or jax/jaxlib, from which epoch the rows
are not bit-exact; the data's content checksums. An ``env.json`` from before provenance was
recorded (``lossjax.provenance``) has none of it: :func:`environment_line` gives the one line
the report shows for it instead. Every key is checked before it is used: an ``env.json`` of
an older lossjax, or one edited by hand, still renders.
"""

from __future__ import annotations

import json
import math

from lossjax import machine, provenance

_PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "python")


def environment_line(env: dict) -> str | None:
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


_SHOWN_PATHS = 5


def _model_line(model) -> str | None:
    """env.json's model record: a user's module, its file and the file's sha256 (the built-in
    models are lossjax's code, which the lossjax line above pins)."""
    module = model.get("module") if isinstance(model, dict) else None
    if not isinstance(module, dict):
        return None
    def code(v) -> str:
        return "`" + str(v).replace("`", "'") + "`"

    return (f"{code(module.get('kind'))} from {code(module.get('file'))}, sha256 "
            f"{code(str(module.get('sha256'))[:16])}")


def section(env: dict | None) -> list[str] | None:
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
    if model := _model_line(env.get("model")):
        items.append(f"Model: {model}")
    out = ["## Provenance", ""]
    for w in warnings:  # each its own paragraph: adjacent lines would run together
        out += [f"**Warning: {w}**", ""]
    out += [f"- {item}" for item in items]
    return out


def script_line(rec: dict | None) -> str:
    """One line for an experiment script's output from :func:`provenance.script_record`."""
    if not isinstance(rec, dict):
        return "Provenance not recorded."
    git = rec.get("git") if isinstance(rec.get("git"), dict) else {}
    versions = rec.get("versions") if isinstance(rec.get("versions"), dict) else {}
    cpu = rec.get("cpu")
    line = (f"Made by {_code(str(rec.get('command')))} at {rec.get('at') or 'an unrecorded time'}"
            f": lossjax {_tree(git.get('lossjax'), versions.get('lossjax'))}; jax "
            f"{versions.get('jax')}, jaxlib {versions.get('jaxlib')}; CPU "
            f"{_cpu_words(cpu) if isinstance(cpu, dict) else 'not recorded'}.")
    # Worded as the sweep report's Provenance section words its warnings.
    return " ".join([line, *(f"Warning: {w}" for w in _dirty_warning(git.get("lossjax"),
                                                                     "lossjax"))])


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
    if isinstance(n := cpu.get("logical_cpus"), int):
        about += f"{', ' if about else ''}{n} logical CPU{'' if n == 1 else 's'}"
    if cpu.get("pjrt_nproc") is not None:
        about += f"{', ' if about else ''}PJRT_NPROC={cpu['pjrt_nproc']}"
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
    own = data.get("files_sha256") if isinstance(data.get("files_sha256"), dict) else {}
    if own:  # a user's arrays: no official checksum, so the files name the data
        sums = ", ".join(f"{f} `{str(h)[:12]}…`" for f, h in own.items())
        shapes = data.get("shapes") if isinstance(data.get("shapes"), dict) else {}
        text += f"; file sha256: {sums}" + "".join(
            f"; {k} {'x'.join(map(str, v))}" for k, v in shapes.items() if isinstance(v, list))
    if isinstance(data.get("class_names"), list):
        names = data["class_names"]
        text += f"; {len(names)} classes: " + ", ".join(map(str, names[:20])) + (
            ", …" if len(names) > 20 else "")
    return text


def _short(v) -> str:
    s = v if isinstance(v, str) else json.dumps(v, separators=(",", ":"), default=str)
    return s if len(s) <= 80 else s[:77] + "..."


def _int(v) -> int:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return 0
    return 0 if math.isnan(f) else int(f)


__all__ = ["environment_line", "section"]
