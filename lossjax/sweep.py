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

The module is the sweep's steps in order, one function each, which is why it passes 450 lines;
the checks before training are in ``lossjax.preflight``, the progress bar in ``lossjax.log``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import math
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from lossjax import (
    checkpoint,
    compile_cache,
    distributed,
    engine,
    folder,
    plan,
    preflight,
    provenance,
    search,
    tables,
)
from lossjax import config as config_lib
from lossjax.errors import ConfigError, LossjaxError, ResultsError, one_line
from lossjax.interrupts import STARTED, WRITING
from lossjax.log import Progress
from lossjax.losses import LOSSES, without_params
from lossjax.resolve import family_loss, has_params, loss_params, resolve_loss
from lossjax.stats import summarize
from lossjax.validate import path_string

log = logging.getLogger("lossjax")


def expand_members(cfg) -> list[engine.Member]:
    """The sweep's product, in a fixed order: hidden × optimizer × loss × learning rate ×
    weight decay × init scale × seed (with one optimizer, the order and ids from before
    optimizers were swept). Member ids are positions in this list."""
    combos = [
        (hidden, opt, loss, lr, wd, scale, seed)
        for hidden in cfg.model.hidden
        for opt in cfg.optimizer.names
        for loss in cfg.losses
        for lr, wd, scale, seed in itertools.product(
            config_lib.learning_rates(cfg, loss, opt), cfg.optimizer.weight_decay,
            cfg.model.init_scale, cfg.seeds)
    ]
    channels = cfg.model.channels if cfg.model.kind == "cnn" else ()
    return [engine.Member(i, loss, float(lr), float(wd), float(scale), int(seed), tuple(hidden),
                          loss_params(loss), opt, cfg.model.kind, channels)
            for i, (hidden, opt, loss, lr, wd, scale, seed) in enumerate(combos)]


def group_members(members: list[engine.Member]) -> list[list[engine.Member]]:
    """Members that share one program, in order of first appearance: same model (kind, channels,
    hidden sizes), same optimizer, same use of weight decay, and either any of the built-in
    losses (one program holds them all), any setting of one loss with parameters (its
    parameters an array per member; a variant of it is another loss), or the same other
    loss."""
    groups: dict[tuple, list[engine.Member]] = {}
    for m in members:
        losses_key = "builtin" if m.loss in LOSSES else _program_loss(m.loss)
        groups.setdefault((m.hidden, m.optimizer, m.weight_decay > 0, losses_key, m.kind,
                           m.channels), []).append(m)
    return list(groups.values())


def group_losses(group: list[engine.Member], loss_fns: dict) -> tuple[list[str], list]:
    """The losses a group's program holds: every built-in one in the registry's order (so a
    member computes the same whichever losses its sweep names), or its one other loss; a loss
    with parameters under its name without them (``losses.without_params``), taking them as
    an array (``resolve.family_loss``). The built-in program holds none of those: its members'
    bits stay what they were, and a parameterized member pays for no other loss's branch."""
    if group[0].loss in LOSSES:
        names = list(LOSSES)
        return names, [loss_fns.get(n) or LOSSES[n] for n in names]
    name = _program_loss(group[0].loss)
    return [name], [family_loss(name) if has_params(name) else loss_fns[name]]


def _program_loss(loss: str) -> str:
    """The loss a member's program is built for: its name without parameters where it has
    any (one program serves every setting), else the loss itself."""
    return without_params(loss) if has_params(loss) else loss


