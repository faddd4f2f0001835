"""Results folders a hostile user (or a kill -9) has shaped: links where lossjax keeps its files,
a ``.lock`` that is not lossjax's, files of the user's under lossjax's names, and kills in the
middle of ``--overwrite`` and of a sweep's last step. Each case ends with the files outside the
folder untouched (bytes and mtimes), one defined outcome (it runs, or one line and exit 2), and a
folder that ``--resume``, ``--overwrite`` or a rerun can use once the named problem is gone.

The rule for links: lossjax never reads, writes or deletes through a symbolic link inside a
results folder (it refuses, naming the link); ``--overwrite`` refuses an output path with a link
in any of its components; a plain sweep or ``--resume`` may be reached through a linked parent.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import make_results, one_line, quiet_sweep, small_config

import lossjax.folder
from lossjax import cli, plots
from lossjax.errors import ResultsError

CONFIG = {"name": "small"}  # what Claim compares on --resume; any mapping will do here


def _snap(folder: Path) -> dict:
    """Every file under ``folder`` (not following links): its bytes and mtime."""
    return {p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file() and not p.is_symlink()}


@pytest.fixture
def user(tmp_path):
    """A folder of the user's outside any results folder: a thesis and a figures folder."""
    home = tmp_path / "home"
    (home / "figures").mkdir(parents=True)
    (home / "thesis.txt").write_text("chapter 1\n")
    (home / "figures" / "test_accuracy.png").write_bytes(b"my figure")
    (home / "figures" / "group0.json").write_text("mine")
    before = _snap(home)
    yield home
    assert _snap(home) == before, "a file outside the results folder changed"


def _lossjax_folder(folder: Path, complete=False, rows=True, checkpoints=True) -> Path:
    """A results folder as a sweep leaves it (unfinished: checkpoints, rows; or finished)."""
    (folder / "plots").mkdir(parents=True)
    (folder / "status.json").write_text(json.dumps({"complete": complete}))
    (folder / "config.yaml").write_text("name: small\n")
    (folder / "env.json").write_text("{}")
    (folder / "epochs.csv").write_text("member,epoch\n" + ("0,1\n" if rows else ""))
    if complete:
        (folder / "summary.csv").write_text("loss\nmse\n")
        (folder / "report.md").write_text("# report\n")
        for name in lossjax.folder.PLOT_FILES:
            (folder / "plots" / name).write_bytes(b"png")
    if checkpoints:
        (folder / "checkpoints").mkdir()
        (folder / "checkpoints" / "group0.json").write_text('{"epoch": 1, "files": []}')
        (folder / "checkpoints" / "group0.e1.p0.npz").write_bytes(b"npz")
    return folder


def _usable(folder: Path, **flags) -> None:
    """The folder can be claimed (and, with --overwrite, started over): nothing is stuck."""
    with lossjax.folder.Claim(folder, CONFIG, resume=flags.get("resume", False),
                       overwrite=flags.get("overwrite", False)) as claim:
        if flags.get("overwrite"):
            claim.start(CONFIG, {})
    assert lossjax.folder.status(folder) is not None


# ---- the lock ------------------------------------------------------------------------------


def test_a_lock_linked_to_a_users_file_is_refused_untouched(tmp_path, capsys, user):
    folder = tmp_path / "runs" / "small"
    folder.mkdir(parents=True)
    (folder / ".lock").symlink_to(user / "thesis.txt")
    (folder / "notes.md").write_text("mine")
    code, err = quiet_sweep(capsys, small_config(tmp_path))
    assert code == 2
    one_line(err, "not a lossjax results folder", ".lock")
    assert (folder / ".lock").is_symlink()  # the link is kept, and its target (see `user`)
    # In a folder that is lossjax's, the link is named and refused before anything is opened.
    (folder / "status.json").write_text('{"complete": false}')
    code, err = quiet_sweep(capsys, small_config(tmp_path))
    assert code == 2
    one_line(err, f"{folder / '.lock'} is a symbolic link", "remove the link")
    assert (folder / ".lock").is_symlink()
    (folder / ".lock").unlink()
    _usable(folder)


def test_a_lock_hard_linked_to_a_users_file_is_not_truncated(tmp_path, capsys, user):
    folder = _lossjax_folder(tmp_path / "runs" / "small", checkpoints=False, rows=False)
    os.link(user / "thesis.txt", folder / ".lock")
    code, err = quiet_sweep(capsys, small_config(tmp_path))
    assert code == 2
    one_line(err, ".lock is not a plain file of lossjax's")
    (folder / ".lock").unlink()
    _usable(folder)


