"""The paired effects of gradient-edit variants against their bases: does pushing wrong-class
logits up hinder learning? A paired, interventional test.

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
- *final test accuracy*, at the last epoch;

and, per epoch, the paired difference in test and validation accuracy (``per_epoch``: the
curve whose last point is the final effect, drawn by ``lossjax causal`` as
``paired_difference.png``).

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

The within-loss rank evidence is :mod:`lossjax.within_loss`; the analysis of a folder, its files
and the figure are :mod:`lossjax.causal_report` (``lossjax causal``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from lossjax import analysis, interventions, losses, stats
from lossjax.config import EvalConfig
from lossjax.errors import ResultsError
from lossjax.interventions import Variant

#: Bases whose wrong-class gradient can be negative (a step pushes the logit up): of the
#: parameterized ones, rescaled_mse ((2/K) s_j), squentropy (p_j + 2 s_j/(K-1)) and
#: label_smoothing_ce with alpha > 0 (p_j − alpha/K); focal's, −p_j Σ y_i h_i, is never negative.
PUSHING_BASES = ("mse", "softmax_mse", "rescaled_mse", "squentropy", "label_smoothing_ce")


def _pushes(v: Variant) -> bool:
    return v.base_name in PUSHING_BASES and v.params.get("alpha", 1.0) > 0


# --------------------------------------------------------------------------------------------
# Names: which losses are interventions on which base, and what the seed claim predicts


def parse_variant(loss: str) -> Variant | None:
    """The variant a loss name describes, or None for a base or any other loss."""
    if not interventions.is_variant(loss):
        return None
    try:
        return Variant.parse(loss)
    except ValueError:
        return None


def prediction(v: Variant) -> str | None:
    """The sign the seed claim predicts for the effect on speed (V − B): '> 0', '< 0', '= 0'
    (the edit changes no gradient), or None (the claim says nothing about it). ``-balanced``
    moves the edit's sum to the true class, which leaves the prediction as it is."""
    if v.edit == "no_push_up":
        return "> 0" if _pushes(v) else "= 0"
    if v.percent is not None:
        return "= 0" if v.percent == 0 else "< 0"
    return None


def loss_key(loss: str) -> tuple:
    """Sort key that keeps each base's variants right after it: built-in bases in their
    canonical order, then any other loss by name."""
    v = parse_variant(loss)
    base = v.base if v else loss
    bases = list(losses.LOSSES)
    family = bases.index(base) if base in bases else len(bases)
    return (family, base if family == len(bases) else "", v is not None, loss)


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


def seed_pairs(base_rows: pd.DataFrame, variant_rows: pd.DataFrame,
               ) -> list[tuple[int, str, pd.DataFrame | None, pd.DataFrame | None]]:
    """The pairing by seed, the one every effect here is taken over: per seed of either side,
    ``(seed, status, base member's rows, variant member's rows)``, rows sorted by epoch.

    ``status`` is 'paired', 'diverged' (either member diverged: left out, its frozen weights are
    no result) or 'unpaired' (the seed has a member on one side only; its missing side is None).
    """
    base, variant = _by_seed(base_rows, "the base"), _by_seed(variant_rows, "the variant")
    out = []
    for seed in sorted(set(base) | set(variant)):
        b, v = base.get(seed), variant.get(seed)
        if b is None or v is None:
            status = "unpaired"
        elif b["diverged"].any() or v["diverged"].any():
            status = "diverged"
        else:
            status = "paired"
        out.append((seed, status, b, v))
    return out


def pair_members(base_rows: pd.DataFrame, variant_rows: pd.DataFrame, target: float,
                 ) -> pd.DataFrame:
    """One row per seed of either side: ``status`` (:func:`seed_pairs`) and, for paired seeds,
    each side's speed, epoch to target and final test accuracy.

    Speed is the mean test accuracy over the epochs at which *both* members have one, so both
    average the same epochs; the epoch to target is taken over those epochs too (NaN: never
    reached); the final accuracy is each member's at its last epoch.
    """
    out = []
    for seed, status, b, v in seed_pairs(base_rows, variant_rows):
        row = {"seed": seed, "status": status}
        if status != "paired":
            out.append(row)
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


