"""Statistics of a sweep: the rate chosen per group, how clearly, and the intervals around it.

``summarize`` turns epochs.csv into summary.csv (its columns: ``lossjax.tables.SUMMARY``);
``rate_choice`` says how clearly a group's rate was chosen, paired by seed; ``ci95_halfwidth``
is the one interval everything reports.
"""

from __future__ import annotations

import math
from collections.abc import Collection

import numpy as np
import pandas as pd

from lossjax.calibration_tables import unfit
from lossjax.tables import (
    CALIBRATION_SOURCES,
    GROUP_KEYS,
    SUMMARY,
    SUMMARY_COLUMNS,
    group_keys,
)

#: ``rate_choice`` values: decided against the runner-up, tied with it, undecidable from fewer
#: than two paired seeds, nothing to choose between, nothing chosen (every member diverged),
#: and decided by a race (every other rate stopped at a rung as clearly behind:
#: ``lossjax.search``).
RATE_CHOICES = ("decided", "tied", "one seed", "one rate", "none", "raced")


def ci95_halfwidth(values) -> float:
    """Half-width of the 95% Student-t interval of the mean (NaN for fewer than two values)."""
    from scipy import stats  # why: scipy is slow to import, and only the intervals need it

    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return math.nan
    return float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))


def _paired_gap(score: pd.Series, last: pd.DataFrame, a: float, b: float) -> tuple:
    """(mean, 95% half-width, n) over seeds of score at rate ``a`` minus score at rate ``b``,
    over the seeds present at both: a seed's members at two rates share initial weights and
    batches, so pairing cancels what the seed alone decides."""
    rates = last["learning_rate"].to_numpy(float)
    per_seed = []
    for r in (a, b):
        at = np.isclose(rates, r, rtol=1e-6, atol=0.0)
        per_seed.append(score[at].astype(float).groupby(last["seed"][at]).mean())
    d = (per_seed[0] - per_seed[1]).dropna()  # aligned on seed: only seeds at both rates
    d = d[np.isfinite(d.to_numpy())]
    return (float(d.mean()) if len(d) else math.nan), ci95_halfwidth(d), len(d)


def _undecided(mean: float, half: float, n: int) -> bool:
    # Fewer than two pairs give no interval at all: never decided. Otherwise the interval
    # includes 0 (a zero-width one only at exactly 0).
    return n < 2 or abs(mean) <= half


def _rate_text(rate: float) -> str:
    return repr(float(rate))  # the shortest text that reads back as the same float


def rate_choice(last: pd.DataFrame, lr: float) -> dict:
    """How clearly ``lr`` was chosen among a group's rates: the columns of
    :data:`lossjax.tables.RATE_CHOICE_COLUMNS`, from the group's members at their last epoch
    (``last``).

    Each member scores its final validation accuracy, 0 where it diverged, as in the choice;
    test data play no part. For another rate R, the gap is paired by seed: per seed present at
    both rates, the chosen member's score minus R's member's, then the mean over seeds and its
    95% Student-t half-width (:func:`ci95_halfwidth`). The runner-up is the rate with the
    second best mean score, and ``val_gap_*`` is the gap to it. A rate is tied with ``lr`` when
    its gap's interval includes 0 (|mean| <= half-width) or fewer than two seeds pair (never
    decided). ``tied_lrs``: every tied rate, ascending and ';'-joined ('' for none); it holds
    the runner-up whenever the runner-up is tied, and may hold a rate whose scores scatter
    more than the runner-up's even when the runner-up is clearly behind. ``rate_tied`` is
    True when any rate is tied; ``rate_choice`` says why: 'tied', 'one seed' (a single paired
    seed: undecidable), or else 'decided', 'one rate' (nothing to compare: ``rate_tied``
    False) and 'none' (``lr`` NaN or every member diverged).
    """
    out = {"runner_up_lr": math.nan, "val_gap_mean": math.nan, "val_gap_ci95": math.nan,
           "rate_tied": False, "rate_choice": "none", "tied_lrs": ""}
    if last["diverged"].astype(bool).all() or not math.isfinite(lr):
        return out
    score, means = _scores(last)
    others = means[~np.isclose(means.index.to_numpy(float), lr, rtol=1e-6, atol=0.0)]
    if others.empty:
        return {**out, "rate_choice": "one rate"}
    gaps = {float(r): _paired_gap(score, last, lr, float(r)) for r in others.index}
    runner = float(others.idxmax())
    mean, half, n = gaps[runner]
    tied_with = [r for r in sorted(gaps) if _undecided(*gaps[r])]
    return {
        "runner_up_lr": runner, "val_gap_mean": mean, "val_gap_ci95": half,
        "rate_tied": bool(tied_with),
        "rate_choice": "one seed" if n < 2 else "tied" if tied_with else "decided",
        "tied_lrs": ";".join(_rate_text(r) for r in tied_with),
    }


