"""lossjax from Python: run a sweep, load a results folder, look at it, compare folders, take
the paired effects of gradient edits.

    import lossjax
    res = lossjax.run("configs/digits.yaml", overrides=["epochs=3"])   # or a dict, or a Config
    res.summary                     # pandas DataFrame: one row per loss (and hidden size, ...)
    res.epochs                      # pandas DataFrame: one row per member and epoch
    res.plot("test_accuracy")       # a matplotlib Figure (shown inline in a notebook)
    res = lossjax.load("runs/digits")

The ``lossjax`` command is a thin layer over the same functions. Problems raise the
one-line exceptions of :mod:`lossjax.errors` (``ConfigError`` for a bad config, ...). Messages
go to the ``lossjax`` logger; progress is a bar in a terminal or notebook.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from pathlib import Path

from lossjax import analysis, distributed, tables
from lossjax.log import log_to_stderr

log = logging.getLogger("lossjax")


@dataclasses.dataclass(frozen=True)
class Results(analysis.Results):
    """A finished sweep's results folder, read and checked.

    ``path``; ``config`` (the resolved config as a dict); ``epochs`` and ``summary`` (pandas
    DataFrames of ``epochs.csv`` and ``summary.csv``; the columns are described in
    ``lossjax.tables``); ``env`` (``env.json``: versions, devices, provenance)."""

    @property
    def env(self) -> dict | None:
        return tables.read_env(self.path)

    def figures(self) -> dict:
        """Every plot of the folder as a matplotlib ``Figure``, by name."""
        from lossjax import plots  # lazy: matplotlib, only once a figure is asked for

        return plots.figures(self)

    def plot(self, name: str = "test_accuracy"):
        """One plot as a matplotlib ``Figure``: ``test_accuracy``, ``test_error``,
        ``train_loss``, ``lr_sensitivity`` or ``wrong_direction``."""
        from lossjax import plots  # lazy: matplotlib, only once a figure is asked for

        return plots.figures(self, [name])[name]

    def write_plots(self) -> list[Path]:
        """(Re)draws ``plots/`` in the folder; returns the files."""
        from lossjax import plots  # lazy: matplotlib, only once a figure is asked for

        return plots.plot_results(self.path)

    def report(self) -> str:
        """``report.md``'s Markdown text."""
        from lossjax import report  # lazy: matplotlib (through plots)

        return report.render(self)

    def write_report(self) -> Path:
        from lossjax import report  # lazy: matplotlib (through plots)

        return report.write_report(self.path)

    def _repr_markdown_(self) -> str:  # a notebook shows a Results as its summary table
        from lossjax import report  # lazy: matplotlib (through plots)

        return f"**{self.path}**: {analysis.describe(self)}\n\n{report.summary_table(self)}"


def load(path: str | os.PathLike) -> Results:
    """Reads a finished sweep's results folder (``ResultsError`` if it is not one)."""
    res = analysis.load_results(path)
    return Results(**{f.name: getattr(res, f.name) for f in dataclasses.fields(res)})


def run(config, *, overrides=(), output_dir: str | os.PathLike | None = None,
        resume: bool = False, overwrite: bool = False, progress: bool = True,
        allow_other_machine: bool = False) -> Results:
    """Runs a sweep and returns its results.

    Args:
      config: a YAML file's path, a mapping shaped like the YAML, or a ``lossjax.config.Config``.
      overrides: ``"key=value"`` strings applied to it, as ``lossjax sweep --set`` takes them
        (e.g. ``["epochs=3", "seeds=[0]"]``).
      output_dir: where the results folder goes (it is ``output_dir / name``); default: the
        config's ``output.dir``.
      resume: continue an interrupted sweep; a finished one is loaded as it is.
      overwrite: replace a results folder that lossjax made (never any other folder).
      progress: a progress bar (terminal or notebook) or log lines; ``False``: nothing.
      allow_other_machine: with ``resume``, continue on another CPU model or instruction set,
        or with other jax/jaxlib versions, than the sweep started with (refused otherwise:
        its remaining epochs would not be bit-exact with an uninterrupted run's).

    Raises ``ConfigError``, ``DataError``, ``ResultsError`` (``lossjax.errors``) with one-line
    messages. A KeyboardInterrupt (the notebook's stop button) ends the sweep after its last
    finished epoch; ``resume=True`` continues it.
    """
    from lossjax import sweep  # lazy: the engine, optax and the data stack

    overrides = [overrides] if isinstance(overrides, str) else list(overrides)
    call = _describe_call(config, overrides, output_dir, resume, overwrite, allow_other_machine)
    # Shown as the command shows them, unless the caller configured logging itself.
    configured = log.handlers or logging.getLogger().handlers
    with contextlib.nullcontext() if configured else log_to_stderr():
        out = sweep.run(config, overrides, output_dir=output_dir, resume=resume,
                        overwrite=overwrite, progress=progress,
                        allow_other_machine=allow_other_machine,
                        invocation={"via": "python", "call": call, "cwd": os.getcwd()})
    return load(out) if distributed.is_writer() else None


def _describe_call(config, overrides, output_dir, resume, overwrite,
                   allow_other_machine=False) -> str:
    shown = repr(os.fspath(config)) if isinstance(config, str | os.PathLike) else (
        "{...}" if isinstance(config, dict) else type(config).__name__ + "(...)")
    args = [shown]
    if overrides:
        args.append(f"overrides={overrides!r}")
    if output_dir is not None:
        args.append(f"output_dir={os.fspath(output_dir)!r}")
    args += [f"{k}=True" for k, v in (("resume", resume), ("overwrite", overwrite),
                                      ("allow_other_machine", allow_other_machine)) if v]
    return f"lossjax.run({', '.join(args)})"


def compare(paths, labels=None):
    """One table and one figure across results folders (e.g. a loss against its variants, or
    one config on two datasets): a ``lossjax.comparison.Comparison`` with ``.table`` (a
    DataFrame), ``.figure()`` and ``.save(folder)``."""
    from lossjax import comparison  # lazy: matplotlib

    return comparison.compare(paths, labels)


def causal(paths, out: str | os.PathLike) -> list[dict]:
    """The paired effects of each gradient-edit variant against its base (same seeds, same
    initial weights and batches), as ``lossjax causal`` writes them: ``causal.json`` and
    ``causal.md`` into each results folder, ``causal_effects.{md,png,svg}`` into ``out``.
    Returns each folder's analysis, as in its ``causal.json``. ``ResultsError`` for a folder
    with no variant beside its base; nothing is written then."""
    from lossjax import causal_report  # lazy: matplotlib and scipy

    return causal_report.write(paths, out)
