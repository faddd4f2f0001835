"""Does pushing wrong-class logits up go with slower convergence?

exp-MSE was proposed on a gradient-sign argument: where a loss's gradient on a wrong-class logit
is negative, a gradient step pushes that logit up, which the argument says slows learning.
Cross-entropy's and exp-MSE's wrong-class gradients are never negative; MSE's and softmax-MSE's
can be. If the argument holds, members that push more wrong-class logits up converge more
slowly. For each member of one or more finished sweeps this takes
  - ``wrong_frac``: the fraction of wrong-class logits whose gradient was negative (so a step
    pushed them up), averaged over all training batches of all epochs, as logged by the engine;
  - convergence speed: the mean test accuracy over epochs (the area under the accuracy curve,
    uncensored, unlike "epochs to target").
and reports the Spearman rank correlation between the two over members
(``scipy.stats.spearmanr``, ties at average ranks), with a percentile bootstrap 95% interval
(``scipy.stats.bootstrap``, members resampled in pairs, fixed seed; Efron & Tibshirani 1993,
*An Introduction to the Bootstrap*, ch. 13), both at each loss's chosen learning rate and over
every non-diverged member, plus the per-loss means. The argument predicts a clearly negative
correlation.

This is a correlation across members of different losses, so the wrong-direction fraction
mostly says which loss a member used, and every other difference between the losses rides along
with it: it is confounded by the loss. ``lossjax causal`` tests the argument causally,
with gradient interventions paired by seed, and reports the relation within each loss.

    python experiments/gradient_sign.py results/mnist [results/fashion_mnist ...]

Each folder is read and checked by ``lossjax.analysis``, as for the plots and the report, and
must hold a finished sweep. Writes ``gradient_sign.json``, ``gradient_sign.md`` and
``gradient_sign.{png,svg}`` into each results folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from lossjax import analysis, plots  # noqa: E402
from lossjax.folder import locked, record_written, write_json, write_text  # noqa: E402
from lossjax.tables import MATCH_COLUMNS  # noqa: E402

N_BOOT = 2000


def spearman(x, y) -> float:
    """Spearman's rank correlation; NaN where either variable is constant (it has no ranks)."""
    with warnings.catch_warnings():
        # Members at a zero wrong-direction fraction (cross-entropy, exp-MSE) make constant
        # inputs routine, in bootstrap resamples above all; NaN already says so.
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(stats.spearmanr(x, y).statistic)