def _settings(cfg, first: engine.Member, num_classes) -> engine.TrainSettings:
    return engine.TrainSettings(
        hidden=first.hidden, num_classes=num_classes, activation=cfg.model.activation,
        init=cfg.model.init, dtype=cfg.model.dtype, optimizer=first.optimizer,
        momentum=cfg.optimizer.momentum, schedule=cfg.optimizer.schedule,
        batch_size=cfg.batch_size, epochs=cfg.epochs, block_size=cfg.block_size,
        weight_decay=first.weight_decay > 0,
        optimizer_args=tuple(cfg.optimizer.args_of(first.optimizer).items()),
        schedule_args=tuple(cfg.optimizer.schedule_args.items()),
        kind=first.kind, channels=first.channels)


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
    distributed.initialize()  # before any array exists and before user code is imported
    compile_cache.enable()  # before the first compile; a folder it cannot use is one line
    with contextlib.ExitStack() as scope:
        return _run(scope, config, overrides, output_dir, resume, overwrite, progress,
                    invocation, allow_other_machine)


def _run(scope, config, overrides, output_dir, resume, overwrite, progress, invocation,
         allow_other_machine) -> Path:
    writer = distributed.is_writer()
    if allow_other_machine and not resume:
        raise ConfigError("--allow-other-machine applies to --resume only; add --resume, or "
                          "leave it out to start the sweep here")
    with distributed.stage("reading the config and checking the losses"):
        cfg, config_dict, loss_fns = _prepare(scope, config, overrides, output_dir)
        preflight.check_member_count(cfg)
    out = Path(cfg.output.dir) / cfg.name
    distributed.same_everywhere("config", _shared_config(config_dict),
                                "start every process with the same config file and --set values")
    claim = _claim(out, config_dict, writer, resume=resume, overwrite=overwrite,
                   allow_other_machine=allow_other_machine)
    if claim is None:  # already complete: left as it is
        return out
    STARTED.set()  # from here an interrupt leaves a folder that --resume continues
    grid = expand_members(cfg)  # the config alone decides them; later stages the rows
    with claim:
        resuming = _agree_on_folder(out, claim, writer)
        if writer and resuming and claim.machine_note:
            log.warning("%s", claim.machine_note)
        with distributed.stage("checking the checkpoints against epochs.csv"):
            if writer and resuming:
                _check_resumable(cfg, grid, out)
        ds = _load_data(cfg, grid, out)
        mesh = engine.make_mesh()
        with distributed.stage("starting the results folder"):
            if writer:
                _start_folder(out, claim, config_dict, resuming, ds.meta,
                              _planned_groups(cfg, grid, out, resuming), cfg.epochs,
                              {**(invocation or {}), "overrides": list(overrides),
                               "resume": resume, "config_path": _config_path(config)},
                              _model_record(cfg, grid, ds))
        table, planned = _train_or_say_why(cfg, ds, grid, loss_fns, mesh, out, resuming,
                                           progress and writer, writer)
        if not writer:
            return out
        _finish(out, claim, table, planned, cfg)
    log.info("results: %s (epochs.csv, summary.csv, plots/, report.md)", out)
    return out


def _prepare(scope, config, overrides, output_dir) -> tuple:
    """The validated config (with ``block_size: auto`` resolved, which the resolved config
    records), its dict, and each loss resolved and called once on a tiny batch. JAX's 64-bit
    mode is set to the config's dtype for the rest of ``scope`` (the sweep) only, so a float64
    sweep leaves a notebook's later float32 runs as they were, and a float32 sweep runs the
    same whatever the caller set."""
    from lossjax import data  # lazy: pandas and the data registry, once the config is good

    cfg = load(config, overrides)
    if output_dir is not None:  # checked as output.dir is in a config
        output_dir = path_string(os.fspath(output_dir), "output_dir", "a folder path")
        cfg = dataclasses.replace(cfg, output=dataclasses.replace(
            cfg.output, dir=output_dir))
    scope.enter_context(jax.enable_x64(cfg.model.dtype == "float64"))
    if cfg.block_size == "auto":
        cfg = dataclasses.replace(cfg, block_size=engine.default_block_size())
    num_classes = data.planned_num_classes(cfg.dataset)
    loss_fns = {name: resolve_loss(name) for name in cfg.losses}
    logit_dtype = jnp.float64 if cfg.model.dtype == "float64" else jnp.float32
    for name, fn in loss_fns.items():
        preflight.check_loss_exits(name, num_classes, cfg.model.dtype if
                                   cfg.model.dtype == "float64" else "float32")
        preflight.check_loss(name, fn, num_classes, logit_dtype)
    return cfg, config_lib.config_to_dict(cfg), loss_fns


