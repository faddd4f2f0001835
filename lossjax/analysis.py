"""Querying a results folder read through ``lossjax.tables``: what its tables mean.

(Over 450 lines: the checks that a folder is whole, a race's included, and the queries that the
plots, the report, the comparison and the causal analysis share.)

``load_results(results_dir)`` reads ``epochs.csv``, ``summary.csv`` and ``config.yaml`` (absent:
``{}``) with the readers of ``lossjax.tables``, checks that they are whole and agree, and
returns them as a ``Results``. The queries then answer what the plots, the report and the
experiments ask of a sweep:

- ``summary_rows``: the rows of ``summary.csv`` in a fixed order (hidden sizes, loss, then weight
  decay / init scale);
- ``chosen_runs``: per row with a learning rate, a ``Choice`` holding the ``epochs.csv`` rows of
  its members at that rate; ``diverged_groups``: the rows without one, whose every member
  diverged at every rate; ``undecided``: whether a row's rate is a tie with other rates (its
  ``rate_choice`` and ``tied_lrs``), for everything that shows a choice to mark it;
- ``group_rows``, ``all_diverged``, ``last_epochs``: the members of one group and their fate;
- ``varying_columns``, ``loss_order``, ``hidden_order``, ``config_value``, ``describe``: what
  was swept, in which order to show it, and a one-line description of the sweep.

A ``summary.csv`` written before the rate-choice columns (``tables.RATE_CHOICE_COLUMNS``)
existed gets them on reading, computed from ``epochs.csv`` by ``stats.rate_choice``, the function
``stats.summarize`` writes them with (``add_rate_choices``); its other columns stay as written.

Nothing here draws or writes. Expected failures (folder or table missing, unreadable, cut short,
lacking columns or rows, tables that disagree) raise ``ResultsError`` with one line.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from lossjax.errors import ResultsError
from lossjax.folder import is_complete
from lossjax.loss_names import BUILTIN_LOSSES
from lossjax.stats import rate_choice, tied_rates
from lossjax.tables import (
    ADDED,
    MATCH_COLUMNS,
    RATE_CHOICE_COLUMNS,
    STOPS,
    normalize,
    read_config,
    read_epochs,
    read_record,
    read_summary,
)

# --------------------------------------------------------------------------------------------
# Reading a results folder


@dataclass(frozen=True)
class Results:
    """The tables of one results folder. ``config`` is ``{}`` when ``config.yaml`` is absent."""

    path: Path
    config: dict
    epochs: pd.DataFrame
    summary: pd.DataFrame
    #: Members a race stopped before the last epoch (``lossjax.search``): member → Stop. Their
    #: rows end early; a dropped member's last row is no final result.
    stops: dict = field(default_factory=dict)
    #: Members a stage after the grid added (``lossjax.plan``): ``added.csv``, columns member,
    #: stage, reason; empty where none were.
    added: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(ADDED)))


def load_results(results_dir: str | os.PathLike) -> Results:
    """Reads and checks a results folder; raises ``ResultsError`` with one line if it can't."""
    path = Path(results_dir)
    if not path.exists():
        raise ResultsError(f"results folder {path} does not exist (run `lossjax sweep CONFIG`)")
    if not path.is_dir():
        raise ResultsError(f"{path} is not a folder; give the results folder a sweep wrote")
    epochs = read_epochs(path)
    summary = read_summary(path)
    config = read_config(path) or {}
    epochs = epochs.sort_values(["member", "epoch"], kind="stable").reset_index(drop=True)
    stopped = race_stops(path, config)
    added = read_record(path, "added.csv", ADDED)
    if added is None and _has_stages(config):
        raise _missing_record(path, "added.csv", "a sweep with later stages (search.extend, "
                              "confirm.seeds)")
    added = pd.DataFrame(columns=list(ADDED)) if added is None else added
    check_complete(path / "epochs.csv", epochs, config, stopped, n_added=len(added))
    res = Results(path=path, config=config, epochs=epochs, summary=summary, stops=stopped,
                  added=added)
    _check_summary_covers(res)
    return add_rate_choices(res)


