"""What a sweep checks before anything is written, beyond the config itself: each loss called
once on a tiny batch, the model (a user's module initialised and called once), the memory and
disk space the members need, and the schedule against the run's real length (which the config
alone does not know)."""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lossjax import model as model_lib
from lossjax import optimizers
from lossjax.errors import ConfigError, ResultsError, one_line
from lossjax.resolve import import_callable


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
        msg = one_line(e, 160)
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


_EXIT_PROBE = """
import sys
sys.path[:] = {path!r}
import jax.numpy as jnp
from lossjax.preflight import check_loss
from lossjax.resolve import resolve_loss
try:
    check_loss({name!r}, resolve_loss({name!r}), {k}, jnp.{dtype})
except BaseException:
    pass  # the same call in lossjax's own process names it
print({done!r})
"""
_DONE = "lossjax: the loss returned"


def check_loss_exits(name: str, num_classes: int, dtype: str, timeout: float = 120.0) -> None:
    """Runs :func:`check_loss` on a user's ``'module:function'`` loss in a child Python first:
    a loss that ends the process itself (``os._exit``, a signal, a crash in native code) would
    end lossjax's with its own status and no word. About a second, for user losses only; a
    child that cannot run or times out judges nothing."""
    if ":" not in name:
        return
    code = _EXIT_PROBE.format(path=sys.path, name=name, k=num_classes, dtype=dtype, done=_DONE)
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL,
                           env={**os.environ, "JAX_PLATFORMS": "cpu"})
    except (OSError, subprocess.TimeoutExpired):
        return
    if _DONE not in r.stdout:
        how = (f"killed by signal {-r.returncode}" if r.returncode < 0
               else f"exit status {r.returncode}")
        raise ConfigError(f"losses: {name}: ended the process ({how}) when called once on a "
                          f"(2, {num_classes}) batch, without returning (os._exit, a signal or "
                          "a crash); a loss must return its value: remove the call")


def check_model(cfg, input_shape: tuple[int, ...], num_classes: int) -> None:
    """The CNN's image against its pooling, and a user's module (``model.kind:
    'module:Class'``) imported, initialised on a (2, *input_shape) float32 batch and called:
    it must be a Flax linen Module class with a ``num_classes`` field, hold parameters only,
    all finite, and return float logits (2, num_classes). A failure is one line naming it."""
    kind = cfg.model.kind
    if kind == "cnn":
        if len(input_shape) != 3:
            raise ConfigError(f"model.kind: cnn takes images (H, W, C); {cfg.dataset.name} "
                              f"examples are shaped {tuple(input_shape)}")
        if min(input_shape[:2]) < 2 ** len(cfg.model.channels):
            raise ConfigError(
                f"model.channels: {list(cfg.model.channels)} pools {len(cfg.model.channels)} "
                f"times, more than {cfg.dataset.name}'s {input_shape[0]}x{input_shape[1]} "
                "images allow (each 2x2 pooling halves them); use fewer convolutions")
        return
    if kind == "mlp":
        return
    where = f"model.kind: {kind}"
    try:
        cls = import_callable(kind.removeprefix("module:"), "model.kind module").__wrapped__
    except (ValueError, ConfigError) as e:
        raise ConfigError(one_line(e, 300)) from None
    import flax.linen as nn  # the engine's import too

    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ConfigError(f"{where}: is a {type(cls).__name__}, not a Flax linen Module class")
    if "num_classes" not in {f.name for f in dataclasses.fields(cls)}:
        raise ConfigError(f"{where}: has no num_classes field; declare 'num_classes: int' in the "
                          "class (lossjax makes it with num_classes=K)")
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, *input_shape)), jnp.float32)
    try:
        net = model_lib.make_model(kind, (), num_classes)
        variables = net.init(jax.random.key(0), x)
        out = net.apply(variables, x)
    except Exception as e:  # the user's code: any failure is theirs to see, named
        raise ConfigError(f"{where}: initialising it and calling it on a (2, "
                          f"{', '.join(map(str, input_shape))}) float32 batch raised "
                          f"{type(e).__name__}: {one_line(e, 160)}") from None
    if set(variables) != {"params"}:
        raise ConfigError(f"{where}: has variables {sorted(variables)}; lossjax trains modules "
                          "with parameters only (no batch statistics or other mutable state)")
    shape, dtype = getattr(out, "shape", None), getattr(out, "dtype", None)
    if shape != (2, num_classes):
        raise ConfigError(f"{where}: returned shape {shape} for a batch of 2; a model returns "
                          f"logits shaped (2, {num_classes}) for {cfg.dataset.name}")
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise ConfigError(f"{where}: returned {dtype} logits; a model returns floats")
    if not all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(variables)):
        raise ConfigError(f"{where}: has non-finite initial parameters; check its initializers")


def _param_count(features, hidden, num_classes: int, cfg=None) -> int:
    """Parameters per member: the MLP's counted from its sizes, another model's (whose
    ``features`` is one example's shape) from its initialisation, traced, not run."""
    if cfg is None or cfg.model.kind == "mlp":
        sizes = [math.prod(features) if isinstance(features, tuple) else features, *hidden,
                 num_classes]
        return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    net = model_lib.make_model(cfg.model.kind, hidden, num_classes, channels=cfg.model.channels)
    shapes = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, *features)))
    return sum(math.prod(p.shape) for p in jax.tree.leaves(shapes))


