"""Sweep configs: one YAML file describes one sweep; this module loads and validates it.

(Over 450 lines: about 150 of them are this docstring, the schema's reference; the rest is one
parser per section. The schema-free checks and the YAML reader are in ``lossjax.validate``.)

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
                            # of LOSSES, in its order. Losses with parameters (below):
                            # labels ('focal(gamma=2)') or mappings ({name: focal, gamma: [1, 2]})
    dataset:
      name: digits          # one of lossjax.data.NAMES ("arrays": your own, at path), or
                            # "tfds:NAME" (prepared by tensorflow-datasets in array_record)
      data_dir: null        # str or null
      val_size: 0.1         # float in (0, 1): fraction of train; or int >= 1: a count
      split_seed: 0         # int >= 0
      standardize: false    # bool
      path: null            # arrays only: a .npz, or a folder of .npy files
      classes: null         # null (all), int K >= 2 (the first K of a permutation drawn from
                            # subset_seed: nested across K), or a list of indices or names
      subset_seed: 0        # int >= 0
      per_class: null       # null or int >= 1: training examples per class (at most)
      label: fine           # fine, or coarse (cifar100's 20 superclasses)
    model:
      hidden: [[64, 64]]    # SWEPT: hidden-size lists of ints in [1, 2**31 - 1] (int32 shapes);
                            # [] is a linear model; [64, 64] = [[64, 64]]
      activation: relu      # a key of model.ACTIVATIONS
      init: lecun_normal    # a key of model.INITIALIZERS
      init_scale: [1.0]     # SWEPT: numbers > 0 multiplying the initial weights
      dtype: float32        # a key of model.DTYPES
    optimizer:
      name: momentum        # SWEPT: keys of optimizers.OPTIMIZERS: any optax optimizer by its
                            # name (sgd, adam, adamw, lamb, lion, rmsprop, adagrad, adafactor,
                            # nadam, ...), or momentum: optax.sgd with optimizer.momentum;
                            # [momentum, adam] sweeps both
      momentum: 0.9         # number in [0, 1); used by 'momentum' only (other optimizers take
                            # a momentum, sgd's included, through args)
      args: {}              # more keyword arguments of the optax optimizer, by their optax
                            # names: {b1: 0.95}, {momentum: 0.9, nesterov: true} for sgd; with
                            # several optimizers, per optimizer: {adam: {b1: 0.95}}
      learning_rate: [0.01, 0.1]   # SWEPT: numbers > 0 for every loss, or a mapping
                                   # {loss: [numbers > 0]} with exactly one entry per loss; or
                                   # either per optimizer: {adam: [...], momentum: {mse: [...],
                                   # ...}} with exactly one entry per optimizer
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

A sweep trains every member every epoch unless it races its rates (``lossjax.search`` states
the rule and its error rate)::

    search:
      method: race          # grid (the default: every member every epoch) | race
      rungs: auto           # epochs after which each group's rates are compared, increasing,
                            # each < epochs and an evaluation epoch (a multiple of eval.every);
                            # auto: 10%, 20%, 30% and 50% of epochs (the resolved config
                            # records them)
      alpha: 0.5            # the rule's test level, in (0, 1)
      extend: 0             # int >= 0: how many rates a group may add past an edge of its grid
                            # (grid or race; needs >= 2 rates per loss)
    confirm:
      seeds: []             # more seeds (ints, none of them in seeds), trained only at each
                            # group's chosen rate; [] for none

With ``method: grid`` ``rungs`` and ``alpha`` are not given. A config with neither a race, an
extension nor confirmation seeds resolves with no ``search`` and no ``confirm`` section, as
before they existed.

The stages (``lossjax.plan``): the grid trains first (raced or not). Then, while a group's
chosen rate sits at an edge of the rates it has tried and it has added fewer than ``extend``,
the next rate beyond that edge (the grid's neighbouring ratio) trains from epoch 0 on the
sweep's seeds, one rate per group per stage, raced against the rates that were still training
at each rung (only the added rate can be dropped then). Last, ``confirm.seeds`` train at each
group's chosen rate, never dropped (a race still stops a diverged member). The chosen rate is
decided on ``seeds`` alone; its reported mean and interval then use every seed at that rate.

The values shown, ``name`` aside, are the defaults of the dataclasses below, which the parser
reads; tests/test_config.py checks that this block parses to them. Names are checked against
the registries of the modules that implement them (``lossjax/losses.py``,
``lossjax/model.py``, ``lossjax/optimizers.py``, ``lossjax.data.CLASS_NAMES``); an error message
lists the choices.

The model (the MLP above by default; a config that says nothing of ``kind`` is an MLP's, and
its resolved config does not show these two keys)::

    model:
      kind: mlp             # mlp; cnn: 3x3 convolutions with 2x2 average pooling, then
                            # model.hidden; or 'module:my_models:Net': a Flax linen Module class
                            # with a num_classes field (docs/usage.md), its folder on PYTHONPATH
      channels: [32, 64]    # cnn only: each convolution's output channels (ints >= 1)

The CNN and a user's module take images (N, H, W, C), grayscale with one channel; the MLP
flat features. ``init_scale`` multiplies every parameter named ``kernel``.

The optimizer and its schedule:

- ``optimizer.args`` and ``optimizer.schedule_args`` take the keyword arguments of the optax
  function by their optax names, checked against its signature; values are YAML scalars, lists
  or mappings. The learning rate and the weight decay are not among them: the swept keys set
  them per member. Bad values fail when the config is read: one step of the optimizer is traced,
  and the numbers of ``momentum``, ``b1``, ``b2``, ``b3``, ``decay`` and ``rho`` must be in
  [0, 1), those of ``eps``, ``eps_root`` and ``initial_accumulator_value`` >= 0, each in
  float32, as ``optimizer.momentum`` is (optax would train with them out of range).
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

Losses with parameters (``losses.PARAMETERIZED``: ``rescaled_mse(k, M)``, ``squentropy``,
``label_smoothing_ce(alpha)``, ``focal(gamma)``), in ``losses``::

    losses: [cross_entropy, squentropy, {name: rescaled_mse, k: [1, 5], M: [1, 15]},
             {name: focal, gamma: [1, 2], variant: no_push_up}, 'label_smoothing_ce(alpha=0.1)']

- A mapping ``{name, <parameter>: number or [numbers], variant: edit or [edits]}`` is the
  product of its lists (the parameters in the loss's own order, then ``variant``), each a loss
  of the sweep under its label, ``rescaled_mse(k=5,M=15)``, ``focal(gamma=1)-no_push_up``: the
  ``loss`` of every table, plot, report and comparison. A parameter left out takes its default,
  written out in the label; a bare name is its defaults (``rescaled_mse`` is
  ``rescaled_mse(k=1,M=1)``); ``squentropy`` takes none. A label may be written directly
  (``'focal(gamma=2.0)'``, recorded as ``focal(gamma=2)``; the resolved config lists labels).
- Ranges: ``k >= 1``, ``M > 0``, ``alpha`` in [0, 1), ``gamma >= 0``, each judged on the
  value the engine holds (float32, float64 with ``model.dtype: float64``), in a label as in a
  mapping: ``alpha: 0.99999999`` is 1 in float32 and refused, and two settings equal there
  (``gamma: [2, 2.0000000001]``) are duplicates.
- ``variant`` is an edit with its suffixes as ``lossjax.interventions`` names them
  (``no_push_up``, ``push_up_50-balanced``); the loss ``mse-no_push_up`` may be written
  ``{name: mse, variant: no_push_up}``.
- Every setting of one loss (or of one variant of it) trains in one compiled program, its
  parameters an array per member; the four built-in losses keep theirs.
- ``optimizer.learning_rate`` as a mapping takes, for a loss with parameters, either its label
  (that setting) or its name without parameters (``focal``, ``focal-no_push_up``: every
  setting of it that has no entry of its own).

Several optimizers (``optimizer.name: [momentum, adam]``; one name, or a one-element list,
is one optimizer as before):

- Each (loss, optimizer) is a group with its own chosen learning rate. ``optimizer.args`` is
  then keyed by optimizer (``{adam: {b1: 0.95}}``; one left out takes optax's defaults), as no
  argument list suits every optimizer; a key that is no optimizer of the list is refused.
  ``optimizer.momentum``, the weight decays and the schedule are shared.
- ``optimizer.learning_rate`` is a list or a per-loss mapping for every optimizer, or a mapping
  keyed by optimizer, each entry one of those two forms. Loss and optimizer names never
  overlap, so the keys tell the forms apart; a mapping that mixes them is refused.
- The resolved config holds ``name`` as a list, ``args`` as ``{optimizer: {...}}`` and
  ``learning_rate`` as ``{optimizer: {loss: (rates, ...)}}``; with one optimizer all three are
  as they were before optimizers were swept.

Swept keys (the sweep is their product; see :data:`SWEPT`): ``seeds``, ``losses``,
``optimizer.name``, ``model.hidden``, ``model.init_scale``, ``optimizer.learning_rate`` (per
loss and optimizer), ``optimizer.weight_decay``. Each takes a list; a single value is a
one-element list (``seeds: 3`` is ``seeds: [3]``). Lists must be non-empty and hold no duplicates.

Other rules:

- Types are strict: ``true`` is not an integer, ``3.0`` is not an integer, ``'0.1'`` (quoted)
  is not a number. Numbers must be finite. Integers are accepted where a number is expected.
- The engine holds ``optimizer.learning_rate``, ``optimizer.weight_decay``,
  ``optimizer.momentum`` and ``model.init_scale`` in float32, so each must be 0 (where 0 is
  allowed) or have a magnitude in float32's normal range, about [1.2e-38, 3.4e+38], and
  two values of one list that float32 holds as one number are duplicates.
- ``1e-3`` is read as a number (plain PyYAML would read it as a string).
- A section left empty (``model:`` with nothing under it) takes its defaults.
- A key repeated in one mapping of the file is an error (plain PyYAML keeps the last one).
- ``eval.splits`` is stored in the order train, val, test whatever the order given.

Overrides (``lossjax sweep CONFIG --set KEY=VALUE``, as Flax's config flags): ``KEY`` is a
dotted path (``epochs``, ``optimizer.name``, ``optimizer.learning_rate.mse``,
``optimizer.args.b1``, ``optimizer.args.adam.b1``), ``VALUE`` is parsed as YAML (``seeds=[0,1]``,
``dataset.data_dir=null``). An override replaces the value at its path (a section given whole,
``model={hidden: [[32]]}``, replaces the section). Overrides apply in order, to the file's
values, before validation. ``optimizer.learning_rate.LOSS=[..]`` sets one loss's grid; when
the file gives one list for all losses, the others keep it;
``optimizer.learning_rate.OPT=[..]`` and ``optimizer.learning_rate.OPT.LOSS=[..]`` set one
optimizer's grids likewise. Narrowing ``losses`` with ``--set`` drops the learning-rate entries
of the losses left out.

The resolved :class:`Config` is a tree of frozen dataclasses with the YAML names; lists are
tuples, ``optimizer.learning_rate`` is always a read-only mapping ``{loss: (rates, ...)}`` in the
order of ``losses`` (with several optimizers, one such per optimizer), and ``optimizer.args``
and ``optimizer.schedule_args`` are read-only mappings too. :func:`config_to_dict` gives it
back as plain YAML-dumpable types, and
``parse_config(config_to_dict(cfg)) == cfg``. Constructing the dataclasses directly skips
validation; go through :func:`parse_config` or :func:`load_config`.

This module writes nothing. Importing it imports no JAX, like importing the package: the
registries, and JAX with them, are imported when a config is validated or a default loss list
is needed. ``'module:function'`` losses import the user's module, through
``lossjax.resolve.resolve_loss``.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import os
import re
import select
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from lossjax.errors import ConfigError, one_line
from lossjax.validate import (
    MAX_CONFIG_BYTES,
    MAX_LIST,
    DuplicateKeyError,
    Unreadable,
    boolean,
    check_size,
    choice,
    did_you_mean,
    error,
    got,
    grid,
    held,
    integer,
    is_finite,
    is_int,
    is_number,
    join,
    non_negative,
    number,
    path_string,
    positive,
    read_override,
    read_yaml,
    show,
    string,
    unknown_key,
    yaml_problem,
)

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
    "optimizer.name",
    "model.hidden",
    "model.init_scale",
    "optimizer.learning_rate",
    "optimizer.weight_decay",
)

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
NAME_MAX_BYTES = 255  # the name is a folder name; filesystems refuse longer ones

# What the engine can hold: seeds are uint32 (jax.random.key), layer sizes are int32 array
# dimensions (its float32 values are checked by validate.number).
SEED_MAX = 2**32 - 1
LAYER_SIZE_MAX = 2**31 - 1


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
    from lossjax.losses import LOSSES  # imports JAX: only when needed

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
    path: str | None = None
    classes: int | tuple[int | str, ...] | None = None
    subset_seed: int = 0
    per_class: int | None = None
    label: str = "fine"


# Added after results folders existed: left out of config.yaml at these defaults, so that an
# older folder's config still matches (and resumes) unchanged.
_DATASET_OPTIONAL = {"path": None, "classes": None, "subset_seed": 0, "per_class": None,
                     "label": "fine"}


@dataclass(frozen=True)
class ModelConfig:
    hidden: tuple[tuple[int, ...], ...] = ((64, 64),)
    activation: str = "relu"
    init: str = "lecun_normal"
    init_scale: tuple[float, ...] = (1.0,)
    dtype: str = "float32"
    kind: str = "mlp"  # 'mlp', 'cnn' or 'module:Class'
    channels: tuple[int, ...] = (32, 64)  # the CNN's only


@dataclass(frozen=True)
class OptimizerConfig:
    # One optimizer: its name, its args and {loss: rates}, as before optimizers were swept.
    # Several: a tuple of names, args {name: args} and learning_rate {name: {loss: rates}}.
    name: str | tuple[str, ...] = "momentum"
    momentum: float = 0.9
    args: FrozenDict = field(default_factory=FrozenDict)
    learning_rate: FrozenDict = field(default_factory=_default_learning_rate)
    weight_decay: tuple[float, ...] = (0.0,)
    schedule: str = "constant"
    schedule_args: FrozenDict = field(default_factory=FrozenDict)

    @property
    def names(self) -> tuple[str, ...]:
        """The swept optimizers, in the config's order (one or several)."""
        return (self.name,) if isinstance(self.name, str) else tuple(self.name)

    def args_of(self, name: str) -> FrozenDict:
        """optimizer.args of optimizer ``name``."""
        return self.args if isinstance(self.name, str) else self.args[name]

    def rates_of(self, name: str) -> FrozenDict:
        """The learning-rate grids {loss: rates} of optimizer ``name``."""
        return self.learning_rate if isinstance(self.name, str) else self.learning_rate[name]

    def grids(self) -> list[tuple[str, tuple[float, ...]]]:
        """Every learning-rate grid with its key path under optimizer.learning_rate
        ('mse', or 'adam.mse' with several optimizers)."""
        if isinstance(self.name, str):
            return list(self.learning_rate.items())
        return [(f"{o}.{loss}", r) for o in self.name for loss, r in self.learning_rate[o].items()]