def bootstrap_ci(x, y, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of :func:`spearman`, members resampled in pairs.

    A resample whose ``x`` or ``y`` is constant has no rank correlation, and scipy then returns
    NaN for the whole interval; such resamples are left out instead, so the interval is that of
    the correlation given that it is defined. At n = 12 with half the members at zero that is
    about 2^-12 of the resamples; at n = 4 with two at zero, about 7%.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap((np.asarray(x), np.asarray(y)), spearman, paired=True,
                              vectorized=False, n_resamples=N_BOOT, method="percentile",
                              rng=seed)
    ci = res.confidence_interval
    if np.isnan(ci.low) or np.isnan(ci.high):
        # Same interpolation as scipy's percentile interval, over the defined resamples only.
        lo, hi = np.nanpercentile(res.bootstrap_distribution, [2.5, 97.5])
        return float(lo), float(hi)
    return float(ci.low), float(ci.high)


def per_member(table: pd.DataFrame) -> pd.DataFrame:
    ok = ~table.groupby("member")["diverged"].transform("max").astype(bool)
    t = table[ok]
    # Weight decay and init scale are optional columns of epochs.csv.
    swept = [c for c in MATCH_COLUMNS if c in t.columns]
    keys = ["member", "loss", "hidden", "learning_rate", *swept, "seed"]
    return t.groupby(keys, as_index=False).agg(
        wrong_frac=("wrong_frac", "mean"), speed=("test_acc", "mean"),
        final_test_acc=("test_acc", "last"))


def analyse(folder: Path) -> dict:
    res = analysis.load_results(folder)
    members = per_member(res.epochs)
    # The members at each group's chosen rate, selected as the plots and the report select them.
    at_rate = set().union(*(c.rows["member"] for c in analysis.chosen_runs(res)))
    chosen = members[members["member"].isin(at_rate)].reset_index(drop=True)
    out = {"folder": str(folder), "n_members": len(members)}
    for name, df in (("chosen_rates", chosen), ("all_rates", members)):
        rho = spearman(df["wrong_frac"], df["speed"])
        out[name] = {"n": len(df), "spearman": rho,
                     "ci95": bootstrap_ci(df["wrong_frac"], df["speed"])}
    within = {}
    for loss, df in members.groupby("loss"):
        if df["wrong_frac"].std() > 0 and len(df) >= 4:
            within[loss] = {"n": len(df), "spearman": spearman(df["wrong_frac"], df["speed"]),
                            "ci95": bootstrap_ci(df["wrong_frac"], df["speed"])}
    out["within_loss_all_rates"] = within
    out["per_loss_chosen"] = (
        chosen.groupby("loss")[["wrong_frac", "speed", "final_test_acc"]].mean()
        .reindex(analysis.loss_order(chosen["loss"])).reset_index().to_dict("records"))
    # Recorded as lossjax's before they are written: --overwrite of the folder removes them.
    with locked([folder]):
        record_written(folder, [f"gradient_sign.{e}" for e in ("json", "md", "png", "svg")])
        _plot(folder, chosen, members, out)
        _write(folder, out)
    return out


def _plot(folder: Path, chosen: pd.DataFrame, members: pd.DataFrame, out: dict) -> None:
    styles = plots.loss_styles(members["loss"])
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for loss, df in members.groupby("loss"):
        color, marker = styles[loss]
        ax.scatter(df["wrong_frac"], df["speed"], color=color, marker=marker, alpha=0.25, s=22)
        c = chosen[chosen["loss"] == loss]
        ax.scatter(c["wrong_frac"], c["speed"], color=color, marker=marker, s=60,
                   edgecolor="black", label=f"{loss} (chosen rate)")
    r = out["chosen_rates"]
    ax.set_title(f"{folder.name}: wrong-direction fraction vs convergence speed\n"
                 f"Spearman ρ at chosen rates = {r['spearman']:.2f} "
                 f"[{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] (n = {r['n']}); faint: all rates")
    ax.set_xlabel("fraction of wrong-class logits pushed up (mean over training)")
    ax.set_ylabel("mean test accuracy over epochs")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(folder / f"gradient_sign.{ext}", dpi=130)
    plt.close(fig)


def _fmt(r: dict) -> str:
    return f"ρ = {r['spearman']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}], n = {r['n']}"


def _write(folder: Path, out: dict) -> None:
    write_json(folder / "gradient_sign.json", out)
    lines = [f"# Gradient-sign study: {folder.name}", "",
             "Spearman rank correlation between a member's wrong-direction fraction and its "
             "convergence speed (mean test accuracy over epochs); bootstrap 95% interval.", "",
             f"- at each loss's chosen learning rate: {_fmt(out['chosen_rates'])}",
             f"- every non-diverged member: {_fmt(out['all_rates'])}"]
    lines += [f"- within `{k}` (all rates): {_fmt(v)}"
              for k, v in out["within_loss_all_rates"].items()]
    lines += ["",
              "| loss | wrong-direction fraction | mean test acc over epochs | final test acc |",
              "| --- | ---: | ---: | ---: |"]
    lines += [f"| `{r['loss']}` | {r['wrong_frac']:.3f} | {r['speed']:.4f} | "
              f"{r['final_test_acc']:.4f} |" for r in out["per_loss_chosen"]]
    lines += ["", "![gradient sign](gradient_sign.png)", ""]
    write_text(folder / "gradient_sign.md", "\n".join(lines))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", type=Path)
    args = p.parse_args(argv)
    for folder in args.folders:
        out = analyse(folder)
        print(json.dumps({k: out[k] for k in ("folder", "chosen_rates", "all_rates")}))
        print((folder / "gradient_sign.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
