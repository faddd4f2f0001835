"""The results folder's protocol: whose it is, how it is written, and the claim a sweep holds.

    RESULTS_DIR/
      config.yaml       the resolved config (every default filled in)
      env.json          versions, devices, precision, the data's checksums, the git state
                        of the code, and each start of the sweep (lossjax.provenance)
      epochs.csv        tidy table: one row per member and epoch (``pandas.read_csv`` it)
      summary.csv       per loss (and hidden / weight decay / init scale): the learning rate
                        chosen on validation accuracy, test accuracy mean ± 95% interval, ...
      status.json       {"complete": bool}: marks the folder as lossjax's (written first, never
                        removed); an unfinished sweep can be resumed. "written" lists the
                        files only some sweeps write (stops.csv, added.csv, tensorboard/)
                        and those experiments/ scripts added (--overwrite removes those too);
                        "format" the tables' format (``tables.FORMAT``; absent: 1)
      checkpoints/      per-group training state after the last finished epoch (removed when
                        the sweep completes)
      plots/, report.md written by ``lossjax.plots`` and ``lossjax.report`` from the tables

Every file is written to a temporary name and renamed into place, so a killed process leaves
either the old file or the new one, never half of one. While a sweep runs, ``.lock`` holds an
OS lock (``flock``) that dies with the process: a second sweep into the same folder stops at
once, and ``kill -9`` leaves no stale lock. A folder without ``status.json`` is not lossjax's:
nothing is ever written into it or deleted from it, ``--overwrite`` included; in one that is,
nothing is read, written or deleted through a symbolic link, and ``--overwrite`` removes only
what lossjax wrote (:data:`SWEEP_ENTRIES`, of them :data:`SWEEP_RECORDED` and the
:data:`EXPERIMENT_ENTRIES` only where status.json lists them).

The files' columns and readers are ``lossjax.tables``'s, the checkpoints ``lossjax.checkpoint``'s.
(Over 450 lines: the claim and the ownership rules it enforces are one protocol, read together.)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import stat
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from lossjax import machine, provenance
from lossjax.errors import ResultsError
from lossjax.tables import (
    FORMAT,
    has_rows,
    kind_of,
    read_config,
    read_env,
    read_epochs,
    read_if_regular,
)

# ---- atomic writes -----------------------------------------------------------------------

#: In every temporary's name (``.{name}.lossjax-{8 random}.tmp``): only files named exactly so
#: are lossjax's to clean up; a ``.epochs.csv.mybackup.tmp`` of yours is not.
TMP_TAG = "lossjax-"


def _umask() -> int:
    # Read at each write (setting it back at once): files get the user's umask, where mkstemp
    # alone would make them 0600.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write, *, replace: bool = True) -> None:
    """Calls ``write(binary_file)`` on a temporary file beside ``path``, then renames it
    (``replace=False``: links it, raising ``FileExistsError`` where ``path`` exists).

    Any other ``OSError`` (disk full, read-only folder, ...) becomes a one-line
    ``ResultsError``; the previous version of ``path``, if any, is left as it was.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{TMP_TAG}",
                                   suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
            Path(tmp).unlink()
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, FileExistsError):
            raise ResultsError(f"cannot write {path} ({e.strerror or e}); "
                               "its previous version, if any, is kept") from None
        raise


def write_text(path: Path, text: str, *, replace: bool = True) -> None:
    atomic_write(Path(path), lambda f: f.write(text.encode()), replace=replace)


def write_json(path: Path, obj, *, replace: bool = True) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n",
               replace=replace)


def write_table(path: Path, table: pd.DataFrame) -> None:
    atomic_write(Path(path), lambda f: table.to_csv(f, index=False))


# ---- the folder ----------------------------------------------------------------------------

#: What a sweep writes into its results folder. ``--overwrite`` removes these (inside
#: ``plots/``, ``checkpoints/`` and ``tensorboard/`` only the files lossjax names so) and the
#: files of :data:`EXPERIMENT_ENTRIES` that ``status.json`` lists: nothing else.
SWEEP_ENTRIES = ("status.json", "config.yaml", "env.json", "epochs.csv", "summary.csv",
                 "final.csv", "stops.csv", "added.csv", "report.md", "plots", "checkpoints",
                 "tensorboard")
