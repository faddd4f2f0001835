"""Does pushing wrong-class logits up hinder learning? A paired, interventional test.

The claim behind exp-MSE: where a loss's per-example gradient on a wrong-class logit is negative,
a step pushes that logit up, and that hinders learning (MSE and softmax-MSE do it, cross-entropy
and exp-MSE never do). Comparing losses cannot test it: they differ in much more than the sign of
that gradient. ``experiments/gradient_sign.py`` correlates the two across losses, and the loss is
a confounder. Here the sweep holds *interventions*: loss variants that keep a base loss's value
and edit only its logit gradient, named ``<base>-<edit>[-balanced][-norm_matched]``:

- ``no_push_up``: every wrong-class component that would push its logit up is zeroed;
- ``push_up_<P>``: P percent of the wrong classes get their component's sign flipped so that
  they are pushed up;
- ``true_pull``: exp-MSE's true-class component no longer vanishes as its logit goes negative;
- ``-balanced``: the edit's change to the sum of the components is moved to the true class, so
  that the gradient of a softmax-based loss still sums to 0 (the seed predicts the same sign);
- ``-norm_matched``: the edited per-example gradient is rescaled to the base gradient's norm.

A variant and its base in one sweep start, seed for seed, from the same weights and see the same
batches, so their difference per seed is the effect of the edit (and of the learning rate chosen
for each on validation). For each variant ``V`` with its base ``B`` in a folder (same hidden
sizes, weight decay and init scale), ``V``'s members at ``V``'s chosen rate are paired by seed
with ``B``'s at ``B``'s, and per seed ``V − B`` is taken of

- *speed*: the area under the test-accuracy curve, i.e. the mean test accuracy over the epochs
  at which both members were evaluated (``eval.every`` leaves the others NaN);
- *epochs to target*: the first of those epochs with test accuracy ≥ ``eval.target_accuracy``;
  a pair where either member never gets there is *censored* and left out of the mean (counted);
- *final test accuracy*, at the last epoch.

Each is reported as the mean over seeds with its 95% Student-t interval (``lossjax.stats.
ci95_halfwidth``; Student 1908), with the mean wrong-direction fraction and gradient norm of both
sides, so that a reader sees how the edit changed the gradient's direction and size. A pair with
a diverged member is left out, counted. The seed's prediction for the speed effect is > 0 for
``no_push_up`` on a base that pushes wrong classes up (= 0 on one that never does: the edit
changes nothing), < 0 for ``push_up_<P>``; it predicts nothing for ``true_pull``.

A chosen rate is an estimate: where the seeds do not tell it from another rate of its grid
(``tied_lrs`` of ``summary.csv``, ``lossjax.stats.rate_choice``), the headline effect, at
both chosen rates, is one of several the data allow. So for a comparison where either side's
choice is tied, the same paired effects are also taken with one side at a time moved to each
of its tied rates while the other side stays at its chosen rate (not every combination: each
row differs from the headline in one rate only), and the report says whether the speed
effect's reading (CI above 0, below 0, or including 0) is the headline's at every such row.

Within-loss evidence, free of the confounding by loss: for each loss (base or variant) and group
with at least 4 non-diverged members, Spearman's ρ between a member's mean wrong-direction
fraction and its speed across every rate and seed; and one pooled ρ controlling for the loss:
both variables are ranked within each loss, the ranks centred and scaled to (−½, ½) so that
groups of any size weigh alike, and Spearman's ρ is taken over the pooled scaled ranks, with a
percentile bootstrap 95% interval that resamples members within each loss (a stratified
bootstrap; Efron & Tibshirani 1993, *An Introduction to the Bootstrap*, ch. 13 and 16). The old
pooled ρ across losses is kept for contrast, labelled as confounded by loss.

    python experiments/causal.py results/mnist_causal [results/fashion_causal ...] --out DIR

Each folder is read and checked by ``lossjax.analysis`` and must hold a finished sweep with at
least one variant beside its base; otherwise one line on stderr, exit status 2, and nothing is
written. Writes ``causal.json`` and ``causal.md`` into each folder, and into ``DIR`` the figure
of every folder's paired speed effects, ``causal_effects.{png,svg}``, and one table of them all,
``causal_effects.md``.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy import stats

from lossjax import analysis, plots
from lossjax.config import EvalConfig
from lossjax.errors import ResultsError
from lossjax.folder import record_written, write_json, write_text
from lossjax.stats import ci95_halfwidth, tied_rates
from lossjax.tables import MATCH_COLUMNS

BASES = ("cross_entropy", "mse", "softmax_mse", "exp_mse")
#: Bases whose wrong-class gradient can be negative (a step pushes the logit up).
PUSHING_BASES = ("mse", "softmax_mse")
MIN_MEMBERS = 4  # fewer members than this give a rank correlation no meaning
N_BOOT = 2000
BOOT_SEED = 0
FIGURE_NAME = "causal_effects"


# --------------------------------------------------------------------------------------------
# Names: which losses are interventions on which base, and what the seed claim predicts


@dataclass(frozen=True)
class Intervention:
    """A loss named ``<base>-<edit>[-balanced][-norm_matched]``."""

    loss: str
    base: str
    edit: str
    norm_matched: bool

    @property
    def prediction(self) -> str | None:
        """The sign the seed claim predicts for the effect on speed (V − B): '> 0', '< 0',
        '= 0' (the edit changes no gradient), or None (the claim says nothing about it)."""
        edit = self.edit.removesuffix("-balanced")  # where the moved sum goes: same sign
        if edit == "no_push_up":
            return "> 0" if self.base in PUSHING_BASES else "= 0"
        m = re.fullmatch(r"push_up_(\d+(?:\.\d+)?)", edit)
        if m:
            return "= 0" if float(m.group(1)) == 0 else "< 0"
        return None


def parse_intervention(loss: str) -> Intervention | None:
    """The intervention a loss name describes, or None for a base or any other loss."""
    parts = loss.split("-")
    if len(parts) < 2 or parts[0] not in BASES:
        return None
    norm_matched = parts[-1] == "norm_matched"
    edit = "-".join(parts[1:-1] if norm_matched else parts[1:])
    return Intervention(loss, parts[0], edit, norm_matched) if edit else None


def loss_key(loss: str) -> tuple:
    """Sort key that keeps each base's variants right after it: built-in bases in their
    canonical order, then any other loss by name."""
    iv = parse_intervention(loss)
    base = iv.base if iv else loss
    family = BASES.index(base) if base in BASES else len(BASES)
    return (family, base if family == len(BASES) else "", iv is not None, loss)


# --------------------------------------------------------------------------------------------
# Paired effects


def _by_seed(rows: pd.DataFrame, what: str) -> dict[int, pd.DataFrame]:
    out = {}
    for seed, g in rows.groupby("seed"):
        if g["member"].nunique() != 1:
            raise ResultsError(f"{what} has {g['member'].nunique()} members with seed {seed} at "
                               "its chosen rate; a seed must pick one member")
        out[int(seed)] = g.sort_values("epoch")
    return out


def _curve(rows: pd.DataFrame) -> pd.Series:
    return rows.set_index("epoch")["test_acc"].astype(float)


def first_reach(curve: pd.Series, target: float) -> float:
    """The first epoch of ``curve`` (test accuracy by epoch) at or above ``target``; NaN if
    none is. NaN entries (epochs not evaluated) never count."""
    hit = curve.index[curve.to_numpy(float) >= target]
    return float(hit.min()) if len(hit) else math.nan


def pair_members(base_rows: pd.DataFrame, variant_rows: pd.DataFrame, target: float,
                 ) -> pd.DataFrame:
    """One row per seed of either side: ``status`` and, for paired seeds, each side's speed,
    epoch to target and final test accuracy.

    ``status`` is 'paired', 'diverged' (either member diverged: left out, its frozen weights are
    no result) or 'unpaired' (the seed has a member on one side only). Speed is the mean test
    accuracy over the epochs at which *both* members have one, so both average the same epochs;
    the epoch to target is taken over those epochs too (NaN: never reached); the final accuracy
    is each member's at its last epoch.
    """
    base, variant = _by_seed(base_rows, "the base"), _by_seed(variant_rows, "the variant")
    out = []
    for seed in sorted(set(base) | set(variant)):
        row = {"seed": seed, "status": "paired"}
        if seed not in base or seed not in variant:
            out.append({**row, "status": "unpaired"})
            continue
        b, v = base[seed], variant[seed]
        if b["diverged"].any() or v["diverged"].any():
            out.append({**row, "status": "diverged"})
            continue
        cb, cv = _curve(b), _curve(v)
        common = cb.index[np.isfinite(cb.to_numpy()) & cb.index.isin(cv.index[cv.notna()])]
        for side, c in (("base", cb), ("variant", cv)):
            row[f"{side}_speed"] = float(c[common].mean()) if len(common) else math.nan
            row[f"{side}_reach"] = first_reach(c[common], target)
            row[f"{side}_final"] = float(c.iloc[-1])
        out.append(row)
    cols = ["seed", "status"] + [f"{s}_{m}" for s in ("base", "variant")
                                 for m in ("speed", "reach", "final")]
    return pd.DataFrame(out, columns=cols)


def interval(values: Iterable[float]) -> dict:
    """Mean of the finite ``values``, its 95% Student-t half-width (NaN under two values), the
    interval's ends, and n."""
    v = np.asarray(list(values), float)
    v = v[np.isfinite(v)]
    mean = float(v.mean()) if len(v) else math.nan
    half = ci95_halfwidth(v)
    return {"mean": mean, "ci95": half, "low": mean - half, "high": mean + half, "n": len(v)}


