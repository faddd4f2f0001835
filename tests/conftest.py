"""Helpers and fixtures that more than one test module uses; the data tests' file builders are
in data_helpers.py."""

import dataclasses
import hashlib
import http.server
import importlib.util
import itertools
import json
import math
import os
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

# One persistent compilation cache for the test runs, before JAX is imported (it reads these
# variables then): xdist's workers and every subprocess a test starts inherit it, so a program
# that one test compiled is read back by the others, and by the next run (`make test-slow`
# after `make test` in CI, a developer's next run). It lives in .pytest_cache, one folder per
# jaxlib and machine (lossjax.compile_cache.machine_key: JAX's own key leaves out the CPU), and
# starts empty again once it passes 2 GB (JAX's own bound would need the filelock package).
# Every program is stored (no minimum compile time). A JAX_COMPILATION_CACHE_DIR you set is
# used instead; tests that measure compiling, or the cache itself, set their own.
# LOSSJAX_TEST_COMPILE_CACHE=0 turns it off.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ and os.environ.get(
        "LOSSJAX_TEST_COMPILE_CACHE", "1") != "0":
    from lossjax import compile_cache

    _cache = (Path(__file__).resolve().parents[1] / ".pytest_cache" / "lossjax-xla"
              / compile_cache.machine_key())
    if compile_cache.size(_cache)[1] > 2 * 1024**3:
        shutil.rmtree(_cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(_cache)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest
import yaml

from lossjax import cli, data, engine, folder, losses, stats, tables
from lossjax.data import download
from lossjax.model import MLP

#: A two-loss, few-member digits sweep that trains in a few seconds: the folder the safety,
#: resume and machine tests take apart.
SMALL_SWEEP = {
    "name": "small",
    "seeds": [0, 1],
    "epochs": 3,
    "batch_size": 128,
    "block_size": 2,
    "losses": ["cross_entropy", "mse"],
    "dataset": {"name": "digits"},
    "model": {"hidden": [[8]]},
    "optimizer": {"learning_rate": [0.1]},
    "eval": {"target_accuracy": 0.5},
}


def experiment(name: str):
    """The script ``experiments/<name>.py``, imported from its file (experiments/ is no
    package)."""
    path = Path(__file__).resolve().parents[1] / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_in_subprocess(code: str, marker: str) -> None:
    """Runs ``code`` in a fresh CPU-only Python and checks it printed ``marker``. For what must
    not leak into the test process: forced host devices, ``jax_enable_x64``."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300)
    assert marker in r.stdout, r.stderr[-3000:]


# XLA's CPU client sizes its thread pool, and its compiler splits loops into as many parts, by
# the larger of PJRT_NPROC (else the core count) and the device count: on 2 cores, 4 forced
# devices compile and run another program than 1 or 2, which on some CPU models rounds
# differently in the last bit. Tests that compare bits across device counts therefore hold
# PJRT_NPROC at the largest count any test forces.
FORCED_NPROC = 8


def forced_devices_env(devices: int, base=None, nproc: int | None = FORCED_NPROC) -> dict:
    """``base`` (default ``os.environ``) on the CPU with ``devices`` forced host devices, no
    multi-process variables, and PJRT_NPROC at ``nproc`` (None: XLA's own choice)."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if k not in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
                        "PJRT_NPROC")}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    if nproc is not None:
        env["PJRT_NPROC"] = str(nproc)
    if "JAX_COMPILATION_CACHE_DIR" in env:
        # XLA splits loops by the thread pool's size, which JAX's cache key leaves out: one
        # folder per PJRT_NPROC, so a run under one pool never reads another's programs.
        env["JAX_COMPILATION_CACHE_DIR"] = os.path.join(env["JAX_COMPILATION_CACHE_DIR"],
                                                        f"pjrt_nproc-{nproc or 'default'}")
    return env


def run_counting_groups(config, output_dir) -> tuple:
    """``lossjax.run(config, output_dir=...)`` quietly, with every ``engine.Group`` it built:
    (its Results, the groups in order)."""
    import lossjax  # lazy, as the tests that use it import it

    built = []

    class Counted(engine.Group):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine, "Group", Counted)
        res = lossjax.run(config, output_dir=output_dir, progress=False)
    return res, built


