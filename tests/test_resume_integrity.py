"""--resume on a folder whose files were changed after the sweep wrote them.

Each case ends one of two ways, decided before anything trains: the sweep resumes and ends
with the files of an uninterrupted run, or it stops with one line ``lossjax: error: ...`` (exit
2) that names the file and the fix, having changed nothing in the folder (nor outside it); the
fix it names (put the file back, or ``--overwrite``) then works.
"""

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import SMALL_SWEEP, assert_same_files

from lossjax import cli, engine, tables

pytestmark = pytest.mark.slow  # every case trains a sweep, kills or edits it and resumes it

SMALL = {**SMALL_SWEEP, "model": {"hidden": [[8], [4]]}}  # two groups of four members
STOP_AT = 6  # the sixth epoch trained: group 0 finished (3 epochs), group 1 after epoch 2


def _config(tmp: Path, out: Path, name: str | None = None) -> str:
    path = tmp / f"{name or out.name}.yaml"
    path.write_text(yaml.safe_dump({**SMALL, "output": {"dir": str(out)}}))
    return str(path)


def _sweep(capsys, *args) -> tuple[int, str]:
    code = cli.main(["sweep", *map(str, args), "--quiet"])
    return code, capsys.readouterr().err


def _one_line(err: str, *needles: str) -> None:
    assert err.count("\n") == 1 and err.startswith("lossjax: error: "), err
    for n in needles:
        assert n in err, err


def _interrupted_sweep(cfg: str) -> None:
    real, calls = engine.Group.train_epoch, []

    def interrupted(self, state, epoch, active=None):
        calls.append(1)
        if len(calls) == STOP_AT:
            raise KeyboardInterrupt
        return real(self, state, epoch, active)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine.Group, "train_epoch", interrupted)
        assert cli.main(["sweep", cfg, "--quiet"]) == 130


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """An uninterrupted run (the reference), and a copy of an interrupted one to restore."""
    tmp = tmp_path_factory.mktemp("integrity")
    assert cli.main(["sweep", _config(tmp, tmp / "ref"), "--quiet"]) == 0
    cfg = _config(tmp, tmp / "runs")
    _interrupted_sweep(cfg)
    shutil.copytree(tmp / "runs" / "small", tmp / "template")
    return tmp, cfg


@pytest.fixture
def folder(made):
    """(the interrupted folder, restored afresh, its config path, the reference folder)."""
    tmp, cfg = made
    target = tmp / "runs" / "small"
    if target.exists() or target.is_symlink():
        shutil.rmtree(target)
    shutil.copytree(tmp / "template", target)
    return target, cfg, tmp / "ref" / "small"


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _refused(capsys, folder: Path, cfg: str, *needles: str) -> None:
    """--resume stops with one line naming ``needles``, and the folder is as it was."""
    before = _snapshot(folder)
    code, err = _sweep(capsys, cfg, "--resume")
    assert code == 2, err
    _one_line(err, *needles)
    assert _snapshot(folder) == before
    assert sorted(p.name for p in folder.parent.iterdir()) == ["small"]  # nothing beside it


def _restore(folder: Path, name: str) -> None:
    (folder / name).unlink()
    shutil.copy2(folder.parent.parent / "template" / name, folder / name)


def _resumes_exactly(capsys, folder: Path, cfg: str, ref: Path) -> None:
    code, err = _sweep(capsys, cfg, "--resume")
    assert code == 0, err
    assert_same_files(ref, folder)


def _overwrite_works(capsys, folder: Path, cfg: str, ref: Path) -> None:
    code, err = _sweep(capsys, cfg, "--overwrite")
    assert code == 0, err
    assert_same_files(ref, folder)


def _rows(folder: Path) -> list[str]:
    return (folder / "epochs.csv").read_text().splitlines(keepends=True)


def _write_rows(folder: Path, lines: list[str]) -> None:
    (folder / "epochs.csv").write_text("".join(lines))


# ---- the folder as the sweep left it ---------------------------------------------------------


def test_an_interrupted_folder_resumes_exactly(folder, capsys):
    path, cfg, ref = folder
    manifest = json.loads((path / "checkpoints" / "group1.json").read_text())
    assert manifest["epoch"] == 2 and len(manifest["rows"]) == 64
    _resumes_exactly(capsys, path, cfg, ref)


