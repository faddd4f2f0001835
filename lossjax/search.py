"""The adaptive rate search: which of a group's learning rates stop training at a rung, and the
same rule replayed on a finished grid sweep.

Most of a sweep's work exists only to choose a learning rate per group (loss, hidden sizes,
weight decay, init scale), and rates that are hopeless early train the whole schedule. A race
stops them, by a rule that must not change the answer:

- **Diverged members stop at once**, at the first epoch their loss or parameters went
  non-finite (their parameters are frozen from then on; every later row would repeat it).
- **At each rung** (an epoch of evaluation), within a group, the *leader* is the rate with the
  best mean validation accuracy over its seeds (a diverged member scores 0, as in the final
  choice, ``lossjax.stats.summarize``). Every other rate that still trains is compared with
  it paired by seed: ``d_s`` = leader's validation accuracy minus the rate's, over the seeds
  present at both. The rate is **dropped when the one-sided lower confidence bound of the mean
  of d exceeds 0 at level ``alpha / (k (k - 1))``** (Student's t with n - 1 degrees of
  freedom; ``k`` the rates still training in the group: a Bonferroni correction over every
  ordered pair, since the leader is itself chosen as the best). With one paired seed no rate
  is dropped; the leader never is, so a group always keeps a rate.

The test's error rate: when no rate of a group differs at a rung, the chance that any is
dropped there is at most ``alpha`` (each drop is a rejection of one of the k (k - 1) one-sided
pairwise tests), when the paired gaps are roughly normal; ``tests/test_search.py`` checks it by
simulation. It does not bound the chance that a rate behind at a rung would have caught up by
the last epoch: early rankings mislead. That is measured instead, by :func:`replay` on finished
grids: the same rule applied to the validation accuracies the grid recorded, asking whether
the rate chosen among the survivors is the grid's, one tied with it, or another.

Test data never take part. Validation accuracy is what the final choice uses, so a race ranks
rates by the same score the grid would choose them by.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lossjax.config import ALPHA, default_rungs
from lossjax.errors import ResultsError
from lossjax.stats import summarize, tied_rates
from lossjax.tables import STOPS, group_keys

DIVERGED = "diverged"


def dropped_reason(rung: int) -> str:
    return f"dropped at epoch {rung}"


def _one_sided_t(level: float, dof: int) -> float:
    from scipy import stats  # lazy: scipy is slow to import, and only the rule needs it

    return float(stats.t.ppf(1.0 - level, dof))


def rates_to_drop(at_rung: pd.DataFrame, alpha: float = ALPHA) -> list[float]:
    """The rates of one group to stop at a rung, from its still-training members' rows at that
    epoch (columns ``learning_rate``, ``seed``, ``val_acc``, ``diverged``). See the module
    docstring for the rule."""
    score = np.where(at_rung["diverged"].to_numpy(bool), 0.0,
                     at_rung["val_acc"].to_numpy(float))
    rates, r = np.unique(at_rung["learning_rate"].to_numpy(float), return_inverse=True)
    seeds, s = np.unique(at_rung["seed"].to_numpy(), return_inverse=True)
    if len(rates) < 2:
        return []
    table = np.full((len(rates), len(seeds)), np.nan)  # rate x seed (one member each)
    table[r, s] = score
    with np.errstate(all="ignore"):
        means = np.nanmean(table, axis=1)
    if np.isnan(means).all():
        return []
    leader = int(np.nanargmax(means))
    level = alpha / (len(rates) * (len(rates) - 1))  # Bonferroni over ordered pairs
    drop = []
    for other in range(len(rates)):
        d = table[leader] - table[other]
        d = d[np.isfinite(d)]  # the seeds present at both
        if other == leader or len(d) < 2:
            continue
        half = _one_sided_t(level, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
        if d.mean() - half > 0:
            drop.append(float(rates[other]))
    return drop


@dataclass(frozen=True)
class Stop:
    """Where a member stopped before the last epoch, and why (``DIVERGED`` or
    ``dropped_reason(rung)``)."""

    epoch: int
    reason: str


@dataclass(frozen=True)
class Stage:
    """Members that a race judges together (``lossjax.plan``): ``droppable`` False for a
    confirmation stage, whose members stop only when they diverge."""

    members: frozenset[int]
    droppable: bool = True


def stops(epochs: pd.DataFrame, rungs: Iterable[int], alpha: float = ALPHA,
          stages: Sequence[Stage] | None = None) -> dict[int, Stop]:
    """Every member the rule stops, from a table of rows (a grid's ``epochs.csv``, or a race's
    rows so far): member → :class:`Stop`. A member is judged at a rung only while it still
    trains, and only from rows up to that rung, so the decisions a race took after ``k`` epochs
    are the same whether the table ends there or goes on (what makes a race resumable).

    ``stages`` (None: one stage of every member): a later stage's members are judged at each
    rung against every member of the earlier stages that was still training there, and only
    they can be dropped: the earlier stages' decisions were taken before it existed."""
    first_diverged = epochs[epochs["diverged"].astype(bool)].groupby("member")["epoch"].min()
    out = {int(m): Stop(int(e), DIVERGED) for m, e in first_diverged.items()}
    if stages is None:
        stages = [Stage(frozenset(epochs["member"].astype(int)))]
    seen: set[int] = set()
    for stage in stages:
        seen |= stage.members
        if stage.droppable:
            _judge(epochs[epochs["member"].isin(seen)], stage.members, rungs, alpha, out)
    return out


