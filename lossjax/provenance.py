"""What a results folder's ``env.json`` records about how its numbers were made.

:func:`record` builds it when a sweep starts; :func:`add_resume` adds each later start of the
same sweep (``--resume``). Beside the keys older versions wrote (``python``, ``platform``,
``jax``, ``jaxlib``, ``flax``, ``optax``, ``numpy``, ``devices``, ``device_kind``,
``process_count``, ``x64``, ``default_matmul_precision``, ``data``), which stay so that older
readers keep working, it holds:

- ``git``: ``{"lossjax": ..., "config": ...}``, the state of the git work tree the running
  lossjax was imported from (a clone or an editable install) and of the one holding the config
  file, where that is another (a researcher's own project with its configs and losses). Each is
  None where there is no such work tree (lossjax installed from a wheel, a config outside any
  repository, or in lossjax's own tree), else a :func:`git_state` record: commit, branch, and
  whether tracked files differed from that commit (``dirty``, with up to
  :data:`MAX_PATHS` of the ``modified`` paths). Untracked files are not counted: an untracked
  file the sweep used is not seen here. Where git is missing or fails, the record says
  ``"state": "unknown"`` and why; recording never raises.
- ``invocations``: how the sweep was started, as the caller gave it, then one entry per resume.
- ``started_at`` (UTC) and ``resumes``: per resume, when, and the git state, versions and
  devices it ran with, since a resume may run other code than the start did.
- ``versions``: the packages that shape the numbers, from installed metadata (None: not
  installed).
- ``data``: the dataset's record from :func:`lossjax.data.load`, whose ``verified`` maps each
  part to the sha256 of its content, checked against :mod:`lossjax.data.checksums`.
- ``cpu``: the host CPU (:func:`cpu_record`), at the start and in each resume. XLA's CPU kernels
  round differently on another CPU model or instruction set, so a resume compares it, and the
  jax/jaxlib versions, with the start's (:func:`compare_machines`) before it trains. A resume
  also records ``resumed_after_epochs`` (per group, the epochs its checkpoint held) and, where
  it was let run on another machine, ``other_machine``: where the rows stop being bit-exact.

Nothing here imports JAX at import time; :func:`record` reads the JAX settings of the running
process (which has JAX loaded, since it holds the devices).
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

#: Distribution names whose versions are recorded, in the order reports show them.
PACKAGES = ("lossjax", "jax", "jaxlib", "flax", "optax", "numpy", "scipy", "pandas",
            "tensorflow-datasets", "matplotlib", "tensorboardX")
#: At most this many modified paths are listed per work tree (``modified_count`` has them all).
MAX_PATHS = 20
#: Seconds each git command may take; a slow network file system must not hold up a sweep.
GIT_TIMEOUT = 5.0
FORMAT = 2

_DIRTY_MEANS = "tracked files modified or staged; untracked files are not counted"


def record(devices, data_meta: dict, invocation: dict | None = None) -> dict:
    """``env.json`` for a sweep starting now on ``devices`` (``jax.devices()``), with the data
    of ``data_meta`` (``Dataset.meta``), started as ``invocation`` says (stored as given; a
    ``config_path`` in it, relative to its ``cwd`` if any, names the config file)."""
    import jax  # already loaded by whoever holds the devices

    versions = package_versions()
    env = {
        "python": versions["python"],
        "platform": platform.platform(),
        "jax": versions["jax"],
        "jaxlib": versions["jaxlib"],
        "flax": versions["flax"],
        "optax": versions["optax"],
        "numpy": versions["numpy"],
        **device_record(devices),
        "x64": bool(jax.config.jax_enable_x64),
        "default_matmul_precision": jax.config.jax_default_matmul_precision or "default",
        "data": data_meta,
        "format": FORMAT,
        "started_at": _now(),
        "invocations": [invocation],
        "resumes": [],
        "git": git_record(_config_path(invocation)),
        "versions": versions,
        "cpu": cpu_record(),
    }
    return env


def add_resume(env: dict, invocation: dict | None, devices=None, *,
               resumed_after_epochs: list[int | None] | None = None,
               epochs: int | None = None) -> dict:
    """``env`` (as :func:`record` made it, or an older ``env.json``) with one more start of the
    sweep: ``invocation`` appended to ``invocations``, and when, with which code, versions, CPU
    and (where ``devices`` is given) devices, appended to ``resumes``, with the epochs each
    group's checkpoint held (``resumed_after_epochs``) out of ``epochs``, and, where this is
    another machine than the start's, ``other_machine`` saying which. ``env`` is not
    changed."""
    env = dict(env)
    # An env.json from before invocations were recorded: the first start is not known.
    env["invocations"] = [*env.get("invocations", [None]), invocation]
    resume = {"at": _now(), "git": git_record(_config_path(invocation)),
              "versions": package_versions(), "cpu": cpu_record()}
    if devices is not None:
        resume.update(device_record(devices))
    if resumed_after_epochs is not None:
        resume.update(resumed_after_epochs=list(resumed_after_epochs), epochs=epochs)
    if differs := compare_machines(machine_of(env), machine_of(resume)):
        resume["other_machine"] = f"started on {differs[0]}; resumed on {differs[1]}"
    env["resumes"] = [*env.get("resumes", []), resume]
    return env


def device_record(devices) -> dict:
    """The keys env.json has always had for devices: their names, kind, and process count."""
    import jax  # already loaded by whoever holds the devices

    devices = list(devices)
    return {
        "devices": [str(d) for d in devices],
        "device_kind": devices[0].device_kind if devices else None,
        "process_count": jax.process_count(),
    }


def package_versions() -> dict[str, str | None]:
    """Python's version and those of :data:`PACKAGES` (None where one is not installed), read
    from installed metadata so that nothing is imported for it."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_record(config_path: str | os.PathLike | None = None) -> dict:
    """``{"lossjax": ..., "config": ...}``: see the module's docstring."""
    package = Path(__file__).resolve().parent
    # A package under site-packages was installed, not imported from its source tree, even
    # where that environment lies inside some repository.
    installed = {"site-packages", "dist-packages"} & set(package.parts)
    own_root = None if installed else _work_tree(package.parent)
    own = None
    if own_root is not None:
        own = git_state(own_root, must_track=package / "__init__.py")
        if own is not None and own.get("state") == "ok" and not own.pop("tracked"):
            own = None  # e.g. installed into a virtual environment inside some repository
    config = None
    if config_path is not None:
        path = Path(config_path).absolute()
        root = _work_tree(path.parent)
        if root is not None and (own is None or root != own_root):
            config = git_state(root, must_track=path, tracked_key="config_tracked")
    return {"lossjax": own, "config": config}