def paired_effects(pairs: pd.DataFrame) -> dict:
    """The effects V − B over the paired seeds of :func:`pair_members`, each as an
    :func:`interval`, with the per-seed differences and the counts of what was left out.

    Epochs to target: over the pairs where both members reached the target; ``censored``
    counts the others (``base_missed`` / ``variant_missed``: how many of those the base / the
    variant never reached it; a pair may count in both).
    """
    p = pairs[pairs["status"] == "paired"]
    speed = p["variant_speed"] - p["base_speed"]
    final = p["variant_final"] - p["base_final"]
    reach = p["variant_reach"] - p["base_reach"]
    b_miss, v_miss = p["base_reach"].isna(), p["variant_reach"].isna()
    return {
        "n_pairs": len(p),
        "diverged_pairs": int((pairs["status"] == "diverged").sum()),
        "unpaired_seeds": int((pairs["status"] == "unpaired").sum()),
        "speed": interval(speed),
        "epochs_to_target": {**interval(reach), "censored": int((b_miss | v_miss).sum()),
                             "base_missed": int(b_miss.sum()),
                             "variant_missed": int(v_miss.sum())},
        "final_test_acc": interval(final),
        "per_seed": [{"seed": int(s), "speed": a, "epochs_to_target": e, "final_test_acc": f}
                     for s, a, e, f in zip(p["seed"], speed, reach, final, strict=True)],
    }


