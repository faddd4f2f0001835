"""Shared test helpers."""

import os
import subprocess
import sys

#: A two-loss, few-member digits sweep that trains in a few seconds: the folder the safety,
#: resume and machine tests take apart.
SMALL_SWEEP = {
    "name": "small",
    "seeds": [0, 1],
    "epochs": 3,
    "batch_size": 128,
    "block_size": 2,
    "losses": ["cross_entropy", "mse"],
    "dataset": {"name": "digits"},
    "model": {"hidden": [[8]]},
    "optimizer": {"learning_rate": [0.1]},
    "eval": {"target_accuracy": 0.5},
}


def run_in_subprocess(code: str, marker: str) -> None:
    """Runs ``code`` in a fresh CPU-only Python and checks it printed ``marker``. For what must
    not leak into the test process: forced host devices, ``jax_enable_x64``."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300)
    assert marker in r.stdout, r.stderr[-3000:]