def add_rate_choices(res: Results) -> Results:
    """``res`` with the rate-choice columns in its summary, computed from ``epochs.csv`` where
    ``summary.csv`` lacks any of them (a folder written before they existed).

    Each row's columns come from ``stats.rate_choice`` at the row's own rate, over its group's
    members at their last epoch, read as float32 as the sweep holds them: the values a sweep
    writes today. The other columns are kept as written (an older summary may differ from
    today's ``summarize`` in their last digits, and is not silently rewritten). The columns go
    where ``summarize`` puts them, after ``lr_at_grid_edge``.
    """
    s = res.summary
    if all(c in s.columns for c in RATE_CHOICE_COLUMNS):
        return res
    found = [rate_choice(normalize(last_epochs(group_rows(res, r["loss"], r["hidden"], r))),
                         _float(r["learning_rate"])) for _, r in s.iterrows()]
    add = pd.DataFrame(found, index=s.index, columns=list(RATE_CHOICE_COLUMNS))
    add = add.astype({"val_gap_mean": np.float32, "rate_tied": bool})  # as summarize writes
    s = s.drop(columns=[c for c in RATE_CHOICE_COLUMNS if c in s.columns])
    after = "lr_at_grid_edge" if "lr_at_grid_edge" in s.columns else "learning_rate"
    at = list(s.columns).index(after) + 1
    return replace(res, summary=pd.concat([s.iloc[:, :at], add, s.iloc[:, at:]], axis=1))


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def expected_members(config: dict) -> int | None:
    """The number of members ``config.yaml`` implies (the sweep's product: hidden sizes × the
    learning rates of every loss and optimizer × weight decays × init scales × seeds), or None
    where it lacks
    one of those grids (a hand-written config)."""
    grids = [config_value(config, k) for k in (
        "model.hidden", "optimizer.weight_decay", "model.init_scale", "seeds")]
    losses = config_value(config, "losses")
    rates = config_value(config, "optimizer.learning_rate")
    names = config_value(config, "optimizer.name")
    if not isinstance(losses, list):
        return None
    # The resolved config stores a grid per loss (per optimizer and loss where it sweeps
    # several); a hand-written one may give a single list.
    if isinstance(names, list) and isinstance(rates, dict):
        per_loss = [g.get(loss) if isinstance(g, dict) else None
                    for g in (rates.get(n) for n in names) for loss in losses]
    elif isinstance(rates, dict):
        per_loss = [rates.get(loss) for loss in losses]
    else:
        per_loss = [rates] * len(losses)
    if not all(isinstance(g, list) for g in grids + per_loss):
        return None
    return sum(len(r) for r in per_loss) * math.prod(len(g) for g in grids)


def _config_epochs(config: dict) -> int | None:
    e = config.get("epochs")
    return e if isinstance(e, int) and not isinstance(e, bool) and e >= 1 else None


def race_stops(path: Path, config: dict) -> dict:
    """The members a race stopped, as its ``stops.csv`` records them (member →
    ``lossjax.search.Stop``), or {} for a sweep that did not race."""
    search = config.get("search") if isinstance(config.get("search"), dict) else {}
    if search.get("method") != "race":
        return {}
    from lossjax.search import Stop  # lazy: the config module, for race folders only

    table = read_record(path, "stops.csv", STOPS)
    if table is None:
        raise _missing_record(path, "stops.csv", "a race")
    return {int(r.member): Stop(int(r.epoch), str(r.reason)) for r in table.itertuples()}


def _has_stages(config: dict) -> bool:
    search, confirm = (config.get(k) if isinstance(config.get(k), dict) else {}
                       for k in ("search", "confirm"))
    return bool(search.get("extend") or confirm.get("seeds"))


def _missing_record(path: Path, name: str, writer: str) -> ResultsError:
    # --resume has nothing to do on a finished folder: it cannot bring the file back.
    fix = (f"put back the {name} the sweep wrote, or rerun it with --overwrite"
           if is_complete(path) else "finish the sweep with `lossjax sweep CONFIG --resume`")
    return ResultsError(f"{path / name} is missing: {writer} writes it when it finishes; {fix}")


def dropped(res: Results) -> set[int]:
    """The members a race dropped at a rung (not those it stopped because they diverged)."""
    if not res.stops:
        return set()
    from lossjax import search  # lazy: as race_stops

    return search.dropped(res.stops)


