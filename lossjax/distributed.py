"""One sweep over several processes (hosts, or GPUs of one host): starting JAX's distributed
runtime, and the decisions that one process takes for all.

Every process runs the same ``lossjax sweep`` command and computes its devices' share of the
members; process 0 alone writes the results folder and prints. Whatever can go differently
on different processes (a data file missing on one host, a folder another host cannot see)
is settled in a :func:`stage`: each process reports whether its part succeeded, and all of
them stop together, each with the same one-line reason, instead of leaving the others waiting
in a collective. With one process nothing here communicates.

Before anything is claimed or trained the processes also prove that they run the same sweep
(:func:`same_everywhere`): a config that differs in a learning rate would otherwise train
process 1's members at its rates under process 0's labels, and one that differs in a shape
would fail minutes later inside a collective.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
import threading

import numpy as np

from lossjax import interrupts
from lossjax.errors import ConfigError, LossjaxError, one_line
from lossjax.folder import diff_keys

#: JAX's variables for plain hosts: the coordinator ``host:port`` (a port process 0 can
#: open), the number of processes and this process's id.
PLAIN_HOSTS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def _launched_by_cluster() -> bool:
    """Whether a launcher that JAX detects by itself started several processes: SLURM's srun,
    Open MPI's mpirun, a multi-host Cloud TPU slice. ``LOSSJAX_DISTRIBUTED=1`` asks JAX to
    detect any other environment it supports."""
    env = os.environ
    if env.get("LOSSJAX_DISTRIBUTED") == "1":
        return True
    slurm_tasks = env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or "1"
    return ((env.get("SLURM_JOB_ID") is not None and slurm_tasks.isdigit()
             and int(slurm_tasks) > 1)
            or int(env.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1
            or "," in env.get("TPU_WORKER_HOSTNAMES", ""))


def _int_env(name: str) -> int:
    value = os.environ.get(name, "")
    if not value.strip().isdigit():
        raise ConfigError(
            f"{name}={value!r}: JAX_COORDINATOR_ADDRESS is set, so {name} must be set too, to a "
            f"whole number ({', '.join(PLAIN_HOSTS)} together start one sweep on several hosts)")
    return int(value)


def _timeout() -> int:
    """``LOSSJAX_DISTRIBUTED_TIMEOUT``: how long the processes wait for one another to start."""
    value = os.environ.get("LOSSJAX_DISTRIBUTED_TIMEOUT", "300")
    if not value.strip().isdigit() or int(value) < 1:
        raise ConfigError(
            f"LOSSJAX_DISTRIBUTED_TIMEOUT={value!r}: it takes a whole number of seconds, at "
            "least 1 (default 300), that the processes wait for one another at the start")
    return int(value)


def _check_complete() -> None:
    """A process id or count without a coordinator would silently run a whole one-process
    sweep, as the writer, beside the others; say which variable is missing instead."""
    env = os.environ
    given = [k for k in PLAIN_HOSTS[1:] if env.get(k)]
    if given and not env.get("JAX_COORDINATOR_ADDRESS") and not _launched_by_cluster():
        missing = [k for k in PLAIN_HOSTS if not env.get(k)]
        raise ConfigError(
            f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} set but "
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not: set all of "
            f"{', '.join(PLAIN_HOSTS)} on every process to run one sweep over several, or "
            "none of them to run one process")


def _check_port_free(address: str) -> None:
    """Process 0 serves the coordinator on ``address``'s port. If the port is taken on this
    host, JAX would share it (its server reuses ports) with a second process 0, and the two
    would register with each other's coordinator: an abort or a wait that names nothing."""
    port = address.rpartition(":")[2]
    if not port.isdigit():
        raise ConfigError(f"{address!r}: JAX_COORDINATOR_ADDRESS (and "
                          "JAX_COORDINATOR_BIND_ADDRESS) take host:port, the port process 0 "
                          "serves the coordinator on")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("", int(port)))
        except PermissionError:
            return  # a privileged port: JAX says so itself, after the wait
        except OSError:
            raise ConfigError(
                f"JAX_PROCESS_ID=0, and port {port} of the coordinator's address {address} is "
                "already in use on this host: another process here was started with "
                "JAX_PROCESS_ID=0 (give each process its own id, 0 to JAX_NUM_PROCESSES-1), or "
                "another program holds the port (choose a free one)") from None