@pytest.mark.parametrize("others", [["notes.md"], []])
def test_a_users_own_lock_is_never_deleted(tmp_path, capsys, others):
    folder = tmp_path / "runs" / "small"
    folder.mkdir(parents=True)
    (folder / ".lock").write_text("my lock\n")
    for name in others:
        (folder / name).write_text("mine")
    before = _snap(folder)
    for flag in ([], ["--overwrite"], ["--resume"]):
        code, err = quiet_sweep(capsys, small_config(tmp_path), *flag)
        assert code == 2
        one_line(err, "not a lossjax results folder", ".lock")
        assert _snap(folder) == before


def test_a_lock_that_is_a_folder_is_refused(tmp_path, capsys):
    folder = _lossjax_folder(tmp_path / "runs" / "small", checkpoints=False, rows=False)
    (folder / ".lock").mkdir()
    code, err = quiet_sweep(capsys, small_config(tmp_path))
    assert code == 2
    one_line(err, ".lock is a folder", "move it out")
    (folder / ".lock").rmdir()
    _usable(folder)


def test_a_new_folder_is_lossjaxs_before_its_lock_exists(tmp_path):
    # status.json is written before .lock, and a failed claim removes both again.
    folder = tmp_path / "runs" / "small"
    with pytest.raises(RuntimeError), lossjax.folder.Claim(folder, CONFIG, resume=False,
                                                    overwrite=False):
        assert json.loads((folder / "status.json").read_text()) == {"complete": False}
        assert (folder / ".lock").read_text().split()[0] == str(os.getpid())
        raise RuntimeError("data missing")
    assert not (tmp_path / "runs").exists()
    # A claim that ends (like one killed) before its sweep starts leaves a lossjax folder that
    # a rerun simply starts over.
    lossjax.folder.Claim(folder, CONFIG, resume=False, overwrite=False).release()
    assert sorted(p.name for p in folder.iterdir()) == ["status.json"]
    _usable(folder)


def test_releasing_the_lock_never_masks_the_real_error(tmp_path, monkeypatch):
    # A folder made immutable mid-run (chattr +i): the lock cannot be removed, and the error
    # that stopped the sweep is the one that comes out.
    folder = tmp_path / "runs" / "small"
    claim = lossjax.folder.Claim(folder, CONFIG, resume=False, overwrite=False)
    claim.start(CONFIG, {})
    real_unlink = Path.unlink

    def immutable(self, missing_ok=False):
        if self.parent == folder:
            raise PermissionError(1, "Operation not permitted", str(self))
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", immutable)
    with pytest.raises(ResultsError, match="cannot write .*epochs.csv"), claim:
        raise ResultsError(f"cannot write {folder}/epochs.csv (Operation not permitted)")
    claim.release()  # again, on nothing: no error either
    monkeypatch.setattr(Path, "unlink", real_unlink)
    _usable(folder, resume=True)  # the lock left behind is no obstacle


@pytest.mark.slow
def test_an_immutable_folder_mid_run_is_one_line_about_the_table(tmp_path, capsys, monkeypatch):
    real_write, real_unlink = lossjax.folder.write_table, Path.unlink

    def no_table(path, table):
        if Path(path).name == "epochs.csv":
            raise ResultsError(f"cannot write {path} (Operation not permitted); its previous "
                               "version, if any, is kept")
        return real_write(path, table)

    def no_unlink(self, missing_ok=False):
        if self.name == lossjax.folder.LOCK:
            raise PermissionError(1, "Operation not permitted", str(self))
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(lossjax.folder, "write_table", no_table)
    monkeypatch.setattr(Path, "unlink", no_unlink)
    code, err = quiet_sweep(capsys, small_config(tmp_path))
    assert code == 2
    one_line(err, "cannot write", "epochs.csv", "Operation not permitted")
    monkeypatch.setattr(lossjax.folder, "write_table", real_write)
    monkeypatch.setattr(Path, "unlink", real_unlink)
    code, _ = quiet_sweep(capsys, small_config(tmp_path))  # no epoch is kept: a rerun starts over
    assert code == 0 and lossjax.folder.is_complete(tmp_path / "runs" / "small")


# ---- links inside a results folder ------------------------------------------------------------


@pytest.mark.parametrize("flag", [["--resume"], ["--overwrite"], []])
@pytest.mark.parametrize("entry", ["plots", "checkpoints"])
def test_a_linked_subfolder_is_refused_and_the_users_folder_untouched(tmp_path, capsys, user,
                                                                      entry, flag):
    folder = _lossjax_folder(tmp_path / "runs" / "small", checkpoints=entry != "checkpoints")
    if entry == "plots":
        (folder / "plots").rmdir()
    (folder / entry).symlink_to(user / "figures")
    code, err = quiet_sweep(capsys, small_config(tmp_path), *flag)
    assert code == 2
    one_line(err, f"{folder / entry} is a symbolic link", "remove the link")
    (folder / entry).unlink()
    _usable(folder, overwrite=True)