def check_complete(path: Path, epochs: pd.DataFrame, config: dict, stops=None,
                   n_added: int = 0) -> None:
    """Raises ``ResultsError`` unless ``epochs`` holds exactly epochs 1..E of members 0..N-1
    (of a member a race stopped, epochs 1 to its stop; ``stops`` as :func:`race_stops`); N
    counts the ``n_added`` members that stages after the grid added.

    N and E come from ``config.yaml`` when it gives them, else from the table itself. A sweep
    rewrites the table after every epoch, so an unfinished one lacks the last epochs of some
    members, or whole members: drawn anyway, it would pass off early epochs as final results
    and drop losses without a word. ``status.json`` is not consulted (the sweep draws its plots
    before it marks itself complete), except to word the way out.
    """
    grid = expected_members(config)
    n_members = grid + n_added if grid else int(epochs["member"].max()) + 1
    n_epochs = _config_epochs(config) or int(epochs["epoch"].max())
    twice = epochs.duplicated(["member", "epoch"])
    if twice.any():
        r = epochs[twice].iloc[0]
        raise ResultsError(f"{path} holds member {r['member']} epoch {r['epoch']} twice")
    outside = ~(epochs["member"].between(0, n_members - 1) & epochs["epoch"].between(1, n_epochs))
    if outside.any():
        r = epochs[outside].iloc[0]
        why = "the table and config.yaml belong to different sweeps" if config else "it is corrupt"
        raise ResultsError(
            f"{path} holds member {r['member']} epoch {r['epoch']}, outside the sweep's members "
            f"0-{n_members - 1} × epochs 1-{n_epochs}: {why}"
        )
    stops = stops or {}
    expected = n_members * n_epochs - sum(n_epochs - s.epoch for s in stops.values())
    search = config.get("search") if isinstance(config.get("search"), dict) else {}
    if (len(epochs) < expected and search.get("method") == "race"
            and is_complete(path.parent)):
        # A finished race's member whose rows end early has a stop, unless stops.csv lost it.
        last = epochs.groupby("member")["epoch"].max()
        early = [m for m, e in last.items() if e < n_epochs and m not in stops]
        if early:
            raise ResultsError(
                f"{path.parent / 'stops.csv'} records no stop for member {early[0]}, whose rows "
                f"in {path.name} end at epoch {last[early[0]]}: put back the stops.csv the "
                "sweep wrote, or rerun it with --overwrite")
    if len(epochs) < expected:
        # `--resume` has nothing to do on a folder marked complete.
        fix = ("restore the file, or rerun the sweep with --overwrite" if is_complete(path.parent)
               else "finish it with `lossjax sweep CONFIG --resume`")
        raise ResultsError(
            f"{path} has {len(epochs)} of {expected} rows ({n_members} members × "
            f"{n_epochs} epochs{', less what its race stopped' if stops else ''}): the sweep is "
            f"unfinished or the file was cut short; {fix}"
        )


def _check_summary_covers(res: Results) -> None:
    """Raises ``ResultsError`` if a group of ``epochs.csv`` has no ``summary.csv`` row (a
    summary cut short would silently drop a loss from the plots and the report)."""
    text = ["loss", "hidden", *_text_columns(res)]
    keys = [*text, *_match_columns(res)]
    s = res.summary
    for g in res.epochs[keys].drop_duplicates().itertuples(index=False):
        mask = pd.Series(True, index=s.index)
        for c in text:
            mask &= s[c] == getattr(g, c)
        for c in keys[len(text):]:
            mask &= matches(s[c], getattr(g, c))
        if not mask.any():
            where = ", ".join(f"{k} {getattr(g, k)}" for k in keys)
            raise ResultsError(
                f"{res.path / 'summary.csv'} has no row for {where}, which epochs.csv holds: "
                "it was cut short or belongs to another sweep"
            )


# --------------------------------------------------------------------------------------------
# Order and description


def loss_order(losses: Iterable[str]) -> list[str]:
    """The built-in losses in their canonical order, then any other losses sorted by name, the
    numbers in a label by value (``focal(gamma=5)`` before ``focal(gamma=15)``)."""
    present = set(losses)
    return [n for n in BUILTIN_LOSSES if n in present] + sorted(present - set(BUILTIN_LOSSES),
                                                                key=_natural)


