"""The worked notebook (experiments/walkthrough.py, jupytext percent format) runs from top to
bottom against the current code, as a user would run it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "experiments" / "walkthrough.py"


@pytest.mark.slow  # the notebook trains several sweeps
def test_the_walkthrough_notebook_runs(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "MPLBACKEND": "Agg"}
    r = subprocess.run([sys.executable, str(NOTEBOOK)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("walkthrough", "walkthrough_smoothed"):
        assert (tmp_path / "runs" / name / "summary.csv").is_file()
    assert "pushes up 0% of the wrong-class logits" in r.stdout