def initialize() -> None:
    """Starts JAX's distributed runtime when the environment asks for several processes.

    Must run before any JAX array exists (JAX's rule) and before user code is imported (so a
    user's module sees the final device list). A half-set environment or a coordinator that
    cannot be reached ends with one line instead of a traceback or a hang.
    """
    import jax  # lazy: lossjax.load needs no JAX

    env = os.environ
    _check_complete()
    if env.get("JAX_COORDINATOR_ADDRESS"):
        timeout = _timeout()
        count, pid = _int_env("JAX_NUM_PROCESSES"), _int_env("JAX_PROCESS_ID")
        if not 0 <= pid < count:
            raise ConfigError(f"JAX_PROCESS_ID={pid} with JAX_NUM_PROCESSES={count}: the ids "
                              f"are 0 to {count - 1}, one per process")
        if pid == 0 and count > 1:  # JAX binds its coordinator to this address's port
            _check_port_free(env.get("JAX_COORDINATOR_BIND_ADDRESS")
                             or env["JAX_COORDINATOR_ADDRESS"])
        kwargs = dict(coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
                      num_processes=count, process_id=pid)
        where = f"the coordinator {env['JAX_COORDINATOR_ADDRESS']}"
    elif _launched_by_cluster():
        timeout = _timeout()
        kwargs, where = {}, "the cluster's coordinator"
    else:
        return
    problem = (f"the processes did not all meet at {where} within {timeout} s; start every "
               "process with the same coordinator address and its own JAX_PROCESS_ID, on a "
               "port that process 0's host can open and the others can reach "
               "(LOSSJAX_DISTRIBUTED_TIMEOUT sets the wait)")
    # JAX ends a process that waits too long with a C++ abort and a stack trace; this watchdog
    # gives the one line first. (initialize releases the GIL while it waits.)
    started = threading.Event()

    def watchdog():
        if not started.wait(timeout):
            sys.stderr.write(f"lossjax: error: {problem}\n")
            sys.stderr.flush()
            os._exit(2)

    threading.Thread(target=watchdog, daemon=True, name="lossjax-distributed-timeout").start()
    # JAX's preemption service installs its own SIGTERM handler, which only logs and lets the
    # sweep run on; lossjax does not use it (a SIGTERM stops the sweep, see interrupts).
    jax.config.update("jax_enable_preemption_service", False)
    try:
        jax.distributed.initialize(**kwargs, initialization_timeout=timeout + 60)
    except (ValueError, TypeError, RuntimeError) as e:
        raise LossjaxError(f"{problem} ({one_line(e, 160)})") from None
    finally:
        started.set()
    interrupts.reclaim()  # whatever else the runtime's C++ layer installed


def process_index() -> int:
    import jax  # lazy: lossjax.load needs no JAX

    return jax.process_index()


def is_writer() -> bool:
    """Process 0 writes the results and prints; the others compute and keep quiet."""
    return process_index() == 0


def _several() -> bool:
    import jax  # lazy: lossjax.load needs no JAX

    return jax.process_count() > 1


class Elsewhere(LossjaxError):
    """Another process failed a stage; its one-line reason is this error's message."""


_MESSAGE_BYTES = 400


def _gather(code: int, message: str) -> tuple[np.ndarray, list[str]]:
    from jax.experimental import multihost_utils  # lazy: lossjax.load needs no JAX

    buf = np.zeros(_MESSAGE_BYTES + 1, np.int32)
    raw = message.encode()[:_MESSAGE_BYTES]
    buf[0] = code
    buf[1:1 + len(raw)] = np.frombuffer(raw, np.uint8)
    rows = np.asarray(multihost_utils.process_allgather(buf))
    return rows[:, 0], [bytes(r[1:].astype(np.uint8)).rstrip(b"\0").decode(errors="replace")
                        for r in rows]


@contextlib.contextmanager
def stage(what: str, outcomes: tuple[type[BaseException], ...] = ()):
    """Runs a block on every process and agrees on how it went.

    If the block raised on some process, every process raises: that process its own exception,
    the others :class:`Elsewhere` with the first failing process's one-line message (or, for an
    exception type in ``outcomes`` — an outcome rather than an error, such as "this sweep is
    already finished" — the same type). ``what`` names the stage in those messages.
    """
    if not _several():
        yield
        return
    failure = None
    try:
        yield
    except Exception as e:  # reported to every process below, then raised again here
        failure = e
    code, message = 0, ""
    if failure is not None:
        kinds = [k for k in outcomes if isinstance(failure, k)]
        code = 2 + outcomes.index(kinds[0]) if kinds else 1
        message = one_line(failure)
    codes, messages = _gather(code, message)
    if failure is not None:
        raise failure
    bad = np.flatnonzero(codes)
    if len(bad):
        first = int(bad[0])
        if codes[first] >= 2:
            raise outcomes[codes[first] - 2](messages[first])
        raise Elsewhere(f"process {first} stopped while {what}: {messages[first]}")


def broadcast(value: np.ndarray) -> np.ndarray:
    """Process 0's ``value`` (a fixed-shape array), on every process."""
    if not _several():
        return value
    from jax.experimental import multihost_utils  # lazy: lossjax.load needs no JAX

    return np.asarray(multihost_utils.broadcast_one_to_all(value))


def barrier(name: str) -> None:
    """Returns on every process once every process has reached it (a no-op with one)."""
    if _several():
        from jax.experimental import multihost_utils  # lazy: lossjax.load needs no JAX

        multihost_utils.sync_global_devices(name)


class Mismatch(ConfigError):
    """The processes do not run the same sweep (see :func:`same_everywhere`)."""


def same_everywhere(what: str, record, fix: str) -> None:
    """Stops every process, each with one line, unless ``record`` (a JSON-serialisable dict, or
    a function making one: called only with several processes) is the same on all of them:
    process 0's is sent to the others (its size first, so that every process takes part in
    collectives of one shape whatever the records hold), and each compares it with its own.
    The line names the keys that differ and ends with ``fix``."""
    if not _several():
        return
    record = record() if callable(record) else record
    mine = json.loads(json.dumps(record, sort_keys=True, default=str))
    raw = np.frombuffer(json.dumps(mine, sort_keys=True).encode(), np.uint8).astype(np.int32)
    size = int(broadcast(np.array([len(raw)], np.int32))[0])
    buf = raw if is_writer() else np.zeros(size, np.int32)
    theirs = json.loads(bytes(broadcast(buf).astype(np.uint8)).decode())
    with stage(f"comparing the processes' {what}", (Mismatch,)):  # the same line on each
        if not is_writer() and theirs != mine:
            keys = diff_keys(theirs, mine)
            shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
            raise Mismatch(f"process {process_index()}'s {what} differs from process 0's "
                              f"at {shown}; {fix}")


def digest(*arrays: np.ndarray) -> str:
    """A sha256 of arrays' shapes, dtypes and bytes: the same value only for the same data."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()