def member_numbers(group, index: int, epochs: int = 2) -> list:
    """Everything ``group`` (an ``engine.Group``) reports for member ``index`` while it trains
    for ``epochs``, then that member's final parameters."""
    state = group.init_state()
    out = []
    for e in range(epochs):
        state, m = group.train_epoch(state, e)
        out += [v[index] for v in {**m, **group.evaluate(state)}.values()]
    return out + [leaf[index] for leaf in group.local_state(state)[1]]


# ---- synthetic results folders (analysis, plots, reports, comparisons) -----------------------


def make_results(
    path,
    losses=("cross_entropy", "mse"),
    lrs=(0.1, 1.0),
    seeds=(0, 1),
    epochs=3,
    hidden=("64-64",),
    diverge=(("mse", 1.0, 1, 2),),
    weight_decays=(0.0,),
):
    """Writes a synthetic results folder. ``diverge`` holds (loss, lr, seed, epoch) members that
    go NaN at that epoch: their train_loss is NaN from then on, other metrics frozen. Its
    status.json says "not complete", as a sweep's does while it draws its plots and report."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "status.json").write_text('{"complete": false}')
    rng = np.random.default_rng(0)
    rows, member = [], 0
    for h, loss, lr, wd in itertools.product(hidden, losses, lrs, weight_decays):
        for seed in seeds:
            speed = (1.0 if loss == "cross_entropy" else 0.6) * (1 + 0.3 * math.log10(lr))
            div_at = next((e for (lo, r, s, e) in diverge
                           if (lo, r, s) == (loss, lr, seed)), None)
            last = None
            for epoch in range(1, epochs + 1):
                if div_at is not None and epoch >= div_at:
                    rows.append({**last, "epoch": epoch, "train_loss": math.nan,
                                 "diverged": True, "wall_time": 0.1 * epoch})
                    continue
                acc = 0.1 + 0.85 * (1 - math.exp(-speed * epoch)) + 0.01 * rng.normal()
                last = {
                    "member": member, "loss": loss, "hidden": h, "learning_rate": lr,
                    "weight_decay": wd, "init_scale": 1.0, "seed": seed,
                    "epoch": epoch, "train_loss": 2.3 * math.exp(-speed * epoch),
                    "train_acc": acc + 0.02, "val_acc": acc - 0.01, "test_acc": acc,
                    "test_ce": 2.0 * math.exp(-speed * epoch),
                    "wrong_frac": 0.0 if loss in ("cross_entropy", "exp_mse")
                    else 0.4 / epoch,
                    "grad_norm": 0.5 / epoch, "diverged": False,
                    "wall_time": 0.1 * epoch,
                }
                rows.append(last)
            member += 1
    ep = pd.DataFrame(rows)
    ep.to_csv(path / "epochs.csv", index=False)

    final = ep[ep["epoch"] == epochs]
    summ = []
    for (loss, h, wd), g in final.groupby(["loss", "hidden", "weight_decay"], sort=False):
        # The sweep's rule: best mean final validation accuracy, a diverged member scoring 0.
        score = g["val_acc"].where(~g["diverged"], 0.0)
        lr = float(score.groupby(g["learning_rate"]).mean().idxmax())
        c = g[g["learning_rate"] == lr]
        summ.append({
            "loss": loss, "hidden": h, "weight_decay": wd, "init_scale": 1.0,
            "learning_rate": lr, "lr_at_grid_edge": lr in (min(lrs), max(lrs)),
            "n_seeds": len(c), "val_acc_mean": c["val_acc"].mean(),
            "test_acc_mean": c["test_acc"].mean(), "test_acc_ci95": 0.012,
            "epochs_to_target_mean": 2.0 if loss == "cross_entropy" else math.nan,
            "reached_target": len(c) if loss == "cross_entropy" else 0,
            "diverged_at_lr": int(c["diverged"].sum()), "diverged": int(g["diverged"].sum()),
        })
    pd.DataFrame(summ).to_csv(path / "summary.csv", index=False)
    config = {  # the keys plots and report read, and the grids whose product is the members
        "name": "synthetic-test", "dataset": {"name": "digits"}, "seeds": list(seeds),
        "losses": list(losses),
        "model": {"hidden": [[int(w) for w in h.split("-") if w.isdigit()] for h in hidden],
                  "activation": "relu", "init_scale": [1.0]},
        "optimizer": {"name": "momentum", "learning_rate": {loss: list(lrs) for loss in losses},
                      "weight_decay": list(weight_decays)},
        "batch_size": 64, "epochs": epochs, "eval": {"target_accuracy": 0.9},
    }
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    (path / "env.json").write_text(json.dumps({
        "python": "3.11", "jax": "0.0-test", "devices": ["TFRT_CPU_0"], "device_kind": "cpu",
        "process_count": 1, "x64": False, "default_matmul_precision": "default"}))
    return path


@pytest.fixture
def results_dir(tmp_path):
    """The default synthetic results folder, in a fresh tmp_path."""
    return make_results(tmp_path / "sweep")


def all_diverge(losses, lrs=(0.1, 1.0), seeds=(0, 1)):
    """make_results's ``diverge`` for every member of ``losses``: all go NaN at epoch 2."""
    return tuple((loss, lr, seed, 2) for loss in losses for lr in lrs for seed in seeds)


