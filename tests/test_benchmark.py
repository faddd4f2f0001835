"""Smoke test of ``make bench``: the benchmark runs end to end on a tiny model and reports what
it promises (no timings are asserted: they belong to the benchmark, not to tests)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_benchmark_runs_and_reports(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "benchmark.py"), "--hidden", "8,8",
         "--members", "1,2", "--reps", "1", "--steps", "8", "--data", "random",
         "--train-examples", "1024", "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "per-step loop" in proc.stdout and "matmuls only" in proc.stdout
    report = json.loads(out.read_text())
    assert report["header"]["data"]["kind"] == "random"
    variants = [(r["variant"], r["members"]) for r in report["rows"]]
    assert variants == [("per-step loop", 1), ("engine", 1), ("engine", 2), ("matmuls only", 1)]
    for row in report["rows"]:
        assert row["recompiles_after_warmup"] == 0, row
        assert row["model_epochs_per_s"]["median"] > 0
    assert report["rows"][0]["vs_loop"] == 1.0


@pytest.mark.slow
def test_benchmark_runs_the_cnn(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "benchmark.py"), "--model", "cnn",
         "--channels", "4,8", "--hidden", "16", "--members", "1,2", "--reps", "1", "--steps",
         "8", "--data", "random", "--train-examples", "1024", "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["header"]["model_kind"] == "cnn" and "CNN 28x28x1" in report["header"]["model"]
    variants = [(r["variant"], r["members"]) for r in report["rows"]]
    assert variants == [("per-step loop", 1), ("engine", 1), ("engine", 2)]
    for row in report["rows"]:
        assert row["recompiles_after_warmup"] == 0, row
        assert row["gflops"] > 0
