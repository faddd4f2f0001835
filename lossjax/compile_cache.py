"""JAX's persistent compilation cache, on by default for sweeps: a program compiled once on
this machine is read back, not compiled again, by every later run, resume and test.

A cache hit is the executable XLA built the first time, so results are bit for bit those of
a cold compile. JAX keys each entry by the program, jaxlib's version, the backend, XLA_FLAGS
and the compile options, but not by the CPU that compiled it: XLA's CPU compiler targets the
host's instruction set, and the size of its thread pool (``PJRT_NPROC``, else the core count)
decides how it splits loops, which changes last bits. So lossjax keeps one folder per jaxlib
and machine (:func:`machine_key`), and a copied home folder or a shared disk never hands one
machine another's programs.

Where it lives: ``$LOSSJAX_CACHE_DIR/xla`` when that is set, else ``$XDG_CACHE_HOME/lossjax/xla``
(``~/.cache/lossjax/xla``). JAX's own switches win: with ``JAX_COMPILATION_CACHE_DIR`` (or
``jax.config``'s ``jax_compilation_cache_dir``) set, that folder is used as the user set it;
``JAX_ENABLE_COMPILATION_CACHE=false`` turns the cache off. A folder that cannot be written
never fails a sweep: it compiles without the cache and says so once; an entry that cannot be
read is compiled again (JAX warns; :func:`quiet_errors` turns that into one lossjax line).

``lossjax cache`` shows the folder and its size and clears it. Nothing here imports JAX at
module level: ``lossjax cache`` and the readers of results folders do without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import uuid
import warnings
from pathlib import Path

from lossjax import machine

log = logging.getLogger(__name__)

ENV_CACHE_DIR = "LOSSJAX_CACHE_DIR"  # the data cache's variable: one root for both caches
JAX_DIR = "JAX_COMPILATION_CACHE_DIR"
JAX_ENABLE = "JAX_ENABLE_COMPILATION_CACHE"
# JAX's warnings for an entry it could not read or write (jax/_src/compiler.py).
_JAX_CACHE_ERROR = re.compile(r"Error (reading|writing) persistent compilation cache")
_said: set[str] = set()  # what has been said once in this process


def root() -> Path:
    """The folder that holds every machine's cache folder (``lossjax cache`` shows it)."""
    if env := os.environ.get(ENV_CACHE_DIR):
        return Path(env).expanduser() / "xla"
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "lossjax" / "xla"


def machine_key() -> str:
    """``jaxlib-<version>-<hash>``: the hash covers the CPU that XLA compiles for (model,
    signature, the features it targets after ``--xla_cpu_max_isa``) and its thread pool's
    size, the things JAX's own key leaves out."""
    cpu = machine.cpu_record()
    try:
        jaxlib = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        jaxlib = "unknown"
    fields = {k: cpu.get(k) for k in ("model", "vendor", "signature", "machine", "features",
                                      "logical_cpus", "pjrt_nproc")}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    return f"jaxlib-{jaxlib}-{digest}"


def _off(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("0", "false", "no", "off")


def state() -> dict:
    """Where the cache is and whether it is used, without touching JAX: ``{"enabled",
    "folder", "set_by"}`` (``set_by``: "lossjax", "JAX_COMPILATION_CACHE_DIR" or the reason
    it is off)."""
    if _off(os.environ.get(JAX_ENABLE)):
        return {"enabled": False, "folder": None, "set_by": f"{JAX_ENABLE}=false"}
    if user := os.environ.get(JAX_DIR):
        return {"enabled": True, "folder": Path(user).expanduser(), "set_by": JAX_DIR}
    return {"enabled": True, "folder": root() / machine_key(), "set_by": "lossjax"}


def _say_once(key: str, message: str, *args) -> None:
    if key not in _said:
        _said.add(key)
        log.warning(message, *args)


def _writable(folder: Path) -> str | None:
    """None if ``folder`` can be made and written to, else why not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        return e.strerror or type(e).__name__
    return None


def enable() -> Path | None:
    """Turns the persistent cache on for this process (before its first compile) and returns
    its folder; None where it is off or cannot be used. Leaves a folder the user gave JAX, and
    JAX's own thresholds for it, as they are."""
    import jax  # lazy: only a run that compiles needs it

    if not jax.config.jax_enable_compilation_cache:
        return None
    if given := jax.config.jax_compilation_cache_dir:
        return Path(given)
    folder = root() / machine_key()
    if problem := _writable(folder):
        _say_once("unwritable", "the compilation cache %s cannot be written (%s): compiling "
                  "without it; set %s to a folder you can write, or %s=false",
                  folder, problem, ENV_CACHE_DIR, JAX_ENABLE)
        return None
    jax.config.update("jax_compilation_cache_dir", os.fspath(folder))
    # Every program counts: a sweep's smallest ones (initialization) take about a second.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return folder


@contextlib.contextmanager
def quiet_errors():
    """JAX's warning for a cache entry it could not read or write (it then compiles, or goes
    on without storing) as one lossjax line per process; other warnings pass through."""
    with warnings.catch_warnings(record=True) as caught:
        yield
    for w in caught:
        if _JAX_CACHE_ERROR.search(str(w.message)):
            _say_once("entry", "the compilation cache has an entry it cannot use (%s): "
                      "compiled again; `lossjax cache --clear` empties the cache",
                      str(w.message).split(": ", 1)[-1][:200])
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno,
                                   source=w.source)


def size(folder: Path) -> tuple[int, int]:
    """(files, bytes) under ``folder``; (0, 0) where it does not exist."""
    files = total = 0
    for dirpath, _, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
                files += 1
    return files, total


def folders() -> list[Path]:
    """The cache folders lossjax made under :func:`root`, one per jaxlib and machine."""
    base = root()
    if not base.is_dir():
        return []
    return sorted(p for p in base.glob("jaxlib-*") if p.is_dir() and not p.is_symlink())


def clear() -> tuple[int, int]:
    """Removes every folder of :func:`folders` (a folder the user gave JAX is theirs to
    clear); returns the (files, bytes) removed."""
    files = total = 0
    for folder in folders():
        n, b = size(folder)
        shutil.rmtree(folder)
        files, total = files + n, total + b
    return files, total