def test_a_folder_of_an_older_lossjax_still_resumes(folder, capsys):
    # Its manifests hold no checksum and its shards no group or epoch: checked as far as
    # they can be (names, order, values), then resumed.
    path, cfg, ref = folder
    for manifest in (path / "checkpoints").glob("group*.json"):
        m = json.loads(manifest.read_text())
        del m["rows"]
        manifest.write_text(json.dumps(m))
    for shard in (path / "checkpoints").glob("*.npz"):
        with np.load(shard) as z:
            kept = {k: z[k] for k in z.files if k not in ("group", "epoch")}
        with shard.open("wb") as f:
            np.savez(f, **kept)
    _resumes_exactly(capsys, path, cfg, ref)


def test_the_table_one_epoch_ahead_of_its_checkpoint_resumes(folder, capsys):
    # A process killed between writing the table and committing the checkpoint: the extra
    # epoch's rows are dropped and trained again.
    path, cfg, ref = folder
    lines = _rows(path)
    extra = [line.replace(",2,", ",3,", 1) for line in lines[-4:]]  # epoch 2 -> 3 (seed<2)
    assert all(",3," in line for line in extra)
    _write_rows(path, lines + extra)
    _resumes_exactly(capsys, path, cfg, ref)


# ---- a checkpoint manifest edited to an earlier epoch ------------------------------------


def test_a_manifest_set_back_to_an_earlier_epoch_is_refused(folder, capsys):
    path, cfg, ref = folder
    manifest = path / "checkpoints" / "group1.json"
    m = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**m, "epoch": 1}))
    _refused(capsys, path, cfg, "group1.json", "says epoch 1", "--overwrite")
    _restore(path, "checkpoints/group1.json")
    _resumes_exactly(capsys, path, cfg, ref)


def test_a_manifest_and_shard_renamed_to_an_earlier_epoch_are_refused(folder, capsys):
    path, cfg, ref = folder
    ckpt = path / "checkpoints"
    m = json.loads((ckpt / "group1.json").read_text())
    (ckpt / "group1.e2.p0.npz").rename(ckpt / "group1.e1.p0.npz")
    (ckpt / "group1.json").write_text(json.dumps({**m, "epoch": 1,
                                                  "files": ["group1.e1.p0.npz"]}))
    _refused(capsys, path, cfg, "group1.e1.p0.npz", "after epoch 2", "--overwrite")
    _overwrite_works(capsys, path, cfg, ref)


def test_a_manifest_beyond_the_last_epoch_is_refused(folder, capsys):
    path, cfg, _ = folder
    ckpt = path / "checkpoints"
    (ckpt / "group1.e2.p0.npz").rename(ckpt / "group1.e9.p0.npz")
    (ckpt / "group1.json").write_text(json.dumps({"epoch": 9, "files": ["group1.e9.p0.npz"]}))
    _refused(capsys, path, cfg, "group1.json", "epoch 9 of a 3-epoch sweep")


# ---- config.yaml gone ------------------------------------------------------------------------


def test_a_missing_config_yaml_is_refused_not_started_over(folder, capsys):
    path, cfg, ref = folder
    (path / "config.yaml").unlink()
    _refused(capsys, path, cfg, "config.yaml is missing", "--overwrite")
    code, err = _sweep(capsys, cfg)  # a plain rerun does not start it over either
    assert code == 2 and "--resume" in err
    shutil.copy2(path.parent.parent / "template" / "config.yaml", path / "config.yaml")
    _resumes_exactly(capsys, path, cfg, ref)


@pytest.mark.parametrize("flags", [["--resume"], []])
def test_lost_checkpoints_do_not_start_over_unasked(folder, capsys, flags):
    path, cfg, ref = folder
    shutil.rmtree(path / "checkpoints")
    before = _snapshot(path)
    code, err = _sweep(capsys, cfg, *flags)
    assert code == 2
    _one_line(err, "epochs.csv holds 3 epochs" if flags else "epochs.csv holds rows",
              "checkpoints", "--overwrite")
    assert _snapshot(path) == before
    if flags:
        _overwrite_works(capsys, path, cfg, ref)


# ---- FIFOs in place of files -------------------------------------------------------------


@pytest.fixture
def alarm():
    """Fails a test that blocks, rather than hanging the suite."""
    def hung(*_):
        raise TimeoutError("blocked")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("name", ["epochs.csv", "config.yaml", "checkpoints/group1.json",
                                  "checkpoints/group1.e2.p0.npz", "status.json", "env.json"])