def _claim(out: Path, config_dict: dict, writer: bool, **how):
    """Process 0's claim on the results folder (a context that holds its lock; nothing on the
    other processes), or None where the folder is already complete (said, and left alone)."""
    claim = contextlib.nullcontext()
    try:
        with distributed.stage("claiming the results folder", (folder.AlreadyComplete,)):
            if writer:
                folder.check_path(out)
                claim = folder.Claim(out, config_dict, **how)
    except folder.AlreadyComplete as done:
        if writer:
            log.warning("%s; nothing changed.", done)
        return None
    return claim


def _check_resumable(cfg, grid, out: Path) -> None:
    """``checkpoint.check_resumable`` on the groups the folder's rows plan (``lossjax.plan``:
    the grid's, and those of any stage its rows decided)."""
    rows = tables.read_epochs(out, resume=True)
    planned = plan.stages(cfg, grid, rows)
    checkpoint.check_resumable(out, program_groups(planned), cfg.epochs,
                               (lambda r: plan.stops(cfg, planned, r))
                               if cfg.search.method == "race" else None)


def _planned_groups(cfg, grid, out: Path, resuming: bool) -> int:
    """How many program groups the folder's rows plan so far (the grid's, when starting)."""
    return len(program_groups(plan.stages(cfg, grid, _rows_on_disk(out, resuming))))


def program_groups(planned) -> list[list[engine.Member]]:
    """The programs that train the planned stages, stage after stage (``group_members`` of
    each); a group's id is its position here."""
    return [g for stage in planned for g in group_members(list(stage.members))]


def _load_data(cfg, grid, out: Path):
    """The dataset, checked against the config's batch size and schedule and the machine's
    memory and disk (for every member the stages could add too), and proven the same on every
    process."""
    from lossjax import data  # lazy: see _prepare

    groups = group_members(grid)
    if extra := plan.max_added(cfg, grid):  # as one more group of the largest model's members
        groups.append([max(grid, key=lambda m: sum(m.hidden))] * extra)

    with distributed.stage("loading the data"):
        raw = data.load(cfg.dataset.name, data_dir=cfg.dataset.data_dir,
                        val_size=cfg.dataset.val_size, split_seed=cfg.dataset.split_seed,
                        path=cfg.dataset.path, classes=cfg.dataset.classes,
                        subset_seed=cfg.dataset.subset_seed, per_class=cfg.dataset.per_class,
                        label=cfg.dataset.label)
        ds = model_input(cfg.model.kind, data.preprocess(raw, standardize=cfg.dataset.standardize),
                         raw.x_train.shape[1:])
        config_lib.check_batch_size(cfg, len(ds.x_train))
        preflight.check_schedule(cfg, len(ds.x_train))
        preflight.check_model(cfg, ds.x_train.shape[1:], ds.num_classes)
        preflight.check_resources(cfg, groups, ds.x_train.shape[1:], ds.num_classes, out,
                                  reserve=bool(extra))
    distributed.same_everywhere("data", lambda: _data_digests(ds), "give every host the same "
                                "copy of the dataset (lossjax data info shows each one's)")
    return ds


def model_input(kind: str, ds, image_shape: tuple[int, ...]):
    """``ds`` (preprocessed: flat features) as ``kind`` takes it: the MLP flat, as ever (its bits
    do not change); the CNN and a user's module images (N, H, W, C), grayscale with one
    channel. Reshaped views: no copy."""
    if kind == "mlp":
        return ds
    shape = (*image_shape, 1) if len(image_shape) == 2 else tuple(image_shape)
    return dataclasses.replace(ds, **{f"x_{split}": getattr(ds, f"x_{split}").reshape(-1, *shape)
                                      for split in ("train", "val", "test")})


