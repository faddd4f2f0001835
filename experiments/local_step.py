"""At the very same parameters, is one step along a variant's edited gradient better than one
along its base loss's gradient?

``lossjax causal`` trains a variant (``mse-no_push_up``, ...) beside its base member of the same
seed and compares their speed. The two runs start alike, but every edited step moves the variant
elsewhere, and from epoch 1 on the variant's gradients are taken at other parameters than the
base's: a paired difference in speed mixes the edit's direct effect on a step with where the
edited run has gone (trajectory drift). This removes the drift. It trains one base member
(:class:`lossjax.model.MLP`, optax SGD with momentum, initial weights and batch order derived
from the seed as the sweep engine derives them: on digits, MLP 64-64, mse at 0.3, seed 0, its
validation accuracy and cross-entropy after epochs 1 and 2 are results/digits' member's to the
digits epochs.csv keeps), keeps its parameters θ after the epochs of
``--at`` (0 is the initialization) and, at each θ and for each of ``--batches`` training batches
(drawn once with ``--batch-seed``, the same for every state and both directions), takes

- the base gradient ``g_b = ∇θ mean L_base(θ; batch)`` and the edited one
  ``g_e = ∇θ mean L_variant(θ; batch)`` (autodiff through the variant's custom VJP, which
  edits the logit gradient: :mod:`lossjax.interventions`);
- one plain SGD step along each, the edited one rescaled to the base's length over all
  parameters: ``θ_b = θ − lr g_b`` and ``θ_e = θ − lr (‖g_b‖/‖g_e‖) g_e``;
- on the whole validation split: ``Δ = metric(θ_e) − metric(θ_b)`` for the base loss's value,
  the cross-entropy of ``softmax(logits)`` and the accuracy, and each step's change from θ.

Per state it reports the mean Δ over batches with its 95% t-interval
(:func:`lossjax.stats.ci95_halfwidth`), the fraction of batches where the edited step did better
(lower loss, higher accuracy), and the cosine between ``g_b`` and ``g_e`` and the ratio
``‖g_e‖/‖g_b‖`` before rescaling. If removing the pushes helps learning directly, Δ loss < 0 and
Δ accuracy > 0 at the same θ. For a small lr the difference is first order,
``Δ ≈ −lr ∇θ L_val · (ĝ_e − g_b)`` with ``ĝ_e`` the rescaled edit: it asks whether the edited
direction points further down the validation loss than the base's.

What each control holds fixed:

- this script's *parameter-level* matching keeps the step's length in parameter space
  (``‖θ_e − θ‖ = ‖θ_b − θ‖``), so only its direction differs; each example's share of the step
  may change;
- a ``-norm_matched`` variant's *logit-level* matching keeps each example's logit-gradient
  norm (the edit redistributes a gradient over the classes without reweighting examples), but
  the parameter step's length may still change, as the examples' pulled-back contributions
  add up differently. Given such a variant, both hold: each example keeps its logit-gradient
  norm, and the whole step is then rescaled to the base's length;
- the variant equal to the base (``--variant mse`` for ``--loss mse``) is the null control: Δ
  is exactly 0 and the cosine 1.

Neither control follows an edit past one step: what momentum and the steps after it make of
it is what ``lossjax causal`` measures.

    python experiments/local_step.py --dataset mnist --loss mse --variant mse-no_push_up \\
        --at 0,1,2,5 --batches 100 --out runs/local_step_mnist

Defaults follow configs/mnist.yaml (MLP 500-150, batch 128, momentum 0.9, seed 0,
validation 10% of training, split seed 0) and the base loss's chosen rate in
results/mnist/summary.csv (:data:`CHOSEN_RATES`; other losses need ``--learning-rate``).
``--lr``, the local step's size, defaults to the training rate. The N steps of one state run in
one compiled program (``lax.map`` over batches, ``--chunk`` of them vmapped at a time), their
validation metrics included: the command above took 86 s on two busy CPU cores (training 14 s,
the 4 × 100 local steps with 6,000 validation examples each 66 s).

Writes ``local_step.json`` (everything, per batch too), ``local_step.md`` (the table) and
``local_step.{png,svg}`` (Δ validation loss, cross-entropy and accuracy against the state's
epoch) into ``--out``, each atomically; any other file there is left alone, and in a lossjax
results folder ``--overwrite`` removes these four. Bad arguments: one line, exit 2, nothing
written.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from matplotlib import rc_context  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from lossjax import data, interventions, plots, provenance, resolve, stats  # noqa: E402
from lossjax.errors import ConfigError, LossjaxError, one_line  # noqa: E402
from lossjax.folder import locked, record_written, write_json, write_text  # noqa: E402
from lossjax.model import MLP  # noqa: E402
from lossjax.report_provenance import script_line  # noqa: E402

NAME = "local_step"
#: Each base loss's chosen learning rate in results/mnist/summary.csv (MLP 500-150, momentum 0.9).
CHOSEN_RATES = {"cross_entropy": 0.1, "mse": 0.3, "softmax_mse": 1.0, "exp_mse": 0.05,
                "squentropy": 0.03, "label_smoothing_ce(alpha=0.1)": 0.1, "focal(gamma=2)": 0.1}
#: (key, label, True where lower is better) of the validation metrics, in the arrays' order.
METRICS = (("loss", "base loss", True), ("nll", "cross-entropy", True),
           ("acc", "accuracy", False))


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not the usage block
        self.exit(2, f"{self.prog}: error: {one_line(message)}\n")


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{option}: got {text!r}; expected integers separated by commas, "
                          "e.g. 0,1,2,5") from None
    if not values or min(values) < 0:
        raise ConfigError(f"{option}: got {text!r}; expected integers >= 0, e.g. 0,1,2,5")
    return values


def _hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in text.split("-")) if text else ()
    except ValueError:
        sizes = (0,)
    if any(s < 1 for s in sizes):
        raise ConfigError(f"--hidden: got {text!r}; expected layer sizes >= 1 joined by '-', "
                          "e.g. 500-150 ('' for a linear model)")
    return sizes


def check_args(args) -> dict:
    """The run's settings from the parsed arguments; ``ConfigError`` (one line naming the
    option) for anything wrong, before any data is read."""
    if args.dataset not in data.DATASETS:
        raise ConfigError(f"--dataset: got {args.dataset!r}; expected one of "
                          f"{', '.join(data.DATASETS)}")
    try:
        base = resolve.canonical(args.loss)
        base_fn = resolve.resolve_loss(args.loss)
    except ValueError as e:
        raise ConfigError(f"--loss: {one_line(e)}") from None
    if interventions.is_variant(base):
        raise ConfigError(f"--loss: got {args.loss!r}, a variant; expected its base loss "
                          f"({interventions.Variant.parse(base).base!r}), the variant to "
                          "--variant")
    try:
        variant = resolve.canonical(args.variant)
        variant_fn = resolve.resolve_loss(args.variant)
    except ValueError as e:
        raise ConfigError(f"--variant: {one_line(e)}") from None
    if variant != base and not (interventions.is_variant(variant)
                                and interventions.Variant.parse(variant).base == base):
        raise ConfigError(f"--variant: got {args.variant!r}, which is not a variant of --loss "
                          f"{base!r}; expected {base}-<edit>[-balanced][-norm_matched] (e.g. "
                          f"{base}-no_push_up), or {base} itself for the null control")
    lr = args.learning_rate if args.learning_rate is not None else CHOSEN_RATES.get(base)
    if lr is None:
        raise ConfigError(f"--learning-rate: no chosen rate on record for {base!r} (known: "
                          f"{', '.join(CHOSEN_RATES)}); give one")
    for option, value in (("--learning-rate", lr), ("--lr", args.lr)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{option}: got {value!r}; expected a finite rate > 0")
    for option, value in (("--epochs", args.epochs), ("--batches", args.batches),
                          ("--batch-size", args.batch_size), ("--chunk", args.chunk)):
        if value < 1:
            raise ConfigError(f"{option}: got {value}; expected an integer >= 1")
    at = tuple(sorted(set(_ints(args.at, "--at"))))
    if at[-1] > args.epochs:
        raise ConfigError(f"--at: got {args.at!r}, but the base run trains --epochs "
                          f"{args.epochs}; expected epochs in 0..{args.epochs}")
    v = args.val_size
    if not (0 < v < 1 or (v >= 1 and v == int(v))):
        raise ConfigError(f"--val-size: got {v!r}; expected a fraction in (0, 1) or a count "
                          ">= 1 (the measurement is on the validation split)")
    return {"dataset": args.dataset, "loss": base, "variant": variant,
            "hidden": _hidden(args.hidden), "learning_rate": lr,
            "lr": args.lr if args.lr is not None else lr, "momentum": args.momentum,
            "batch_size": args.batch_size, "epochs": at[-1], "at": at, "seed": args.seed,
            "batches": args.batches, "batch_seed": args.batch_seed, "chunk": args.chunk,
            "val_size": v if v < 1 else int(v), "split_seed": args.split_seed,
            "standardize": args.standardize, "base_fn": base_fn, "variant_fn": variant_fn}


def _tree_dot(a, b):
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b),
                                              strict=True))


def _tree_norm(a):
    return jnp.sqrt(_tree_dot(a, a))


def train_base(model: MLP, loss_fn, x: np.ndarray, y: np.ndarray, s: dict) -> dict:
    """``{epoch: params}`` of the base run after each epoch of ``s["at"]`` (0: at init).

    The initial weights and each epoch's batch order come from the seed as in the sweep
    engine (``fold_in(key(seed), 0)``; ``fold_in(fold_in(key(seed), 1), epoch)``, the last
    partial batch dropped); one jit'd ``lax.scan`` per epoch."""
    key = jax.random.key(s["seed"])
    x, y = jnp.asarray(x), jnp.asarray(y)
    params = model.init(jax.random.fold_in(key, 0), x[:1])
    tx = optax.sgd(s["learning_rate"], momentum=s["momentum"])
    steps = len(x) // s["batch_size"]
    k = model.num_classes

    @jax.jit
    def epoch(params, opt, x, y, e):
        perm = jax.random.permutation(jax.random.fold_in(jax.random.fold_in(key, 1), e), len(x))
        batches = perm[: steps * s["batch_size"]].reshape(steps, -1)

        def step(carry, idx):
            p, o = carry
            onehot = jax.nn.one_hot(y[idx], k)
            g = jax.grad(lambda q: jnp.mean(loss_fn(model.apply(q, x[idx]), onehot)))(p)
            u, o = tx.update(g, o, p)
            return (optax.apply_updates(p, u), o), None

        return jax.lax.scan(step, (params, opt), batches)[0]

    opt = tx.init(params)
    kept = {0: params} if 0 in s["at"] else {}
    for e in range(s["epochs"]):
        params, opt = epoch(params, opt, x, y, e)
        if e + 1 in s["at"]:
            if not all(bool(jnp.isfinite(p).all()) for p in jax.tree.leaves(params)):
                raise ConfigError(f"--learning-rate: the base run at {s['learning_rate']:g} "
                                  f"diverged by epoch {e + 1}; give a smaller rate")
            kept[e + 1] = params
    return kept


