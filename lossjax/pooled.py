"""More seeds for a finished sweep: a follow-up sweep's members pooled at its chosen rates.

A sweep chooses each group's rate on a few seeds and can add confirmation seeds at the chosen
rate (``confirm.seeds``); when an effect's interval is still too wide, more seeds are wanted
after the fact. They come from a *follow-up sweep*: the same dataset, split, model, optimizer
settings, schedule, epochs and evaluation, other seeds, and for each loss the rates the first
sweep chose (``experiments/more_seeds.py`` writes its config from the first folder).
``pool_seeds(res, more)`` adds the follow-up's members at the first sweep's chosen rates to
``res`` as confirmation seeds are added: they take no part in choosing a rate or in how clearly
it was chosen, and everything reported at the chosen rate (the summary's means and intervals,
the paired effects of ``lossjax.causal_effects``) uses them with the first seeds. The rates tied
with a choice keep the first sweep's seeds only.

The first folder is not changed: the pooled ``Results`` lives in memory, and what is written
from it says which folders it came from.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from lossjax import analysis, stats
from lossjax.errors import ResultsError

#: Config keys a follow-up sweep may set differently: what it trains (seeds, losses, rates,
#: optimizers and depths among the first sweep's), how it searches, and where it writes.
MAY_DIFFER = ("name", "seeds", "losses", "optimizer.learning_rate", "optimizer.name",
              "model.hidden", "search", "confirm", "output")


def _flat(config: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key not in MAY_DIFFER:
            out.update(_flat(v, key + "."))
        elif key not in MAY_DIFFER:
            out[key] = v
    return out


def check_same_setup(res: analysis.Results, more: analysis.Results) -> None:
    """Raises ``ResultsError`` naming the first config key, other than those in
    :data:`MAY_DIFFER`, whose value differs between the two folders."""
    a, b = _flat(res.config), _flat(more.config)
    for key in sorted(a.keys() | b.keys()):
        if a.get(key) != b.get(key):
            raise ResultsError(
                f"{more.path} is no follow-up of {res.path}: {key} is {b.get(key)!r} there and "
                f"{a.get(key)!r} here; a follow-up sweep changes only "
                f"{', '.join(MAY_DIFFER)} (experiments/more_seeds.py writes one)")


def confirmation_members(res: analysis.Results) -> set[int]:
    """The members a confirmation stage added (``added.csv``'s reason says so)."""
    added = res.added
    return set(added.loc[added["reason"].astype(str).str.startswith("confirmation"), "member"]
               .astype(int))


def pool_seeds(res: analysis.Results, more: analysis.Results) -> analysis.Results:
    """``res`` with ``more``'s members at ``res``'s chosen rates added as confirmation seeds.

    A member of ``more`` pools with a ``summary.csv`` row of ``res`` when it has the row's loss,
    optimizer, hidden sizes, weight decay, init scale and chosen rate; the others (a rate chosen
    at another depth, say) are left out. Its member number is moved past ``res``'s. Raises
    ``ResultsError`` when the setups differ (:func:`check_same_setup`), when a pooled seed is
    one ``res`` already has at that rate (it would count twice), when nothing pools, or when
    the summary recomputed with the pooled seeds chooses another rate than ``res``'s did (it
    cannot, as the pooled seeds take no part in the choice, unless the tables disagree).
    """
    check_same_setup(res, more)
    ep, offset = more.epochs, int(res.epochs["member"].max()) + 1
    dropped = analysis.dropped(more)
    taken = []
    for ch in analysis.chosen_runs(res):
        sel = analysis.group_rows(more, ch.loss, ch.hidden, ch.row)
        sel = sel[analysis.matches(sel["learning_rate"], ch.learning_rate)
                  & ~sel["member"].isin(dropped)]
        twice = set(sel["seed"]) & set(ch.rows["seed"])
        if twice:
            raise ResultsError(
                f"{more.path} has seed(s) {sorted(int(s) for s in twice)} of {res.path}'s "
                f"{ch.label()}: a pooled seed would count twice; a follow-up sweep takes other "
                f"seeds")
        taken.append(sel)
    pooled = pd.concat(taken) if taken else ep.iloc[:0]
    if pooled.empty:
        raise ResultsError(f"no member of {more.path} has a loss, depth and optimizer of "
                           f"{res.path} at its chosen rate; nothing to pool")
    pooled = pooled.assign(member=pooled["member"] + offset)
    epochs = (pd.concat([res.epochs, pooled], ignore_index=True)
              .sort_values(["member", "epoch"], kind="stable").reset_index(drop=True))
    new = sorted(pooled["member"].unique())
    reason = f"confirmation seed pooled from {more.path}"
    added = pd.concat([res.added, pd.DataFrame({
        "member": new, "stage": int(res.added["stage"].max() if len(res.added) else 0) + 1,
        "reason": reason})], ignore_index=True)
    target = float(res.config.get("eval", {}).get("target_accuracy", np.nan))
    summary = stats.summarize(epochs, target, dropped=analysis.dropped(res),
                              confirm=confirmation_members(res) | set(new))
    _check_same_choices(res, summary)
    return replace(res, epochs=epochs, summary=summary, added=added)


def _check_same_choices(res: analysis.Results, summary: pd.DataFrame) -> None:
    keys = [k for k in ("loss", "optimizer", "hidden") if k in summary.columns]
    old = res.summary.set_index(keys)["learning_rate"]
    now = summary.set_index(keys)["learning_rate"].reindex(old.index)
    same = np.isclose(old.to_numpy(float), now.to_numpy(float), rtol=1e-6, equal_nan=True)
    if not same.all():
        at = old.index[~same][0]
        raise ResultsError(f"{res.path}: with the pooled seeds the summary chooses rate "
                           f"{now[at]:g} for {at}, not {old[at]:g}; the tables disagree")