def _config_path(config) -> str | None:
    return os.fspath(config) if isinstance(config, str | os.PathLike) else None


def _model_record(cfg, grid, ds) -> dict:
    """env.json's ``model``: the kind, the CNN's channels, one example's shape as the model
    takes it, and the parameters per member for each hidden-size list (for the report, which
    reads the folder without JAX)."""
    shape = tuple(ds.x_train.shape[1:])
    counts = {"-".join(map(str, h)) or "linear": preflight._param_count(
        shape if cfg.model.kind != "mlp" else shape[0], h, ds.num_classes, cfg)
        for h in dict.fromkeys(m.hidden for m in grid)}
    return {"kind": cfg.model.kind, "channels": list(cfg.model.channels)
            if cfg.model.kind == "cnn" else [], "input_shape": list(shape), "parameters": counts}


def _start_folder(out: Path, claim, config_dict: dict, resuming: bool, data_meta: dict,
                  n_groups: int, epochs: int, invocation: dict, model: dict) -> None:
    """Writes env.json (a new record, or this start added to a resumed one) and lets the claim
    write the folder's first files (a resumed folder's stay as they are)."""
    env = _provenance(out, resuming, data_meta, invocation, n_groups=n_groups, epochs=epochs)
    if not resuming:
        env["model"] = model
        if model["kind"].startswith("module:"):
            env["model"] = {**model, "module": provenance.model_module(model["kind"])}
    if resuming:
        _note_other_devices(out, env)
    with WRITING:
        if resuming:
            folder.write_json(out / "env.json", env)
        claim.start(config_dict, env)


def _train_or_say_why(cfg, ds, grid, loss_fns, mesh, out: Path, resuming: bool,
                      progress: bool, writer: bool) -> tuple[pd.DataFrame, list]:
    """:func:`train`, with any failure that is not lossjax's own (a user loss that fails only
    when compiled, say) turned into one line that says the finished epochs are kept."""
    try:
        return train(cfg, ds, grid, loss_fns, mesh, out, resume=resuming, progress=progress,
                     writer=writer)
    except LossjaxError:
        raise
    except Exception as e:
        msg = one_line(e, 200)
        raise LossjaxError(f"training stopped with {type(e).__name__}: {msg}; finished "
                           f"epochs are kept in {out} (--resume continues)") from e


def _finish(out: Path, claim, table: pd.DataFrame, planned, cfg) -> None:
    """summary.csv (of a race: from the members it did not drop), a race's stops.csv, the
    members later stages added (added.csv), the plots and report.md from the finished table;
    then the folder is marked complete."""
    from lossjax import plots, report  # lazy: matplotlib, only once training is done

    if ends := plan.range_ends(cfg, planned, table):
        log.warning("search.extend: no rate added past %s: outside float32's normal range, "
                    "which the config refuses", "; ".join(ends))
    stopped = plan.stops(cfg, planned, table)
    summary = summarize(table, cfg.eval.target_accuracy, dropped=search.dropped(stopped),
                        confirm=plan.confirming(planned))
    with WRITING:
        if cfg.search.method == "race":
            folder.record_written(out, ["stops.csv"])  # --overwrite removes it then, only
            folder.write_table(out / "stops.csv", search.stops_table(stopped))
        if cfg.search.extend or cfg.confirm.seeds:
            folder.record_written(out, ["added.csv"])
            folder.write_table(out / "added.csv", plan.added_table(planned))
        folder.write_table(out / "summary.csv", summary)
        plots.plot_results(out)
        report.write_report(out)
        claim.finish()