def git_state(root: Path, must_track: Path | None = None, tracked_key: str = "tracked") -> dict:
    """The state of the git work tree at ``root``: ``{"state": "ok", "root", "commit",
    "branch", "dirty", "dirty_means", "modified", "modified_count"}`` (and, where dirty,
    ``diff_sha256``: the sha256 of ``git diff --binary HEAD``), plus ``tracked_key``:
    whether ``must_track`` is a tracked file. ``commit`` is None before the first commit,
    ``branch`` None on a detached HEAD. Any failure: ``{"state": "unknown", "root",
    "reason"}``."""
    out = {"state": "ok", "root": str(root)}
    try:
        lines = _git(root, "status", "--porcelain=v2", "--branch", "-z",
                     "--untracked-files=no").split("\0")
        if must_track is not None:
            rel = os.path.relpath(must_track, root)
            # ls-files prints the path when it is in the index, and nothing otherwise.
            out[tracked_key] = bool(_git(root, "ls-files", "--", rel).strip())
    except _GitFailed as e:
        return {"state": "unknown", "root": str(root), "reason": str(e)}
    commit = branch = None
    modified = []
    entries = iter(lines)
    for line in entries:
        if line.startswith("# branch.oid "):
            commit = line.removeprefix("# branch.oid ")
        elif line.startswith("# branch.head "):
            branch = line.removeprefix("# branch.head ")
        elif line[:2] in ("1 ", "u "):
            modified.append(line.split(" ", 8 if line[0] == "1" else 10)[-1])
        elif line.startswith("2 "):
            modified.append(line.split(" ", 9)[-1])
            next(entries, None)  # the path it was renamed or copied from
    commit = None if commit == "(initial)" else commit
    out.update(
        commit=commit, branch=None if branch == "(detached)" else branch,
        dirty=bool(modified), dirty_means=_DIRTY_MEANS,
        modified=modified[:MAX_PATHS], modified_count=len(modified),
    )
    if modified and commit:
        # Tells whether two runs from the same commit had the same uncommitted changes, and
        # whether a patch someone kept is the one the results came from.
        try:
            diff = _git(root, "diff", "--no-ext-diff", "--no-textconv", "--binary", "HEAD",
                        raw=True)
            out["diff_sha256"] = hashlib.sha256(diff).hexdigest()
        except _GitFailed:
            out["diff_sha256"] = None
    return out


class _GitFailed(Exception):
    pass


