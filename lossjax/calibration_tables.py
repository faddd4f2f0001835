"""What the report, the plots and a comparison show of a sweep's probability quality, from its
tables: the calibration columns of ``summary.csv`` (``lossjax.tables.CALIBRATION_SUMMARY``) and
``final.csv`` (``lossjax.tables.FINAL``: per-class test accuracy and reliability bins at the
last epoch). Folders written before these exist lack them; every function here then says so
(False, None or an empty table) and its callers show nothing of them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lossjax.tables import CALIBRATION_SUMMARY, read_final

#: The bracket of ``lossjax.calibration``'s temperature fit, [1/T_MAX, T_MAX] (a test checks
#: it): copied, as that module imports JAX and the tables do not.
TEMPERATURE_BOUNDS = (1e-4, 1e4)


def unfit(temperature) -> np.ndarray:
    """Per fitted temperature, whether the fit found no minimum: it ended at a bound of its
    bracket (the NLL still falling there) or did not converge (NaN; a diverged member's NaN
    too, which callers leave out first)."""
    t = np.asarray(temperature, float)
    at_bound = np.isclose(t, TEMPERATURE_BOUNDS[0], rtol=1e-3) | np.isclose(
        t, TEMPERATURE_BOUNDS[1], rtol=1e-3)
    return ~np.isfinite(t) | at_bound


def has_summary_columns(summary: pd.DataFrame) -> bool:
    """Whether ``summary.csv`` holds the calibration means (and any of them is a number)."""
    cols = list(CALIBRATION_SUMMARY)
    return all(c in summary.columns for c in cols) and bool(summary[cols].notna().any().any())


def final_table(path) -> pd.DataFrame | None:
    """``final.csv`` of the folder at ``path``, or None where it has none."""
    return read_final(path)


def pooled_bins(final: pd.DataFrame, members, kind: str) -> pd.DataFrame:
    """The reliability bins of ``kind`` ('reliability' or 'reliability_ts') pooled over
    ``members`` (a chosen rate's seeds): per bin the examples' count, their mean confidence and
    accuracy (NaN where the bin is empty). Empty where the members have no such rows."""
    rows = final[(final["kind"] == kind) & final["member"].isin(list(members))]
    if rows.empty:
        return pd.DataFrame(columns=["index", "count", "confidence", "accuracy"])
    n = rows["count"].to_numpy(float)
    rows = rows.assign(conf_sum=np.where(n > 0, rows["confidence"].fillna(0) * n, 0.0),
                       right=np.where(n > 0, rows["accuracy"].fillna(0) * n, 0.0))
    g = rows.groupby("index", sort=True)[["count", "conf_sum", "right"]].sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.where(g["count"] > 0, g["conf_sum"] / g["count"], np.nan)
        acc = np.where(g["count"] > 0, g["right"] / g["count"], np.nan)
    return pd.DataFrame({"index": g.index.to_numpy(), "count": g["count"].to_numpy(),
                         "confidence": conf, "accuracy": acc})


def class_accuracy(final: pd.DataFrame, members) -> pd.Series:
    """Per true class, the test accuracy mean over ``members`` (a chosen rate's seeds);
    empty where they have no class rows."""
    rows = final[(final["kind"] == "class") & final["member"].isin(list(members))]
    return rows.groupby("index", sort=True)["accuracy"].mean()
