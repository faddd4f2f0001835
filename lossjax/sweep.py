"""``lossjax sweep``: config file → validated config → dataset → engine → results → plots.

Everything that can be checked is checked before the results folder is created: the config,
the folder (exists? resumable?), the data (present, checksums), the batch size against the
training set. After each epoch the table is rewritten and a checkpoint saved, both atomically,
so an interrupted sweep resumes (``--resume``) from its last finished epoch and ends with the
same table as an uninterrupted one.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from lossjax import config as config_lib
from lossjax import engine, results
from lossjax.losses import resolve_loss


def expand_members(cfg) -> list[engine.Member]:
    """The sweep's product, in a fixed order: hidden × loss × learning rate × weight decay ×
    init scale × seed. Member ids are positions in this list."""
    combos = [
        (hidden, loss, lr, wd, scale, seed)
        for hidden in cfg.model.hidden
        for loss in cfg.losses
        for lr, wd, scale, seed in itertools.product(
            config_lib.learning_rates(cfg, loss), cfg.optimizer.weight_decay,
            cfg.model.init_scale, cfg.seeds)
    ]
    return [engine.Member(i, loss, float(lr), float(wd), float(scale), int(seed), tuple(hidden))
            for i, (hidden, loss, lr, wd, scale, seed) in enumerate(combos)]


def _settings(cfg, hidden, num_classes) -> engine.TrainSettings:
    return engine.TrainSettings(
        hidden=tuple(hidden), num_classes=num_classes, activation=cfg.model.activation,
        init=cfg.model.init, dtype=cfg.model.dtype, optimizer=cfg.optimizer.name,
        momentum=cfg.optimizer.momentum, schedule=cfg.optimizer.schedule,
        batch_size=cfg.batch_size, epochs=cfg.epochs)


class Progress:
    """A one-line bar with ETA on a terminal; a log line per epoch otherwise; or nothing."""

    def __init__(self, total: int, quiet: bool, stream=sys.stderr):
        self.total, self.quiet, self.stream = total, quiet, stream
        self.tty = stream.isatty()
        self.t0 = time.perf_counter()
        self.done0 = None

    def update(self, done: int, text: str) -> None:
        if self.quiet:
            return
        if self.done0 is None:  # ETA from work done in this process (resume-aware)
            self.done0, self.t0 = done, time.perf_counter()
            return
        elapsed = time.perf_counter() - self.t0
        rate = (done - self.done0) / elapsed if elapsed > 0 else 0
        eta = f"{(self.total - done) / rate:.0f}s" if rate else "?"
        if self.tty:
            filled = int(30 * done / self.total)
            self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total} "
                              f"member-epochs  ETA {eta}  {text}\x1b[K")
            if done == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(f"{done}/{self.total} member-epochs  {elapsed:.1f}s  "
                              f"ETA {eta}  {text}\n")
        self.stream.flush()


def _maybe_init_distributed() -> None:
    # Multi-host runs: launch one process per host with JAX_COORDINATOR_ADDRESS,
    # JAX_NUM_PROCESSES and JAX_PROCESS_ID set (or a cluster JAX auto-detects).
    if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("LOSSJAX_DISTRIBUTED"):
        jax.distributed.initialize()


def run(config_path, overrides=(), resume: bool = False, quiet: bool = False,
        overwrite: bool = False) -> int:
    cfg = config_lib.load_config(config_path, overrides)
    config_dict = config_lib.config_to_dict(cfg)
    out = Path(cfg.output.dir) / cfg.name
    results.check_target(out, config_dict, resume=resume, overwrite=overwrite)
    loss_fns = [resolve_loss(name) for name in cfg.losses]

    from lossjax import data  # heavy-ish: only once the config is known to be good

    _maybe_init_distributed()
    if cfg.model.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    ds = data.preprocess(
        data.load(cfg.dataset.name, data_dir=cfg.dataset.data_dir,
                  val_size=cfg.dataset.val_size, split_seed=cfg.dataset.split_seed),
        standardize=cfg.dataset.standardize)
    config_lib.check_batch_size(cfg, len(ds.x_train))

    mesh = engine.make_mesh()
    writer = jax.process_index() == 0
    if writer and not resume:
        results.start(out, config_dict, results.env_record(jax.devices(), ds.meta), overwrite)
    table = train(cfg, ds, loss_fns, mesh, out, resume=resume, quiet=quiet, writer=writer)
    if not writer:
        return 0
    summary = results.summarize(table, cfg.eval.target_accuracy)
    results.write_table(out / "summary.csv", summary)
    from lossjax import plots, report

    plots.plot_results(out)
    report_path = report.write_report(out)
    results.finish(out)
    if not quiet:
        cols = ["loss", "hidden", "learning_rate", "test_acc_mean", "test_acc_ci95",
                "epochs_to_target_mean", "diverged"]
        print(summary[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        print(f"results: {out}/epochs.csv, {out}/summary.csv")
        print(f"plots:   {out}/plots/  report: {report_path}")
    return 0


def train(cfg, ds, loss_fns, mesh, out: Path, resume: bool, quiet: bool,
          writer: bool) -> pd.DataFrame:
    """Trains every group to ``cfg.epochs``, writing the table and a checkpoint after each
    epoch. Returns the full table."""
    members = expand_members(cfg)
    groups = [list(g) for _, g in itertools.groupby(members, key=lambda m: m.hidden)]
    table = results.read_table(out) if resume else pd.DataFrame(columns=results.COLUMNS)
    ckpts = {gid: results.load_checkpoint(out, gid) if resume else None
             for gid in range(len(groups))}
    done = {gid: c[0] if c else 0 for gid, c in ckpts.items()}
    # Keep only rows that a checkpoint stands behind: the table may be one epoch ahead of the
    # checkpoint if the process died between the two writes.
    if len(table):
        gid_of = {m.index: gid for gid, g in enumerate(groups) for m in g}
        keep = [row.epoch <= done[gid_of[row.member]] for row in table.itertuples()]
        table = table[keep]
    frames = [table] if len(table) else []

    total = len(members) * cfg.epochs
    progress = Progress(total, quiet)
    progress.update(sum(done[g] * len(m) for g, m in enumerate(groups)), "")
    # A split that is not asked for is not put on the device, so it is never evaluated.
    test = slice(None) if "test" in cfg.eval.splits else slice(0)
    data = (ds.x_train, ds.y_train, ds.x_val, ds.y_val, ds.x_test[test], ds.y_test[test])
    train_acc = "train" in cfg.eval.splits
    for gid, group_members in enumerate(groups):
        if done[gid] >= cfg.epochs:
            continue
        group = engine.Group(_settings(cfg, group_members[0].hidden, ds.num_classes),
                             group_members, list(cfg.losses), loss_fns, data, mesh)
        if ckpts[gid]:
            start_epoch, elapsed0, leaves = ckpts.pop(gid)
            state = group.state_from_host(leaves)
        else:
            start_epoch, elapsed0, state = 0, 0.0, group.init_state()
        t0 = time.perf_counter() - elapsed0
        static = pd.DataFrame({
            "member": [m.index for m in group_members],
            "loss": [m.loss for m in group_members],
            "hidden": ["-".join(map(str, m.hidden)) or "linear" for m in group_members],
            "learning_rate": [m.learning_rate for m in group_members],
            "weight_decay": [m.weight_decay for m in group_members],
            "init_scale": [m.init_scale for m in group_members],
            "seed": [m.seed for m in group_members],
        })
        for epoch in range(start_epoch, cfg.epochs):
            state, metrics = group.train_epoch(state, epoch)
            last = epoch + 1 == cfg.epochs
            evals = group.evaluate(state) if last or (epoch + 1) % cfg.eval.every == 0 else {}
            nan = np.full(len(group_members), math.nan)
            rows = static.assign(
                epoch=epoch + 1,
                train_loss=metrics["train_loss"],
                train_acc=metrics["train_acc"] if train_acc else nan,
                val_acc=evals.get("val_acc", nan),
                val_ce=evals.get("val_ce", nan),
                test_acc=evals.get("test_acc", nan),
                test_ce=evals.get("test_ce", nan),
                wrong_frac=metrics["wrong_frac"],
                grad_norm=metrics["grad_norm"],
                diverged=metrics["diverged"].astype(bool),
                wall_time=round(time.perf_counter() - t0, 3),
            )
            frames.append(rows)
            table = pd.concat(frames, ignore_index=True)
            if writer:
                results.write_table(out / "epochs.csv", table)
                results.save_checkpoint(out, gid, epoch + 1, time.perf_counter() - t0,
                                        group.state_to_host(state))
            best = np.nanmax(evals["val_acc"]) if "val_acc" in evals else math.nan
            n_div = int(metrics["diverged"].sum())
            progress.update(
                sum(done[g] * len(m) for g, m in enumerate(groups) if g != gid)
                + (epoch + 1) * len(group_members),
                f"group {gid + 1}/{len(groups)} epoch {epoch + 1}/{cfg.epochs} "
                f"best val acc {best:.3f} diverged {n_div}")
        done[gid] = cfg.epochs
    return table.sort_values(["member", "epoch"], ignore_index=True)
