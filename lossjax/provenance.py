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
- ``model``: the model as the sweep started (``kind``, the CNN's ``channels``, one example's
  ``input_shape``, ``parameters`` per member for each hidden-size list) and, for
  ``model.kind: 'module:Class'``, ``module``: the user's source ``file`` and its ``sha256``.
- ``cpu``: the host CPU (:func:`lossjax.machine.cpu_record`), at the start and in each resume.
  XLA's CPU kernels round differently on another CPU model or instruction set, so a resume
  compares it, and the jax/jaxlib versions, with the start's
  (:func:`lossjax.machine.compare_machines`) before it trains. A resume also records
  ``resumed_after_epochs`` (per group, the epochs its checkpoint held) and, where it was let
  run on another machine, ``other_machine``: where the rows stop being bit-exact.

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

from lossjax import machine

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
        "cpu": machine.cpu_record(),
    }
    return env


def model_module(kind: str) -> dict:
    """``env.json``'s ``model.module``: a user's model class (``'module:pkg.file:Class'``, already
    imported by the pre-flight check), its source file and the file's sha256 (None where the
    module has no file of its own)."""
    import sys

    module = sys.modules.get(kind.removeprefix("module:").partition(":")[0])
    path = getattr(module, "__file__", None)
    try:
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None
    except OSError:
        digest = None
    return {"kind": kind, "file": path, "sha256": digest}


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
              "versions": package_versions(), "cpu": machine.cpu_record()}
    if devices is not None:
        resume.update(device_record(devices))
    if resumed_after_epochs is not None:
        resume.update(resumed_after_epochs=list(resumed_after_epochs), epochs=epochs)
    if differs := machine.compare_machines(machine.machine_of(env), machine.machine_of(resume)):
        resume["other_machine"] = f"started on {differs[0]}; resumed on {differs[1]}"
    env["resumes"] = [*env.get("resumes", []), resume]
    return env


def script_record(command: str) -> dict:
    """What made an experiment script's output (a script that writes no ``env.json``): the
    ``command``, the lossjax commit (:func:`git_record`), package versions, the CPU."""
    return {"command": command, "at": _now(), "git": git_record(),
            "versions": package_versions(), "cpu": machine.cpu_record()}


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


__all__ = ["MAX_PATHS", "PACKAGES", "add_resume", "device_record", "git_record", "git_state",
           "package_versions", "record"]
