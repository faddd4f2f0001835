"""Where does each answer to the seed's claim hold? The generality studies side by side.

    python experiments/generality.py results/generality_mnist_constant \\
        results/generality_mnist_cosine ... --out results/generality

Each folder is a finished sweep of ``configs/generality_*.yaml``: one dataset and one protocol
(its schedule and number of epochs), with optimizers and depths swept inside it. The script runs
the paired analysis of ``lossjax causal`` on every folder (writing each folder's
``causal.json``, ``causal.md`` and paired-difference figure; the tables below take the place of
its cross-folder figure, which at this many comparisons is too tall to read), then writes into
``--out``:

- ``generality.md``: per dataset, the **answer tables**: one row per gradient edit, one column
  per cell (optimizer × protocol × depth), each cell the paired effect of the edit on speed
  (the area under the test-accuracy curve, in points) or on final test accuracy, mean ± 95%
  t-interval over seeds, the variant and its base each at its own chosen rate. A cell is marked
  ``*`` where the effect's reading (above 0, below 0, or including 0) changes with either side
  at a rate tied with its choice (``lossjax causal``'s *Tied rate choices*), and carries its
  number of pairs where that is under 5. Each row ends with a count of its readings. Then the
  **best-loss table**: every loss that is no edit, per cell at its chosen rate: test accuracy,
  speed, negative log-likelihood and ECE, raw and after temperature scaling; in each cell the
  most accurate loss in bold and each loss whose paired difference from it (same seeds, so same
  initial weights and batches) has a 95% interval including 0 marked ``=``.
- ``generality.json``: the same numbers.

``--pool FOLDER MORE`` (repeatable) adds the seeds of ``MORE``, a follow-up sweep of ``FOLDER``
at its chosen rates (``experiments/more_seeds.py`` writes its config), to ``FOLDER``'s cells as
confirmation seeds (``lossjax.pooled``): the rates stay ``FOLDER``'s choices, the effects and
the best-loss numbers at them use every seed, the tied rates keep ``FOLDER``'s seeds.
``FOLDER``'s ``causal.*`` stay its own analysis; the pooled one is written into ``MORE``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from lossjax import analysis, causal_effects, causal_report, interventions, pooled, stats
from lossjax.errors import ResultsError
from lossjax.folder import locked, record_written, write_json, write_text

#: The edits in the order the answer tables list them.
EDITS = ("cross_entropy-push_up_11x0.1", "cross_entropy-push_up_11x0.1-balanced",
         "cross_entropy-push_up_11x0.3", "cross_entropy-push_up_11", "mse-no_push_up",
         "mse-no_push_up-norm_matched",
         "softmax_mse-no_push_up-balanced", "softmax_mse-no_push_up-balanced-norm_matched",
         "exp_mse-true_pull")
#: The datasets and optimizers in the order the tables list them; others follow by name.
DATASETS = ("mnist", "fashion_mnist", "cifar10")
OPTIMIZERS = ("momentum", "adam")
SEEDS_WANTED = 5
CALIBRATION = ("test_nll_mean", "test_ece_mean", "temperature_mean", "test_nll_ts_mean",
               "test_ece_ts_mean")


def depth(hidden: str) -> str:
    sizes = hidden.split("-")
    return f"{len(sizes)}×{sizes[0]}" if len(set(sizes)) == 1 else hidden


def protocol(config: dict) -> str:
    return f"{config['optimizer'].get('schedule', 'constant')} {config['epochs']} ep"


def cell_key(dataset: str, optimizer: str, proto: str, hidden: str) -> tuple:
    return dataset, optimizer, proto, depth(hidden)


def _effect(e: dict, robust: bool) -> dict:
    return {"mean": 100 * e["mean"], "ci95": 100 * e["ci95"], "n": e["n"],
            "direction": causal_effects.direction(e), "robust": robust}


def _robust(c: dict, metric: str) -> bool:
    """Whether the effect on ``metric`` reads the same at every rate tied with either side's
    choice as at the chosen rates."""
    head = causal_effects.direction(c[metric])
    return all(causal_effects.direction(t[metric]) == head
               for t in c.get("tied_rate_effects") or [] if not t["headline"])


def effects(out: dict, config: dict) -> list[dict]:
    """One record per comparison of a folder's analysis: its cell, edit and effects."""
    rows = []
    for c in out["comparisons"]:
        cell = cell_key(config["dataset"]["name"], c.get("optimizer", config["optimizer"]["name"]),
                        protocol(config), c["hidden"])
        if not c["n_pairs"]:
            # Nothing pairs: every member of one side diverged, or no seed is shared.
            none = {"note": "diverged" if "diverged" in (c.get("note") or "") else "no pairs"}
            rows.append({"cell": cell, "variant": c["variant"], "speed": none, "final": none})
            continue
        rows.append({
            "cell": cell, "variant": c["variant"],
            "speed": _effect(c["speed"], _robust(c, "speed")),
            "final": _effect(c["final_test_acc"], _robust(c, "final_test_acc")),
            "rates": [c["base_learning_rate"], c["variant_learning_rate"]],
            "pushes": [c["base_profile"]["wrong_frac"], c["variant_profile"]["wrong_frac"]],
        })
    return rows