#: What only some sweeps write (a race, a later stage, ``output.tensorboard``): recorded in
#: ``status.json`` before it is written, as :data:`EXPERIMENT_ENTRIES` are, so that
#: ``--overwrite`` of a grid sweep keeps a ``stops.csv`` of yours.
SWEEP_RECORDED = ("stops.csv", "added.csv", "tensorboard")
#: What ``experiments/`` scripts may write into a results folder. Each records its names in
#: ``status.json`` (:func:`record_written`) before writing, so ``--overwrite`` removes a
#: ``causal.md`` the script wrote and keeps one of yours, which was never recorded.
EXPERIMENT_ENTRIES = ("causal.json", "causal.md", "causal_effects.md", "causal_effects.png",
                      "causal_effects.svg", "gradient_sign.json", "gradient_sign.md",
                      "gradient_sign.png", "gradient_sign.svg", "search_replay.csv",
                      "search_replay.md", "paired_difference.png", "paired_difference.svg",
                      "local_step.json", "local_step.md", "local_step.png", "local_step.svg")
#: The figures ``lossjax.plots`` writes into ``plots/`` (kept equal to its ``PLOT_NAMES`` and
#: ``DATA_PLOTS`` x ``FORMATS`` by a test): the only files ``--overwrite`` removes there.
PLOT_FILES = tuple(f"{n}.{f}" for n in ("test_accuracy", "test_error", "train_loss",
                                         "lr_sensitivity", "wrong_direction", "reliability")
                   for f in ("png", "svg"))
_SUBFOLDER_FILES = {
    "plots": lambda name: name in PLOT_FILES,
    "checkpoints": re.compile(r"group\d+(\.e\d+\.p\d+\.npz|\.json)").fullmatch,
    # lossjax.tensorboard's names: TensorBoard's, with the process and a counter
    "tensorboard": re.compile(r"events\.out\.tfevents\.\d{10}\..+\.\d+\.\d{6}").fullmatch,
}
LOCK = ".lock"


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


def status(out: Path) -> dict | None:
    """``status.json`` as a dict, or None where the folder has none (it is not lossjax's), or
    where it is a link, not a regular file, or not lossjax's ``{"complete": bool, ...}``."""
    raw = read_if_regular(Path(out) / "status.json")
    try:
        st = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return st if isinstance(st, dict) and isinstance(st.get("complete"), bool) else None


_RECORDED = {*SWEEP_RECORDED, *EXPERIMENT_ENTRIES}


def recorded(st: dict | None) -> list[str]:
    """The files a ``status.json`` says lossjax wrote (names outside :data:`SWEEP_RECORDED`
    and :data:`EXPERIMENT_ENTRIES` are ignored: a hand-edited list never makes lossjax delete
    a file of yours)."""
    names = (st or {}).get("written")
    return sorted({n for n in names if n in _RECORDED}) if isinstance(names, list) else []


def record_written(folder: Path, names) -> None:
    """Adds ``names`` (of :data:`SWEEP_RECORDED` and :data:`EXPERIMENT_ENTRIES`) to
    ``status.json``'s list of files lossjax wrote into ``folder``; call it before writing
    them. Does nothing in a folder that is not lossjax's (no ``status.json``): there nothing
    is ever removed."""
    folder = Path(folder)
    st = status(folder)
    if st is None:
        return
    written = sorted(set(recorded(st)) | {n for n in names if n in _RECORDED})
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
        kind = "" if stat.S_ISREG(st.st_mode) else f", here {kind_of(st.st_mode)}"
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
            found = "a file" if stat.S_ISREG(st.st_mode) else kind_of(st.st_mode)
            raise ResultsError(f"{path} is {found}, not {kind}, which is what lossjax keeps "
                               "under that name: move it out of the results folder and rerun")
        if folder and stat.S_ISDIR(st.st_mode):
            _check_subfolder(path)


def _check_subfolder(path: Path) -> None:
    """Refuses an entry of ``plots/``, ``checkpoints/`` or ``tensorboard/`` named as lossjax
    names its files that is not a regular file: found here, not epochs later when the sweep
    writes or reads it."""
    own = _SUBFOLDER_FILES[path.name]
    for entry in os.scandir(path):
        if own(entry.name) and not entry.is_file(follow_symlinks=False):
            child = Path(entry.path)
            if entry.is_symlink():
                raise _link_error(child)
            found = "a folder" if entry.is_dir() else kind_of(os.lstat(child).st_mode)
            raise ResultsError(f"{child} is {found}, not a regular file, which is what lossjax "
                               "keeps under that name: move it out of the results folder and "
                               "rerun")


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