def tied_rates(text) -> tuple[float, ...]:
    """The rates of a ``tied_lrs`` cell ('' or NaN, as pandas reads an empty cell: none)."""
    if not isinstance(text, str) or not text.strip():
        return ()
    return tuple(float(v) for v in text.split(";"))


def _raced(choice: dict, n_rates: int) -> dict:
    """A choice among one rate where the grid had several: the race left that rate alone."""
    if choice["rate_choice"] == "one rate" and n_rates > 1:
        return {**choice, "rate_choice": "raced"}
    return choice


def chosen_rate(last: pd.DataFrame) -> float:
    """The rate with the best mean validation accuracy over a group's members at their last
    epoch (``last``), a diverged member scoring 0; NaN when every member diverged. The one rule
    of choice: :func:`summarize` and the extension stage (``lossjax.plan``) both apply it."""
    if last["diverged"].astype(bool).all():
        return math.nan
    _, means = _scores(last)
    return float(means.idxmax()) if len(means) else math.nan


def _scores(last: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Each member's score, its final validation accuracy or 0 where it diverged, and the
    mean score of each rate (rates without one left out)."""
    score = last["val_acc"].where(~last["diverged"].astype(bool), 0.0)
    return score, score.groupby(last["learning_rate"].astype(float)).mean().dropna()


def summarize(table: pd.DataFrame, target: float, dropped: Collection[int] = (),
              confirm: Collection[int] = ()) -> pd.DataFrame:
    """Per (loss, optimizer, hidden, weight decay, init scale): the learning rate with the best
    mean final validation accuracy over seeds, and what it gives. A table without an
    ``optimizer`` column, or with an empty one (one built as before optimizers were swept),
    gives a summary without one.

    A member that diverged scores 0 in that choice (its frozen accuracy would flatter a rate
    that blows up); test data play no part in it. Reported at the chosen rate: validation and
    test accuracy mean, the 95% t-interval half-width of test accuracy over seeds, the mean
    number of epochs to reach ``target`` test accuracy over the seeds that reached it, and how
    many diverged (at that rate, and over the whole grid).

    A group whose every member diverged has no rate to choose: its rate, accuracies and epochs
    to target are NaN (those of weights frozen early, often the initial ones, are no result),
    it reached the target 0 times, and all its seeds count as diverged at the rate.

    How clearly the rate was chosen (:data:`lossjax.tables.RATE_CHOICE_COLUMNS`, see
    :func:`rate_choice`): a chosen rate is an estimate from a few seeds, and with three of them
    the best mean is often a tie with the next. So the choice is set against the runner-up (the
    rate with the second best mean score, by the same rule) and every other rate, paired by
    seed.

    ``dropped``: members a race stopped at a rung (``lossjax.search``). They take no part in
    the choice or in anything reported; the grid's edges are still the whole grid's, and a rate
    the race left alone is ``rate_choice`` 'raced', not 'one rate'.

    ``confirm``: members of a confirmation stage (extra seeds at the chosen rate, ``lossjax.plan``).
    They take no part in the choice or in how clearly it was made; everything reported at the
    chosen rate uses them with the other seeds there (``n_seeds`` says how many in all).

    Probability quality at the chosen rate (:data:`lossjax.tables.CALIBRATION_SUMMARY`): means
    over its seeds of the last epoch's test NLL, Brier score and ECE, the temperature fitted on
    val and the test metrics after temperature scaling (NaN where the table lacks them); a
    mean skips the NaN of a diverged member, as the accuracy's keeps its frozen value, and the
    temperature's skips a fit that found no minimum (:func:`lossjax.calibration_tables.unfit`;
    the report marks it).
    """
    keys = [k for k in group_keys(table)
            if k != "optimizer" or k in table.columns and table[k].notna().any()]
    grid = table.groupby(keys, sort=False)["learning_rate"].unique()
    if len(dropped):
        table = table[~table["member"].isin(dropped)]
    last = table.loc[table.groupby("member")["epoch"].idxmax()]
    rows = []
    for key, g in last.groupby(keys, sort=False):
        diverged = g["diverged"].astype(bool)
        n_seeds = g["seed"].nunique()
        row = {
            **dict(zip(keys, key, strict=True)),
            "learning_rate": math.nan,
            "lr_at_grid_edge": False,
            **rate_choice(g, math.nan),
            "n_seeds": n_seeds,
            "val_acc_mean": math.nan,
            "test_acc_mean": math.nan,
            "test_acc_ci95": math.nan,
            "epochs_to_target_mean": math.nan,
            "reached_target": 0,
            "diverged_at_lr": n_seeds,
            "diverged": int(diverged.sum()),
            **dict.fromkeys(CALIBRATION_SOURCES, math.nan),
        }
        searched = g[~g["member"].isin(confirm)]
        lr = chosen_rate(searched)
        if math.isnan(lr):
            rows.append(row)
            continue
        lrs = sorted(grid[key])
        chosen = g[g["learning_rate"] == lr]
        # Each chosen member's first epoch at or above the target; NaN where it never got there.
        hits = table[table["member"].isin(chosen["member"]) & (table["test_acc"] >= target)]
        reach = hits.groupby("member")["epoch"].min().reindex(chosen["member"]).to_numpy(float)
        row.update({
            "learning_rate": lr,
            "lr_at_grid_edge": len(lrs) > 1 and lr in (lrs[0], lrs[-1]),
            **_raced(rate_choice(searched, lr), len(lrs)),
            "n_seeds": len(chosen),
            "val_acc_mean": chosen["val_acc"].mean(),
            "test_acc_mean": chosen["test_acc"].mean(),
            "test_acc_ci95": ci95_halfwidth(chosen["test_acc"]),
            "epochs_to_target_mean": np.nanmean(reach) if np.isfinite(reach).any() else math.nan,
            "reached_target": int(np.isfinite(reach).sum()),
            "diverged_at_lr": int(chosen["diverged"].astype(bool).sum()),
            # Tables written before these columns lack their sources: NaN.
            **{c: chosen[src].mean() if src in chosen.columns else math.nan
               for c, src in CALIBRATION_SOURCES.items()},
        })
        if "temperature" in chosen.columns:  # a fit at a bound found no minimum: not averaged
            fitted = chosen["temperature"][~unfit(chosen["temperature"])]
            row["temperature_mean"] = fitted.mean() if len(fitted) else math.nan
        rows.append(row)
    # Means of float32 metrics, written as float32 (float64 text would add only noise digits).
    columns = [c for c in SUMMARY_COLUMNS if c in keys or c not in GROUP_KEYS]
    return pd.DataFrame(rows, columns=columns).astype(
        {c: np.float32 for c, kind in SUMMARY.items() if kind == "float32"})
