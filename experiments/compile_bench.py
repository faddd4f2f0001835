"""Benchmark: seconds to a result, before and after compiling once.

Side by side on one machine, repetitions interleaved (each round runs every variant once, in
turn), best and median of ``--reps``. Every run is a fresh process, as a user's command is:

- ``digits, 1 epoch``: ``lossjax sweep configs/digits.yaml --set epochs=1`` with an empty
  compilation cache (cold) and with the cache a first run left (warm); and the same command
  from the code at ``--before`` (a git revision, checked out into a temporary worktree), where
  a second run is no faster than the first.
- ``raced digits``: the digits sweep raced, with extension and confirmation stages (their
  groups are built one after another in one process), 3 epochs, no persistent cache: the
  code at ``--before`` against this code, whose stages reuse the first group's programs.
- ``load``: ``python -c "import lossjax; lossjax.load('results/digits')"``, before and after.
- ``--demo``: ``make demo``'s command run twice on an empty cache (the second run's time is
  what a user sees from then on); once per round, it takes minutes.

    python experiments/compile_bench.py --before d27deb7 --reps 3 [--demo] [--json out.json]

Check ``uptime`` first: nothing else should run. The tables go to stdout (markdown).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lossjax import machine

REPO = Path(__file__).resolve().parent.parent
RACED = ["--set", "epochs=3", "--set", "search.method=race", "--set", "search.extend=1",
         "--set", "confirm.seeds=[3]"]


def _env(code: Path, cache: Path | None) -> dict:
    """The environment of a run of the code in ``code``: the compilation cache in ``cache``,
    or none at all."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE"))}
    env.update(PYTHONPATH=str(code), JAX_PLATFORMS="cpu")
    if cache is None:
        env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    else:
        env.pop("JAX_ENABLE_COMPILATION_CACHE", None)
        env["LOSSJAX_CACHE_DIR"] = str(cache)
    return env


def _timed(args: list[str], env: dict, cwd: Path) -> float:
    t = time.perf_counter()
    r = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{r.stderr[-3000:]}")
    return time.perf_counter() - t


def _sweep(code: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lossjax.cli", "sweep", str(REPO / "configs" / "digits.yaml"),
            "--quiet", "--overwrite", "--set", f"output.dir={out}", *extra]


def _load() -> list[str]:
    return [sys.executable, "-c",
            f"import lossjax; lossjax.load({str(REPO / 'results' / 'digits')!r})"]


def variants(before: Path, work: Path) -> dict:
    """name -> a function that runs it once and returns its wall time."""
    warm = work / "warm-cache"

    def cold(code: Path, *extra: str):
        def run():
            cache = work / "cold-cache"
            shutil.rmtree(cache, ignore_errors=True)
            return _timed(_sweep(code, work / "out", *extra), _env(code, cache), work)
        return run

    return {
        ("digits, 1 epoch", "before, any run"): lambda: _timed(
            _sweep(before, work / "out", "--set", "epochs=1"), _env(before, None), work),
        ("digits, 1 epoch", "after, cold cache"): cold(REPO, "--set", "epochs=1"),
        ("digits, 1 epoch", "after, warm cache"): lambda: _timed(
            _sweep(REPO, work / "out", "--set", "epochs=1"), _env(REPO, warm), work),
        ("raced digits, 3 epochs, extension and confirmation", "before"): lambda: _timed(
            _sweep(before, work / "out", *RACED), _env(before, None), work),
        ("raced digits, 3 epochs, extension and confirmation", "after, no persistent cache"):
            lambda: _timed(_sweep(REPO, work / "out", *RACED), _env(REPO, None), work),
        ("raced digits, 3 epochs, extension and confirmation", "after, warm cache"):
            lambda: _timed(_sweep(REPO, work / "out", *RACED), _env(REPO, warm), work),
        ("lossjax.load('results/digits')", "before"): lambda: _timed(
            _load(), _env(before, None), work),
        ("lossjax.load('results/digits')", "after"): lambda: _timed(
            _load(), _env(REPO, None), work),
    }


def demo_pair(work: Path) -> tuple[float, float]:
    """``make demo``'s sweep twice, the first on an empty cache."""
    cache = work / "demo-cache"
    shutil.rmtree(cache, ignore_errors=True)
    args = [sys.executable, "-m", "lossjax.cli", "sweep", str(REPO / "configs" / "digits.yaml"),
            "--quiet", "--overwrite", "--set", f"output.dir={work / 'demo'}"]
    return (_timed(args, _env(REPO, cache), work), _timed(args, _env(REPO, cache), work))


def _stats(times: list[float]) -> dict:
    return {"best": min(times), "median": statistics.median(times), "runs": times}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", default="HEAD~1", help="the git revision to compare with")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--demo", action="store_true", help="also make demo's sweep twice per round")
    p.add_argument("--json", help="write the measurements here too")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lossjax-compile-bench-") as tmp:
        work = Path(tmp)
        before = work / "before"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q",
                        str(before), args.before], check=True)
        try:
            return _measure(args, work, before)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(before)], check=False)


def _measure(args, work: Path, before: Path) -> int:
    runs = variants(before, work)
    # The warm cache: one run of each cached variant's command fills it.
    _timed(_sweep(REPO, work / "out", "--set", "epochs=1"), _env(REPO, work / "warm-cache"), work)
    _timed(_sweep(REPO, work / "out", *RACED), _env(REPO, work / "warm-cache"), work)
    times: dict = {key: [] for key in runs}
    demo: list[tuple[float, float]] = []
    for r in range(args.reps):
        for key, run in runs.items():
            times[key].append(run())
            print(f"round {r + 1}: {key[0]} / {key[1]}: {times[key][-1]:.1f} s",
                  file=sys.stderr, flush=True)
        if args.demo:
            demo.append(demo_pair(work))
            print(f"round {r + 1}: demo {demo[-1][0]:.1f} s, then {demo[-1][1]:.1f} s",
                  file=sys.stderr, flush=True)
    rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", args.before],
                         capture_output=True, text=True).stdout.strip()
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    cpu = machine.cpu_record()["model"] or platform.machine()
    print(f"Compile once: before = {args.before} ({rev}), after = {head}; {cpu}, "
          f"{os.cpu_count()} cores; wall seconds, best / median of {args.reps} interleaved "
          "rounds, each run a fresh process\n")
    print("| what | variant | best | median | vs first row (median) |")
    print("| --- | --- | ---: | ---: | ---: |")
    first = {}
    for (what, variant), t in times.items():
        s = _stats(t)
        ratio = s["median"] / first.setdefault(what, s["median"])
        print(f"| {what} | {variant} | {s['best']:.1f} | {s['median']:.1f} | {ratio:.2f}× |")
    if demo:
        cold, warm = zip(*demo, strict=True)
        print(f"| make demo's sweep | first run, empty cache | {min(cold):.1f} | "
              f"{statistics.median(cold):.1f} | 1.00× |")
        print(f"| make demo's sweep | second run | {min(warm):.1f} | "
              f"{statistics.median(warm):.1f} | "
              f"{statistics.median(warm) / statistics.median(cold):.2f}× |")
    if args.json:
        record = {"before": rev, "after": head, "reps": args.reps,
                  "times": [{"what": w, "variant": v, **_stats(t)} for (w, v), t in times.items()],
                  "demo": [{"first": a, "second": b} for a, b in demo]}
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
