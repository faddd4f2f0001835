"""What a sweep may and may not do to the filesystem, and how it fails: folders that are not
lossjax's, finished sweeps, the folder lock, errors after validation, filesystem faults,
interrupts at any moment. Each failure is one line, a non-zero exit, and a folder that a rerun
or ``--resume`` can use, or no folder at all."""

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_same_files, one_line, quiet_sweep, small_config

import lossjax.folder
from lossjax import cli
from lossjax.errors import ResultsError

LOSSES_PY = textwrap.dedent("""
    import jax.numpy as jnp
    def raises(logits, labels):
        raise ValueError("this loss is broken")
    def per_class(logits, labels):          # (B, K): one value per logit, not per example
        return (logits - labels) ** 2
    def no_labels(logits):
        return jnp.sum(logits, -1)
    def ints(logits, labels):
        return jnp.argmax(logits, -1)
""")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished small sweep (its folder and its config path)."""
    tmp = tmp_path_factory.mktemp("finished")
    cfg = small_config(tmp)
    assert cli.main(["sweep", cfg, "--quiet"]) == 0
    return tmp / "runs" / "small", cfg


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


# ---- folders that are not lossjax's, and finished sweeps -------------------------------------


@pytest.mark.parametrize("flag", [[], ["--overwrite"], ["--resume"]])
def test_a_folder_lossjax_did_not_make_is_never_touched(tmp_path, capsys, flag):
    thesis = tmp_path / "runs" / "small" / "thesis"
    thesis.mkdir(parents=True)
    (thesis / "ch1.tex").write_text("precious")
    code, err = quiet_sweep(capsys, small_config(tmp_path), *flag)
    assert code == 2
    one_line(err, "not a lossjax results folder", "thesis")
    assert (thesis / "ch1.tex").read_text() == "precious"
    assert sorted(p.name for p in thesis.parent.iterdir()) == ["thesis"]


@pytest.mark.slow
def test_overwrite_replaces_only_what_lossjax_wrote(finished, tmp_path, capsys):
    import shutil

    folder = tmp_path / "runs" / "small"
    shutil.copytree(finished[0], folder)
    (folder / "notes.md").write_text("mine")
    (folder / "epochs.csv").write_text("stale")
    code, _ = quiet_sweep(capsys, small_config(tmp_path), "--overwrite")
    assert code == 0
    assert (folder / "notes.md").read_text() == "mine"
    assert_same_files(finished[0], folder)


@pytest.mark.slow
def test_a_finished_sweep_is_final(finished, capsys):
    folder, cfg = finished
    before = _snapshot(folder)
    code, err = quiet_sweep(capsys, cfg)
    assert code == 2
    one_line(err, "already holds a finished sweep", "--overwrite")
    code, err = quiet_sweep(capsys, cfg, "--resume")
    assert code == 0
    one_line(err, "finished sweep", "nothing")
    assert _snapshot(folder) == before


# ---- one writer per folder -------------------------------------------------------------------


HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import lossjax.folder
    claim = lossjax.folder.Claim(Path(sys.argv[1]), {}, resume=False, overwrite=False)
    print("HELD", flush=True)
    time.sleep(120)
""")