def _provenance(out: Path, resuming: bool, data_meta: dict, invocation: dict, n_groups: int,
                epochs: int) -> dict:
    """env.json: a new record, or a resumed sweep's record with this start added, and the
    epoch each group resumes after (its checkpoint's, as train() finds it: the folder is
    locked), which is where rows stop being bit-exact if this is another machine."""
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


def train(cfg, ds, grid, loss_fns, mesh, out: Path, resume: bool, progress: bool,
          writer: bool) -> tuple[pd.DataFrame, list]:
    """Trains every planned group to ``cfg.epochs``, writing the table and a checkpoint after
    each epoch; the stages after the grid's (``lossjax.plan``) are planned from the rows as the
    ones before them finish. Returns the full table and the stages."""
    planned = plan.stages(cfg, grid, _rows_on_disk(out, resume))
    table, ckpts, done = _resume_point(out, program_groups(planned), resume)
    planned = plan.stages(cfg, grid, table)  # from the rows the checkpoints stand behind
    groups = program_groups(planned)
    finals = _kept_finals(out, groups, done, cfg, resume)
    # One clock for the sweep, its groups run one after another; a resumed sweep goes on from
    # the last time its kept rows recorded.
    t0 = time.perf_counter() - (float(table["wall_time"].max()) if len(table) else 0.0)
    with Progress(_all_epochs(groups, cfg), progress) as bar, \
            _tensorboard(cfg, out, writer) as events:
        run = _Run(cfg, _group_data(cfg, ds), ds.num_classes, loss_fns, mesh, out, t0, events,
                   bar, writer, frames=[table] if len(table) else [], finals=finals)
        bar.update(_member_epochs(groups, done), "")
        gid = 0
        while gid < len(groups):
            if done.get(gid, 0) < cfg.epochs:
                table = run.group(gid, groups, planned, ckpts.pop(gid, None), table, done)
                done[gid] = cfg.epochs
            gid += 1
            if gid == len(groups):  # the stages so far are finished: the rows may plan more
                planned = plan.stages(cfg, grid, table)
                if len(more := program_groups(planned)) > len(groups):
                    groups = more
                    bar.grow(_all_epochs(groups, cfg))
                    if writer:
                        log.info("%s", _stage_text(planned[-1]))
    return table.sort_values(["member", "epoch"], ignore_index=True), planned


@dataclasses.dataclass
class _Run:
    """What every group of a sweep trains with, and the rows so far (``frames``; ``finals``:
    final.csv's)."""

    cfg: config_lib.Config
    data: tuple
    num_classes: int
    loss_fns: dict
    mesh: object
    out: Path
    t0: float
    events: object
    bar: Progress
    writer: bool
    frames: list
    finals: pd.DataFrame

    def group(self, gid: int, groups, planned, ckpt, table: pd.DataFrame,
              done: dict) -> pd.DataFrame:
        """Trains group ``gid`` from its checkpoint (or from scratch) to the last epoch;
        returns the table with its rows."""
        cfg, out, members = self.cfg, self.out, groups[gid]
        group = engine.Group(_settings(cfg, members[0], self.num_classes), members,
                             *group_losses(members, self.loss_fns), self.data, self.mesh)
        start_epoch, state = _start_state(group, ckpt, out, gid)
        static = tables.member_keys(members)
        train_acc = "train" in cfg.eval.splits
        # A race's members still training, decided from the rows alone (so a resume, and every
        # process, decides the same); None: a grid, every member every epoch.
        active = _still_training(cfg, planned, members, table)
        for epoch in range(start_epoch, cfg.epochs):
            state, metrics = group.train_epoch(state, epoch, active)
            last = epoch + 1 == cfg.epochs
            evals = (group.evaluate(state, active, final=last)
                     if last or (epoch + 1) % cfg.eval.every == 0 else {})
            rows = _epoch_rows(static, epoch + 1, metrics, evals, train_acc, self.t0)
            if active is not None:  # a stopped member has no rows after its stop
                rows = rows[active].reset_index(drop=True)
            self.frames.append(rows)
            table = pd.concat(self.frames, ignore_index=True)
            if last and "test_bins" in evals:  # final.csv gains this group's rows
                self.finals = _joined(self.finals, _final_rows(members, evals, active))
            _save_epoch(out, gid, epoch + 1, group, state, table, rows, self.events,
                        self.writer, self.finals if last else None)
            text = _progress_text(gid, len(groups), epoch + 1, cfg.epochs, metrics, evals)
            if active is not None:
                before, active = active, _still_training(cfg, planned, members, table)
                text += f" training {int(active.sum())}/{len(members)}"
                if self.writer and (before & ~active).any():
                    log.info("epoch %d: %s", epoch + 1, _stopped_text(members, before, active))
            self.bar.update(_member_epochs(groups, done, gid, epoch + 1), text)
        return table


