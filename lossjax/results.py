"""The results folder of one sweep: what is in it, and how it is written safely.

    RESULTS_DIR/
      config.yaml       the resolved config (every default filled in)
      env.json          versions, devices, precision, and where the data came from
      epochs.csv        tidy table: one row per member and epoch (``pandas.read_csv`` it)
      summary.csv       per loss (and hidden / weight decay / init scale): the learning rate
                        chosen on validation accuracy, test accuracy mean ± 95% interval, ...
      status.json       {"complete": bool}: an unfinished sweep can be resumed
      checkpoints/      per-group training state after the last finished epoch (removed when
                        the sweep completes)
      plots/, report.md written by ``lossjax.plots`` and ``lossjax.report`` from the tables

Every file is written to a temporary name and renamed into place, so a killed process leaves
either the old file or the new one, never half of one.

``epochs.csv`` columns, per member and epoch: the member's swept values; ``train_loss`` (mean of
its own loss over the epoch's batches); ``train_acc`` (running accuracy over those batches, as in
Flax's MNIST example, not a second pass); ``val_acc``/``val_ce`` and ``test_acc``/``test_ce``
(accuracy and cross-entropy of softmax(logits), comparable across losses); ``wrong_frac`` (the
fraction of wrong-class logits whose gradient was negative, i.e. that a step pushed up, averaged
over batches: the seed's §4 quantity); ``grad_norm`` (mean per-example norm of d loss / d
logits); ``diverged`` (true from the epoch the member's loss or parameters went non-finite; its
parameters stay frozen at the last good values, its training metrics are NaN); ``wall_time``
(seconds since the sweep started, a measurement rather than a result).
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from lossjax.errors import ResultsError

COLUMNS = [
    "member", "loss", "hidden", "learning_rate", "weight_decay", "init_scale", "seed", "epoch",
    "train_loss", "train_acc", "val_acc", "val_ce", "test_acc", "test_ce", "wrong_frac",
    "grad_norm", "diverged", "wall_time",
]
GROUP_KEYS = ["loss", "hidden", "weight_decay", "init_scale"]

# Two-sided 95% Student-t critical values for 1..30 degrees of freedom (any statistics table);
# beyond 30 the normal 1.96 is within 2%.
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def ci95_halfwidth(values) -> float:
    """Half-width of the 95% t-interval of the mean (NaN for fewer than two values)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return math.nan
    t = _T95[len(v) - 2] if len(v) - 1 <= len(_T95) else 1.96
    return float(t * v.std(ddof=1) / math.sqrt(len(v)))


# ---- atomic writes -----------------------------------------------------------------------


