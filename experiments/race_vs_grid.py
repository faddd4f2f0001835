"""A race against the grid, side by side: the same sweep trained both ways, interleaved.

    python experiments/race_vs_grid.py configs/mnist.yaml --set epochs=3 --reps 1 --out DIR

Each repetition runs the grid and then the race (``search.method=race``) of one config into
fresh folders under ``DIR``, one process each, and reports per repetition the wall time of each
(the whole command: start-up, compiles, data loading and training), the member-epochs each
trained, whether the race chose the grid's rates, and whether every row the race wrote is the
grid's row of that member byte for byte (wall_time aside). Then best and median of the wall
time ratio over repetitions. Writes ``race_vs_grid.txt`` and ``.json`` into ``DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd


def _run(config: str, overrides: list[str], out: Path) -> float:
    args = [sys.executable, "-m", "lossjax.cli", "sweep", config, "--quiet",
            "--set", f"output.dir={out}", *[a for o in overrides for a in ("--set", o)]]
    # Each command compiles its own programs: with the persistent cache the grid, run first,
    # would compile what the race then reads back, and the ratio would measure the cache.
    env = {**os.environ, "JAX_ENABLE_COMPILATION_CACHE": "false"}
    t0 = time.perf_counter()
    subprocess.run(args, check=True, env=env)
    return time.perf_counter() - t0


def _rows(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "epochs.csv", dtype=str, keep_default_na=False).drop(
        columns="wall_time")


def _same_rows(grid: pd.DataFrame, race: pd.DataFrame) -> bool:
    merged = race.merge(grid, on=["member", "epoch"], how="left", suffixes=("", "_grid"))
    return all((merged[c] == merged[c + "_grid"]).all()
               for c in race.columns.drop(["member", "epoch"]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    reps = []
    for rep in range(args.reps):
        row = {"rep": rep}
        for method in ("grid", "race"):
            out = args.out / f"{method}{rep}"
            shutil.rmtree(out, ignore_errors=True)
            row[f"{method}_s"] = _run(args.config, [*args.set, f"search.method={method}"], out)
            (row[f"{method}_folder"],) = [d for d in out.iterdir() if d.is_dir()]
        grid, race = _rows(row["grid_folder"]), _rows(row["race_folder"])
        chosen = [pd.read_csv(row[f"{m}_folder"] / "summary.csv")["learning_rate"].tolist()
                  for m in ("grid", "race")]
        row.update(grid_member_epochs=len(grid), race_member_epochs=len(race),
                   same_rates=chosen[0] == chosen[1], grid_rates=chosen[0],
                   race_rates=chosen[1], rows_identical=_same_rows(grid, race),
                   ratio=row["race_s"] / row["grid_s"])
        reps.append(row)
    ratios = [r["ratio"] for r in reps]
    lines = [f"# race vs grid: {args.config} {' '.join(args.set)}",
             f"# machine: {os.cpu_count()} CPUs; load before: {os.getloadavg()[0]:.2f}",
             "rep  grid_s  race_s  ratio  member-epochs (race/grid)  same rates  rows identical"]
    lines += [f"{r['rep']:>3}  {r['grid_s']:6.1f}  {r['race_s']:6.1f}  {r['ratio']:5.2f}  "
              f"{r['race_member_epochs']}/{r['grid_member_epochs']} "
              f"({r['race_member_epochs'] / r['grid_member_epochs']:.0%})  "
              f"{r['same_rates']}  {r['rows_identical']}" for r in reps]
    lines.append(f"wall time ratio: best {min(ratios):.2f}, median {statistics.median(ratios):.2f}")
    for r in reps:
        lines.append(f"rates rep {r['rep']}: grid {r['grid_rates']}, race {r['race_rates']}")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "race_vs_grid.txt").write_text(text)
    (args.out / "race_vs_grid.json").write_text(json.dumps(
        [{k: str(v) if isinstance(v, Path) else v for k, v in r.items()} for r in reps],
        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
