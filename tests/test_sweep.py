"""``lossjax sweep`` end to end on the embedded digits data: the folder it writes, determinism,
resumption after Ctrl-C and after kill -9, and the errors that must leave nothing behind."""

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import assert_same_files, experiment

from lossjax import cli, engine, sweep

CONFIG = {
    "name": "tiny",
    "seeds": [0, 1],
    "epochs": 4,
    "batch_size": 64,
    "losses": ["cross_entropy", "mse", "softmax_mse", "exp_mse"],
    "dataset": {"name": "digits"},
    "model": {"hidden": [[16]]},
    "optimizer": {"learning_rate": {"cross_entropy": [0.05, 0.2], "mse": [0.05, 0.2],
                                    "softmax_mse": [1.0], "exp_mse": [0.02]}},
    "eval": {"target_accuracy": 0.8},
}
N_MEMBERS = 2 * (2 + 2 + 1 + 1)


def _write_config(tmp: Path, **changes) -> Path:
    cfg = {**CONFIG, **changes, "output": {"dir": str(tmp / "results")}}
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _table(folder: Path) -> pd.DataFrame:
    # wall_time is a measurement of this machine, not a result: excluded from comparisons.
    return pd.read_csv(folder / "epochs.csv").drop(columns="wall_time")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    assert cli.main(["sweep", str(_write_config(tmp)), "--quiet"]) == 0
    return tmp / "results" / "tiny"


@pytest.mark.slow
def test_sweep_writes_a_complete_folder(reference):
    for name in ("config.yaml", "env.json", "epochs.csv", "summary.csv", "report.md"):
        assert (reference / name).stat().st_size > 0, name
    assert json.loads((reference / "status.json").read_text()) == {"complete": True, "format": 2}
    assert not (reference / "checkpoints").exists()
    assert len(list((reference / "plots").glob("*.png"))) >= 4
    table = pd.read_csv(reference / "epochs.csv")
    assert len(table) == N_MEMBERS * CONFIG["epochs"]
    assert table["member"].nunique() == N_MEMBERS
    assert set(table["loss"]) == set(CONFIG["losses"])
    # Digits is easy: cross-entropy at its better rate learns it within four epochs.
    final = table[(table["epoch"] == 4) & (table["loss"] == "cross_entropy")]
    assert final["test_acc"].max() > 0.8
    summary = pd.read_csv(reference / "summary.csv")
    assert sorted(summary["loss"]) == sorted(CONFIG["losses"])
    env = json.loads((reference / "env.json").read_text())
    assert env["data"] and env["jax"]


@pytest.mark.slow
def test_wall_time_counts_from_the_sweeps_start_across_groups(tmp_path):
    # Two hidden sizes are two programs, run one after the other.
    path = _write_config(tmp_path, seeds=[0], epochs=2, losses=["mse"],
                         model={"hidden": [[8], [16]]},
                         optimizer={"learning_rate": {"mse": [0.1]}})
    assert cli.main(["sweep", str(path), "--quiet"]) == 0
    t = pd.read_csv(tmp_path / "results" / "tiny" / "epochs.csv")
    first, second = (t[t["hidden"].astype(str) == h]["wall_time"] for h in ("8", "16"))
    assert second.min() > first.max() > 0


@pytest.mark.slow
def test_same_config_same_files(reference, tmp_path):
    assert cli.main(["sweep", str(_write_config(tmp_path)), "--quiet"]) == 0
    assert_same_files(reference, tmp_path / "results" / "tiny")


@pytest.mark.slow
def test_a_member_rerun_alone_reproduces_its_rows(reference, tmp_path):
    # Fixed blocks: a member's numbers depend on its own settings, not on the rest of the sweep.
    cfg = _write_config(tmp_path, seeds=[1], losses=["mse"],
                        optimizer={"learning_rate": {"mse": [0.2]}})
    assert cli.main(["sweep", str(cfg), "--quiet"]) == 0
    alone = _table(tmp_path / "results" / "tiny").drop(columns="member")
    big = _table(reference)
    rows = big[(big["loss"] == "mse") & (big["seed"] == 1) & (big["learning_rate"] == 0.2)]
    pd.testing.assert_frame_equal(alone, rows.drop(columns="member").reset_index(drop=True))


@pytest.mark.slow
def test_resume_after_ctrl_c(reference, tmp_path, monkeypatch):
    real = engine.Group.train_epoch

    def interrupted(self, state, epoch, active=None):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(self, state, epoch, active)

    cfg = str(_write_config(tmp_path))
    monkeypatch.setattr(engine.Group, "train_epoch", interrupted)
    assert cli.main(["sweep", cfg, "--quiet"]) == 130
    folder = tmp_path / "results" / "tiny"
    assert len(pd.read_csv(folder / "epochs.csv")) == N_MEMBERS * 2
    monkeypatch.setattr(engine.Group, "train_epoch", real)
    # Without --resume the unfinished folder is refused, and left as it is.
    assert cli.main(["sweep", cfg, "--quiet"]) == 2
    assert cli.main(["sweep", cfg, "--quiet", "--resume"]) == 0
    assert_same_files(reference, folder)


