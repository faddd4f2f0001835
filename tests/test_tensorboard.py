"""TensorBoard output, read back without TensorFlow or the tensorboard package: the TFRecord
framing by hand, each record decoded with tensorboardX's bundled Event proto."""

import math

import numpy as np
import pandas as pd
from conftest import read_events, scalars

from lossjax import tables
from lossjax.tensorboard import METRICS, TensorBoardLog, run_name


def _rows(epoch, members=(0, 1)):
    rng = np.random.default_rng(epoch)
    rows = pd.DataFrame({
        "member": list(members), "loss": ["cross_entropy", "mse"], "optimizer": "momentum",
        "hidden": "64-64",
        "learning_rate": [0.1, 0.03], "weight_decay": 0.0, "init_scale": 1.0, "seed": 0,
        "epoch": epoch, **{m: rng.random(len(members)) for m in METRICS},
        "diverged": False, "wall_time": 1.0 * epoch,
    }).reindex(columns=tables.EPOCHS_COLUMNS)  # the metrics TensorBoard does not show: NaN
    rows.loc[1, "val_acc"] = math.nan  # not evaluated, or diverged: left out
    return tables.normalize(rows)


def test_two_epochs_two_members_read_back(tmp_path):
    epochs = [_rows(1), _rows(2)]
    with TensorBoardLog(tmp_path / "tensorboard") as tb:
        for rows in epochs:
            tb.write(rows)
    runs = sorted(p.name for p in (tmp_path / "tensorboard").iterdir())
    assert runs == ["m0000-cross_entropy-h64-64-lr0.1-wd0-init1-seed0",
                    "m0001-mse-h64-64-lr0.03-wd0-init1-seed0"]
    (path,) = (tmp_path / "tensorboard" / runs[1]).glob("events.out.tfevents.*")
    events = read_events(path)
    assert events[0].file_version == "brain.Event:2"
    # The resume marker: TensorBoard drops earlier points at this step or later.
    assert events[1].session_log.status == events[1].session_log.START and events[1].step == 1
    got = scalars(events)
    want = {(int(rows.at[1, "epoch"]), m): rows.at[1, m] for rows in epochs for m in METRICS
            if not math.isnan(rows.at[1, m])}
    assert len(want) == 2 * len(METRICS) - 2
    # float32 in the table, float32 in the event: exactly equal.
    assert all(type(v) is np.float32 for v in want.values())
    assert got == want


def test_resume_writes_a_new_file_that_starts_at_the_resumed_epoch(tmp_path):
    folder = tmp_path / "tensorboard"
    with TensorBoardLog(folder) as tb:
        tb.write(_rows(1))
        tb.write(_rows(2))
    with TensorBoardLog(folder) as tb:  # resumed from a checkpoint at epoch 1
        tb.write(_rows(2))
    run = folder / run_name(_rows(1).iloc[0])
    files = sorted(run.glob("events.out.tfevents.*"))
    assert len(files) == 2
    later = read_events(files[1])
    assert later[1].session_log.status == later[1].session_log.START and later[1].step == 2
    assert {step for step, _ in scalars(later)} == {2}


def test_members_left_out_of_a_write_are_closed(tmp_path):
    with TensorBoardLog(tmp_path) as tb:
        tb.write(_rows(1))
        tb.write(_rows(2).iloc[:1])
        assert list(tb._files) == [0]
        tb.write(_rows(3))  # member 1 comes back: a second file, sorted after the first
    files = sorted((tmp_path / run_name(_rows(1).iloc[1])).glob("events.out.tfevents.*"))
    assert [sorted({s for s, _ in scalars(read_events(f))}) for f in files] == [[1], [3]]