def gradient_profile(rows: pd.DataFrame, seeds: Iterable[int]) -> dict:
    """Mean wrong-direction fraction and mean per-example logit-gradient norm over the epochs
    of the members with the given seeds (NaN where the table has no such column)."""
    r = rows[rows["seed"].isin(list(seeds))]
    return {c: float(r[c].mean()) if c in r.columns and r[c].notna().any() else math.nan
            for c in ("wrong_frac", "grad_norm")}


def verdict(effect: dict, prediction: str | None) -> str:
    """One sentence: does the speed effect's interval exclude 0, and which way relative to the
    seed's prediction."""
    lo, hi, n = effect["low"], effect["high"], effect["n"]
    if n == 0:
        return "no pair to compare"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{n} pair: no interval (at least two seeds are needed)"
    said = {None: "the seed claim makes no prediction",
            "= 0": "the seed claim predicts no change (the edit changes no gradient)"}
    if lo > 0 or hi < 0:
        sign = "> 0" if lo > 0 else "< 0"
        way = "faster" if lo > 0 else "slower"
        if prediction in said:
            tail = said[prediction]
        elif prediction == sign:
            tail = f"as the seed claim predicts ({prediction})"
        else:
            tail = f"against the seed claim's prediction ({prediction})"
        return f"CI excludes 0: the variant learns {way} ({sign}), {tail}"
    if prediction == "= 0":
        tail = "consistent with the seed claim's prediction of no change"
    elif prediction is None:
        tail = said[None]
    else:
        tail = f"the seed claim predicts {prediction}, which this does not show"
    return f"CI includes 0: no detectable effect; {tail}"


# --------------------------------------------------------------------------------------------
# The comparisons of one folder


def _match_values(res: analysis.Results, row: pd.Series) -> dict:
    return {c: float(row[c]) for c in analysis._match_columns(res)}


def _group_key(res: analysis.Results, row: pd.Series) -> tuple:
    # A dictionary key: formatted, so that float noise in a CSV round trip never splits a group.
    return (row["hidden"], *(f"{v:.10g}" for v in _match_values(res, row).values()))


def direction(effect: dict) -> str:
    """How an effect's 95% interval reads: '> 0', '< 0', 'includes 0', 'no interval' (one
    pair) or 'no pairs'."""
    if effect["n"] == 0:
        return "no pairs"
    lo, hi = effect["low"], effect["high"]
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "no interval"
    return "> 0" if lo > 0 else "< 0" if hi < 0 else "includes 0"


def _members_at(res: analysis.Results, row: pd.Series, lr: float) -> pd.DataFrame:
    group = analysis.group_rows(res, row["loss"], row["hidden"], row)
    return group[analysis._close(group["learning_rate"], lr)]


def tied_rate_effects(res: analysis.Results, base: pd.Series, variant: pd.Series,
                      target: float) -> list[dict]:
    """The paired effects with one side at a time at each rate its choice is tied with, the
    other at its chosen rate; the first row is the headline (both at their chosen rates). []
    where neither side's choice is tied, or a side has no chosen rate."""
    b_lr, v_lr = float(base["learning_rate"]), float(variant["learning_rate"])
    if not (np.isfinite(b_lr) and np.isfinite(v_lr)):
        return []
    b_tied, v_tied = (tied_rates(r.get("tied_lrs")) for r in (base, variant))
    if not (b_tied or v_tied):
        return []
    rows = [(True, None, b_lr, v_lr)]
    rows += [(False, "base", r, v_lr) for r in b_tied]
    rows += [(False, "variant", b_lr, r) for r in v_tied]
    out = []
    for headline, moved, b, v in rows:
        e = paired_effects(pair_members(_members_at(res, base, b), _members_at(res, variant, v),
                                        target))
        e.pop("per_seed")
        out.append({"headline": headline, "moved": moved, "base_learning_rate": b,
                    "variant_learning_rate": v, **e, "speed_direction": direction(e["speed"])})
    return out


def compare(res: analysis.Results, iv: Intervention, base: pd.Series, variant: pd.Series,
            chosen: dict[tuple, analysis.Choice], target: float) -> dict:
    """The comparison of one variant's summary row with its base's: :func:`paired_effects` and
    each side's gradient profile, speed and final accuracy over the paired seeds."""
    out = {
        "base": iv.base, "variant": iv.loss, "edit": iv.edit, "norm_matched": iv.norm_matched,
        "hidden": base["hidden"], **_match_values(res, base),
        "prediction": iv.prediction,
        "base_learning_rate": float(base["learning_rate"]),
        "variant_learning_rate": float(variant["learning_rate"]),
    }
    cb = chosen.get((iv.base, *_group_key(res, base)))
    cv = chosen.get((iv.loss, *_group_key(res, variant)))
    none = res.epochs.iloc[:0]
    gone = [name for name, c in (("the base", cb), ("the variant", cv)) if c is None]
    b_rows, v_rows = (none, none) if gone else (cb.rows, cv.rows)
    pairs = pair_members(b_rows, v_rows, target)
    out.update(paired_effects(pairs), note=(
        f"every member of {' and '.join(gone)} diverged at every rate" if gone else None))
    p = pairs[pairs["status"] == "paired"]
    for side, rows in (("base", b_rows), ("variant", v_rows)):
        out[f"{side}_profile"] = {**gradient_profile(rows, p["seed"]),
                                  "speed": float(p[f"{side}_speed"].mean()),
                                  "final_test_acc": float(p[f"{side}_final"].mean())}
    out["verdict"] = verdict(out["speed"], iv.prediction)
    for side, row in (("base", base), ("variant", variant)):
        out[f"{side}_rate_choice"] = row.get("rate_choice")
        out[f"{side}_tied_lrs"] = list(tied_rates(row.get("tied_lrs")))
    tied = [] if gone else tied_rate_effects(res, base, variant, target)
    out["tied_rate_effects"] = tied
    # Whether every tied-rate row reads as the headline does (None: no tied rate choice).
    out["robust_to_rate_choice"] = (
        all(t["speed_direction"] == direction(out["speed"]) for t in tied) if tied else None)
    return out