def _git(root: Path, *args: str, raw: bool = False):
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, timeout=GIT_TIMEOUT,
            stdin=subprocess.DEVNULL, check=False,
            # Optional locks off: reading the state must not take the index lock from a git
            # command the user runs meanwhile. No prompts: a sweep may run unattended.
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0",
                 "LC_ALL": "C"})
    except FileNotFoundError:
        raise _GitFailed("no git program found") from None
    except subprocess.TimeoutExpired:
        raise _GitFailed(f"git {args[0]} took over {GIT_TIMEOUT:g} s") from None
    except OSError as e:
        raise _GitFailed(f"cannot run git: {e.strerror or e}") from None
    if done.returncode != 0:
        msg = " ".join(done.stderr.decode(errors="replace").split())[:200]
        raise _GitFailed(f"git {args[0]} failed (exit {done.returncode}): {msg}")
    return done.stdout if raw else done.stdout.decode(errors="replace")


# ---- the CPU ------------------------------------------------------------------------------
#
# jaxlib has no query for the features its CPU compiler targets: a CPU device says only
# ``device_kind == "cpu"``, the backend's ``platform_version`` only "cpu", and XLA picks the
# features in C++ (``DetectMachineAttributes`` in xla/backends/cpu/codegen/cpu_features.cc:
# LLVM's host features, minus those newer than ``--xla_cpu_max_isa``), exposed to no Python
# API. So the record takes the host's features from the kernel (/proc/cpuinfo, or sysctl on
# macOS), keeps the ones below, and removes what that flag removes, by XLA's own rules
# (:data:`_NEWER_THAN`). The flag is read from XLA_FLAGS now; XLA read it when the backend
# started, which is the same unless the process changed XLA_FLAGS in between.

#: The host features that decide which instructions XLA's CPU compiler emits for float math,
#: in /proc/cpuinfo's spelling, roughly oldest first (x86-64, then AArch64).
XLA_CPU_FEATURES = (
    "sse4_2", "avx", "f16c", "fma", "avx2", "avx_vnni", "avx512f", "avx512cd", "avx512dq",
    "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
    "amx_int8", "amx_bf16", "amx_fp16",
    "asimd", "sve", "sve2",
)

#: ``--xla_cpu_max_isa``'s values per architecture, oldest first, each with a test of the
#: features XLA turns off when the cap is that value or an older one (XLA's
#: ShouldEnableX86CpuFeature / ShouldEnableAArch64CpuFeature, on cpuinfo's names). XLA's quirks
#: are kept: at AVX, avx_vnni stays on; at AVX512, avx512_fp16 stays on. "AMX" allows AMX_BF16
#: and AMX_INT8. A value of another architecture caps nothing, and an unknown value is ignored
#: (XLA logs "Unknown CPU ISA" and caps nothing).
_NEWER_THAN = {
    "x86": (
        ("SSE4_2", lambda f: f.startswith("avx") or f == "f16c"),
        ("AVX", lambda f: f.startswith(("avx2", "fma"))),
        ("AVX2", lambda f: f.startswith("avx512")),
        ("AVX512", lambda f: f == "avx512_vnni"),
        ("AVX512_VNNI", lambda f: f == "avx512_bf16"),
        ("AVX512_BF16", lambda f: f.startswith("amx")),
        ("AMX", lambda f: f == "amx_fp16"),
        ("AMX_FP16", lambda f: False),  # its successors' features are not in the list
        ("AMX_FP8", lambda f: False),
    ),
    "arm": (
        ("NEON", lambda f: f == "sve"),
        ("SVE", lambda f: f == "sve2"),
        ("SVE2", lambda f: False),
    ),
}
#: XLA's cap where XLA_FLAGS sets none (DefaultMaxIsa: SVE lowerings are incomplete in LLVM).
_DEFAULT_MAX_ISA = {"arm": "NEON"}
#: CPU implementer codes of /proc/cpuinfo on AArch64, which names no vendor.
_ARM_IMPLEMENTERS = {"0x41": "ARM", "0x42": "Broadcom", "0x43": "Cavium", "0x46": "Fujitsu",
                     "0x48": "HiSilicon", "0x4e": "NVIDIA", "0x50": "Ampere (APM)",
                     "0x51": "Qualcomm", "0x61": "Apple", "0x6d": "Microsoft", "0xc0": "Ampere"}
#: macOS (Intel) sysctl spellings that differ from cpuinfo's.
_SYSCTL_NAMES = {"sse4.2": "sse4_2", "avx1.0": "avx", "avx512vnni": "avx512_vnni",
                 "avx512bf16": "avx512_bf16", "avx512fp16": "avx512_fp16"}
SYSCTL_TIMEOUT = 2.0