def _all_epochs(groups, cfg) -> int:
    return sum(map(len, groups)) * cfg.epochs


def _rows_on_disk(out: Path, resume: bool) -> pd.DataFrame:
    return (tables.read_epochs(out, resume=True) if resume
            else pd.DataFrame(columns=tables.EPOCHS_COLUMNS))


def _stage_text(stage) -> str:
    """What a stage after the grid's adds, for the log."""
    rates = sorted({m.learning_rate for m in stage.members})
    losses = sorted({m.loss for m in stage.members})
    what = ("confirmation seeds at the chosen rates" if stage.kind == plan.CONFIRM
            else "rates past a grid edge")
    return (f"next stage: {len(stage.members)} member(s), {what} ({', '.join(losses)}; "
            f"rates {', '.join(f'{r:g}' for r in rates)})")


def _still_training(cfg, planned, members, table: pd.DataFrame) -> np.ndarray | None:
    """Per member of a group, whether a race still trains it after the rows in ``table``;
    None for a grid."""
    if cfg.search.method != "race":
        return None
    stopped = plan.stops(cfg, planned, table)
    return np.array([m.index not in stopped for m in members], bool)


def _stopped_text(members, before: np.ndarray, after: np.ndarray) -> str:
    """What a race's decision after an epoch stopped, for the log: per loss, the rates."""
    gone = [m for m, b, a in zip(members, before, after, strict=True) if b and not a]
    by_loss: dict[str, set] = {}
    for m in gone:
        by_loss.setdefault(m.loss, set()).add(m.learning_rate)
    what = "; ".join(f"{loss} at {', '.join(f'{r:g}' for r in sorted(rates))}"
                     for loss, rates in by_loss.items())
    return (f"the race stopped {len(gone)} member(s) ({what}); {int(after.sum())} of "
            f"{len(members)} still training")


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
        from lossjax.tensorboard import TensorBoardLog, name_columns  # opt-in: only when asked

        folder.record_written(out, ["tensorboard"])
        return TensorBoardLog(out / "tensorboard", name_columns(len(cfg.optimizer.names) > 1))
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
        **{c: evals.get(c, nan) for c in tables.CALIBRATION_COLUMNS},
        diverged=metrics["diverged"].astype(bool),
        wall_time=round(time.perf_counter() - t0, 3),
    ))


def _save_epoch(out: Path, gid: int, epoch: int, group: engine.Group, state, table: pd.DataFrame,
                rows: pd.DataFrame, events, writer: bool, finals: pd.DataFrame | None = None
                ) -> None:
    """After a group's epoch: the table (at a group's last epoch also ``finals``, final.csv),
    then every process's shard of the checkpoint, then (once all are saved) the checkpoint
    committed."""
    # The tables first: on resume, rows beyond the checkpoint are dropped (_kept_finals).
    if writer:
        with WRITING:
            folder.write_table(out / "epochs.csv", table)
            if finals is not None and len(finals):
                folder.write_table(out / "final.csv", finals)
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


