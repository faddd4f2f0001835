"""Shared test helpers."""

import os
import subprocess
import sys


def run_in_subprocess(code: str, marker: str) -> None:
    """Runs ``code`` in a fresh CPU-only Python and checks it printed ``marker``. For what must
    not leak into the test process: forced host devices, ``jax_enable_x64``."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300)
    assert marker in r.stdout, r.stderr[-3000:]
