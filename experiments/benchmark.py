"""Benchmark: the lossjax sweep engine against a per-step training loop.

Same work side by side in one process: the reference MLP 784-512-512-10, batch 128, SGD with
momentum 0.9 (learning rate 0.05), softmax cross-entropy, on MNIST-shaped data (real MNIST when
it is found, otherwise random arrays of the same shape; the header says which).

(a) ``per-step loop``: Flax's MNIST example style. A ``jax.jit``-ted train step (flax.linen MLP,
    optax momentum SGD, ``optax.softmax_cross_entropy_with_integer_labels``), a Python loop over
    batches gathered from host numpy arrays with a per-epoch numpy permutation, models trained
    one after another. Timed over ``--steps`` steps of a fresh model after one warm-up step, so
    its rate per model is the same for any member count.
(b) ``engine``: ``lossjax.engine.Group`` on the same members (all cross-entropy, lr 0.05,
    distinct seeds), built as a sweep builds it (all four built-in losses in one program).
    Timed over whole epochs (``train_epoch`` returns host numpy, so it is synchronous) after
    a warm-up epoch that compiles.

Rates are model-epochs/s of the full training set (54,000 examples = 421 steps of 128):
member-steps per second divided by 421. Where the engine trains on fewer examples per epoch
(``--train-examples``; on a CPU the default shortens epochs so that large member counts finish in
seconds), that is a conversion, and the table says so; the engine's fixed per-epoch work
(permutations, the divergence check) is then spread over fewer steps, which counts against it.

``--model cnn`` runs the same comparison with the CNN of ``configs/mnist_cnn.yaml`` (3x3
convolutions of ``--channels`` 32,64 with 2x2 average pooling, then ``--hidden`` 128) on MNIST
images (28x28x1) in both the loop and the engine (``model.kind: cnn``); the matmul bound is
the MLP's alone and is left out.

Also measured: (c) compile time of a whole sweep group (init, first ``train_epoch``, first
``evaluate``: JAX's trace + lowering + XLA compile durations, plus the wall time of those first
calls), and (d) compilations after the warm-up (should be 0), counted with ``jax.monitoring``.
Baseline repetitions are interleaved with the engine's, so both see the same machine load.

    python experiments/benchmark.py                      # defaults for this machine's backend
    python experiments/benchmark.py --members 1,4,16 --reps 5 --json
    python experiments/benchmark.py --model cnn --members 1,16
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import resource
import statistics
import sys
import textwrap
import time
import warnings
from pathlib import Path

import flax
import jax
import jax.monitoring
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from lossjax import data, engine, losses
from lossjax.errors import DataError
from lossjax.model import (
    cnn_flops_per_example,
    cnn_param_count,
    flops_per_example,
    make_model,
)

REPO = Path(__file__).resolve().parent.parent
FEATURES, HIDDEN, CLASSES = 784, (512, 512), 10  # HIDDEN: the reference, --hidden's default
IMAGE, CNN_CHANNELS, CNN_HIDDEN = (28, 28, 1), (32, 64), (128,)  # --model cnn: mnist_cnn.yaml's
BATCH, LR, MOMENTUM = 128, 0.05, 0.9
N_TRAIN, N_VAL, N_TEST = 54_000, 6_000, 10_000  # MNIST with the default 10% validation split
EVAL_EXAMPLES = 2_000  # per split: evaluation is compiled and run but not timed
CPU_MEMBER_EXAMPLES = 65_536  # CPU default: member-examples per timed engine epoch
MIN_STEPS = 8

TRACE = "/jax/core/compile/jaxpr_trace_duration"
LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"
COMPILE = "/jax/core/compile/backend_compile_duration"


class CompileLog:
    """Counts XLA compilations (``backend_compile_duration`` events) and measures the time JAX
    spends tracing, lowering and compiling: the union of those events' time spans, since a
    trace of a jitted function nested in another is recorded inside its parent's."""

    def __init__(self):
        self.count, self.names, self.spans, self.durations = 0, [], [], []
        jax.monitoring.register_event_duration_secs_listener(self._duration)
        if hasattr(jax.monitoring, "register_event_time_span_listener"):
            jax.monitoring.register_event_time_span_listener(self._span)
            self.has_spans = True
        else:  # older JAX: durations only (nested traces may then be counted twice)
            self.has_spans = False

    def _duration(self, event: str, secs: float, **kw) -> None:
        if event == COMPILE:
            self.count += 1
            self.names.append(str(kw.get("fun_name", "?")))
        if event in (TRACE, LOWER, COMPILE):
            self.durations.append(secs)

    def _span(self, event: str, start: float, end: float, **kw) -> None:
        if event in (TRACE, LOWER, COMPILE):
            self.spans.append((start, end))

    def mark(self) -> tuple[int, int, int]:
        return self.count, len(self.spans), len(self.durations)

    def since(self, mark: tuple[int, int, int]) -> tuple[int, float]:
        """(compilations, seconds of tracing + lowering + compiling) since ``mark``."""
        if not self.has_spans:
            return self.count - mark[0], sum(self.durations[mark[2]:])
        total, reach = 0.0, float("-inf")
        for start, end in sorted(self.spans[mark[1]:]):
            if end > reach:
                total += end - max(start, reach)
                reach = end
        return self.count - mark[0], total


