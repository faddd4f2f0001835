"""A short learning-rate pilot: a config's model and losses, one seed, a few epochs on the first
``--examples`` training images, each rate of ``--rates``; prints the validation accuracy of
each (loss, rate) after every epoch. For choosing a config's grids, not for results.

    python experiments/cnn_pilot.py configs/mnist_cnn.yaml --examples 6000 --epochs 2 \\
        --rates 0.01,0.03,0.1,0.3,1 --set dataset.data_dir=/path/to/mnist
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from lossjax import data, engine, sweep
from lossjax.resolve import resolve_loss


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config")
    p.add_argument("--examples", type=int, default=6000, help="training images used")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--rates", default="0.01,0.03,0.1,0.3,1")
    p.add_argument("--losses", default=None, help="comma-separated; default: the config's")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)

    cfg = sweep.load(args.config, args.set)
    losses = args.losses.split(",") if args.losses else list(cfg.losses)
    rates = [float(r) for r in args.rates.split(",")]
    cfg = dataclasses.replace(cfg, epochs=args.epochs, block_size=1, seeds=(0,), losses=tuple(
        losses), optimizer=dataclasses.replace(cfg.optimizer, learning_rate={
            loss: tuple(rates) for loss in losses}))
    raw = data.load(cfg.dataset.name, data_dir=cfg.dataset.data_dir,
                    val_size=cfg.dataset.val_size, split_seed=cfg.dataset.split_seed)
    ds = sweep.model_input(cfg.model.kind, data.preprocess(
        raw, standardize=cfg.dataset.standardize), raw.x_train.shape[1:])
    n = args.examples
    arrays = (ds.x_train[:n], ds.y_train[:n], ds.x_val, ds.y_val, ds.x_test[:0], ds.y_test[:0])
    loss_fns = {name: resolve_loss(name) for name in losses}
    print(f"{cfg.dataset.name}, {cfg.model.kind} {list(cfg.model.channels)} + "
          f"{list(cfg.model.hidden[0])}, {n} training images, {args.epochs} epochs")
    best: dict[str, tuple[float, float]] = {}
    for group in sweep.group_members(sweep.expand_members(cfg)):
        g = engine.Group(sweep._settings(cfg, group[0], ds.num_classes), group,
                         *sweep.group_losses(group, loss_fns), arrays, engine.make_mesh())
        state, t0 = g.init_state(), time.perf_counter()
        for epoch in range(args.epochs):
            state, m = g.train_epoch(state, epoch)
            val = g.evaluate(state)["val_acc"]
            for member, acc, div in zip(group, val, m["diverged"], strict=True):
                print(f"epoch {epoch + 1} {member.loss:>16} lr {member.learning_rate:<6g} "
                      f"val acc {acc:.4f}{' diverged' if div else ''}", flush=True)
        print(f"({time.perf_counter() - t0:.0f} s)")
        for member, acc in zip(group, val, strict=True):
            if np.isfinite(acc) and acc > best.get(member.loss, (-1.0, 0.0))[0]:
                best[member.loss] = (float(acc), member.learning_rate)
    print("best per loss (val acc, rate):", best)


if __name__ == "__main__":
    main()
