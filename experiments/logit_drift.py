"""Why ``softmax_mse-no_push_up`` stalls at chance: the logits drift along a direction the loss
cannot see.

Softmax-MSE (like cross-entropy) depends on the logits only through ``softmax(s)``, which is
unchanged when a constant is added to every logit, so its per-example gradient sums to 0 over
the classes. ``no_push_up`` zeroes the negative wrong-class components and leaves a positive sum:
each step now also lowers every logit together, which the loss neither sees nor opposes.
``-balanced`` gives the removed amount to the true class, so the sum stays 0
(``lossjax/interventions.py``). This trains the three on the same batches from the same
weights and prints, every 50 steps, the batch accuracy, the mean logit (the shift), the mean
spread of the logits across classes, and the mean per-example sum of the logit gradient.

    python experiments/logit_drift.py --data-dir /path/to/mnist [--steps 400 --lr 0.3]
    python experiments/logit_drift.py --losses cross_entropy,cross_entropy-push_up_11x0.1,\
        cross_entropy-push_up_11x0.1-balanced --lr 0.1 --steps 2000 --every 250

The second asks the same of cross-entropy with a tenth of a push on one wrong class in nine
(``push_up_11x0.1``): the flipped component leaves the gradient a negative sum, so every logit
rises together.

A plain per-step loop on purpose: it is a diagnostic of a few hundred steps, not a study.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lossjax import resolve
from lossjax.data import dataset
from lossjax.data.splits import preprocess
from lossjax.model import MLP

LOSSES = ("softmax_mse", "softmax_mse-no_push_up", "softmax_mse-no_push_up-balanced")


def trace(name: str, x, y, steps: int, lr: float, batch: int, every: int, seed: int = 0):
    """Rows (step, accuracy, mean logit, spread, gradient sum) of one training run."""
    loss = resolve.resolve_loss(name)
    model = MLP(hidden=(500, 150), num_classes=10)
    params = model.init(jax.random.key(seed), x[:1])
    opt = optax.sgd(lr, momentum=0.9)
    state = opt.init(params)

    @jax.jit
    def step(params, state, xb, yb):
        onehot = jax.nn.one_hot(yb, 10)
        # One forward pass: the logits, then the batch-mean loss's logit gradient pulled back
        # to the parameters (what jax.grad of the composition computes).
        logits, pullback = jax.vjp(lambda p: model.apply(p, xb), params)
        g_logits = jax.grad(lambda s: jnp.mean(loss(s, onehot)))(logits)
        (grads,) = pullback(g_logits)
        updates, state = opt.update(grads, state, params)
        stats = (jnp.mean(jnp.argmax(logits, -1) == yb), jnp.mean(logits),
                 jnp.mean(jnp.std(logits, -1)), jnp.mean(jnp.sum(g_logits, -1)) * len(yb))
        return optax.apply_updates(params, updates), state, stats

    order = np.random.default_rng(seed).permutation(len(x))
    rows = []
    for i in range(steps):
        idx = order[(i * batch) % (len(x) - batch):][:batch]
        params, state, stats = step(params, state, x[idx], y[idx])
        if i % every == 0 or i == steps - 1:
            rows.append((i, *(float(v) for v in stats)))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--lr", type=float, default=0.3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--losses", default=",".join(LOSSES), help="comma-separated loss names")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.losses.split(",") if n.strip()]
    for n in names:
        resolve.resolve_loss(n)  # an unknown name fails here, before the data load
    ds = preprocess(dataset.load("mnist", args.data_dir, val_size=6000, split_seed=0))
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    print(f"MNIST, MLP 784-500-150-10, momentum 0.9, lr {args.lr:g}, batch {args.batch}, "
          "same weights and batches for each loss")
    print("| loss | step | batch acc. | mean logit | logit spread | gradient sum |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in names:
        for i, acc, mean, spread, gsum in trace(name, x, y, args.steps, args.lr, args.batch,
                                                args.every):
            print(f"| `{name}` | {i} | {acc:.2f} | {mean:+.2f} | {spread:.2f} | {gsum:+.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