# ---- data ---------------------------------------------------------------------------------


def _has_mnist(root: Path) -> bool:
    names = ("train-images-idx3-ubyte", "train-images-idx3-ubyte.gz", "mnist.npz")
    return any((d / n).is_file() for d in (root / "mnist", root) for n in names) or (
        root / "prepared" / "mnist" / "meta.json").is_file()


def load_arrays(kind: str, data_dir: str | None):
    """(x_train, y_train, x_val, y_val, x_test, y_test) as float32 / int32, and a description.

    Real MNIST is loaded only from a folder where its files (or lossjax's cache of them) are
    already on disk, so the benchmark does not set off a download: ``--data-dir``, else
    ``$LOSSJAX_DATA_DIR`` / ``~/.cache/lossjax``, else the project's ``shared/data`` next to
    (or inside) the checkout. A folder whose copy fails verification is skipped, and said."""
    problems = []
    if kind != "random":
        roots = [Path(data_dir)] if data_dir else [data.default_data_dir(),
                                                   REPO.parent / "shared" / "data",
                                                   REPO / "shared" / "data"]
        for root in roots:
            if not _has_mnist(root):
                continue
            try:
                with warnings.catch_warnings():  # e.g. a read-only data folder cannot hold a cache
                    warnings.simplefilter("ignore")
                    ds = data.preprocess(data.load("mnist", data_dir=root))
            except DataError as e:
                problems.append(f"{root}: {str(e)[:200]}")
                continue
            arrays = (ds.x_train, ds.y_train, ds.x_val, ds.y_val, ds.x_test, ds.y_test)
            return arrays, {"kind": "mnist", "path": str(root),
                            "description": f"real MNIST from {root} (verified)"}
        if kind == "mnist":
            sys.exit("benchmark: no usable MNIST in " + ", ".join(map(str, roots))
                     + "".join(f"\n  {p}" for p in problems))
    rng = np.random.default_rng(0)
    arrays = []
    for n in (N_TRAIN, N_VAL, N_TEST):
        arrays += [rng.random((n, FEATURES), np.float32),
                   rng.integers(0, CLASSES, n).astype(np.int32)]
    why = ("--data random" if kind == "random" else
           "MNIST unusable: " + "; ".join(problems) if problems else "no MNIST found")
    return tuple(arrays), {"kind": "random", "path": None,
                           "description": f"random arrays of MNIST's shape ({why})"}


# ---- (a) the per-step loop ----------------------------------------------------------------