def comparisons(res: analysis.Results, target: float) -> list[dict]:
    """Every variant in ``res`` beside its base (same hidden sizes, weight decay and init
    scale), ordered by hidden sizes (as ``summary_rows``), then :func:`loss_key`."""
    rows = analysis.summary_rows(res)
    by_key = {(r["loss"], *_group_key(res, r)): r for r in rows}
    chosen = {(c.loss, *_group_key(res, c.row)): c for c in analysis.chosen_runs(res)}
    out = []
    hidden = analysis.hidden_order(r["hidden"] for r in rows)
    for r in sorted(rows, key=lambda r: (hidden.index(r["hidden"]), loss_key(r["loss"]))):
        iv = parse_intervention(r["loss"])
        base = by_key.get((iv.base, *_group_key(res, r))) if iv else None
        if base is not None:
            out.append(compare(res, iv, base, r, chosen, target))
    return out


# --------------------------------------------------------------------------------------------
# Within-loss evidence


def member_table(epochs: pd.DataFrame) -> pd.DataFrame:
    """One row per member: its group (loss, hidden, weight decay, init scale where present),
    rate and seed, whether it diverged, its mean wrong-direction fraction over epochs and its
    speed (mean test accuracy over its evaluated epochs)."""
    keys = ["member", "loss", "hidden", "learning_rate",
            *(c for c in MATCH_COLUMNS if c in epochs.columns), "seed"]
    return epochs.groupby(keys, as_index=False, dropna=False).agg(
        diverged=("diverged", "any"), wrong_frac=("wrong_frac", "mean"),
        speed=("test_acc", "mean"))


