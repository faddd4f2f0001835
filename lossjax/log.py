"""What a run tells its user: the ``lossjax`` logger's records on stderr (for the command and
for ``lossjax.run``), and a sweep's progress.

The library only logs; whoever runs it decides what is shown. Imports nothing heavy, so the
command can use it before it knows its subcommand.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time


@contextlib.contextmanager
def log_to_stderr(level: int = logging.INFO):
    """Shows the ``lossjax`` logger's records from ``level`` up on stderr as "lossjax: ..."
    lines while the block runs (the library only logs; the command, and ``lossjax.run`` where
    logging is not configured, show them)."""
    logger = logging.getLogger("lossjax")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("lossjax: %(message)s"))
    handler.setLevel(level)
    saved = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)


class Progress:
    """Member-epochs done: a bar on a terminal or in a notebook (``tqdm.auto`` draws a widget
    there), a log line per epoch otherwise (a file, a CI log), or nothing."""

    def __init__(self, total: int, enabled: bool, stream=None):
        self.total, self.enabled = total, enabled
        stream = stream or sys.stderr  # the one in use now, not at import
        self.bar = None
        if enabled and ("ipykernel" in sys.modules or stream.isatty()):
            from tqdm.auto import tqdm  # lazy: only where a bar is drawn

            self.bar = tqdm(total=total, unit=" member-epochs", file=stream, leave=True,
                            dynamic_ncols=True, mininterval=0.5)
        self.t0 = time.perf_counter()
        self.done0 = None

    def update(self, done: int, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(done - self.bar.n)
            return
        if self.done0 is None:  # ETA from work done in this process (resume-aware)
            self.done0, self.t0 = done, time.perf_counter()
            return
        elapsed = time.perf_counter() - self.t0
        rate = (done - self.done0) / elapsed if elapsed > 0 else 0
        eta = f"{(self.total - done) / rate:.0f}s" if rate else "?"
        logging.getLogger("lossjax").info("%d/%d member-epochs  %.1fs  ETA %s  %s", done,
                                          self.total, elapsed, eta, text)

    def grow(self, total: int) -> None:
        """A new total: a sweep's later stages add members as its rows decide them."""
        self.total = total
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
