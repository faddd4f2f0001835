"""Sweep configs: one YAML file describes one sweep; this module loads and validates it.

Every check happens here, before anything runs or is written. A bad config raises
:class:`~lossjax.errors.ConfigError` with one line that starts with the key's full path, then
what was given and what is allowed, e.g.::

    optimizer.learning_rate[1]: got -0.1, expected a number > 0
    model.hiden: unknown key; did you mean 'model.hidden'?

The schema, with its defaults (only ``name`` is required)::

    name: digits            # folder name under output.dir: letters, digits, _ . -; <= 255 bytes
    seeds: [0, 1, 2]        # SWEPT: ints in [0, 2**32 - 1] (uint32: model init and batch order)
    epochs: 20              # int >= 1
    batch_size: 64          # int >= 1 (checked against the dataset by check_batch_size)
    block_size: auto        # int >= 1, or auto (1 on a CPU, 64 on a GPU or TPU; the resolved
                            # config records the number): members trained side by side in one
                            # program per device; a member's numbers depend on it and on nothing
                            # else of the sweep
    losses: [cross_entropy, mse, softmax_mse, exp_mse]   # SWEPT: names in losses.LOSSES,
                            # gradient interventions on them ('mse-no_push_up', see
                            # lossjax.interventions) or 'module:function'; the default is all
                            # of LOSSES, in its order
    dataset:
      name: digits          # a key of lossjax.data.CLASS_NAMES
      data_dir: null        # str or null
      val_size: 0.1         # float in (0, 1): fraction of train; or int >= 1: a count
      split_seed: 0         # int >= 0
      standardize: false    # bool
    model:
      hidden: [[64, 64]]    # SWEPT: hidden-size lists of ints in [1, 2**31 - 1] (int32 shapes);
                            # [] is a linear model; [64, 64] = [[64, 64]]
      activation: relu      # a key of model.ACTIVATIONS
      init: lecun_normal    # a key of model.INITIALIZERS
      init_scale: [1.0]     # SWEPT: numbers > 0 multiplying the initial weights
      dtype: float32        # a key of model.DTYPES
    optimizer:
      name: momentum        # a key of optimizers.OPTIMIZERS: any optax optimizer by its name
                            # (sgd, adam, adamw, lamb, lion, rmsprop, adagrad, adafactor,
                            # nadam, ...), or momentum: optax.sgd with optimizer.momentum
      momentum: 0.9         # number in [0, 1); used by 'momentum' only (other optimizers take
                            # a momentum, sgd's included, through args)
      args: {}              # more keyword arguments of the optax optimizer, by their optax
                            # names: {b1: 0.95}, {momentum: 0.9, nesterov: true} for sgd
      learning_rate: [0.01, 0.1]   # SWEPT: numbers > 0 for every loss, or a mapping
                                   # {loss: [numbers > 0]} with exactly one entry per loss
      weight_decay: [0.0]   # SWEPT: numbers >= 0; what decay means depends on the optimizer
                            # (below); 0 is none, whatever the optimizer's own default
      schedule: constant    # a key of optimizers.SCHEDULES: constant, cosine (to 0 over all
                            # steps), or an optax schedule by its optax name less '_schedule'
                            # (linear, exponential_decay, warmup_cosine_decay, ...)
      schedule_args: {}     # more keyword arguments of the optax schedule (below)
    eval:
      splits: [train, val, test]   # a subset of train, val, test that includes val
      every: 1              # evaluate every N epochs; the last epoch is always evaluated
      target_accuracy: 0.95 # number in (0, 1]: "epochs to target" on test accuracy
    output:
      dir: runs             # str; not results/, which holds the committed reference runs
      tensorboard: false    # also write TensorBoard event files (RESULTS_DIR/tensorboard/)

The values shown, ``name`` aside, are the defaults of the dataclasses below, which the parser
reads; tests/test_config.py checks that this block parses to them. Names are checked against
the registries of the modules that implement them (``lossjax/losses.py``,
``lossjax/model.py``, ``lossjax/optimizers.py``, ``lossjax.data.CLASS_NAMES``); an error message
lists the choices.

The optimizer and its schedule:

- ``optimizer.args`` and ``optimizer.schedule_args`` take the keyword arguments of the optax
  function by their optax names, checked against its signature; values are YAML scalars, lists
  or mappings. The learning rate and the weight decay are not among them: the swept keys set
  them per member. Bad values fail when the config is read: one step of the optimizer is traced.
- ``optimizer.weight_decay``: for an optimizer with a decay argument of its own
  (``weight_decay``: adamw, nadamw, adamaxw, lamb, lion, adan, lars, novograd, adadelta;
  ``weight_decay_rate``: adafactor) it is that argument, as optax defines it for that optimizer
  (decoupled, AdamW's kind, for adamw, nadamw, adamaxw, lamb and lion). ``adam`` with decay is
  ``optax.adamw``, decoupled. For every other optimizer (sgd, momentum, rmsprop, adagrad, ...)
  it is L2 added to the gradient before the optimizer (``optax.add_decayed_weights``).
- A schedule multiplies the member's learning rate: it is built with its peak at 1
  (``peak_value``, or ``init_value`` where it has no peak), so its other values (``init_value``
  of a warmup, ``end_value``) are fractions of the learning rate, and ``alpha``, ``decay_rate``
  and the scales of ``boundaries_and_scales`` are the factors optax documents. ``decay_steps``
  and ``transition_steps`` default to the run's length in optimizer steps (epochs × the
  training examples // batch_size); ``warmup_steps`` and boundaries count optimizer steps too.
  A warmup starts from 0 and ``linear`` and ``polynomial`` end at 0 unless given otherwise.
  ``cosine`` is ``cosine_decay``.

Swept keys (the sweep is their product; see :data:`SWEPT`): ``seeds``, ``losses``,
``model.hidden``, ``model.init_scale``, ``optimizer.learning_rate`` (per loss),
``optimizer.weight_decay``. Each takes a list; a single value is a one-element list
(``seeds: 3`` is ``seeds: [3]``). Lists must be non-empty and hold no duplicates.

Other rules:

- Types are strict: ``true`` is not an integer, ``3.0`` is not an integer, ``'0.1'`` (quoted)
  is not a number. Numbers must be finite. Integers are accepted where a number is expected.
- The engine holds ``optimizer.learning_rate``, ``optimizer.weight_decay``,
  ``optimizer.momentum`` and ``model.init_scale`` in float32, so each must be 0 (where 0 is
  allowed) or have a magnitude in float32's normal range, about [1.2e-38, 3.4e+38].
- ``1e-3`` is read as a number (plain PyYAML would read it as a string).
- A section left empty (``model:`` with nothing under it) takes its defaults.
- A key repeated in one mapping of the file is an error (plain PyYAML keeps the last one).
- ``eval.splits`` is stored in the order train, val, test whatever the order given.

Overrides (``lossjax sweep CONFIG --set KEY=VALUE``, as Flax's config flags): ``KEY`` is a
dotted path (``epochs``, ``optimizer.name``, ``optimizer.learning_rate.mse``,
``optimizer.args.b1``), ``VALUE`` is parsed as YAML (``seeds=[0,1]``,
``dataset.data_dir=null``). An override replaces the value at its path (a section given whole,
``model={hidden: [[32]]}``, replaces the section). Overrides apply in order, to the file's
values, before validation. ``optimizer.learning_rate.LOSS=[..]`` sets one loss's grid; when
the file gives one list for all losses, the others keep it. Narrowing ``losses`` with ``--set``
drops the learning-rate entries of the losses left out.

The resolved :class:`Config` is a tree of frozen dataclasses with the YAML names; lists are
tuples, ``optimizer.learning_rate`` is always a read-only mapping ``{loss: (rates, ...)}`` in the
order of ``losses``, and ``optimizer.args`` and ``optimizer.schedule_args`` are read-only
mappings too. :func:`config_to_dict` gives it back as plain YAML-dumpable types, and
``parse_config(config_to_dict(cfg)) == cfg``. Constructing the dataclasses directly skips
validation; go through :func:`parse_config` or :func:`load_config`.

This module writes nothing. Importing it imports no JAX, like importing the package: the
registries, and JAX with them, are imported when a config is validated or a default loss list
is needed. ``'module:function'`` losses import the user's module, through
``lossjax.losses.resolve_loss``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import math
import os
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import yaml

from lossjax.errors import ConfigError, one_line

# --------------------------------------------------------------------------------------------
# Allowed values. The names of losses, activations, initializers, dtypes, optimizers, schedules
# and datasets are not listed here: the parsers below read them from the registries of the
# modules that implement them, so the two cannot drift apart.

SPLITS: tuple[str, ...] = ("train", "val", "test")
DEFAULT_LEARNING_RATES: tuple[float, ...] = (0.01, 0.1)  # for every loss

#: Full paths of the swept keys; a sweep is the product of their values.
SWEPT: tuple[str, ...] = (
    "seeds",
    "losses",
    "model.hidden",
    "model.init_scale",
    "optimizer.learning_rate",
    "optimizer.weight_decay",
)

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
NAME_MAX_BYTES = 255  # the name is a folder name; filesystems refuse longer ones

# What the engine can hold: seeds are uint32 (jax.random.key), layer sizes are int32 array
# dimensions, and learning rates, weight decays, momentum and init scales are float32.
SEED_MAX = 2**32 - 1
LAYER_SIZE_MAX = 2**31 - 1
_F32 = np.finfo(np.float32)
_F32_RANGE = f"[{_F32.tiny:.2g}, {_F32.max:.2g}]"  # [1.2e-38, 3.4e+38]

# Bounds on what a config may hold, so that reading and checking one takes milliseconds and
# its error messages stay short, whatever it holds. A written config is a few kilobytes, nests
# four levels and sweeps lists of a handful of values; the bounds are far above that and far
# below what would take the (pure-Python) YAML reader or the checks minutes:
# - MAX_CONFIG_BYTES, of a config file and of one --set: PyYAML reads ~1 MB/s.
# - MAX_LIST, entries in one list or mapping: a sweep trains the product of its swept lists,
#   and 100,000 seeds are already past any sweep that finishes (the memory check, later, needs
#   the data; this one needs nothing).
# - MAX_VALUES, values once YAML aliases (or, from Python, shared references) are expanded:
#   ten levels of nine aliases each are 3.5 billion values in a 400-byte file, and every check
#   and message that walks them would take minutes.
# - MAX_DEPTH, levels of lists and mappings inside one another (a cycle, from Python, too).
MAX_CONFIG_BYTES = 1 << 20
MAX_LIST = 100_000
MAX_VALUES = 1_000_000
MAX_DEPTH = 32


class FrozenDict(dict):
    """A read-only, hashable ``dict``; keeps :class:`Config` frozen and hashable.

    It is a real ``dict`` (``isinstance``, ``==`` with plain dicts, ``json.dumps`` all work);
    every mutating method raises ``TypeError``.
    """

    __slots__ = ()

    def _read_only(self, *args, **kwargs):
        raise TypeError("this mapping is read-only; build a new Config with dataclasses.replace")

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def __reduce__(self):
        return (FrozenDict, (dict(self),))

    def __repr__(self) -> str:
        return f"FrozenDict({dict.__repr__(self)})"


def _default_losses() -> tuple[str, ...]:
    from lossjax.losses import LOSSES

    return tuple(LOSSES)


def _default_learning_rate() -> FrozenDict:
    return FrozenDict((loss, DEFAULT_LEARNING_RATES) for loss in _default_losses())


def __getattr__(name: str) -> Any:
    # DEFAULT_LOSSES follows the loss registry; computed on use so that importing this module
    # does not import JAX.
    if name == "DEFAULT_LOSSES":
        return _default_losses()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------------
# The resolved config


@dataclass(frozen=True)
class DatasetConfig:
    name: str = "digits"
    data_dir: str | None = None
    val_size: float | int = 0.1
    split_seed: int = 0
    standardize: bool = False


@dataclass(frozen=True)
class ModelConfig:
    hidden: tuple[tuple[int, ...], ...] = ((64, 64),)
    activation: str = "relu"
    init: str = "lecun_normal"
    init_scale: tuple[float, ...] = (1.0,)
    dtype: str = "float32"


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "momentum"
    momentum: float = 0.9
    args: FrozenDict = field(default_factory=FrozenDict)
    learning_rate: FrozenDict = field(default_factory=_default_learning_rate)
    weight_decay: tuple[float, ...] = (0.0,)
    schedule: str = "constant"
    schedule_args: FrozenDict = field(default_factory=FrozenDict)


@dataclass(frozen=True)
class EvalConfig:
    splits: tuple[str, ...] = SPLITS
    every: int = 1
    target_accuracy: float = 0.95


@dataclass(frozen=True)
class OutputConfig:
    # Not "results": that folder holds the committed reference runs, and a sweep must never
    # write there unless asked to (--set output.dir=results).
    dir: str = "runs"
    # epochs.csv stays the record; the event files are a view of it for TensorBoard's viewer.
    tensorboard: bool = False


@dataclass(frozen=True)
class Config:
    name: str
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 20
    batch_size: int = 64
    block_size: int | str = "auto"
    losses: tuple[str, ...] = field(default_factory=_default_losses)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


_SECTIONS: dict[str, type] = {
    "dataset": DatasetConfig,
    "model": ModelConfig,
    "optimizer": OptimizerConfig,
    "eval": EvalConfig,
    "output": OutputConfig,
}
_TOP_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Config))
_SECTION_KEYS: dict[str, tuple[str, ...]] = {
    s: tuple(f.name for f in dataclasses.fields(cls)) for s, cls in _SECTIONS.items()
}
_ALL_PATHS: tuple[str, ...] = tuple(k for k in _TOP_KEYS if k not in _SECTIONS) + tuple(
    f"{s}.{k}" for s, keys in _SECTION_KEYS.items() for k in keys
)


# --------------------------------------------------------------------------------------------
# YAML reading: '1e-3' is a float, and a repeated key is an error.


class _DuplicateKeyError(yaml.constructor.ConstructorError):
    pass


class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                try:
                    key = self.construct_object(key_node, deep=True)
                    if key in seen:
                        raise _DuplicateKeyError(
                            None, None, f"duplicate key {key!r}", key_node.start_mark
                        )
                    seen.add(key)
                except TypeError:  # an unhashable key: let PyYAML report it
                    pass
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 (PyYAML) wants a dot in a float: without this, 1e-3 would load as the string '1e-3'.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml_problem(e: yaml.YAMLError) -> str:
    """One line from a PyYAML error: 'PROBLEM at line L, column C'."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return " ".join(f"{problem}{where}".split())