def test_a_fifo_in_place_of_a_file_is_one_line_and_never_blocks(folder, capsys, alarm, name):
    path, cfg, ref = folder
    (path / name).unlink()
    os.mkfifo(path / name)
    for flags in (["--resume"], []):
        code, err = _sweep(capsys, cfg, *flags)
        assert code == 2, err
        _one_line(err)
        if flags or name == "status.json":
            assert "FIFO" in err and name.split("/")[-1] in err, err
    if name == "epochs.csv":
        # Not something lossjax wrote: --overwrite leaves it too, and once it is moved out
        # --overwrite starts the sweep over.
        code, err = _sweep(capsys, cfg, "--overwrite")
        assert code == 2 and "FIFO" in err, err
        (path / name).unlink()
        _overwrite_works(capsys, path, cfg, ref)
    if name != "status.json":
        return
    # Without a readable status.json the folder is not known to be lossjax's, so --overwrite
    # is refused too, and the line says what to put back.
    code, err = _sweep(capsys, cfg, "--overwrite")
    assert code == 2 and '{"complete": false}' in err, err
    (path / name).unlink()
    (path / name).write_text('{"complete": false}')
    _resumes_exactly(capsys, path, cfg, ref)


def test_a_symlink_in_place_of_a_file_is_not_followed(folder, capsys, tmp_path):
    path, cfg, _ = folder
    outside = tmp_path / "mine.csv"
    shutil.copy2(path / "epochs.csv", outside)
    (path / "epochs.csv").unlink()
    (path / "epochs.csv").symlink_to(outside)
    _refused(capsys, path, cfg, "epochs.csv", "symbolic link")
    assert outside.read_bytes() == (path.parent.parent / "template" / "epochs.csv").read_bytes()


# ---- rows of checkpointed epochs lost --------------------------------------------------------


@pytest.mark.parametrize("cut", ["one_row", "an_epoch", "all_rows", "the_file"])
def test_lost_rows_are_refused_before_training(folder, capsys, monkeypatch, cut):
    path, cfg, ref = folder
    lines = _rows(path)
    if cut == "one_row":
        _write_rows(path, lines[:6] + lines[7:])
        needles = ("line 7", "member 1 epoch 2")
    elif cut == "an_epoch":
        _write_rows(path, lines[:-4])
        needles = ("has 16 of the 20 rows", "group1.json is after epoch 2")
    elif cut == "all_rows":
        _write_rows(path, lines[:1])
        needles = ("has 0 of the 20 rows",)
    else:
        (path / "epochs.csv").unlink()
        needles = ("has 0 of the 20 rows",)

    def never(*_):
        raise AssertionError("trained before refusing")

    monkeypatch.setattr(engine.Group, "train_epoch", never)
    _refused(capsys, path, cfg, "epochs.csv", *needles, "--overwrite")
    monkeypatch.undo()
    if cut in ("an_epoch", "all_rows"):
        return  # put back as in the other two
    if cut == "the_file":
        shutil.copy2(path.parent.parent / "template" / "epochs.csv", path / "epochs.csv")
    else:
        _restore(path, "epochs.csv")
    _resumes_exactly(capsys, path, cfg, ref)


# ---- hand-edited values in kept rows -------------------------------------------------------


def _edit(line: str, column: str, value: str) -> str:
    cells = line.rstrip("\n").split(",")
    cells[tables.EPOCHS_COLUMNS.index(column)] = value
    return ",".join(cells) + "\n"


@pytest.mark.parametrize("edit, needles", [
    ("nan_loss", ("line 3", "non-finite train_loss")),
    ("inf_wall_time", ("line 3", "wall_time")),
    ("swapped_rows", ("line 3", "member 2 epoch 1 where member 1 epoch 1")),
    ("swapped_epochs", ("line 2", "member 0 epoch 2 where member 0 epoch 1")),
    ("duplicate_row", ("line 4", "member 1 epoch 1 where member 2 epoch 1")),
    ("other_seed", ("line 3", "seed other than the member's own")),
    ("other_rate", ("line 3", "learning_rate other than the member's own")),
    ("accuracy_above_one", ("line 3", "val_acc outside [0, 1]")),
    ("undiverged", ("line 3", "diverged, yet has a train_loss")),
    ("finite_value", ("changed after the sweep wrote it", "group1.json")),
])
def test_hand_edited_rows_are_refused(folder, capsys, edit, needles):
    path, cfg, ref = folder
    lines = _rows(path)
    if edit == "nan_loss":
        lines[2] = _edit(lines[2], "train_loss", "nan")
    elif edit == "inf_wall_time":
        lines[2] = _edit(lines[2], "wall_time", "inf")
    elif edit == "swapped_rows":
        lines[2], lines[3] = lines[3], lines[2]
    elif edit == "swapped_epochs":
        lines[1], lines[5] = lines[5], lines[1]
    elif edit == "duplicate_row":
        lines[3] = lines[2]
    elif edit == "other_seed":
        lines[2] = _edit(lines[2], "seed", "7")
    elif edit == "other_rate":
        lines[2] = _edit(lines[2], "learning_rate", "0.2")
    elif edit == "accuracy_above_one":
        lines[2] = _edit(lines[2], "val_acc", "1.5")
    elif edit == "undiverged":
        lines[2] = _edit(lines[2], "diverged", "True")
    else:
        value = float(lines[2].split(",")[tables.EPOCHS_COLUMNS.index("val_acc")])
        lines[2] = _edit(lines[2], "val_acc", repr(round(value / 2, 4)))
    _write_rows(path, lines)
    _refused(capsys, path, cfg, "epochs.csv", *needles, "--overwrite")
    if edit == "nan_loss":
        _restore(path, "epochs.csv")
        _resumes_exactly(capsys, path, cfg, ref)
    elif edit == "finite_value":
        _overwrite_works(capsys, path, cfg, ref)