@dataclass(frozen=True)
class EvalConfig:
    splits: tuple[str, ...] = SPLITS
    every: int = 1
    target_accuracy: float = 0.95


#: The race's defaults (see ``lossjax.search``): the rungs as fractions of the epochs, and the
#: test level; chosen by replaying the rule on the committed studies.
RUNG_FRACTIONS = (0.1, 0.2, 0.3, 0.5)
ALPHA = 0.5
SEARCH_METHODS = ("grid", "race")


def default_rungs(epochs: int, fractions: Sequence[float] = RUNG_FRACTIONS) -> tuple[int, ...]:
    """The rungs for a sweep of ``epochs``: each fraction of it, rounded, at least 1 and before
    the last epoch (a rung at the last epoch would decide nothing)."""
    return tuple(sorted(r for r in {max(1, round(f * epochs)) for f in fractions} if r < epochs))


@dataclass(frozen=True)
class SearchConfig:
    method: str = "grid"
    rungs: tuple[int, ...] | str = "auto"  # resolved to epochs when the method is race
    alpha: float = ALPHA
    extend: int = 0


@dataclass(frozen=True)
class ConfirmConfig:
    seeds: tuple[int, ...] = ()


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
    search: SearchConfig = field(default_factory=SearchConfig)
    confirm: ConfirmConfig = field(default_factory=ConfirmConfig)