# --------------------------------------------------------------------------------------------
# Messages


class _Shown(Exception):
    """Raised inside :func:`_show` once it has enough characters: it stops the walk there."""


def _show(v: Any, limit: int = 80) -> str:
    """A value as the user wrote it (YAML-flavoured), shortened to ``limit`` characters.

    It walks only as far as the ``limit`` characters reach (each value it visits adds one at
    least), so a huge, deep, aliased or cyclic value costs no more than a small one."""
    parts: list[str] = []
    size = 0

    def put(text: str) -> None:
        nonlocal size
        parts.append(text)
        size += len(text)
        if size > limit:
            raise _Shown

    def fmt(x, depth: int) -> None:
        if depth > MAX_DEPTH:
            put("...")
            raise _Shown
        if x is None or isinstance(x, bool):
            put("null" if x is None else "true" if x else "false")
        elif isinstance(x, list | tuple | dict):
            items = x.items() if isinstance(x, dict) else x
            put("{" if isinstance(x, dict) else "[")
            for i, item in enumerate(items):
                if i:
                    put(", ")
                if isinstance(x, dict):
                    fmt(item[0], depth + 1)
                    put(": ")
                    item = item[1]
                fmt(item, depth + 1)
            put("}" if isinstance(x, dict) else "]")
        elif isinstance(x, int) and x.bit_length() > 14_000:  # past 4300 digits: repr refuses
            put(f"<an integer of {x.bit_length()} bits>")
        else:
            put(repr(x[: limit + 1] if isinstance(x, str) else x)[: limit + 3])

    with contextlib.suppress(_Shown):
        fmt(v, 0)
    s = "".join(parts)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _got(v: Any) -> str:
    """'got VALUE', with the type named where the value alone could mislead."""
    kind = None
    if isinstance(v, bool):
        kind = "a boolean"
    elif isinstance(v, dict):
        kind = "a mapping"
    elif isinstance(v, str):
        try:  # '3' or 'true' quoted in the file: say it is a string (a short one: a scalar)
            looks_typed = 0 < len(v.strip()) <= 100 and not isinstance(
                yaml.load(v, Loader=_Loader),  # noqa: S506
                str,
            )
        except yaml.YAMLError:
            looks_typed = False
        kind = "a string" if looks_typed else None
    return f"got {_show(v)}" + (f" ({kind})" if kind else "")