@pytest.mark.slow
def test_a_second_sweep_into_a_folder_in_use_stops_and_kill_9_frees_it(tmp_path, capsys):
    folder = tmp_path / "runs" / "small"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "HELD"
        code, err = quiet_sweep(capsys, small_config(tmp_path))
        assert code == 2
        one_line(err, "in use by another lossjax sweep", f"pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    # The lock died with its process: nothing stale stands in the way.
    code, _ = quiet_sweep(capsys, small_config(tmp_path))
    assert code == 0 and lossjax.folder.is_complete(folder)
    assert not (folder / lossjax.folder.LOCK).exists()


# ---- errors after validation: one line, nothing left -----------------------------------------


@pytest.mark.parametrize(
    ("changes", "needles"),
    [
        ({"losses": ["bad_losses:raises"]}, ["bad_losses:raises", "this loss is broken"]),
        ({"losses": ["cross_entropy", "bad_losses:per_class"]},
         ["bad_losses:per_class", "shape (2, 10)"]),
        ({"losses": ["bad_losses:no_labels"]}, ["bad_losses:no_labels", "TypeError"]),
        ({"losses": ["bad_losses:ints"]}, ["bad_losses:ints", "int32"]),
        ({"losses": ["os:system"]}, ["os:system"]),
        ({"model": {"hidden": [[2_000_000_000]]}}, ["model.hidden", "GB"]),
        ({"seeds": [2**32]}, ["seeds[0]", "4294967295"]),
        ({"dataset": {"name": "digits", "val_size": 1e-9}}, ["dataset.val_size", "leaves 0"]),
        ({"optimizer": {"learning_rate": [1e-300]}}, ["learning_rate", "float32"]),
        ({"name": "x" * 256}, ["name", "255 bytes"]),
    ],
)
def test_errors_found_before_training_leave_no_folder(tmp_path, capsys, monkeypatch, changes,
                                                      needles):
    (tmp_path / "bad_losses.py").write_text(LOSSES_PY)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, err = quiet_sweep(capsys, small_config(tmp_path, **changes))
    assert code == 2
    one_line(err, *needles)
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_an_error_during_training_is_one_line_and_a_rerun_starts_over(tmp_path, capsys,
                                                                      monkeypatch):
    from lossjax import engine

    real = engine.Group.train_epoch

    def broken(self, state, epoch, active=None):
        raise RuntimeError("XLA ran out of something")

    monkeypatch.setattr(engine.Group, "train_epoch", broken)
    code, err = quiet_sweep(capsys, small_config(tmp_path))
    assert code == 2
    one_line(err, "RuntimeError", "XLA ran out of something", "--resume")
    monkeypatch.setattr(engine.Group, "train_epoch", real)
    code, _ = quiet_sweep(capsys, small_config(tmp_path))  # no epoch had finished: nothing to lose
    assert code == 0


# ---- filesystem faults -----------------------------------------------------------------------


def test_filesystem_problems_are_one_line(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    code, err = quiet_sweep(capsys, small_config(tmp_path, out=a_file))
    assert code == 2
    one_line(err, "is a file, not a folder")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "small").write_text("x")
    code, err = quiet_sweep(capsys, small_config(tmp_path))
    assert code == 2
    one_line(err, "is a file, not a folder")
    # Root ignores permission bits, so an unwritable place is one no one can write: /proc.
    code, err = quiet_sweep(capsys, small_config(tmp_path, out=Path("/proc/lossjax-test")))
    assert code == 2
    one_line(err, "cannot create", "output.dir")


@pytest.mark.slow
def test_overwrite_does_not_follow_a_symlink(finished, tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "small").symlink_to(finished[0])
    before = _snapshot(finished[0])
    code, err = quiet_sweep(capsys, small_config(tmp_path), "--overwrite")
    assert code == 2
    one_line(err, "symbolic link")
    assert _snapshot(finished[0]) == before


@pytest.mark.slow
def test_disk_full_during_a_checkpoint_keeps_a_resumable_folder(finished, tmp_path, capsys,
                                                                monkeypatch):
    real = np.savez
    calls = []

    def full(*args, **kwargs):  # the disk fills up at the third checkpoint
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    monkeypatch.setattr(np, "savez", full)
    code, err = quiet_sweep(capsys, small_config(tmp_path))
    assert code == 2
    one_line(err, "No space left on device", "group")
    monkeypatch.setattr(np, "savez", real)
    code, _ = quiet_sweep(capsys, small_config(tmp_path), "--resume")
    assert code == 0
    assert_same_files(finished[0], tmp_path / "runs" / "small")


def test_atomic_write_turns_os_errors_into_one_line(tmp_path):
    def full(f):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    target = tmp_path / "t.csv"
    target.write_text("old")
    with pytest.raises(ResultsError, match="No space left on device"):
        lossjax.folder.atomic_write(target, full)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]  # no temporary left