_SECTIONS: dict[str, type] = {
    "dataset": DatasetConfig,
    "model": ModelConfig,
    "optimizer": OptimizerConfig,
    "eval": EvalConfig,
    "output": OutputConfig,
    "search": SearchConfig,
    "confirm": ConfirmConfig,
}
_TOP_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Config))
_SECTION_KEYS: dict[str, tuple[str, ...]] = {
    s: tuple(f.name for f in dataclasses.fields(cls)) for s, cls in _SECTIONS.items()
}
_ALL_PATHS: tuple[str, ...] = tuple(k for k in _TOP_KEYS if k not in _SECTIONS) + tuple(
    f"{s}.{k}" for s, keys in _SECTION_KEYS.items() for k in keys
)


# --------------------------------------------------------------------------------------------
# Section parsers


def _section(raw: dict, name: str) -> dict:
    """The mapping under a section key (null or absent: empty), with unknown keys rejected."""
    value = raw.get(name)
    if value is None:
        return {}
    allowed = _SECTION_KEYS[name]
    if not isinstance(value, dict):
        raise error(name, f"{got(value)}, expected a mapping with keys {', '.join(allowed)}")
    for key in value:
        if key not in allowed:
            raise unknown_key(name, key, allowed, _ALL_PATHS)
    return value


def _get(section: dict, key: str, default: Any) -> Any:
    return section.get(key, default)


def _parse_losses(v: Any, dtype: str = "float32") -> tuple[str, ...]:
    """``losses``: each entry a name (a loss of ``LOSSES``, a parameterized loss's label, a
    variant of either, or ``'module:function'``) or a mapping ``{name, <parameter>: value or
    [values], variant: edit or [edits]}`` that expands into the product of its lists. Every loss
    is recorded under its canonical name (``resolve.canonical``). Parameters are checked in
    ``dtype``, the precision the engine holds them in, in a label as in a mapping."""
    from lossjax.losses import LOSSES, PARAMETERIZED  # imports JAX: only when needed
    from lossjax.resolve import canonical, resolve_loss

    def checked(name: str, path: str) -> str:
        try:
            resolve_loss(name)
            return canonical(name)
        except ValueError as e:
            hint = ""
            bases = [*LOSSES, *PARAMETERIZED]
            if ":" not in name and "(" not in name and (guess := did_you_mean(name, bases)):
                hint = f" Did you mean '{guess}'?"
            raise error(path, f"{e}{hint}") from None

    def one(x: Any, path: str) -> list[str]:
        if isinstance(x, dict):
            return _expand_loss(x, path, checked, dtype)
        if not isinstance(x, str) or not x.strip():
            raise error(
                path,
                f"{got(x)}, expected a loss name ({', '.join(LOSSES)}, or one with parameters "
                f"such as 'focal(gamma=2)'), a mapping {{name: focal, gamma: [1, 2]}} or "
                "'module:function'",
            )
        return [checked(x, path)]

    expected = "a non-empty list of loss names, mappings or 'module:function' references"
    if isinstance(v, list | tuple):
        if not v:
            raise error("losses", f"got [], expected {expected}")
        entries = [(x, f"losses[{i}]") for i, x in enumerate(v)]
    elif v is None:
        raise error("losses", f"{got(v)}, expected {expected}")
    else:  # one value: a list of one
        entries = [(v, "losses")]
    out: dict[str, tuple[str, str]] = {}  # held label -> (label, the entry that gave it first)
    for x, path in entries:
        for label in one(x, path):
            key = _held_label(label, path, dtype)
            if key in out:
                gives = f", which gives {label!r}," if label != x else ","
                if out[key][0] != label:
                    gives = (f", which {dtype} (the precision the engine trains with) holds as "
                             f"{out[key][0]!r},")
                raise error(path, f"got {show(x)}{gives} a duplicate of {out[key][1]}; each loss "
                                  "may appear once")
            out[key] = (label, path)
            if len(out) > MAX_LIST:
                raise error("losses", f"expands to more than {MAX_LIST:,} losses")
    return tuple(label for label, _ in out.values())


def _held_label(label: str, path: str, dtype: str) -> str:
    """``label`` with its parameters as the engine holds them in ``dtype`` (each checked there,
    as a mapping's are: a label written directly skips no check), to find two labels that
    train the same loss."""
    from lossjax import losses as losses_lib  # imports JAX: only when needed
    from lossjax.resolve import loss_params

    values = loss_params(label)
    if not values:
        return label
    name = re.match(r"[a-z_]+", label).group()
    entry = losses_lib.PARAMETERIZED[name]
    params = {}
    for p, v in zip(entry.names, values, strict=True):
        ok, rule = entry.range(p)
        number(v, f"{path}: {p} of {label!r}", f"a number {rule}", ok, dtype=dtype)
        params[p] = held(v, dtype)
    return re.sub(r"\([^()]*\)", lambda _: entry.label(params)[len(name):], label, count=1)