def _error(path: str, message: str) -> ConfigError:
    return ConfigError(f"{path}: {message}".replace("\n", " "))


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _did_you_mean(word: str, choices: Sequence[str], cutoff: float = 0.6) -> str | None:
    """The closest choice (difflib), or one that the word starts with ('evaluation': 'eval')."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    if close:
        return close[0]
    prefixes = [c for c in choices if len(c) >= 3 and (word.startswith(c) or c.startswith(word))]
    return max(prefixes, key=len) if prefixes and len(word) >= 3 else None


def _unknown_key(prefix: str, key: Any, allowed: Sequence[str], context: str = "") -> ConfigError:
    """'PATH: unknown key; did you mean ...?' looking first among siblings, then everywhere."""
    path = _join(prefix, key)
    guess = _did_you_mean(str(key), allowed)
    suggestion = _join(prefix, guess) if guess else None
    if suggestion is None:
        leaves = {p.rsplit(".", 1)[-1]: p for p in _ALL_PATHS}
        guess = _did_you_mean(str(key), list(leaves), cutoff=0.8)
        suggestion = leaves[guess] if guess else None
    if suggestion is not None and suggestion != path:
        return _error(path, f"unknown key{context}; did you mean '{suggestion}'?")
    where = f" under '{prefix}'" if prefix else ""
    return _error(path, f"unknown key{context}; the keys{where} are {', '.join(allowed)}")


# --------------------------------------------------------------------------------------------
# Value checks. Each returns the normalized value or raises one ConfigError.


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _int(v: Any, path: str, minimum: int, maximum: int | None = None, why: str = "") -> int:
    """An int (not bool) >= ``minimum`` and, if given, <= ``maximum``; ``why`` explains the
    maximum, e.g. ' (seeds are uint32)'."""
    if not _is_int(v) or v < minimum or (maximum is not None and v > maximum):
        allowed = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]{why}"
        raise _error(path, f"{_got(v)}, expected an integer {allowed}")
    return v


def _is_finite(v: int | float) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:  # an int too large for a float, e.g. 10**400 written out in full
        return False


def _float32_loss(x: float) -> str | None:
    """What float32 makes of ``x`` if it does not hold it as 0 or a finite normal number."""
    with np.errstate(over="ignore"):
        f = np.float32(x)
    if f == 0:
        return "rounds to 0" if x != 0 else None
    if np.isinf(f):
        return "rounds to inf"
    if abs(f) < _F32.tiny:
        return "keeps only as a subnormal, losing precision"
    return None


def _number(
    v: Any, path: str, expected: str, ok: Callable[[float], bool], float32: bool = False
) -> float:
    """A finite int or float (not bool) satisfying ``ok``; ``expected`` says what is allowed.

    ``float32``: the engine holds the value in float32, so a value that float32 would turn into
    0, inf or a subnormal is refused too; the run would silently train with something else.
    """
    if not _is_number(v) or not _is_finite(v) or not ok(float(v)):
        raise _error(path, f"{_got(v)}, expected {expected}")
    x = float(v)
    if float32 and (loss := _float32_loss(x)):
        zero = "0 or " if ok(0.0) else ""
        allowed = (
            f"{zero}a number in {_F32_RANGE}"
            if ok(float(_F32.max))
            else f"{expected}: {zero}at least {_F32.tiny:.2g}"  # e.g. momentum, below 1
        )
        raise _error(
            path,
            f"{_got(v)}, which float32 (the precision the engine trains with) {loss}; "
            f"expected {allowed}",
        )
    return x


# Learning rates, weight decays and init scales: the engine holds them in float32.


def _positive(v: Any, path: str) -> float:
    return _number(v, path, "a number > 0", lambda x: x > 0, float32=True)


def _non_negative(v: Any, path: str) -> float:
    return _number(v, path, "a number >= 0", lambda x: x >= 0, float32=True)


def _choice(v: Any, path: str, choices: Collection[str]) -> str:
    if not isinstance(v, str) or v not in choices:
        hint = ""
        if isinstance(v, str) and (guess := _did_you_mean(v, list(choices))):
            hint = f"; did you mean '{guess}'?"
        raise _error(path, f"{_got(v)}, expected one of {', '.join(choices)}{hint}")
    return v


def _string(v: Any, path: str, expected: str = "a non-empty string") -> str:
    if not isinstance(v, str) or not v.strip():
        raise _error(path, f"{_got(v)}, expected {expected}")
    return v


def _bool(v: Any, path: str) -> bool:
    if not isinstance(v, bool):
        raise _error(path, f"{_got(v)}, expected true or false")
    return v


def _grid(
    v: Any, path: str, item: Callable[[Any, str], Any], expected: str, scalar_ok: bool = True
) -> tuple:
    """A swept value: a non-empty list without duplicates (a scalar is a one-element list)."""
    if isinstance(v, list | tuple):
        if not v:
            raise _error(path, f"got [], expected a non-empty list of {expected}")
        items = [item(x, f"{path}[{i}]") for i, x in enumerate(v)]
    elif scalar_ok and v is not None and not isinstance(v, dict):
        return (item(v, path),)
    else:
        raise _error(path, f"{_got(v)}, expected a list of {expected}")
    first: dict[Any, int] = {}  # value -> its first index: one pass, not a pass per value
    for i, x in enumerate(items):
        j = first.setdefault(x, i)
        if j != i:
            raise _error(
                f"{path}[{i}]",
                f"got {_show(v[i])}, a duplicate of {path}[{j}]; each value may appear once",
            )
    return tuple(items)


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def _control_character(text: str) -> str | None:
    """The first control character in ``text`` (newline, tab, ...) as Python writes it."""
    m = _CONTROL_RE.search(text)
    return repr(m.group())[1:-1] if m else None


def _path_string(v: Any, path: str, expected: str) -> str:
    """A folder path: a non-empty string without control characters. A newline in a path is
    never meant (YAML folds one in a plain scalar into a space, so results would land
    somewhere else than the user sees), and messages naming such a path mislead."""
    v = _string(v, path, expected)
    if (c := _control_character(v)) is not None:
        raise _error(path, f"{_got(v)}, which holds the control character {c}; expected "
                           f"{expected} without control characters")
    return v


def _walk_key(prefix: str, key: Any) -> str:
    """The path of a mapping's entry for a message, kept short (a cycle repeats keys)."""
    if prefix.count(".") >= 4:
        return prefix
    return _join(prefix, key[:40] if isinstance(key, str) else _show(key, 40))


