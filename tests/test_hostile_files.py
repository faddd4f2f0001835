"""Files, folders and commands a hostile user shaped: files of the user's named like lossjax's
temporaries or beside a sweep's tables, ``--out`` paths that are files or hold the user's
work, folders written by two processes at once, and paths and arguments no folder can have.
Each case ends in one line naming the problem and its fix (exit 2), with nothing of the user's
changed."""

import fcntl
import json
import os
import threading
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import experiment, make_results, one_line, resummarize, small_config

import lossjax
import lossjax.errors
import lossjax.folder
from lossjax import analysis, cli
from lossjax.tensorboard import METRICS, TensorBoardLog

CONFIG = {"name": "small"}  # what Claim compares on --resume; any mapping will do here


def _finished(folder: Path) -> Path:
    """A finished results folder as a grid sweep leaves it."""
    make_results(folder)
    (folder / "status.json").write_text(json.dumps({"complete": True, "format": 2}))
    (folder / "config.yaml").write_text("name: small\n")
    (folder / "env.json").write_text("{}")
    return folder


# ---- the temporaries lossjax cleans up -----------------------------------------------------


@pytest.mark.parametrize("flags", [{"overwrite": True}, {"resume": True}])
def test_files_named_like_temporaries_are_the_users(tmp_path, flags):
    folder = tmp_path / "small"
    folder.mkdir()
    (folder / "status.json").write_text('{"complete": false}')
    mine = [".epochs.csv.mybackup.tmp", ".report.md.draft.tmp", ".status.json.x.tmp"]
    for name in mine:
        (folder / name).write_text("mine")
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / ".group0.json.mybackup.tmp").write_text("mine")
    # What a killed atomic write leaves goes.
    (folder / ".epochs.csv.lossjax-ab12cd34.tmp").write_text("left by kill -9")
    with lossjax.folder.Claim(folder, CONFIG, overwrite=flags.get("overwrite", False),
                              resume=flags.get("resume", False)) as claim:
        claim.start(CONFIG, {})
    for name in mine:
        assert (folder / name).read_text() == "mine", name
    assert (folder / "checkpoints" / ".group0.json.mybackup.tmp").read_text() == "mine"
    assert not (folder / ".epochs.csv.lossjax-ab12cd34.tmp").exists()


def test_atomic_writes_leave_only_names_lossjax_cleans_up(tmp_path, monkeypatch):
    seen = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (seen.append(Path(a).name), real(a, b)))
    lossjax.folder.write_text(tmp_path / "epochs.csv", "x")
    assert lossjax.folder._is_own_temporary(seen[0], {"epochs.csv"}.__contains__), seen


# ---- two sweeps into one new folder --------------------------------------------------------


def test_two_claims_on_one_new_folder_leave_one_in_use_line(tmp_path):
    def claim(folder, barrier, outcomes):
        barrier.wait()
        try:
            with lossjax.folder.Claim(folder, CONFIG, resume=False, overwrite=False):
                barrier.wait()  # hold the lock until the other has tried
                outcomes.append("claimed")
        except lossjax.folder.ResultsError as e:
            outcomes.append(str(e))
            barrier.wait()

    for i in range(30):
        folder, barrier, outcomes = tmp_path / f"new{i}" / "small", threading.Barrier(2), []
        threads = [threading.Thread(target=claim, args=(folder, barrier, outcomes))
                   for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert sorted(outcomes, key=len)[0] == "claimed", outcomes
        assert "in use by another lossjax sweep" in max(outcomes, key=len), outcomes


def test_a_claim_waits_out_another_writing_a_new_folders_status(tmp_path):
    folder = tmp_path / "small"
    folder.mkdir()
    tmp = folder / ".status.json.lossjax-ab12cd34.tmp"
    tmp.write_text('{"complete": false}')
    lock = os.open(folder / lossjax.folder.LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)
    threading.Timer(0.2, os.replace, (tmp, folder / "status.json")).start()
    try:
        with pytest.raises(lossjax.folder.ResultsError, match="in use by another lossjax sweep"):
            lossjax.folder.Claim(folder, CONFIG, resume=False, overwrite=False)
    finally:
        os.close(lock)


# ---- what --resume and --overwrite check first ------------------------------------------------


def _unfinished(folder: Path, env: bool = True) -> Path:
    """An unfinished sweep's folder: one epoch, its checkpoint and its row."""
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "status.json").write_text('{"complete": false}')
    (folder / "config.yaml").write_text("name: small\n")
    if env:
        (folder / "env.json").write_text("{}")
    (folder / "epochs.csv").write_text("member,epoch\n0,1\n")
    (folder / "checkpoints" / "group0.json").write_text('{"epoch": 1, "files": []}')
    (folder / "checkpoints" / "group0.e1.p0.npz").write_bytes(b"npz")
    return folder


