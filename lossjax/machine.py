"""Which machine a folder's numbers came from: the CPU model and instruction set XLA uses, and
jax/jaxlib.

:func:`cpu_record` is ``env.json``'s ``cpu``, at a sweep's start and in each resume
(``lossjax.provenance``). XLA's CPU kernels round differently on another CPU model or
instruction set, and another jax or jaxlib may compile other kernels, so a resume compares the
start's machine with its own (:func:`machine_of`, :func:`compare_machines`) before it trains,
and the report names where the rows stop being bit-exact. Nothing here imports JAX.
"""

from __future__ import annotations

import os
import platform
import subprocess

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
    (``platform.machine()``), ``logical_cpus``, ``pjrt_nproc`` (PJRT_NPROC, which XLA sizes its
    CPU thread pool by in place of the core count, else None), ``host_features`` (those of
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
        "pjrt_nproc": os.environ.get("PJRT_NPROC"),
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


__all__ = ["MACHINE_VERSIONS", "XLA_CPU_FEATURES", "cap_features", "compare_machines",
           "cpu_record", "describe_cpu", "machine_of", "xla_cpu_max_isa"]