@pytest.mark.parametrize("content", [b"\x00\xff\xfe garbage \x80", b"", b"[1, 2", b"- a\n- b\n"])
def test_a_damaged_config_yaml_on_resume_is_one_line(tmp_path, capsys, content):
    folder = tmp_path / "runs" / "small"
    folder.mkdir(parents=True)
    (folder / "status.json").write_text('{"complete": false}')
    (folder / "config.yaml").write_bytes(content)
    code, err = quiet_sweep(capsys, small_config(tmp_path), "--resume")
    assert code == 2
    one_line(err, "config.yaml")


@pytest.mark.slow
def test_temporaries_are_cleaned_and_files_follow_the_umask(tmp_path, capsys):
    folder = tmp_path / "runs" / "small"
    folder.mkdir(parents=True)
    (folder / "status.json").write_text('{"complete": false}')
    (folder / ".epochs.csv.lossjax-abc123de.tmp").write_text("left by kill -9")
    old = os.umask(0o027)
    try:
        code, _ = quiet_sweep(capsys, small_config(tmp_path))
    finally:
        os.umask(old)
    assert code == 0
    assert not list(folder.rglob("*.tmp"))
    for name in ("epochs.csv", "summary.csv", "status.json", "report.md"):
        assert (folder / name).stat().st_mode & 0o777 == 0o640, name


# ---- interrupts at any moment ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.5, 1.5, 4.0, 8.0])
def test_ctrl_c_at_any_moment_ends_cleanly_and_resume_is_exact(finished, tmp_path, delay):
    # 0.5-1.5 s: importing JAX and the data stack (a KeyboardInterrupt there used to be turned
    # into an ImportError, or swallowed by a gc callback); 4 s: compiling; 8 s: training or
    # writing. (Only the interpreter's own start-up, the first ~0.1 s, is out of our hands.)
    cfg = small_config(tmp_path)
    folder = tmp_path / "runs" / "small"
    proc = subprocess.Popen([sys.executable, "-m", "lossjax.cli", "sweep", cfg, "--quiet"],
                            stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:  # it had finished before the signal came
        assert_same_files(finished[0], folder)
        return
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] in (
        "lossjax: interrupted; finished epochs are kept (rerun with --resume).",
        "lossjax: interrupted before the sweep started; nothing was written.")
    code = cli.main(["sweep", cfg, "--quiet", "--resume"])
    assert code == 0
    assert_same_files(finished[0], folder)
    assert not list(folder.rglob("*.tmp")) and not (folder / lossjax.folder.LOCK).exists()


@pytest.mark.slow
def test_sigterm_is_an_interrupt_too(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "lossjax.cli", "sweep", small_config(tmp_path),
                             "--quiet"], stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, 143), err


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["checkpoint", "table", "table_columns"])
def test_damaged_files_on_resume_are_one_line(tmp_path, capsys, monkeypatch, damage):
    from lossjax import engine

    real = engine.Group.train_epoch

    def interrupted(self, state, epoch, active=None):
        if epoch == 1:
            raise KeyboardInterrupt
        return real(self, state, epoch, active)

    monkeypatch.setattr(engine.Group, "train_epoch", interrupted)
    assert quiet_sweep(capsys, small_config(tmp_path))[0] == 130
    monkeypatch.setattr(engine.Group, "train_epoch", real)
    folder = tmp_path / "runs" / "small"
    if damage == "checkpoint":
        (shard,) = (folder / "checkpoints").glob("group0.e*.npz")
        shard.write_bytes(b"PK\x03\x04 not a zip")
    elif damage == "table":
        (folder / "epochs.csv").write_bytes(b"\xff\xfe\x00garbage")
    else:
        (folder / "epochs.csv").write_text("a,b\n1,2\n")
    code, err = quiet_sweep(capsys, small_config(tmp_path), "--resume")
    assert code == 2
    one_line(err, "damaged" if damage != "table_columns" else "columns", "--overwrite")