def push_share(g, onehot):
    """The size of a batch's pushes: per example, the norm of the logit gradient's pushing
    components (wrong class, ``g_j < 0``) over the whole gradient's norm, averaged."""
    pushes = jnp.where((onehot == 0) & (g < 0), g, 0)
    whole = jnp.linalg.norm(g, axis=-1)
    return jnp.mean(jnp.linalg.norm(pushes, axis=-1) / jnp.where(whole > 0, whole, 1))


def make_local_steps(model: MLP, base_fn, variant_fn, lr: float, chunk: int):
    """``f(params, xb, yb, xv, yv)``: for each batch ``(xb[i], yb[i])`` the cosine and norm ratio
    of the two gradients, the rescaled edited gradient's norm over the base's, and the
    validation metrics (base loss, cross-entropy, accuracy) after either step; one program,
    ``lax.map`` over batches with ``chunk`` of them vmapped at a time. ``metrics(params, xv,
    yv)`` gives the same three at ``params``."""
    k = model.num_classes

    def metrics(params, xv, yv):
        logits = model.apply(params, xv)
        return jnp.stack([
            jnp.mean(base_fn(logits, jax.nn.one_hot(yv, k, dtype=logits.dtype))),
            jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, yv)),
            jnp.mean(jnp.argmax(logits, -1) == yv).astype(logits.dtype)])

    def one(params, xb, yb, xv, yv):
        onehot = jax.nn.one_hot(yb, k)

        def grad(fn):
            return jax.grad(lambda p: jnp.mean(fn(model.apply(p, xb), onehot)))(params)

        gb, ge = grad(base_fn), grad(variant_fn)
        nb, ne = _tree_norm(gb), _tree_norm(ge)
        logits = model.apply(params, xb)
        shares = [push_share(jax.grad(lambda z, f=f: jnp.sum(f(z, onehot)))(logits), onehot)
                  for f in (base_fn, variant_fn)]
        scale = jnp.where(ne > 0, nb / jnp.where(ne > 0, ne, 1), 0)
        # Both steps by one formula, the base's at scale 1: the null control is exact.
        steps = [jax.tree.map(lambda p, g, c=c: p - (lr * c) * g, params, g)
                 for g, c in ((gb, 1.0), (ge, scale))]
        stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), *steps)
        after = jax.vmap(metrics, in_axes=(0, None, None))(stacked, xv, yv)
        rescaled = _tree_norm(jax.tree.map(lambda g: scale * g, ge))
        return {"cosine": _tree_dot(gb, ge) / (nb * ne), "norm_ratio": ne / nb,
                "rescaled_norm_ratio": rescaled / nb, "base_push_share": shares[0],
                "edit_push_share": shares[1], "base": after[0], "edit": after[1]}

    @jax.jit
    def local_steps(params, xb, yb, xv, yv):
        return jax.lax.map(lambda b: one(params, *b, xv, yv), (xb, yb), batch_size=chunk)

    return local_steps, jax.jit(metrics)


