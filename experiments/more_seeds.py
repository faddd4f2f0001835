"""Writes the config of a follow-up sweep: more seeds for a finished sweep, at its chosen rates.

    python experiments/more_seeds.py results/generality_mnist_constant \\
        --losses mse mse-no_push_up --seeds 5 6 7 8 9 \\
        --out configs/generality_mnist_constant_seeds5-9.yaml

The config is the folder's ``config.yaml`` (every setting the first sweep trained with) with its
name, seeds and losses replaced, each (optimizer, loss)'s learning rates narrowed to the rates
the first sweep chose for it (one per depth; a rate chosen at one depth is trained at the other
too, and pooling takes only the matching one), no search and no confirmation stage. Pool its
folder with the first by ``experiments/generality.py --pool FIRST FOLLOW_UP``
(``lossjax.pooled``: the new seeds take no part in choosing a rate, so the first sweep's choices
stand).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

import yaml

from lossjax import analysis
from lossjax.config import parse_config
from lossjax.errors import ConfigError, ResultsError


def follow_up(res: analysis.Results, losses: list[str], seeds: list[int], name: str) -> dict:
    """The follow-up config of ``res`` (see the module's docstring)."""
    config = copy.deepcopy(res.config)
    unknown = [x for x in losses if x not in config["losses"]]
    if unknown:
        raise ResultsError(f"{res.path} trained no loss {', '.join(unknown)}; its losses are "
                           f"{', '.join(map(str, config['losses']))}")
    opt = config["optimizer"]
    several = not isinstance(opt["name"], str)
    rates: dict = {}
    for ch in analysis.chosen_runs(res):
        if ch.loss in losses:
            key = str(ch.row["optimizer"]) if several else None
            rates.setdefault(key, {}).setdefault(ch.loss, set()).add(float(ch.learning_rate))
    missing = [x for x in losses if not any(x in by for by in rates.values())]
    if missing:
        raise ResultsError(f"{res.path} chose no rate for {', '.join(missing)} (every member "
                           f"diverged): no follow-up can pool with it")
    grids = {k: {loss: sorted(r) for loss, r in by.items()} for k, by in rates.items()}
    opt["learning_rate"] = grids if several else grids[None]
    if several:
        opt["name"] = [o for o in opt["name"] if o in grids]
    # Where the first sweep wrote (often set on its command line) is no setting of the study.
    config.get("output", {}).pop("dir", None)
    config.update(name=name, seeds=seeds, losses=[x for x in config["losses"] if x in losses],
                  search={"method": "grid"}, confirm={"seeds": []})
    return config


def check_out(out: Path) -> None:
    """Refuses an ``--out`` that is no new file in an existing folder: the config is written
    only where nothing is."""
    if out.is_dir():
        raise ResultsError(f"--out {out} is a folder; give the config file to write in it, "
                           f"e.g. --out {out / 'follow_up.yaml'}")
    if os.path.lexists(out):
        raise ResultsError(f"--out {out} exists and is left as it is; choose another name, or "
                           "remove it first")
    if not out.parent.is_dir():
        raise ResultsError(f"--out {out}: the folder {out.parent} does not exist (or is no "
                           "folder); create it first, or choose another path")


def check_seeds(res: analysis.Results, seeds: list[int]) -> None:
    """Pooling needs seeds the first sweep does not have (the same seed twice would be one
    member counted twice)."""
    have = sorted(set(map(int, res.epochs["seed"])) & set(seeds))
    if have:
        raise ResultsError(f"--seeds {' '.join(map(str, have))}: {res.path} already trained "
                           "those seeds; give seeds it does not have, e.g. "
                           f"--seeds {max(map(int, res.epochs['seed'])) + 1}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder")
    p.add_argument("--losses", nargs="+", required=True)
    p.add_argument("--seeds", nargs="+", type=int, required=True)
    p.add_argument("--out", required=True, help="the config file to write (a new file)")
    args = p.parse_args(argv)
    out = Path(args.out)
    name = out.stem
    try:
        check_out(out)
        res = analysis.load_results(args.folder)
        config = follow_up(res, args.losses, args.seeds, name)
        check_seeds(res, args.seeds)
        parse_config(config)  # a config no sweep can run is refused now, not a sweep later
    except (ResultsError, ConfigError) as e:
        print(f"more_seeds: {e}", file=sys.stderr)
        return 2
    seeds = f"{min(args.seeds)}-{max(args.seeds)}"
    losses = " ".join(args.losses)
    head = (f"# More seeds ({seeds}) for {args.folder}, at the rates it chose, to pool with it\n"
            f"# (python experiments/generality.py --pool {args.folder} <this folder>): its\n"
            f"# config with these seeds and losses, no search, no confirmation stage. Made by\n"
            f"#   python experiments/more_seeds.py {args.folder} --losses {losses} \\\n"
            f"#     --seeds {' '.join(map(str, args.seeds))} --out {args.out}\n\n")
    out.write_text(head + yaml.safe_dump(config, sort_keys=False))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