def cpu_record() -> dict:
    """The host CPU: ``model``, ``vendor`` and, on x86 Linux, ``signature`` (cpuid family,
    model and stepping; None where unknown), ``machine``
    (``platform.machine()``), ``logical_cpus``, ``host_features`` (those of
    :data:`XLA_CPU_FEATURES` the CPU has; None where unknown), ``xla_cpu_max_isa`` (the value
    XLA_FLAGS gives, else None), ``features`` (what XLA compiles for: the host's, capped) and
    ``source`` (where it was read). It says which host ran a sweep on a GPU too. Never
    raises: what cannot be read is None."""
    try:
        found = _read_cpu()
    except Exception:  # provenance must never stop a sweep
        found = {}
    host = found.get("features")
    flag = xla_cpu_max_isa()
    cap = flag if flag is not None else _DEFAULT_MAX_ISA.get(_arch())
    return {
        "model": found.get("model"),
        "vendor": found.get("vendor"),
        "signature": found.get("signature"),
        "machine": platform.machine() or None,
        "logical_cpus": os.cpu_count(),
        "host_features": host,
        "xla_cpu_max_isa": flag,
        "features": None if host is None else cap_features(host, cap),
        "source": found.get("source"),
    }


def xla_cpu_max_isa(flags: str | None = None) -> str | None:
    """The value of the last ``--xla_cpu_max_isa=...`` in ``flags`` (default: XLA_FLAGS), as
    given, or None where there is none."""
    flags = os.environ.get("XLA_FLAGS", "") if flags is None else flags
    value = None
    for word in flags.split():
        name, eq, v = word.lstrip("-").partition("=")
        if name == "xla_cpu_max_isa" and eq and word.startswith("-"):
            value = v.strip("'\"")
    return value


def cap_features(features, cap: str | None) -> list[str]:
    """``features`` (cpuinfo names, in :data:`XLA_CPU_FEATURES` order) without those XLA turns
    off under ``--xla_cpu_max_isa=cap`` (None or unknown: none)."""
    levels = _NEWER_THAN.get(_arch(), ())
    names = [name for name, _ in levels]
    cap = (cap or "").strip().upper()
    if cap not in names:
        return list(features)
    newer = [test for _, test in levels[names.index(cap):]]
    return [f for f in features if not any(test(f) for test in newer)]


def _arch() -> str | None:
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i386", "i686", "x86"):
        return "x86"
    if machine in ("aarch64", "arm64") or machine.startswith("armv8"):
        return "arm"
    return None


def _read_cpu() -> dict:
    """``{"model", "vendor", "features", "source"}`` from what this system offers."""
    text = _read_cpuinfo()
    if text is not None:
        return _parse_cpuinfo(text)
    if platform.system() == "Darwin":
        return _read_sysctl()
    return {"model": platform.processor() or None, "vendor": None, "features": None,
            "source": "platform.processor()"}


def _read_cpuinfo() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _parse_cpuinfo(text: str) -> dict:
    """The first processor's entry of /proc/cpuinfo (x86: ``model name``, ``vendor_id``,
    ``flags``; AArch64: ``Features``, ``CPU implementer``, ``CPU part``, and rarely a model
    name)."""
    info: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if sep and key and key not in info:
            info[key] = " ".join(value.split())
    flags = info.get("flags", info.get("features"))
    features = None if flags is None else _known(flags.split())
    vendor = info.get("vendor_id") or _ARM_IMPLEMENTERS.get(
        info.get("cpu implementer", "").lower(), info.get("cpu implementer"))
    model = info.get("model name") or info.get("hardware")
    if not model and info.get("cpu part"):
        model = f"CPU part {info['cpu part']}"
    # Under a hypervisor the name is often generic ("Intel(R) Xeon(R) Processor" for several
    # generations); the family/model/stepping numbers still tell the silicon apart.
    numbers = [info.get(k) for k in ("cpu family", "model", "stepping")]
    signature = ("family {} model {} stepping {}".format(*numbers)
                 if all(numbers) else None)
    return {"model": model or platform.processor() or None, "vendor": vendor or None,
            "signature": signature, "features": features, "source": "/proc/cpuinfo"}


def _read_sysctl() -> dict:
    def get(name):
        try:
            done = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True,
                                  timeout=SYSCTL_TIMEOUT, stdin=subprocess.DEVNULL, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None

    model = get("machdep.cpu.brand_string")
    if _arch() == "arm":  # Apple silicon: NEON, no SVE
        vendor, features = "Apple", (["asimd"] if get("hw.optional.neon") == "1" else None)
    else:
        vendor = get("machdep.cpu.vendor")
        words = " ".join(filter(None, (get("machdep.cpu.features"),
                                       get("machdep.cpu.leaf7_features")))).lower().split()
        features = _known(_SYSCTL_NAMES.get(w, w) for w in words) if words else None
    return {"model": model or platform.processor() or None, "vendor": vendor,
            "features": features, "source": "sysctl"}