#: The columns whose paired difference per epoch ``per_epoch_effects`` takes.
PER_EPOCH_COLUMNS = ("test_acc", "val_acc")


def per_epoch_effects(base_rows: pd.DataFrame, variant_rows: pd.DataFrame,
                      columns: Iterable[str] = PER_EPOCH_COLUMNS) -> dict:
    """The paired difference V − B at every epoch, over the seeds :func:`seed_pairs` pairs:
    ``{"epoch": [...], column: {"mean": [...], "ci95": [...], "n": [...]}}``, each epoch's
    differences summarised as by :func:`interval` (an epoch one side did not evaluate has none:
    NaN, n 0). At the last epoch the test accuracy's entry is :func:`paired_effects`'
    ``final_test_acc``: the same pairs, the same differences."""
    pairs = [(b, v) for _, status, b, v in seed_pairs(base_rows, variant_rows)
             if status == "paired"]
    epochs = sorted({int(e) for b, v in pairs for e in (*b["epoch"], *v["epoch"])})
    out: dict = {"epoch": epochs}
    for column in columns:
        diffs = pd.DataFrame(
            {i: v.set_index("epoch")[column].astype(float)
             - b.set_index("epoch")[column].astype(float) for i, (b, v) in enumerate(pairs)},
            index=pd.Index(epochs, name="epoch"))
        rows = [interval(diffs.loc[e]) for e in epochs]
        out[column] = {k: [r[k] for r in rows] for k in ("mean", "ci95", "n")}
    return out


def interval(values: Iterable[float]) -> dict:
    """Mean of the finite ``values``, its 95% Student-t half-width (NaN under two values), the
    interval's ends, and n."""
    v = np.asarray(list(values), float)
    v = v[np.isfinite(v)]
    mean = float(v.mean()) if len(v) else math.nan
    half = stats.ci95_halfwidth(v)
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
    # The optimizer where several were swept (a comparison names it then; a sweep of one keeps
    # the comparison as before optimizers were swept), then the numbers.
    names = {c: str(row[c]) for c in analysis.varying_columns(res) if c == "optimizer"}
    return {**names, **{c: float(row[c]) for c in analysis._match_columns(res)}}


def _group_key(res: analysis.Results, row: pd.Series) -> tuple:
    # A dictionary key: formatted, so that float noise in a CSV round trip never splits a group.
    # A variant pairs with its base under the same optimizer.
    return (row["hidden"], *(str(row[c]) for c in analysis._text_columns(res)),
            *(f"{float(row[c]):.10g}" for c in analysis._match_columns(res)))


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
    return group[analysis.matches(group["learning_rate"], lr)]


def tied_rate_effects(res: analysis.Results, base: pd.Series, variant: pd.Series,
                      target: float) -> list[dict]:
    """The paired effects with one side at a time at each rate its choice is tied with, the
    other at its chosen rate; the first row is the headline (both at their chosen rates). []
    where neither side's choice is tied, or a side has no chosen rate."""
    b_lr, v_lr = float(base["learning_rate"]), float(variant["learning_rate"])
    if not (np.isfinite(b_lr) and np.isfinite(v_lr)):
        return []
    b_tied, v_tied = (stats.tied_rates(r.get("tied_lrs")) for r in (base, variant))
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