def spearman(x, y) -> float:
    """Spearman's ρ (``scipy.stats.spearmanr``: Pearson's r of the average ranks); NaN where
    either variable is constant (it has no ranks)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(stats.spearmanr(x, y).statistic)


def _rank_corr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's ρ along the last axis, for a batch of resamples at once (the statistic of
    :func:`spearman`); NaN for a constant row."""
    rx, ry = (stats.rankdata(a, axis=-1) for a in (x, y))
    rx, ry = (r - r.mean(axis=-1, keepdims=True) for r in (rx, ry))
    den = np.sqrt((rx**2).sum(-1) * (ry**2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(-1) / den, np.nan)


def scaled_ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis, centred and divided by the count: in (−½, ½) and
    mean 0 whatever the group's size (all 0 for a constant group)."""
    n = values.shape[-1]
    return (stats.rankdata(values, axis=-1) - (n + 1) / 2) / n


def pooled_within(x_groups: list[np.ndarray], y_groups: list[np.ndarray]) -> np.ndarray:
    """Spearman's ρ of the pooled :func:`scaled_ranks` of ``x`` and ``y`` within each group:
    the rank correlation with the differences between groups removed. Groups along the last
    axis; leading axes (resamples) are kept."""
    sx = np.concatenate([scaled_ranks(x) for x in x_groups], axis=-1)
    sy = np.concatenate([scaled_ranks(y) for y in y_groups], axis=-1)
    return _rank_corr(sx, sy)


def _percentile_ci(res) -> tuple[float, float]:
    ci = res.confidence_interval
    if np.isnan(ci.low) or np.isnan(ci.high):
        # A resample without a rank correlation (a constant variable) makes scipy's interval
        # NaN; take the percentiles of the defined resamples instead, as scipy would.
        lo, hi = np.nanpercentile(res.bootstrap_distribution, [2.5, 97.5])
        return float(lo), float(hi)
    return float(ci.low), float(ci.high)


def stratified_bootstrap(x_groups: list[np.ndarray], y_groups: list[np.ndarray],
                         n_resamples: int = N_BOOT, seed: int = BOOT_SEED,
                         ) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of :func:`pooled_within`, members (x, y pairs)
    resampled with replacement within each group, groups independently (``scipy.stats.
    bootstrap`` over one sample of member indices per group)."""
    x_all, y_all = np.concatenate(x_groups), np.concatenate(y_groups)
    starts = np.cumsum([0, *(len(g) for g in x_groups)])
    samples = tuple(np.arange(a, b) for a, b in zip(starts[:-1], starts[1:], strict=True))

    def statistic(*idx, axis=-1):
        idx = [np.moveaxis(i, axis, -1).astype(int) for i in idx]
        return pooled_within([x_all[i] for i in idx], [y_all[i] for i in idx])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap(samples, statistic, paired=False, vectorized=True,
                              n_resamples=n_resamples, method="percentile", rng=seed)
    return _percentile_ci(res)


def paired_bootstrap(x, y, n_resamples: int = N_BOOT, seed: int = BOOT_SEED,
                     ) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of Spearman's ρ, members resampled in (x, y) pairs."""
    x, y = np.asarray(x, float), np.asarray(y, float)

    def statistic(i, axis=-1):
        i = np.moveaxis(i, axis, -1).astype(int)
        return _rank_corr(x[i], y[i])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap((np.arange(len(x)),), statistic, vectorized=True,
                              n_resamples=n_resamples, method="percentile", rng=seed)
    return _percentile_ci(res)


def within_loss(members: pd.DataFrame, n_resamples: int = N_BOOT) -> dict:
    """Per group (loss, hidden, weight decay, init scale), Spearman's ρ between wrong-direction
    fraction and speed over its non-diverged members at every rate and seed; the pooled
    within-loss ρ over the groups where both vary, with its stratified bootstrap interval; and
    the pooled ρ across losses, confounded by loss, with a paired bootstrap interval."""
    ok = members[~members["diverged"] & members["wrong_frac"].notna()
                 & members["speed"].notna()]
    keys = ["loss", "hidden", *(c for c in MATCH_COLUMNS if c in members.columns)]
    hidden = analysis.hidden_order(members["hidden"])
    groups, xs, ys = [], [], []
    for key, g in sorted(ok.groupby(keys, sort=False),
                         key=lambda kg: (hidden.index(kg[0][1]), loss_key(kg[0][0]), kg[0][2:])):
        x, y = g["wrong_frac"].to_numpy(float), g["speed"].to_numpy(float)
        entry = {**dict(zip(keys, key, strict=True)), "n": len(g), "spearman": math.nan}
        if len(g) < MIN_MEMBERS:
            entry["note"] = f"fewer than {MIN_MEMBERS} members"
        elif np.ptp(x) == 0 or np.ptp(y) == 0:
            which = "wrong-direction fraction" if np.ptp(x) == 0 else "speed"
            entry["note"] = f"constant {which} (={x[0] if np.ptp(x) == 0 else y[0]:.3g})"
        else:
            entry.update(spearman=spearman(x, y), note=None)
            xs.append(x)
            ys.append(y)
        groups.append(entry)
    diverged = int(members["diverged"].sum())
    pooled = {"n": int(sum(len(x) for x in xs)), "groups": len(xs), "spearman": math.nan,
              "ci95": [math.nan, math.nan]}
    if xs:
        pooled["spearman"] = float(pooled_within(xs, ys))
        pooled["ci95"] = list(stratified_bootstrap(xs, ys, n_resamples))
    cross = {"n": len(ok), "spearman": spearman(ok["wrong_frac"], ok["speed"]),
             "ci95": [math.nan, math.nan]}
    if len(ok) >= MIN_MEMBERS and np.isfinite(cross["spearman"]):
        cross["ci95"] = list(paired_bootstrap(ok["wrong_frac"], ok["speed"], n_resamples))
    return {"groups": groups, "pooled_within_loss": pooled,
            "pooled_across_losses_confounded": cross, "diverged_members_excluded": diverged}


# --------------------------------------------------------------------------------------------
# One folder


#: Still improving: chosen members gained more than this (validation accuracy, mean over seeds)
#: over the last LATE_EPOCHS epochs.
STILL_IMPROVING = 0.002
LATE_EPOCHS = 3


def protocol(res: analysis.Results) -> list[dict]:
    """Per summary row (each loss and variant at its chosen rate): whether that rate sits at an
    edge of its grid, and the mean validation-accuracy gain over the last ``LATE_EPOCHS`` epochs
    (a loss still improving at the end was stopped too early for its speed to be judged by its
    final accuracy)."""
    rows = []
    for choice in analysis.chosen_runs(res):
        r = choice.row
        val = choice.rows.pivot_table(index="epoch", columns="seed", values="val_acc").dropna()
        gain = (val.iloc[-1] - val.iloc[-1 - LATE_EPOCHS]).mean() if len(val) > LATE_EPOCHS \
            else float("nan")
        rows.append({
            "loss": r["loss"], "hidden": r["hidden"], "learning_rate": float(r["learning_rate"]),
            "lr_at_grid_edge": bool(r.get("lr_at_grid_edge", False)),
            "rate_choice": r.get("rate_choice"),
            "tied_lrs": list(tied_rates(r.get("tied_lrs"))),
            "late_val_gain": float(gain),
            "still_improving": bool(gain > STILL_IMPROVING),
            "test_acc_mean": float(r["test_acc_mean"]),
        })
    return rows


def target_accuracy(res: analysis.Results) -> float:
    t = analysis.config_value(res.config, "eval.target_accuracy")
    return float(t) if isinstance(t, (int, float)) else EvalConfig().target_accuracy


def analyse(folder: str | os.PathLike, n_resamples: int = N_BOOT) -> dict:
    """The whole analysis of one results folder, as written to ``causal.json``. Raises
    ``ResultsError`` (one line) for a folder that cannot be read or has no variant beside its
    base."""
    res = analysis.load_results(folder)
    target = target_accuracy(res)
    comps = comparisons(res, target)
    if not comps:
        losses = ", ".join(analysis.loss_order(res.epochs["loss"]))
        raise ResultsError(
            f"{res.path} holds no loss variant beside its base (<base>-<edit>, base one of "
            f"{', '.join(BASES)}; it has {losses}): nothing to compare")
    return {
        "folder": str(res.path),
        # The length of training is part of what an effect means (10 against 20 epochs).
        "description": f"{analysis.describe(res)}, {int(res.epochs['epoch'].max())} epochs",
        "target_accuracy": target, "comparisons": comps,
        "within_loss": within_loss(member_table(res.epochs), n_resamples),
        "protocol": protocol(res),
        "bootstrap": {"resamples": n_resamples, "seed": BOOT_SEED, "method": "percentile"},
    }


def _finite(obj):
    """``obj`` with NaN and infinities as None (JSON has no NaN) and numpy scalars as Python."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# --------------------------------------------------------------------------------------------
# Markdown


def comparison_label(c: dict, varying: Iterable[str] = ()) -> str:
    """'mse → mse-no_push_up', with the group where more than one was swept."""
    extra = [f"hidden {c['hidden']}" if k == "hidden" else f"{k} {c[k]:g}" for k in varying]
    tail = f" [{', '.join(extra)}]" if extra else ""
    return f"{c['base']} → {c['variant']}{tail}"


def _varying(comps: list[dict]) -> list[str]:
    keys = ["hidden", *(k for k in MATCH_COLUMNS if k in comps[0])]
    return [k for k in keys if len({c[k] for c in comps}) > 1]


def _pm(e: dict, scale: float = 1.0, digits: int = 2) -> str:
    if e["n"] == 0:
        return "–"
    m = f"{scale * e['mean']:+.{digits}f}"
    h = e["ci95"]
    return f"{m} ± {scale * h:.{digits}f} (n {e['n']})" if np.isfinite(h) else f"{m} (n {e['n']})"


def _num(v: float, fmt: str = ".3f") -> str:
    return format(v, fmt) if np.isfinite(v) else "–"


def _rho(r: dict) -> str:
    text = f"ρ = {_num(r['spearman'], '.2f')}"
    lo, hi = r["ci95"]
    if np.isfinite(lo) and np.isfinite(hi):
        text += f" [{lo:.2f}, {hi:.2f}]"
    return f"{text}, n = {r['n']}"


def _tie_note(r: dict) -> str:
    if r.get("rate_choice") == "one seed":
        return " (one seed)"
    tied = r.get("tied_lrs") or []
    return f" (tie: {', '.join(f'{v:g}' for v in tied)})" if tied else ""


def tied_section(comps: list[dict], varying: list[str]) -> list[str]:
    """The *Tied rate choices* section of ``causal.md``: per comparison with a tied side, the
    headline row and one row per tied rate of either side, the other side at its chosen rate."""
    tied = [c for c in comps if c.get("tied_rate_effects")]
    lines = ["", "## Tied rate choices", ""]
    if not tied:
        return lines + ["Every rate choice here is decided (or has no rival): the headline "
                        "effects are the only ones the validation data allow."]
    robust = sum(bool(c["robust_to_rate_choice"]) for c in tied)
    lines += [
        f"{len(tied)} of {len(comps)} comparisons have a side whose chosen rate is tied with "
        "other rates of its grid: the paired validation gap (chosen − other, per seed, a "
        "diverged member scoring 0) has a 95% interval that includes 0, or rests on one seed. "
        "For those, the effects are also taken with one side at a time at each of its tied "
        "rates, the other side staying at its chosen rate; **headline** marks the row at both "
        f"chosen rates, the one reported above. In {robust} of {len(tied)} the speed effect "
        "reads the same (CI above 0, below 0, or including 0) at every tied rate.", "",
        "| comparison | row | lr (base → variant) | Δ speed (points) | speed CI | Δ final test "
        "acc (points) | left out |",
        "| --- | --- | --- | ---: | --- | ---: | --- |",
    ]
    for c in tied:
        for t in c["tied_rate_effects"]:
            row = "**headline**" if t["headline"] else f"{t['moved']} at tied rate"
            left = [f"{t['diverged_pairs']} diverged"] if t["diverged_pairs"] else []
            left += [f"{t['unpaired_seeds']} unpaired"] if t["unpaired_seeds"] else []
            lines.append(
                f"| `{comparison_label(c, varying)}` | {row} | "
                f"{t['base_learning_rate']:g} → {t['variant_learning_rate']:g} | "
                f"{_pm(t['speed'], 100)} | {t['speed_direction']} | "
                f"{_pm(t['final_test_acc'], 100)} | {', '.join(left) or '–'} |")
    return lines


def markdown(out: dict, figure: Path | None = None) -> str:
    """``causal.md``: the paired effects, the verdicts, the within-loss table."""
    comps = out["comparisons"]
    varying = _varying(comps)
    name = Path(out["folder"]).name
    t = out["target_accuracy"]
    lines = [
        f"# Gradient-edit interventions: {name}", "", out["description"], "",
        "Paired by seed: each variant at its own chosen learning rate against its base at the "
        "base's, same initial weights and batches. Differences are variant − base, mean ± 95% "
        "Student-t half-width over seeds (n seeds). Speed: mean test accuracy over the evaluated "
        "epochs (area under the accuracy curve), in accuracy points. Epochs to target: first "
        f"epoch with test accuracy ≥ {plots.percent_label(t)}, over the pairs where both "
        "reached it; a pair where either did not is censored and left out (counted). Final: "
        "test accuracy at the last epoch, in points. A pair with a diverged member is left "
        "out (counted). Wrong-dir.: mean fraction of wrong-class logits a step pushed up; "
        "grad norm: mean per-example norm of d loss / d logits; both base → variant, over the "
        "paired members' epochs.", "",
        "| comparison | lr (base → variant) | Δ speed (points) | Δ epochs to target | censored "
        "| Δ final test acc (points) | wrong-dir. | grad norm | left out |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | --- | --- |",
    ]
    for c in comps:
        b, v = c["base_profile"], c["variant_profile"]
        e = c["epochs_to_target"]
        left = [f"{c['diverged_pairs']} diverged"] if c["diverged_pairs"] else []
        left += [f"{c['unpaired_seeds']} unpaired"] if c["unpaired_seeds"] else []
        lr = (f"{c['base_learning_rate']:g} → {c['variant_learning_rate']:g}"
              if np.isfinite(c["base_learning_rate"]) and np.isfinite(c["variant_learning_rate"])
              else "–")
        if c.get("tied_rate_effects"):
            lr += " ‡"
        lines.append(
            f"| `{comparison_label(c, varying)}` | {lr} | {_pm(c['speed'], 100)} | {_pm(e)} | "
            f"{e['censored']} of {c['n_pairs']} | {_pm(c['final_test_acc'], 100)} | "
            f"{_num(b['wrong_frac'])} → {_num(v['wrong_frac'])} | "
            f"{_num(b['grad_norm'], '.3g')} → {_num(v['grad_norm'], '.3g')} | "
            f"{', '.join(left) or '–'} |")
    if any(c.get("tied_rate_effects") for c in comps):
        lines += ["", "‡ a rate choice the seeds do not decide: see *Tied rate choices*."]
    lines += ["", "Speed effect against the seed claim's prediction:", ""]
    for c in comps:
        pred = c["prediction"] or "none"
        note = f" ({c['note']})" if c["note"] else ""
        lines.append(f"- `{comparison_label(c, varying)}` (predicted: {pred}): "
                     f"{c['verdict']}{note}")
    lines += tied_section(comps, varying)
    w = out["within_loss"]
    lines += [
        "", "## Within-loss evidence", "",
        "Spearman's ρ between a member's mean wrong-direction fraction and its speed, across "
        "every learning rate and seed of one loss (non-diverged members; "
        f"{w['diverged_members_excluded']} diverged left out).", "",
        "| loss | hidden | n | ρ | note |", "| --- | --- | ---: | ---: | --- |",
    ]
    for g in w["groups"]:
        extra = "".join(f", {k} {g[k]:g}" for k in MATCH_COLUMNS
                        if k in g and k in varying)
        lines.append(f"| `{g['loss']}`{extra} | {g['hidden']} | {g['n']} | "
                     f"{_num(g['spearman'], '.2f')} | {g['note'] or ''} |")
    p, x = w["pooled_within_loss"], w["pooled_across_losses_confounded"]
    b = out["bootstrap"]
    lines += [
        "",
        f"- Pooled within loss, controlling for the loss: {_rho(p)} over {p['groups']} "
        "loss group(s) where both variables vary. Both variables are ranked within each loss, "
        "the ranks centred and scaled to (−½, ½); ρ is taken over the pooled scaled ranks. "
        f"Interval: percentile bootstrap ({b['resamples']} resamples, seed {b['seed']}), "
        "members resampled within each loss.",
        f"- Pooled across losses, **confounded by loss** (for contrast only): {_rho(x)}; "
        "paired percentile bootstrap interval.",
    ]
    lines += [
        "", "## Protocol checks", "",
        "Each loss and variant at its chosen rate: whether the rate is at an edge of its grid "
        "(the optimum may lie beyond it), and the mean validation-accuracy gain over the last "
        f"{LATE_EPOCHS} epochs (over {100 * STILL_IMPROVING:g} points: still improving at the "
        "end).", "",
        "| loss | hidden | chosen lr | at grid edge | late val gain (points) | test acc |",
        "| --- | --- | ---: | --- | ---: | ---: |",
    ]
    for r in out.get("protocol", []):
        still = " (still improving)" if r["still_improving"] else ""
        lines.append(
            f"| `{r['loss']}` | {r['hidden']} | {r['learning_rate']:g}{_tie_note(r)} | "
            f"{'yes' if r['lr_at_grid_edge'] else 'no'} | "
            f"{_num(100 * r['late_val_gain'], '+.2f')}{still} | "
            f"{_num(100 * r['test_acc_mean'], '.2f')} |")
    if figure is not None:
        lines += ["", f"Figure of the speed effects: `{figure}`"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# The figure


def _tied_cell(c: dict) -> str:
    """'–' where both rate choices are decided; else whether the speed effect reads the same
    at every tied rate ('same at 3 rates' / 'differs at 1 of 3 rates')."""
    rows = [t for t in c.get("tied_rate_effects") or [] if not t["headline"]]
    if not rows:
        return "–"
    head = direction(c["speed"])
    off = sum(t["speed_direction"] != head for t in rows)
    n = f"{len(rows)} rate{'s' if len(rows) > 1 else ''}"
    return f"same at {n}" if not off else f"differs at {off} of {n}"


def effects_table(outs: list[dict]) -> str:
    """``causal_effects.md``: one row per comparison of every folder, the figure's numbers, and
    whether the speed effect reads the same where a side's rate choice is tied (the rows of
    *Tied rate choices* in the folder's causal.md)."""
    lines = [
        "| folder | variant | Δ speed (points) | Δ final test acc (points) | pushes (base → "
        "variant) | gradient norm (base → variant) | at tied rates |",
        "| --- | --- | ---: | ---: | --- | --- | --- |",
    ]
    for out in outs:
        name = Path(out["folder"]).name
        for c in out["comparisons"]:
            b, v = c["base_profile"], c["variant_profile"]
            if not c["n_pairs"]:
                lines.append(f"| `{name}` | `{c['variant']}` | no pairs | | | | |")
                continue
            lines.append(
                f"| `{name}` | `{c['variant']}` | {_pm(c['speed'], 100)} | "
                f"{_pm(c['final_test_acc'], 100)} | {_num(100 * b['wrong_frac'], '.1f')}% → "
                f"{_num(100 * v['wrong_frac'], '.1f')}% | {_num(b['grad_norm'], '.3g')} → "
                f"{_num(v['grad_norm'], '.3g')} | {_tied_cell(c)} |")
    return "\n".join(lines) + "\n"


def effects_figure(outs: list[dict]) -> Figure:
    """One panel per folder, stacked so that the row labels line up, one row per comparison:
    the mean paired speed effect (points) with its 95% interval, a line at 0, and the seed
    claim's prediction at the right. The panels share a symmetric-log axis, linear within ±1
    point: effects run from tenths of a point to the whole accuracy range."""
    sizes = [max(1, len(o["comparisons"])) for o in outs]
    fig = Figure(figsize=(11.0, 1.6 + sum(0.42 * n + 0.9 for n in sizes)), layout="constrained")
    axes = fig.subplots(len(outs), 1, squeeze=False, sharex=True,
                        gridspec_kw={"height_ratios": [0.42 * n + 0.9 for n in sizes]})[:, 0]
    styles = plots.loss_styles(BASES)
    for ax, out in zip(axes, outs, strict=True):
        comps = out["comparisons"]
        varying = _varying(comps)
        ys = -np.arange(len(comps), dtype=float)
        for y, c in zip(ys, comps, strict=True):
            e = c["speed"]
            color = styles.get(c["base"], ("0.3", "o"))[0]
            if e["n"] == 0:
                ax.annotate("no pairs", (0, y), xytext=(4, 0), textcoords="offset points",
                            va="center", fontsize=8, color="0.4")
            else:
                m, h = 100 * e["mean"], 100 * e["ci95"]
                if np.isfinite(h):
                    ax.plot([m - h, m + h], [y, y], color=color, linewidth=2, zorder=3)
                clear = e["low"] > 0 or e["high"] < 0
                ax.plot([m], [y], "o", color=color, markersize=7, zorder=4,
                        markerfacecolor=color if clear else "white", markeredgewidth=1.8)
                ax.annotate(f"{m:+.2g}", (m, y), xytext=(0, 7), textcoords="offset points",
                            ha="center", fontsize=7, color="0.25")
            if c["prediction"]:
                ax.annotate(f"seed predicts {c['prediction']}", (1.0, y),
                            xycoords=("axes fraction", "data"), xytext=(6, 0),
                            textcoords="offset points", va="center", fontsize=8, color="0.35")
        ax.axvline(0, color="0.3", linewidth=1, zorder=1)
        ax.set_yticks(ys, [f"{comparison_label(c, varying)} (n={c['speed']['n']})"
                           for c in comps])
        ax.set_ylim(-len(comps) + 0.5, 0.5)
        ax.grid(axis="y", visible=False)
        # Two lines: the row labels leave the axes too narrow for one.
        ax.set_title(f"{Path(out['folder']).name}\n{out['description']}", fontsize=9)
    axes[-1].set_xscale("symlog", linthresh=1.0)
    axes[-1].set_xlim(-100, 100)
    ticks = [-100, -10, -1, 0, 1, 10, 100]  # an effect is a difference of accuracies: ±100
    axes[-1].set_xticks(ticks, [f"{t:g}".replace("-", "−") for t in ticks])
    axes[-1].set_xlabel("Δ speed, variant − base, points\n(mean test accuracy over epochs; "
                        "symlog axis)")
    fig.legend(handles=[
        Line2D([], [], marker="o", color="0.3", markerfacecolor="0.3", linestyle="-",
               label="95% CI excludes 0"),
        Line2D([], [], marker="o", color="0.3", markerfacecolor="white", linestyle="-",
               label="95% CI includes 0")], loc="outside lower center", ncols=2, frameon=False)
    fig.suptitle("Effect of each gradient edit on learning speed: paired by seed, "
                 "mean ± 95% t-interval", fontsize=11)
    return fig


def write_figure(outs: list[dict], folder: Path) -> list[Path]:
    """Draws :func:`effects_figure` and writes it as PNG and SVG into ``folder``."""
    written = []
    with rc_context(plots.STYLE):
        fig = effects_figure(outs)
        for fmt in plots.FORMATS:
            path = Path(folder) / f"{FIGURE_NAME}.{fmt}"
            plots.save_figure(fig, path, fmt)
            written.append(path)
            fig.set_layout_engine("none")  # keep the first save's layout for the other format
    return written


# --------------------------------------------------------------------------------------------
# Command line


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", type=Path, help="finished results folders")
    p.add_argument("--out", type=Path, required=True,
                   help=f"folder for the figure and table across all folders "
                        f"({FIGURE_NAME}.png/.svg/.md)")
    args = p.parse_args(argv)
    try:
        # Every folder is analysed before anything is written: one bad folder, no files.
        outs = [analyse(f) for f in args.folders]
        # Recorded as lossjax's before they are written: --overwrite of a folder removes them.
        record_written(args.out, [f"{FIGURE_NAME}.{e}" for e in ("md", "png", "svg")])
        for out in outs:
            record_written(Path(out["folder"]), ["causal.json", "causal.md"])
        figure = write_figure(outs, args.out)[0]
        write_text(args.out / f"{FIGURE_NAME}.md", effects_table(outs))
        for out in outs:
            folder = Path(out["folder"])
            write_json(folder / "causal.json", _finite(out))
            rel = Path(os.path.relpath(figure.resolve(), folder.resolve()))
            write_text(folder / "causal.md", markdown(out, rel))
    except ResultsError as e:
        print(f"causal: error: {analysis.one_line(e)}", file=sys.stderr)
        return 2
    for out in outs:
        print(f"{out['folder']}: causal.json, causal.md")
        for c in out["comparisons"]:
            print(f"  {comparison_label(c)}: Δ speed {_pm(c['speed'], 100)} points; "
                  f"{c['verdict']}")
    print(f"figure: {figure} (+ .svg), table: {args.out / FIGURE_NAME}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
