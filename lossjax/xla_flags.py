"""``XLA_FLAGS`` checked before JAX starts its backend, so that a bad flag is one lossjax line.

XLA reads ``XLA_FLAGS`` when the first backend starts (``jax.devices()``, the first array),
not when jax is imported, and a flag it does not know, a value it cannot read, or a word
without ``--`` (which it takes for a file of flags) ends the process with a C++ fatal error:
a line of XLA's own, or the usage text of every flag it has (some 90 lines), and no way to
catch it in Python.

How to know which flags XLA takes: jaxlib has no list of them in Python, and a list kept here
would drift with each jaxlib (flags come and go between releases); the ``--xla_`` prefix
alone says nothing (``--xla_bogus`` is fatal too). The one reliable judge is XLA itself, so
:func:`check` starts a child Python that starts the CPU backend under the same variable
(about a second, paid only when ``XLA_FLAGS`` is set), and reads XLA's verdict from the lines
it is known to write (``parse_flags_from_env.cc``, ``command_line_flags.cc``): "Unknown flag in
XLA_FLAGS: --x", "Couldn't interpret value V for flag F", "Could not open file". The CPU
backend suffices: jax starts it beside any accelerator, and every XLA flag (``--xla_gpu_*``
included) is registered in every backend. A child that fails in any other way is not judged:
the run goes on and meets whatever it met.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from lossjax.errors import LossjaxError

_PROBE = "import jax; jax.devices('cpu')"
_UNKNOWN = re.compile(r"Unknown flags? in XLA_FLAGS: (.+)")
_VALUE = re.compile(r"Couldn't interpret value (.*) for flag (\S+?)\.?$")
_FILE = re.compile(r'Could not open file "(.*)" to read flags')


def _verdict(stderr: str) -> str | None:
    """What XLA said was wrong with ``XLA_FLAGS``, as a lossjax message; None if it said
    nothing we recognise."""
    for line in stderr.splitlines():
        if m := _UNKNOWN.search(line):
            return (f"XLA_FLAGS: XLA has no flag {m.group(1).strip()}; remove it or correct its "
                    "name (XLA would end the process at its first use)")
        if m := _VALUE.search(line):
            return (f"XLA_FLAGS: XLA cannot read the value {m.group(1)!r} of --{m.group(2)}; "
                    "give a value of the flag's type")
        if m := _FILE.search(line):
            return (f"XLA_FLAGS: {m.group(1)!r} does not start with '--', so XLA reads it as a "
                    "file of flags, and there is no such file; write flags as --name=value")
    return None


def check(environ=None, timeout: float = 120.0) -> None:
    """Raises :class:`LossjaxError` (one line naming the flag) if XLA would refuse
    ``XLA_FLAGS``; does nothing when it is unset or empty, or when the probe cannot tell."""
    environ = os.environ if environ is None else environ
    if not environ.get("XLA_FLAGS", "").strip():
        return
    env = {**environ, "JAX_PLATFORMS": "cpu"}
    try:
        r = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                           text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return
    if r.returncode != 0 and (message := _verdict(r.stderr)):
        raise LossjaxError(message)