def _speed(rows: pd.DataFrame) -> pd.Series:
    """Per seed, the mean test accuracy over evaluated epochs (the area under the curve)."""
    ev = rows.dropna(subset=["test_acc"])
    return ev.groupby("seed")["test_acc"].mean()


def best_losses(res: analysis.Results) -> list[dict]:
    """Every chosen run of a loss that is no edit, with its accuracy, speed and calibration, and
    whether its paired final test accuracy is tied with the cell's most accurate loss."""
    config = res.config
    runs = [ch for ch in analysis.chosen_runs(res) if not interventions.is_variant(ch.loss)]
    recs = []
    for ch in runs:
        last = analysis.last_epochs(ch.rows).set_index("seed")
        r = ch.row
        recs.append({
            "cell": cell_key(config["dataset"]["name"], str(r.get("optimizer",
                             config["optimizer"]["name"])), protocol(config), ch.hidden),
            "loss": ch.loss, "learning_rate": ch.learning_rate,
            "tie": analysis.lr_note(r), "n_seeds": int(r["n_seeds"]),
            "test_acc": 100 * float(r["test_acc_mean"]),
            "test_acc_ci95": 100 * float(r["test_acc_ci95"]),
            "speed": 100 * float(_speed(ch.rows).mean()),
            **{k: float(r.get(k, np.nan)) for k in CALIBRATION},
            "_final": last["test_acc"].astype(float),
        })
    for cell in {r["cell"] for r in recs}:
        group = [r for r in recs if r["cell"] == cell]
        best = max(group, key=lambda r: r["test_acc"])
        for r in group:
            gap = (best["_final"] - r["_final"]).dropna()
            half = stats.ci95_halfwidth(gap.to_numpy()) if len(gap) > 1 else float("nan")
            r["best"] = r is best
            r["tied_with_best"] = (r is not best and len(gap) > 1
                                   and abs(float(gap.mean())) <= half)
            r["gap_to_best"] = {"mean": 100 * float(gap.mean()), "ci95": 100 * half,
                                "n": len(gap)}
    for r in recs:
        del r["_final"]
    return recs


def _rank(value, preferred) -> tuple:
    """Sort key: the values of ``preferred`` in its order, then any other by itself."""
    return (preferred.index(value) if value in preferred else len(preferred), value)


def _protocol_rank(proto: str) -> tuple:
    return not proto.startswith("constant"), proto  # the short budget first


def _cell_rank(cell: tuple) -> tuple:
    return (_rank(cell[0], DATASETS), _rank(cell[1], OPTIMIZERS), _protocol_rank(cell[2]),
            cell[3])


def _columns(cells) -> list[tuple]:
    """The (optimizer, protocol, depth) columns of one dataset's cells, in table order."""
    return sorted({c[1:] for c in cells}, key=lambda c: (
        _rank(c[0], OPTIMIZERS), _protocol_rank(c[1]), c[2]))


def _cell_text(e: dict) -> str:
    if "note" in e:
        return "all diverged" if e["note"] == "diverged" else "no pairs"
    n = "" if e["n"] == SEEDS_WANTED else f" (n {e['n']})"
    return f"{e['mean']:+.2f} ± {e['ci95']:.2f}{n}{'' if e['robust'] else ' *'}"