def _expand_loss(x: dict, path: str, checked, dtype: str) -> list[str]:
    """The labels one mapping of ``losses`` stands for, in the product of its lists (the
    parameters in the loss's own order, then ``variant``), each checked by ``checked``."""
    from lossjax import losses as losses_lib  # imports JAX: only when needed

    known = [*losses_lib.LOSSES, *losses_lib.PARAMETERIZED]
    if "name" not in x:
        raise error(path, f"{got(x)} without 'name'; give the loss, e.g. "
                          "{name: focal, gamma: [1, 2]}")
    name = x["name"]
    if not isinstance(name, str) or name not in known:
        guess = did_you_mean(name, known) if isinstance(name, str) else None
        hint = f"; did you mean '{guess}'?" if guess else ""
        raise error(join(path, "name"), f"{got(name)}, expected a loss name without parameters "
                                        f"or edits, one of {', '.join(known)} (parameters are "
                                        f"keys of the mapping, an edit goes in 'variant'){hint}")
    entry = losses_lib.PARAMETERIZED.get(name)
    names = entry.names if entry else ()
    for key in x:
        if key not in ("name", "variant", *names):
            raise error(join(path, key), losses_lib.parameter_problem(name, str(key)))
    values = {}
    for p in names:
        if p not in x:
            values[p] = (entry.defaults()[p],)
            continue
        ok, rule = entry.range(p)
        values[p] = grid(x[p], join(path, p),
                         lambda v, q, ok=ok, rule=rule: number(
                             v, q, f"a number {rule}", ok, dtype=dtype),
                         f"numbers {rule}", dtype=dtype)
    variants: tuple = (None,)
    if "variant" in x:
        variants = grid(x["variant"], join(path, "variant"),
                        lambda v, q: string(v, q, "an edit such as no_push_up"),
                        "edits such as no_push_up")
    out = []
    for combo in itertools.product(*values.values()):
        base = entry.label(dict(zip(names, combo, strict=True))) if entry else name
        for j, edit in enumerate(variants):
            where = path if edit is None else (
                join(path, "variant") + (f"[{j}]" if isinstance(x["variant"], list) else ""))
            out.append(checked(base if edit is None else f"{base}-{edit}", where))
    return out


def _parse_dataset(raw: dict) -> DatasetConfig:
    from lossjax.data import CLASS_NAMES  # ~40 ms: only once a config is validated

    s, d = _section(raw, "dataset"), DatasetConfig()
    data_dir = _get(s, "data_dir", d.data_dir)
    if data_dir is not None:
        path_string(data_dir, "dataset.data_dir", "a folder path or null")
    val_size = _get(s, "val_size", d.val_size)
    if is_int(val_size):
        integer(val_size, "dataset.val_size", 1)
    else:
        val_size = number(
            val_size,
            "dataset.val_size",
            "a fraction in (0, 1) or a count (an integer >= 1)",
            lambda x: 0 < x < 1,
        )
    name = _get(s, "name", d.name)
    if not (isinstance(name, str) and re.fullmatch(r"tfds:[a-z][a-z0-9_]*", name)):
        name = choice(name, "dataset.name", (*CLASS_NAMES, "arrays", "tfds:NAME"))
        if name == "tfds:NAME":
            raise error("dataset.name", "replace NAME in tfds:NAME with the name of a dataset "
                        "tensorflow-datasets prepared, e.g. tfds:svhn_cropped")
    path = _get(s, "path", d.path)
    if (path is None) != (name != "arrays"):
        raise error("dataset.path", "the arrays dataset reads your own file: give the path of "
                    "a .npz or a folder of .npy files" if path is None else
                    f"{got(path)}, but only dataset.name: arrays reads a path; remove it")
    if path is not None:
        path_string(path, "dataset.path", "a .npz file's or a folder's path")
    per_class = _get(s, "per_class", d.per_class)
    return DatasetConfig(
        name=name,
        data_dir=data_dir,
        val_size=val_size,
        split_seed=integer(_get(s, "split_seed", d.split_seed), "dataset.split_seed", 0),
        standardize=boolean(_get(s, "standardize", d.standardize), "dataset.standardize"),
        path=path,
        classes=_parse_classes(_get(s, "classes", d.classes)),
        subset_seed=integer(_get(s, "subset_seed", d.subset_seed), "dataset.subset_seed", 0,
                            SEED_MAX),
        per_class=None if per_class is None else integer(per_class, "dataset.per_class", 1),
        label=_parse_label(_get(s, "label", d.label), name),
    )


def _parse_label(v: Any, name: str) -> str:
    if choice(v, "dataset.label", ("fine", "coarse")) == "coarse" and name != "cifar100":
        raise error("dataset.label", f"got 'coarse', but only cifar100 has coarse labels, not "
                    f"{name}; remove it")
    return v


def _parse_classes(v: Any) -> int | tuple[int | str, ...] | None:
    """null, a count K >= 2, or a list of distinct class indices or names (checked against the
    dataset when it is loaded: a user's arrays have no class list before then)."""
    path = "dataset.classes"
    if v is None or is_int(v):
        return v if v is None else integer(v, path, 2)
    if not isinstance(v, list) or not all(is_int(c) or isinstance(c, str) for c in v):
        raise error(path, f"{got(v)}, expected a number of classes K >= 2 or a list of class "
                    "indices or names")
    if len(set(v)) != len(v):
        raise error(path, f"{got(v)}, which repeats {next(c for c in v if v.count(c) > 1)!r}; "
                    "list each class once")
    if len(v) < 2:
        raise error(path, f"{got(v)}, expected at least 2 classes")
    return tuple(v)


def _parse_hidden(v: Any) -> tuple[tuple[int, ...], ...]:
    path = "model.hidden"
    mixed = "; a list of numbers is one model, several are written [[64, 64], [128]]"

    def size(n: Any, p: str) -> int:  # an int32 array dimension
        return integer(n, p, 1, LAYER_SIZE_MAX)

    def sizes(x: Any, p: str) -> tuple[int, ...]:
        if not isinstance(x, list | tuple):
            raise error(p, f"{got(x)}, expected a list of layer sizes (integers >= 1)")
        out = []
        for j, n in enumerate(x):
            if isinstance(n, list | tuple):
                raise error(f"{p}[{j}]", f"{got(n)}, expected an integer >= 1{mixed}")
            out.append(size(n, f"{p}[{j}]"))
        return tuple(out)

    if is_int(v):  # a scalar: one model with one hidden layer
        return ((size(v, path),),)
    if isinstance(v, list | tuple) and v and is_int(v[0]):  # [64, 64] is [[64, 64]]
        return (sizes(v, path),)
    for i, x in enumerate(v if isinstance(v, list | tuple) else ()):
        if not isinstance(x, list | tuple):
            raise error(f"{path}[{i}]", f"{got(x)}, expected a list of layer sizes{mixed}")
    expected = "hidden-size lists, e.g. [[64, 64], [128]] ([] is a linear model)"
    return grid(v, path, sizes, expected, scalar_ok=False)


def _parse_model(raw: dict) -> ModelConfig:
    from lossjax.model import ACTIVATIONS, DTYPES, INITIALIZERS  # imports JAX: only when needed

    s, d = _section(raw, "model"), ModelConfig()
    return ModelConfig(
        hidden=_parse_hidden(_get(s, "hidden", [list(h) for h in d.hidden])),
        activation=choice(_get(s, "activation", d.activation), "model.activation", ACTIVATIONS),
        init=choice(_get(s, "init", d.init), "model.init", INITIALIZERS),
        init_scale=grid(
            _get(s, "init_scale", list(d.init_scale)),
            "model.init_scale",
            positive,
            "numbers > 0",
            dtype="float32",
        ),
        dtype=choice(_get(s, "dtype", d.dtype), "model.dtype", DTYPES),
        kind=_parse_kind(_get(s, "kind", d.kind)),
        channels=_parse_channels(_get(s, "channels", list(d.channels))),
    )


_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


def _parse_kind(v: Any) -> str:
    """``mlp``, ``cnn`` or ``'module:Class'`` (a module's name is checked here; importing it
    and calling it is ``lossjax.preflight.check_model``'s)."""
    if v in ("mlp", "cnn"):
        return v
    if isinstance(v, str) and v.startswith("module:"):
        module_name, _, attr = v.removeprefix("module:").partition(":")
        if _DOTTED.fullmatch(module_name) and _DOTTED.fullmatch(attr):
            return v
    raise error("model.kind", f"{got(v)}, expected mlp, cnn or 'module:Class' with dotted Python "
                "names, e.g. 'module:my_models:Net' (its folder on PYTHONPATH)")


