"""Which members a sweep trains, stage by stage: the config's grid, then the rates its rows add
past a grid's edge, then the confirmation seeds at each group's chosen rate.

Each stage is decided from the rows of the stages before it alone, once every member of those
has finished (trained its last epoch, or was stopped by a race): the same rows give the same
stages, so a resumed sweep, and every process of a sweep on several, plans the same members with
the same ids (the grid's ``0..N-1``, then the added ones in the order they were added).

- **Extension** (``search.extend``): a group (members that differ only in rate and seed) whose
  chosen rate (``lossjax.stats.chosen_rate``) is the highest of the rates it has tried gets the
  next rate above, at the ratio of its two highest; the lowest, the next below. It trains from
  epoch 0 on the sweep's seeds, one added rate per group per stage, until the chosen rate is no
  edge or the group has added ``extend`` rates, or the next rate is outside float32's normal
  range (about 1.2e-38 to 3.4e+38, the rates the config accepts; the sweep's log says so).
  The chosen rate is the grid's final choice rather than a rung's leader: early rankings
  mislead (``lossjax.search``), and the final choice is what a report would flag as sitting at
  an edge.
- **Confirmation** (``confirm.seeds``): the chosen rate of each group, once no group extends any
  more, on the extra seeds; never dropped by a race (a diverged member still stops).

A race (``lossjax.search``) judges an added rate at each rung against the rates of the earlier
stages still training there; only the added rate can be dropped.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from lossjax import search
from lossjax.engine import Member
from lossjax.stats import chosen_rate
from lossjax.tables import ADDED
from lossjax.validate import precision_loss

GRID, EXTEND, CONFIRM = "grid", "extend", "confirm"


@dataclass(frozen=True)
class Stage:
    """One stage's members and, per member, why it was added ('' for the grid's)."""

    kind: str  # GRID, EXTEND or CONFIRM
    members: tuple[Member, ...]
    reasons: tuple[str, ...]


def stages(cfg, grid: Sequence[Member], table: pd.DataFrame) -> list[Stage]:
    """The stages the rows in ``table`` decide: the grid's, then each one whose predecessors
    have all finished in ``table``."""
    out = [Stage(GRID, tuple(grid), ("",) * len(grid))]
    while out[-1].kind != CONFIRM:
        stopped = stops(cfg, out, table)
        if not _finished(cfg, out, table, stopped):
            break
        members = [m for s in out for m in s.members]
        next_id = len(members)
        added = []
        if sum(s.kind == EXTEND for s in out) < cfg.search.extend:
            added, kind = _extensions(members, table, stopped, next_id, cfg.seeds), EXTEND
        if not added and cfg.confirm.seeds:
            added, kind = _confirmations(out, table, stopped, next_id, cfg.confirm.seeds), CONFIRM
        if not added:
            break
        out.append(Stage(kind, tuple(m for m, _ in added), tuple(r for _, r in added)))
    return out


def stops(cfg, planned: Sequence[Stage], table: pd.DataFrame) -> dict:
    """The members a race stopped after the rows in ``table`` (member → ``search.Stop``), each
    stage judged after the ones before it; {} for a sweep that does not race."""
    if cfg.search.method != "race":
        return {}
    judged = [search.Stage(frozenset(m.index for m in s.members), droppable=s.kind != CONFIRM)
              for s in planned]
    return search.stops(table, cfg.search.rungs, cfg.search.alpha, judged)


def confirming(planned: Sequence[Stage]) -> set[int]:
    """The members of a confirmation stage: they take no part in choosing a rate."""
    return {m.index for s in planned if s.kind == CONFIRM for m in s.members}


def added_table(planned: Sequence[Stage]) -> pd.DataFrame:
    """``added.csv``: each member a stage after the grid added, the stage (1 is the first after
    the grid) and why."""
    rows = [{"member": m.index, "stage": i, "reason": r}
            for i, s in enumerate(planned) if i for m, r in zip(s.members, s.reasons, strict=True)]
    return pd.DataFrame(rows, columns=list(ADDED))


def max_added(cfg, grid: Sequence[Member]) -> int:
    """The most members the later stages can add: per group, ``extend`` rates on every seed and
    the confirmation seeds (for the checks of memory and disk before training)."""
    return len(_by_group(grid)) * (cfg.search.extend * len(cfg.seeds) + len(cfg.confirm.seeds))


# ---- the decisions --------------------------------------------------------------------------


def _finished(cfg, planned: Sequence[Stage], table: pd.DataFrame, stopped: dict) -> bool:
    """Whether every planned member has its last row: the last epoch, or a race's stop
    (``stopped``, as :func:`stops` gives it)."""
    last = table.groupby("member")["epoch"].max()
    return all(m.index in stopped or last.get(m.index, 0) >= cfg.epochs
               for s in planned for m in s.members)


def _key(m: Member) -> tuple:
    """What a member's group is: every setting but its id, rate and seed."""
    return tuple((f.name, getattr(m, f.name)) for f in dataclasses.fields(m)
                 if f.name not in ("index", "learning_rate", "seed"))