def _reading(cells: list[dict]) -> str:
    gone = sum("note" in c for c in cells)
    cells = [c for c in cells if "note" not in c]
    if not cells:
        return f"no pairs in {gone}" if gone else ""
    counts = {d: sum(c["direction"] == d for c in cells) for d in ("> 0", "< 0", "includes 0")}
    wide = sum(c["ci95"] > 0.3 for c in cells)
    fragile = sum(not c["robust"] for c in cells)
    parts = [f"{v} {k}" for k, v in counts.items() if v]
    return (f"{', '.join(parts)} of {len(cells)}; interval over ±0.3 in {wide}; "
            f"reading moves at a tied rate in {fragile}"
            + (f"; no pairs in {gone} (a side diverged)" if gone else ""))


def answer_tables(recs: list[dict], metric: str) -> list[str]:
    lines = []
    for dataset in sorted({r["cell"][0] for r in recs}, key=lambda d: _rank(d, DATASETS)):
        mine = [r for r in recs if r["cell"][0] == dataset]
        cols = _columns([r["cell"] for r in mine])
        lines += [f"**{dataset}**", "",
                  "| edit | " + " | ".join(f"{o} · {p} · {d}" for o, p, d in cols)
                  + " | reading |",
                  "| --- | " + " | ".join("---:" for _ in cols) + " | --- |"]
        edits = [e for e in EDITS if any(r["variant"] == e for r in mine)]
        edits += sorted({r["variant"] for r in mine} - set(edits))
        for edit in edits:
            by = {r["cell"][1:]: r[metric] for r in mine if r["variant"] == edit}
            lines.append(f"| `{edit}` | " + " | ".join(
                _cell_text(by[c]) if c in by else "–" for c in cols)
                + f" | {_reading(list(by.values()))} |")
        lines.append("")
    return lines


def best_table(recs: list[dict]) -> list[str]:
    lines = ["| data | optimizer | protocol | depth | loss | rate | seeds | test acc. (%) | "
             "speed | NLL | ECE (%) | temperature | NLL, scaled | ECE, scaled (%) |",
             "| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
             "---: | ---: |"]
    for cell in sorted({r["cell"] for r in recs}, key=_cell_rank):
        for r in sorted((r for r in recs if r["cell"] == cell), key=lambda r: -r["test_acc"]):
            acc = f"{r['test_acc']:.2f} ± {r['test_acc_ci95']:.2f}"
            acc = f"**{acc}**" if r["best"] else (f"= {acc}" if r["tied_with_best"] else acc)
            lines.append(
                f"| {cell[0]} | {cell[1]} | {cell[2]} | {cell[3]} | `{r['loss']}` | "
                f"{r['learning_rate']:g}{r['tie']} | {r['n_seeds']} | {acc} | "
                f"{r['speed']:.2f} | {r['test_nll_mean']:.4f} | {100 * r['test_ece_mean']:.2f} | "
                f"{r['temperature_mean']:.3g} | {r['test_nll_ts_mean']:.4f} | "
                f"{100 * r['test_ece_ts_mean']:.2f} |")
    return lines


#: The best-loss pivots: (key, title, format); accuracy carries the best / tied marks.
PIVOTS = (("test_acc", "Test accuracy (%)", "{:.2f}"), ("speed", "Speed (points)", "{:.2f}"),
          ("test_nll_ts_mean", "NLL after temperature scaling", "{:.4f}"),
          ("test_ece_ts_mean", "ECE after temperature scaling (%)", "{:.2f}"))


def best_pivot(recs: list[dict], key: str, fmt: str) -> list[str]:
    """Rows dataset · optimizer · loss, columns protocol × depth, one metric per table."""
    cols = sorted({r["cell"][2:] for r in recs}, key=lambda c: (_protocol_rank(c[0]), c[1]))
    order = analysis.loss_order({r["loss"] for r in recs})
    rows = sorted({(r["cell"][0], r["cell"][1], r["loss"]) for r in recs}, key=lambda t: (
        _rank(t[0], DATASETS), _rank(t[1], OPTIMIZERS), order.index(t[2])))
    by = {(*r["cell"], r["loss"]): r for r in recs}
    lines = ["| data | optimizer | loss | " + " | ".join(f"{p} · {d}" for p, d in cols) + " |",
             "| --- | --- | --- | " + " | ".join("---:" for _ in cols) + " |"]
    for data, opt, loss in rows:
        cells = []
        for proto, dep in cols:
            r = by.get((data, opt, proto, dep, loss))
            if r is None or not np.isfinite(r[key]):
                cells.append("–")
                continue
            v = fmt.format(100 * r[key] if key == "test_ece_ts_mean" else r[key])
            if key == "test_acc":
                v = f"**{v}**" if r["best"] else (f"= {v}" if r["tied_with_best"] else v)
            cells.append(v)
        lines.append(f"| {data} | {opt} | `{loss}` | " + " | ".join(cells) + " |")
    return lines