def _parse_channels(v: Any) -> tuple[int, ...]:
    if not isinstance(v, list | tuple) or not v:
        raise error("model.channels", f"{got(v)}, expected a non-empty list of channel counts, "
                    "e.g. [32, 64]")
    return tuple(integer(n, f"model.channels[{i}]", 1, LAYER_SIZE_MAX) for i, n in enumerate(v))


def lr_key_losses(key: Any, losses: tuple[str, ...]) -> tuple[str, ...]:
    """The losses of the sweep a key of the ``optimizer.learning_rate`` mapping stands for: the
    loss it names (a label is read in any spelling ``losses`` accepts: ``focal(gamma=2.0)`` is
    ``focal(gamma=2)``), or, for a loss with parameters, its name without them, which stands
    for every setting of it in the sweep (``focal``: ``focal(gamma=1)`` and ``focal(gamma=2)``;
    ``focal-no_push_up``: that variant's settings). () for a key that names none."""
    from lossjax.losses import without_params  # imports JAX: only when needed
    from lossjax.resolve import canonical

    if not isinstance(key, str):
        return ()
    if key in losses:
        return (key,)
    settings = tuple(loss for loss in losses if loss != without_params(loss)
                     and without_params(loss) == key)
    if settings:
        return settings
    try:
        label = canonical(key)
    except ValueError:
        return ()
    return (label,) if label in losses else ()


def _lr_entries(entries: dict, losses: tuple[str, ...], path: str) -> dict[str, Any]:
    """Per loss of the sweep covered by a key of ``entries``, that key: the loss's own entry
    where it has one, else the entry of its name without parameters (:func:`lr_key_losses`).
    A key that stands for no loss of the sweep is an error."""
    from lossjax.losses import without_params  # imports JAX: only when needed

    out: dict[str, Any] = {}
    for k in entries:
        covered = lr_key_losses(k, losses)
        if not covered:
            families = [f for f in dict.fromkeys(map(without_params, losses)) if f not in losses]
            guess = did_you_mean(str(k), [*losses, *families])
            hint = f"; did you mean '{guess}'?" if guess else ""
            also = (f", or a loss's name without its parameters ({', '.join(families)})"
                    if families else "")
            raise error(
                join(path, k),
                f"no such loss in losses ({', '.join(losses)}); every entry must name a "
                f"loss of the sweep{also}{hint}",
            )
        own = not all(loss != k and without_params(loss) == k for loss in covered)
        for loss in covered:
            before = out.get(loss)
            if before is not None and before[1] == own:
                raise error(join(path, k), f"gives the rates of {loss}, as the entry "
                                           f"{before[0]!r} does; give each loss one entry")
            if before is None or own:  # a loss's own entry wins over its family's
                out[loss] = (k, own)
    return {loss: k for loss, (k, _) in out.items()}


def _parse_learning_rate(
    v: Any, losses: tuple[str, ...], patches: dict[str, Any], narrowed: bool,
    path: str = "optimizer.learning_rate", given_by_set: frozenset[str] = frozenset(),
) -> FrozenDict:

    def rates(x: Any, p: str) -> tuple[float, ...]:
        return grid(x, p, positive, "numbers > 0", dtype="float32")

    if isinstance(v, dict):
        if narrowed:  # --set losses=[...] keeps the entries of the losses still swept
            # (and every entry a --set gave: a rate for a loss the sweep lacks is refused)
            v = {k: x for k, x in v.items() if lr_key_losses(k, losses) or k in given_by_set}
        keys = _lr_entries(v, losses, path)
        missing = [loss for loss in losses if loss not in keys]
        if missing:
            given = ", ".join(map(str, v)) or "none"
            raise error(
                path,
                f"got entries for {given}; missing {', '.join(missing)}: with a per-loss "
                "mapping every loss in losses needs its own list of rates (a loss with "
                "parameters may share one, under its name without them)",
            )
        return FrozenDict((loss, rates(v[keys[loss]], join(path, keys[loss])))
                          for loss in losses)
    base = rates(v, path)
    keys = _lr_entries(patches, losses, path)
    return FrozenDict(
        (loss, rates(patches[keys[loss]], join(path, keys[loss])) if loss in keys else base)
        for loss in losses
    )


def _arg_value(v: Any, path: str) -> Any:
    """A keyword argument's value for an optax function: a YAML scalar, list or mapping, made
    read-only (lists become tuples) so that the config stays hashable."""
    if v is None or isinstance(v, bool | str):
        return v
    if is_number(v):
        if not is_finite(v):
            raise error(path, f"{got(v)}, expected a finite number")
        return v
    if isinstance(v, list | tuple):
        return tuple(_arg_value(x, f"{path}[{i}]") for i, x in enumerate(v))
    if isinstance(v, dict):
        return FrozenDict((k, _arg_value(x, join(path, k))) for k, x in v.items())
    raise error(path, f"{got(v)}, expected a number, true/false, a string, a list or a mapping")


def _keyword_args(
    v: Any, path: str, function: str, accepted: Sequence[str], reserved: dict[str, str]
) -> FrozenDict:
    """A mapping of keyword arguments of optax's ``function``, which takes ``accepted``;
    ``reserved`` are its arguments that another config key sets."""
    takes = f"its arguments are {', '.join(accepted)}" if accepted else "it takes none"
    if v is None:
        return FrozenDict()
    if not isinstance(v, dict):
        raise error(path, f"{got(v)}, expected a mapping of keyword arguments of {function}; "
                          f"{takes}")
    for key in v:
        where = join(path, key)
        if key in reserved:
            raise error(where, f"is set by {reserved[key]}; give it there and remove it "
                               f"from {path}")
        if key not in accepted:
            guess = did_you_mean(str(key), list(accepted)) if accepted else None
            hint = f"; did you mean '{join(path, guess)}'?" if guess else ""
            raise error(where, f"not an argument of {function}; {takes}{hint}")
    return FrozenDict((k, _arg_value(x, join(path, k))) for k, x in v.items())


# The ranges of optax's arguments that are averaging factors or offsets, which optax accepts
# out of range and trains with (sgd's momentum 1.5 diverges; adam's b2 -5 gives NaNs): held to
# the rules of the top-level keys, in float32 (the optimizer state's precision).
_ARG_RANGES: dict[str, tuple[str, Any]] = {
    **dict.fromkeys(("momentum", "b1", "b2", "b3", "decay", "rho"),
                    ("a number in [0, 1)", lambda x: 0 <= x < 1)),
    **dict.fromkeys(("eps", "eps_root", "initial_accumulator_value"),
                    ("a number >= 0", lambda x: x >= 0)),
}


def _checked_args(args: FrozenDict, path: str) -> FrozenDict:
    """``args`` with the numbers of :data:`_ARG_RANGES`' arguments checked (other values are
    left to optax: None is its default, e.g. sgd's momentum)."""
    for k, x in args.items():
        if k in _ARG_RANGES and is_number(x):
            expected, ok = _ARG_RANGES[k]
            number(x, join(path, k), expected, ok, dtype="float32")
    return args


def _optax_failure(path: str, given: Any, function: str, e: Exception) -> ConfigError:
    msg = one_line(e, 160)
    return error(
        path,
        f"got {show(given)}: building {function} with it and tracing one step raised "
        f"{type(e).__name__}: {msg}; give values of the types optax documents for {function}",
    )