def _by_group(members: Sequence[Member]) -> dict[tuple, list[Member]]:
    groups: dict[tuple, list[Member]] = {}
    for m in members:
        groups.setdefault(_key(m), []).append(m)
    return groups


def _choice(group: Sequence[Member], table: pd.DataFrame, stopped: dict) -> float:
    """The group's chosen rate from its members' last rows, those a race dropped left out."""
    dropped = search.dropped(stopped)
    ids = [m.index for m in group if m.index not in dropped]
    rows = table[table["member"].isin(ids)]
    last = rows.loc[rows.groupby("member")["epoch"].idxmax()]
    return chosen_rate(last) if len(last) else math.nan


def _beyond(rates: Sequence[float], lr: float) -> tuple[float, str] | None:
    """The rate past the edge ``lr`` sits at, at the ratio of the two rates there (shortest
    text to 12 digits, so 0.3 · 3 is 0.9), and why; None if ``lr`` is at no edge."""
    rates = sorted(rates)
    if lr == rates[-1]:
        new, why = rates[-1] * rates[-1] / rates[-2], f"above the highest rate tried, {lr:g}"
    elif lr == rates[0]:
        new, why = rates[0] * rates[0] / rates[1], f"below the lowest rate tried, {lr:g}"
    else:
        return None
    new = float(f"{new:.12g}")
    return (new, why) if math.isfinite(new) and new > 0 else None


def _in_range(step: tuple[float, str] | None) -> tuple[float, str] | None:
    """``step`` if the config would accept its rate: float32 holds it as a normal number."""
    return step if step is None or not precision_loss(step[0], "float32") else None


def range_ends(cfg, planned: Sequence[Stage], table: pd.DataFrame) -> list[str]:
    """Where an extension stopped short of ``search.extend`` because its next rate is outside
    float32's normal range, which the config refuses given directly: one phrase per group."""
    if sum(s.kind == EXTEND for s in planned) >= cfg.search.extend:
        return []
    stopped = stops(cfg, planned, table)
    out = []
    for group in _by_group([m for s in planned if s.kind != CONFIRM for m in s.members]).values():
        lr = _choice(group, table, stopped)
        step = None if math.isnan(lr) else _beyond({m.learning_rate for m in group}, lr)
        if step is not None and (problem := precision_loss(step[0], "float32")):
            out.append(f"{group[0].loss} at {lr:g} (the next rate, {step[0]:g}, float32 "
                       f"{problem})")
    return out


def _extensions(members: Sequence[Member], table, stopped, next_id: int,
                seeds: Sequence[int]) -> list[tuple[Member, str]]:
    added = []
    for group in _by_group(members).values():
        lr = _choice(group, table, stopped)
        step = None if math.isnan(lr) else _in_range(_beyond({m.learning_rate for m in group},
                                                             lr))
        if step is None:
            continue
        new, why = step
        at_edge = {m.seed: m for m in reversed(group) if m.learning_rate == lr}
        for seed in seeds:
            m = dataclasses.replace(at_edge[seed], index=next_id + len(added), learning_rate=new)
            added.append((m, f"extension {why}"))
    return added


def _confirmations(planned: Sequence[Stage], table, stopped, next_id: int,
                   seeds: Sequence[int]) -> list[tuple[Member, str]]:
    added = []
    for group in _by_group([m for s in planned for m in s.members]).values():
        lr = _choice(group, table, stopped)
        if math.isnan(lr):
            continue
        template = next(m for m in group if m.learning_rate == lr)
        for seed in seeds:
            m = dataclasses.replace(template, index=next_id + len(added), seed=seed)
            added.append((m, f"confirmation seed at the chosen rate {lr:g}"))
    return added
