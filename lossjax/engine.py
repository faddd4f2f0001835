"""The sweep engine: every member of a sweep trains in one compiled program per model shape
and loss.

Design:
  - The dataset is put on the device once; batches are gathered inside compiled code from a
    per-member, per-epoch permutation. No per-step host-to-device copy.
  - One epoch is one ``lax.scan`` over batches, inside ``jit``.
  - Members that share a model shape, a set of losses and whether they use weight decay form
    a ``Group``. Within it, the loss index, learning rate, weight decay, init scale and seed
    are arrays along a member axis under ``vmap``, so the group compiles once: one program
    for the epoch and one for evaluation. The loss is chosen per member by masked branches
    (see ``_select_loss``); the sweep gives every group of built-in losses all of them, in
    the registry's order, so the program does not depend on which losses a sweep names.
  - Members are computed in fixed-size blocks: every device runs the same program on exactly
    ``block_size`` members (``shard_map`` over the device mesh), and a call trains one block
    per device. XLA's CPU kernels split work differently for different batch shapes, so a
    member's last bits would otherwise depend on how many other members share its program and
    on the device count. With fixed blocks a member's numbers depend only on its own settings
    and the block size: the same on 1 or 8 devices, in a large sweep or rerun alone.
  - A member whose loss or parameters become non-finite is marked diverged and frozen at its
    last good parameters; it cannot disturb the others (each member's arithmetic is its own).
"""

from __future__ import annotations

import collections
import contextvars
import dataclasses
import threading
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lossjax import calibration as calib
from lossjax import compile_cache, optimizers
from lossjax.losses import gradient_sign_stats, without_params
from lossjax.model import make_model

EVAL_CHUNK = 1000  # examples per evaluation step: bounds memory at members × chunk × width


@dataclasses.dataclass(frozen=True)
class Member:
    """One model of the sweep. ``index`` is its row id in the results table."""

    index: int
    loss: str
    learning_rate: float
    weight_decay: float
    init_scale: float
    seed: int
    hidden: tuple[int, ...]
    # A parameterized loss's parameters (lossjax.resolve.loss_params): an array per member in
    # its program, so every setting of the loss trains in one compiled program.
    loss_params: tuple[float, ...] = ()
    optimizer: str = "momentum"  # a key of optimizers.OPTIMIZERS; a group's members share one
    kind: str = "mlp"  # model.kind: 'mlp', 'cnn' or 'module:Class'
    channels: tuple[int, ...] = ()  # the CNN's convolutions


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """What is shared by all members of a group: the static part of the program."""

    hidden: tuple[int, ...]
    num_classes: int
    activation: str
    init: str
    dtype: str
    optimizer: str  # a key of optimizers.OPTIMIZERS
    momentum: float  # for 'momentum' only
    schedule: str  # a key of optimizers.SCHEDULES
    batch_size: int
    epochs: int
    block_size: int = 1  # members per device per program call
    weight_decay: bool = False  # whether the optimizer has a decay term at all
    optimizer_args: tuple[tuple[str, Any], ...] = ()  # (name, value): optax keyword arguments
    schedule_args: tuple[tuple[str, Any], ...] = ()
    kind: str = "mlp"  # model.kind: the program's model (lossjax.model.make_model)
    channels: tuple[int, ...] = ()  # the CNN's convolutions


def _select_loss(loss_fns: Sequence[Callable], idx, logits, labels, params=None):
    """Per-example loss of the member's own loss function, chosen by index; ``params`` (the
    member's ``loss_params``, traced), where given, is every function's third argument.

    Written as masked branches rather than ``lax.switch``: under ``vmap`` a switch on a batched
    index becomes a select that evaluates every branch anyway, and a branch that overflows for
    logits it was never meant to see (``exp_mse`` past 44) would put ``0 · inf = NaN`` into the
    gradient of members that do not use it. Unselected branches are therefore fed zeros.
    A parameterized loss's program holds that one loss: its settings are ``params``, not
    branches, so several settings cost one branch and one compile.
    """
    extra = () if params is None else (params,)
    if len(loss_fns) == 1:
        return loss_fns[0](logits, labels, *extra)
    total = jnp.zeros(logits.shape[:-1], logits.dtype)
    for i, fn in enumerate(loss_fns):
        on = idx == i
        value = fn(jnp.where(on, logits, jnp.zeros_like(logits)), labels, *extra)
        total = total + jnp.where(on, value, jnp.zeros_like(value))
    return total