def _final_rows(members, evals: dict, active) -> pd.DataFrame:
    """final.csv's rows (:data:`lossjax.tables.FINAL`) of a group's last epoch, from its test
    evaluation with temperature scaling: per member still training, per class its count and
    accuracy, then its reliability bins before and after scaling (those only where it did not
    diverge)."""
    def ratio(a, b):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(b > 0, a / b, np.nan).astype(np.float32)

    frames = []
    for i, m in enumerate(members):
        if active is not None and not active[i]:
            continue
        classes = evals["test_classes"][i]
        parts = [("class", classes[0], np.full(len(classes[0]), np.nan, np.float32),
                  ratio(classes[1], classes[0]))]
        for kind, key in (("reliability", "test_bins"), ("reliability_ts", "test_bins_ts")):
            bins = evals.get(key)
            if bins is not None and np.isfinite(bins[i]).all():
                parts.append((kind, bins[i][0], ratio(bins[i][1], bins[i][0]),
                              ratio(bins[i][2], bins[i][0])))
        frames += [pd.DataFrame({"member": np.int64(m.index), "kind": kind,
                                 "index": np.arange(len(count), dtype=np.int64),
                                 "count": count.astype(np.int64), "confidence": conf,
                                 "accuracy": acc})
                   for kind, count, conf, acc in parts]
    return _joined(pd.DataFrame(columns=tables.FINAL_COLUMNS), *frames)


def _joined(*frames: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``frames`` in order, typed as :data:`lossjax.tables.FINAL` (an empty frame's
    object columns would otherwise turn the others' numbers into objects)."""
    full = [f for f in frames if len(f)]
    if not full:
        return frames[0].iloc[:0]
    return pd.concat(full, ignore_index=True).astype(
        {c: np.int64 if kind == "int" else np.float32
         for c, kind in tables.FINAL.items() if kind in ("int", "float32")})


def _kept_finals(out: Path, groups, done: dict, cfg, resume: bool) -> pd.DataFrame:
    """final.csv's rows a resume keeps: those of the groups whose checkpoint is after the last
    epoch (a process killed between writing final.csv and its checkpoint left rows of a group
    that trains its last epoch again). A finished group of a grid must have them all."""
    empty = pd.DataFrame(columns=tables.FINAL_COLUMNS)
    kept = tables.read_final(out, resume=True) if resume else None
    finished = [g for g, ms in enumerate(groups) if done.get(g, 0) >= cfg.epochs]
    if kept is None or not len(kept):
        kept = empty
    kept = kept[kept["member"].isin([m.index for g in finished for m in groups[g]])]
    if resume and "test" in cfg.eval.splits and cfg.search.method != "race":
        have = set(kept["member"])
        lacking = [g for g in finished if any(m.index not in have for m in groups[g])]
        if lacking:
            raise ResultsError(f"{out}/final.csv lacks the last epoch of group {lacking[0]}, "
                               "whose checkpoint is after it; put back the final.csv lossjax "
                               "wrote, or start the sweep over with --overwrite")
    return _joined(empty, kept.reset_index(drop=True))


def _member_epochs(groups, done: dict, gid: int | None = None, epochs: int = 0) -> int:
    """Member-epochs finished: each group's ``done`` epochs, group ``gid``'s taken as
    ``epochs``."""
    return sum((epochs if g == gid else done.get(g, 0)) * len(m) for g, m in enumerate(groups))


def _progress_text(gid: int, n_groups: int, epoch: int, epochs: int, metrics: dict,
                   evals: dict) -> str:
    val = np.asarray(evals.get("val_acc", []), float)
    # A block whose every member diverged (or that evaluated nothing) has no best.
    best = float(np.nanmax(val)) if np.isfinite(val).any() else math.nan
    n_div = int(metrics["diverged"].sum())
    return (f"group {gid + 1}/{n_groups} epoch {epoch}/{epochs} best val acc {best:.3f} "
            f"diverged {n_div}")