@pytest.mark.parametrize("entry", ["checkpoints/group0.e9.p0.npz", "checkpoints/group1.json",
                                   "plots/test_accuracy.png"])
@pytest.mark.parametrize("flags", [{"resume": True}, {"overwrite": True}, {}])
def test_a_folder_named_like_a_file_of_lossjaxs_is_refused_at_the_start(tmp_path, entry, flags):
    folder = _unfinished(tmp_path / "small")
    (folder / entry).mkdir(parents=True)
    (folder / entry / "mine.txt").write_text("mine")
    with pytest.raises(lossjax.folder.ResultsError,
                       match=f"{folder / entry} is a folder, not a regular file"):
        lossjax.folder.Claim(folder, CONFIG, resume=flags.get("resume", False),
                             overwrite=flags.get("overwrite", False))
    assert (folder / entry / "mine.txt").read_text() == "mine"


def test_overwrite_of_a_linked_results_folder_names_the_real_one(tmp_path, capsys):
    real = _finished(tmp_path / "elsewhere" / "mine")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "small").symlink_to(real)
    code = cli.main(["sweep", small_config(tmp_path), "--overwrite", "--quiet"])
    assert code == 2
    one_line(capsys.readouterr().err, f"{tmp_path / 'runs' / 'small'} is a symbolic link",
             f"--set output.dir={real.parent} --set name=mine")
    assert (real / "epochs.csv").exists()


def test_resume_without_env_json_is_refused_unless_allowed(tmp_path):
    folder = _unfinished(tmp_path / "small", env=False)
    with pytest.raises(lossjax.folder.ResultsError, match="env.json is missing.*--allow-other"):
        lossjax.folder.Claim(folder, CONFIG, resume=True, overwrite=False)
    with lossjax.folder.Claim(folder, CONFIG, resume=True, overwrite=False,
                              allow_other_machine=True) as claim:
        assert claim.resuming and "env.json is missing" in claim.machine_note


# ---- what --overwrite removes -----------------------------------------------------------------


def test_overwrite_of_a_grid_sweep_keeps_files_only_other_sweeps_write(tmp_path):
    folder = _finished(tmp_path / "small")
    mine = {"stops.csv": "member,epoch,reason\n", "added.csv": "my notes",
            "tensorboard/events.out.tfevents.myrun": "my run",
            "tensorboard/mine/events.out.tfevents.1700000000.host.12.000001": "my run"}
    for name, text in mine.items():
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_text(text)
    with lossjax.folder.Claim(folder, CONFIG, resume=False, overwrite=True) as claim:
        claim.start(CONFIG, {})
    for name, text in mine.items():
        assert (folder / name).read_text() == text, name


def test_overwrite_removes_what_a_race_and_tensorboard_recorded(tmp_path):
    folder = _finished(tmp_path / "small")
    lossjax.folder.record_written(folder, ["stops.csv", "tensorboard"])
    (folder / "stops.csv").write_text("member,epoch,reason\n")
    rows = pd.read_csv(folder / "epochs.csv").query("epoch == 1").head(2)
    rows = rows.assign(**{m: 0.5 for m in METRICS if m not in rows})
    with TensorBoardLog(folder / "tensorboard") as events:
        events.write(rows)
    assert len(list((folder / "tensorboard").rglob("events.out.tfevents.*"))) == 2
    (folder / "tensorboard" / "events.out.tfevents.myrun").write_text("my run")
    with lossjax.folder.Claim(folder, CONFIG, resume=False, overwrite=True) as claim:
        claim.start(CONFIG, {})
    assert not (folder / "stops.csv").exists()
    assert [p.name for p in (folder / "tensorboard").rglob("*")] == ["events.out.tfevents.myrun"]
    assert json.loads((folder / "status.json").read_text()) == {"complete": False, "format": 2}


# ---- experiments/more_seeds.py --out and --seeds --------------------------------------------


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    path = tmp_path_factory.mktemp("seeds") / "first"
    make_results(path, losses=("mse", "mse-no_push_up"), seeds=(0, 1, 2), diverge=())
    resummarize(path)
    return path