def test_an_extra_column_or_a_member_that_does_not_exist_is_refused(folder, capsys):
    path, cfg, _ = folder
    lines = _rows(path)
    _write_rows(path, [lines[0].rstrip("\n") + ",note\n"]
                + [line.rstrip("\n") + ",x\n" for line in lines[1:]])
    _refused(capsys, path, cfg, "epochs.csv", "columns")
    _write_rows(path, lines[:9] + [_edit(lines[9], "member", "99")] + lines[9:])
    _refused(capsys, path, cfg, "epochs.csv", "line 10", "member 99")
    _write_rows(path, lines + [_edit(lines[-1], "member", "99")])
    _refused(capsys, path, cfg, "epochs.csv", "beyond the epochs the checkpoints stand behind")


def test_a_table_cut_mid_row_is_refused(folder, capsys):
    path, cfg, _ = folder
    data = (path / "epochs.csv").read_bytes()
    (path / "epochs.csv").write_bytes(data[:-7])
    _refused(capsys, path, cfg, "epochs.csv", "--overwrite")


# ---- damaged or foreign shards ---------------------------------------------------------------


def test_a_truncated_shard_is_refused(folder, capsys):
    path, cfg, ref = folder
    shard = path / "checkpoints" / "group1.e2.p0.npz"
    shard.write_bytes(shard.read_bytes()[:300])
    _refused(capsys, path, cfg, "group1.e2.p0.npz", "damaged", "--overwrite")
    _restore(path, "checkpoints/group1.e2.p0.npz")
    _resumes_exactly(capsys, path, cfg, ref)


def test_another_groups_shard_swapped_in_is_refused(folder, capsys):
    path, cfg, _ = folder
    ckpt = path / "checkpoints"
    shutil.copy2(ckpt / "group0.e3.p0.npz", ckpt / "group1.e2.p0.npz")
    _refused(capsys, path, cfg, "group1.e2.p0.npz", "holds group 0 after epoch 3")


def test_a_missing_shard_is_refused(folder, capsys):
    path, cfg, _ = folder
    (path / "checkpoints" / "group1.e2.p0.npz").unlink()
    _refused(capsys, path, cfg, "group1.e2.p0.npz", "is missing", "--overwrite")


def test_an_earlier_groups_manifest_gone_is_refused(folder, capsys):
    path, cfg, _ = folder
    (path / "checkpoints" / "group0.json").unlink()
    _refused(capsys, path, cfg, "group1.json", "exists though group 0 before it is unfinished")


@pytest.mark.parametrize("files", [["../../../config.yaml"], ["group0.e2.p0.npz"], [], "x"])
def test_a_manifest_naming_other_files_is_refused(folder, capsys, files):
    path, cfg, _ = folder
    (path / "checkpoints" / "group1.json").write_text(json.dumps({"epoch": 2, "files": files}))
    _refused(capsys, path, cfg, "group1.json", "--overwrite")


# ---- a results path no filesystem takes --------------------------------------------------


@pytest.mark.parametrize("where", ["dir", "parent"])
def test_a_too_long_path_component_is_one_line(tmp_path, capsys, where):
    long = "a" * 300
    out = tmp_path / long if where == "dir" else tmp_path / long / "runs"
    code, err = _sweep(capsys, _config(tmp_path, out, "long"))
    assert code == 2
    _one_line(err, "300 bytes", "255 bytes", "shorter output.dir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.yaml"]