class StepLoop:
    """Flax's MNIST example, reduced to what is timed: a jitted step fed from host arrays."""

    def __init__(self, x: np.ndarray, y: np.ndarray, hidden: tuple[int, ...], kind: str = "mlp",
                 channels: tuple[int, ...] = ()):
        self.x, self.y = x, y
        self.model = make_model(kind, hidden, CLASSES, channels=channels)
        self.tx = optax.sgd(LR, momentum=MOMENTUM)
        self.steps_per_epoch = len(x) // BATCH
        self.rng = np.random.default_rng(0)
        self.perms, self.pos = None, 0

        @jax.jit
        def train_step(state, images, labels):
            def loss_fn(params):
                logits = state.apply_fn({"params": params}, images)
                loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
                return loss, logits

            (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
            accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
            return state.apply_gradients(grads=grads), loss, accuracy

        self.train_step = train_step

    def new_model(self, seed: int):
        params = self.model.init(jax.random.key(seed), jnp.zeros((1, *self.x.shape[1:])))[
            "params"]
        return train_state.TrainState.create(apply_fn=self.model.apply, params=params,
                                             tx=self.tx)

    def run(self, state, steps: int):
        epoch_loss, epoch_accuracy = [], []
        for _ in range(steps):
            if self.pos == 0:  # a new epoch: a fresh permutation, on the host
                perm = self.rng.permutation(len(self.x))
                self.perms = perm[: self.steps_per_epoch * BATCH].reshape(-1, BATCH)
            idx = self.perms[self.pos]
            self.pos = (self.pos + 1) % self.steps_per_epoch
            state, loss, accuracy = self.train_step(state, self.x[idx], self.y[idx])
            epoch_loss.append(loss)
            epoch_accuracy.append(accuracy)
        jax.block_until_ready(state)
        return state, float(np.mean(epoch_loss)), float(np.mean(epoch_accuracy))


# ---- (c) the arithmetic bound ---------------------------------------------------------------


class MatmulBound:
    """Only the matrix products one training step needs, for one model, in a compiled scan: the
    forward products, and in the backward pass the weight gradients and the gradients of every
    hidden activation (the input's is not needed). Each step applies its weight gradients with a
    plain ``w - c * dw`` so that no product can be hoisted out of the loop. No loss, no
    optimizer state, no metrics, no host: a step of any training loop costs at least this, so
    ``loop rate / this rate`` bounds what removing everything but the arithmetic can gain."""

    def __init__(self, x: np.ndarray, steps: int, hidden: tuple[int, ...]):
        widths = (FEATURES, *hidden, CLASSES)
        rng = np.random.default_rng(0)
        self.ws = [jnp.asarray(rng.normal(0, a ** -0.5, (a, b)).astype(np.float32))
                   for a, b in zip(widths[:-1], widths[1:], strict=True)]
        self.x = jnp.asarray(x[: steps * BATCH].reshape(steps, BATCH, FEATURES))

        @jax.jit
        def run(ws, xs):
            def step(ws, x):
                acts = [x]
                for w in ws[:-1]:
                    acts.append(jax.nn.relu(acts[-1] @ w))
                g = acts[-1] @ ws[-1] * (1.0 / BATCH)  # stands in for dloss/dlogits
                new = []
                for i in range(len(ws) - 1, -1, -1):
                    new.append(ws[i] - 1e-6 * (acts[i].T @ g))
                    if i:
                        g = (g @ ws[i].T) * (acts[i] > 0)
                return new[::-1], None

            return jax.lax.scan(step, ws, xs)[0]

        self.run = run
        jax.block_until_ready(run(self.ws, self.x))  # compile

    def rep(self) -> float:
        t = time.perf_counter()
        jax.block_until_ready(self.run(self.ws, self.x))
        return len(self.x) / (time.perf_counter() - t)  # steps per second


# ---- helpers --------------------------------------------------------------------------------


def peak_host_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux (bytes on macOS)
    return kb / (1 << 20) if sys.platform == "darwin" else kb / 1024


def peak_device_mb() -> float | None:
    peaks = []
    for d in jax.local_devices():
        try:
            stats = d.memory_stats()
        except Exception:  # backends without memory statistics
            stats = None
        if stats and "peak_bytes_in_use" in stats:
            peaks.append(stats["peak_bytes_in_use"])
    return max(peaks) / 2**20 if peaks else None


def summary(rates: list[float]) -> dict:
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates),
            "all": rates}


def engine_examples(arg: str, members: int, on_gpu: bool, n_full: int) -> int:
    """Training examples per engine epoch for a member count: ``full``, a number, or ``auto``
    (full on a GPU; on a CPU about CPU_MEMBER_EXAMPLES member-examples per epoch)."""
    if arg == "full" or (arg == "auto" and on_gpu):
        n = n_full
    elif arg == "auto":
        n = CPU_MEMBER_EXAMPLES // members
    else:
        n = int(arg)
    n = max(MIN_STEPS * BATCH, min(n, n_full))
    return n if n == n_full else n // BATCH * BATCH