def _check_size(value: Any, where: str) -> None:
    """Refuses a value past the bounds above (MAX_LIST, MAX_VALUES, MAX_DEPTH) with one line
    naming the key where it was found.

    The walk is iterative (no recursion limit), counts a shared list or mapping, as YAML
    aliases make, once per reference (as every later check would see it), and stops at the
    first bound it passes: linear in the value's size, and never past MAX_VALUES steps.
    """
    stack = [(value, 0, where)]
    count = 0
    while stack:
        x, depth, key = stack.pop()
        shown = key or "config"
        count += 1
        if count > MAX_VALUES:
            raise _error(shown, f"holds more than {MAX_VALUES:,} values once YAML aliases (*name) "
                              "are expanded; a config holds a few hundred: write the values "
                              "out, or repeat fewer")
        if not isinstance(x, list | tuple | dict):
            continue
        if depth >= MAX_DEPTH:
            raise _error(shown, f"lists or mappings nested more than {MAX_DEPTH} levels deep; a "
                              "config nests a few (model.hidden: [[64, 64]] is two)")
        if len(x) > MAX_LIST:
            raise _error(shown, f"got a {'mapping' if isinstance(x, dict) else 'list'} of "
                              f"{len(x):,} entries; at most {MAX_LIST:,} are accepted (a sweep "
                              "trains every combination of its swept lists)")
        if isinstance(x, dict):
            stack.extend((k, depth + 1, key) for k in x)
            stack.extend((v, depth + 1, _walk_key(key, k)) for k, v in x.items())
        else:
            stack.extend((v, depth + 1, key) for v in x)


