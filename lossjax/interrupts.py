"""Ctrl-C and SIGTERM for the ``lossjax`` command: exit at once, whatever the process is doing.

A Python signal handler runs only when the main thread is back in the interpreter, which can
take minutes inside XLA; raising ``KeyboardInterrupt`` into JAX mid-compile has crashed the
process, and one raised inside an import or a garbage-collection callback can be turned into
another error or swallowed. So :class:`ExitOnSignal` lets the C-level handler wake a watcher
thread through ``signal.set_wakeup_fd``; the watcher waits for any results write in progress
(code that writes holds :data:`WRITING`), prints one line and calls ``os._exit``. Every results
file is written atomically and the folder lock dies with the process, so what is left on disk
is always a state that ``--resume`` continues.

This module imports nothing heavy: the CLI installs the watcher before JAX is loaded.
"""

from __future__ import annotations

import os
import signal
import threading

#: Held while results files are written: an interrupt waits for it, so it never lands between
#: the table and its checkpoint.
WRITING = threading.Lock()

SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: Set once the command has something on disk for an interrupt to leave (a sweep: once its
#: folder is claimed); until then :class:`ExitOnSignal` says its ``early`` message, not that
#: finished epochs are kept.
STARTED = threading.Event()


class ExitOnSignal:
    """While active, SIGINT and SIGTERM end the process with ``message`` on stderr and exit
    status 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM); with ``early``,
    ``early`` instead while :data:`STARTED` is not set."""

    def __init__(self, message: str, early: str | None = None):
        self.message = message.rstrip("\n") + "\n"
        self.early = self.message if early is None else early.rstrip("\n") + "\n"

    def __enter__(self) -> ExitOnSignal:
        STARTED.clear()
        self._r, self._w = os.pipe()
        os.set_blocking(self._w, False)
        self._old = {s: signal.signal(s, lambda *_: None) for s in SIGNALS}
        self._old_fd = signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        threading.Thread(target=self._watch, daemon=True).start()
        return self

    def _watch(self) -> None:
        data = os.read(self._r, 1)
        if not data:  # the write end was closed: the command is over
            os.close(self._r)
            return
        with WRITING:
            os.write(2, (self.message if STARTED.is_set() else self.early).encode())
            os._exit(128 + data[0])

    def __exit__(self, *exc) -> None:
        signal.set_wakeup_fd(self._old_fd)
        for s, handler in self._old.items():
            signal.signal(s, handler)
        os.close(self._w)  # the watcher reads end-of-file, closes its end and returns


def reclaim() -> None:
    """Installs this module's handlers again at the C level, where code outside Python (JAX's
    distributed runtime, a C++ library) may have replaced them since :class:`ExitOnSignal`
    began; Python still believes its own are in force, so nothing else would notice. Does
    nothing outside the main thread or where no Python handler was set."""
    if threading.current_thread() is not threading.main_thread():
        return
    for s in SIGNALS:
        handler = signal.getsignal(s)
        if callable(handler):
            signal.signal(s, handler)