def test_plot_and_report_refuse_a_linked_plots_folder(tmp_path, capsys, user):
    folder = make_results(tmp_path / "sweep")
    (folder / "plots").symlink_to(user / "figures")
    for command in ("plot", "report"):
        assert cli.main([command, str(folder)]) == 2
        one_line(capsys.readouterr().err, "plots is a symbolic link")
    assert not (folder / "report.md").exists()


@pytest.mark.parametrize("entry", ["epochs.csv", "status.json", "config.yaml"])
def test_a_linked_file_is_refused_and_its_target_untouched(tmp_path, capsys, user, entry):
    folder = _lossjax_folder(tmp_path / "runs" / "small")
    (folder / entry).unlink()
    (folder / entry).symlink_to(user / "thesis.txt")
    for flag in ([], ["--resume"], ["--overwrite"]):
        code, err = quiet_sweep(capsys, small_config(tmp_path), *flag)
        assert code == 2
        one_line(err, f"{folder / entry} is a symbolic link")
        assert (folder / entry).is_symlink()
    (folder / entry).unlink()
    if entry == "status.json":
        (folder / entry).write_text('{"complete": false}')
    _usable(folder, overwrite=True)


@pytest.mark.parametrize("kind", ["folder", "fifo", "not json"])
def test_a_status_json_that_is_not_lossjaxs_is_refused_without_blocking(tmp_path, capsys, kind):
    folder = _lossjax_folder(tmp_path / "runs" / "small")
    (folder / "status.json").unlink()
    if kind == "folder":
        (folder / "status.json").mkdir()
    elif kind == "fifo":
        os.mkfifo(folder / "status.json")
    else:
        (folder / "status.json").write_text("my notes")
    before = _snap(folder)
    code, err = quiet_sweep(capsys, small_config(tmp_path), "--overwrite")
    assert code == 2
    one_line(err, "status.json is not the status.json lossjax writes", "remove or fix")
    assert _snap(folder) == before


def test_plots_a_file_is_refused(tmp_path, capsys):
    folder = make_results(tmp_path / "sweep")
    (folder / "plots").write_text("my plot list")
    assert cli.main(["plot", str(folder)]) == 2
    one_line(capsys.readouterr().err, "plots is a file, not a folder")
    assert (folder / "plots").read_text() == "my plot list"


def test_overwrite_through_a_linked_parent_is_refused(tmp_path, capsys):
    real = tmp_path / "real"
    folder = _lossjax_folder(real / "small", complete=True, checkpoints=False)
    (tmp_path / "linked").symlink_to(real)
    before = _snap(real)
    code, err = quiet_sweep(capsys, small_config(tmp_path, out=tmp_path / "linked"), "--overwrite")
    assert code == 2
    one_line(err, f"{tmp_path / 'linked'} is a symbolic link", f"output.dir={real}")
    assert _snap(real) == before
    # Without --overwrite a linked parent is fine: the finished sweep is refused as ever.
    code, err = quiet_sweep(capsys, small_config(tmp_path, out=tmp_path / "linked"))
    assert code == 2
    one_line(err, "already holds a finished sweep")
    _usable(folder, overwrite=True)


# ---- what --overwrite removes -----------------------------------------------------------------


def test_overwrite_removes_only_what_lossjax_wrote(tmp_path):
    folder = _lossjax_folder(tmp_path / "small", complete=True)
    mine = {"causal.md": "my causal notes", "causal.json": "{}", ".mynotes.tmp": "x",
            "gradient_sign.png": "my figure", "notes.md": "mine"}
    for name, text in mine.items():
        (folder / name).write_text(text)
    (folder / "plots" / "my_figure.png").write_bytes(b"mine")
    (folder / "checkpoints" / "README").write_text("mine")
    # What experiments/ scripts wrote is recorded, and removed; a hand-edited list naming a
    # file of yours is not obeyed.
    lossjax.folder.record_written(folder, ["gradient_sign.md", "gradient_sign.json"])
    (folder / "gradient_sign.md").write_text("written by the script")
    (folder / "gradient_sign.json").write_text("{}")
    st = json.loads((folder / "status.json").read_text())
    (folder / "status.json").write_text(json.dumps({**st, "written": [*st["written"],
                                                                       "notes.md"]}))
    (folder / ".epochs.csv.lossjax-k2j4abcd.tmp").write_text("left by kill -9")
    with lossjax.folder.Claim(folder, CONFIG, resume=False, overwrite=True) as claim:
        claim.start(CONFIG, {"new": True})
    for name, text in mine.items():
        assert (folder / name).read_text() == text, name
    assert (folder / "plots" / "my_figure.png").read_bytes() == b"mine"
    assert (folder / "checkpoints" / "README").read_text() == "mine"
    assert sorted(p.name for p in (folder / "plots").iterdir()) == ["my_figure.png"]
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["README"]
    gone = ["gradient_sign.md", "gradient_sign.json", "epochs.csv", "summary.csv", "report.md",
            ".epochs.csv.lossjax-k2j4abcd.tmp"]
    assert not any((folder / name).exists() for name in gone)
    assert json.loads((folder / "status.json").read_text()) == {"complete": False, "format": 2}
    assert json.loads((folder / "env.json").read_text()) == {"new": True}


