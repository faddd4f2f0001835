"""What the probability-quality metrics cost per epoch: the engine's evaluation of val and test
(``Group.evaluate``) with them (``calibration=True``, the default) and without, side by side.

The two groups are built on the same data and members and timed in alternation, repetition
after repetition, so that a load that comes and goes on a shared machine falls on both; best
and median of the repetitions. Also once: the last epoch's extra program (temperature scaling
on val, then test metrics at that temperature), ``evaluate(final=True)`` minus a plain one.

    python experiments/calibration_cost.py [--reps 7] [--mnist-sized]

``--mnist-sized`` adds random data shaped as MNIST (784 features, 10 classes, 10k val, 10k test)
with the 784-512-512-10 MLP; the default is digits with the 64-64 MLP of configs/digits.yaml.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from lossjax import data, engine, losses


def _groups(hidden, x_tr, y_tr, x_v, y_v, x_te, y_te):
    settings = engine.TrainSettings(
        hidden=hidden, num_classes=10, activation="relu", init="lecun_normal",
        dtype="float32", optimizer="momentum", momentum=0.9, schedule="constant",
        batch_size=128, epochs=1)
    members = [engine.Member(0, "cross_entropy", 0.1, 0.0, 1.0, 0, hidden)]
    names = list(losses.LOSSES)
    fns = [losses.LOSSES[n] for n in names]
    arrays = (x_tr, y_tr, x_v, y_v, x_te, y_te)
    return {flag: engine.Group(settings, members, names, fns, arrays, engine.make_mesh(),
                               calibration=flag) for flag in (False, True)}


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(name: str, hidden, arrays, reps: int) -> None:
    groups = _groups(hidden, *arrays)
    states = {}
    for flag, g in groups.items():
        states[flag], _ = g.train_epoch(g.init_state(), 0)
        g.evaluate(states[flag])  # compile
        g.evaluate(states[flag], final=True)
    times = {False: [], True: []}
    for _ in range(reps):
        for flag in (False, True):
            times[flag].append(_time(lambda f=flag: groups[f].evaluate(states[f])))
    final = [(_time(lambda: groups[True].evaluate(states[True], final=True))
              - _time(lambda: groups[True].evaluate(states[True]))) for _ in range(3)]
    for flag, label in ((False, "without"), (True, "with")):
        t = times[flag]
        print(f"{name}: evaluation {label} calibration: best {1e3 * min(t):.1f} ms, median "
              f"{1e3 * statistics.median(t):.1f} ms ({reps} reps)")
    ratio = statistics.median(times[True]) / statistics.median(times[False])
    print(f"{name}: with/without, medians: {ratio:.3f}; best: "
          f"{min(times[True]) / min(times[False]):.3f}")
    print(f"{name}: last epoch's temperature program, extra: median "
          f"{1e3 * statistics.median(final):.1f} ms (3 reps)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--mnist-sized", action="store_true")
    args = ap.parse_args()
    ds = data.preprocess(data.load("digits", val_size=0.1, split_seed=0), standardize=True)
    measure("digits 64-64-10 (144 val, 359 test)", (64, 64),
            (ds.x_train, ds.y_train, ds.x_val, ds.y_val, ds.x_test, ds.y_test), args.reps)
    if args.mnist_sized:
        rng = np.random.default_rng(0)

        def split(n):
            return rng.random((n, 784), np.float32), rng.integers(0, 10, n).astype(np.int32)

        measure("random 784-512-512-10 (10k val, 10k test)", (512, 512),
                (*split(512), *split(10_000), *split(10_000)), args.reps)


if __name__ == "__main__":
    main()