def _summary(per: dict, at_theta: np.ndarray) -> dict:
    out = {"n": len(per["cosine"])}
    for name in ("cosine", "norm_ratio", "rescaled_norm_ratio", "base_push_share",
                 "edit_push_share"):
        v = per[name]
        out[name] = {"mean": float(np.mean(v)), "min": float(np.min(v)),
                     "max": float(np.max(v))}
    for i, (key, _, lower) in enumerate(METRICS):
        b, e = per["base"][:, i], per["edit"][:, i]
        d = e - b
        out[key] = {"at_theta": float(at_theta[i]),
                    "delta_mean": float(np.mean(d)), "delta_ci95": stats.ci95_halfwidth(d),
                    "edit_better": float(np.mean(d < 0 if lower else d > 0)),
                    "tied": float(np.mean(d == 0)),
                    "base_step_change": float(np.mean(b - at_theta[i])),
                    "edit_step_change": float(np.mean(e - at_theta[i]))}
    return out


def measure(s: dict, ds) -> dict:
    model = MLP(hidden=s["hidden"], num_classes=ds.num_classes)
    t0 = time.perf_counter()
    states = train_base(model, s["base_fn"], ds.x_train, ds.y_train, s)
    jax.block_until_ready(states)
    t_train = time.perf_counter() - t0
    rng = np.random.default_rng(s["batch_seed"])
    idx = np.stack([rng.choice(len(ds.y_train), s["batch_size"], replace=False)
                    for _ in range(s["batches"])])
    xb, yb = jnp.asarray(ds.x_train[idx]), jnp.asarray(ds.y_train[idx])
    xv, yv = jnp.asarray(ds.x_val), jnp.asarray(ds.y_val)
    local_steps, metrics = make_local_steps(model, s["base_fn"], s["variant_fn"], s["lr"],
                                            s["chunk"])
    rows, seconds = [], []
    for epoch, params in states.items():
        t = time.perf_counter()
        per = jax.tree.map(np.asarray, local_steps(params, xb, yb, xv, yv))
        at_theta = np.asarray(metrics(params, xv, yv))
        seconds.append(time.perf_counter() - t)
        rows.append({"epoch": epoch, **_summary(per, at_theta),
                     "per_batch": {k: v.tolist() for k, v in per.items()}})
    settings = {k: list(v) if isinstance(v, tuple) else v for k, v in s.items()
                if not k.endswith("_fn")}
    return {"settings": settings, "metrics": [m[0] for m in METRICS],
            "per_batch_columns": {"base": [m[0] for m in METRICS],
                                  "edit": [m[0] for m in METRICS]},
            "sizes": {"train": len(ds.y_train), "val": len(ds.y_val)},
            "seconds": {"train": t_train, "local_steps_per_state": seconds,
                        "total": t_train + sum(seconds)},
            "states": rows}


