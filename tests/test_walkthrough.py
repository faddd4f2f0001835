"""The worked notebook: experiments/walkthrough.py (jupytext percent format) runs from top to
bottom against the current code, as a user would run it, as a script and as a notebook; and the
executed copy experiments/walkthrough.ipynb is made from the current walkthrough.py."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import experiment

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
NOTEBOOK = EXPERIMENTS / "walkthrough.py"
SWEEPS = ("walkthrough", "walkthrough_smoothed", "walkthrough_literature")


@pytest.fixture(scope="module")
def build():
    """experiments/build_notebook.py (what `make notebook` runs), imported from its file."""
    for name in ("jupytext", "nbclient", "nbformat", "ipykernel"):
        pytest.importorskip(name, reason="`make notebook` needs the dev extra's notebook tools")
    return experiment("build_notebook")


def _cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in nb.cells]


def test_the_committed_notebook_is_made_from_the_script(build):
    import nbformat

    committed = nbformat.read(build.NOTEBOOK, as_version=4)
    if _cells(committed) != _cells(build.from_script(build.SCRIPT)):
        pytest.fail("experiments/walkthrough.ipynb is not what experiments/walkthrough.py makes "
                    "of it: run `make notebook` and commit the .ipynb", pytrace=False)
    code = [c for c in committed.cells if c.cell_type == "code"]
    assert all(c.outputs or c.execution_count for c in code), "committed without running"
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))


@pytest.mark.slow  # the notebook trains several sweeps
def test_the_walkthrough_notebook_runs(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "MPLBACKEND": "Agg"}
    r = subprocess.run([sys.executable, str(NOTEBOOK)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    for name in SWEEPS:
        assert (tmp_path / "runs" / name / "summary.csv").is_file()
    assert "pushes up 0% of the wrong-class logits" in r.stdout


@pytest.mark.slow  # the same sweeps, in a Jupyter kernel (about 45 s on two cores)
def test_the_notebook_executes_in_a_kernel_and_shows_its_figures(build, tmp_path, monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")  # the kernel inherits the environment
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own inline backend draws
    nb = build.strip(build.execute(build.from_script(build.SCRIPT), tmp_path), tmp_path)
    for name in SWEEPS:  # in the kernel's folder, not the repo
        assert (tmp_path / "runs" / name / "summary.csv").is_file()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs)
    assert "pushes up 0% of the wrong-class logits" in text
    assert str(tmp_path) not in text
    # res.plot(...) of test_accuracy, test_error and reliability are drawn, not '<Figure ...>'.
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3
    assert not [o for o in outputs if o.get("name") == "stderr"]