def _judge(rows: pd.DataFrame, members: frozenset[int], rungs: Iterable[int], alpha: float,
           out: dict[int, Stop]) -> None:
    """Adds to ``out`` the members of ``members`` that the rule drops, rung by rung, among
    ``rows`` (theirs and those of earlier stages)."""
    last = int(rows["epoch"].max()) if len(rows) else 0
    for rung in sorted(set(rungs)):
        if rung > last:
            break
        at = rows[rows["epoch"] == rung]
        alive = at[[_trains_after(out.get(int(m)), rung) for m in at["member"]]]
        for _, group in alive.groupby(group_keys(alive), sort=False):
            own = group["member"].isin(members).to_numpy()
            if not own.any():
                continue
            for rate in rates_to_drop(group, alpha):
                hit = group["member"][own & np.isclose(group["learning_rate"].astype(float),
                                                       rate, rtol=1e-6, atol=0.0)]
                out.update({int(m): Stop(rung, dropped_reason(rung)) for m in hit})


def stops_table(stopped: dict[int, Stop]) -> pd.DataFrame:
    """``stops.csv`` of a race: each member it stopped before the last epoch, the last epoch it
    trained, and why (``diverged`` or ``dropped at epoch N``)."""
    return pd.DataFrame([{"member": m, "epoch": s.epoch, "reason": s.reason}
                         for m, s in sorted(stopped.items())],
                        columns=list(STOPS))


def dropped(stopped: dict[int, Stop]) -> set[int]:
    """The members of ``stopped`` (as :func:`stops` returns) that were dropped at a rung, not
    stopped because they diverged: they take no part in the choice of a rate."""
    return {m for m, s in stopped.items() if s.reason != DIVERGED}


def _trains_after(stop: Stop | None, epoch: int) -> bool:
    return stop is None or stop.epoch > epoch


# ---- replay on a finished grid --------------------------------------------------------------


def replay(epochs: pd.DataFrame, summary: pd.DataFrame, rungs: Iterable[int], target: float,
           alpha: float = ALPHA) -> pd.DataFrame:
    """The rule applied offline to a finished grid's tables: per group, the grid's chosen rate,
    the rate chosen among the race's survivors, ``verdict`` ('same', 'tied': one of the grid's
    tied rates, or 'different'), and the member-epochs the race would have trained against the
    grid's."""
    n_epochs = int(epochs["epoch"].max())
    stopped = stops(epochs, rungs, alpha)
    raced = summarize(epochs, target, dropped=dropped(stopped))
    members = epochs.drop_duplicates("member")
    used = members["member"].map(lambda m: stopped[m].epoch if m in stopped else n_epochs)
    rows, keys = [], group_keys(members)
    for key, grid_members in members.groupby(keys, sort=False):
        grid = _row(summary, keys, key)
        race = _row(raced, keys, key)
        grid_lr, race_lr = float(grid["learning_rate"]), float(race["learning_rate"])
        at = used[grid_members.index]
        rows.append({
            **dict(zip(keys, key, strict=True)),
            "grid_lr": grid_lr, "race_lr": race_lr,
            "verdict": _verdict(grid_lr, race_lr, tied_rates(grid.get("tied_lrs"))),
            "rates": grid_members["learning_rate"].nunique(),
            "member_epochs": int(at.sum()), "grid_member_epochs": len(at) * n_epochs,
        })
    return pd.DataFrame(rows)


def _row(summary: pd.DataFrame, keys: list[str], key: tuple) -> pd.Series:
    hit = np.ones(len(summary), bool)
    for col, value in zip(keys, key, strict=True):
        hit &= (summary[col] == value).to_numpy()
    return summary[hit].iloc[0]


