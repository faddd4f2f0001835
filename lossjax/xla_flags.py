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


# Forced host devices: XLA aborts on 0 or less ("vector::reserve"), and starting thousands
# takes minutes (5,000: 55 s, then a failure; 100,000: still starting after 120 s) while no
# sweep here gains from more devices than it has members per program call.
MAX_HOST_DEVICES = 1024
_DEVICE_COUNT = re.compile(r"--xla_force_host_platform_device_count=(\S*)")


def _device_count_problem(flags: str) -> str | None:
    counts = _DEVICE_COUNT.findall(flags)
    if not counts or not re.fullmatch(r"[+-]?\d+", counts[-1]):
        return None  # none given, or a value XLA itself judges
    n = int(counts[-1])
    if 1 <= n <= MAX_HOST_DEVICES:
        return None
    return (f"XLA_FLAGS: --xla_force_host_platform_device_count={counts[-1]}: give a count "
            f"from 1 to {MAX_HOST_DEVICES:,} (XLA aborts on 0 or less, and takes minutes to "
            "start thousands of devices)")


_PLATFORMS_PROBE = ("import jax; from jax._src import xla_bridge as xb; jax.devices(); "
                    "print(','.join(sorted(xb.backends())))")


def check_platforms(environ=None, timeout: float = 120.0) -> None:
    """Raises :class:`LossjaxError` naming ``JAX_PLATFORMS`` and what this machine has, if jax
    cannot start the platforms it names (jax would fail with a bare AssertionError or a
    RuntimeError at the first array). A child Python judges (about a second, only when the
    variable names something besides cpu, which is always there), so that this process starts
    no backend before ``jax.distributed.initialize``."""
    environ = os.environ if environ is None else environ
    wanted = environ.get("JAX_PLATFORMS", "").strip()
    if not wanted or wanted == "cpu":
        return
    probe = [sys.executable, "-c", _PLATFORMS_PROBE]
    try:
        r = subprocess.run(probe, env=dict(environ), capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        if r.returncode == 0:
            return
        env = {k: v for k, v in environ.items() if k != "JAX_PLATFORMS"}
        here = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return
    has = here.stdout.strip().splitlines()[-1] if here.returncode == 0 and here.stdout else "?"
    raise LossjaxError(f"JAX_PLATFORMS={wanted!r}: jax cannot start it on this machine, which "
                       f"has {has}; unset JAX_PLATFORMS or set it to one of those")


def check(environ=None, timeout: float = 120.0) -> None:
    """Raises :class:`LossjaxError` (one line naming the flag) if XLA would refuse
    ``XLA_FLAGS``, or naming ``JAX_PLATFORMS`` if jax cannot start what it names; does
    nothing when they are unset or empty, or when the probes cannot tell."""
    environ = os.environ if environ is None else environ
    if problem := _device_count_problem(environ.get("XLA_FLAGS", "")):
        raise LossjaxError(problem)
    if not environ.get("XLA_FLAGS", "").strip():
        check_platforms(environ, timeout)
        return
    env = {**environ, "JAX_PLATFORMS": "cpu"}
    try:
        r = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                           text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return
    if r.returncode != 0 and (message := _verdict(r.stderr)):
        raise LossjaxError(message)
    check_platforms(environ, timeout)