def _is_own_temporary(name: str, own) -> bool:
    # atomic_write's names: mkstemp's 8 random characters between TMP_TAG and ".tmp"
    m = re.fullmatch(rf"\.(.+)\.{TMP_TAG}[a-z0-9_]{{8}}\.tmp", name)
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
            real = Path(os.path.realpath(path))
            # Where the results folder itself is the link, its name changes too.
            name = f" --set name={real.name}" if real.name != path.name else ""
            raise ResultsError(
                f"{p} is a symbolic link; --overwrite does not delete through links: give the "
                f"real folder's path, --set output.dir={real.parent}{name}")

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
    table = read_epochs(out, resume=True)
    if len(table) and (table["epoch"] > 1).any():
        raise ResultsError(
            f"{out}/epochs.csv holds {int(table['epoch'].max())} epochs, but {out}/checkpoints "
            "has nothing to continue them from; put back the checkpoints lossjax wrote, or "
            "start the sweep over with --overwrite")


def _refuse_files_in_the_way(out: Path) -> None:
    """Refuses a file where the results folder, or the folder it goes in, belongs."""
    for p in (out.parent, out):
        if p.exists() and not p.is_dir():
            raise ResultsError(f"{p} is a file, not a folder; choose another output.dir or name")


def _make_folder(out: Path) -> list[Path]:
    """Creates ``out`` where it is missing; returns the folders this created, deepest first
    (removed again if the claim fails)."""
    made = [p for p in (out, *out.parents) if not p.exists()]
    try:
        out.mkdir(parents=True)
    except FileExistsError:
        return []
    except OSError as e:
        raise _one_line_os_error("create", out, e) from None
    return made


def _flock(fd: int, out: Path,
           fix: str = "wait for it to finish, or choose another output.dir or name") -> None:
    """Locks the open lock file ``fd``, or refuses (naming the holder's pid) where another
    sweep holds the lock."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = (os.read(fd, 32).decode(errors="replace").split() or ["?"])[0]
        os.close(fd)
        raise ResultsError(
            f"{out} is in use by another lossjax sweep (pid {holder}); {fix}") from None


def _being_claimed(out: Path) -> bool:
    """Whether ``out`` holds nothing but the temporary of a first status.json (and a lock):
    another sweep is making a new folder lossjax's, and will have renamed it in a moment."""
    try:
        names = os.listdir(out)
    except OSError:
        return False
    temporary = [n for n in names if _is_own_temporary(n, "status.json".__eq__)]
    return bool(temporary) and set(names) <= {*temporary, LOCK}


def _still_the_lock(fd: int, path: Path, out: Path) -> bool:
    """Whether the file locked through ``fd`` is still ``out``'s lock, in a folder still
    lossjax's. The holder before us may have removed the file (and, had its claim failed, the
    status.json it wrote) between our open and our lock: then we hold a lock on a file nobody
    else will see, and start again."""
    try:
        same = os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        same = False
    return same and status(out) is not None


def check_out(out: Path) -> None:
    """Refuses (one line) an ``--out`` that no folder can be made at: a file there, or in
    one of the folders it goes in."""
    out = Path(out)
    for p in (out, *out.parents):
        if os.path.lexists(p) and not p.is_dir():
            shown = "it" if p == out else f"{p}, a folder it goes in,"
            raise ResultsError(f"--out {out}: {shown} is a file, not a folder; give a folder "
                               "(it is created if missing)")


@contextlib.contextmanager
def locked(folders):
    """Holds the lock of each of ``folders`` that is lossjax's while a command other than its
    sweep (``search replay``, ``causal``, ``experiments/`` scripts) records and writes its
    files there: refused in one line while a sweep holds one (else its status.json would be
    rewritten from a stale read), and no sweep starts there meanwhile. A folder that is not
    lossjax's has no lock to take."""
    with contextlib.ExitStack() as stack:
        seen = set()
        for out in map(Path, folders):
            real = os.path.realpath(out)
            if real not in seen and status(out) is not None:
                seen.add(real)  # once: a second flock of ours would refuse the first
                stack.enter_context(_holding(out))
        yield


@contextlib.contextmanager
def _holding(out: Path):
    path = out / LOCK
    for _ in range(100):
        fd = Claim._open_lock(path, out)
        _flock(fd, out, "wait for it to finish and rerun")
        if _still_the_lock(fd, path, out):
            break
        os.close(fd)
    else:
        raise ResultsError(f"{out}: could not take its lock (sweeps keep taking it); rerun "
                           "once they are done")
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)  # before closing, as Claim.release
        with contextlib.suppress(OSError):
            os.close(fd)