def test_experiment_entries_name_what_the_scripts_write():
    assert set(lossjax.folder.PLOT_FILES) == {f"{n}.{f}" for n in plots.PLOT_NAMES
                                              + plots.DATA_PLOTS for f in plots.FORMATS}
    for script in ("lossjax/causal_report", "experiments/gradient_sign"):
        text = (Path(__file__).parents[1] / f"{script}.py").read_text()
        assert "record_written(" in text, script


# ---- report and plot on a folder lossjax never made -------------------------------------------


def test_report_and_plot_never_write_into_a_folder_lossjax_did_not_make(tmp_path, capsys):
    folder = make_results(tmp_path / "copied")
    (folder / "status.json").unlink()
    (folder / "report.md").write_text("my own report")
    before = _snap(folder)
    for command in ("report", "plot"):
        assert cli.main([command, str(folder)]) == 2
        one_line(capsys.readouterr().err, "not a lossjax results folder", "render")
    assert _snap(folder) == before and not (folder / "plots").exists()


# ---- folders left stuck, or silently wiped ----------------------------------------------------


KILL_AT = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import lossjax.folder
    folder, where, n, resume = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    real, calls = getattr(lossjax.folder, where), []
    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    setattr(lossjax.folder, where, dying)
    claim = lossjax.folder.Claim(folder, {"name": "small"}, resume=resume == "resume",
                          overwrite=resume == "overwrite",
                          allow_other_machine=resume == "resume")
    if resume == "overwrite":
        claim.start({"name": "small"}, {})
    else:
        claim.finish()
    print("NOT KILLED")
""")


def _killed(folder: Path, where: str, n: int, mode: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    r = subprocess.run([sys.executable, "-c", KILL_AT, str(folder), where, str(n), mode],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize(("where", "n"), [("write_json", 1), ("write_json", 2),
                                          ("_remove_own", 1), ("_remove_own", 2),
                                          ("_remove_own", 4), ("write_text", 3)])
def test_overwrite_killed_at_any_step_leaves_a_folder_overwrite_can_use(tmp_path, where, n):
    folder = _lossjax_folder(tmp_path / "small", complete=True)
    (folder / "notes.md").write_text("mine")
    before = _snap(folder)
    _killed(folder, where, n, "overwrite")
    st = lossjax.folder.status(folder)
    assert st is not None  # lossjax's at every moment
    if st["complete"]:  # killed before the first step: the finished sweep, as it was (and
        (folder / lossjax.folder.LOCK).unlink()  # the dead process's lock file, which is harmless)
        assert _snap(folder) == before
    assert st["complete"] is (where == "write_json" and n == 1)
    assert (folder / "notes.md").read_text() == "mine"
    try:  # a plain rerun starts over or says to use --overwrite: never "not lossjax's"
        _usable(folder)
    except ResultsError as e:
        assert "--overwrite" in str(e) and "not a lossjax" not in str(e)
    _usable(folder, overwrite=True)
    assert not (folder / "checkpoints").exists() and not (folder / "epochs.csv").exists()


@pytest.mark.slow
def test_killed_while_finishing_is_a_finished_sweep(tmp_path):
    folder = _lossjax_folder(tmp_path / "small", complete=False)
    (folder / "summary.csv").write_text("loss\nmse\n")
    table = (folder / "epochs.csv").read_bytes()
    _killed(folder, "_remove_own", 1, "resume")  # status.json says complete; checkpoints left
    assert lossjax.folder.is_complete(folder) and (folder / "checkpoints").exists()
    assert (folder / "epochs.csv").read_bytes() == table
    with pytest.raises(ResultsError, match="already holds a finished sweep"):
        _usable(folder)
    with pytest.raises(lossjax.folder.AlreadyComplete):
        _usable(folder, resume=True)
    _usable(folder, overwrite=True)
    assert not (folder / "checkpoints").exists()


def test_rows_without_checkpoints_are_never_wiped_by_a_plain_rerun(tmp_path):
    # What an older lossjax left when killed between removing the checkpoints and marking the
    # sweep complete (or a user who deleted checkpoints/): rows, no checkpoint, not complete.
    folder = _lossjax_folder(tmp_path / "small", checkpoints=False)
    table = (folder / "epochs.csv").read_bytes()
    with pytest.raises(ResultsError, match="holds rows of an unfinished sweep.*--overwrite"):
        _usable(folder)
    assert (folder / "epochs.csv").read_bytes() == table
    _usable(folder, overwrite=True)