def _natural(name: str) -> tuple:
    """Sort key: the text between numbers, and the numbers (plain decimals) by value."""
    parts = re.split(r"(\d+(?:\.\d+)?)", name)
    return tuple((0, float(p)) if i % 2 else (1, p) for i, p in enumerate(parts))


def hidden_order(hidden: Iterable[str]) -> list[str]:
    """Hidden-size groups ordered by depth, then widths (``"64" < "64-64" < "128-128"``).

    ``"linear"`` (no hidden layer, as the sweep writes it) comes first.
    """

    def key(h: str):
        if h == "linear":
            return (0, 0, [], h)
        try:
            widths = [int(w) for w in h.split("-")]
        except ValueError:
            return (1, 0, [], h)
        return (0, len(widths), widths, h)

    return sorted(set(hidden), key=key)


def format_value(v) -> str | None:
    """A config value as text, lists joined by ' / '; None for a value that is absent or empty."""
    if v is None:
        return None
    if isinstance(v, (list, tuple)):
        parts = [p for p in (format_value(x) for x in v) if p]
        return " / ".join(parts) if parts else None
    return str(v)


def config_value(config: dict, dotted: str):
    """``config["a"]["b"]`` for ``"a.b"``, or None where a key is missing: a hand-written
    config.yaml may lack any of them."""
    node = config
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def model_names(res: Results) -> list[str]:
    """The folder's models as epochs.csv names them (``mlp``, ``cnn 32-64``,
    ``module:pkg:Class``), in order of appearance; ``mlp`` for a folder written before the
    column."""
    ep = res.epochs
    return list(dict.fromkeys(ep["model"].dropna())) if "model" in ep.columns else ["mlp"]


def describe(res: Results) -> str:
    """One line naming data, model and optimizer: 'digits · MLP 64-64 relu · momentum, batch 64'.

    Hidden sizes come from ``epochs.csv`` (what was run); the rest from ``config.yaml`` when
    present, falling back to the folder's name for the dataset.
    """
    cfg = res.config
    dataset = format_value(config_value(cfg, "dataset.name")) or res.path.resolve().name
    groups = hidden_order(res.epochs["hidden"])
    model = "linear model" if groups == ["linear"] else f"MLP {' | '.join(groups)}"
    if (names := model_names(res)) != ["mlp"]:
        model = " | ".join(f"CNN {n[4:]} + {' | '.join(groups)}" if n.startswith("cnn ")
                           else n for n in names)
    if act := format_value(config_value(cfg, "model.activation")):
        model += f" {act}"
    parts = [dataset, model]
    opt = format_value(config_value(cfg, "optimizer.name"))
    batch = format_value(config_value(cfg, "batch_size"))
    train = ", ".join(p for p in (opt, f"batch {batch}" if batch else None) if p)
    if train:
        parts.append(train)
    return " · ".join(parts)


# --------------------------------------------------------------------------------------------
# The groups of a sweep and the runs at their chosen rates


def matches(a: pd.Series, b: float) -> pd.Series:
    """Where the column ``a`` holds the value ``b`` (a rate, a weight decay; NaN matches NaN):
    equal to 1e-6 relative, as float32 values read back from CSV are."""
    if b is None or (isinstance(b, float) and math.isnan(b)):
        return a.isna()
    return pd.Series(np.isclose(a.to_numpy(float), float(b), rtol=1e-6, atol=0.0), index=a.index)


def _match_columns(res: Results) -> list[str]:
    return [c for c in MATCH_COLUMNS if c in res.epochs.columns and c in res.summary.columns]


def _text_columns(res: Results) -> list[str]:
    """The swept names besides loss and hidden sizes that pick a group (the optimizer and the
    model, which the readers give every folder's tables; absent only from tables built by
    hand)."""
    return [c for c in ("optimizer", "model")
            if c in res.epochs.columns and c in res.summary.columns]


def optimizer_order(res: Results) -> list[str]:
    """The sweep's optimizers in config.yaml's order (optimizer.name), any others after them
    by name."""
    if "optimizer" not in res.epochs.columns:
        return []
    given = config_value(res.config, "optimizer.name")
    given = [given] if isinstance(given, str) else list(given or [])
    present = set(res.epochs["optimizer"].dropna())
    if "optimizer" in res.summary.columns:
        present |= set(res.summary["optimizer"].dropna())
    return [o for o in given if o in present] + sorted(present - set(given))