def _verdict(grid_lr: float, race_lr: float, tied: tuple[float, ...]) -> str:
    if math.isnan(grid_lr) and math.isnan(race_lr):
        return "same"  # every member diverged, in both
    if math.isclose(grid_lr, race_lr, rel_tol=1e-6):
        return "same"
    if any(math.isclose(race_lr, r, rel_tol=1e-6) for r in tied):
        return "tied"
    return "different"


REPLAY_NAME = "search_replay"


def replay_folders(results: Iterable, rungs: Sequence[int] | None = None,
                   alpha: float = ALPHA) -> pd.DataFrame:
    """:func:`replay` over finished grid folders (``lossjax.analysis.Results``, as
    ``load_results`` reads them), one row per group with its ``folder``, ``rungs`` (``rungs``
    given, or each folder's :func:`default_rungs`) and ``left_out``, the members later stages
    added (``search.extend``, ``confirm.seeds``): only the grid's members are replayed, their
    choice made again from their own rows. A raced folder is refused: its dropped members'
    rows end at the race's rungs, so there is no grid to replay against."""
    frames = []
    for res in results:
        if res.stops or (res.config.get("search") or {}).get("method") == "race":
            raise ResultsError(f"{res.path}: a raced sweep (search.method: race) has no full "
                               "grid to replay the race against; give grid folders")
        epochs, summary = res.epochs, res.summary
        target = res.config.get("eval", {}).get("target_accuracy", math.nan)
        if len(res.added):
            epochs = epochs[~epochs["member"].isin(res.added["member"])]
            summary = summarize(epochs, target)
        n_epochs = int(epochs["epoch"].max())
        at = tuple(r for r in (rungs or default_rungs(n_epochs)) if r < n_epochs)
        rows = replay(epochs, summary, at, target, alpha)
        frames.append(rows.assign(folder=str(res.path), rungs=",".join(map(str, at)),
                                  left_out=len(res.added)))
    return pd.concat(frames, ignore_index=True)


def replay_markdown(table: pd.DataFrame, alpha: float) -> str:
    """The replay as a Markdown page: per folder, how many groups the race would answer the
    same, tied with the grid's choice, or otherwise, and the member-epochs it would train."""
    lines = [f"# The race rule replayed on finished grids (alpha {alpha:g})", "",
             "Per folder: the rule of `lossjax.search` applied to the validation accuracies the "
             "grid recorded. *same*: the rate chosen among the race's survivors is the grid's; "
             "*tied*: it is one of the rates the grid's choice is tied with (`tied_lrs`); "
             "*different*: neither. Member-epochs: what the race would train, against the "
             "grid's.", "",
             "| folder | rungs | groups | same | tied | different | member-epochs |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, g in table.groupby("folder", sort=False):
        lines.append(_replay_row(f"`{name}`", g["rungs"].iloc[0], g))
    if table["folder"].nunique() > 1:
        lines.append(_replay_row("**all**", "", table))
    for name, g in table.groupby("folder", sort=False):
        if int(g["left_out"].iloc[0]):
            lines += ["", f"`{name}`: its grid's members only; the {int(g['left_out'].iloc[0])} "
                          "members its later stages added (search.extend, confirm.seeds) are "
                          "left out, and the grid's choice is made again without them."]
    different = table[table["verdict"] == "different"]
    if len(different):
        lines += ["", "Groups answered differently:", ""]
        lines += [f"- `{r.folder}` {r.loss} hidden {r.hidden}: grid {r.grid_lr:g}, race "
                  f"{r.race_lr:g}" for r in different.itertuples()]
    return "\n".join(lines) + "\n"


def _replay_row(name: str, rungs: str, g: pd.DataFrame) -> str:
    count = g["verdict"].value_counts()
    used, full = int(g["member_epochs"].sum()), int(g["grid_member_epochs"].sum())
    return (f"| {name} | {rungs} | {len(g)} | {count.get('same', 0)} | {count.get('tied', 0)} | "
            f"{count.get('different', 0)} | {used} of {full} ({used / full:.0%}) |")


def save_replay(table: pd.DataFrame, alpha: float, out: str | os.PathLike) -> list[Path]:
    """Writes ``search_replay.csv`` and ``.md`` into ``out`` (created if need be), each
    atomically; any other file there is left alone."""
    from lossjax.folder import (  # lazy: only to save
        check_out,
        locked,
        record_written,
        write_table,
        write_text,
    )

    out = Path(out)
    check_out(out)
    paths = [out / f"{REPLAY_NAME}.csv", out / f"{REPLAY_NAME}.md"]
    # In a lossjax folder: recorded (--overwrite removes them), under the lock of its sweep,
    # which may be rewriting its status.json.
    with locked([out]):
        record_written(out, [p.name for p in paths])
        write_table(paths[0], table)
        write_text(paths[1], replay_markdown(table, alpha))
    return paths
