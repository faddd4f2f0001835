"""One sweep over two processes on 127.0.0.1, the way it runs over two hosts: JAX's
distributed runtime with CPU collectives through gloo, two forced host devices per process.

The results must equal, byte for byte (wall time aside), those of one process with four
devices, also after every process is killed with ``kill -9`` and the sweep resumed.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import (
    MULTIHOST_CONFIG,
    MULTIHOST_SWEEP,
    assert_same_files,
    finish,
    forced_devices_env,
    free_port,
    multihost_config,
)

pytestmark = pytest.mark.slow  # every case starts two or more lossjax processes


def _start(cfg: str, processes: int, devices: int, *args: str, speed="fast", env=None):
    # One process of 4 devices is compared bit for bit with two of 2: XLA's thread pool is held
    # at one size in both (forced_devices_env says why).
    base = {**forced_devices_env(devices, nproc=4), **(env or {})}
    if processes > 1:
        base.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{free_port()}",
                    JAX_NUM_PROCESSES=str(processes), LOSSJAX_DISTRIBUTED_TIMEOUT="60")
    return [subprocess.Popen([sys.executable, "-c", MULTIHOST_SWEEP, cfg, speed, *args],
                             env={**base, "JAX_PROCESS_ID": str(i)} if processes > 1 else base,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(processes)]


def _ok(procs) -> None:
    for code, _, err in finish(procs):
        assert code == 0, err[-3000:]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("one")
    _ok(_start(multihost_config(tmp, "runs"), 1, 4))
    return tmp / "runs" / "hosts"


def test_two_processes_match_one_byte_for_byte(one_process, tmp_path):
    _ok(_start(multihost_config(tmp_path, "runs"), 2, 2))
    folder = tmp_path / "runs" / "hosts"
    assert_same_files(one_process, folder)
    env = json.loads((folder / "env.json").read_text())
    assert env["process_count"] == 2 and len(env["devices"]) == 4


def _kill_9_after_an_epoch(procs, manifest: Path, timeout: float) -> None:
    """Kills every process with SIGKILL once ``manifest`` (a group's checkpoint) is after an
    epoch."""
    deadline = time.time() + timeout
    try:
        while not (manifest.exists() and json.loads(manifest.read_text())["epoch"] >= 1):
            assert time.time() < deadline, f"{manifest.name} never recorded an epoch"
            assert all(p.poll() is None for p in procs), finish(procs)
            time.sleep(0.05)
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
        finish(procs)


def test_kill_9_of_both_processes_then_resume_matches(one_process, tmp_path):
    cfg = multihost_config(tmp_path, "runs")
    folder = tmp_path / "runs" / "hosts"
    manifest = folder / "checkpoints" / "group0.json"
    _kill_9_after_an_epoch(_start(cfg, 2, 2, speed="slow"), manifest, 120)
    assert json.loads((folder / "status.json").read_text()) == {"complete": False, "format": 2}
    # Each process saved its own members: no file holds another process's state.
    assert sorted(p.name for p in (folder / "checkpoints").glob("*.npz")) == [
        "group0.e1.p0.npz", "group0.e1.p1.npz"]
    _ok(_start(cfg, 2, 2, "--resume"))
    assert_same_files(one_process, folder)


def test_a_folder_one_process_cannot_see_stops_every_process(tmp_path):
    # Two "hosts" whose output.dir, the same path, are different folders: the second process
    # reads its own copy of the config, which points elsewhere, as a host without the shared
    # filesystem would.
    cfg0 = multihost_config(tmp_path, "runs")
    cfg1 = tmp_path / "other.yaml"
    cfg1.write_text(yaml.safe_dump({**MULTIHOST_CONFIG,
                                    "output": {"dir": str(tmp_path / "elsewhere")}}))
    port = free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
           "JAX_NUM_PROCESSES": "2", "LOSSJAX_DISTRIBUTED_TIMEOUT": "60"}
    procs = [subprocess.Popen([sys.executable, "-c", MULTIHOST_SWEEP, cfg, "fast"],
                              env={**env, "JAX_PROCESS_ID": str(i)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for i, cfg in enumerate((cfg0, str(cfg1)))]
    results = finish(procs)
    for code, _, err in results:
        assert code == 2, err[-3000:]
        assert "every process shares" in err.splitlines()[-1]
    assert not (tmp_path / "runs" / "hosts" / "epochs.csv").exists()


@pytest.mark.parametrize(("env", "needle"), [
    ({"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1"}, "JAX_NUM_PROCESSES"),
    # The other process never comes: JAX would abort with a C++ stack trace after its timeout.
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1", "LOSSJAX_DISTRIBUTED_TIMEOUT": "3"},
     "did not all meet"),
])
def test_a_distributed_start_that_cannot_work_is_one_line(tmp_path, env, needle):
    env = {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{free_port()}", **env}
    base = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    r = subprocess.run([sys.executable, "-c", MULTIHOST_SWEEP,
                        multihost_config(tmp_path, "runs"), "fast"],
                       env={**base, "JAX_PLATFORMS": "cpu", **env}, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr
    assert not (tmp_path / "runs").exists()


RACE = ["--set", "search.method=race", "--set", "search.rungs=[1,2]",
        "--set", "optimizer.learning_rate.mse=[0.05,0.2,30.0]", "--set", "search.extend=1",
        "--set", "confirm.seeds=[9]"]


@pytest.fixture(scope="module")
def raced_one(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("raced")
    _ok(_start(multihost_config(tmp, "runs"), 1, 4, *RACE))
    return tmp / "runs" / "hosts"


def test_a_race_over_two_processes_decides_as_one_process_does(raced_one, tmp_path):
    # mse at 30 is hopeless at once. Every process decides from the same rows, so two processes
    # skip the same calls, plan the same later stages and write what one process writes.
    _ok(_start(multihost_config(tmp_path, "runs"), 2, 2, *RACE))
    two = tmp_path / "runs" / "hosts"
    assert_same_files(raced_one, two)
    for name in ("stops.csv", "added.csv"):
        assert (raced_one / name).read_bytes() == (two / name).read_bytes()
    assert len((two / "stops.csv").read_text().splitlines()) > 1  # the race stopped some
    assert "confirmation" in (two / "added.csv").read_text()


def test_kill_9_of_both_processes_in_a_later_stage_then_resume_matches(raced_one, tmp_path):
    cfg = multihost_config(tmp_path, "runs")
    folder = tmp_path / "runs" / "hosts"
    manifest = folder / "checkpoints" / "group1.json"  # the extension stage's program
    _kill_9_after_an_epoch(_start(cfg, 2, 2, *RACE, speed="slow"), manifest, 300)
    _ok(_start(cfg, 2, 2, *RACE, "--resume"))
    assert_same_files(raced_one, folder)
    for name in ("stops.csv", "added.csv"):
        assert (raced_one / name).read_bytes() == (folder / name).read_bytes()