def markdown(recs: list[dict], best: list[dict], folders: list[str],
             pools: list[tuple[str, str]] = (), out: str = "results/generality") -> str:
    pool_args = "".join(f" --pool {a} {b}" for a, b in pools)
    lines = [
        "# Where the answers hold: the generality studies", "",
        "Made by `python experiments/generality.py " + " ".join(folders) + pool_args
        + f" --out {out}` from the folders named, each with its config.", "",
        "## Paired effect of each edit on speed (points)", "",
        "Speed: the mean test accuracy over the evaluated epochs (the area under the curve). "
        "Each cell: variant minus base, each at its own chosen rate, paired by seed; mean ± "
        "half-width of the 95% t-interval; `*` where the reading (above 0, below 0, or "
        "including 0) changes with either side at a rate tied with its choice; `(n k)` where "
        f"other than {SEEDS_WANTED} seeds paired (fewer: a diverged member pairs with nothing; "
        "more: a follow-up sweep's seeds pooled in at the chosen rates). "
        "Reading: how many cells read each way.", "",
        *answer_tables(recs, "speed"),
        "## Paired effect of each edit on final test accuracy (points)", "",
        *answer_tables(recs, "final"),
        "## Which loss trains best", "",
        "Each loss that is no edit at its chosen rate: test accuracy at the last epoch (mean ± "
        "95% interval over seeds), speed, and the probabilities' quality, raw and after one "
        "temperature fitted on validation (NLL: test negative log-likelihood; ECE: 15 "
        "equal-width bins). Bold: the most accurate loss of its cell; `=`: a loss whose paired "
        "difference in final test accuracy from it has a 95% interval including 0. One table "
        "per measure (rows: data, optimizer, loss; columns: protocol and depth), then all of "
        "them in one long table with the rates.", ""]
    for key, title, fmt in PIVOTS:
        lines += [f"### {title}", "", *best_pivot(best, key, fmt), ""]
    lines += ["### Every measure, with the chosen rates", "", *best_table(best), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+")
    p.add_argument("--pool", nargs=2, action="append", default=[], metavar=("FOLDER", "MORE"),
                   help="pool the seeds of MORE, a follow-up sweep of FOLDER at its chosen rates "
                        "(experiments/more_seeds.py writes its config), into FOLDER's cells")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    pools = [tuple(x) for x in args.pool]
    try:
        unknown = [a for a, _ in pools if a not in args.folders]
        if unknown:
            raise ResultsError(f"--pool {unknown[0]}: not one of the folders given; name it "
                               f"among them too")
        results = [analysis.load_results(f) for f in args.folders]
        # Every folder is analysed before anything is written: one bad folder, no files.
        outs = [causal_report.analyse_results(res) for res in results]
        tables = dict(zip(args.folders, zip(results, outs, strict=True), strict=True))
        for first, more in pools:
            res = pooled.pool_seeds(tables[first][0], analysis.load_results(more))
            out = causal_report.analyse_results(res)
            # The first folder keeps its own analysis; the pooled one goes with the seeds.
            out["folder"] = more
            out["description"] += f"; seeds at the chosen rates pooled from {first} and {more}"
            outs.append(out)
            tables[first] = res, out
        causal_report.write_folders(outs)
        recs, best = [], []
        for res, out in tables.values():
            recs += effects(out, res.config)
            best += best_losses(res)
    except (ResultsError, OSError, ValueError) as e:
        print(f"generality: {e}", file=sys.stderr)
        return 2
    out_dir = Path(args.out)
    with locked([out_dir]):
        record_written(out_dir, ["generality.md", "generality.json"])
        write_text(out_dir / "generality.md", markdown(recs, best, args.folders, pools, args.out))
        write_json(out_dir / "generality.json", {
            "folders": args.folders, "pooled": [list(x) for x in pools],
            "effects": [{**r, "cell": list(r["cell"])} for r in recs],
            "best": [{**r, "cell": list(r["cell"])} for r in best]})
    print(f"wrote {out_dir / 'generality.md'} and generality.json")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