# Compilations are counted through jax.monitoring, JAX's public event hooks: this event fires
# once for every XLA program built (a persistent-cache hit included; a program the process
# already holds fires none), in the thread that asked for it. A context variable says which
# group and program, if any, is calling, so each group counts only its own programs although
# listeners are process-wide.
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_counting: contextvars.ContextVar[tuple[_Compiles, str] | None] = contextvars.ContextVar(
    "lossjax_engine_counting", default=None)
_listener_lock = threading.Lock()
_listening = False


def _on_duration_event(event: str, duration_secs: float, **kwargs) -> None:
    current = _counting.get()
    if current is not None and event == _COMPILE_EVENT:
        counter, program = current
        counter.counts[program] = counter.counts.get(program, 0) + 1


class _Compiles:
    """Counts the XLA programs built, per program, while the functions it wraps run."""

    def __init__(self):
        global _listening
        self.counts: dict[str, int] = {}
        with _listener_lock:  # registered on first use: importing the engine changes nothing
            if not _listening:
                jax.monitoring.register_event_duration_secs_listener(_on_duration_event)
                _listening = True

    def counted(self, program: str, fn: Callable) -> Callable:
        def call(*args):
            token = _counting.set((self, program))
            try:
                with compile_cache.quiet_errors():
                    return fn(*args)
            finally:
                _counting.reset(token)

        return call


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _chunk(x: np.ndarray, y: np.ndarray, chunk: int):
    """Pads a split to whole chunks and returns (x, y, mask) shaped (chunks, chunk, ...)."""
    n = len(x)
    chunk = min(chunk, max(n, 1))
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n
    xp = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    yp = np.concatenate([y, np.zeros(pad, y.dtype)])
    mask = np.arange(n_chunks * chunk) < n
    return (xp.reshape(n_chunks, chunk, *x.shape[1:]), yp.reshape(n_chunks, chunk),
            mask.reshape(n_chunks, chunk))


def _over_members(f, in_axes, block_size: int):
    """``vmap(f, in_axes)`` over a block's members, except for a block of one: there the member
    axis is dropped and restored around ``f``, so XLA sees plain matrix products instead of
    batch-1 batched ones (about 10% faster on CPU for the reference MLP)."""
    if block_size > 1:
        return jax.vmap(f, in_axes=in_axes)

    def single(*args):
        args = [jax.tree.map(lambda a: a[0], x) if axis == 0 else x
                for x, axis in zip(args, in_axes, strict=True)]
        return jax.tree.map(lambda a: a[None], f(*args))

    return single


def default_block_size() -> int:
    """``block_size: auto``. On a CPU one member per program is fastest (plain matrix products;
    0.455 model-epochs/s for 784-512-512-10 against 0.357-0.402 in blocks of 16, measured
    side by side); an accelerator needs many members per program to be kept busy."""
    return 1 if jax.default_backend() == "cpu" else 64


def make_mesh(devices=None) -> Mesh:
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), ("members",))


