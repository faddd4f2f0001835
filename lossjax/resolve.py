"""What a loss name in a config or on the command line stands for: a built-in loss, a variant
of one, or a user's ``'module:function'`` (imported, with its ``sys.exit`` made an error).

It sits above :mod:`lossjax.losses` and :mod:`lossjax.interventions`: they define losses, this
module finds one by name and calls into the user's code.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable

from lossjax import interventions, losses


def resolve_loss(spec: str) -> losses.LossFn:
    """A registry name, a parameterized loss's label (``'focal(gamma=2)'``; a bare name takes
    the defaults), a variant of either (``'mse-no_push_up'``, see ``lossjax.interventions``),
    or ``'module:function'`` naming a user loss on the import path.

    The same ``spec`` gives the same function object in one process (a user loss: while its
    module is the one imported), so groups that train it share compiled programs
    (``engine.programs``).

    Raises ``ValueError`` with one line naming what was wrong (unknown name or parameter, a
    parameter out of its range, no such module or attribute, not callable), so the config and
    the CLI can report it without a traceback.
    """
    if ":" in spec:
        return import_callable(spec, what="loss")
    return _built_in(spec)


@functools.lru_cache(maxsize=256)
def _built_in(spec: str) -> losses.LossFn:
    if interventions.is_variant(spec):  # an intervention on a built-in loss's gradient
        return interventions.variant(spec)
    if losses.without_params(spec) in losses.PARAMETERIZED:
        name, params = losses.parse_label(spec)
        return functools.partial(losses.PARAMETERIZED[name].loss, **params)
    return losses.get_loss(spec)


def canonical(spec: str) -> str:
    """The name a loss is recorded under: a parameterized loss's label with every parameter
    written out in its order (``'rescaled_mse'`` is ``'rescaled_mse(k=1,M=1)'``, ``'focal(
    gamma=2.0)'`` is ``'focal(gamma=2)'``), also as a variant's base; any other name as given.
    ``ValueError`` as :func:`resolve_loss`."""
    if interventions.is_variant(spec):
        return str(interventions.Variant.parse(spec))
    if ":" not in spec and losses.without_params(spec) in losses.PARAMETERIZED:
        name, params = losses.parse_label(spec)
        return losses.PARAMETERIZED[name].label(params)
    return spec


def loss_params(spec: str) -> tuple[float, ...]:
    """The parameters a canonical loss name sets, in its loss's order; () for none."""
    base = interventions.Variant.parse(spec).base if interventions.is_variant(spec) else spec
    if ":" in base or losses.without_params(base) not in losses.PARAMETERIZED:
        return ()
    return tuple(losses.parse_label(base)[1].values())


def has_params(spec: str) -> bool:
    """Whether ``spec`` names a loss that takes parameters (``rescaled_mse``,
    ``label_smoothing_ce``, ``focal``) or a variant of one: a sweep trains all its settings in
    one program, :func:`family_loss`, the parameters an array per member. (``squentropy``
    takes none: a program of its own, as a user loss.)"""
    if ":" in spec:
        return False
    base = interventions.Variant.parse(spec).base_name if interventions.is_variant(spec) else (
        losses.without_params(spec))
    return base in losses.PARAMETERIZED and bool(losses.PARAMETERIZED[base].names)


@functools.lru_cache(maxsize=256)
def family_loss(name: str) -> Callable:
    """The loss that every setting of ``name`` (a parameterized loss or a variant of one,
    without parameters) shares: ``loss(logits, labels, params)`` with ``params`` the
    ``(P,)`` array of :func:`loss_params`, possibly traced."""
    loss, _ = interventions.family(name)

    def with_array(logits, labels, params):
        return loss(logits, labels, *(params[i] for i in range(params.shape[-1])))

    with_array.__name__ = name
    return with_array


# A module path as Python spells it: dotted identifiers. Anything else ('../x', 'a/b', '.x')
# is a file path or a relative import, which importlib would read in its own ways.
_MODULE_RE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


class UserExitError(ValueError):
    """User code (a loss, a gradient, or their module at import) called ``sys.exit``.

    ``SystemExit`` is not an ``Exception``: unconverted, it would end the command with the
    user's exit status and no message, in the middle of a check or a sweep. lossjax's own
    exits are its return values; this is raised only where lossjax calls the user's code. A
    ``ValueError``, like every bad-loss error here, so callers add where it happened (the
    config key, "training stopped ...; --resume continues")."""


def _exit_call(code: object) -> str:
    return "sys.exit()" if code is None else f"sys.exit({code!r})"


def no_exit(fn: Callable, spec: str, what: str = "function") -> Callable:
    """``fn`` with a ``sys.exit`` inside it (when called, traced or differentiated) turned into
    :class:`UserExitError` naming ``spec``, so that the caller reports it in one line. The
    same wrapper for the same (hashable) ``fn``, so programs built for it are reused."""
    try:
        return _no_exit(fn, spec, what)
    except TypeError:  # an unhashable callable: a wrapper of its own
        return _no_exit.__wrapped__(fn, spec, what)


@functools.lru_cache(maxsize=256)
def _no_exit(fn: Callable, spec: str, what: str) -> Callable:

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SystemExit as e:
            raise UserExitError(
                f"{what} {spec} called {_exit_call(e.code)}; a {what} must return its value, "
                "not end the process: remove the call"
            ) from None

    return call


def import_callable(spec: str, what: str = "function") -> Callable:
    """Imports ``'module:attribute'`` and checks the result is callable.

    The function comes back wrapped by :func:`no_exit`; a ``sys.exit`` at import is reported
    the same way."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{what} {spec!r} must be 'module:function', e.g. 'my_losses:focal'.")
    if not _MODULE_RE.fullmatch(module_name) or not _MODULE_RE.fullmatch(attr):
        raise ValueError(
            f"{what} {spec!r}: expected 'module:function' with dotted Python names, e.g. "
            "'my_losses:focal'; a file is named by its module (put its folder on PYTHONPATH), "
            "not by a path."
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(
            f"{what} {spec!r}: cannot import module {module_name!r} ({e}); "
            "check the name and that its folder is on PYTHONPATH."
        ) from None
    except SystemExit as e:
        raise UserExitError(
            f"{what} {spec!r}: importing {module_name!r} called {_exit_call(e.code)}; a module "
            "lossjax imports must not end the process: put that code under "
            "'if __name__ == \"__main__\":'"
        ) from None
    except Exception as e:  # a syntax or run-time error in the user's module
        raise ValueError(
            f"{what} {spec!r}: importing {module_name!r} failed with "
            f"{type(e).__name__}: {e}"
        ) from None
    fn = module
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise ValueError(f"{what} {spec!r}: module {module_name!r} has no attribute {attr!r}.")
        fn = getattr(fn, part)
    if not callable(fn):
        raise ValueError(f"{what} {spec!r}: {attr!r} is a {type(fn).__name__}, not a function.")
    return no_exit(fn, spec, what)