KILLABLE = textwrap.dedent("""
    import sys, time
    from lossjax import cli, engine
    real = engine.Group.train_epoch
    def slow(self, state, epoch, active=None):  # gives the test time to kill the process mid-sweep
        out = real(self, state, epoch, active)
        time.sleep(1.0)
        return out
    engine.Group.train_epoch = slow
    sys.exit(cli.main(["sweep", sys.argv[1], "--quiet"]))
""")


@pytest.mark.slow
def test_resume_after_kill_9(reference, tmp_path):
    cfg = str(_write_config(tmp_path))
    folder = tmp_path / "results" / "tiny"
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, cfg])
    manifest = folder / "checkpoints" / "group0.json"
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            if manifest.exists() and json.loads(manifest.read_text())["epoch"] >= 2:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the sweep never reached its second checkpoint")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert json.loads((folder / "status.json").read_text()) == {"complete": False, "format": 2}
    assert cli.main(["sweep", cfg, "--quiet", "--resume"]) == 0
    assert_same_files(reference, folder)


@pytest.mark.slow
def test_resume_with_another_config_is_refused(reference, tmp_path, capsys):
    cfg = _write_config(tmp_path, epochs=5)
    target = tmp_path / "results" / "tiny"
    target.mkdir(parents=True)
    (target / "config.yaml").write_text((reference / "config.yaml").read_text())
    (target / "status.json").write_text('{"complete": false}')
    assert cli.main(["sweep", str(cfg), "--quiet", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "epochs" in err and "--resume" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"epoch": 3}, "did you mean"),
        ({"batch_size": 100000}, "batch_size"),
        ({"losses": ["no_such_module:loss"]}, "no_such_module"),
        ({"dataset": {"name": "mnist", "data_dir": "EMPTY"}}, "mnist"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch, changes,
                                                  needle):
    if changes.get("dataset", {}).get("data_dir") == "EMPTY":
        (tmp_path / "empty").mkdir()
        changes = {"dataset": {"name": "mnist", "data_dir": str(tmp_path / "empty")}}
        monkeypatch.setenv("LOSSJAX_DATA_DIR", str(tmp_path / "cache"))
    assert cli.main(["sweep", str(_write_config(tmp_path, **changes)), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_gradient_sign_study_runs_on_a_sweep(reference, tmp_path):
    import shutil

    study = experiment("gradient_sign")
    folder = tmp_path / "copy"
    shutil.copytree(reference, folder)
    out = study.analyse(folder)
    per_loss = {r["loss"]: r["wrong_frac"] for r in out["per_loss_chosen"]}
    # The sign facts, seen in training: CE and exp-MSE never push a wrong logit up, MSE does.
    assert per_loss["cross_entropy"] == 0 and per_loss["exp_mse"] == 0
    assert per_loss["mse"] > 0.1
    lo, hi = out["all_rates"]["ci95"]
    assert lo <= out["all_rates"]["spearman"] <= hi
    for name in ("gradient_sign.json", "gradient_sign.md", "gradient_sign.png"):
        assert (folder / name).stat().st_size > 0


class _Stream:
    def __init__(self, tty):
        self.tty, self.text = tty, ""

    def isatty(self):
        return self.tty

    def write(self, s):
        self.text += s

    def flush(self):
        pass


@pytest.mark.parametrize("tty", [True, False])
def test_progress_bar_on_a_terminal_log_lines_otherwise(tty, caplog):
    from lossjax.log import Progress

    stream = _Stream(tty)
    with caplog.at_level(logging.INFO, logger="lossjax"), \
            Progress(total=20, enabled=True, stream=stream) as p:
        for done in (0, 5, 10, 20):
            p.update(done, f"epoch {done // 5}")
    lines = [r.getMessage() for r in caplog.records]
    if tty:  # tqdm's bar, finished
        assert "20/20" in stream.text and "member-epochs" in stream.text and not lines
    else:
        assert len(lines) == 3 and all("ETA" in ln and "/20 member-epochs" in ln for ln in lines)
        assert stream.text == ""


def test_no_progress_writes_nothing(caplog):
    from lossjax.log import Progress

    stream = _Stream(True)
    with caplog.at_level(logging.INFO, logger="lossjax"), \
            Progress(total=4, enabled=False, stream=stream) as p:
        for done in range(5):
            p.update(done, "")
    assert stream.text == "" and not caplog.records


def test_progress_of_a_block_whose_every_member_diverged_warns_nothing():
    metrics = {"diverged": np.array([True, True])}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's All-NaN RuntimeWarning would fail this
        text = sweep._progress_text(0, 2, 1, 3, metrics, {"val_acc": np.array([np.nan] * 2)})
        assert "best val acc nan" in text and "diverged 2" in text
        assert "best val acc 0.500" in sweep._progress_text(
            0, 2, 1, 3, metrics, {"val_acc": np.array([np.nan, 0.5])})
