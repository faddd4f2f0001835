"""Checkpoint files: each group's training state after its last finished epoch, and its check.

A group's checkpoint after epoch E is one file per process, each holding the members whose
state lives on that process's devices (``group3.e7.p0.npz``: member positions and state
leaves), and a manifest naming them (``group3.json``), written last by process 0 once every
process has saved. No process gathers another's state, a resume may use any number of
processes and devices, and a process killed at any moment leaves the previous manifest and
its files intact. :func:`check_resumable` checks the manifests and shards against each other
and hands the table's side to ``lossjax.tables.check_kept_rows``.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from lossjax.errors import ResultsError
from lossjax.folder import atomic_write, write_json
from lossjax.tables import check_kept_rows, read_epochs, read_regular


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
    its own), then removes the group's older shards. ``rows`` is ``lossjax.tables.rows_digest``
    of the table as just written: what the checkpoint stands behind, checked on resume."""
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



def check_resumable(out: Path, groups, epochs: int, stops_of=None) -> None:
    """Refuses, in one line and before anything trains, a folder whose checkpoints and
    epochs.csv do not agree: each group's manifest, its shards and the table must say the same
    epoch E; every member has exactly the rows of epochs 1..E, in the order the sweep wrote
    them, with its own key values, the values only a sweep writes (finite keys and times, a
    loss NaN exactly where the member diverged, diverged for good once it did), and the
    checksum its manifest records. Otherwise the resume would train for minutes and then fail,
    or finish a table that mixes numbers the checkpoints never stood behind.

    ``stops_of`` (a race): rows → the members the race stopped after them; such a member has
    rows only up to its stop."""
    table = read_epochs(out, resume=True)
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
            last = manifest
        done.append(e)
    check_kept_rows(out, table, groups, done, epochs, stops_of,
                    digest=None if last is None else last["rows"],
                    recorded_in=None if last is None else last["path"].name)
