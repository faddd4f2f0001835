"""Processes started wrongly, as a hostile (or hurried) user would: configs that differ, ids
that collide, variables half set, signals to one process. Each must end with one line from
every process and a non-zero exit, or run correctly; none may hang, and the folder left must
be one that a rerun or ``--resume`` can use.

Two processes on 127.0.0.1 with gloo, as in ``test_multihost``.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from conftest import MULTIHOST_CONFIG, MULTIHOST_SWEEP, finish, free_port, multihost_config

INTERRUPTED = "lossjax: interrupted; finished epochs are kept (rerun with --resume)."


def _launch(cfg: str, per_process: list[dict], speed="fast", timeout="60", port=None):
    """One process per entry of ``per_process`` (``id``: its JAX_PROCESS_ID, ``args``: extra
    sweep arguments, ``env``: extra variables, ``cfg``: its own config, ``code``: Python run
    before the sweep), all meeting at one
    coordinator; JAX_NUM_PROCESSES is the number of entries unless an entry's env says
    otherwise."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    base.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
                JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port or free_port()}",
                JAX_NUM_PROCESSES=str(len(per_process)), LOSSJAX_DISTRIBUTED_TIMEOUT=timeout)
    return [subprocess.Popen(
        [sys.executable, "-c", p.get("code", "") + MULTIHOST_SWEEP, p.get("cfg", cfg), speed,
         *p.get("args", ())],
        env={**base, "JAX_PROCESS_ID": str(p.get("id", i)), **p.get("env", {})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i, p in enumerate(per_process)]


def _lossjax_lines(err: str) -> list[str]:
    """What lossjax printed (gloo's C++ layer adds its own "connected" lines)."""
    return [line for line in err.splitlines() if line.startswith("lossjax:")]


def _one_line_each(results, needle: str, code: int = 2) -> None:
    for rc, _, err in results:
        assert rc == code, err[-3000:]
        assert len(_lossjax_lines(err)) == 1 and needle in err.splitlines()[-1], err[-3000:]


def _run_one(tmp_path, env: dict):
    """One process, started with ``env`` (the JAX_ variables replaced by it)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    return subprocess.run([sys.executable, "-c", MULTIHOST_SWEEP,
                           multihost_config(tmp_path, "runs"), "fast"],
                          env={**base, "JAX_PLATFORMS": "cpu", **env}, capture_output=True,
                          text=True, timeout=120)


# ---- configs and data that differ ------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("setting", "key"), [
    # Same shapes: would train process 1's members at its rates under process 0's labels.
    ("optimizer.learning_rate.mse=[0.1,0.3]", "optimizer.learning_rate.mse"),
    # Other shapes: would fail minutes later inside a collective, or hang.
    ("losses=[mse]", "losses"),
])
def test_configs_that_differ_stop_every_process_before_the_folder_is_claimed(
        tmp_path, setting, key):
    cfg = multihost_config(tmp_path, "runs")
    results = finish(_launch(cfg, [{}, {"args": ["--set", setting]}]))
    _one_line_each(results, f"process 1's config differs from process 0's at {key}")
    assert "--set values" in results[0][2].splitlines()[-1]
    assert not (tmp_path / "runs").exists()


# Process 1's copy of the data differs in one test pixel (a corrupt copy that its checksum
# would not catch, or another lossjax's preprocessing).
OTHER_DATA = """
from lossjax import data
real = data.preprocess
def preprocess(ds, **kw):
    ds = real(ds, **kw)
    x = ds.x_test.copy(); x[0, 0] += 1
    return ds.__class__(**{**ds.__dict__, "x_test": x})
data.preprocess = preprocess
"""


@pytest.mark.slow
def test_data_that_differ_stop_every_process_before_training(tmp_path):
    cfg = multihost_config(tmp_path, "runs")
    results = finish(_launch(cfg, [{}, {"code": OTHER_DATA}]))
    _one_line_each(results, "process 1's data differs from process 0's at test; give every host")
    # The folder process 0 claimed for it is gone again: a rerun starts afresh.
    assert not (tmp_path / "runs").exists()


# ---- variables half set or wrong ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("env", "needles"), [
    # Without a coordinator these were ignored: a whole one-process sweep ran as the writer.
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}, ["JAX_COORDINATOR_ADDRESS is not"]),
    ({"JAX_PROCESS_ID": "1"}, ["JAX_COORDINATOR_ADDRESS and JAX_NUM_PROCESSES are not"]),
    ({"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1",
      "LOSSJAX_DISTRIBUTED_TIMEOUT": "abc"},
     ["LOSSJAX_DISTRIBUTED_TIMEOUT='abc'", "whole number of seconds"]),
    ({"JAX_COORDINATOR_ADDRESS": "127.0.0.1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"},
     ["take host:port"]),
])
def test_distributed_variables_that_cannot_work_are_one_line(tmp_path, env, needles):
    r = _run_one(tmp_path, env)
    assert r.returncode == 2, r.stderr[-3000:]
    assert r.stderr.count("\n") == 1 and all(n in r.stderr for n in needles), r.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_two_processes_with_id_0_are_one_line_each(tmp_path):
    cfg = multihost_config(tmp_path, "runs")
    port = free_port()
    one = {"id": 0, "env": {"JAX_NUM_PROCESSES": "2"}}
    procs = _launch(cfg, [one], timeout="20", port=port)
    time.sleep(5)  # the first one's coordinator is up: the second finds its port taken
    procs += _launch(cfg, [one], timeout="20", port=port)
    results = finish(procs)
    assert [rc for rc, _, _ in results] == [2, 2], results
    first, second = (err.splitlines()[-1] for _, _, err in results)
    assert "did not all meet" in first and "own JAX_PROCESS_ID" in first
    assert "another process here was started with JAX_PROCESS_ID=0" in second
    for _, _, err in results:
        assert len(_lossjax_lines(err)) == 1, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_three_processes_declared_and_two_started_is_one_line_each(tmp_path):
    cfg = multihost_config(tmp_path, "runs")
    env = {"JAX_NUM_PROCESSES": "3"}
    results = finish(_launch(cfg, [{"env": env}, {"env": env}], timeout="10"))
    _one_line_each(results, "did not all meet")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_process_with_another_output_dir_stops_every_process(tmp_path):
    # Process 1 alone told to write elsewhere (as a host whose shared filesystem is mounted
    # at another path would): its config differs only in output.dir, which the folder check
    # names; the folder process 0 claimed is left for a rerun.
    cfg = multihost_config(tmp_path, "runs")
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**MULTIHOST_CONFIG,
                                     "output": {"dir": str(tmp_path / "elsewhere")}}))
    results = finish(_launch(cfg, [{}, {"cfg": str(other)}]))
    _one_line_each(results, "every process shares")
    assert not (tmp_path / "runs" / "hosts" / "epochs.csv").exists()
    assert not (tmp_path / "elsewhere").exists()


# ---- signals ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_to_process_0_stops_it_at_once_and_the_folder_resumes(tmp_path):
    cfg = multihost_config(tmp_path, "runs")
    folder = tmp_path / "runs" / "hosts"
    manifest = folder / "checkpoints" / "group0.json"
    args = ["--set", "epochs=10"]
    procs = _launch(cfg, [{"args": args}, {"args": args}], speed="slow")
    deadline = time.time() + 180
    while not (manifest.exists() and json.loads(manifest.read_text())["epoch"] >= 1):
        assert time.time() < deadline, "the sweep never finished an epoch"
        assert all(p.poll() is None for p in procs), finish(procs)
        time.sleep(0.05)
    procs[0].send_signal(signal.SIGTERM)
    # JAX's preemption service used to catch the signal, log it and let the sweep run on.
    code, _, err = finish(procs[:1])[0]
    assert code == 143 and err.splitlines()[-1] == INTERRUPTED, err[-3000:]
    assert "SIGTERM caught" not in err
    # Process 1 loses its peer mid-collective: lossjax's line, then JAX's coordination
    # service aborts it (its own stack trace, from a C++ thread: nothing to catch).
    code, _, err = finish(procs[1:])[0]
    assert code != 0 and len(_lossjax_lines(err)) <= 1, err[-3000:]
    assert json.loads((folder / "status.json").read_text()) == {"complete": False, "format": 2}
    # Each host has its own copy of the data: process 1's dataset.data_dir may differ (digits
    # is embedded, so it is not read) and the sweep still resumes.
    mine = ["--set", f"dataset.data_dir={tmp_path / 'elsewhere'}"]
    results = finish(_launch(cfg, [{"args": [*args, "--resume"]},
                                    {"args": [*args, "--resume", *mine]}]))
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    assert json.loads((folder / "status.json").read_text()) == {"complete": True, "format": 2}


# ---- devices ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_resuming_on_other_devices_says_so_on_the_command_line(tmp_path):
    cfg = multihost_config(tmp_path, "runs")
    folder = tmp_path / "runs" / "hosts"
    manifest = folder / "checkpoints" / "group0.json"
    base = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    base["JAX_PLATFORMS"] = "cpu"

    def sweep(devices: int, *args: str, speed="fast"):
        env = {**base, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
        return subprocess.Popen([sys.executable, "-c", MULTIHOST_SWEEP, cfg, speed, *args], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    p = sweep(4, speed="slow")
    deadline = time.time() + 120
    try:
        while not (manifest.exists() and json.loads(manifest.read_text())["epoch"] >= 1):
            assert time.time() < deadline and p.poll() is None, finish([p])
            time.sleep(0.05)
    finally:
        p.send_signal(signal.SIGKILL)
        finish([p])
    ((code, _, err),) = finish([sweep(1, "--resume")])
    assert code == 0, err[-3000:]
    assert _lossjax_lines(err) == [
        f"lossjax: --resume: {folder} was started on 4 cpu device(s) and continues on 1 cpu "
        "device(s); report.md notes it beside the results"], err
    assert "other devices" in (folder / "report.md").read_text()
