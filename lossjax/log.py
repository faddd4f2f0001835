"""Shows the ``lossjax`` logger's records on stderr, for the command and for ``lossjax.run``.

The library only logs; whoever runs it decides what is shown. Imports nothing heavy, so the
command can use it before it knows its subcommand.
"""

from __future__ import annotations

import contextlib
import logging
import sys


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