def _section(raw: dict, name: str) -> dict:
    """The mapping under a section key (null or absent: empty), with unknown keys rejected."""
    value = raw.get(name)
    if value is None:
        return {}
    allowed = _SECTION_KEYS[name]
    if not isinstance(value, dict):
        raise _error(name, f"{_got(value)}, expected a mapping with keys {', '.join(allowed)}")
    for key in value:
        if key not in allowed:
            raise _unknown_key(name, key, allowed)
    return value


def _get(section: dict, key: str, default: Any) -> Any:
    return section.get(key, default)


# --------------------------------------------------------------------------------------------
# Section parsers


def _parse_losses(v: Any) -> tuple[str, ...]:
    from lossjax.losses import LOSSES, resolve_loss

    def one(x: Any, path: str) -> str:
        if not isinstance(x, str) or not x.strip():
            raise _error(
                path,
                f"{_got(x)}, expected a loss name ({', '.join(LOSSES)}) or 'module:function'",
            )
        try:
            resolve_loss(x)
        except ValueError as e:
            hint = ""
            if ":" not in x and (guess := _did_you_mean(x, list(LOSSES))):
                hint = f" Did you mean '{guess}'?"
            raise _error(path, f"{e}{hint}") from None
        return x

    return _grid(v, "losses", one, "loss names or 'module:function' references")


def _parse_dataset(raw: dict) -> DatasetConfig:
    from lossjax.data import CLASS_NAMES

    s, d = _section(raw, "dataset"), DatasetConfig()
    data_dir = _get(s, "data_dir", d.data_dir)
    if data_dir is not None:
        _path_string(data_dir, "dataset.data_dir", "a folder path or null")
    val_size = _get(s, "val_size", d.val_size)
    if _is_int(val_size):
        _int(val_size, "dataset.val_size", 1)
    else:
        val_size = _number(
            val_size,
            "dataset.val_size",
            "a fraction in (0, 1) or a count (an integer >= 1)",
            lambda x: 0 < x < 1,
        )
    return DatasetConfig(
        name=_choice(_get(s, "name", d.name), "dataset.name", CLASS_NAMES),
        data_dir=data_dir,
        val_size=val_size,
        split_seed=_int(_get(s, "split_seed", d.split_seed), "dataset.split_seed", 0),
        standardize=_bool(_get(s, "standardize", d.standardize), "dataset.standardize"),
    )


def _parse_hidden(v: Any) -> tuple[tuple[int, ...], ...]:
    path = "model.hidden"
    mixed = "; a list of numbers is one model, several are written [[64, 64], [128]]"

    def size(n: Any, p: str) -> int:  # an int32 array dimension
        return _int(n, p, 1, LAYER_SIZE_MAX)

    def sizes(x: Any, p: str) -> tuple[int, ...]:
        if not isinstance(x, list | tuple):
            raise _error(p, f"{_got(x)}, expected a list of layer sizes (integers >= 1)")
        out = []
        for j, n in enumerate(x):
            if isinstance(n, list | tuple):
                raise _error(f"{p}[{j}]", f"{_got(n)}, expected an integer >= 1{mixed}")
            out.append(size(n, f"{p}[{j}]"))
        return tuple(out)

    if _is_int(v):  # a scalar: one model with one hidden layer
        return ((size(v, path),),)
    if isinstance(v, list | tuple) and v and _is_int(v[0]):  # [64, 64] is [[64, 64]]
        return (sizes(v, path),)
    for i, x in enumerate(v if isinstance(v, list | tuple) else ()):
        if not isinstance(x, list | tuple):
            raise _error(f"{path}[{i}]", f"{_got(x)}, expected a list of layer sizes{mixed}")
    expected = "hidden-size lists, e.g. [[64, 64], [128]] ([] is a linear model)"
    return _grid(v, path, sizes, expected, scalar_ok=False)