def _known(names) -> list[str]:
    have = set(names)
    return [f for f in XLA_CPU_FEATURES if f in have]


# ---- the same machine? --------------------------------------------------------------------

#: The versions whose change changes XLA's kernels.
MACHINE_VERSIONS = ("jax", "jaxlib")


def machine_of(rec: dict) -> dict:
    """What decides whether a resume continues bit for bit, from a start's ``env.json`` or a
    resume's entry in it: ``{"cpu": ... or None (not recorded), "jax": ..., "jaxlib": ...}``."""
    versions = rec.get("versions") if isinstance(rec.get("versions"), dict) else {}
    cpu = rec.get("cpu")
    return {"cpu": cpu if isinstance(cpu, dict) else None,
            **{k: versions.get(k, rec.get(k)) for k in MACHINE_VERSIONS}}


def compare_machines(then: dict, now: dict) -> tuple[str, str] | None:
    """None where machines ``then`` and ``now`` (from :func:`machine_of`) run a sweep alike;
    else the two in words that name what differs, e.g. ``('"AMD EPYC 7B13" (avx2)',
    '"Intel Xeon ..." (avx512f, avx512cd, ...)')``. A CPU not recorded is not compared."""
    versions = [k for k in MACHINE_VERSIONS if then.get(k) != now.get(k)]
    a, b = then.get("cpu"), now.get("cpu")
    cpu_differs = a is not None and b is not None and _cpu_key(a) != _cpu_key(b)
    if not versions and not cpu_differs:
        return None
    return (_machine_words(a, b, cpu_differs, then, versions),
            _machine_words(b, a, cpu_differs, now, versions))


def describe_cpu(cpu: dict | None, other: dict | None = None) -> str:
    """A CPU record in a few words: its model, and its features that ``other`` lacks (all of
    them but the newest where ``other`` is None or lacks none), and the cap."""
    if not isinstance(cpu, dict):
        return "a CPU not recorded"
    model = f'"{cpu["model"]}"' if cpu.get("model") else "an unnamed CPU"
    theirs = (other or {}).get("signature")
    if cpu.get("signature") and theirs and theirs != cpu["signature"]:
        model += f" [{cpu['signature']}]"  # one generic name can cover several generations
    features = cpu.get("features")
    if features is None:
        words = "features unknown"
    else:
        theirs = (other or {}).get("features")
        extra = [f for f in features if theirs is not None and f not in theirs]
        shown = extra or features[-1:]
        words = ", ".join(shown[:3]) + (", ..." if len(shown) > 3 else "") or "no SIMD features"
    if cpu.get("xla_cpu_max_isa") is not None:
        words += f"; xla_cpu_max_isa={cpu['xla_cpu_max_isa']}"
    return f"{model} ({words})"


def _cpu_key(cpu: dict) -> tuple:
    features = cpu.get("features")
    return (cpu.get("vendor"), cpu.get("model"), cpu.get("signature"),
            None if features is None else tuple(features))


def _machine_words(cpu, other, cpu_differs: bool, machine: dict, versions: list[str]) -> str:
    parts = [describe_cpu(cpu, other)] if cpu_differs else []
    if versions:
        parts.append(("with " if parts else "")
                     + ", ".join(f"{k} {machine.get(k) or 'unknown'}" for k in versions))
        if cpu is None:
            parts.append("(its CPU was not recorded)")
    return " ".join(parts)


def _work_tree(folder: Path) -> Path | None:
    """The top of the git work tree holding ``folder``, found without git (so that a tree is
    seen as one even where git is missing), or None."""
    folder = folder.resolve()
    for d in (folder, *folder.parents):
        if (d / ".git").exists():  # a folder, or a file in worktrees and submodules
            return d
    return None


def _config_path(invocation) -> Path | None:
    if not isinstance(invocation, dict) or not invocation.get("config_path"):
        return None
    path = Path(os.fspath(invocation["config_path"]))
    cwd = invocation.get("cwd")
    return path if path.is_absolute() or not cwd else Path(cwd) / path


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


__all__ = ["MACHINE_VERSIONS", "MAX_PATHS", "PACKAGES", "XLA_CPU_FEATURES", "add_resume",
           "cap_features", "compare_machines", "cpu_record", "describe_cpu", "device_record",
           "git_record", "git_state", "machine_of", "package_versions", "record",
           "xla_cpu_max_isa"]