def resummarize(d):
    """Rewrites summary.csv as the sweep does, from epochs.csv."""
    summary = stats.summarize(pd.read_csv(d / "epochs.csv", dtype={"hidden": str}), 0.9)
    folder.write_table(d / "summary.csv", summary)
    return summary


def tie_folder(path):
    """Three seeds; final validation accuracy set by hand: cross_entropy's lr 1 beats 0.1 on
    every seed by about 0.1 (decided); mse's 0.1 and 1 overlap (per seed +0.02, -0.04, +0.03:
    tied). Its summary.csv lacks the rate-choice columns, as a folder from before them."""
    d = make_results(path, seeds=(0, 1, 2), diverge=())
    ep = pd.read_csv(d / "epochs.csv", dtype={"hidden": str})
    val = {("cross_entropy", 1.0): (0.90, 0.91, 0.92), ("cross_entropy", 0.1): (0.80, 0.82, 0.81),
           ("mse", 0.1): (0.90, 0.85, 0.92), ("mse", 1.0): (0.88, 0.89, 0.89)}
    ep["val_acc"] = [val[(r.loss, r.learning_rate)][r.seed] for r in ep.itertuples()]
    ep.to_csv(d / "epochs.csv", index=False)
    # summary.csv as sweeps wrote it before the rate-choice columns.
    old = resummarize(d).drop(columns=list(tables.RATE_CHOICE_COLUMNS))
    folder.write_table(d / "summary.csv", old)
    return d


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_files(paths):
    """Each path is a non-empty PNG or SVG file, as its suffix says."""
    for p in paths:
        assert p.is_file() and p.stat().st_size > 0, p
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == PNG_MAGIC, p
        else:
            assert ET.parse(p).getroot().tag.endswith("svg"), p


# ---- sweeps through the CLI ---------------------------------------------------------------------


def assert_same_files(a: Path, b: Path) -> None:
    """epochs.csv byte for byte but for the wall_time column, summary.csv and final.csv byte for
    byte."""
    def text(folder):
        lines = (folder / "epochs.csv").read_text().splitlines()
        return [line.rsplit(",", 1)[0] for line in lines]  # wall_time is the last column

    assert text(a) == text(b)
    assert (a / "summary.csv").read_bytes() == (b / "summary.csv").read_bytes()
    assert (a / "final.csv").is_file() == (b / "final.csv").is_file()
    if (a / "final.csv").is_file():
        assert (a / "final.csv").read_bytes() == (b / "final.csv").read_bytes()


def small_config(tmp: Path, out: Path | None = None, **changes) -> str:
    """Writes SMALL_SWEEP with ``changes`` to tmp/small.yaml, output in ``out`` (tmp/runs)."""
    cfg = {**SMALL_SWEEP, **changes, "output": {"dir": str(out or tmp / "runs")}}
    path = tmp / "small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def quiet_sweep(capsys, *args) -> tuple[int, str]:
    """``lossjax sweep ARGS --quiet`` in this process: its exit code and what it wrote to stderr."""
    code = cli.main(["sweep", *map(str, args), "--quiet"])
    return code, capsys.readouterr().err


def one_line(err: str, *needles: str) -> None:
    """``err`` is one line, no traceback, holding every needle."""
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err


# ---- sweeps over several processes on 127.0.0.1 -----------------------------------------------