def varying_columns(res: Results) -> list[str]:
    """The swept values besides the learning rate that take more than one value in the sweep:
    ``optimizer`` (a name) first where several were swept, then the numbers."""
    return [c for c in (*_text_columns(res), *_match_columns(res))
            if res.epochs[c].nunique(dropna=False) > 1]


def variant_key(res: Results, row: pd.Series, varying: Iterable[str]) -> tuple:
    """A summary row's values of the ``varying`` columns, as a sortable tuple (an optimizer by
    its place in :func:`optimizer_order`, a model by its place in :func:`model_names`)."""
    order, models = optimizer_order(res), model_names(res)

    def key(c):
        if c == "optimizer":
            return order.index(row[c])
        if c == "model":
            return models.index(row[c]) if row[c] in models else len(models)
        return float(row[c])

    return tuple(key(c) for c in varying)


@dataclass(frozen=True)
class Choice:
    """One row of ``summary.csv`` (a loss, hidden sizes, and any weight decay / init scale) with
    its chosen learning rate, and the ``epochs.csv`` rows of the members it selects."""

    loss: str
    hidden: str
    row: pd.Series  # the summary.csv row
    rows: pd.DataFrame  # its members' epochs.csv rows (all seeds, all epochs)
    varying: tuple[str, ...] = ()  # swept values besides the rate that differ in the sweep
    # Which combination of those values the row holds, numbered in sorted order over the sweep
    # (0 where none differ), so that rows of one loss and hidden size can be told apart: the
    # plots give each its own line style.
    variant: int = 0

    @property
    def learning_rate(self) -> float:
        return float(self.row["learning_rate"])

    @property
    def tied_lrs(self) -> tuple[float, ...]:
        """The rates the chosen one is tied with (``stats.rate_choice``); () for none."""
        return tied_rates(self.row.get("tied_lrs"))

    def label(self, with_lr: bool = True) -> str:
        """'mse (lr 0.1)', or 'mse (lr 0.1, wd 0.0001)' where weight decay was swept, 'mse
        (adam, lr 0.01)' where several optimizers were; a rate
        that is no clear choice says so: 'mse (lr 0.1 tied with 0.3)', 'mse (lr 0.1 from one
        seed)' (see :func:`undecided`)."""
        short = {"weight_decay": "wd", "init_scale": "init"}
        # The optimizer, where several were swept, comes first: 'mse (adam, lr 0.01)'.
        parts = [str(self.row[c]) for c in self.varying if c == "optimizer"]
        parts += [f"lr {self.learning_rate:g}{lr_note(self.row)}"] if with_lr else []
        parts += [f"{short[c]} {self.row[c]:g}" for c in self.varying if c != "optimizer"]
        return f"{self.loss} ({', '.join(parts)})" if parts else self.loss


def undecided(row: pd.Series) -> tuple[str, tuple[float, ...]] | None:
    """Whether a summary row's rate is no clear choice: ('one seed', ()) where fewer than two
    seeds pair (nothing decides it), ('tie', rates) where the paired validation gap to those
    rates has a 95% interval that includes 0, None otherwise (decided, one rate, or nothing
    chosen). A tie with a rate other than the runner-up counts too: the choice is no clearer
    for having a noisier rival."""
    if row.get("rate_choice") == "one seed":
        return ("one seed", ())
    rates = tied_rates(row.get("tied_lrs"))
    if rates and not math.isnan(_float(row.get("learning_rate"))):
        return ("tie", rates)
    return None


def tie_mark(row: pd.Series) -> str:
    """' (tie: 0.3, 1)' or ' (one seed)' after a rate in a table, else '' (see
    :func:`undecided`)."""
    u = undecided(row)
    if u is None:
        return ""
    return " (one seed)" if u[0] == "one seed" else f" (tie: {', '.join(f'{v:g}' for v in u[1])})"


def lr_note(row: pd.Series) -> str:
    """' tied with 0.3 and 1', ' from one seed' or '': what follows a chosen rate in a label."""
    u = undecided(row)
    if u is None:
        return ""
    if u[0] == "one seed":
        return " from one seed"
    return " tied with " + " and ".join(f"{r:g}" for r in u[1])