def compare(res: analysis.Results, v: Variant, base: pd.Series, variant: pd.Series,
            chosen: dict[tuple, analysis.Choice], target: float) -> dict:
    """The comparison of one variant's summary row with its base's: :func:`paired_effects` and
    each side's gradient profile, speed and final accuracy over the paired seeds."""
    out = {
        # -balanced is part of the edit here; norm matching is the comparison's other axis.
        "base": v.base, "variant": str(v), "edit": v.edit + ("-balanced" if v.balanced else ""),
        "norm_matched": v.norm_matched, "hidden": base["hidden"], **_match_values(res, base),
        "prediction": prediction(v),
        "base_learning_rate": float(base["learning_rate"]),
        "variant_learning_rate": float(variant["learning_rate"]),
    }
    cb = chosen.get((v.base, *_group_key(res, base)))
    cv = chosen.get((str(v), *_group_key(res, variant)))
    none = res.epochs.iloc[:0]
    gone = [name for name, c in (("the base", cb), ("the variant", cv)) if c is None]
    b_rows, v_rows = (none, none) if gone else (cb.rows, cv.rows)
    pairs = pair_members(b_rows, v_rows, target)
    out.update(paired_effects(pairs), note=(
        f"every member of {' and '.join(gone)} diverged at every rate" if gone else None))
    out["per_epoch"] = per_epoch_effects(b_rows, v_rows)
    p = pairs[pairs["status"] == "paired"]
    for side, rows in (("base", b_rows), ("variant", v_rows)):
        out[f"{side}_profile"] = {**gradient_profile(rows, p["seed"]),
                                  "speed": float(p[f"{side}_speed"].mean()),
                                  "final_test_acc": float(p[f"{side}_final"].mean())}
    out["verdict"] = verdict(out["speed"], out["prediction"])
    for side, row in (("base", base), ("variant", variant)):
        out[f"{side}_rate_choice"] = row.get("rate_choice")
        out[f"{side}_tied_lrs"] = list(stats.tied_rates(row.get("tied_lrs")))
    tied = [] if gone else tied_rate_effects(res, base, variant, target)
    out["tied_rate_effects"] = tied
    # Whether every tied-rate row reads as the headline does (None: no tied rate choice).
    out["robust_to_rate_choice"] = (
        all(t["speed_direction"] == direction(out["speed"]) for t in tied) if tied else None)
    return out


def comparisons(res: analysis.Results, target: float) -> list[dict]:
    """Every variant in ``res`` beside its base (same hidden sizes, optimizer, weight decay and
    init scale), ordered by hidden sizes (as ``summary_rows``), then :func:`loss_key`."""
    rows = analysis.summary_rows(res)
    by_key = {(r["loss"], *_group_key(res, r)): r for r in rows}
    chosen = {(c.loss, *_group_key(res, c.row)): c for c in analysis.chosen_runs(res)}
    out = []
    hidden = analysis.hidden_order(r["hidden"] for r in rows)
    for r in sorted(rows, key=lambda r: (hidden.index(r["hidden"]), loss_key(r["loss"]))):
        v = parse_variant(r["loss"])
        base = by_key.get((v.base, *_group_key(res, r))) if v else None
        if base is not None:
            out.append(compare(res, v, base, r, chosen, target))
    return out


# --------------------------------------------------------------------------------------------
# Protocol checks


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
        opt = r.get("optimizer")
        rows.append({
            "loss": r["loss"],
            # Two optimizers' rows of one loss are told apart only by this.
            **({"optimizer": opt} if isinstance(opt, str) else {}),
            "hidden": r["hidden"], "learning_rate": float(r["learning_rate"]),
            "lr_at_grid_edge": bool(r.get("lr_at_grid_edge", False)),
            "rate_choice": r.get("rate_choice"),
            "tied_lrs": list(stats.tied_rates(r.get("tied_lrs"))),
            "late_val_gain": float(gain),
            "still_improving": bool(gain > STILL_IMPROVING),
            "test_acc_mean": float(r["test_acc_mean"]),
        })
    return rows


def target_accuracy(res: analysis.Results) -> float:
    t = analysis.config_value(res.config, "eval.target_accuracy")
    return float(t) if isinstance(t, (int, float)) else EvalConfig().target_accuracy