def _put(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
    # make_array_from_callback works the same with one process or many: each process holds
    # the full host array and hands over only its devices' shards.
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def to_host(x) -> np.ndarray:
    """Gathers a (possibly multi-process) sharded array to a numpy array on every process."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # lazy: several processes only

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


@dataclasses.dataclass(frozen=True)
class ProgramKey:
    """What defines a group's compiled programs; groups with equal keys share them."""

    settings: TrainSettings
    loss_fns: tuple[Callable, ...]
    n_train: int
    features: tuple[int, ...]  # one example's shape: (D,) for the MLP, (H, W, C) for images
    mesh: Mesh
    calibration: bool
    eval_splits: int  # how many of val and test are evaluated (the final program's inputs)


class Programs:
    """A group's jitted functions: initialization of one member, an epoch, an evaluation of
    one split and the last epoch's temperature fit, each over a block of members per device.

    They close over the key's contents only (the data and settings arrays are arguments), so
    every group with the same key, in any stage, resume or ``lossjax.run`` of this process,
    calls the same functions, and JAX traces and compiles each once (:func:`programs`)."""

    def __init__(self, key: ProgramKey):
        self.key = key
        self.settings = s = key.settings
        self.calibration = key.calibration
        self.n_train, self.features = key.n_train, key.features
        self.steps_per_epoch = key.n_train // s.batch_size
        self.feat_dtype = np.float64 if s.dtype == "float64" else np.float32
        self.model = make_model(s.kind, s.hidden, s.num_classes, s.activation, s.init, s.dtype,
                                s.channels)
        self._loss_fns = key.loss_fns
        mesh = key.mesh
        by_member = NamedSharding(mesh, PartitionSpec("members"))
        # Initialization is compiled for one member and called once per member: a vmapped
        # init's XLA compile grows with the member count (each random draw is unrolled per
        # member; 3 s at 1 member, 9 s at 16 on 2 CPU cores), this one does not.
        self.init = jax.jit(self._member_init)
        # Each device runs the same block program whatever the device count (shard_map), and
        # the state comes back with the layout it went in with (pinned by the out_specs), so
        # the second epoch does not compile again.
        members_spec, rep = PartitionSpec("members"), PartitionSpec()
        epoch = _over_members(self._member_epoch, (0, 0, None, None, None), s.block_size)
        self.epoch = jax.jit(
            jax.shard_map(epoch, mesh=mesh, in_specs=(members_spec, members_spec, rep, rep, rep),
                          out_specs=(members_spec, members_spec), check_vma=False),
            out_shardings=(by_member, by_member),
            donate_argnums=0,
        )
        evaluate = _over_members(self._member_eval, (0, None, None, None), s.block_size)
        self.eval = jax.jit(
            jax.shard_map(evaluate, mesh=mesh, in_specs=(members_spec, rep, rep, rep),
                          out_specs=members_spec, check_vma=False))
        # Temperature scaling, at the last epoch only: val, then test where it is evaluated.
        n_final = 3 * key.eval_splits
        final = _over_members(self._member_final, (0, *[None] * n_final), s.block_size)
        self.final = jax.jit(
            jax.shard_map(final, mesh=mesh, in_specs=(members_spec, *[rep] * n_final),
                          out_specs=members_spec, check_vma=False))
        self.shapes: dict[str, Any] = {}  # output shapes per program: traced once, not compiled

    # ---- per-member programs (vmapped above) -------------------------------------------

    def _tx(self, hp):
        s = self.settings
        return optimizers.transformation(
            hp["lr"], hp["wd"], optimizer=s.optimizer, momentum=s.momentum,
            args=s.optimizer_args, decays=s.weight_decay, schedule=s.schedule,
            schedule_args=s.schedule_args, total_steps=s.epochs * self.steps_per_epoch)

    def _member_init(self, hp):
        key = jax.random.fold_in(jax.random.key(hp["seed"]), 0)
        dummy = jnp.zeros((1, *self.features), self.feat_dtype)
        params = self.model.init(key, dummy)
        # init_scale multiplies the weights only (biases start at zero anyway).
        params = jax.tree_util.tree_map_with_path(
            lambda path, p: p * hp["scale"].astype(p.dtype)
            if path[-1].key == "kernel" else p, params)
        return {"params": params, "opt": self._tx(hp).init(params),
                "diverged": jnp.zeros((), bool)}

    def _member_epoch(self, state, hp, x_train, y_train, epoch):
        s = self.settings
        tx = self._tx(hp)
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(hp["seed"]), 1), epoch)
        perm = jax.random.permutation(key, self.n_train)
        batches = perm[: self.steps_per_epoch * s.batch_size].reshape(self.steps_per_epoch, -1)

        def step(carry, idx):
            params, opt = carry
            x, labels = x_train[idx], y_train[idx]
            y = jax.nn.one_hot(labels, s.num_classes, dtype=jnp.float32)
            logits, pullback = jax.vjp(lambda p: self.model.apply(p, x), params)

            def mean_loss(z):
                return jnp.mean(_select_loss(self._loss_fns, hp["loss"], z, y.astype(z.dtype),
                                             hp.get("loss_params")))

            loss, g_logits = jax.value_and_grad(mean_loss)(logits)
            (grads,) = pullback(g_logits)
            updates, opt = tx.update(grads, opt, params)
            params = optax.apply_updates(params, updates)
            # g_logits is the gradient of the batch mean: times B it is per example.
            frac, norm = gradient_sign_stats(g_logits * idx.shape[0], y)
            correct = jnp.mean(jnp.argmax(logits, -1) == labels)
            return (params, opt), jnp.stack([loss, correct, frac, norm]).astype(jnp.float32)

        (params, opt), per_step = jax.lax.scan(step, (state["params"], state["opt"]), batches)
        metrics = jnp.mean(per_step, axis=0)
        ok = _all_finite(params) & jnp.isfinite(metrics[0]) & ~state["diverged"]
        # A diverged member keeps its last good parameters, so later epochs evaluate it
        # unchanged; once diverged it stays diverged.
        params, opt = jax.tree.map(lambda a, b: jnp.where(ok, a, b), (params, opt),
                                   (state["params"], state["opt"]))
        state = {"params": params, "opt": opt, "diverged": ~ok}
        return state, jnp.where(ok, metrics, jnp.nan)

    def _member_eval(self, state, x, y, mask):
        """Over one split's chunks: ``totals`` (accuracy, mean NLL of softmax(logits)) and, with
        ``calibration``, :func:`lossjax.calibration.finish` of the summed
        :func:`lossjax.calibration.chunk_sums` (padding masked out, so exact over the split)."""
        k = self.settings.num_classes

        def body(acc, chunk):
            xc, yc, mc = chunk
            logits = self.model.apply(state["params"], xc).astype(jnp.float32)
            correct = jnp.sum((jnp.argmax(logits, -1) == yc) & mc)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, yc)
            acc = {**acc, "totals": acc["totals"] + jnp.stack(
                [correct, jnp.sum(jnp.where(mc, ce, 0.0))])}
            if self.calibration:
                acc["sums"] = jax.tree.map(jnp.add, acc["sums"],
                                           calib.chunk_sums(logits, yc, mc))
            return acc, None

        init = {"totals": jnp.zeros(2, jnp.float32)}
        if self.calibration:
            init["sums"] = calib.zero_sums(k)
        acc, _ = jax.lax.scan(body, init, (x, y, mask))
        # A multiplication by the reciprocal, not a division: see losses._softmax.
        out = {"totals": acc["totals"] * (1.0 / jnp.sum(mask))}
        if self.calibration:
            out.update(calib.finish(acc["sums"], jnp.sum(mask)))
        return out

    def _member_final(self, state, xv, yv, mv, *test):
        """Temperature scaling: ``temperature`` fitted on val (its logits computed once, then
        :func:`lossjax.calibration.fit_inverse_temperature`) and, where test is given, the test
        split's NLL, Brier score, ECE and reliability bins of softmax(logits / T). NaN for a
        diverged member."""
        def logits_of(x):
            def body(_, xc):
                return None, self.model.apply(state["params"], xc).astype(jnp.float32)
            return jax.lax.scan(body, None, x)[1]

        beta = calib.fit_inverse_temperature(logits_of(xv), yv, mv)
        ok = ~state["diverged"] & jnp.isfinite(beta)
        out = {"temperature": 1.0 / beta}
        if test:
            xt, yt, mt = test

            def body(acc, chunk):
                logits, yc, mc = chunk
                scaled = logits * beta
                ce = optax.softmax_cross_entropy_with_integer_labels(scaled, yc)
                sums = calib.chunk_sums(scaled, yc, mc)
                return jax.tree.map(jnp.add, acc, {**sums, "ce": jnp.sum(jnp.where(mc, ce, 0.0))}
                                    ), None

            zeros = {**calib.zero_sums(self.settings.num_classes),
                     "ce": jnp.zeros((), jnp.float32)}
            acc, _ = jax.lax.scan(body, zeros, (logits_of(xt), yt, mt))
            n = jnp.sum(mt)
            done = calib.finish(acc, n)
            out.update({"ce": acc["ce"] * (1.0 / n), "brier": done["brier"],
                        "ece": done["ece"], "bins": done["bins"]})
        return jax.tree.map(lambda v: jnp.where(ok, v, jnp.nan), out)