def _parse_model(raw: dict) -> ModelConfig:
    from lossjax.model import ACTIVATIONS, DTYPES, INITIALIZERS

    s, d = _section(raw, "model"), ModelConfig()
    return ModelConfig(
        hidden=_parse_hidden(_get(s, "hidden", [list(h) for h in d.hidden])),
        activation=_choice(_get(s, "activation", d.activation), "model.activation", ACTIVATIONS),
        init=_choice(_get(s, "init", d.init), "model.init", INITIALIZERS),
        init_scale=_grid(
            _get(s, "init_scale", list(d.init_scale)),
            "model.init_scale",
            _positive,
            "numbers > 0",
        ),
        dtype=_choice(_get(s, "dtype", d.dtype), "model.dtype", DTYPES),
    )


def _parse_learning_rate(
    v: Any, losses: tuple[str, ...], patches: dict[str, Any], narrowed: bool
) -> FrozenDict:
    path = "optimizer.learning_rate"

    def rates(x: Any, p: str) -> tuple[float, ...]:
        return _grid(x, p, _positive, "numbers > 0")

    def check_entry_keys(keys: Sequence[Any]) -> None:
        for k in keys:
            if k not in losses:
                guess = _did_you_mean(str(k), losses)
                hint = f"; did you mean '{guess}'?" if guess else ""
                raise _error(
                    _join(path, k),
                    f"no such loss in losses ({', '.join(losses)}); every entry must name a "
                    f"loss of the sweep{hint}",
                )

    if isinstance(v, dict):
        if narrowed:  # --set losses=[...] keeps the entries of the losses still swept
            v = {k: x for k, x in v.items() if k in losses}
        check_entry_keys(list(v))
        missing = [loss for loss in losses if loss not in v]
        if missing:
            given = ", ".join(map(str, v)) or "none"
            raise _error(
                path,
                f"got entries for {given}; missing {', '.join(missing)}: with a per-loss "
                "mapping every loss in losses needs its own list of rates",
            )
        return FrozenDict((loss, rates(v[loss], _join(path, loss))) for loss in losses)
    base = rates(v, path)
    check_entry_keys(list(patches))
    return FrozenDict(
        (loss, rates(patches[loss], _join(path, loss)) if loss in patches else base)
        for loss in losses
    )


def _arg_value(v: Any, path: str) -> Any:
    """A keyword argument's value for an optax function: a YAML scalar, list or mapping, made
    read-only (lists become tuples) so that the config stays hashable."""
    if v is None or isinstance(v, bool | str):
        return v
    if _is_number(v):
        if not _is_finite(v):
            raise _error(path, f"{_got(v)}, expected a finite number")
        return v
    if isinstance(v, list | tuple):
        return tuple(_arg_value(x, f"{path}[{i}]") for i, x in enumerate(v))
    if isinstance(v, dict):
        return FrozenDict((k, _arg_value(x, _join(path, k))) for k, x in v.items())
    raise _error(path, f"{_got(v)}, expected a number, true/false, a string, a list or a mapping")


def _keyword_args(
    v: Any, path: str, function: str, accepted: Sequence[str], reserved: dict[str, str]
) -> FrozenDict:
    """A mapping of keyword arguments of optax's ``function``, which takes ``accepted``;
    ``reserved`` are its arguments that another config key sets."""
    takes = f"its arguments are {', '.join(accepted)}" if accepted else "it takes none"
    if v is None:
        return FrozenDict()
    if not isinstance(v, dict):
        raise _error(path, f"{_got(v)}, expected a mapping of keyword arguments of {function}; "
                           f"{takes}")
    for key in v:
        where = _join(path, key)
        if key in reserved:
            raise _error(where, f"is set by {reserved[key]}; give it there and remove it "
                                f"from {path}")
        if key not in accepted:
            guess = _did_you_mean(str(key), list(accepted)) if accepted else None
            hint = f"; did you mean '{_join(path, guess)}'?" if guess else ""
            raise _error(where, f"not an argument of {function}; {takes}{hint}")
    return FrozenDict((k, _arg_value(x, _join(path, k))) for k, x in v.items())


def _optax_failure(path: str, given: Any, function: str, e: Exception) -> ConfigError:
    msg = " ".join(str(e).split())[:160]
    return _error(
        path,
        f"got {_show(given)}: building {function} with it and tracing one step raised "
        f"{type(e).__name__}: {msg}; give values of the types optax documents for {function}",
    )


def _parse_optimizer(
    raw: dict, losses: tuple[str, ...], patches: dict[str, Any], narrowed: bool
) -> OptimizerConfig:
    from lossjax import optimizers  # imports JAX: only once a config is validated

    s, d = _section(raw, "optimizer"), OptimizerConfig()
    name = _choice(_get(s, "name", d.name), "optimizer.name", optimizers.OPTIMIZERS)
    momentum = _number(
        _get(s, "momentum", d.momentum),
        "optimizer.momentum",
        "a number in [0, 1)",
        lambda x: 0 <= x < 1,
        float32=True,
    )
    # Every name is optax's own but 'momentum', which is optax.sgd.
    function = "optax.sgd (as 'momentum')" if name == "momentum" else f"optax.{name}"
    given = _get(s, "args", None)
    args = _keyword_args(given, "optimizer.args", function, *optimizers.optimizer_arguments(name))
    try:
        optimizers.check_optimizer(name, momentum, dict(args))
    except Exception as e:  # whatever optax makes of the arguments, named
        where = "optimizer.args" if args else "optimizer.name"
        raise _optax_failure(where, given if args else name, function, e) from None

    learning_rate = _parse_learning_rate(
        _get(s, "learning_rate", list(DEFAULT_LEARNING_RATES)), losses, patches, narrowed
    )
    weight_decay = _grid(
        _get(s, "weight_decay", list(d.weight_decay)),
        "optimizer.weight_decay",
        _non_negative,
        "numbers >= 0",
    )

    schedule = _choice(_get(s, "schedule", d.schedule), "optimizer.schedule", optimizers.SCHEDULES)
    make = optimizers.SCHEDULES[schedule]
    function = f"optax.{make.__name__}" if make else "the 'constant' schedule"
    accepted, reserved, required = optimizers.schedule_arguments(schedule)
    given = _get(s, "schedule_args", None)
    schedule_args = _keyword_args(given, "optimizer.schedule_args", function, accepted, reserved)
    missing = [a for a in required if a not in schedule_args]
    if missing:
        them = "it" if len(missing) == 1 else "them"
        raise _error(
            "optimizer.schedule_args",
            f"got {_show(given or {})}, missing {', '.join(missing)}: {function} has no "
            f"default for {them}; add {them}, e.g. optimizer.schedule_args: {{{missing[0]}: ...}}",
        )
    if make is not None:
        try:
            optimizers.check_schedule(schedule, dict(schedule_args))
        except Exception as e:
            where = "optimizer.schedule_args" if schedule_args else "optimizer.schedule"
            raise _optax_failure(where, given if schedule_args else schedule, function, e) from None

    return OptimizerConfig(
        name=name,
        momentum=momentum,
        args=args,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        schedule=schedule,
        schedule_args=schedule_args,
    )


