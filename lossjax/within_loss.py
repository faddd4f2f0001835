"""Within-loss evidence for the causal analysis: Spearman's ρ between a member's wrong-direction
fraction and its speed, for each loss and pooled with the loss controlled for.

Free of the confounding by loss: for each loss (base or variant) and group
with at least 4 non-diverged members, Spearman's ρ between a member's mean wrong-direction
fraction and its speed across every rate and seed; and one pooled ρ controlling for the loss:
both variables are ranked within each loss, the ranks centred and scaled to (−½, ½) so that
groups of any size weigh alike, and Spearman's ρ is taken over the pooled scaled ranks, with a
percentile bootstrap 95% interval that resamples members within each loss (a stratified
bootstrap; Efron & Tibshirani 1993, *An Introduction to the Bootstrap*, ch. 13 and 16). The old
pooled ρ across losses is kept for contrast, labelled as confounded by loss.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from lossjax import analysis
from lossjax.causal_effects import loss_key
from lossjax.tables import MATCH_COLUMNS

MIN_MEMBERS = 4  # fewer members than this give a rank correlation no meaning
N_BOOT = 2000
BOOT_SEED = 0



def _optimizer(table: pd.DataFrame) -> list[str]:
    """['optimizer'] where the sweep swept several, else [] (a sweep of one groups as it did
    before optimizers were swept)."""
    return ["optimizer"] if "optimizer" in table and table["optimizer"].nunique() > 1 else []


def member_table(epochs: pd.DataFrame) -> pd.DataFrame:
    """One row per member: its group (loss, hidden, weight decay, init scale where present),
    rate and seed, whether it diverged, its mean wrong-direction fraction over epochs and its
    speed (mean test accuracy over its evaluated epochs)."""
    keys = ["member", "loss", *_optimizer(epochs), "hidden", "learning_rate",
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
    keys = ["loss", "hidden", *_optimizer(members),
            *(c for c in MATCH_COLUMNS if c in members.columns)]
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