# Programs by key, newest last. Bounded: a notebook that sweeps many shapes keeps the latest.
_PROGRAMS: collections.OrderedDict[ProgramKey, Programs] = collections.OrderedDict()
_PROGRAMS_KEPT = 16
_programs_lock = threading.Lock()


def programs(key: ProgramKey) -> Programs:
    """The programs for ``key``, made on first use and kept for the process. A key that
    cannot be hashed (a loss function that is not) gets programs of its own."""
    try:
        hash(key)
    except TypeError:
        return Programs(key)
    with _programs_lock:
        if key in _PROGRAMS:
            _PROGRAMS.move_to_end(key)
            return _PROGRAMS[key]
        made = _PROGRAMS[key] = Programs(key)
        while len(_PROGRAMS) > _PROGRAMS_KEPT:
            _PROGRAMS.popitem(last=False)
        return made


def clear_programs() -> None:
    """Forgets every kept program: the next group traces and compiles (or reads from the
    persistent cache) anew. For measuring compiles; results do not change."""
    with _programs_lock:
        _PROGRAMS.clear()


class Group:
    """All members that share a model shape, a set of losses and the use of weight decay,
    trained together.

    Args:
      settings: the static part of the program (``settings.block_size`` members per device
        per call).
      members: the group's members (their ``hidden`` must equal ``settings.hidden``).
      loss_names: the group's losses in index order (each member's ``loss`` is one of them, or
        its name without parameters: ``losses.without_params``); ``loss_fns`` the matching
        ``loss(logits, one_hot_labels) -> (batch,)`` functions, or, where the members have
        ``loss_params``, ``loss(logits, one_hot_labels, params)``.
      data: ``(x_train, y_train, x_val, y_val, x_test, y_test)`` as float features and int
        labels (host numpy); put on the device here, once.
      mesh: the devices to spread the blocks over.
      calibration: whether an evaluation also measures the probabilities' quality (Brier
        score, ECE, reliability bins, per-class accuracy: ``lossjax.calibration``); off only
        to measure what that costs.

    The members are padded to whole calls (``block_size`` × devices) with copies of the first
    member: real work whose results are dropped. A state is a list with one entry per call.
    """

    def __init__(self, settings: TrainSettings, members: Sequence[Member],
                 loss_names: Sequence[str], loss_fns: Sequence[Callable], data, mesh: Mesh,
                 calibration: bool = True):
        self.settings = s = settings
        self.calibration = calibration
        self.members = list(members)
        x_train, y_train, x_val, y_val, x_test, y_test = data
        self.n_train = len(x_train)
        self.steps_per_epoch = self.n_train // s.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(f"batch_size {s.batch_size} exceeds the {self.n_train} training "
                             "examples")
        self.n_real = len(self.members)
        self.call_size = s.block_size * mesh.devices.size
        n_calls = -(-self.n_real // self.call_size)
        padded = self.members + [self.members[0]] * (n_calls * self.call_size - self.n_real)

        by_member = NamedSharding(mesh, PartitionSpec("members"))
        replicated = NamedSharding(mesh, PartitionSpec())
        names = list(loss_names)
        hp = {
            "loss": np.array([names.index(m.loss if m.loss in names else without_params(m.loss))
                              for m in padded], np.int32),
            "lr": np.array([m.learning_rate for m in padded], np.float32),
            "wd": np.array([m.weight_decay for m in padded], np.float32),
            "scale": np.array([m.init_scale for m in padded], np.float32),
            "seed": np.array([m.seed for m in padded], np.uint32),
        }
        feat_dtype = np.float64 if s.dtype == "float64" else np.float32
        if any(m.loss_params for m in padded):  # only then: other programs keep their inputs
            hp["loss_params"] = np.array([m.loss_params for m in padded], feat_dtype)
        self._hp_host = hp
        self._by_member = by_member
        self.hp = [{k: _put(v[c * self.call_size:(c + 1) * self.call_size], by_member)
                    for k, v in hp.items()} for c in range(n_calls)]
        self.x_train = _put(x_train.astype(feat_dtype), replicated)
        self.y_train = _put(y_train.astype(np.int32), replicated)
        self.eval_data = {
            name: tuple(_put(a, replicated) for a in _chunk(x.astype(feat_dtype),
                                                           y.astype(np.int32), EVAL_CHUNK))
            for name, (x, y) in {"val": (x_val, y_val), "test": (x_test, y_test)}.items()
            if len(x)
        }
        self.features = tuple(x_train.shape[1:])
        self.programs = programs(ProgramKey(s, tuple(loss_fns), self.n_train, self.features,
                                            mesh, calibration, len(self.eval_data)))
        self._compiles = _Compiles()
        self._init = self._compiles.counted("init", self.programs.init)
        self._epoch = self._compiles.counted("epoch", self.programs.epoch)
        self._eval = self._compiles.counted("eval", self.programs.eval)
        self._final = self._compiles.counted("final", self.programs.final)

    # ---- host API ----------------------------------------------------------------------

    def init_state(self):
        hp = self._hp_host
        states = [self._init({k: v[i] for k, v in hp.items()}) for i in range(self.n_real)]
        return self.state_from_host([np.stack([np.asarray(x) for x in leaves])
                                     for leaves in zip(*map(jax.tree.leaves, states),
                                                       strict=True)])

    def _calls_needed(self, active) -> list[bool]:
        """Per call (a block per device), whether any of its real members is ``active`` (None:
        all are). A call none of whose members trains is not run: a member's arithmetic is its
        own, so the others compute the same bits without it."""
        if active is None:
            return [True] * len(self.hp)
        active = np.concatenate([np.asarray(active, bool),
                                 np.zeros(len(self.hp) * self.call_size - self.n_real, bool)])
        return list(active.reshape(len(self.hp), self.call_size).any(axis=1))

    def train_epoch(self, state, epoch: int, active=None):
        """Runs epoch ``epoch`` (0-based) for every member, or for the calls that hold a member
        that is ``active`` (a bool per member; a race stops the others). Returns the new state
        and a dict of per-member numpy arrays: train_loss, train_acc, wrong_frac, grad_norm
        (NaN for members that diverged in or before this epoch, or were not run) and
        diverged."""
        e = jnp.asarray(epoch, jnp.int32)
        nan = np.full((self.call_size, 4), np.nan, np.float32)
        calls = [self._epoch(st, hp, self.x_train, self.y_train, e) if run else (st, None)
                 for st, hp, run in zip(state, self.hp, self._calls_needed(active), strict=True)]
        state = [st for st, _ in calls]
        m = np.concatenate([nan if m is None else to_host(m) for _, m in calls])[: self.n_real]
        out = dict(zip(("train_loss", "train_acc", "wrong_frac", "grad_norm"), m.T, strict=True))
        out["diverged"] = np.concatenate([to_host(st["diverged"]) for st in state])[: self.n_real]
        return state, out

    def _gathered(self, name: str, fn, state, needed, *args) -> dict[str, np.ndarray]:
        """``fn`` called per call that is ``needed``, each output leaf gathered to the host over
        the real members; NaN for the members of calls that are not run."""
        shapes = self.programs.shapes
        if name not in shapes:  # traced once, not compiled
            shapes[name] = jax.eval_shape(fn, state[0], *args)
        nan = jax.tree.map(lambda sd: np.full(sd.shape, np.nan, np.float32), shapes[name])
        parts = [jax.tree.map(to_host, fn(st, *args)) if run else nan
                 for st, run in zip(state, needed, strict=True)]
        return jax.tree.map(lambda *a: np.concatenate(a)[: self.n_real], *parts)

    def evaluate(self, state, active=None, final: bool = False) -> dict[str, np.ndarray]:
        """Per member on val and test: ``{split}_acc`` and ``{split}_ce`` (the NLL of
        softmax(logits)) and, with ``calibration``, ``{split}_brier``, ``{split}_ece``,
        ``{split}_bins`` (members × 3 × NUM_BINS: count, confidence sum, right per confidence
        bin) and ``{split}_classes`` (members × 2 × K: count and right per true class); NaN for
        members of calls that are not run, as in :meth:`train_epoch`.

        ``final`` (the last epoch) adds temperature scaling (``lossjax.calibration``):
        ``temperature`` fitted on val, and with test ``test_ce_ts``, ``test_brier_ts``,
        ``test_ece_ts`` and ``test_bins_ts`` at that temperature (NaN for a diverged member).
        It compiles one more program."""
        out = {}
        needed = self._calls_needed(active)
        for name, (x, y, mask) in self.eval_data.items():
            r = self._gathered(name, self._eval, state, needed, x, y, mask)
            out[f"{name}_acc"], out[f"{name}_ce"] = r["totals"][:, 0], r["totals"][:, 1]
            for key in ("brier", "ece", "bins", "classes") if self.calibration else ():
                out[f"{name}_{key}"] = r[key]
        if final and self.calibration and "val" in self.eval_data:
            splits = [a for name in ("val", "test") if name in self.eval_data
                      for a in self.eval_data[name]]
            r = self._gathered("final", self._final, state, needed, *splits)
            out["temperature"] = r.pop("temperature")
            out.update({f"test_{k}_ts": v for k, v in r.items()})
        return out

    @property
    def model(self):
        """The Flax module every member applies (the same for the whole group)."""
        return self.programs.model

    def compiled_count(self) -> int:
        """XLA programs built so far by this group's calls (all programs): after the first
        epoch and evaluation it must stay put (tests/test_engine.py, experiments/benchmark.py);
        0 where an earlier group of this process built the same programs (:func:`programs`)."""
        return sum(self._compiles.counts.values())

    def compiled_counts(self) -> dict[str, int]:
        """:meth:`compiled_count` per program: ``init``, ``epoch``, ``eval`` (one per split
        shape), ``final``; a program not built by this group's calls is absent."""
        return dict(self._compiles.counts)

    # ---- checkpoints: the real members' state as flat lists of host arrays -------------

    def local_state(self, state) -> tuple[np.ndarray, list[np.ndarray]]:
        """This process's share of the state, without communicating: the positions (in
        ``members``) of the real members whose state lives on this process's devices, and per
        leaf their rows in that order. Every process saves its own share; together the shares
        hold each real member exactly once."""
        positions, per_leaf = [], None
        for c, st in enumerate(state):
            leaves = jax.tree.leaves(st)
            shards = [sorted(x.addressable_shards, key=lambda sh: sh.index[0].start or 0)
                      for x in leaves]
            if per_leaf is None:
                per_leaf = [[] for _ in leaves]
            for k, shard in enumerate(shards[0]):
                lo = c * self.call_size + (shard.index[0].start or 0)
                rows = np.arange(lo, lo + shard.data.shape[0])
                real = rows < self.n_real
                positions.append(rows[real])
                for leaf, leaf_shards in zip(per_leaf, shards, strict=True):
                    leaf.append(np.asarray(leaf_shards[k].data)[real])
        return (np.concatenate(positions),
                [np.concatenate(leaf) for leaf in per_leaf])

    def state_from_host(self, leaves: Sequence[np.ndarray]):
        one = {k: v[0] for k, v in self._hp_host.items()}
        treedef = jax.tree.structure(jax.eval_shape(self.programs.init, one))
        if len(leaves) != treedef.num_leaves or any(len(a) != self.n_real for a in leaves):
            raise ValueError("checkpoint does not match this group's members")
        n_pad = len(self.hp) * self.call_size - self.n_real
        # Padding members copy member 0's state, as they copy its settings.
        padded = [np.concatenate([a, np.repeat(a[:1], n_pad, axis=0)]) for a in leaves]
        c = self.call_size
        return [jax.tree.unflatten(treedef, [_put(a[i * c:(i + 1) * c], self._by_member)
                                             for a in padded])
                for i in range(len(self.hp))]
