"""The results folder of one sweep: what is in it, and how it is written safely.

    RESULTS_DIR/
      config.yaml       the resolved config (every default filled in)
      env.json          versions, devices, precision, the data's checksums, the git state
                        of the code, and each start of the sweep (lossjax.provenance)
      epochs.csv        tidy table: one row per member and epoch (``pandas.read_csv`` it)
      summary.csv       per loss (and hidden / weight decay / init scale): the learning rate
                        chosen on validation accuracy, test accuracy mean ± 95% interval, ...
      status.json       {"complete": bool}: marks the folder as lossjax's (written first, never
                        removed); an unfinished sweep can be resumed. "written" lists the
                        files experiments/ scripts added (--overwrite removes those too)
      checkpoints/      per-group training state after the last finished epoch (removed when
                        the sweep completes)
      plots/, report.md written by ``lossjax.plots`` and ``lossjax.report`` from the tables

Every file is written to a temporary name and renamed into place, so a killed process leaves
either the old file or the new one, never half of one. While a sweep runs, ``.lock`` holds an
OS lock (``flock``) that dies with the process: a second sweep into the same folder stops at
once, and ``kill -9`` leaves no stale lock. A folder without ``status.json`` is not lossjax's:
nothing is ever written into it or deleted from it, ``--overwrite`` included; in one that is,
nothing is read, written or deleted through a symbolic link, and ``--overwrite`` removes only
what lossjax wrote (:data:`SWEEP_ENTRIES`, and the :data:`EXPERIMENT_ENTRIES` status.json lists).

``epochs.csv`` columns, per member and epoch: the member's swept values; ``train_loss`` (mean of
its own loss over the epoch's batches); ``train_acc`` (running accuracy over those batches, as in
Flax's MNIST example, not a second pass); ``val_acc``/``val_ce`` and ``test_acc``/``test_ce``
(accuracy and cross-entropy of softmax(logits), comparable across losses); ``wrong_frac`` (the
fraction of wrong-class logits whose gradient was negative, i.e. that a step pushed up, averaged
over batches: the quantity the exp-MSE argument is about); ``grad_norm`` (mean per-example
norm of d loss / d logits); ``diverged`` (true from the epoch the member's loss or parameters
went non-finite; its parameters stay frozen at the last good values, its training metrics are
NaN); ``wall_time`` (seconds since the sweep started, over every group of members, which run one
after another; time a stopped sweep spent dead before ``--resume`` is not counted; a measurement
rather than a result).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import math
import os
import re
import stat
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from lossjax.errors import ResultsError

COLUMNS = [
    "member", "loss", "hidden", "learning_rate", "weight_decay", "init_scale", "seed", "epoch",
    "train_loss", "train_acc", "val_acc", "val_ce", "test_acc", "test_ce", "wrong_frac",
    "grad_norm", "diverged", "wall_time",
]
GROUP_KEYS = ["loss", "hidden", "weight_decay", "init_scale"]

def ci95_halfwidth(values) -> float:
    """Half-width of the 95% Student-t interval of the mean (NaN for fewer than two values)."""
    from scipy import stats

    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return math.nan
    return float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))


# ---- atomic writes -----------------------------------------------------------------------

def _umask() -> int:
    # Read at each write (setting it back at once): files get the user's umask, where mkstemp
    # alone would make them 0600.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write) -> None:
    """Calls ``write(binary_file)`` on a temporary file beside ``path``, then renames it.

    An ``OSError`` (disk full, read-only folder, ...) becomes a one-line ``ResultsError``;
    the previous version of ``path``, if any, is left as it was.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise ResultsError(f"cannot write {path} ({e.strerror or e}); "
                               "its previous version, if any, is kept") from None
        raise


def write_text(path: Path, text: str) -> None:
    atomic_write(Path(path), lambda f: f.write(text.encode()))


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_table(path: Path, table: pd.DataFrame) -> None:
    atomic_write(Path(path), lambda f: table.to_csv(f, index=False))


# ---- the folder ----------------------------------------------------------------------------

#: What a sweep writes into its results folder. ``--overwrite`` removes these (inside
#: ``plots/``, ``checkpoints/`` and ``tensorboard/`` only the files lossjax names so) and the
#: files of :data:`EXPERIMENT_ENTRIES` that ``status.json`` lists: nothing else.
SWEEP_ENTRIES = ("status.json", "config.yaml", "env.json", "epochs.csv", "summary.csv",
                 "report.md", "plots", "checkpoints", "tensorboard")
#: What ``experiments/`` scripts may write into a results folder. Each records its names in
#: ``status.json`` (:func:`record_written`) before writing, so ``--overwrite`` removes a
#: ``causal.md`` the script wrote and keeps one of yours, which was never recorded.
EXPERIMENT_ENTRIES = ("causal.json", "causal.md", "causal_effects.md", "causal_effects.png",
                      "causal_effects.svg", "gradient_sign.json", "gradient_sign.md",
                      "gradient_sign.png", "gradient_sign.svg")
#: The figures ``lossjax.plots`` writes into ``plots/`` (kept equal to its ``PLOT_NAMES`` x
#: ``FORMATS`` by a test): the only files ``--overwrite`` removes there.
PLOT_FILES = tuple(f"{n}.{f}" for n in ("test_accuracy", "train_loss", "lr_sensitivity",
                                         "wrong_direction") for f in ("png", "svg"))
_SUBFOLDER_FILES = {
    "plots": lambda name: name in PLOT_FILES,
    "checkpoints": re.compile(r"group\d+(\.e\d+\.p\d+\.npz|\.json)").fullmatch,
    "tensorboard": lambda name: name.startswith("events.out.tfevents."),
}
LOCK = ".lock"

_FILE_FIX = "put back the file lossjax wrote there, or start the sweep over with --overwrite"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device")):
        if test(mode):
            return name
    return "not a regular file"