MULTIHOST_CONFIG = {
    "name": "hosts",
    "seeds": [0, 1],
    "epochs": 3,
    "batch_size": 64,
    "losses": ["cross_entropy", "mse"],
    "dataset": {"name": "digits"},
    "model": {"hidden": [[16]]},
    # 2 losses x 2 rates x 2 seeds = 8 members: two calls of one member per device.
    "optimizer": {"learning_rate": {"cross_entropy": [0.05, 0.2], "mse": [0.05, 0.2]}},
    "block_size": 1,
}

# The sweep, optionally slowed down after each epoch so the test can kill it mid-sweep.
MULTIHOST_SWEEP = textwrap.dedent("""
    import sys, time
    from lossjax import cli, engine
    if sys.argv[2] == "slow":
        real = engine.Group.train_epoch
        def slow(self, state, epoch, active=None):
            out = real(self, state, epoch, active)
            time.sleep(0.5)
            return out
        engine.Group.train_epoch = slow
    sys.exit(cli.main(["sweep", sys.argv[1], "--quiet", *sys.argv[3:]]))
""")


def multihost_config(tmp: Path, out: str) -> str:
    """Writes MULTIHOST_CONFIG to tmp/OUT.yaml, output in tmp/OUT."""
    path = tmp / f"{out}.yaml"
    path.write_text(yaml.safe_dump({**MULTIHOST_CONFIG, "output": {"dir": str(tmp / out)}}))
    return str(path)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a JAX coordinator)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def finish(procs) -> list[tuple[int, str, str]]:
    """Waits for each process: its exit code, stdout and stderr."""
    outs = [p.communicate(timeout=240) for p in procs]
    return [(p.returncode, o, e) for p, (o, e) in zip(procs, outs, strict=True)]


# ---- TensorBoard event files, read back without TensorFlow ---------------------------------------