def parse_args(argv):
    on_gpu = jax.default_backend() == "gpu"
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", default="1,4,16,64,256" if on_gpu else "1,4,16",
                   help="member counts, comma separated (default: %(default)s on this backend)")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions per variant")
    p.add_argument("--block-size", type=int, default=None,
                   help="the engine's members per block (default: the row's member count, one "
                        "block; a sweep's config sets its own, 8 by default)")
    p.add_argument("--model", choices=("mlp", "cnn"), default="mlp",
                   help="mlp (the reference) or cnn (configs/mnist_cnn.yaml's, on 28x28x1 images)")
    p.add_argument("--hidden", default=None,
                   help="hidden sizes of the MLP (default: the reference 512,512; with --model "
                        "cnn its dense layers, default 128); small models show where dispatch, "
                        "not arithmetic, is the cost")
    p.add_argument("--channels", default=",".join(map(str, CNN_CHANNELS)),
                   help="--model cnn: the convolutions' channels (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps per baseline repetition (default 100 on a CPU, one full "
                        "epoch on a GPU)")
    p.add_argument("--train-examples", default="auto",
                   help="training examples per timed engine epoch: auto (full on a GPU; on a "
                        f"CPU {CPU_MEMBER_EXAMPLES} / members), full, or a number")
    p.add_argument("--data", choices=("auto", "mnist", "random"), default="auto",
                   help="auto: real MNIST when its files are on disk, else random arrays")
    p.add_argument("--data-dir", default=None, help="where to look for MNIST")
    p.add_argument("--bandwidth-gbs", type=float, default=None,
                   help="device memory bandwidth for the traffic floor, GB/s (default on a GPU: "
                        "3000, an H100 SXM's measured figure; nominal 3350). Off on a CPU "
                        "unless given")
    p.add_argument("--json", nargs="?", const="auto", default=None, metavar="PATH",
                   help="also write the results as JSON (without PATH: under "
                        "results/benchmark/)")
    args = p.parse_args(argv)
    try:
        args.members = sorted({int(m) for m in args.members.split(",") if m.strip()})
    except ValueError:
        p.error(f"--members: expected counts like 1,4,16, found {args.members!r}")
    if not args.members or min(args.members) < 1 or args.reps < 1:
        p.error("--members must be positive counts and --reps at least 1")
    if args.train_examples not in ("auto", "full") and not args.train_examples.isdigit():
        p.error(f"--train-examples: auto, full or a number, found {args.train_examples!r}")
    if args.steps is None:
        args.steps = N_TRAIN // BATCH if on_gpu else 100
    if args.bandwidth_gbs is None and on_gpu:
        args.bandwidth_gbs = 3000.0
    args.on_gpu = on_gpu
    default = HIDDEN if args.model == "mlp" else CNN_HIDDEN
    args.hidden = (tuple(int(h) for h in args.hidden.split(",")) if args.hidden is not None
                   else default)
    args.channels = tuple(int(c) for c in args.channels.split(",")) if args.model == "cnn" else ()
    return args


# ---- the run --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Setup:
    """What every measurement shares: the command line (``parse_args``) and the data."""

    args: argparse.Namespace
    x_train: np.ndarray
    y_train: np.ndarray
    eval_data: tuple[np.ndarray, ...]  # x_val, y_val, x_test, y_test: EVAL_EXAMPLES each

    @property
    def hidden(self) -> tuple[int, ...]:
        return self.args.hidden

    @property
    def n_full(self) -> int:
        return len(self.x_train)

    @property
    def full_steps(self) -> int:
        return self.n_full // BATCH


def load_setup(args: argparse.Namespace) -> tuple[Setup, dict]:
    """The data the run trains and evaluates on, and ``load_arrays``'s description of it."""
    arrays, source = load_arrays(args.data, args.data_dir)
    if args.model == "cnn":  # images, as a sweep gives them to the CNN (reshaped views)
        arrays = tuple(a.reshape(-1, *IMAGE) if a.ndim == 2 else a for a in arrays)
    x_train, y_train, x_val, y_val, x_test, y_test = arrays
    eval_data = (x_val[:EVAL_EXAMPLES], y_val[:EVAL_EXAMPLES],
                 x_test[:EVAL_EXAMPLES], y_test[:EVAL_EXAMPLES])
    return Setup(args, x_train, y_train, eval_data), source