def _clear_previous(out: Path, old: list[str]) -> None:
    """Removes what lossjax wrote into ``out`` before (and the experiment files ``old``), except
    status.json: the checkpoints first, then the table, so that nothing left looks
    resumable."""
    always = (n for n in SWEEP_ENTRIES if n not in SWEEP_RECORDED)
    order = ("checkpoints", "epochs.csv", *always, *old)
    for name in dict.fromkeys(order):
        if name != "status.json":
            try:
                _remove_own(out / name)
            except OSError as e:
                raise ResultsError(f"cannot remove {out / name} ({e.strerror or e}); "
                                   "fix that and rerun with --overwrite") from None


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
        _refuse_files_in_the_way(out)
        if overwrite:
            _refuse_linked_path(out)
        self._made = _make_folder(out)
        try:
            self._lock()
            check_entries(out)
            self.resuming = (self._may_resume(config_dict) if resume else
                             self._may_start(overwrite))
            self._clean_temporaries()
        except BaseException:
            self.release(remove=True)
            raise

    def _lock(self) -> None:
        """Makes an empty folder lossjax's, then takes its lock (refused where another sweep
        holds it), and writes this process's id into the lock file."""
        path = self.out / LOCK
        for _ in range(100):
            try:
                empty = owned(self.out) is None
            except ResultsError:
                # Another sweep may be writing a new folder's first status.json: wait for it.
                if not (_being_claimed(self.out) or status(self.out) is not None):
                    raise
                time.sleep(0.01)
                continue
            if empty:  # lossjax's from its status.json on
                # Never over another sweep's, written since: the next round judges that one.
                try:
                    write_json(self.out / "status.json", {"complete": False}, replace=False)
                except FileExistsError:
                    continue
                except ResultsError:  # our temporary, cleaned up by the sweep that won
                    if status(self.out) is None:
                        raise
                    continue
                self._wrote_status = True
            fd = self._open_lock(path, self.out)
            _flock(fd, self.out)
            if _still_the_lock(fd, path, self.out):
                break
            os.close(fd)
        else:
            owned(self.out)  # a status.json temporary left by kill -9: not lossjax's folder
            raise ResultsError(f"{self.out}: could not take its lock (other sweeps keep taking "
                               "it); choose another output.dir or name")
        os.ftruncate(fd, 0)  # a regular file of ours alone (_open_lock), in lossjax's folder
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    @staticmethod
    def _open_lock(path: Path, out: Path) -> int:
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
            raise _one_line_os_error("write into", out, e) from None
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

    def _may_resume(self, config_dict: dict) -> bool:
        """--resume: whether training continues from checkpoints (False: nothing to continue,
        the sweep starts over). Refuses a finished sweep, another config than the saved one,
        checkpoints or rows that cannot be continued, and another machine (see the class
        docstring)."""
        out = self.out
        if owned(out)["complete"]:  # lossjax's, as _lock established
            raise AlreadyComplete(f"{out} holds a finished sweep; nothing to resume")
        saved = read_config(out, resume=True)
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

    def _may_start(self, overwrite: bool) -> bool:
        """Without --resume: the sweep starts over (False), in a folder where that loses nothing
        unasked: with ``overwrite``, or where no epoch of an unfinished sweep finished."""
        out = self.out
        st = owned(out)  # lossjax's, as _lock established
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
        try:
            env = read_env(self.out)
        except ResultsError:
            env = None
        if env is None:  # the sweep starts the record again (sweep._provenance)
            if not self.allow_other_machine:
                raise ResultsError(
                    f"--resume: {self.out}/env.json is missing or unreadable, so the machine "
                    "the sweep started on cannot be compared with this one; put back the "
                    "env.json lossjax wrote, rerun it with --overwrite, or pass "
                    "--allow-other-machine to continue without the check")
            return (f"{self.out}/env.json is missing or unreadable: the machine the sweep "
                    "started on is not known, so it was not compared with this one")
        now = machine.machine_of({"cpu": machine.cpu_record(),
                                  "versions": provenance.package_versions()})
        differs = machine.compare_machines(machine.machine_of(env), now)
        if differs is None:
            if machine.machine_of(env)["cpu"] is None:
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
        _clear_previous(self.out, old)
        write_json(self.out / "status.json", {"complete": False, "format": FORMAT})
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