def group_rows(res: Results, loss: str, hidden: str, row: pd.Series | None) -> pd.DataFrame:
    """The ``epochs.csv`` rows of one summary group, every learning rate but those a race
    dropped (``row``: its ``summary.csv`` row, whose optimizer, weight decay and init scale
    narrow the group; None: all)."""
    ep = res.epochs
    mask = (ep["loss"] == loss) & (ep["hidden"] == hidden) & ~ep["member"].isin(dropped(res))
    if row is not None:
        for c in _text_columns(res):
            mask &= ep[c] == row[c]
        for c in _match_columns(res):
            mask &= matches(ep[c], row[c])
    return ep[mask]


def summary_rows(res: Results) -> list[pd.Series]:
    """The rows of ``summary.csv`` in the order the plots and the report show them: hidden
    sizes, loss, optimizer (:func:`optimizer_order`), then weight decay and init scale.

    Raises ``ResultsError`` if two rows share loss, optimizer, hidden, weight decay and init
    scale.
    """
    summary = res.summary
    keys = ["loss", *_text_columns(res), "hidden", *_match_columns(res)]
    dup = summary.duplicated(keys, keep=False)
    if dup.any():
        r = summary[dup].iloc[0]
        where = ", ".join(f"{k} {r[k]}" for k in keys)
        raise ResultsError(f"{res.path / 'summary.csv'} has several rows for {where}")
    order = {h: i for i, h in enumerate(hidden_order(summary["hidden"]))}
    losses = loss_order(summary["loss"])
    extra = [*_text_columns(res), *_match_columns(res)]
    return sorted(
        (r for _, r in summary.iterrows()),
        key=lambda r: (order[r["hidden"]], losses.index(r["loss"]),
                       *variant_key(res, r, extra)),
    )


def chosen_runs(res: Results) -> list[Choice]:
    """One ``Choice`` per ``summary.csv`` row with a learning rate, in ``summary_rows`` order.

    The members are the ``epochs.csv`` rows with the row's loss, hidden sizes, learning rate,
    weight decay and init scale. Raises ``ResultsError`` when the tables disagree.
    """
    choices = []
    varying = tuple(varying_columns(res))
    rows = summary_rows(res)
    combos = sorted({variant_key(res, r, varying) for r in rows})
    for r in rows:
        if math.isnan(r["learning_rate"]):
            continue  # every member diverged: see diverged_groups
        group = group_rows(res, r["loss"], r["hidden"], r)
        sel = group[matches(group["learning_rate"], r["learning_rate"])]
        if sel.empty:
            raise ResultsError(
                f"{res.path / 'summary.csv'}: the row for loss {r['loss']}, hidden {r['hidden']}, "
                f"learning rate {r['learning_rate']:g} matches no member of epochs.csv"
            )
        variant = combos.index(variant_key(res, r, varying))
        choices.append(Choice(r["loss"], r["hidden"], r, sel, varying, variant))
    return choices


def last_epochs(rows: pd.DataFrame) -> pd.DataFrame:
    """Each member's row at its last epoch among ``rows``."""
    return rows.loc[rows.groupby("member")["epoch"].idxmax()]


def all_diverged(rows: pd.DataFrame) -> bool:
    """Whether every member among ``rows`` (at least one) diverged."""
    return len(rows) > 0 and bool(rows.groupby("member")["diverged"].any().all())


def diverged_groups(res: Results) -> list[Choice]:
    """One ``Choice`` per ``summary.csv`` row without a learning rate, whose ``rows`` are all its
    group's members (every rate): no rate was chosen because every one of them diverged.

    Raises ``ResultsError`` where such a row has members that did not diverge, or none.
    """
    varying = tuple(varying_columns(res))
    gone = []
    for r in summary_rows(res):
        if not math.isnan(r["learning_rate"]):
            continue
        group = group_rows(res, r["loss"], r["hidden"], r)
        if not all_diverged(group):
            raise ResultsError(
                f"{res.path / 'summary.csv'}: the row for loss {r['loss']}, hidden {r['hidden']} "
                "has no learning rate, yet not every member of its group in epochs.csv diverged"
            )
        gone.append(Choice(r["loss"], r["hidden"], r, group, varying))
    return gone

