"""The ``lossjax`` command: a thin layer that parses arguments and wires the stages together.

Each subcommand imports its stage lazily so that ``lossjax check-grads`` does not pay for the
data or plotting stacks. Expected failures (bad config, missing data, bad loss reference) are
``LossjaxError`` subclasses or ``ValueError``: they print one line and exit 2, no traceback.
Anything else prints one line too, naming the exception (``LOSSJAX_DEBUG=1`` shows the
traceback), and exits 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import threading
from pathlib import Path

from lossjax import xla_flags
from lossjax.errors import LossjaxError, ResultsError, one_line
from lossjax.interrupts import STARTED, ExitOnSignal
from lossjax.log import log_to_stderr


def _check_grads(args) -> int:
    from lossjax import compile_cache, gradcheck  # lazy: jax; --help and others do without

    xla_flags.check()  # before JAX starts XLA, which aborts the process on a bad flag
    compile_cache.enable()

    status, text = gradcheck.run(loss_ref=args.loss, grad_ref=args.grad)
    print(text)
    return status


def _sweep(args) -> int:
    from lossjax import distributed, sweep  # lazy: jax, optax and the data stack

    xla_flags.check()  # before JAX starts XLA, which aborts the process on a bad flag

    command = shlex.join(["lossjax", *args.argv])
    out = sweep.run(args.config, overrides=args.set, resume=args.resume,
                    overwrite=args.overwrite, progress=not args.quiet,
                    allow_other_machine=args.allow_other_machine,
                    invocation={"via": "cli", "command": command, "cwd": os.getcwd()})
    if not args.quiet and distributed.is_writer() and (out / "summary.csv").exists():
        from lossjax import tables  # lazy: pandas; at module level --help would pay for it

        summary = tables.read_summary(out)
        # rate_choice and tied_lrs beside the rate: most choices among a few seeds are ties.
        summary = summary.rename(columns={"rate_choice": "choice", "tied_lrs": "tied_with"})
        several = summary["optimizer"].nunique() > 1  # then each loss has a row per optimizer
        cols = ["loss", *(["optimizer"] if several else []), "hidden", "learning_rate",
                "choice", "tied_with", "test_acc_mean", "test_acc_ci95",
                "epochs_to_target_mean", "diverged"]
        print(summary[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        print(f"results: {out}/epochs.csv, {out}/summary.csv")
        print(f"plots:   {out}/plots/  report: {out}/report.md")
    return 0


def _plot(args) -> int:
    from lossjax import plots  # lazy: matplotlib

    for path in plots.plot_results(args.results_dir):
        print(path)
    return 0


def _report(args) -> int:
    from lossjax import report  # lazy: matplotlib (through plots)

    print(report.write_report(args.results_dir))
    return 0


def _compare(args) -> int:
    from lossjax.comparison import compare  # lazy: matplotlib

    comparison = compare(args.results_dirs, args.label or None)
    print(comparison.to_markdown(), end="")
    if args.out:
        print()
        for path in comparison.save(args.out):
            print(path)
    return 0


def _causal(args) -> int:
    from lossjax import causal_report  # lazy: matplotlib and scipy

    print(causal_report.summary(causal_report.write(args.results_dirs, args.out), args.out))
    return 0


def _search_replay(args) -> int:
    from lossjax import analysis, search  # lazy: pandas and scipy

    alpha = search.ALPHA if args.alpha is None else args.alpha
    # Every folder is read and checked before any is replayed.
    results = [analysis.load_results(p) for p in args.results_dirs]
    table = search.replay_folders(results, args.rungs, alpha)
    print(search.replay_markdown(table, alpha), end="")
    if args.out:
        print()
        for path in search.save_replay(table, alpha, args.out):
            print(path)
    return 0


def _rungs(text: str) -> tuple[int, ...]:
    try:
        rungs = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give epochs, e.g. 2,5,10") from None
    if any(r < 1 for r in rungs) or list(rungs) != sorted(set(rungs)):
        raise argparse.ArgumentTypeError(f"{text!r}: epochs from 1 up, increasing")
    return rungs


def _alpha(text: str) -> float:
    try:
        alpha = float(text)
    except ValueError:
        alpha = -1.0
    if not 0 < alpha < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a level between 0 and 1, e.g. 0.2")
    return alpha


def _data_info(args) -> int:
    """Exit status 1 if a dataset is present but fails verification, or if the one dataset
    asked for is missing; else 0 (a missing dataset among all of them is normal)."""
    from lossjax import data  # lazy: the data stack

    report = data.info(args.name, data_dir=args.data_dir)
    print(f"data dir: {report.data_dir}  ({report.data_dir_origin}); cache: {report.cache_dir}")
    for d in report.datasets:
        if d.status == "ok":
            print(f"{d.name:<14} ok        {_describe_data_source(d)}")
            print(f"{'':<14}           train {d.train_size}, test {d.test_size}, "
                  f"images {'x'.join(map(str, d.image_shape))} uint8, {d.num_classes} classes; "
                  f"content sha256 verified: {', '.join(d.verified)}")
        else:
            print(f"{d.name:<14} {'BROKEN' if d.status == 'broken' else d.status:<9} {d.problem}")
        for note in d.notes:
            print(f"{'':<14}           {note}")
    broken = any(d.status == "broken" for d in report.datasets)
    missing = any(d.status == "missing" for d in report.datasets)
    return 1 if broken or (missing and args.name is not None) else 0


def _cache(args) -> int:
    from lossjax import compile_cache  # lazy: machine.py reads the CPU; still no JAX

    st = compile_cache.state()
    if args.clear:
        files, size = compile_cache.clear()
        print(f"removed {files} files ({_megabytes(size)}) from {compile_cache.root()}")
        if st["set_by"] == compile_cache.JAX_DIR:
            print(f"{st['folder']} ({compile_cache.JAX_DIR}) is yours: lossjax leaves it as it is")
        return 0
    if not st["enabled"]:
        print(f"compilation cache: off ({st['set_by']})")
    else:
        files, size = compile_cache.size(st["folder"])
        whose = ("lossjax's, for this jaxlib and machine" if st["set_by"] == "lossjax"
                 else f"from {st['set_by']}")
        print(f"compilation cache: {st['folder']} ({whose})")
        print(f"  {files} files, {_megabytes(size)}")
    others = [f for f in compile_cache.folders() if f != st["folder"]]
    if others:
        total = sum(compile_cache.size(f)[1] for f in others)
        print(f"lossjax's folders for other jaxlibs or machines: {len(others)} under "
              f"{compile_cache.root()}, {_megabytes(total)}")
    print("clear: lossjax cache --clear; turn off: JAX_ENABLE_COMPILATION_CACHE=false")
    return 0


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _data_prepare(args) -> int:
    from lossjax import data  # lazy: the data stack

    d = data.prepare(args.name, source_dir=args.source, data_dir=args.data_dir)
    if d is None:
        print(f"{args.name} is embedded in lossjax; nothing to prepare")
        return 0
    print(f"{d.name}: {_describe_data_source(d)}")
    print(f"{d.name}: train {d.train_size}, test {d.test_size}; "
          f"content sha256 verified: {', '.join(d.verified)}")
    return 0


def _describe_data_source(d) -> str:
    """Where a dataset (a ``lossjax.data.DatasetStatus``) loads from, and what its cache did."""
    from lossjax.data import FORMS  # lazy: the data stack, as in the callers
    from lossjax.data.registry import KIND_WORDS  # lazy: as FORMS

    src, cache = d.source, d.cache
    if src["kind"] == "embedded":
        return f"embedded {src['path']}"
    if src["kind"] == "cache":
        b = src["built_from"]
        made_by = f"{KIND_WORDS[b['kind']]} " if b.get("kind") in KIND_WORDS else ""
        return f"cache {cache['path']} (built from {made_by}{FORMS[b['form']]} in {b['path']})"
    return (f"{KIND_WORDS.get(src['kind'], src['kind'])} {FORMS[src['form']]} in {src['path']}; "
            f"cache {cache['path']}: {cache['status']}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lossjax",
        description="Compare classification losses for neural networks; sweeps run as one compiled "
                    "program.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("check-grads", help="prove autodiff and closed-form gradients agree")
    c.add_argument("--loss", help="a user loss 'module:function', or a built-in or "
                                  "parameterized loss by name (default: all of them)")
    c.add_argument("--grad", help="its closed-form gradient 'module:function' (optional)")
    c.set_defaults(func=_check_grads)

    s = sub.add_parser("sweep", help="run a sweep from a YAML config")
    s.add_argument("config", help="path to a YAML sweep config, e.g. configs/digits.yaml")
    s.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set epochs=5 --set optimizer.name=adam",
    )
    s.add_argument("--resume", action="store_true",
                   help="continue an interrupted sweep (a finished one is left as it is)")
    s.add_argument("--allow-other-machine", action="store_true",
                   help="with --resume: continue on another CPU model or instruction set, or "
                        "with other jax/jaxlib versions, than the sweep started with (its "
                        "later rows are then not bit-exact; report.md says from which epoch)")
    s.add_argument("--quiet", action="store_true", help="no progress output")
    s.add_argument("--overwrite", action="store_true",
                   help="replace a results folder that lossjax wrote (never any other folder)")
    s.set_defaults(func=_sweep)

    pl = sub.add_parser("plot", help="(re)draw the plots of a results folder")
    pl.add_argument("results_dir")
    pl.set_defaults(func=_plot)

    r = sub.add_parser("report", help="write report.md for a results folder")
    r.add_argument("results_dir")
    r.set_defaults(func=_report)

    cp = sub.add_parser("compare", help="one table (and figure) across results folders")
    cp.add_argument("results_dirs", nargs="+", metavar="RESULTS_DIR")
    cp.add_argument("--label", action="append", default=[],
                    help="a name for each folder, in order (default: the folders' names)")
    cp.add_argument("--out", help="also write comparison.{csv,md,png,svg} into this folder")
    cp.set_defaults(func=_compare)

    ca = sub.add_parser("causal", help="paired effects of gradient-edit variants against their "
                                       "bases, per seed (causal.json, causal.md, "
                                       "paired_difference.png)")
    ca.add_argument("results_dirs", nargs="+", metavar="RESULTS_DIR", type=Path,
                    help="finished results folders")
    ca.add_argument("--out", type=Path, required=True,
                    help="folder for the figure and table across all folders "
                         "(causal_effects.png/.svg/.md)")
    ca.set_defaults(func=_causal)

    se = sub.add_parser("search", help="the adaptive rate search (race)")
    sesub = se.add_subparsers(dest="search_command", required=True)
    sr = sesub.add_parser("replay", help="apply the race rule to finished grid folders: would "
                                         "it choose the same rates, and with how much work?")
    sr.add_argument("results_dirs", nargs="+", metavar="RESULTS_DIR")
    sr.add_argument("--rungs", type=_rungs, default=None,
                    help="epochs after which rates are compared, e.g. 2,5,10 (default: "
                         "lossjax.config.RUNG_FRACTIONS of each folder's epochs)")
    sr.add_argument("--alpha", type=_alpha, default=None,
                    help="the test level per group and rung (default: lossjax.config.ALPHA)")
    sr.add_argument("--out", help="also write search_replay.{csv,md} into this folder")
    sr.set_defaults(func=_search_replay)

    cc = sub.add_parser("cache", help="where the compilation cache is, its size; --clear "
                                      "empties it")
    cc.add_argument("--clear", action="store_true",
                    help="remove lossjax's compiled programs (every jaxlib and machine)")
    cc.set_defaults(func=_cache)

    d = sub.add_parser("data", help="inspect and prepare datasets")
    dsub = d.add_subparsers(dest="data_command", required=True)
    di = dsub.add_parser("info", help="where each dataset would load from, and whether it is ok")
    di.add_argument("name", nargs="?", default=None)
    di.add_argument("--data-dir", default=None)
    di.set_defaults(func=_data_info)
    dp = dsub.add_parser("prepare", help="verify a local copy and cache it")
    dp.add_argument("name")
    dp.add_argument("--from", dest="source", required=True, help="folder holding the files")
    dp.add_argument("--data-dir", default=None)
    dp.set_defaults(func=_data_prepare)
    return p


INTERRUPTED = {
    "sweep": "lossjax: interrupted; finished epochs are kept (rerun with --resume).",
}
#: Said instead until the sweep has claimed its folder (``interrupts.STARTED``).
INTERRUPTED_EARLY = {
    "sweep": "lossjax: interrupted before the sweep started; nothing was written.",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    message = INTERRUPTED.get(args.command, "lossjax: interrupted.")
    shown = logging.WARNING if getattr(args, "quiet", False) else logging.INFO
    try:
        _refuse_control_characters(args)
        with log_to_stderr(shown):
            return _dispatch(args, message, INTERRUPTED_EARLY.get(args.command))
    except (LossjaxError, ValueError) as e:
        print(f"lossjax: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # raised by code, not by a signal (those exit in ExitOnSignal)
        early = INTERRUPTED_EARLY.get(args.command)
        print(message if early is None or STARTED.is_set() else early, file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get("LOSSJAX_DEBUG"):
            raise
        print(f"lossjax: error: unexpected {type(e).__name__}: {one_line(e)[:300]} "
              "(LOSSJAX_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


def _refuse_control_characters(args) -> None:
    """A path holding a newline or another control character is refused by name: printed on
    one line, it would read as another path (a newline as a space)."""
    paths = [getattr(args, "results_dir", None), *(getattr(args, "results_dirs", None) or ()),
             getattr(args, "out", None)]
    for path in (os.fspath(p) for p in paths if p is not None):
        from lossjax.validate import control_character  # lazy: numpy and yaml

        if (c := control_character(path)) is not None:
            raise ResultsError(f"the path {path!r} holds the control character {c}, which "
                               "lossjax takes in no path; rename it")


def _dispatch(args, message: str, early: str | None = None) -> int:
    if threading.current_thread() is threading.main_thread():
        # Before anything heavy is imported: Ctrl-C exits at once, from here on.
        with ExitOnSignal(message, early):
            return args.func(args)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