def machine_facts() -> tuple[dict, float]:
    """The header's facts about the machine, taken before the data is loaded, and the load
    average at start as measured (the header rounds it to 2 decimals, the printout to 1)."""
    devices = jax.devices()
    load_start = os.getloadavg()[0]
    usable_cpus = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else os.cpu_count())
    return {
        "device_kind": devices[0].device_kind, "backend": jax.default_backend(),
        "device_count": len(devices), "jax": jax.__version__, "flax": flax.__version__,
        "optax": optax.__version__, "python": platform.python_version(),
        "cpu_count": os.cpu_count(), "cpus_usable": usable_cpus,
        "load_average_at_start": round(load_start, 2),
    }, load_start


def make_header(setup: Setup, facts: dict, source: dict) -> dict:
    """The run's description: machine, data, model, the memory-traffic floor, the timing."""
    args, hidden = setup.args, setup.hidden
    n_params = sum(a * b + b for a, b in zip((FEATURES, *hidden), (*hidden, CLASSES),
                                             strict=True))
    model = f"{FEATURES}-{'-'.join(map(str, hidden))}-{CLASSES} relu float32"
    flop = flops_per_example(FEATURES, list(hidden), CLASSES)
    if args.model == "cnn":
        n_params = cnn_param_count(IMAGE, args.channels, hidden, CLASSES)
        model = (f"CNN {'x'.join(map(str, IMAGE))}, 3x3 conv {'-'.join(map(str, args.channels))}"
                 f" + 2x2 avg pool, dense {'-'.join(map(str, hidden))}-{CLASSES} relu float32")
        flop = cnn_flops_per_example(IMAGE, args.channels, hidden, CLASSES)
    # Per member-step: weights read twice (forward, backward), the gradient written and read
    # back, the momentum read and written, the parameters written: 7 passes over the float32
    # parameters. Activations (128 x 512 per layer) and the batch gather are not counted.
    step_bytes = 7 * 4 * n_params
    floor = (args.bandwidth_gbs * 1e9 / (step_bytes * setup.full_steps)
             if args.bandwidth_gbs else None)
    return {
        **facts,
        "data": source, "train_examples_full": setup.n_full,
        "steps_per_full_epoch": setup.full_steps,
        "model": model, "model_kind": args.model,
        "batch": BATCH, "optimizer": f"sgd lr {LR} momentum {MOMENTUM}",
        "matmul_precision": str(jax.config.jax_default_matmul_precision or "default"),
        "flop_per_example": flop,
        "params": n_params, "bytes_per_member_step": step_bytes,
        "bandwidth_gbs": args.bandwidth_gbs, "floor_model_epochs_per_s": floor,
        "reps": args.reps, "baseline_steps_per_rep": args.steps,
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def print_header(header: dict, load_start: float) -> None:
    n_params, floor = header["params"], header["floor_model_epochs_per_s"]
    param_bytes = 4 * n_params
    print("lossjax benchmark: engine vs per-step loop", flush=True)
    print(f"  device     {header['device_kind']} x{header['device_count']} "
          f"({header['backend']}), JAX {jax.__version__}, flax {flax.__version__}, optax "
          f"{optax.__version__}, CPUs {header['cpu_count']} (usable {header['cpus_usable']}), "
          f"load avg {load_start:.1f} at start")
    print(f"  data       {header['data']['description']}: {header['train_examples_full']} "
          f"training examples = {header['steps_per_full_epoch']} steps of {BATCH} per epoch")
    kind = "MLP " if header["model_kind"] == "mlp" else ""
    print(f"  work       {kind}{header['model']}, batch {BATCH}, {header['optimizer']}, "
          f"cross-entropy; {header['flop_per_example'] / 1e6:.2f} MFLOP per training example; "
          "default matmul precision")
    print(f"  traffic    {header['bytes_per_member_step'] / 1e6:.1f} MB per member-step counted "
          f"= 7 x {param_bytes / 1e6:.2f} MB of float32 parameters ({n_params} params: weights "
          "read twice, gradient written+read, momentum read+written, params written)")
    if floor:
        print(f"  floor      {header['bandwidth_gbs']:.0f} GB/s per device assumed -> "
              f"{floor * header['device_count']:.0f} model-epochs/s (memory-traffic floor)")
    print(f"  timing     median [min-max] of {header['reps']} reps; per-step loop: "
          f"{header['baseline_steps_per_rep']} steps of a fresh model after a warm-up step, "
          "reps interleaved with the engine's; engine: whole epochs after a warm-up epoch",
          flush=True)


class LoopTiming:
    """(a) measured: the per-step loop compiled by a first step (compile time, warm-up), then
    one timed repetition per ``rep`` (a fresh model, its warm-up step, ``--steps`` steps)."""

    def __init__(self, setup: Setup, log: CompileLog):
        self.setup, self.log = setup, log
        self.loop = StepLoop(setup.x_train, setup.y_train, setup.hidden, setup.args.model,
                             setup.args.channels)
        # flax's eager init compiles its own small programs: not counted
        state = self.loop.new_model(0)
        c0 = log.mark()
        t0 = time.perf_counter()
        self.loop.run(state, 1)
        self.first = time.perf_counter() - t0
        self.compiles, self.compile_s = log.since(c0)
        self.rates, self.cpu, self.recompiles, self.model_seed = [], [], 0, 1

    def rep(self) -> None:
        steps, full_steps = self.setup.args.steps, self.setup.full_steps
        before = self.log.count  # a new model of the same shapes must compile nothing
        st = self.loop.new_model(self.model_seed)
        self.model_seed += 1
        st, _, _ = self.loop.run(st, 1)  # warm-up step of this model
        t, c = time.perf_counter(), time.process_time()
        self.loop.run(st, steps)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        self.recompiles += self.log.count - before
        self.rates.append(steps / dt / full_steps)
        self.cpu.append(dc * full_steps / steps)

    def row(self, peak_host: float, peak_device: float | None) -> dict:
        return {
            "variant": "per-step loop", "members": 1, "epoch_examples": self.setup.n_full,
            "steps_per_epoch": self.setup.full_steps, "timed_steps": self.setup.args.steps,
            "model_epochs_per_s": summary(self.rates),
            "host_cpu_s_per_model_epoch": statistics.median(self.cpu),
            "compile_s": self.compile_s, "first_calls_s": self.first, "setup_s": 0.0,
            "compilations_in_warmup": self.compiles, "recompiles_after_warmup": self.recompiles,
            "peak_host_mb": peak_host, "peak_device_mb": peak_device,
            "note": "rate per model; models train one after another, so it holds for any count",
        }


class BoundTiming:
    """The bound measured: ``MatmulBound`` over a whole epoch (long enough to time on any device),
    compiled once, then one timed repetition per ``rep``."""

    def __init__(self, setup: Setup, log: CompileLog):
        self.setup, self.log = setup, log
        c0 = log.mark()
        t0 = time.perf_counter()
        self.bound = MatmulBound(setup.x_train, setup.full_steps, setup.hidden)
        self.first = time.perf_counter() - t0
        self.compiles, self.compile_s = log.since(c0)
        self.rates, self.recompiles = [], 0  # recompiles: inside timed reps (should stay 0)

    def rep(self) -> None:
        before = self.log.count
        self.rates.append(self.bound.rep() / self.setup.full_steps)
        self.recompiles += self.log.count - before

    def row(self) -> dict:
        return {
            "variant": "matmuls only", "members": 1, "epoch_examples": self.setup.n_full,
            "steps_per_epoch": self.setup.full_steps, "timed_steps": len(self.bound.x),
            "model_epochs_per_s": summary(self.rates),
            "host_cpu_s_per_model_epoch": None, "compile_s": self.compile_s,
            "first_calls_s": self.first, "setup_s": 0.0, "compilations_in_warmup": self.compiles,
            "recompiles_after_warmup": self.recompiles,
            "peak_host_mb": peak_host_mb(), "peak_device_mb": peak_device_mb(),
            "note": "bound: only the step's matrix products, one model, scanned (MatmulBound)",
        }


def engine_group(setup: Setup, k: int, n: int, mesh) -> engine.Group:
    """k cross-entropy members on the first n training examples, built as a sweep builds them:
    one program holds every built-in loss (masked branches)."""
    args, hidden = setup.args, setup.hidden
    settings = engine.TrainSettings(
        hidden=hidden, num_classes=CLASSES, activation="relu", init="lecun_normal",
        dtype="float32", optimizer="momentum", momentum=MOMENTUM, schedule="constant",
        batch_size=BATCH, epochs=args.reps + 1, block_size=args.block_size or k,
        kind=args.model, channels=args.channels)
    members = [engine.Member(i, "cross_entropy", LR, 0.0, 1.0, i, hidden, kind=args.model,
                             channels=args.channels) for i in range(k)]
    return engine.Group(settings, members, list(losses.LOSSES), list(losses.LOSSES.values()),
                        (setup.x_train[:n], setup.y_train[:n], *setup.eval_data), mesh)


def engine_row(setup: Setup, log: CompileLog, mesh, k: int,
               baselines: tuple) -> dict:
    """(b) measured for k members: setup, the warm-up (init, first epoch, first evaluate) and
    its compilations, then ``--reps`` timed epochs, each after a repetition of each baseline."""
    args, full_steps = setup.args, setup.full_steps
    n = engine_examples(args.train_examples, k, args.on_gpu, setup.n_full)
    steps = n // BATCH
    print(f"  ... engine, {k} members, {n}-example epochs", file=sys.stderr, flush=True)
    engine.clear_programs()
    c0 = log.mark()
    t0 = time.perf_counter()
    group = engine_group(setup, k, n, mesh)
    t1 = time.perf_counter()
    state = group.init_state()
    state, _ = group.train_epoch(state, 0)
    group.evaluate(state)
    first = time.perf_counter() - t1
    compiles_warmup, compile_secs = log.since(c0)
    programs = group.compiled_count()

    rates, cpu, recompiles, metrics = [], [], 0, None
    names_from = len(log.names)
    for r in range(args.reps):
        for baseline in baselines:
            baseline.rep()
        before = log.count
        t, c = time.perf_counter(), time.process_time()
        state, metrics = group.train_epoch(state, r + 1)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        recompiles += log.count - before
        rates.append(k * steps / dt / full_steps)
        cpu.append(dc * full_steps / (k * steps))
    before = log.count
    group.evaluate(state)
    recompiles += log.count - before
    return {
        "variant": "engine", "members": k, "block_size": group.settings.block_size,
        "epoch_examples": n, "steps_per_epoch": steps,
        "model_epochs_per_s": summary(rates),
        "host_cpu_s_per_model_epoch": statistics.median(cpu),
        "compile_s": compile_secs, "first_calls_s": first, "setup_s": t1 - t0,
        "compilations_in_warmup": compiles_warmup,
        "recompiles_after_warmup": recompiles,
        "group_program_cache_growth": group.compiled_count() - programs,
        "compilations_after_warmup_incl_loop": log.names[names_from:],
        "peak_host_mb": peak_host_mb(), "peak_device_mb": peak_device_mb(),
        "final_train_loss_mean": float(np.nanmean(metrics["train_loss"])),
    }


def add_ratios(table: list[dict], header: dict) -> None:
    """Each row's GFLOP/s, its median over the first row's (the loop's), and its fraction of
    the memory-traffic floor (None without one)."""
    floor = header["floor_model_epochs_per_s"]
    base = table[0]["model_epochs_per_s"]["median"]
    for row in table:
        med = row["model_epochs_per_s"]["median"]
        row["gflops"] = (med * header["steps_per_full_epoch"] * BATCH
                         * header["flop_per_example"] / 1e9)
        row["vs_loop"] = med / base
        row["floor_fraction"] = med / (floor * header["device_count"]) if floor else None


def write_json(where: str, header: dict, table: list[dict]) -> None:
    """``--json``: to ``where``, or (``auto``) under results/benchmark/, named by backend and
    time; the header gains the finishing time."""
    path = Path(where) if where != "auto" else (
        REPO / "results" / "benchmark" /
        f"benchmark-{header['backend']}-{time.strftime('%Y%m%d-%H%M%S')}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    header["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    path.write_text(json.dumps({"header": header, "rows": table}, indent=1))
    print(f"JSON: {path}")


def main(argv=None) -> int:
    args = parse_args(argv)
    # Compile times are measured here: every program is compiled, none read back from a
    # persistent cache (JAX_COMPILATION_CACHE_DIR, or a sweep's) or kept from an earlier group.
    jax.config.update("jax_enable_compilation_cache", False)
    log = CompileLog()
    facts, load_start = machine_facts()
    setup, source = load_setup(args)
    header = make_header(setup, facts, source)
    print_header(header, load_start)

    # The baselines compile once and are kept: their repetitions interleave with the engine's.
    # The matmul bound is written for the MLP's products: a CNN run has none.
    loop = LoopTiming(setup, log)
    baselines = (loop, BoundTiming(setup, log)) if args.model == "mlp" else (loop,)
    for baseline in baselines:
        baseline.rep()
    loop_peaks = peak_host_mb(), peak_device_mb()
    mesh = engine.make_mesh()
    rows = [engine_row(setup, log, mesh, k, baselines) for k in args.members]
    loop_row = loop.row(*loop_peaks)
    rows += [b.row() for b in baselines[1:]]
    add_ratios([loop_row, *rows], header)

    print_table(loop_row, rows, header)
    if args.json:
        write_json(args.json, header, [loop_row, *rows])
    return 0


def print_table(loop_row, rows, header) -> None:
    """The results table, then the notes on its columns."""
    gpu_cols = any(r["peak_device_mb"] is not None for r in [loop_row, *rows])
    floor_col = header["floor_model_epochs_per_s"] is not None
    cols = ["variant", "members", "timed on", "model-epochs/s (median [min-max])", "GFLOP/s",
            "vs loop", "compile s", "warm-up s", "recomp", "peak host MB"]
    if gpu_cols:
        cols.append("peak dev MB")
    if floor_col:
        cols.append("% floor")
    lines = []
    for r in [loop_row, *rows]:
        s = r["model_epochs_per_s"]
        unit = (f"{r['timed_steps']} steps" if "timed_steps" in r
                else f"{r['epoch_examples']}-ex. epochs")
        cells = [r["variant"], str(r["members"]), unit,
                 f"{s['median']:.3g} [{s['min']:.3g}-{s['max']:.3g}]", f"{r['gflops']:.1f}",
                 f"{r['vs_loop']:.2f}x", f"{r['compile_s']:.2f}", f"{r['first_calls_s']:.2f}",
                 str(r["recompiles_after_warmup"]), f"{r['peak_host_mb']:.0f}"]
        if gpu_cols:
            dev = r["peak_device_mb"]
            cells.append("-" if dev is None else f"{dev:.0f}")
        if floor_col:
            cells.append(f"{100 * r['floor_fraction']:.0f}%")
        lines.append(cells)
    widths = [max(len(c), *(len(line[i]) for line in lines)) for i, c in enumerate(cols)]
    print()
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip())
    for line in lines:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    print()
    for note in table_notes(rows, header, gpu_cols, floor_col):
        print(textwrap.fill(note, width=100, subsequent_indent="  "))


def table_notes(rows, header, gpu_cols: bool, floor_col: bool) -> list[str]:
    """What each column of ``print_table`` means, for the columns it printed."""
    n_full, full_steps = header["train_examples_full"], header["steps_per_full_epoch"]
    short = sorted({r["epoch_examples"] for r in rows if r["epoch_examples"] < n_full})
    notes = [
        f"model-epochs/s: full {n_full}-example epochs ({full_steps} steps of {BATCH}), i.e. "
        f"member-steps/s / {full_steps}."
        + (f" Engine rows timed on shorter epochs ({', '.join(map(str, short))} examples) are "
           "converted the same way; their per-epoch fixed work counts against them."
           if short else ""),
        "per-step loop: the rate of one model; models train one after another, so it is the "
        "same for every member count.",
        f"GFLOP/s: member-steps/s x {BATCH} x {header['flop_per_example'] / 1e6:.2f} MFLOP. "
        "vs loop: median / the per-step loop's median.",
        "compile s: JAX trace + lowering + XLA compile during the warm-up (loop: the first "
        "step; engine: init_state, first train_epoch, first evaluate on "
        f"{EVAL_EXAMPLES} + {EVAL_EXAMPLES} eval examples). warm-up s: wall time of those "
        "calls, compile included.",
        *["matmuls only: the step's matrix products alone for one model in a compiled scan "
        "(no loss, optimizer state, metrics or host work); one model's step costs at least "
        "this, so its 'vs loop' is the most that removing overhead could gain at one member "
        "(with several members, batched products can be more efficient). Not a variant: a "
        "bound."] * (header["model_kind"] == "mlp"),
        "recomp: compilations after the warm-up (timed reps, new loop models, a second "
        "evaluate); should be 0.",
        "peak host MB: ru_maxrss of the whole process so far (rows run top to bottom)"
        + ("; peak dev MB likewise (peak_bytes_in_use)." if gpu_cols else "."),
    ]
    if floor_col:
        notes.append(f"% floor: of {header['floor_model_epochs_per_s']:.0f} model-epochs/s "
                     f"per device = {header['bandwidth_gbs']:.0f} GB/s / "
                     f"({header['bytes_per_member_step'] / 1e6:.1f} MB x {full_steps} steps).")
    return notes


if __name__ == "__main__":
    sys.exit(main())