def _pm(m: dict, spec: str, scale: float = 1.0) -> str:
    half = m["delta_ci95"]
    ci = f" ± {abs(half * scale):{spec.lstrip('+')}}" if math.isfinite(half) else ""
    return f"{m['delta_mean'] * scale:{spec}}{ci}"


def markdown(out: dict) -> str:
    s = out["settings"]
    lines = [f"# One step at the same parameters: `{s['variant']}` vs `{s['loss']}`", "",
             f"{s['dataset']}{' (standardized)' if s.get('standardize') else ''}, MLP "
             f"{'-'.join(map(str, s['hidden'])) or 'linear'}, base run at "
             f"lr {s['learning_rate']:g} (momentum {s['momentum']:g}, batch {s['batch_size']}, "
             f"seed {s['seed']}); at each state θ, {s['batches']} training batches (seed "
             f"{s['batch_seed']}), one SGD step of lr {s['lr']:g} along each gradient, the "
             "edited one rescaled to the base's norm. Δ = metric(θ_e) − metric(θ_b) on the "
             f"whole validation split ({out['sizes']['val']} examples): mean ± 95% t-interval "
             "over batches; accuracy in points. 'edit better': fraction of batches where the "
             "edited step gave the lower loss, cross-entropy, accuracy (and where the accuracies "
             "tied). 'base step': the base step's mean change of the validation loss and "
             "accuracy from θ (the step's scale). 'pushes': per example, the norm of the logit "
             "gradient's pushing components (wrong class, negative) over the whole gradient's, "
             "mean over batches, base → edited.", "",
             "| epoch | val acc at θ | cos(g_b, g_e) mean [min, max] | ‖g_e‖/‖g_b‖ mean | "
             "pushes | "
             "base step: Δ loss, Δ acc | Δ val loss | Δ val CE | Δ val acc (points) | "
             "edit better: loss, CE, acc (tied) | n |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in out["states"]:
        c = r["cosine"]
        lines.append(
            f"| {r['epoch']} | {r['acc']['at_theta']:.4f} | {c['mean']:.3f} "
            f"[{c['min']:.3f}, {c['max']:.3f}] | {r['norm_ratio']['mean']:.3f} | "
            f"{r['base_push_share']['mean']:.3f} → {r['edit_push_share']['mean']:.3f} | "
            f"{r['loss']['base_step_change']:+.2e}, {100 * r['acc']['base_step_change']:+.2f} | "
            f"{_pm(r['loss'], '+.1e')} | {_pm(r['nll'], '+.1e')} | "
            f"{_pm(r['acc'], '+.3f', 100)} | {r['loss']['edit_better']:.2f}, "
            f"{r['nll']['edit_better']:.2f}, {r['acc']['edit_better']:.2f} "
            f"({r['acc']['tied']:.2f}) | {r['n']} |")
    sec = out["seconds"]
    lines += ["", f"Time: training {sec['train']:.1f} s, local steps "
              f"{sum(sec['local_steps_per_state']):.1f} s "
              f"({len(out['states'])} states, the first compiling).", "",
              f"![Δ per state]({NAME}.png)", ""]
    if "provenance" in out:
        lines += [script_line(out["provenance"]), ""]
    return "\n".join(lines)


def figure(out: dict):
    s = out["settings"]
    epochs = np.array([r["epoch"] for r in out["states"]])
    panels = (("loss", f"Δ val {s['loss']} loss", 1.0), ("nll", "Δ val cross-entropy", 1.0),
              ("acc", "Δ val accuracy (points)", 100.0))
    fig, axes = plt.subplots(1, 3, figsize=(12, 4), layout="constrained")
    for ax, (key, label, scale) in zip(axes, panels, strict=True):
        mean = np.array([r[key]["delta_mean"] for r in out["states"]]) * scale
        half = np.array([r[key]["delta_ci95"] for r in out["states"]]) * scale
        ax.plot(epochs, mean, marker="o", color="#ff7f0e")
        band = np.isfinite(half)
        ax.fill_between(epochs[band], (mean - half)[band], (mean + half)[band],
                        color="#ff7f0e", alpha=0.2, linewidth=0)
        ax.axhline(0, color="0.3", linewidth=1)
        # The first steps move far more than the later ones: symlog, linear below the
        # smallest state's reach, so every state's mean and band can be read.
        reach = np.abs(mean) + np.nan_to_num(half)
        if (reach > 0).any():
            lin = 10.0 ** math.floor(math.log10(reach[reach > 0].min()))
            ax.set_yscale("symlog", linthresh=lin)
            label += f"\n(symlog axis, linear within ±{lin:g})"
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch of the base run (state θ)")
        ax.set_ylabel(label)
    fig.suptitle(f"One step at the same θ, edited − base: {s['variant']} − {s['loss']} "
                 f"({s['dataset']}, lr {s['lr']:g}, steps of equal length)\nmean over "
                 f"{s['batches']} batches, band: 95% t-interval", fontsize=10)
    return fig


def write(out: dict, folder: Path) -> list[Path]:
    """``local_step.{json,md,png,svg}`` into ``folder``, each atomically."""
    folder = Path(folder)
    names = [f"{NAME}.{e}" for e in ("json", "md", "png", "svg")]
    with locked([folder]):
        record_written(folder, names)  # in a lossjax folder: --overwrite removes them
        write_json(folder / names[0], out)
        write_text(folder / names[1], markdown(out))
        with rc_context(plots.STYLE):
            fig = figure(out)
            try:
                plots.save_formats(fig, folder, NAME)
            finally:
                plt.close(fig)
    return [folder / n for n in names]


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="local_step.py", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default=None, help="default: $LOSSJAX_DATA_DIR")
    p.add_argument("--val-size", type=float, default=0.1)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--standardize", action="store_true",
                   help="standardize the inputs per channel on the training split, as a "
                        "config's dataset.standardize (configs/cifar10*.yaml)")
    p.add_argument("--loss", default="mse", help="the base loss")
    p.add_argument("--variant", default="mse-no_push_up", help="a variant of --loss")
    p.add_argument("--hidden", default="500-150")
    p.add_argument("--learning-rate", type=float, default=None,
                   help="the base run's rate (default: the loss's chosen rate on MNIST)")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=10, help="the base run's epochs at most")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--at", default="0,1,2,5,10", help="epochs whose parameters are states")
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--batch-seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=None, help="the local step's size")
    p.add_argument("--chunk", type=int, default=8, help="batches vmapped at a time")
    p.add_argument("--out", type=Path, required=True)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        s = check_args(args)
        ds = data.preprocess(data.load(s["dataset"], args.data_dir, val_size=s["val_size"],
                                       split_seed=s["split_seed"]),
                             standardize=s["standardize"])
        out = measure(s, ds)
        argv = sys.argv[1:] if argv is None else list(argv)
        out["provenance"] = provenance.script_record(
            shlex.join(["python", "experiments/local_step.py", *argv]))
        write(out, args.out)
    except (LossjaxError, ValueError) as e:
        print(f"local_step.py: error: {one_line(e)}", file=sys.stderr)
        return 2
    print(markdown(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