def _parse_eval(raw: dict) -> EvalConfig:
    s, d = _section(raw, "eval"), EvalConfig()
    splits = _grid(
        _get(s, "splits", list(d.splits)),
        "eval.splits",
        lambda x, p: _choice(x, p, SPLITS),
        f"splits from {', '.join(SPLITS)}",
        scalar_ok=False,
    )
    if "val" not in splits:
        raise _error(
            "eval.splits",
            f"{_got(list(splits))}, expected a subset of {', '.join(SPLITS)} that includes "
            "'val' (the learning rate is chosen on validation accuracy)",
        )
    return EvalConfig(
        splits=tuple(x for x in SPLITS if x in splits),
        every=_int(_get(s, "every", d.every), "eval.every", 1),
        target_accuracy=_number(
            _get(s, "target_accuracy", d.target_accuracy),
            "eval.target_accuracy",
            "a number in (0, 1]",
            lambda x: 0 < x <= 1,
        ),
    )


def _parse_output(raw: dict) -> OutputConfig:
    s, d = _section(raw, "output"), OutputConfig()
    return OutputConfig(
        dir=_path_string(_get(s, "dir", d.dir), "output.dir", "a folder path"),
        tensorboard=_bool(_get(s, "tensorboard", d.tensorboard), "output.tensorboard"))


def _block_size(v: Any) -> int | str:
    if v == "auto" or (_is_int(v) and v >= 1):
        return v
    raise _error("block_size", f"{_got(v)}, expected an integer >= 1 or 'auto'")


def _parse_name(raw: dict) -> str:
    if "name" not in raw:
        raise _error(
            "name",
            "missing; give the sweep a name (letters, digits, _ . -), e.g. 'name: digits'; "
            "it names the results folder",
        )
    v = raw["name"]
    if not isinstance(v, str) or not _NAME_RE.fullmatch(v) or v in (".", ".."):
        raise _error(
            "name",
            f"{_got(v)}, expected a folder name of letters, digits, '_', '.', '-' "
            "(no spaces or slashes)",
        )
    if len(v.encode()) > NAME_MAX_BYTES:
        raise _error(
            "name",
            f"{_got(v)}, {len(v.encode())} bytes long; expected at most {NAME_MAX_BYTES} bytes "
            "(it names the results folder, and filesystems refuse longer names)",
        )
    return v


# --------------------------------------------------------------------------------------------
# Overrides


def _apply_override(raw: dict, text: str, lr_patches: dict[str, Any]) -> None:
    """Applies one 'dotted.key=yaml_value' to ``raw`` in place.

    Per-loss learning-rate overrides on a config whose learning rate is one list for all losses
    go to ``lr_patches``, applied once ``losses`` is known.
    """
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(
            f"--set {_show(text)}: expected KEY=VALUE, e.g. --set epochs=5 "
            "or --set optimizer.learning_rate.mse=[0.1,0.3]"
        )
    key, _, value_text = text.partition("=")
    key = key.strip()
    if len(text) > MAX_CONFIG_BYTES:
        raise _error(key[:80], f"--set of {len(text):,} characters; at most {MAX_CONFIG_BYTES:,}"
                               " are read (put a long value in the config file)")
    context = f" in --set {_show(text)}"
    if not key:
        raise ConfigError(f"--set {_show(text)}: the key before '=' is empty; expected KEY=VALUE")
    if (c := _control_character(text)) is not None:
        raise _error(key[:80], f"--set {_show(text)} holds the control character {c}; YAML "
                               "would fold or drop it silently: remove it")
    try:
        value = _read_yaml(value_text)
    except yaml.YAMLError as e:
        raise _error(
            key, f"value {_show(value_text)}{context} is not valid YAML ({_yaml_problem(e)})"
        ) from None
    except _Unreadable as e:
        raise _error(key, f"value {_show(value_text)}{context}: {e}") from None
    _check_size(value, key)

    parts = key.split(".")
    if parts[:2] in (["optimizer", "args"], ["optimizer", "schedule_args"]) and len(parts) > 2:
        optimizer = _override_section(raw, "optimizer")
        if not isinstance(optimizer.get(parts[1]), dict):
            optimizer[parts[1]] = {}
        optimizer[parts[1]][".".join(parts[2:])] = value
        return
    if parts[:2] == ["optimizer", "learning_rate"] and len(parts) > 2:
        loss = ".".join(parts[2:])  # a 'module.sub:function' loss may hold dots
        optimizer = _override_section(raw, "optimizer")
        lr = optimizer.get("learning_rate")
        if isinstance(lr, dict):
            lr[loss] = value
        else:
            lr_patches[loss] = value
        return

    node, prefix = raw, ""
    for i, part in enumerate(parts):
        allowed = _TOP_KEYS if not prefix else _SECTION_KEYS[prefix]
        if part not in allowed:
            raise _unknown_key(prefix, part, allowed, context)
        if i == len(parts) - 1:
            node[part] = value
            if key in ("optimizer", "optimizer.learning_rate"):
                lr_patches.clear()  # the whole learning rate was replaced
            return
        if prefix or part not in _SECTIONS:
            raise _error(
                _join(prefix, part) + "." + ".".join(parts[i + 1 :]),
                f"unknown key{context}; '{_join(prefix, part)}' has no sub-keys",
            )
        node, prefix = _override_section(node, part), part