def atomic_write(path: Path, write) -> None:
    """Calls ``write(binary_file)`` on a temporary file beside ``path``, then renames it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    atomic_write(Path(path), lambda f: f.write(text.encode()))


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_table(path: Path, table: pd.DataFrame) -> None:
    atomic_write(Path(path), lambda f: table.to_csv(f, index=False))


# ---- the folder ----------------------------------------------------------------------------


def is_complete(out: Path) -> bool:
    try:
        return bool(json.loads((out / "status.json").read_text())["complete"])
    except (OSError, ValueError, KeyError):
        return False


def check_target(out: Path, config_dict: dict, resume: bool, overwrite: bool) -> None:
    """Decides, before anything runs, whether the sweep may use ``out``. Raises ResultsError."""
    if resume:
        if not (out / "config.yaml").exists():
            raise ResultsError(f"--resume: {out} holds no sweep to resume; run without --resume.")
        saved = yaml.safe_load((out / "config.yaml").read_text())
        if saved != config_dict:
            diff = sorted(_diff_keys(saved, config_dict))
            raise ResultsError(
                f"--resume: the config differs from the one {out} was started with "
                f"(at {', '.join(diff[:5])}); resume with the same config and --set values."
            )
        return
    if out.exists() and any(out.iterdir()):
        if overwrite:
            return
        what = "a finished sweep" if is_complete(out) else "an unfinished sweep"
        fix = ("remove it or pass --overwrite" if is_complete(out)
               else "continue it with --resume, or pass --overwrite to start over")
        raise ResultsError(f"{out} already holds {what}; {fix} "
                           "(or choose another folder with --set output.dir=...).")


def _diff_keys(a, b, prefix=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in set(a) | set(b):
            yield from _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
    elif a != b:
        yield prefix.rstrip(".")


def start(out: Path, config_dict: dict, env: dict, overwrite: bool) -> None:
    if overwrite and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", yaml.safe_dump(config_dict, sort_keys=False))
    write_json(out / "env.json", env)
    write_json(out / "status.json", {"complete": False})


def finish(out: Path) -> None:
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    write_json(out / "status.json", {"complete": True})


def env_record(devices, data_meta: dict) -> dict:
    import flax
    import jax
    import optax

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "jax": jax.__version__,
        "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "devices": [str(d) for d in devices],
        "device_kind": devices[0].device_kind,
        "process_count": jax.process_count(),
        "x64": bool(jax.config.jax_enable_x64),
        "default_matmul_precision": jax.config.jax_default_matmul_precision or "default",
        "data": data_meta,
    }


# ---- checkpoints ---------------------------------------------------------------------------


def save_checkpoint(out: Path, group: int, epoch: int, elapsed: float, leaves) -> None:
    arrays = {f"leaf{i}": a for i, a in enumerate(leaves)}
    atomic_write(out / "checkpoints" / f"group{group}.npz",
                 lambda f: np.savez(f, epoch=epoch, elapsed=elapsed, **arrays))


def load_checkpoint(out: Path, group: int):
    """(epochs finished, elapsed seconds, leaves), or None where the group never finished one."""
    path = out / "checkpoints" / f"group{group}.npz"
    if not path.exists():
        return None
    with np.load(path) as z:
        n = sum(1 for k in z.files if k.startswith("leaf"))
        return int(z["epoch"]), float(z["elapsed"]), [z[f"leaf{i}"] for i in range(n)]


def read_table(out: Path) -> pd.DataFrame:
    path = out / "epochs.csv"
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    return pd.read_csv(path, dtype={"hidden": str})


# ---- summary -------------------------------------------------------------------------------


def summarize(table: pd.DataFrame, target: float) -> pd.DataFrame:
    """Per (loss, hidden, weight decay, init scale): the learning rate with the best mean final
    validation accuracy over seeds, and what it gives.

    A member that diverged scores 0 in that choice (its frozen accuracy would flatter a rate
    that blows up); test data play no part in it. Reported at the chosen rate: validation and
    test accuracy mean, the 95% t-interval half-width of test accuracy over seeds, the mean
    number of epochs to reach ``target`` test accuracy over the seeds that reached it, and how
    many diverged (at that rate, and over the whole grid).
    """
    last = table.loc[table.groupby("member")["epoch"].idxmax()]
    rows = []
    for key, g in last.groupby(GROUP_KEYS, sort=False):
        score = g["val_acc"].where(~g["diverged"].astype(bool), 0.0)
        by_lr = score.groupby(g["learning_rate"]).mean()
        lr = float(by_lr.idxmax())
        lrs = sorted(g["learning_rate"].unique())
        chosen = g[g["learning_rate"] == lr]
        reach = []
        for member in chosen["member"]:
            hist = table[table["member"] == member]
            hit = hist.loc[hist["test_acc"] >= target, "epoch"]
            reach.append(hit.min() if len(hit) else math.nan)
        reach = np.asarray(reach, float)
        rows.append({
            **dict(zip(GROUP_KEYS, key, strict=True)),
            "learning_rate": lr,
            "lr_at_grid_edge": len(lrs) > 1 and lr in (lrs[0], lrs[-1]),
            "n_seeds": len(chosen),
            "val_acc_mean": chosen["val_acc"].mean(),
            "test_acc_mean": chosen["test_acc"].mean(),
            "test_acc_ci95": ci95_halfwidth(chosen["test_acc"]),
            "epochs_to_target_mean": np.nanmean(reach) if np.isfinite(reach).any() else math.nan,
            "reached_target": int(np.isfinite(reach).sum()),
            "diverged_at_lr": int(chosen["diverged"].astype(bool).sum()),
            "diverged": int(g["diverged"].astype(bool).sum()),
        })
    return pd.DataFrame(rows)
