"""``lossjax sweep``: config file → validated config → dataset → engine → results → plots.

Everything that can be checked is checked before training starts, and a check that fails
leaves no folder behind: the config, each loss (called once on a tiny batch), the results
folder (whose is it? in use? resumable?), the data (present, checksums), the batch size, the
memory the models need and the disk space their checkpoints need. After each epoch the table
is rewritten and a checkpoint saved, both atomically, so an interrupted sweep resumes
(``--resume``) from its last finished epoch and ends with the same files as an uninterrupted
one (the ``wall_time`` column aside), on the same CPU model and instruction set with the same
jax and jaxlib: XLA's CPU kernels round differently elsewhere. A resume elsewhere is refused
(``folder.Claim``) unless ``allow_other_machine``; env.json and report.md then say from which
epoch on the rows are not bit-exact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from lossjax import checkpoint, distributed, engine, folder, optimizers, tables
from lossjax import config as config_lib
from lossjax.errors import ConfigError, LossjaxError, ResultsError
from lossjax.interrupts import STARTED, WRITING
from lossjax.losses import LOSSES
from lossjax.resolve import resolve_loss
from lossjax.stats import summarize

log = logging.getLogger("lossjax")


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


def group_members(members: list[engine.Member]) -> list[list[engine.Member]]:
    """Members that share one program, in order of first appearance: same hidden sizes, same
    use of weight decay, and either any of the built-in losses (one program holds them all)
    or the same user loss."""
    groups: dict[tuple, list[engine.Member]] = {}
    for m in members:
        losses_key = "builtin" if m.loss in LOSSES else m.loss
        groups.setdefault((m.hidden, m.weight_decay > 0, losses_key), []).append(m)
    return list(groups.values())


def group_losses(group: list[engine.Member], loss_fns: dict) -> tuple[list[str], list]:
    """The losses a group's program holds: every built-in one in the registry's order (so a
    member computes the same whichever losses its sweep names), or its one user loss."""
    names = list(LOSSES) if group[0].loss in LOSSES else [group[0].loss]
    return names, [loss_fns.get(n) or LOSSES[n] for n in names]


def _settings(cfg, first: engine.Member, num_classes) -> engine.TrainSettings:
    return engine.TrainSettings(
        hidden=first.hidden, num_classes=num_classes, activation=cfg.model.activation,
        init=cfg.model.init, dtype=cfg.model.dtype, optimizer=cfg.optimizer.name,
        momentum=cfg.optimizer.momentum, schedule=cfg.optimizer.schedule,
        batch_size=cfg.batch_size, epochs=cfg.epochs, block_size=cfg.block_size,
        weight_decay=first.weight_decay > 0,
        optimizer_args=tuple(cfg.optimizer.args.items()),
        schedule_args=tuple(cfg.optimizer.schedule_args.items()))


# ---- checks before anything is written ----------------------------------------------------


def check_loss(name: str, fn, num_classes: int, dtype) -> None:
    """Calls a loss once on a (2, K) batch, and traces its gradient, so that a loss with the
    wrong signature, output shape or dtype fails here, with its name, and not mid-sweep."""
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(2, num_classes)), dtype)
    labels = jax.nn.one_hot(jnp.arange(2) % num_classes, num_classes, dtype=dtype)
    where = f"losses: {name}"
    try:
        value = fn(logits, labels)
        jax.eval_shape(jax.grad(lambda z: jnp.mean(fn(z, labels))), logits)
    except Exception as e:  # the user's code: any failure is theirs to see, named
        msg = " ".join(str(e).split())[:160]
        raise ConfigError(
            f"{where}: calling it on a (2, {num_classes}) batch of logits and one-hot labels "
            f"raised {type(e).__name__}: {msg}; a loss takes (logits, labels) and returns one "
            "differentiable value per example") from None
    shape = getattr(value, "shape", None)
    if shape != (2,):
        raise ConfigError(f"{where}: returned shape {shape} for a (2, {num_classes}) batch; a "
                          "loss returns one value per example, shape (2,)")
    if not jnp.issubdtype(value.dtype, jnp.floating):
        raise ConfigError(f"{where}: returned {value.dtype} values; a loss returns floats")
    if not bool(jnp.all(jnp.isfinite(value))):
        raise ConfigError(f"{where}: returned non-finite values for ordinary logits (standard "
                          "normal); check the loss")


def _param_count(features: int, hidden, num_classes: int) -> int:
    sizes = [features, *hidden, num_classes]
    return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def _available_memory(device) -> int | None:
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB"


def check_resources(cfg, groups, features: int, num_classes: int, out: Path) -> None:
    """Refuses a sweep whose models cannot fit in memory, or whose checkpoints cannot fit on
    the disk, before it starts (a model too large to allocate would otherwise fail late, or
    hang)."""
    item = 8 if cfg.model.dtype == "float64" else 4  # parameters and optimizer state
    # Per-parameter optimizer state, in parameters (sgd 0, momentum 1, adam 2).
    slots = max((optimizers.state_slots(cfg.optimizer.name, cfg.optimizer.momentum,
                                        cfg.optimizer.args, g[0].weight_decay > 0,
                                        cfg.model.dtype) for g in groups), default=0)
    call = cfg.block_size * jax.device_count()
    share = jax.local_device_count() / jax.device_count()  # of the members, on this process
    worst_memory, worst_disk, worst_hidden = 0, 0, None
    for g in groups:
        per_member = _param_count(features, g[0].hidden, num_classes) * item
        padded = -(-len(g) // call) * call
        # Resident: every member's parameters and optimizer state; while a block trains, its
        # gradients and updates too. Activations are small next to them for an MLP.
        memory = share * (padded * per_member * (1 + slots) + call * per_member * 2)
        if memory > worst_memory:
            worst_memory, worst_hidden = memory, g[0].hidden
        worst_disk = max(worst_disk, len(g) * per_member * (1 + slots))
    available = _available_memory(jax.local_devices()[0])
    if available is not None and worst_memory > available:
        raise ConfigError(
            f"model.hidden: {list(worst_hidden)} needs about {_gb(worst_memory)} for its "
            f"members' parameters and optimizer state, and {_gb(available)} is available; "
            "use smaller layers, fewer members per hidden size, or a smaller block_size")
    # Old and new checkpoint side by side while one replaces the other, plus the table (a row is
    # under 150 bytes, and each epoch the table is rewritten beside its old copy).
    needed = 2 * worst_disk + sum(map(len, groups)) * cfg.epochs * 300
    free = shutil.disk_usage(out).free
    if needed > free:
        raise ResultsError(f"{out} has {_gb(free)} free and the sweep's checkpoints need about "
                           f"{_gb(needed)}; free some space or choose another output.dir")


# ---- progress ----------------------------------------------------------------------------


class Progress:
    """Member-epochs done: a bar on a terminal or in a notebook (``tqdm.auto`` draws a widget
    there), a log line per epoch otherwise (a file, a CI log), or nothing."""

    def __init__(self, total: int, enabled: bool, stream=None):
        self.total, self.enabled = total, enabled
        stream = stream or sys.stderr  # the one in use now, not at import
        self.bar = None
        if enabled and ("ipykernel" in sys.modules or stream.isatty()):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit=" member-epochs", file=stream, leave=True,
                            dynamic_ncols=True, mininterval=0.5)
        self.t0 = time.perf_counter()
        self.done0 = None

    def update(self, done: int, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(done - self.bar.n)
            return
        if self.done0 is None:  # ETA from work done in this process (resume-aware)
            self.done0, self.t0 = done, time.perf_counter()
            return
        elapsed = time.perf_counter() - self.t0
        rate = (done - self.done0) / elapsed if elapsed > 0 else 0
        eta = f"{(self.total - done) / rate:.0f}s" if rate else "?"
        log.info("%d/%d member-epochs  %.1fs  ETA %s  %s", done, self.total, elapsed, eta, text)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


# ---- the sweep ------------------------------------------------------------------------------


def load(config, overrides=()) -> config_lib.Config:
    """A validated config from a YAML path, a mapping shaped like the YAML, or a ``Config``,
    with ``overrides`` (``"key=value"`` strings, as ``--set`` takes) applied."""
    if isinstance(config, config_lib.Config):
        return (config_lib.parse_config(config_lib.config_to_dict(config), overrides)
                if overrides else config)
    if isinstance(config, dict):
        return config_lib.parse_config(config, overrides)
    if isinstance(config, str | os.PathLike):
        return config_lib.load_config(config, overrides)
    raise ConfigError(f"config: got {type(config).__name__}; give a YAML file's path, a mapping "
                      "shaped like the YAML, or a lossjax.config.Config")


def run(config, overrides=(), *, output_dir=None, resume: bool = False,
        overwrite: bool = False, progress: bool = True, invocation: dict | None = None,
        allow_other_machine: bool = False) -> Path:
    """Runs a sweep and returns its results folder, ``output_dir / name`` (``output_dir``
    defaults to the config's ``output.dir``).

    ``config`` and ``overrides`` as :func:`load` takes them. ``resume`` continues an
    interrupted sweep (a finished one is left as it is, with a warning); ``overwrite`` replaces
    a folder lossjax made. ``allow_other_machine`` lets ``resume`` continue on another CPU
    model or instruction set, or with other jax/jaxlib versions, than the sweep started with
    (refused otherwise). Problems raise :class:`~lossjax.errors.LossjaxError` subclasses
    with one-line messages, before anything is written where they can be found before.
    ``invocation`` (how the sweep was started) goes into ``env.json``.

    With several processes (see :mod:`lossjax.distributed`) every process runs this; process 0
    alone claims, writes and logs, and each step whose outcome may differ between processes
    is agreed in a ``distributed.stage`` so that they all go on, or all stop, together.
    """
    from lossjax import data  # heavy-ish: only once the config is known to be good

    distributed.initialize()  # before any array exists and before user code is imported
    writer = distributed.is_writer()
    if allow_other_machine and not resume:
        raise ConfigError("--allow-other-machine applies to --resume only; add --resume, or "
                          "leave it out to start the sweep here")
    with distributed.stage("reading the config and checking the losses"):
        cfg = load(config, overrides)
        if output_dir is not None:
            cfg = dataclasses.replace(cfg, output=dataclasses.replace(
                cfg.output, dir=os.fspath(output_dir)))
        if cfg.model.dtype == "float64":
            jax.config.update("jax_enable_x64", True)
        if cfg.block_size == "auto":  # the resolved config records the number used
            cfg = dataclasses.replace(cfg, block_size=engine.default_block_size())
        config_dict = config_lib.config_to_dict(cfg)
        num_classes = len(data.CLASS_NAMES[cfg.dataset.name])
        loss_fns = {name: resolve_loss(name) for name in cfg.losses}
        logit_dtype = jnp.float64 if cfg.model.dtype == "float64" else jnp.float32
        for name, fn in loss_fns.items():
            check_loss(name, fn, num_classes, logit_dtype)
    out = Path(cfg.output.dir) / cfg.name
    distributed.same_everywhere("config", _shared_config(config_dict),
                                "start every process with the same config file and --set values")

    claim = contextlib.nullcontext()
    try:
        with distributed.stage("claiming the results folder", (folder.AlreadyComplete,)):
            if writer:
                folder.check_path(out)
                claim = folder.Claim(out, config_dict, resume=resume, overwrite=overwrite,
                                      allow_other_machine=allow_other_machine)
    except folder.AlreadyComplete as done:
        if writer:
            log.warning("%s; nothing changed.", done)
        return out
    STARTED.set()  # from here an interrupt leaves a folder that --resume continues
    groups = group_members(expand_members(cfg))  # the config alone decides them
    with claim:
        resuming = _agree_on_folder(out, claim, writer)
        if writer and resuming and claim.machine_note:
            log.warning("%s", claim.machine_note)
        with distributed.stage("checking the checkpoints against epochs.csv"):
            if writer and resuming:
                checkpoint.check_resumable(out, groups, cfg.epochs)
        with distributed.stage("loading the data"):
            ds = data.preprocess(
                data.load(cfg.dataset.name, data_dir=cfg.dataset.data_dir,
                          val_size=cfg.dataset.val_size, split_seed=cfg.dataset.split_seed),
                standardize=cfg.dataset.standardize)
            config_lib.check_batch_size(cfg, len(ds.x_train))
            check_schedule(cfg, len(ds.x_train))
            check_resources(cfg, groups, ds.x_train.shape[1], ds.num_classes, out)
        distributed.same_everywhere("data", lambda: _data_digests(ds), "give every host the same "
                                    "copy of the dataset (lossjax data info shows each one's)")
        mesh = engine.make_mesh()
        with distributed.stage("starting the results folder"):
            if writer:
                env = _provenance(out, resuming, ds.meta, {
                    **(invocation or {}), "overrides": list(overrides), "resume": resume,
                    "config_path": (os.fspath(config) if isinstance(config, str | os.PathLike)
                                    else None)}, n_groups=len(groups), epochs=cfg.epochs)
                if resuming:
                    _note_other_devices(out, env)
                with WRITING:
                    if resuming:  # Claim.start leaves a resumed folder's files as they are
                        folder.write_json(out / "env.json", env)
                    claim.start(config_dict, env)
        try:
            table = train(cfg, ds, groups, loss_fns, mesh, out, resume=resuming,
                          progress=progress and writer, writer=writer)
        except LossjaxError:
            raise
        except Exception as e:  # e.g. a user loss that fails only when compiled
            msg = " ".join(str(e).split())[:200]
            raise LossjaxError(f"training stopped with {type(e).__name__}: {msg}; finished "
                               f"epochs are kept in {out} (--resume continues)") from e
        if not writer:
            return out
        summary = summarize(table, cfg.eval.target_accuracy)
        from lossjax import plots, report

        with WRITING:
            folder.write_table(out / "summary.csv", summary)
            plots.plot_results(out)
            report.write_report(out)
            claim.finish()
    log.info("results: %s (epochs.csv, summary.csv, plots/, report.md)", out)
    return out


def check_schedule(cfg, n_train: int) -> None:
    """The schedule's step counts against the run's real length (the config alone does not know
    the dataset's size): a warmup as long as the run is refused before anything is written."""
    steps = cfg.epochs * (n_train // cfg.batch_size)
    try:
        optimizers.check_schedule(cfg.optimizer.schedule, dict(cfg.optimizer.schedule_args), steps)
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"optimizer.schedule_args: {dict(cfg.optimizer.schedule_args)} does not fit a run "
            f"of {steps} steps ({cfg.epochs} epochs x {n_train // cfg.batch_size} batches): "
            f"{' '.join(str(e).split())[:160]}") from None


def _provenance(out: Path, resuming: bool, data_meta: dict, invocation: dict, n_groups: int,
                epochs: int) -> dict:
    """env.json: a new record, or a resumed sweep's record with this start added, and the
    epoch each group resumes after (its checkpoint's, as train() finds it: the folder is
    locked), which is where rows stop being bit-exact if this is another machine."""
    from lossjax import provenance

    if not resuming:
        return provenance.record(jax.devices(), data_meta, invocation)
    try:
        env = tables.read_env(out) or {}
    except ResultsError:  # unreadable: start the record again rather than stop the sweep
        env = {}
    done = [checkpoint.checkpoint_epoch(out, gid) for gid in range(n_groups)]
    return provenance.add_resume(env, invocation, devices=jax.devices(),
                                 resumed_after_epochs=done, epochs=epochs)


def _shared_config(config_dict: dict) -> dict:
    """What every process's resolved config must agree on: all of it but the paths that are
    each host's own (its copy of the data; the output folder, which the folder check covers
    with its own message)."""
    shared = {k: dict(v) if isinstance(v, dict) else v for k, v in config_dict.items()}
    shared.get("output", {}).pop("dir", None)
    shared.get("dataset", {}).pop("data_dir", None)
    return shared


def _data_digests(ds) -> dict:
    """A checksum of each split as it will be trained on, whichever file or cache it came
    from."""
    return {split: distributed.digest(getattr(ds, "x_" + split), getattr(ds, "y_" + split))
            for split in ("train", "val", "test")}


def _note_other_devices(out: Path, env: dict) -> None:
    """Says on the command line, not only in report.md, that a resume runs on other devices
    than the start did (the members are then spread, and their programs compiled,
    otherwise)."""
    start, now = env.get("devices"), jax.devices()
    if not isinstance(start, list) or not start:
        return
    kind = env.get("device_kind")
    if (len(start), kind) != (len(now), now[0].device_kind):
        log.warning("--resume: %s was started on %d %s device(s) and continues on %d %s "
                    "device(s); report.md notes it beside the results", out, len(start),
                    kind or "?", len(now), now[0].device_kind)


def _agree_on_folder(out: Path, claim, writer: bool) -> bool:
    """Process 0's decision to resume, on every process; and, with several processes, proof
    that they all see the folder process 0 claimed (it must be on a filesystem they share)."""
    token = np.frombuffer(os.urandom(16), np.int32)
    if writer:
        claim.mark(token.tobytes().hex())
    token = distributed.broadcast(token)  # process 0's, once it is in the folder
    with distributed.stage("checking that every process sees the results folder"):
        marker = out / folder.LOCK
        if not writer and not (marker.exists()
                               and token.tobytes().hex() in marker.read_text()):
            raise ResultsError(
                f"{out} is not the folder process 0 claimed, as seen from "
                f"{platform.node()}: output.dir must be a folder every process shares (a "
                "network filesystem) under the same path")
    return bool(distributed.broadcast(np.int32(writer and claim.resuming)))


def train(cfg, ds, groups, loss_fns, mesh, out: Path, resume: bool, progress: bool,
          writer: bool) -> pd.DataFrame:
    """Trains every group to ``cfg.epochs``, writing the table and a checkpoint after each
    epoch. Returns the full table."""
    table, ckpts, done = _resume_point(out, groups, resume)
    frames = [table] if len(table) else []
    # One clock for the sweep, its groups run one after another; a resumed sweep goes on from
    # the last time its kept rows recorded.
    t0 = time.perf_counter() - (float(table["wall_time"].max()) if len(table) else 0.0)

    total = sum(len(g) for g in groups) * cfg.epochs
    data = _group_data(cfg, ds)
    train_acc = "train" in cfg.eval.splits
    tensorboard = _tensorboard(cfg, out, writer)
    with Progress(total, progress) as bar, tensorboard as events:
        bar.update(_member_epochs(groups, done), "")
        for gid, members in enumerate(groups):
            if done[gid] >= cfg.epochs:
                continue
            group = engine.Group(_settings(cfg, members[0], ds.num_classes), members,
                                 *group_losses(members, loss_fns), data, mesh)
            start_epoch, state = _start_state(group, ckpts.pop(gid), out, gid)
            static = tables.member_keys(members)
            for epoch in range(start_epoch, cfg.epochs):
                state, metrics = group.train_epoch(state, epoch)
                last = epoch + 1 == cfg.epochs
                evals = group.evaluate(state) if last or (epoch + 1) % cfg.eval.every == 0 else {}
                rows = _epoch_rows(static, epoch + 1, metrics, evals, train_acc, t0)
                frames.append(rows)
                table = pd.concat(frames, ignore_index=True)
                _save_epoch(out, gid, epoch + 1, group, state, table, rows, events, writer)
                bar.update(_member_epochs(groups, done, gid, epoch + 1),
                           _progress_text(gid, len(groups), epoch + 1, cfg.epochs, metrics,
                                          evals))
            done[gid] = cfg.epochs
    return table.sort_values(["member", "epoch"], ignore_index=True)


def _resume_point(out: Path, groups, resume: bool) -> tuple[pd.DataFrame, dict, dict]:
    """What training goes on from: the rows a checkpoint stands behind, each group's checkpoint
    (None for a group starting afresh), and each group's finished epochs, agreed by every
    process. All empty or 0 when not resuming."""
    table = (tables.read_epochs(out, resume=True) if resume
             else pd.DataFrame(columns=tables.EPOCHS_COLUMNS))
    ckpts = {gid: checkpoint.load_checkpoint(out, gid, len(g)) if resume else None
             for gid, g in enumerate(groups)}
    done = {gid: c[0] if c else 0 for gid, c in ckpts.items()}
    with distributed.stage("reading the checkpoints"):
        agreed = distributed.broadcast(np.array(list(done.values()), np.int32))
        if list(agreed) != list(done.values()):
            raise ResultsError(f"{out}/checkpoints changed while the sweep was resuming; "
                               "rerun with --resume")
    # Keep only rows that a checkpoint stands behind: the table may be one epoch ahead of the
    # checkpoint if the process died between the two writes.
    if len(table):
        gid_of = {m.index: gid for gid, g in enumerate(groups) for m in g}
        keep = [row.epoch <= done[gid_of[row.member]] for row in table.itertuples()]
        table = table[keep]
    return table, ckpts, done


def _group_data(cfg, ds) -> tuple:
    """The arrays every group is built on. A split that is not asked for is not put on the
    device, so it is never evaluated."""
    test = slice(None) if "test" in cfg.eval.splits else slice(0)
    return ds.x_train, ds.y_train, ds.x_val, ds.y_val, ds.x_test[test], ds.y_test[test]


def _tensorboard(cfg, out: Path, writer: bool):
    """Process 0's TensorBoard log where the config asks for one, else a context of None."""
    if writer and cfg.output.tensorboard:
        from lossjax.tensorboard import TensorBoardLog  # opt-in: loaded only when asked for

        return TensorBoardLog(out / "tensorboard")
    return contextlib.nullcontext()


def _start_state(group: engine.Group, ckpt, out: Path, gid: int) -> tuple[int, list]:
    """The epoch a group starts from and its state there: its checkpoint's, or a new one."""
    if not ckpt:
        return 0, group.init_state()
    start_epoch, leaves = ckpt
    try:
        return start_epoch, group.state_from_host(leaves)
    except ValueError:
        raise ResultsError(f"{out}/checkpoints/group{gid}.json does not match this sweep (made "
                           "by another lossjax version?); start it over with --overwrite") from None


def _epoch_rows(static: pd.DataFrame, epoch: int, metrics: dict, evals: dict, train_acc: bool,
                t0: float) -> pd.DataFrame:
    """A group's rows of epochs.csv for one epoch; NaN where a value was not measured (no
    evaluation this epoch, a split not asked for)."""
    nan = np.full(len(static), math.nan)
    return tables.normalize(static.assign(
        epoch=epoch,
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
    ))


def _save_epoch(out: Path, gid: int, epoch: int, group: engine.Group, state, table: pd.DataFrame,
                rows: pd.DataFrame, events, writer: bool) -> None:
    """After a group's epoch: the table, then every process's shard of the checkpoint, then
    (once all are saved) the checkpoint committed."""
    # The table first: on resume, rows beyond the checkpoint are dropped.
    if writer:
        with WRITING:
            folder.write_table(out / "epochs.csv", table)
            if events is not None:  # this epoch's rows only, before the checkpoint
                events.write(rows)
    positions, leaves = group.local_state(state)
    with WRITING:
        checkpoint.save_shard(out, gid, epoch, distributed.process_index(), positions, leaves)
    distributed.barrier(f"lossjax checkpoint {gid} {epoch}")
    if writer:
        with WRITING:
            checkpoint.commit_checkpoint(out, gid, epoch, jax.process_count(),
                                      rows=tables.rows_digest(table))


def _member_epochs(groups, done: dict, gid: int | None = None, epochs: int = 0) -> int:
    """Member-epochs finished: each group's ``done`` epochs, group ``gid``'s taken as
    ``epochs``."""
    return sum((epochs if g == gid else done[g]) * len(m) for g, m in enumerate(groups))


def _progress_text(gid: int, n_groups: int, epoch: int, epochs: int, metrics: dict,
                   evals: dict) -> str:
    best = np.nanmax(evals["val_acc"]) if "val_acc" in evals else math.nan
    n_div = int(metrics["diverged"].sum())
    return (f"group {gid + 1}/{n_groups} epoch {epoch}/{epochs} best val acc {best:.3f} "
            f"diverged {n_div}")