def _override_section(node: dict, name: str) -> dict:
    value = node.get(name)
    if value is None:
        value = node[name] = {}
    if not isinstance(value, dict):
        raise _error(
            name, f"{_got(value)}, expected a mapping with keys {', '.join(_SECTION_KEYS[name])}"
        )
    return value


# --------------------------------------------------------------------------------------------
# Public API


def parse_config(raw: dict, overrides: Sequence[str] = ()) -> Config:
    """Validates a config mapping (as loaded from YAML), after applying ``overrides``.

    ``raw`` is not modified. Raises :class:`ConfigError` (one line, key path first) on the first
    problem found.
    """
    if not isinstance(raw, dict):
        raise ConfigError(
            f"config: {_got(raw)}, expected a mapping with keys {', '.join(_TOP_KEYS)}"
        )
    if isinstance(overrides, str):
        overrides = [overrides]
    _check_size(raw, "")  # before anything walks it: deepcopy, the checks, their messages
    raw = copy.deepcopy(raw)
    lr_patches: dict[str, Any] = {}
    narrowed = False
    for text in overrides:
        _apply_override(raw, text, lr_patches)
        narrowed = narrowed or (
            isinstance(text, str) and text.partition("=")[0].strip() == "losses"
        )

    for key in raw:
        if key not in _TOP_KEYS:
            raise _unknown_key("", key, _TOP_KEYS)
    name = _parse_name(raw)
    d = Config(name="")  # for its defaults; name has none and was read above
    seeds = _grid(
        raw.get("seeds", list(d.seeds)),
        "seeds",
        lambda x, p: _int(x, p, 0, SEED_MAX, " (seeds are uint32)"),
        f"integers in [0, {SEED_MAX}]",
    )
    epochs = _int(raw.get("epochs", d.epochs), "epochs", 1)
    batch_size = _int(raw.get("batch_size", d.batch_size), "batch_size", 1)
    block_size = _block_size(raw.get("block_size", d.block_size))
    losses = _parse_losses(raw.get("losses", list(d.losses)))
    return Config(
        name=name,
        seeds=seeds,
        epochs=epochs,
        batch_size=batch_size,
        block_size=block_size,
        losses=losses,
        dataset=_parse_dataset(raw),
        model=_parse_model(raw),
        optimizer=_parse_optimizer(raw, losses, lr_patches, narrowed),
        eval=_parse_eval(raw),
        output=_parse_output(raw),
    )


class _Unreadable(Exception):
    """YAML that PyYAML cannot turn into values without failing outside its own errors."""


def _read_yaml(text: str) -> Any:
    """``yaml.load`` with our loader, with its failures that are not ``YAMLError``s made
    :class:`_Unreadable`: deep nesting exhausts the reader's recursion, and an integer of
    thousands of digits passes Python's limit on converting text to int."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except RecursionError:
        raise _Unreadable(f"nested too deeply for the YAML reader; a config nests a few levels "
                          f"(at most {MAX_DEPTH})") from None
    except ValueError as e:  # int('9' * 5000): Python refuses integers past 4300 digits
        raise _Unreadable(f"holds a value Python cannot read ({one_line(e).split(':')[0][:120]}"
                          ")") from None


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> Config:
    """Reads a YAML sweep config, applies ``--set`` overrides, and validates it."""
    shown = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(MAX_CONFIG_BYTES + 1)  # no more: a huge file is refused unread
    except FileNotFoundError:
        raise ConfigError(f"{shown}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{shown}: is a folder, expected a YAML config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{shown}: not a text file, expected a YAML config file") from None
    except OSError as e:
        raise ConfigError(f"{shown}: cannot read ({e.strerror or e})") from None
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{shown}: more than {MAX_CONFIG_BYTES:,} characters; a config is a "
                          "few kilobytes: is this the config file?")
    try:
        raw = _read_yaml(text)
    except _Unreadable as e:
        raise ConfigError(f"{shown}: {e}") from None
    except _DuplicateKeyError as e:
        raise ConfigError(f"{shown}: {_yaml_problem(e)}; each key may appear once") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{shown}: not valid YAML: {_yaml_problem(e)}") from None
    if raw is None:
        raise ConfigError(f"{shown}: the file is empty, expected a mapping with at least 'name'")
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{shown}: top level {_got(raw)}, expected a mapping with keys {', '.join(_TOP_KEYS)}"
        )
    return parse_config(raw, overrides)


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v


def config_to_dict(cfg: Config) -> dict:
    """The resolved config as plain dicts, lists and scalars (YAML- and JSON-dumpable).

    Defaults are filled in and ``optimizer.learning_rate`` is always the per-loss mapping, so
    ``parse_config(config_to_dict(cfg)) == cfg``.
    """
    return _plain(dataclasses.asdict(cfg))


def learning_rates(cfg: Config, loss: str) -> tuple[float, ...]:
    """The learning-rate grid of one loss of the sweep."""
    try:
        return cfg.optimizer.learning_rate[loss]
    except KeyError:
        raise _error(
            "optimizer.learning_rate",
            f"no grid for loss {loss!r}; the sweep's losses are {', '.join(cfg.losses)}",
        ) from None


def check_batch_size(cfg: Config, n_train: int) -> None:
    """Raises ConfigError if a batch is larger than the training split (after validation)."""
    if cfg.batch_size > n_train:
        raise _error(
            "batch_size",
            f"got {cfg.batch_size}, larger than the {n_train} training examples of "
            f"{cfg.dataset.name}; use at most {n_train}",
        )