def _optimizer_names(s: dict, d: OptimizerConfig) -> tuple[str, ...]:
    """optimizer.name: one name, or a list of them (a swept key)."""
    from lossjax import optimizers  # imports JAX: only once a config is validated

    return grid(_get(s, "name", d.name), "optimizer.name",
                lambda x, p: choice(x, p, optimizers.OPTIMIZERS),
                "optimizer names (keys of optimizers.OPTIMIZERS)")


def _fold_dotted(v: dict, names: Sequence[str]) -> dict:
    """{'adam.b1': x} as {'adam': {'b1': x}}: what ``--set optimizer.args.adam.b1=x`` (or
    ``optimizer.learning_rate.adam.mse=[..]``) leaves in the mapping."""
    out: dict = {}
    for k, x in v.items():
        head, dot, rest = str(k).partition(".")
        if dot and rest and head in names and k not in names:
            inner = out.get(head)
            out[head] = {**(inner if isinstance(inner, dict) else {}), rest: x}
        elif isinstance(out.get(k), dict) and isinstance(x, dict):
            out[k] = {**x, **out[k]}
        else:
            out[k] = x
    return out


def _args_by_optimizer(given: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """optimizer.args split per optimizer: with one optimizer the mapping is its arguments
    (or {name: arguments}); with several it must be keyed by optimizer, {adam: {b1: 0.95}}
    (an optimizer left out takes optax's defaults). Keys are never both: 'momentum' is an
    optimizer and an argument of sgd."""
    path = "optimizer.args"
    if given is None or not isinstance(given, dict):
        if len(names) > 1 and given is not None:
            raise error(path, f"{got(given)}, expected a mapping {{optimizer: {{argument: "
                              f"value}}}} over the optimizers {', '.join(names)}")
        return {names[0]: given} if len(names) == 1 else dict.fromkeys(names)
    given = _fold_dotted(given, names)
    keyed = bool(given) and all(k in names and isinstance(x, dict | None)
                                for k, x in given.items())
    if len(names) == 1 and not keyed:
        return {names[0]: given}
    for k in given:
        if k not in names:
            guess = did_you_mean(str(k), names)
            hint = f"; did you mean '{join(path, guess)}'?" if guess else ""
            raise error(join(path, k), f"not an optimizer of optimizer.name ({', '.join(names)}); "
                                       "with several optimizers, args are given per optimizer, "
                                       f"e.g. optimizer.args: {{{names[-1]}: {{{k}: ...}}}}{hint}")
    return {n: given.get(n) for n in names}


def _optimizer_and_args(s: dict, d: OptimizerConfig
                        ) -> tuple[str | tuple[str, ...], float, FrozenDict]:
    """optimizer.name, .momentum and .args, checked against optax: one step of each optimizer
    is traced. One optimizer: its name and its arguments, as before optimizers were swept;
    several: their names and {name: arguments}."""
    from lossjax import optimizers  # imports JAX: only once a config is validated

    names = _optimizer_names(s, d)
    momentum = number(
        _get(s, "momentum", d.momentum),
        "optimizer.momentum",
        "a number in [0, 1)",
        lambda x: 0 <= x < 1,
        dtype="float32",
    )
    several = len(names) > 1
    by_name = _args_by_optimizer(_get(s, "args", None), names)
    resolved = {}
    for i, name in enumerate(names):
        # Every name is optax's own but 'momentum', which is optax.sgd.
        function = "optax.sgd (as 'momentum')" if name == "momentum" else f"optax.{name}"
        where = join("optimizer.args", name) if several else "optimizer.args"
        given = by_name[name]
        args = _checked_args(_keyword_args(given, where, function,
                                           *optimizers.optimizer_arguments(name)), where)
        try:
            optimizers.check_optimizer(name, momentum, dict(args))
        except Exception as e:  # whatever optax makes of the arguments, named
            at = where if args else (f"optimizer.name[{i}]" if several else "optimizer.name")
            raise _optax_failure(at, given if args else name, function, e) from None
        resolved[name] = args
    if not several:
        return names[0], momentum, resolved[names[0]]
    return names, momentum, FrozenDict(resolved)


def _rates_by_optimizer(v: Any, patches: dict[str, Any], names: tuple[str, ...]
                        ) -> dict[str, tuple[Any, dict[str, Any], str]]:
    """optimizer.learning_rate split per optimizer, each as the value, the per-loss patches
    and the key path that :func:`_parse_learning_rate` reads. A mapping keyed by optimizer
    gives each its own (a list for every loss, or {loss: rates}); any other value is every
    optimizer's. Loss and optimizer names never overlap (a test checks it), so the keys tell
    the forms apart; a mapping holding both is refused."""
    from lossjax import optimizers  # imports JAX: only once a config is validated

    path = "optimizer.learning_rate"
    known = optimizers.OPTIMIZERS
    if isinstance(v, dict):
        v = _fold_dotted(v, known)
    # --set patches on a value that is no mapping by optimizer: 'adam' (its grid), 'adam.mse'
    # (its grid for one loss) or 'mse' (that loss's grid, for every optimizer).
    base, per_loss, shared = {}, {}, {}
    for k, x in patches.items():
        head, dot, rest = str(k).partition(".")
        if k in known:
            base[k] = x
        elif dot and rest and head in known:
            per_loss.setdefault(head, {})[rest] = x
        else:
            shared[k] = x
    if isinstance(v, dict) and any(k in known for k in v):
        for k in v:
            if k not in known:
                raise error(join(path, k), f"a mapping keyed by optimizer ({', '.join(names)}) "
                                           f"cannot also hold a loss; give {k}'s rates under "
                                           "each optimizer")
            if k not in names:
                raise error(join(path, k), f"no such optimizer in optimizer.name "
                                           f"({', '.join(names)}); every entry must name one of "
                                           "them")
        missing = [n for n in names if n not in v]
        if missing:
            raise error(path, f"got entries for {', '.join(map(str, v))}; missing "
                              f"{', '.join(missing)}: with a mapping keyed by optimizer every "
                              "optimizer in optimizer.name needs its own grid")
        return {n: (v[n], {}, join(path, n)) for n in names}
    for k in (*base, *per_loss):
        if k not in names:
            raise error(join(path, k), f"no such optimizer in optimizer.name ({', '.join(names)})")
    out = {}
    for n in names:
        own = n in base or n in per_loss
        value, patched = base.get(n, v), {**shared, **per_loss.get(n, {})}
        if isinstance(value, dict) and patched:  # adam.mse on a per-loss mapping: its entry
            value, patched = {**value, **patched}, {}
        out[n] = (value, patched, join(path, n) if own or len(names) > 1 else path)
    return out


def _schedule_and_args(s: dict, d: OptimizerConfig) -> tuple[str, FrozenDict]:
    """optimizer.schedule and .schedule_args, checked against optax: one step is traced."""
    from lossjax import optimizers  # imports JAX: only once a config is validated

    schedule = choice(_get(s, "schedule", d.schedule), "optimizer.schedule",
                      optimizers.SCHEDULES)
    make = optimizers.SCHEDULES[schedule]
    function = f"optax.{make.__name__}" if make else "the 'constant' schedule"
    accepted, reserved, required = optimizers.schedule_arguments(schedule)
    given = _get(s, "schedule_args", None)
    schedule_args = _keyword_args(given, "optimizer.schedule_args", function, accepted, reserved)
    missing = [a for a in required if a not in schedule_args]
    if missing:
        them = "it" if len(missing) == 1 else "them"
        raise error(
            "optimizer.schedule_args",
            f"got {show(given or {})}, missing {', '.join(missing)}: {function} has no "
            f"default for {them}; add {them}, e.g. optimizer.schedule_args: {{{missing[0]}: ...}}",
        )
    if make is not None:
        try:
            optimizers.check_schedule(schedule, dict(schedule_args))
        except Exception as e:
            where = "optimizer.schedule_args" if schedule_args else "optimizer.schedule"
            raise _optax_failure(where, given if schedule_args else schedule, function, e) from None
    return schedule, schedule_args


def _parse_optimizer(
    raw: dict, losses: tuple[str, ...], patches: dict[str, Any], narrowed: bool,
    given_by_set: frozenset[str] = frozenset(),
) -> OptimizerConfig:
    s, d = _section(raw, "optimizer"), OptimizerConfig()
    name, momentum, args = _optimizer_and_args(s, d)
    names = (name,) if isinstance(name, str) else name
    given = _rates_by_optimizer(
        _get(s, "learning_rate", list(DEFAULT_LEARNING_RATES)), patches, names)
    by_name = FrozenDict((n, _parse_learning_rate(v, losses, p, narrowed, where, given_by_set))
                         for n, (v, p, where) in given.items())
    learning_rate = by_name[name] if isinstance(name, str) else by_name
    weight_decay = grid(
        _get(s, "weight_decay", list(d.weight_decay)),
        "optimizer.weight_decay",
        non_negative,
        "numbers >= 0",
        dtype="float32",
    )
    schedule, schedule_args = _schedule_and_args(s, d)
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
    splits = grid(
        _get(s, "splits", list(d.splits)),
        "eval.splits",
        lambda x, p: choice(x, p, SPLITS),
        f"splits from {', '.join(SPLITS)}",
        scalar_ok=False,
    )
    if "val" not in splits:
        raise error(
            "eval.splits",
            f"{got(list(splits))}, expected a subset of {', '.join(SPLITS)} that includes "
            "'val' (the learning rate is chosen on validation accuracy)",
        )
    return EvalConfig(
        splits=tuple(x for x in SPLITS if x in splits),
        every=integer(_get(s, "every", d.every), "eval.every", 1),
        target_accuracy=number(
            _get(s, "target_accuracy", d.target_accuracy),
            "eval.target_accuracy",
            "a number in (0, 1]",
            lambda x: 0 < x <= 1,
        ),
    )


def _parse_search(raw: dict, epochs: int, cfg_eval: EvalConfig, optimizer) -> SearchConfig:
    s, d = _section(raw, "search"), SearchConfig()
    method = choice(_get(s, "method", d.method), "search.method", SEARCH_METHODS)
    extend = integer(_get(s, "extend", d.extend), "search.extend", 0)
    single = [key for key, grid_ in optimizer.grids() if len(grid_) < 2]
    if extend and single:
        raise error("search.extend", f"an extension steps past a grid's edge by its "
                                     f"neighbouring ratio, and optimizer.learning_rate."
                                     f"{single[0]} has one rate; give it several, or extend: 0")
    if method == "grid":
        for key in ("rungs", "alpha"):
            if key in s:
                raise error(f"search.{key}", "applies to method: race only; leave it out, or "
                                             "set search.method: race")
        return SearchConfig(extend=extend)
    if single:
        raise error("search.method", f"race compares each group's learning rates, and "
                                     f"optimizer.learning_rate.{single[0]} has one; give it "
                                     "several, or use method: grid")
    rungs = _get(s, "rungs", "auto")
    if rungs == "auto":
        rungs = default_rungs(epochs)
    else:
        rungs = grid(rungs, "search.rungs", lambda x, p: integer(x, p, 1, epochs - 1,
                                                                 f" (epochs is {epochs})"),
                     f"epochs from 1 to {epochs - 1}", scalar_ok=False)
        for i, (a, b) in enumerate(zip(rungs, rungs[1:], strict=False)):
            if b <= a:
                raise error(f"search.rungs[{i + 1}]", f"got {b} after {a}, expected rungs "
                                                       "in increasing order")
        for i, r in enumerate(rungs):
            if r % cfg_eval.every:
                raise error(f"search.rungs[{i}]", f"epoch {r} has no evaluation (eval.every "
                                                  f"is {cfg_eval.every}); give multiples of "
                                                  f"{cfg_eval.every}")
    alpha = number(_get(s, "alpha", d.alpha), "search.alpha", "a number in (0, 1)",
                   lambda x: 0 < x < 1)
    return SearchConfig(method="race", rungs=tuple(rungs), alpha=float(alpha), extend=extend)


def _parse_confirm(raw: dict, seeds: tuple[int, ...]) -> ConfirmConfig:
    s = _section(raw, "confirm")
    if s.get("seeds") is None or s["seeds"] == []:  # no confirmation stage
        return ConfirmConfig()
    extra = grid(s["seeds"], "confirm.seeds",
                 lambda x, p: integer(x, p, 0, SEED_MAX, " (seeds are uint32)"),
                 f"integers in [0, {SEED_MAX}]")
    for i, seed in enumerate(extra):
        if seed in seeds:
            raise error(f"confirm.seeds[{i}]", f"got {seed}, which seeds already holds; "
                                               "confirmation seeds must be new ones")
    return ConfirmConfig(seeds=extra)


def _parse_output(raw: dict) -> OutputConfig:
    s, d = _section(raw, "output"), OutputConfig()
    return OutputConfig(
        dir=path_string(_get(s, "dir", d.dir), "output.dir", "a folder path"),
        tensorboard=boolean(_get(s, "tensorboard", d.tensorboard), "output.tensorboard"))


def _block_size(v: Any) -> int | str:
    if v == "auto" or (is_int(v) and v >= 1):
        return v
    raise error("block_size", f"{got(v)}, expected an integer >= 1 or 'auto'")


def _parse_name(raw: dict) -> str:
    if "name" not in raw:
        raise error(
            "name",
            "missing; give the sweep a name (letters, digits, _ . -), e.g. 'name: digits'; "
            "it names the results folder",
        )
    v = raw["name"]
    if not isinstance(v, str) or not _NAME_RE.fullmatch(v) or v in (".", ".."):
        raise error(
            "name",
            f"{got(v)}, expected a folder name of letters, digits, '_', '.', '-' "
            "(no spaces or slashes)",
        )
    if len(v.encode()) > NAME_MAX_BYTES:
        raise error(
            "name",
            f"{got(v)}, {len(v.encode())} bytes long; expected at most {NAME_MAX_BYTES} bytes "
            "(it names the results folder, and filesystems refuse longer names)",
        )
    return v


# --------------------------------------------------------------------------------------------
# Overrides


def _apply_override(raw: dict, text: str, lr_patches: dict[str, Any],
                    lr_set: set[str] | None = None) -> None:
    """Applies one 'dotted.key=yaml_value' to ``raw`` in place.

    Per-loss learning-rate overrides on a config whose learning rate is one list for all losses
    go to ``lr_patches``, applied once ``losses`` is known; every learning-rate key a
    --set gives goes to ``lr_set`` too (``adam.mse`` as ``mse`` also).
    """
    key, value = read_override(text)
    context = f" in --set {show(text)}"

    parts = key.split(".")
    if parts[:2] in (["optimizer", "args"], ["optimizer", "schedule_args"]) and len(parts) > 2:
        optimizer = _override_section(raw, "optimizer")
        if not isinstance(optimizer.get(parts[1]), dict):
            optimizer[parts[1]] = {}
        optimizer[parts[1]][".".join(parts[2:])] = value
        return
    if parts[:2] == ["optimizer", "learning_rate"] and len(parts) > 2:
        loss = ".".join(parts[2:])  # a 'module.sub:function' loss may hold dots
        if lr_set is not None:
            lr_set.update((loss, ".".join(parts[3:])))
        optimizer = _override_section(raw, "optimizer")
        lr = optimizer.get("learning_rate")
        if isinstance(lr, dict) and not _one_optimizers_rates(lr, loss):
            lr[loss] = value
        else:
            lr_patches[loss] = value
        return

    node, prefix = raw, ""
    for i, part in enumerate(parts):
        allowed = _TOP_KEYS if not prefix else _SECTION_KEYS[prefix]
        if part not in allowed:
            raise unknown_key(prefix, part, allowed, _ALL_PATHS, context)
        if i == len(parts) - 1:
            node[part] = value
            if key in ("optimizer", "optimizer.learning_rate"):
                lr_patches.clear()  # the whole learning rate was replaced
            return
        if prefix or part not in _SECTIONS:
            raise error(
                join(prefix, part) + "." + ".".join(parts[i + 1 :]),
                f"unknown key{context}; '{join(prefix, part)}' has no sub-keys",
            )
        node, prefix = _override_section(node, part), part


def _one_optimizers_rates(lr: dict, key: str) -> bool:
    """Whether ``key`` (``adam``, ``adam.mse``) sets one optimizer's rates while the file's
    ``lr`` is a per-loss mapping for every optimizer: the file's mapping stays every other
    optimizer's, as it would with a plain list."""
    from lossjax.optimizers import OPTIMIZERS  # imports JAX: only when needed

    return key.partition(".")[0] in OPTIMIZERS and not any(k in OPTIMIZERS for k in lr)


def _override_section(node: dict, name: str) -> dict:
    value = node.get(name)
    if value is None:
        value = node[name] = {}
    if not isinstance(value, dict):
        raise error(
            name, f"{got(value)}, expected a mapping with keys {', '.join(_SECTION_KEYS[name])}"
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
            f"config: {got(raw)}, expected a mapping with keys {', '.join(_TOP_KEYS)}"
        )
    if isinstance(overrides, str):
        overrides = [overrides]
    check_size(raw, "")  # before anything walks it: deepcopy, the checks, their messages
    raw = copy.deepcopy(raw)
    lr_patches: dict[str, Any] = {}
    narrowed = False
    lr_set: set[str] = set()
    for text in overrides:
        _apply_override(raw, text, lr_patches, lr_set)
        narrowed = narrowed or (
            isinstance(text, str) and text.partition("=")[0].strip() == "losses"
        )

    for key in raw:
        if key not in _TOP_KEYS:
            raise unknown_key("", key, _TOP_KEYS, _ALL_PATHS)
    name = _parse_name(raw)
    d = Config(name="")  # for its defaults; name has none and was read above
    seeds = grid(
        raw.get("seeds", list(d.seeds)),
        "seeds",
        lambda x, p: integer(x, p, 0, SEED_MAX, " (seeds are uint32)"),
        f"integers in [0, {SEED_MAX}]",
    )
    epochs = integer(raw.get("epochs", d.epochs), "epochs", 1)
    batch_size = integer(raw.get("batch_size", d.batch_size), "batch_size", 1)
    block_size = _block_size(raw.get("block_size", d.block_size))
    model = _parse_model(raw)  # its dtype is the precision the losses' parameters are held in
    losses = _parse_losses(raw.get("losses", list(d.losses)),
                           "float64" if model.dtype == "float64" else "float32")
    optimizer = _parse_optimizer(raw, losses, lr_patches, narrowed, frozenset(lr_set))
    cfg_eval = _parse_eval(raw)
    return Config(
        name=name,
        seeds=seeds,
        epochs=epochs,
        batch_size=batch_size,
        block_size=block_size,
        losses=losses,
        dataset=_parse_dataset(raw),
        model=model,
        optimizer=optimizer,
        eval=cfg_eval,
        output=_parse_output(raw),
        search=_parse_search(raw, epochs, cfg_eval, optimizer),
        confirm=_parse_confirm(raw, seeds),
    )


FIFO_WAIT_S = 10.0


def _open_config(path: str | os.PathLike, shown: str):
    """The config file opened for reading. A named pipe (``<(...)`` in a shell, or one made
    with mkfifo) is read once something writes to it: open() alone would wait forever for a
    writer that never comes."""
    try:
        fifo = stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        fifo = False  # open() says what is wrong
    if not fifo:
        return open(path, encoding="utf-8")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    if not select.select([fd], [], [], FIFO_WAIT_S)[0]:
        os.close(fd)
        raise ConfigError(f"{shown}: a named pipe (FIFO) that nothing wrote to in "
                          f"{FIFO_WAIT_S:g} s; give the config file itself")
    os.set_blocking(fd, True)
    return os.fdopen(fd, encoding="utf-8")


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> Config:
    """Reads a YAML sweep config, applies ``--set`` overrides, and validates it."""
    shown = os.fspath(path)
    try:
        with _open_config(path, shown) as f:
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
        raw = read_yaml(text)
    except Unreadable as e:
        raise ConfigError(f"{shown}: {e}") from None
    except DuplicateKeyError as e:
        raise ConfigError(f"{shown}: {yaml_problem(e)}; each key may appear once") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{shown}: not valid YAML: {yaml_problem(e)}") from None
    if raw is None:
        raise ConfigError(f"{shown}: the file is empty, expected a mapping with at least 'name'")
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{shown}: top level {got(raw)}, expected a mapping with keys {', '.join(_TOP_KEYS)}"
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
    out = _plain(dataclasses.asdict(cfg))
    # A plain grid: the config as it was before races, extensions and confirmation existed.
    if cfg.search == SearchConfig():
        del out["search"]
    elif cfg.search.method == "grid":  # rungs and a level are a race's alone
        out["search"] = {"method": "grid", "extend": cfg.search.extend}
    elif not cfg.search.extend:  # a race's config as it was before extensions existed
        del out["search"]["extend"]
    if cfg.confirm == ConfirmConfig():
        del out["confirm"]
    for k, default in _DATASET_OPTIONAL.items():
        if out["dataset"][k] == default:
            del out["dataset"][k]
    if cfg.model.kind == "mlp":  # an MLP's config as it was before other kinds existed
        del out["model"]["kind"], out["model"]["channels"]
    return out


def learning_rates(cfg: Config, loss: str, optimizer: str | None = None) -> tuple[float, ...]:
    """The learning-rate grid of one loss of the sweep, under ``optimizer`` (None: the sweep's
    first, its only one unless optimizer.name lists several)."""
    try:
        return cfg.optimizer.rates_of(optimizer or cfg.optimizer.names[0])[loss]
    except KeyError:
        raise error(
            "optimizer.learning_rate",
            f"no grid for loss {loss!r}; the sweep's losses are {', '.join(cfg.losses)}",
        ) from None


def check_batch_size(cfg: Config, n_train: int) -> None:
    """Raises ConfigError if a batch is larger than the training split (after validation)."""
    if cfg.batch_size > n_train:
        raise error(
            "batch_size",
            f"got {cfg.batch_size}, larger than the {n_train} training examples of "
            f"{cfg.dataset.name}; use at most {n_train}",
        )