def _masked_crc(data: bytes) -> int:
    # TFRecord's checksum: CRC-32C, rotated right by 15 and offset, as in TensorFlow's
    # tensorflow/core/lib/hash/crc32c.h (Mask).
    from tensorboardX.crc32c import crc32c  # lazy: protobuf, for the event-reading tests only

    x = crc32c(data) & 0xFFFFFFFF
    return (((x >> 15) | (x << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_events(path):
    """Every Event of one event file: records of uint64 length, uint32 masked CRC of the length,
    the data, uint32 masked CRC of the data (all little-endian)."""
    from tensorboardX.proto.event_pb2 import Event  # lazy: as in _masked_crc

    events, buf, at = [], path.read_bytes(), 0
    while at < len(buf):
        header = buf[at:at + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack_from("<I", buf, at + 8)
        assert header_crc == _masked_crc(header)
        data = buf[at + 12:at + 12 + length]
        (data_crc,) = struct.unpack_from("<I", buf, at + 12 + length)
        assert len(data) == length and data_crc == _masked_crc(data)
        events.append(Event.FromString(data))
        at += 12 + length + 4
    return events


def scalars(events):
    """{(step, tag): value} of every scalar in ``events``."""
    return {(e.step, v.tag): v.simple_value for e in events for v in e.summary.value}


# ---- a toy problem, and the textbook optax loop that trains it (the engine's reference) ---------

TOY_N, TOY_FEATURES, TOY_CLASSES, TOY_HIDDEN = 240, 20, 5, (16,)
TOY_BATCH, TOY_EPOCHS, TOY_SEED, TOY_MOMENTUM = 32, 2, 3, 0.9  # 7 steps per epoch, 14 in all
TOY_RATES = {"cross_entropy": 0.1, "mse": 0.1, "softmax_mse": 1.0, "exp_mse": 0.02}  # others: 0.1


def toy_rate(loss: str) -> float:
    """The learning rate the toy problem trains ``loss`` at."""
    return TOY_RATES.get(loss, 0.1)


def toy_data():
    """The toy problem's (x_train, y_train, x_val, y_val, x_test, y_test): random, fixed."""
    rng = np.random.default_rng(0)
    x = rng.random((TOY_N, TOY_FEATURES), np.float32)
    y = rng.integers(0, TOY_CLASSES, TOY_N)
    return x, y, x[:50], y[:50], x[50:110], y[50:110]


def toy_settings(dtype):
    """The engine's TrainSettings for the toy problem: momentum, constant rate, block_size 1."""
    return engine.TrainSettings(
        hidden=TOY_HIDDEN, num_classes=TOY_CLASSES, activation="relu", init="lecun_normal",
        dtype=dtype, optimizer="momentum", momentum=TOY_MOMENTUM, schedule="constant",
        batch_size=TOY_BATCH, epochs=TOY_EPOCHS, block_size=1)


def textbook_params(dtype: str, loss: str, tx=None):
    """The same member trained by the loop every optax tutorial writes, from the initial
    parameters and on the batches that the engine's documented recipe gives:
    init key fold_in(key(seed), 0); epoch e's batches are the first steps × batch entries of a
    permutation drawn with fold_in(fold_in(key(seed), 1), e). ``tx``, if given, is the optax
    transformation in place of the loop's optax.sgd(rate, momentum=TOY_MOMENTUM)."""
    feat = jnp.float64 if dtype == "float64" else jnp.float32
    model = MLP(hidden=TOY_HIDDEN, num_classes=TOY_CLASSES, activation="relu",
                initializer="lecun_normal", dtype=dtype)
    params = model.init(jax.random.fold_in(jax.random.key(TOY_SEED), 0),
                        jnp.zeros((1, TOY_FEATURES), feat))
    init = jax.tree.map(np.array, params)
    if tx is None:
        # The engine holds learning rates in float32 (config.py says so); in float64 the rate
        # is that float32 number, not the nearest float64 to 0.1.
        tx = optax.sgd(float(np.float32(toy_rate(loss))), momentum=TOY_MOMENTUM)
    loss_fn = losses.LOSSES[loss]

    @jax.jit
    def step(params, opt, x, labels):
        def mean_loss(p):
            return jnp.mean(loss_fn(model.apply(p, x), jax.nn.one_hot(labels, TOY_CLASSES,
                                                                     dtype=x.dtype)))

        grads = jax.grad(mean_loss)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt

    x_train, y_train = toy_data()[:2]
    x_train = jnp.asarray(x_train, feat)
    steps = TOY_N // TOY_BATCH
    opt = tx.init(params)
    for epoch in range(TOY_EPOCHS):
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(TOY_SEED), 1), epoch)
        batches = jax.random.permutation(key, TOY_N)[: steps * TOY_BATCH].reshape(steps,
                                                                                  TOY_BATCH)
        for idx in batches:
            params, opt = step(params, opt, x_train[idx], jnp.asarray(y_train)[idx])
    return init, jax.tree.map(np.array, params)


def compare_params(a, b, **tol):
    """Two parameter trees: same structure and dtypes; values within ``tol`` (exact if empty)."""
    leaves_a = jax.tree_util.tree_leaves_with_path(a)
    leaves_b = jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for (path, x), y in zip(leaves_a, leaves_b, strict=True):
        assert x.dtype == y.dtype, jax.tree_util.keystr(path)
        if tol:
            np.testing.assert_allclose(y, x, err_msg=jax.tree_util.keystr(path), **tol)
        else:
            np.testing.assert_array_equal(y, x, err_msg=jax.tree_util.keystr(path))


# ---- a local HTTP server in place of the dataset hosts -----------------------------------------

REAL_NETWORK_REACHABLE = download.network_reachable
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY",
                   "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture
def hosts(monkeypatch):
    """A local HTTP server in place of the dataset hosts. ``serve(name, key, path)`` points
    ``DOWNLOADS[name][key]`` at it and registers the file's size and sha256 (or
    ``registered_sha``) the way tfds registers the real ones; ``calls`` lists the URLs fetched."""
    served: dict[str, Path] = {}
    calls: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            path = served.get(self.path)
            calls.append(self.path)
            if path is None:
                self.send_error(404)
                return
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    for var in PROXY_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(download, "network_reachable", REAL_NETWORK_REACHABLE)
    # A UrlInfo of tfds's own making, as the template: the registry's entries are compared as
    # such, so a look-alike of lossjax's would never match.
    template = next(iter(download.registered_checksums("mnist").values()))
    registry = {}
    monkeypatch.setattr(download, "registered_checksums", lambda name: dict(registry))

    def serve(name: str, key: str, path: Path, registered_sha: str | None = None) -> None:
        url_path = f"/{name}/{path.name}"
        served[url_path] = path
        monkeypatch.setitem(data.DOWNLOADS, name, {**data.DOWNLOADS[name], key: base + url_path})
        registry[base + url_path] = dataclasses.replace(
            template, size=path.stat().st_size, filename=path.name,
            checksum=registered_sha or hashlib.sha256(path.read_bytes()).hexdigest())

    yield serve, calls
    server.shutdown()
    server.server_close()