@pytest.mark.parametrize(("out", "seeds", "needle"), [
    ("mine.yaml", ["5"], "exists and is left as it is"),
    ("missing/follow.yaml", ["5"], "does not exist"),
    ("afolder", ["5"], "is a folder; give the config file"),
    ("follow.yaml", ["2", "5"], "--seeds 2: "),
    ("follow.yaml", ["-1"], "seeds"),
    ("follow.yaml", ["5", "5"], "seeds"),
])
def test_more_seeds_refuses_at_once(first, tmp_path, capsys, out, seeds, needle):
    (tmp_path / "mine.yaml").write_text("my config")
    (tmp_path / "afolder").mkdir()
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code = experiment("more_seeds").main([str(first), "--losses", "mse", "mse-no_push_up",
                                          "--seeds", *seeds, "--out", str(tmp_path / out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("more_seeds: ") and err.count("\n") == 1, err
    assert needle in err, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "mine.yaml").read_text() == "my config"


# ---- writing into a folder: --out, causal's folders, and a sweep holding one ------------------


def _variants(folder: Path) -> Path:
    """A finished folder with a gradient-edit variant beside its base: what causal analyses."""
    make_results(folder, losses=("cross_entropy", "cross_entropy-push_up_50"), diverge=())
    return folder


def test_replay_into_a_folder_whose_sweep_runs_is_refused_until_it_ends(tmp_path, capsys):
    source = _finished(tmp_path / "source")
    busy = _unfinished(tmp_path / "busy")
    with lossjax.folder.Claim(busy, CONFIG, resume=True, overwrite=False,
                              allow_other_machine=True):
        before = (busy / "status.json").read_text()
        assert cli.main(["search", "replay", str(source), "--out", str(busy)]) == 2
        one_line(capsys.readouterr().err, "in use by another lossjax sweep",
                 "wait for it to finish and rerun")
        assert (busy / "status.json").read_text() == before
        assert not (busy / "search_replay.csv").exists()
    # Once the sweep is done, the replay goes in, recorded, and the folder's status kept.
    (busy / "status.json").write_text('{"complete": true}')
    assert cli.main(["search", "replay", str(source), "--out", str(busy)]) == 0
    st = json.loads((busy / "status.json").read_text())
    assert st["complete"] and "search_replay.csv" in st["written"]
    assert not (busy / lossjax.folder.LOCK).exists()


def test_causal_refuses_a_folder_lossjax_did_not_make(tmp_path, capsys):
    folder = _variants(tmp_path / "copy")
    (folder / "status.json").unlink()  # copies of a sweep's tables beside the user's files
    mine = {"causal.md": "my notes", "causal.json": "{}", "paired_difference.png": "my figure"}
    for name, text in mine.items():
        (folder / name).write_text(text)
    assert cli.main(["causal", str(folder), "--out", str(tmp_path / "out")]) == 2
    one_line(capsys.readouterr().err, f"{folder} is not a lossjax results folder")
    for name, text in mine.items():
        assert (folder / name).read_text() == text
    assert not (tmp_path / "out").exists()


def test_generality_refuses_to_pool_into_a_folder_lossjax_did_not_make(first, tmp_path, capsys):
    more = tmp_path / "more"
    make_results(more, losses=("mse", "mse-no_push_up"), seeds=(5, 6, 7), diverge=())
    resummarize(more)
    (more / "status.json").unlink()
    (more / "causal.md").write_text("my notes")
    before = sorted(p.name for p in first.iterdir())
    code = experiment("generality").main([str(first), "--pool", str(first), str(more),
                                          "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "is not a lossjax results folder" in err and err.count("\n") == 1, err
    assert (more / "causal.md").read_text() == "my notes"
    assert sorted(p.name for p in first.iterdir()) == before
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["compare", "search replay", "causal"])
@pytest.mark.parametrize("where", ["file", "in a file"])
def test_an_out_that_is_a_file_is_named_so(tmp_path, capsys, command, where):
    folder = _variants(tmp_path / "small")
    (tmp_path / "mine.txt").write_text("mine")
    out = tmp_path / "mine.txt" if where == "file" else tmp_path / "mine.txt" / "out"
    assert cli.main([*command.split(), str(folder), "--out", str(out)]) == 2
    one_line(capsys.readouterr().err, f"{tmp_path / 'mine.txt'}", "is a file, not a folder")
    assert (tmp_path / "mine.txt").read_text() == "mine"


def test_causal_from_python_takes_one_path_or_refuses_none(tmp_path):
    folder = _variants(tmp_path / "small")
    [out] = lossjax.causal(str(folder), out=tmp_path / "out")
    assert out["folder"] == str(folder) and (folder / "causal.json").exists()
    with pytest.raises(lossjax.errors.ResultsError, match="at least one results folder"):
        lossjax.causal([], out=tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


# ---- a finished sweep's records, lost -----------------------------------------------------------


def _raced(folder: Path) -> Path:
    """A finished race: member 0 stopped after epoch 1, as its stops.csv records."""
    make_results(folder, diverge=())
    config = yaml.safe_load((folder / "config.yaml").read_text())
    (folder / "config.yaml").write_text(yaml.safe_dump({**config, "search": {"method": "race"}}))
    epochs = pd.read_csv(folder / "epochs.csv", dtype={"hidden": str})
    epochs[(epochs["member"] != 0) | (epochs["epoch"] == 1)].to_csv(folder / "epochs.csv",
                                                                    index=False)
    (folder / "stops.csv").write_text("member,epoch,reason\n0,1,dropped at epoch 1\n")
    (folder / "status.json").write_text('{"complete": true}')
    return folder


def _staged(folder: Path) -> Path:
    """A finished sweep whose confirmation stage added member 8 (seed 9)."""
    make_results(folder, diverge=())
    config = yaml.safe_load((folder / "config.yaml").read_text())
    (folder / "config.yaml").write_text(yaml.safe_dump({**config, "confirm": {"seeds": [9]}}))
    epochs = pd.read_csv(folder / "epochs.csv", dtype={"hidden": str})
    more = epochs[epochs["member"] == 0].assign(member=8, seed=9)
    pd.concat([epochs, more]).to_csv(folder / "epochs.csv", index=False)
    (folder / "added.csv").write_text("member,stage,reason\n8,1,confirm\n")
    (folder / "status.json").write_text('{"complete": true}')
    return folder


@pytest.mark.parametrize(("make", "edit", "needles"), [
    (_raced, lambda f: (f / "stops.csv").unlink(),
     ["stops.csv is missing", "put back the stops.csv", "--overwrite"]),
    (_raced, lambda f: (f / "stops.csv").write_text("member,epoch,reason\n"),
     ["stops.csv records no stop for member 0", "put back the stops.csv"]),
    (_staged, lambda f: (f / "added.csv").unlink(),
     ["added.csv is missing", "put back the added.csv", "--overwrite"]),
])
def test_a_finished_folders_lost_record_is_named_with_a_fix_that_works(tmp_path, capsys, make,
                                                                        edit, needles):
    folder = make(tmp_path / "small")
    analysis.load_results(folder)  # whole, it reads
    edit(folder)
    assert cli.main(["plot", str(folder)]) == 2
    err = capsys.readouterr().err
    one_line(err, *needles)
    assert "--resume" not in err  # which says a finished sweep has nothing to resume


# ---- interrupts and odd paths ---------------------------------------------------------------


def test_a_loss_interrupting_before_the_folder_exists_says_nothing_was_written(
        tmp_path, capsys, monkeypatch):
    name = f"interrupting_loss_{os.getpid()}"
    (tmp_path / f"{name}.py").write_text("def f(logits, labels):\n    raise KeyboardInterrupt\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code = cli.main(["sweep", small_config(tmp_path, losses=[f"{name}:f"]), "--quiet"])
    assert code == 130
    assert capsys.readouterr().err == ("lossjax: interrupted before the sweep started; nothing "
                                       "was written.\n")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("argv", [["plot", "{p}"], ["report", "{p}"], ["compare", "{p}"],
                                  ["causal", "{ok}", "--out", "{p}"],
                                  ["search", "replay", "{ok}", "--out", "{p}"]])
def test_a_path_with_a_newline_is_refused_by_name(tmp_path, capsys, argv):
    path = tmp_path / "a\nb"
    _finished(path)
    ok = _variants(tmp_path / "ok")
    args = [a.format(p=path, ok=ok) for a in argv]
    assert cli.main(args) == 2
    one_line(capsys.readouterr().err, repr(str(path)), "control character \\n")


def test_run_refuses_an_output_dir_with_a_newline(tmp_path):
    with pytest.raises(lossjax.errors.ConfigError, match="output_dir.*control character"):
        lossjax.run(small_config(tmp_path), output_dir=tmp_path / "a\nb")
    assert list(tmp_path.iterdir()) == [tmp_path / "small.yaml"]