def read_regular(path: Path, fix: str = _FILE_FIX, limit: int = -1) -> bytes | None:
    """The bytes of a file in a results folder (its first ``limit``, if given), or None where
    there is none.

    Opened without following a symbolic link and without blocking, then read only if it is a
    regular file: a FIFO in a file's place would make a plain read wait forever, and a link
    would read (and trust) a file outside the folder. Anything else is refused in one line
    ending with ``fix``.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        what = ("is a symbolic link, which lossjax does not follow inside a results folder"
                if e.errno == errno.ELOOP else f"cannot be read ({e.strerror or e})")
        raise ResultsError(f"{path} {what}; {fix}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ResultsError(f"{path} is {_kind(mode)}, not a regular file; {fix}")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(limit)
    except OSError as e:
        raise ResultsError(f"{path} cannot be read ({e.strerror or e}); {fix}") from None
    finally:
        os.close(fd)


def check_path(out: Path) -> None:
    """Refuses a results path that no filesystem call could use (a name longer than the
    filesystem allows), in one line naming the part and the limit, before anything is made."""
    out = Path(os.path.abspath(out))
    base = next((p for p in (out, *out.parents) if os.path.lexists(p)), Path("/"))
    try:
        name_max = os.pathconf(base, "PC_NAME_MAX")
        path_max = os.pathconf(base, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    for part in out.parts:
        size = len(os.fsencode(part))
        if size > name_max:
            shown = part if len(part) <= 40 else f"{part[:20]}...{part[-12:]}"
            raise ResultsError(
                f"the results path {out} cannot be made: its part {shown!r} is {size} bytes, "
                f"longer than the {name_max} bytes this filesystem allows in a name; choose a "
                "shorter output.dir or name")
    size = len(os.fsencode(str(out)))
    if size >= path_max:
        raise ResultsError(f"the results path {out} cannot be made: it is {size} bytes, longer "
                           f"than the {path_max} bytes a path may have here; choose a shorter "
                           "output.dir or name")


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _link_error(path: Path) -> ResultsError:
    return ResultsError(f"{path} is a symbolic link; lossjax never reads, writes or deletes "
                        "through a link in a results folder: remove the link (its target is "
                        "left as it is) and rerun")


def _read_regular(path: Path, limit: int = -1) -> bytes | None:
    """:func:`read_regular`, but None (not an error) where ``path`` is a link or not a regular
    file: for the questions asked before a folder is known to be lossjax's."""
    try:
        return read_regular(path, limit=limit)
    except ResultsError:
        return None


def status(out: Path) -> dict | None:
    """``status.json`` as a dict, or None where the folder has none (it is not lossjax's), or
    where it is a link, not a regular file, or not lossjax's ``{"complete": bool, ...}``."""
    raw = _read_regular(Path(out) / "status.json")
    try:
        st = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return st if isinstance(st, dict) and isinstance(st.get("complete"), bool) else None


def recorded(st: dict | None) -> list[str]:
    """The experiment files a ``status.json`` says lossjax wrote (names outside
    :data:`EXPERIMENT_ENTRIES` are ignored: a hand-edited list never makes lossjax delete a
    file of yours)."""
    names = (st or {}).get("written")
    return sorted({n for n in names if n in EXPERIMENT_ENTRIES}) if isinstance(names, list) else []


def record_written(folder: Path, names) -> None:
    """Adds ``names`` (of :data:`EXPERIMENT_ENTRIES`) to ``status.json``'s list of files
    lossjax wrote into ``folder``; call it before writing them. Does nothing in a folder that
    is not lossjax's (no ``status.json``): there nothing is ever removed."""
    folder = Path(folder)
    st = status(folder)
    if st is None:
        return
    written = sorted(set(recorded(st)) | {n for n in names if n in EXPERIMENT_ENTRIES})
    if written != st.get("written"):
        write_json(folder / "status.json", {**st, "written": written})


def owned(out: Path) -> dict | None:
    """``status.json`` of a folder lossjax may write into, or None where the folder is empty.

    Raises ``ResultsError`` (one line) for any other folder: one with entries but no
    ``status.json``, or whose ``status.json`` is a link, not a regular file, or not lossjax's.
    Nothing in the folder is opened before this says it is lossjax's."""
    out = Path(out)
    path = out / "status.json"
    st = _lstat(path)
    if st is None:
        try:
            others = sorted(os.listdir(out))
        except OSError as e:
            raise _one_line_os_error("read", out, e) from None
        if not others:
            return None
        raise ResultsError(
            f"{out} is not a lossjax results folder (no status.json) and holds "
            f"{', '.join(others[:3])}{', ...' if len(others) > 3 else ''}; lossjax never "
            "writes into or deletes such a folder: choose another output.dir or name")
    if stat.S_ISLNK(st.st_mode):
        raise _link_error(path)
    found = status(out)
    if found is None:
        kind = "" if stat.S_ISREG(st.st_mode) else f", here {_kind(st.st_mode)}"
        raise ResultsError(
            f"{path} is not the status.json lossjax writes (a JSON file holding "
            f"'complete'{kind}), so {out} may not be lossjax's and is left as it is: remove or fix "
            "that entry if the folder is yours to replace (an unfinished sweep's holds "
            '{"complete": false}), or choose another output.dir or name')
    return found


def check_entries(out: Path) -> None:
    """Refuses (one line) a lossjax folder where one of lossjax's own names is a link, or a
    folder where a file belongs, or the other way round: lossjax writes only into what it
    made, never through a link."""
    for name in (*SWEEP_ENTRIES, *recorded(status(out)), LOCK):
        path = Path(out) / name
        st = _lstat(path)
        if st is None:
            continue
        if stat.S_ISLNK(st.st_mode):
            raise _link_error(path)
        folder = name in _SUBFOLDER_FILES
        if folder != stat.S_ISDIR(st.st_mode) or not (folder or stat.S_ISREG(st.st_mode)):
            kind = "a folder" if folder else "a regular file"
            found = "a file" if stat.S_ISREG(st.st_mode) else _kind(st.st_mode)
            raise ResultsError(f"{path} is {found}, not {kind}, which is what lossjax keeps "
                               "under that name: move it out of the results folder and rerun")


def require_own(out: Path) -> None:
    """For ``lossjax plot`` and ``lossjax report``: they write only into a folder a sweep
    made (its ``status.json``), and never through a link."""
    out = Path(out)
    if not out.is_dir():
        return  # analysis.load_results says what is wrong with it
    if _lstat(out / "status.json") is None:
        raise ResultsError(
            f"{out} is not a lossjax results folder (no status.json): lossjax writes report.md "
            "and plots/ only into a folder a sweep made; read it without writing with "
            "lossjax.report.render(lossjax.analysis.load_results(DIR))")
    owned(out)
    check_entries(out)


def is_complete(out: Path) -> bool:
    return bool((status(out) or {}).get("complete"))


def has_checkpoints(out: Path) -> bool:
    return any((out / "checkpoints").glob("group*.json"))