def _activations(cfg, features, hidden) -> int:
    """Values a training step keeps per example for the backward pass: the CNN's feature maps
    (each convolution's output before and after pooling) and layers; for an MLP or a user's
    module none are counted (an MLP's are small next to its parameters)."""
    if cfg.model.kind != "cnn":
        return 0
    maps = model_lib.pooled_shapes(features, cfg.model.channels)
    full = [(h * 2) * (w * 2) * c for h, w, c in maps[1:]]  # before pooling
    return 2 * sum(full) + sum(math.prod(m) for m in maps[1:]) + 2 * sum(hidden)


def _available_memory(device) -> int | None:
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    return _host_memory()


def _host_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB"


# Host memory a member takes beyond its parameters: its hyperparameters, its state while it is
# initialized, its rows and the Python objects around them. Measured on CPU with one-member
# calls of 610 parameters: 2,000 and 6,000 members peaked at 0.73 and 1.11 GB (96 KB a member),
# and 100,000 grew past 24 GB (240 KB each) before the kernel killed them; the larger is used.
HOST_BYTES_PER_MEMBER = 256_000


def check_member_count(cfg) -> None:
    """Refuses, from the config alone and before the members are listed or the folder is made,
    a sweep whose members (the grid's, and the most its later stages can add) cannot fit in
    the host's memory whatever their size: listing 100,000s of them alone takes minutes."""
    grid = (len(cfg.model.hidden) * len(cfg.optimizer.weight_decay)
            * len(cfg.model.init_scale) * len(cfg.seeds)
            * sum(len(rates) for _, rates in cfg.optimizer.grids()))
    groups = grid // len(cfg.seeds)
    added = groups * (cfg.search.extend * len(cfg.seeds) + len(cfg.confirm.seeds))
    need = (grid + added) * HOST_BYTES_PER_MEMBER
    available = _host_memory()
    if available is None or need <= available:
        return
    if added > grid:
        key = "search.extend" if cfg.search.extend else "confirm.seeds"
        fix = f"give a smaller {key}"
        given = cfg.search.extend if cfg.search.extend else len(cfg.confirm.seeds)
        what = f"{given:,} lets later stages add up to {added:,} members to the grid's {grid:,}"
    else:
        lists = {"seeds": len(cfg.seeds), "losses": len(cfg.losses),
                 "optimizer.learning_rate": max(len(r) for _, r in cfg.optimizer.grids()),
                 "model.hidden": len(cfg.model.hidden),
                 "model.init_scale": len(cfg.model.init_scale),
                 "optimizer.weight_decay": len(cfg.optimizer.weight_decay)}
        key = max(lists, key=lists.get)
        fix = "sweep fewer values, or split the sweep"
        what = f"{lists[key]:,} values make a sweep of {grid + added:,} members"
    raise ConfigError(f"{key}: {what}, which need about {_gb(need)} of memory at "
                      f"{HOST_BYTES_PER_MEMBER // 1000} KB a member beside their parameters, and "
                      f"{_gb(available)} is available; {fix}")


def check_resources(cfg, groups, features, num_classes: int, out: Path,
                    reserve: bool = False) -> None:
    """Refuses a sweep whose models cannot fit in memory, or whose checkpoints cannot fit on
    the disk, before it starts (a model too large to allocate would otherwise fail late, or
    hang). ``reserve``: the last group stands for what later stages can add, which a refusal
    then names."""
    item = 8 if cfg.model.dtype == "float64" else 4  # parameters and optimizer state
    call = cfg.block_size * jax.device_count()
    share = jax.local_device_count() / jax.device_count()  # of the members, on this process
    worst_memory, worst_disk, worst_hidden, worst_group = 0, 0, None, None
    for g in groups:
        # Per-parameter optimizer state, in parameters (sgd 0, momentum 1, adam 2): a group's
        # own optimizer's, so a sweep of momentum and adam counts adam's two for adam's groups.
        opt = g[0].optimizer
        slots = optimizers.state_slots(opt, cfg.optimizer.momentum, cfg.optimizer.args_of(opt),
                                       g[0].weight_decay > 0, cfg.model.dtype)
        per_member = _param_count(features, g[0].hidden, num_classes, cfg) * item
        # A CNN's feature maps, per example of a batch, while each member of a block trains.
        step = call * cfg.batch_size * _activations(cfg, features, g[0].hidden) * item
        padded = -(-len(g) // call) * call
        # Resident: every member's parameters and optimizer state; while a block trains, its
        # gradients and updates too, and its activations (small next to them for an MLP).
        memory = share * (padded * per_member * (1 + slots) + call * per_member * 2 + step)
        if memory > worst_memory:
            worst_memory, worst_hidden, worst_group = memory, g[0].hidden, g
        worst_disk = max(worst_disk, len(g) * per_member * (1 + slots))
    available = _available_memory(jax.local_devices()[0])
    if available is not None and worst_memory > available and reserve and (
            worst_group is groups[-1]):
        key = "search.extend" if cfg.search.extend else "confirm.seeds"
        raise ConfigError(
            f"{key}: later stages can add {len(groups[-1]):,} members, which need about "
            f"{_gb(worst_memory)} for their parameters and optimizer state, and "
            f"{_gb(available)} is available; give a smaller {key}")
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
            f"{one_line(e, 160)}") from None
