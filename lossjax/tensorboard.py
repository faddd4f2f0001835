"""TensorBoard event files of a sweep (opt-in): one run per member, one point per epoch.

    RESULTS_DIR/tensorboard/
      m0003-cross_entropy-h500-150-lr0.1-wd0-init1-seed0/
        events.out.tfevents.<unix time>.<host>.<pid>.<n>

A run is named from the member's index and swept values, so TensorBoard's run filter can pick
them out (``lr0.1``, ``init3``). Each epoch's row becomes one event at step ``epoch`` holding the
metric columns of ``epochs.csv`` (:data:`METRICS`) as scalars under their column names, in
float32 as the table holds them; NaN values (an epoch without evaluation, a diverged member's
training metrics) are left out. ``epochs.csv`` stays the record: these files are only a view
of it, and nothing reads them back.

Resuming. A sweep hands :meth:`TensorBoardLog.write` only the epochs it trains, so a resumed sweep
writes from each group's checkpoint onwards, into a new event file per member (TensorBoard reads
every file of a run, in name order, i.e. in order of creation). The first event of each file is
a ``SessionLog.START`` at the first epoch it holds, which tells TensorBoard to drop any points of
that run at that epoch or later from earlier files; so an epoch that the killed process wrote
here but that no checkpoint stood behind (its row is dropped from ``epochs.csv`` too) is
replaced by the retrained one instead of shown twice. TensorBoard's default loader would do the
same without the marker: a point at a step not above the last one read preempts the points at
that step and after, so the last value written wins. Every file is flushed after each
:meth:`TensorBoardLog.write`, so a killed sweep loses at most the epoch it was writing.

Event files are TFRecords of ``tensorflow.Event`` protos (TensorFlow's ``event.proto`` and
``summary.proto``), written with tensorboardX, which needs no TensorFlow. tensorboardX is
imported on first use, so ``import lossjax`` and sweeps without TensorBoard output stay light.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd

METRICS = ("train_loss", "train_acc", "val_acc", "val_ce", "test_acc", "test_ce", "wrong_frac",
           "grad_norm")
NAME_COLUMNS = ("loss", "hidden", "learning_rate", "weight_decay", "init_scale", "seed")
# Numbers the files this process opens (see TensorBoardLog._open).
_OPENED = itertools.count()
_PREFIX = {"loss": "", "optimizer": "", "hidden": "h", "learning_rate": "lr", "weight_decay": "wd",
           "init_scale": "init", "seed": "seed"}


def name_columns(several_optimizers: bool) -> tuple[str, ...]:
    """The columns that name a run: :data:`NAME_COLUMNS`, with the optimizer after the loss
    where a sweep swept several ('m0003-mse-adam-h64-lr0.01-...')."""
    return (NAME_COLUMNS[:1] + ("optimizer",) + NAME_COLUMNS[1:] if several_optimizers
            else NAME_COLUMNS)


def run_name(row, columns=NAME_COLUMNS) -> str:
    """'m0003-cross_entropy-h500-150-lr0.1-wd0-init1-seed0' for one ``epochs.csv`` row.

    >>> run_name({"member": 3, "loss": "mse", "learning_rate": 0.1, "seed": 0},
    ...          ("loss", "learning_rate", "seed"))
    'm0003-mse-lr0.1-seed0'
    """
    parts = [f"m{int(row['member']):04d}"]
    for c in columns:
        v = row[c]
        text = f"{v:g}" if isinstance(v, float | np.floating) else str(v)
        parts.append(_PREFIX.get(c, c) + text)
    # A custom loss name may hold characters that do not belong in a folder name.
    return re.sub(r"[^A-Za-z0-9._+-]", "_", "-".join(parts))


class TensorBoardLog:
    """Writes the rows of each epoch into ``folder/<run name>/`` event files.

    ``name_columns``: the swept values that name a run (all of them by default; a sweep may pass
    only those that vary, for shorter names, as long as it passes the same ones when it resumes).
    A member's file stays open between writes and is closed once a write leaves the member out:
    a sweep trains one group of members after another, so at most one group holds files open
    however many members the sweep has. A member that comes back gets a new file.
    """

    def __init__(self, folder: Path, name_columns=NAME_COLUMNS):
        self.folder = Path(folder)
        self.name_columns = tuple(name_columns)
        self._files = {}  # member -> tensorboardX RecordWriter

    def write(self, rows: pd.DataFrame) -> None:
        """Writes ``rows`` (``epochs.csv`` rows, any members, epochs in increasing order per
        member) and flushes every file."""
        # lazy, here and in _open: tensorboardX is loaded only by a sweep that asks for events
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.proto.summary_pb2 import Summary

        for member, df in rows.groupby("member", sort=True):
            df = df.sort_values("epoch")
            out = self._files.get(member)
            if out is None:
                out = self._open(member, df.iloc[0])
            for r in df.itertuples(index=False):
                values = [Summary.Value(tag=m, simple_value=float(v))
                          for m in METRICS if not math.isnan(v := getattr(r, m))]
                if values:
                    out.write(Event(wall_time=time.time(), step=int(r.epoch),
                                    summary=Summary(value=values)).SerializeToString())
        for member in set(self._files) - set(rows["member"]):
            self._files.pop(member).close()
        for out in self._files.values():
            out.flush()

    def _open(self, member, first_row):
        from tensorboardX import RecordWriter  # lazy: see write
        from tensorboardX.proto.event_pb2 import Event, SessionLog

        run = self.folder / run_name(first_row, self.name_columns)
        run.mkdir(parents=True, exist_ok=True)
        now = time.time()
        # TensorBoard's own naming, plus the process and a counter over the process: a file
        # opened in the same second as an earlier one of the run (a member that comes back, a
        # second TensorBoardLog on the folder) must not replace it, and must sort after it.
        name = (f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}.{os.getpid()}."
                f"{next(_OPENED):06d}")
        out = RecordWriter(str(run / name))
        out.write(Event(wall_time=now, file_version="brain.Event:2").SerializeToString())
        out.write(Event(wall_time=now, step=int(first_row["epoch"]),
                        session_log=SessionLog(status=SessionLog.START)).SerializeToString())
        self._files[member] = out
        return out

    def close(self) -> None:
        """Flushes and closes every open file (writing again opens new ones)."""
        while self._files:
            self._files.popitem()[1].close()

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