def has_rows(out: Path) -> bool:
    """Whether ``epochs.csv`` holds a row below its header."""
    raw = _read_regular(Path(out) / "epochs.csv", 1 << 16) or b""
    return len(raw.rstrip(b"\n").split(b"\n")) > 1


def _is_own_temporary(name: str, own) -> bool:
    # atomic_write's names: ".{name}.{random}.tmp"
    m = re.fullmatch(r"\.(.+)\.[^.]+\.tmp", name)
    return m is not None and own(m.group(1))


def _remove_own(path: Path, own=None) -> None:
    """Removes ``path`` if it is a file (or a link: never its target); a folder of
    ``_SUBFOLDER_FILES`` (or under one, with ``own``) loses lossjax's files only, and goes
    where that leaves it empty."""
    st = _lstat(path)
    if st is None:
        return
    if not stat.S_ISDIR(st.st_mode):
        path.unlink(missing_ok=True)
        return
    own = own or _SUBFOLDER_FILES.get(path.name)
    if own is None:
        return
    for entry in os.scandir(path):
        child = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            if path.name == "tensorboard":  # one folder per run, of event files
                _remove_own(child, own)
        elif own(entry.name) or _is_own_temporary(entry.name, own):
            child.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.rmdir()  # only if empty: a file of yours in it keeps it


class AlreadyComplete(Exception):  # noqa: N818 (an outcome, not an error)
    """``--resume`` on a finished sweep: nothing to do."""


def _one_line_os_error(what: str, path: Path, e: OSError) -> ResultsError:
    return ResultsError(f"cannot {what} {path} ({e.strerror or e}); choose another output.dir "
                        "with --set output.dir=...")


def _refuse_linked_path(out: Path) -> None:
    """--overwrite deletes: refused where any component of the path is a symbolic link (the
    files deleted would be reached through it); the message names the real path."""
    path = Path(os.path.abspath(out))
    for p in (path, *path.parents):
        if p.is_symlink():
            raise ResultsError(
                f"{p} is a symbolic link; --overwrite does not delete through links: give the "
                f"real folder's path, --set output.dir={os.path.realpath(path.parent)}")


