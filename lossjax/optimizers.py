"""Optimizers and learning-rate schedules by config name: optax's registries, the arguments
each takes, and the optax transformation a group's program trains with.

lossjax.config checks optimizer.name, .args, .schedule and .schedule_args with the registries
and functions here; no other list of the names exists.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

#: Keyword arguments of an optax function: a mapping, or (name, value) pairs as a group's
#: settings hold them (hashable).
Arguments = Mapping[str, Any] | Iterable[tuple[str, Any]]


def _returns_transformation(fn) -> bool:
    ret = inspect.signature(fn).return_annotation
    if isinstance(ret, str):  # a postponed annotation
        return ret.rsplit(".", 1)[-1].startswith("GradientTransformation")
    return isinstance(ret, type) and issubclass(ret, optax.GradientTransformation)


def _is_optax_optimizer(name: str, fn) -> bool:
    # optax's optimizers ("aliases") are its public functions, or partials (nadam), that take a
    # learning rate and return a GradientTransformation. The scale_by_* transformations match
    # that too, but are building blocks; lbfgs's update needs the loss function itself (a line
    # search), which a training step here does not pass.
    if name.startswith(("_", "scale_by")) or name == "lbfgs" or isinstance(fn, type):
        return False
    try:
        return ("learning_rate" in inspect.signature(fn).parameters
                and _returns_transformation(fn))
    except (TypeError, ValueError):  # not a callable with a signature
        return False


_OPTAX_OPTIMIZERS = {name: fn for name, fn in sorted(vars(optax).items())
                     if _is_optax_optimizer(name, fn)}

#: Optimizer names: every optax optimizer by its optax name, and 'momentum', which is optax.sgd
#: with optimizer.momentum (lossjax's default; its name predates the others). 'sgd' is plain SGD
#: unless optimizer.args gives it a momentum; 'adam' with weight decay is optax.adamw.
OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": optax.sgd,
    "momentum": optax.sgd,
    "adam": optax.adam,
    **{n: fn for n, fn in _OPTAX_OPTIMIZERS.items() if n not in ("sgd", "adam")},
}

# An optimizer's own weight-decay argument: optax calls adafactor's weight_decay_rate.
_DECAY_ARGS = ("weight_decay", "weight_decay_rate")


def decay_argument(name: str) -> str | None:
    """The argument of optimizer ``name`` that optimizer.weight_decay sets: its own decay, as
    optax defines it for that optimizer (decoupled, AdamW's kind, for adamw, lamb, lion, ...),
    or None where it has none and the decay is L2 added to the gradient before it (coupled:
    sgd, momentum, rmsprop, adagrad, ...)."""
    if name == "adam":
        return "weight_decay"  # through optax.adamw, as AdamW's decoupled decay
    params = inspect.signature(OPTIMIZERS[name]).parameters
    return next((a for a in _DECAY_ARGS if a in params), None)


def optimizer_arguments(name: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """The keyword arguments that optimizer.args may give optimizer ``name``, and those it may
    not, each with the config key that sets it instead."""
    reserved = {"learning_rate": "optimizer.learning_rate",
                decay_argument(name) or "weight_decay": "optimizer.weight_decay"}
    if name == "momentum":
        reserved["momentum"] = "optimizer.momentum"
    params = inspect.signature(OPTIMIZERS[name]).parameters
    return tuple(p for p in params if p not in reserved), reserved


def _is_optax_schedule(name: str, fn) -> bool:
    # optax's schedule factories that start from a value (init_value or peak_value): the value
    # becomes the member's learning rate. constant_schedule, join_schedules, sgdr_schedule and
    # inject_hyperparams are not of that kind.
    return (not name.startswith("_") and inspect.isfunction(fn)
            and bool({"init_value", "peak_value"} & set(inspect.signature(fn).parameters)))


#: Schedule names: optax's schedules without their '_schedule' suffix (linear,
#: warmup_cosine_decay, exponential_decay, ...), 'constant' (none) and 'cosine'
#: (cosine_decay: to 0 over all steps unless given other arguments).
SCHEDULES: dict[str, Callable | None] = {
    "constant": None,
    "cosine": optax.cosine_decay_schedule,
    **{name.removesuffix("_schedule"): fn for name, fn in sorted(vars(optax.schedules).items())
       if _is_optax_schedule(name, fn)},
}

# Filled in with the run's length in optimizer steps, unless schedule_args gives them.
_STEPS_ARGS = ("decay_steps", "transition_steps")


def _peak_argument(params) -> str:
    return "peak_value" if "peak_value" in params else "init_value"


def schedule_arguments(name: str) -> tuple[tuple[str, ...], dict[str, str], tuple[str, ...]]:
    """For schedule ``name``: the keyword arguments schedule_args may give it, those it may not
    (with the config key that sets each instead), and those it must give (optax has no default
    for them and lossjax fills none in)."""
    fn = SCHEDULES[name]
    if fn is None:
        return (), {}, ()
    params = inspect.signature(fn).parameters
    reserved = {_peak_argument(params): "optimizer.learning_rate"}
    filled = set(_STEPS_ARGS) | {"init_value", "end_value"}
    accepted = tuple(p for p in params if p not in reserved)
    required = tuple(p for p in accepted
                     if params[p].default is inspect.Parameter.empty and p not in filled)
    return accepted, reserved, required


def _unit_schedule(name: str, args: dict, total_steps: int) -> Callable:
    """Schedule ``name`` with its peak at 1; times a member's learning rate, it is the member's
    schedule. Built from Python numbers only, so any optax schedule works with a traced
    learning rate, and the value arguments (init_value, end_value) are fractions of it. For
    cosine, lr * (1.0 * decayed) is lr * decayed to the bit, so runs from before reproduce."""
    fn = SCHEDULES[name]
    params = inspect.signature(fn).parameters
    filled = {a: max(1, total_steps) for a in _STEPS_ARGS if a in params}
    filled[_peak_argument(params)] = 1.0
    if "peak_value" in params and "init_value" in params:
        filled["init_value"] = 0.0  # warmup from 0
    if "end_value" in params and params["end_value"].default is inspect.Parameter.empty:
        filled["end_value"] = 0.0  # linear and polynomial decay to 0, as cosine does
    return fn(**{**filled, **args})


def _factory(optimizer: str, momentum: float, args: Arguments,
             decays: bool) -> Callable[..., optax.GradientTransformation]:
    """The group's optimizer as a function of its learning rate, and of its weight decay in a
    group that decays. Every other argument is fixed here as a Python number, a constant of
    the program, as optax's defaults are: injected, a b1 of 0.9 would become a float32 array
    and 1 - b1 would round differently. A group that does not decay leaves L2 out of its
    program (it would cost one more read of every parameter per step); an optimizer with a
    decay of its own gets 0 there."""
    args = dict(args)
    if optimizer == "momentum":
        args["momentum"] = momentum
    make = optax.adamw if optimizer == "adam" and decays else OPTIMIZERS[optimizer]
    own = decay_argument(optimizer)
    if not decays:
        if own is not None and optimizer != "adam":
            args[own] = 0.0  # not the optimizer's default (adamw's 1e-4, lion's 1e-3)
        return lambda learning_rate: make(learning_rate, **args)
    if own is not None:
        return lambda learning_rate, weight_decay: make(
            learning_rate, **{own: weight_decay}, **args)
    # L2 added to the gradient before the optimizer: SGD's classic weight decay, and the only
    # kind an optimizer without its own can take.
    return lambda learning_rate, weight_decay: optax.chain(
        optax.add_decayed_weights(weight_decay), make(learning_rate, **args))


def transformation(lr, wd, *, optimizer: str, momentum: float, args: Arguments, decays: bool,
                   schedule: str = "constant", schedule_args: Arguments = (),
                   total_steps: int = 1) -> optax.GradientTransformation:
    """A group's optax transformation, with a traced (per-member) learning rate ``lr`` and
    decay ``wd``: optimizer ``optimizer`` (a key of OPTIMIZERS) with keyword arguments
    ``args``, ``momentum`` for 'momentum' only, a decay term if ``decays``, under schedule
    ``schedule`` (a key of SCHEDULES) with ``schedule_args`` over a run of ``total_steps``
    optimizer steps.

    inject_hyperparams holds the rate and decay in the optimizer state, one per member (the
    learning rate as its value at the current step, under a schedule): the group's program
    takes them as data and compiles once for all of its members, whatever the optimizer.
    """
    rate = lr
    if schedule != "constant":
        unit = _unit_schedule(schedule, dict(schedule_args), total_steps)

        def rate(count):
            return lr * unit(count)

    hyper = {"learning_rate": rate}
    if decays:
        hyper["weight_decay"] = wd
    return optax.inject_hyperparams(_factory(optimizer, momentum, args, decays))(**hyper)


def _trial_step(**choice) -> None:
    param = jax.ShapeDtypeStruct((3, 4), jnp.float32)
    scalar = jax.ShapeDtypeStruct((), jnp.float32)

    def step(lr, wd, p):
        tx = transformation(lr, wd, **choice)
        return tx.update(p, tx.init(p), p)

    jax.eval_shape(step, scalar, scalar, param)


def check_optimizer(name: str, momentum: float, args: Arguments) -> None:
    """Builds optimizer ``name`` with ``args`` as a group would, with and without weight
    decay, and traces one step of it, so that a bad argument fails when the config is read
    and not mid-sweep. Raises whatever optax raises."""
    for decays in (False, True):
        _trial_step(optimizer=name, momentum=momentum, args=args, decays=decays)


def check_schedule(name: str, args: Arguments, total_steps: int | None = None) -> None:
    """As :func:`check_optimizer`, for schedule ``name`` with ``args`` over a run of
    ``total_steps`` optimizer steps. None, for the config, which does not know the dataset's
    size: a run longer than any step count the arguments give, so that only the arguments
    themselves are judged. With the real length, step counts the run cannot hold fail too
    (a warmup as long as the run leaves warmup_cosine_decay no steps to decay over)."""
    total = 10**9 if total_steps is None else total_steps
    _trial_step(optimizer="sgd", momentum=0.9, args=(), decays=False, schedule=name,
                schedule_args=args, total_steps=total)


def state_slots(optimizer: str, momentum: float, args: Arguments, decays: bool,
                dtype: str) -> int:
    """A group's optimizer state in parameter-sized arrays (sgd 0, momentum 1, adam 2), for
    parameters of ``dtype``.

    Counted on a parameter too small for adafactor to factor, so an upper bound for it."""
    param = jax.ShapeDtypeStruct(
        (64, 64), jnp.float64 if dtype == "float64" else jnp.float32)
    scalar = jax.ShapeDtypeStruct((), jnp.float32)
    # A schedule adds a scalar, and building one needs the run's length: left out.
    state = jax.eval_shape(
        lambda lr, wd, p: transformation(lr, wd, optimizer=optimizer, momentum=momentum,
                                         args=args, decays=decays).init(p),
        scalar, scalar, param)
    return sum(x.size for x in jax.tree.leaves(state)) // param.size