class Claim:
    """The right to use a results folder, held by one process while its sweep runs.

    ``Claim(out, config_dict, resume=..., overwrite=...)`` creates ``out`` if needed, decides
    whether it is lossjax's (:func:`owned`; an empty folder is made lossjax's by writing its
    ``status.json`` first), takes its lock, and decides whether the sweep may use it; it raises
    ``ResultsError`` (one line) or :class:`AlreadyComplete`, having released the lock and
    removed what the claim created. ``resuming`` says whether training continues from
    checkpoints. Use it as a context manager: leaving the block releases the lock; leaving it
    with an exception before :meth:`start` also removes what the claim created.

    A resume on another CPU, or with other jax/jaxlib versions, than the sweep started with
    is refused (its remaining epochs would round otherwise than an uninterrupted run's),
    unless ``allow_other_machine``; ``machine_note`` then says what differs (None: nothing
    does, or nothing was compared).
    """

    def __init__(self, out: Path, config_dict: dict, *, resume: bool, overwrite: bool,
                 allow_other_machine: bool = False):
        self.out = out = Path(out)
        self.started = False
        self._fd = None
        self._wrote_status = False
        self.allow_other_machine = allow_other_machine
        self.machine_note = None
        for p in (out.parent, out):
            if p.exists() and not p.is_dir():
                raise ResultsError(f"{p} is a file, not a folder; choose another output.dir "
                                   "or name")
        if overwrite:
            _refuse_linked_path(out)
        # The folders this claim creates, deepest first: removed again if it fails.
        self._made = [p for p in (out, *out.parents) if not p.exists()]
        try:
            out.mkdir(parents=True)
        except FileExistsError:
            self._made = []
        except OSError as e:
            raise _one_line_os_error("create", out, e) from None
        try:
            self._lock()
            check_entries(out)
            self.resuming = self._decide(config_dict, resume, overwrite)
            self._clean_temporaries()
        except BaseException:
            self.release(remove=True)
            raise

    def _lock(self) -> None:
        path = self.out / LOCK
        for _ in range(100):
            if owned(self.out) is None:  # empty: lossjax's from its status.json on
                write_json(self.out / "status.json", {"complete": False})
                self._wrote_status = True
            fd = self._open_lock(path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = (os.read(fd, 32).decode(errors="replace").split() or ["?"])[0]
                os.close(fd)
                raise ResultsError(
                    f"{self.out} is in use by another lossjax sweep (pid {holder}); wait for it "
                    "to finish, or choose another output.dir or name") from None
            # The holder before us may have removed the file (and, had its claim failed, the
            # status.json it wrote) between our open and our lock: then we hold a lock on a
            # file nobody else will see, so start again.
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same and status(self.out) is not None:
                break
            os.close(fd)
        else:
            raise ResultsError(f"{self.out}: could not take its lock (other sweeps keep taking "
                               "it); choose another output.dir or name")
        os.ftruncate(fd, 0)  # a regular file of ours alone (_open_lock), in lossjax's folder
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def _open_lock(self, path: Path) -> int:
        """Opens (or creates) the lock without following a link; refuses a lock that is not a
        plain file of its own (a hard link to another file would be truncated with it)."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                         | os.O_CLOEXEC, 0o666)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise _link_error(path) from None
            if e.errno == errno.EISDIR:
                raise ResultsError(f"{path} is a folder, where lossjax keeps its lock file: "
                                   "move it out of the results folder and rerun") from None
            raise _one_line_os_error("write into", self.out, e) from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            os.close(fd)
            raise ResultsError(f"{path} is not a plain file of lossjax's (a hard link or a "
                               "special file); move it out of the results folder and rerun")
        return fd

    def mark(self, token: str) -> None:
        """Adds ``token`` to the lock file, for processes on other hosts to find: proof that
        they see this folder (see ``lossjax.distributed``)."""
        os.write(self._fd, f"{token}\n".encode())

    def _decide(self, config_dict: dict, resume: bool, overwrite: bool) -> bool:
        out = self.out
        st = owned(out)  # lossjax's, as _lock established
        if resume:
            if st["complete"]:
                raise AlreadyComplete(f"{out} holds a finished sweep; nothing to resume")
            saved = read_config(out)
            check_config_kept(out, saved)
            check_epochs_kept(out)
            if saved is not None and saved != config_dict:
                diff = diff_keys(saved, config_dict)
                raise ResultsError(
                    f"--resume: the config differs from the one {out} was started with "
                    f"(at {', '.join(diff[:5])}); resume with the same config and --set values")
            resuming = saved is not None and has_checkpoints(out)
            if resuming:
                self.machine_note = self._check_machine()
            return resuming
        if overwrite:
            return False
        if st["complete"]:
            raise ResultsError(
                f"{out} already holds a finished sweep; choose another output.dir or name, or "
                "pass --overwrite to replace it")
        if has_checkpoints(out):
            raise ResultsError(
                f"{out} holds an unfinished sweep; continue it with --resume, or pass "
                "--overwrite to start it over")
        if has_rows(out):  # finished epochs without a checkpoint: never wiped without asking
            raise ResultsError(
                f"{out}/epochs.csv holds rows of an unfinished sweep but there is no checkpoint "
                "to continue them from; put back the checkpoints lossjax wrote and --resume, or "
                "pass --overwrite to start it over")
        return False  # started, but no epoch finished: nothing to lose

    def _check_machine(self) -> str | None:
        """Refuses a resume on another machine than the start's (see the class docstring);
        returns what differs where that is allowed, or where it could not be compared."""
        from lossjax import provenance

        try:
            env = json.loads(read_regular(self.out / "env.json") or b"null")
        except (OSError, UnicodeDecodeError, ValueError):
            env = None
        if not isinstance(env, dict):  # the sweep starts the record again (sweep._provenance)
            return (f"{self.out}/env.json is missing or unreadable: the machine the sweep "
                    "started on is not known, so it was not compared with this one")
        now = provenance.machine_of({"cpu": provenance.cpu_record(),
                                     "versions": provenance.package_versions()})
        differs = provenance.compare_machines(provenance.machine_of(env), now)
        if differs is None:
            if provenance.machine_of(env)["cpu"] is None:
                return (f"{self.out} does not record the CPU it was started on (an older "
                        "lossjax): only the jax and jaxlib versions were compared")
            return None
        if not self.allow_other_machine:
            raise ResultsError(
                f"--resume: {self.out} was started on {differs[0]}; this is {differs[1]}: its "
                "remaining epochs would not reproduce an uninterrupted run bit for bit; rerun "
                "it here with --overwrite, or pass --allow-other-machine to continue anyway")
        return (f"--resume --allow-other-machine: {self.out} was started on {differs[0]} and "
                f"continues on {differs[1]}: its rows from here on are not bit-reproducible "
                "with an uninterrupted run")

    def _clean_temporaries(self) -> None:
        """Removes the temporaries of lossjax's own files, left by a process killed in the
        middle of an atomic write (a ``.notes.tmp`` of yours stays)."""
        names = {*SWEEP_ENTRIES, *EXPERIMENT_ENTRIES}
        for entry in os.scandir(self.out):
            if entry.is_file(follow_symlinks=False) and _is_own_temporary(entry.name,
                                                                         names.__contains__):
                Path(entry.path).unlink(missing_ok=True)
        for name in ("checkpoints", "plots"):
            folder, own = self.out / name, _SUBFOLDER_FILES[name]
            for entry in os.scandir(folder) if folder.is_dir() else ():
                if entry.is_file(follow_symlinks=False) and _is_own_temporary(entry.name, own):
                    Path(entry.path).unlink(missing_ok=True)

    def start(self, config_dict: dict, env: dict) -> None:
        """Unless resuming: clears what lossjax wrote here before (never anything else) and
        writes the new sweep's config and environment.

        ``status.json`` is never removed, only rewritten in place, first, to say "not
        complete" (still listing the experiment files to remove): a process killed at any
        moment of this leaves a folder that is recognisably lossjax's, that ``--overwrite``
        clears again and that no rerun mistakes for a finished sweep. The checkpoints go first
        of the rest, then the table, so that nothing left looks resumable."""
        if self.resuming:
            self.started = True
            return
        old = recorded(status(self.out))
        write_json(self.out / "status.json", {"complete": False, **({"written": old} if old
                                                                    else {})})
        self.started = True
        order = ("checkpoints", "epochs.csv", *SWEEP_ENTRIES, *old)
        for name in dict.fromkeys(order):
            if name != "status.json":
                try:
                    _remove_own(self.out / name)
                except OSError as e:
                    raise ResultsError(f"cannot remove {self.out / name} ({e.strerror or e}); "
                                       "fix that and rerun with --overwrite") from None
        write_json(self.out / "status.json", {"complete": False})
        write_text(self.out / "config.yaml", yaml.safe_dump(config_dict, sort_keys=False))
        write_json(self.out / "env.json", env)

    def finish(self) -> None:
        """Marks the sweep complete, then removes its checkpoints: a process killed between
        the two leaves a finished sweep (with garbage that ``--overwrite`` removes), never an
        unfinished-looking folder whose rerun would wipe complete results."""
        write_json(self.out / "status.json", {**(status(self.out) or {}), "complete": True})
        with contextlib.suppress(OSError):  # garbage from now on; --overwrite removes it
            _remove_own(self.out / "checkpoints")

    def release(self, remove: bool = False) -> None:
        """Releases the lock (and, with ``remove`` before :meth:`start`, removes what the
        claim created). Never raises: it runs while the error that ends a sweep is on its way
        out, and that error is the one to see; a lock file left behind is harmless (the lock
        dies with the process)."""
        if self._fd is not None:
            if remove and not self.started and self._wrote_status:
                with contextlib.suppress(OSError):  # ours: we wrote it into an empty folder
                    (self.out / "status.json").unlink()
            with contextlib.suppress(OSError):
                (self.out / LOCK).unlink(missing_ok=True)  # before closing: see _lock
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if remove and not self.started:
            for folder in self._made:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only if empty: never removes anything else

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.release(remove=exc_type is not None)


def read_config(out: Path) -> dict | None:
    """The saved config of a results folder; None where there is none yet."""
    path = out / "config.yaml"
    data = read_regular(path)
    if data is None:
        return None
    try:
        saved = yaml.safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        problem = " ".join(str(e).split())[:120]
        raise ResultsError(f"{path} is damaged ({problem}); the folder cannot be resumed: "
                           "start it over with --overwrite") from None
    if not isinstance(saved, dict):
        raise ResultsError(f"{path} is damaged (not a mapping); the folder cannot be resumed: "
                           "start it over with --overwrite")
    return saved


def diff_keys(a, b) -> list[str]:
    """The dotted key paths at which two configs (JSON-like values) differ, sorted; a list
    counts as one value."""
    def walk(a, b, prefix):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in set(a) | set(b):
                yield from walk(a.get(k), b.get(k), f"{prefix}{k}.")
        elif a != b:
            yield prefix.rstrip(".") or "the top level"

    return sorted(walk(a, b, ""))


def env_record(devices, data_meta: dict, invocation: dict | None = None) -> dict:
    """What ``env.json`` holds: see :func:`lossjax.provenance.record`, which this calls."""
    from lossjax import provenance

    return provenance.record(devices, data_meta, invocation)


# ---- checkpoints ---------------------------------------------------------------------------
#
# A group's checkpoint after epoch E is one file per process, each holding the members whose
# state lives on that process's devices (``group3.e7.p0.npz``: member positions and state
# leaves), and a manifest naming them (``group3.json``), written last by process 0 once every
# process has saved. No process gathers another's state, a resume may use any number of
# processes and devices, and a process killed at any moment leaves the previous manifest and
# its files intact.


def _shard_name(group: int, epoch: int, process: int) -> str:
    return f"group{group}.e{epoch}.p{process}.npz"


def save_shard(out: Path, group: int, epoch: int, process: int, positions, leaves) -> str:
    """Writes one process's share of a group's state; returns the file's name. The shard
    carries its group and epoch inside, so a manifest edited to name another epoch, or a
    shard renamed or copied from another group, is caught on resume."""
    name = _shard_name(group, epoch, process)
    arrays = {f"leaf{i}": a for i, a in enumerate(leaves)}
    atomic_write(out / "checkpoints" / name,
                 lambda f: np.savez(f, positions=np.asarray(positions), group=np.int64(group),
                                    epoch=np.int64(epoch), **arrays))
    return name


def commit_checkpoint(out: Path, group: int, epoch: int, processes: int,
                      rows: str | None = None) -> None:
    """Makes epoch ``epoch``'s shards the group's checkpoint (call once every process has saved
    its own), then removes the group's older shards. ``rows`` is :func:`rows_digest` of the
    table as just written: what the checkpoint stands behind, checked on resume."""
    files = [_shard_name(group, epoch, p) for p in range(processes)]
    folder = out / "checkpoints"
    manifest = {"epoch": epoch, "files": files}
    if rows is not None:
        manifest["rows"] = rows
    write_json(folder / f"group{group}.json", manifest)
    for old in folder.glob(f"group{group}.e*.npz"):
        if old.name not in files:
            old.unlink(missing_ok=True)


def _damaged(path: Path, why: str) -> ResultsError:
    return ResultsError(f"{path} {why}; the folder cannot be resumed: put back the checkpoint "
                        "lossjax wrote, or start the sweep over with --overwrite")


def read_manifest(out: Path, group: int) -> dict | None:
    """A group's checkpoint manifest, checked for what it must be (an epoch of at least 1, its
    own shards' names for that epoch, one per process), or None where the group has none."""
    path = out / "checkpoints" / f"group{group}.json"
    data = read_regular(path)
    if data is None:
        return None
    try:
        manifest = json.loads(data)
        epoch, files = manifest["epoch"], manifest["files"]
    except (ValueError, KeyError, TypeError) as e:
        raise _damaged(path, f"is damaged ({type(e).__name__})") from None
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
        raise _damaged(path, f"is damaged (epoch {epoch!r})")
    expected = [_shard_name(group, epoch, p) for p in range(len(files) if
                                                             isinstance(files, list) else 0)]
    if not expected or files != expected:
        raise _damaged(path, f"says epoch {epoch} but names the files {files!r}, which are not "
                             f"that epoch's ({_shard_name(group, epoch, 0)}, ...)")
    rows = manifest.get("rows")
    if rows is not None and not isinstance(rows, str):
        raise _damaged(path, "is damaged (rows)")
    return {"epoch": epoch, "files": files, "rows": rows, "path": path}


def _read_shard(path: Path, group: int, epoch: int, n_members: int):
    """(positions, leaves) of one shard, checked against the manifest that names it."""
    data = read_regular(path)
    if data is None:
        raise _damaged(path, "is missing")
    try:
        with np.load(io.BytesIO(data)) as z:
            positions = z["positions"]
            inside = {k: int(z[k]) for k in ("group", "epoch") if k in z.files}
            leaves = [z[f"leaf{i}"] for i in range(sum(k.startswith("leaf") for k in z.files))]
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
        raise _damaged(path, f"is damaged ({type(e).__name__})") from None
    if inside.get("group", group) != group or inside.get("epoch", epoch) != epoch:
        raise _damaged(path, f"holds group {inside.get('group', group)} after epoch "
                             f"{inside.get('epoch', epoch)}, but its manifest says group {group} "
                             f"after epoch {epoch}")
    if (positions.ndim != 1 or not np.issubdtype(positions.dtype, np.integer) or not leaves
            or ((positions < 0) | (positions >= n_members)).any()
            or any(a.shape[:1] != positions.shape for a in leaves)):
        raise _damaged(path, f"does not match this sweep's {n_members} members")
    return positions, leaves


def load_checkpoint(out: Path, group: int, n_members: int):
    """(epochs finished, leaves with one row per member), or None where the
    group never finished an epoch."""
    manifest = read_manifest(out, group)
    if manifest is None:
        return None
    epoch, path = manifest["epoch"], manifest["path"]
    leaves, seen = None, np.zeros(n_members, int)
    for name in manifest["files"]:
        positions, parts = _read_shard(out / "checkpoints" / name, group, epoch, n_members)
        if leaves is None:
            leaves = [np.zeros((n_members, *a.shape[1:]), a.dtype) for a in parts]
        try:
            for whole, part in zip(leaves, parts, strict=True):
                whole[positions] = part
        except ValueError:
            raise _damaged(path, "names shards that do not fit together") from None
        np.add.at(seen, positions, 1)
    if not (seen == 1).all():
        raise _damaged(path, "names shards that do not hold every member once")
    return epoch, leaves


def checkpoint_epoch(out: Path, group: int) -> int | None:
    """The epochs a group's checkpoint holds (0: it has none), from its manifest alone, for
    env.json to say where a resume took over; None where the manifest is unreadable (then
    :func:`load_checkpoint` refuses the folder, with the reason)."""
    try:
        manifest = read_manifest(out, group)
    except ResultsError:
        return None
    return 0 if manifest is None else manifest["epoch"]


#: Metrics the engine computes in float32. They are kept as float32 in memory and after
#: reading back, so a resumed sweep writes the same text as an uninterrupted one.
FLOAT32_COLUMNS = ("train_loss", "train_acc", "val_acc", "val_ce", "test_acc", "test_ce",
                   "wrong_frac", "grad_norm")


def normalize(table: pd.DataFrame) -> pd.DataFrame:
    return table.astype({c: np.float32 for c in FLOAT32_COLUMNS if c in table.columns})


def _table_damaged(path: Path, why: str) -> ResultsError:
    return ResultsError(f"{path} {why}; the folder cannot be resumed: put back the epochs.csv "
                        "lossjax wrote, or start the sweep over with --overwrite")


def read_table(out: Path) -> pd.DataFrame:
    path = out / "epochs.csv"
    data = read_regular(path)
    if data is None:
        return pd.DataFrame(columns=COLUMNS)
    try:
        table = pd.read_csv(io.BytesIO(data), dtype={"hidden": str, "loss": str})
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as e:
        raise _table_damaged(path, f"is damaged ({' '.join(str(e).split())[:120]})") from None
    if list(table.columns) != COLUMNS:
        raise _table_damaged(path, "does not have lossjax's columns")
    if table.empty:
        return pd.DataFrame(columns=COLUMNS)
    if not data.endswith(b"\n"):
        raise _table_damaged(path, "ends mid-row (it was cut short)")
    for c in ("member", "seed", "epoch"):
        if not pd.api.types.is_integer_dtype(table[c]):
            raise _table_damaged(path, f"has a {c} that is not a whole number")
    if table["diverged"].dtype != bool:
        raise _table_damaged(path, "has a diverged value that is neither True nor False")
    try:
        return normalize(table.astype({c: float for c in (
            "learning_rate", "weight_decay", "init_scale", "wall_time")}))
    except (ValueError, TypeError):
        raise _table_damaged(path, "has a value that is not a number where one belongs") from None


# ---- resuming: do the checkpoints and the table agree? ------------------------------------


def member_keys(members) -> pd.DataFrame:
    """The columns that name each member of a group (``engine.Member``s), as its rows hold them."""
    return pd.DataFrame({
        "member": [m.index for m in members],
        "loss": [m.loss for m in members],
        "hidden": ["-".join(map(str, m.hidden)) or "linear" for m in members],
        "learning_rate": [m.learning_rate for m in members],
        "weight_decay": [m.weight_decay for m in members],
        "init_scale": [m.init_scale for m in members],
        "seed": [m.seed for m in members],
    })


def rows_digest(table: pd.DataFrame) -> str:
    """A checksum of a table's values (not its text: another pandas may print a number
    otherwise), as read back from epochs.csv they give the same checksum again. A manifest
    records it, so that rows edited, swapped or lost after the sweep wrote them are refused on
    resume rather than carried into the final table."""
    h = hashlib.sha256()
    for c in COLUMNS:
        col = table[c]
        if c in ("loss", "hidden"):
            data = "\x1f".join(col.astype(str)).encode()
        elif c == "diverged":
            data = col.astype(bool).to_numpy(np.uint8).tobytes()
        elif c in ("member", "seed", "epoch"):
            data = col.to_numpy(np.int64).tobytes()
        else:
            a = col.to_numpy(np.float32 if c in FLOAT32_COLUMNS else np.float64)
            data = np.where(np.isnan(a), np.nan, a).astype(a.dtype).tobytes()  # one NaN
        h.update(f"{c}:{len(data)}:".encode() + data)
    return h.hexdigest()


def check_config_kept(out: Path, saved: dict | None) -> None:
    """A resume needs the config its checkpoints were made with: without config.yaml they
    cannot be matched to this one, and starting over would discard them unasked."""
    if saved is None and has_checkpoints(out):
        raise ResultsError(
            f"--resume: {out}/config.yaml is missing, so its checkpoints cannot be matched to "
            "this config; put back the config.yaml lossjax wrote there, or start the sweep over "
            "with --overwrite")


def check_epochs_kept(out: Path) -> None:
    """An unfinished folder starts over only where no epoch finished. Rows of a second epoch
    with no checkpoint behind them mean the checkpoints were lost: starting over would discard
    those rows unasked."""
    if has_checkpoints(out) or not has_rows(out):
        return
    table = read_table(out)
    if len(table) and (table["epoch"] > 1).any():
        raise ResultsError(
            f"{out}/epochs.csv holds {int(table['epoch'].max())} epochs, but {out}/checkpoints "
            "has nothing to continue them from; put back the checkpoints lossjax wrote, or "
            "start the sweep over with --overwrite")


def check_resumable(out: Path, groups, epochs: int) -> None:
    """Refuses, in one line and before anything trains, a folder whose checkpoints and
    epochs.csv do not agree: each group's manifest, its shards and the table must say the same
    epoch E; every member has exactly the rows of epochs 1..E, in the order the sweep wrote
    them, with its own key values, the values only a sweep writes (finite keys and times, a
    loss NaN exactly where the member diverged, diverged for good once it did), and the
    checksum its manifest records. Otherwise the resume would train for minutes and then fail,
    or finish a table that mixes numbers the checkpoints never stood behind."""
    path = out / "epochs.csv"
    table = read_table(out)
    done, last = [], None
    for gid, members in enumerate(groups):
        manifest = read_manifest(out, gid)
        e = manifest["epoch"] if manifest else 0
        if e > epochs:
            raise _damaged(manifest["path"], f"says epoch {e} of a {epochs}-epoch sweep")
        if manifest and any(d < epochs for d in done):  # groups run one after another
            first = next(g for g, d in enumerate(done) if d < epochs)
            raise _damaged(manifest["path"], f"exists though group {first} before it is "
                                             "unfinished")
        if manifest:
            for name in manifest["files"]:
                _read_shard(out / "checkpoints" / name, gid, e, len(members))
            last = (gid, manifest)
        done.append(e)
    expected = _expected_rows(groups, done)
    _check_order(path, table, expected, done, groups, epochs)
    kept = table.iloc[:len(expected)]
    _check_values(path, kept, groups)
    if last is not None and last[1]["rows"] is not None and rows_digest(kept) != last[1]["rows"]:
        raise _table_damaged(path, f"was changed after the sweep wrote it (its rows do not match "
                                   f"the checksum {last[1]['path'].name} records)")


def _expected_rows(groups, done: list[int]) -> pd.DataFrame:
    """(member, epoch) of the rows the checkpoints stand behind, in the order written: group by
    group, epoch by epoch, members in order."""
    member, epoch = [], []
    for members, e in zip(groups, done, strict=True):
        for k in range(1, e + 1):
            member += [m.index for m in members]
            epoch += [k] * len(members)
    return pd.DataFrame({"member": member, "epoch": epoch}, dtype=np.int64)


def _check_order(path: Path, table: pd.DataFrame, expected: pd.DataFrame, done, groups,
                 epochs: int) -> None:
    """The table's rows are the expected ones, in order, and then at most the next epoch of the
    group in progress (written just before its checkpoint, by a process killed between)."""
    n = min(len(table), len(expected))
    got = table[["member", "epoch"]].to_numpy(np.int64)
    want = expected.to_numpy(np.int64)
    bad = np.flatnonzero((got[:n] != want[:n]).any(axis=1))
    if len(bad):
        i = int(bad[0])
        raise _table_damaged(path, f"line {i + 2} holds member {got[i, 0]} epoch {got[i, 1]} "
                                   f"where member {want[i, 0]} epoch {want[i, 1]} belongs (rows "
                                   "missing, repeated, reordered or edited)")
    if len(table) < len(expected):
        i = len(table)
        gid = next(g for g, ms in enumerate(groups) if any(m.index == want[i, 0] for m in ms))
        raise _table_damaged(path, f"has {len(table)} of the {len(expected)} rows the checkpoints "
                                   f"stand behind (from member {want[i, 0]} epoch {want[i, 1]} "
                                   f"on; checkpoints/group{gid}.json is after epoch {done[gid]})")
    extra = got[len(expected):]
    # The group in progress is the first one short of the last epoch.
    nxt = next((g for g in range(len(groups)) if done[g] < epochs), None)
    allowed = (np.zeros((0, 2), np.int64) if nxt is None else
               np.array([[m.index, done[nxt] + 1] for m in groups[nxt]], np.int64))
    if len(extra) and not (len(extra) == len(allowed) and (extra == allowed).all()):
        i = len(expected)
        raise _table_damaged(path, f"line {i + 2} holds member {got[i, 0]} epoch {got[i, 1]}, "
                                   "beyond the epochs the checkpoints stand behind (was a "
                                   "checkpoint manifest set back to an earlier epoch?)")


def _check_values(path: Path, kept: pd.DataFrame, groups) -> None:
    """The kept rows hold values only a sweep writes: each member's own keys, finite times, a
    training loss that is NaN exactly where the member diverged, diverged for good once it
    did, and fractions within [0, 1]."""
    keys = pd.concat([member_keys(ms) for ms in groups], ignore_index=True).set_index("member")
    want = keys.loc[kept["member"].to_numpy()].reset_index(drop=True)
    got = kept.reset_index(drop=True)

    def refuse(mask, what: str) -> None:
        if mask.any():
            i = int(np.flatnonzero(np.asarray(mask))[0])
            raise _table_damaged(path, f"line {i + 2} (member {got['member'][i]}, epoch "
                                       f"{got['epoch'][i]}) {what}")

    for c in keys.columns:
        if pd.api.types.is_numeric_dtype(want[c]):
            same = got[c].to_numpy(float) == want[c].to_numpy(float)
        else:
            same = got[c].astype(str).to_numpy() == want[c].astype(str).to_numpy()
        refuse(~same, f"has a {c} other than the member's own ({want[c][int(np.argmin(same))]})")
    refuse(~np.isfinite(got["wall_time"].to_numpy(float)) | (got["wall_time"] < 0),
           "has a wall_time that is not a finite number of seconds")
    diverged = got["diverged"].to_numpy(bool)
    loss = got["train_loss"].to_numpy(float)
    refuse(~diverged & ~np.isfinite(loss), "has a non-finite train_loss, yet did not diverge")
    refuse(diverged & ~np.isnan(loss), "diverged, yet has a train_loss")
    refuse(~diverged & ~got["wrong_frac"].between(0, 1).to_numpy(),
           "has a wrong_frac outside [0, 1]")
    for c in ("train_acc", "val_acc", "test_acc"):
        refuse(~(got[c].isna() | got[c].between(0, 1)).to_numpy(), f"has a {c} outside [0, 1]")
    was = got.groupby("member")["diverged"].cummax().to_numpy(bool)
    refuse(was & ~diverged, "has not diverged after an epoch where it had")


# ---- summary -------------------------------------------------------------------------------


#: The summary.csv columns that say how clearly a group's rate was chosen (:func:`rate_choice`);
#: they follow ``lr_at_grid_edge``. Folders written before them lack them: ``lossjax.analysis``
#: computes them from epochs.csv with :func:`rate_choice` then.
RATE_CHOICE_COLUMNS = ("runner_up_lr", "val_gap_mean", "val_gap_ci95", "rate_tied",
                       "rate_choice", "tied_lrs")
#: ``rate_choice`` values: decided against the runner-up, tied with it, undecidable from fewer
#: than two paired seeds, nothing to choose between, and nothing chosen (every member diverged).
RATE_CHOICES = ("decided", "tied", "one seed", "one rate", "none")


def _paired_gap(score: pd.Series, last: pd.DataFrame, a: float, b: float) -> tuple:
    """(mean, 95% half-width, n) over seeds of score at rate ``a`` minus score at rate ``b``,
    over the seeds present at both: a seed's members at two rates share initial weights and
    batches, so pairing cancels what the seed alone decides."""
    rates = last["learning_rate"].to_numpy(float)
    per_seed = []
    for r in (a, b):
        at = np.isclose(rates, r, rtol=1e-6, atol=0.0)
        per_seed.append(score[at].astype(float).groupby(last["seed"][at]).mean())
    d = (per_seed[0] - per_seed[1]).dropna()  # aligned on seed: only seeds at both rates
    d = d[np.isfinite(d.to_numpy())]
    return (float(d.mean()) if len(d) else math.nan), ci95_halfwidth(d), len(d)


def _undecided(mean: float, half: float, n: int) -> bool:
    # Fewer than two pairs give no interval at all: never decided. Otherwise the interval
    # includes 0 (a zero-width one only at exactly 0).
    return n < 2 or abs(mean) <= half


def _rate_text(rate: float) -> str:
    return repr(float(rate))  # the shortest text that reads back as the same float


def rate_choice(last: pd.DataFrame, lr: float) -> dict:
    """How clearly ``lr`` was chosen among a group's rates: the columns of
    :data:`RATE_CHOICE_COLUMNS`, from the group's members at their last epoch (``last``).

    Each member scores its final validation accuracy, 0 where it diverged, as in the choice;
    test data play no part. For another rate R, the gap is paired by seed: per seed present at
    both rates, the chosen member's score minus R's member's, then the mean over seeds and its
    95% Student-t half-width (:func:`ci95_halfwidth`). The runner-up is the rate with the
    second best mean score, and ``val_gap_*`` is the gap to it. A rate is tied with ``lr`` when
    its gap's interval includes 0 (|mean| <= half-width) or fewer than two seeds pair (never
    decided). ``tied_lrs``: every tied rate, ascending and ';'-joined ('' for none); it holds
    the runner-up whenever the runner-up is tied, and may hold a rate whose scores scatter
    more than the runner-up's even when the runner-up is clearly behind. ``rate_tied`` is
    True when any rate is tied; ``rate_choice`` says why: 'tied', 'one seed' (a single paired
    seed: undecidable), or else 'decided', 'one rate' (nothing to compare: ``rate_tied``
    False) and 'none' (``lr`` NaN or every member diverged).
    """
    out = {"runner_up_lr": math.nan, "val_gap_mean": math.nan, "val_gap_ci95": math.nan,
           "rate_tied": False, "rate_choice": "none", "tied_lrs": ""}
    diverged = last["diverged"].astype(bool)
    if diverged.all() or not math.isfinite(lr):
        return out
    score = last["val_acc"].where(~diverged, 0.0)
    means = score.groupby(last["learning_rate"].astype(float)).mean().dropna()
    others = means[~np.isclose(means.index.to_numpy(float), lr, rtol=1e-6, atol=0.0)]
    if others.empty:
        return {**out, "rate_choice": "one rate"}
    gaps = {float(r): _paired_gap(score, last, lr, float(r)) for r in others.index}
    runner = float(others.idxmax())
    mean, half, n = gaps[runner]
    tied_with = [r for r in sorted(gaps) if _undecided(*gaps[r])]
    return {
        "runner_up_lr": runner, "val_gap_mean": mean, "val_gap_ci95": half,
        "rate_tied": bool(tied_with),
        "rate_choice": "one seed" if n < 2 else "tied" if tied_with else "decided",
        "tied_lrs": ";".join(_rate_text(r) for r in tied_with),
    }


def tied_rates(text) -> tuple[float, ...]:
    """The rates of a ``tied_lrs`` cell ('' or NaN, as pandas reads an empty cell: none)."""
    if not isinstance(text, str) or not text.strip():
        return ()
    return tuple(float(v) for v in text.split(";"))


def summarize(table: pd.DataFrame, target: float) -> pd.DataFrame:
    """Per (loss, hidden, weight decay, init scale): the learning rate with the best mean final
    validation accuracy over seeds, and what it gives.

    A member that diverged scores 0 in that choice (its frozen accuracy would flatter a rate
    that blows up); test data play no part in it. Reported at the chosen rate: validation and
    test accuracy mean, the 95% t-interval half-width of test accuracy over seeds, the mean
    number of epochs to reach ``target`` test accuracy over the seeds that reached it, and how
    many diverged (at that rate, and over the whole grid).

    A group whose every member diverged has no rate to choose: its rate, accuracies and epochs
    to target are NaN (those of weights frozen early, often the initial ones, are no result),
    it reached the target 0 times, and all its seeds count as diverged at the rate.

    How clearly the rate was chosen (:data:`RATE_CHOICE_COLUMNS`, see :func:`rate_choice`): a
    chosen rate is an estimate from a few seeds, and with three of them the best mean is often
    a tie with the next. So the choice is set against the runner-up (the rate with the second
    best mean score, by the same rule) and every other rate, paired by seed.
    """
    last = table.loc[table.groupby("member")["epoch"].idxmax()]
    rows = []
    for key, g in last.groupby(GROUP_KEYS, sort=False):
        diverged = g["diverged"].astype(bool)
        n_seeds = g["seed"].nunique()
        row = {
            **dict(zip(GROUP_KEYS, key, strict=True)),
            "learning_rate": math.nan,
            "lr_at_grid_edge": False,
            **rate_choice(g, math.nan),
            "n_seeds": n_seeds,
            "val_acc_mean": math.nan,
            "test_acc_mean": math.nan,
            "test_acc_ci95": math.nan,
            "epochs_to_target_mean": math.nan,
            "reached_target": 0,
            "diverged_at_lr": n_seeds,
            "diverged": int(diverged.sum()),
        }
        if diverged.all():
            rows.append(row)
            continue
        score = g["val_acc"].where(~diverged, 0.0)
        lr = float(score.groupby(g["learning_rate"]).mean().idxmax())
        lrs = sorted(g["learning_rate"].unique())
        chosen = g[g["learning_rate"] == lr]
        # Each chosen member's first epoch at or above the target; NaN where it never got there.
        hits = table[table["member"].isin(chosen["member"]) & (table["test_acc"] >= target)]
        reach = hits.groupby("member")["epoch"].min().reindex(chosen["member"]).to_numpy(float)
        row.update({
            "learning_rate": lr,
            "lr_at_grid_edge": len(lrs) > 1 and lr in (lrs[0], lrs[-1]),
            **rate_choice(g, lr),
            "n_seeds": len(chosen),
            "val_acc_mean": chosen["val_acc"].mean(),
            "test_acc_mean": chosen["test_acc"].mean(),
            "test_acc_ci95": ci95_halfwidth(chosen["test_acc"]),
            "epochs_to_target_mean": np.nanmean(reach) if np.isfinite(reach).any() else math.nan,
            "reached_target": int(np.isfinite(reach).sum()),
            "diverged_at_lr": int(chosen["diverged"].astype(bool).sum()),
        })
        rows.append(row)
    # Means of float32 metrics, written as float32 (float64 text would add only noise digits).
    return pd.DataFrame(rows).astype({"val_acc_mean": np.float32, "test_acc_mean": np.float32,
                                      "val_gap_mean": np.float32})
