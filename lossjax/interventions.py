"""Interventions on a loss's gradient: the same loss value, an edited logit gradient.

The argument behind ``exp_mse`` is causal: a gradient that pushes wrong-class logits *up*
(component ``g_j < 0`` on a class with ``y_j = 0``) hinders learning. Comparing losses cannot
test it, since losses differ in much more than the sign of their wrong-class components (scale,
saturation, curvature). Editing one loss's gradient can: a variant keeps every property of its
base loss except the edited components, and a member trained with it starts from the same
weights and sees the same batches as the base member of the same seed (the engine derives both
from the seed alone), so the per-seed difference is the intervention's effect.

A variant is named ``<base>-<edit>[-balanced][-norm_matched]`` (:class:`Variant` takes a name
apart), e.g. ``mse-no_push_up`` or ``cross_entropy-push_up_50-norm_matched``, the base a built-in
loss or a parameterized one's label (``rescaled_mse(k=5,M=15)-no_push_up``), and is usable
wherever a loss name is (a config's ``losses``, ``lossjax check-grads --loss``) and in code
(``interventions.no_push_up(losses.mse)``,
``interventions.no_push_up(losses.softmax_mse, balanced=True, norm_matched=True)``).
The edits, per example, on the base gradient ``g = d loss / d s`` (one-hot labels ``y``, true
class ``c``, ``K`` classes):

- ``no_push_up``: every wrong-class component with ``g_j < 0`` becomes 0. If the argument is
  right, MSE and softmax-MSE (whose gradients have such components) learn faster with it.
- ``push_up_<P>``: the components of ``⌊P/100 · (K-1) + ½⌋`` wrong classes change sign, the
  classes ``c+1, c+2, ... (mod K)``; on cross-entropy, whose wrong-class components ``p_j`` are
  all positive, those classes are then pushed up by exactly as much as they were pushed down.
  If the argument is right, this slows cross-entropy down. ``push_up_<P>x<A>`` is a graded
  dose: the flipped components are also scaled by ``A`` in (0, 1) (``g_j → -A·g_j``), so a
  push of a tenth (``push_up_11x0.1``) can be set beside the full flip and beside the pushes
  MSE makes.
- ``true_pull``: (``exp_mse`` only) the true-class component
  ``(2/K)(e^{s_c} - 1) e^{s_c}``, which vanishes as ``s_c → -∞`` (a confidently wrong example
  stops being corrected), becomes ``(2/K)(e^{s_c} - 1) · max(e^{s_c}, 1)``: unchanged for
  ``s_c ≥ 0``, a pull that tends to ``-2/K`` instead of 0 below. It tests whether that vanishing
  is what holds exp-MSE back.
- ``-balanced``: whatever the edit added to or took from the sum of the components is taken
  off or added to the true class's component, so the edited gradient sums to what ``g`` sums
  to. Cross-entropy and softmax-MSE depend on the logits only through ``softmax(s)``, which
  adding a constant to every logit leaves alone; their gradients sum to 0, and the direction
  ``(1, ..., 1)`` is one the loss cannot see. An edit that breaks the zero sum (removing the
  negative components of softmax-MSE's gradient leaves a positive sum) feeds that direction
  with nothing to oppose it: every logit drifts down together, faster and faster, until
  float32 softmax saturates and learning stops. ``no_push_up-balanced`` gives the removed
  pushes to the true class instead (it rises by as much as the wrong classes would have);
  ``push_up_<P>-balanced`` takes the added pushes off the true class's rise.
- ``-norm_matched``: the edited gradient is rescaled to the norm of ``g``, per example, so the
  edit changes the direction of the step and not its size (an edit that only shrank the
  gradient would otherwise act as a smaller learning rate). After ``-balanced`` when both are
  given.

The transformed gradient is exact for the edit's definition: ``jax.grad`` of a variant returns
``edit(g)``, with ``g`` from autodiff of the base loss (``jax.custom_vjp``); ``closed_form``
gives the same from the base loss's closed-form gradient, which ``lossjax check-grads`` and
tests/test_interventions.py compare against autodiff in float64.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from lossjax import losses

Edit = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]  # (g, logits, labels) -> g'


def _no_push_up(g, s, y):
    return jnp.where((y == 0) & (g < 0), jnp.zeros_like(g), g)


def _flipped_classes(y, fraction: float):
    """The wrong classes c+1, ..., c+m (mod K) after each example's true class c."""
    k = y.shape[-1]
    m = math.floor(fraction * (k - 1) + 0.5)  # half rounds up: 50% of 9 wrong classes is 5
    offset = (jnp.arange(k) - jnp.argmax(y, axis=-1)[..., None]) % k
    return (offset >= 1) & (offset <= m)


def _push_up(fraction: float, scale: float = 1.0) -> Edit:
    def edit(g, s, y):
        return jnp.where(_flipped_classes(y, fraction), -scale * g, g)

    return edit


def _true_pull(g, s, y):
    # exp_mse's component (2/K)(e^s - y) e^s with its factor e^s replaced by max(e^s, 1). Written
    # from the logits, not as g / e^s: below s ≈ -87 float32's e^s is 0 and so is g.
    e = jnp.exp(s)
    pull = (2.0 / s.shape[-1]) * (e - y) * jnp.maximum(e, 1.0)
    return jnp.where(y > 0, pull.astype(g.dtype), g)


def _balanced(edit: Edit) -> Edit:
    def balanced(g, s, y):
        e = edit(g, s, y)
        return e + y * jnp.sum(g - e, axis=-1, keepdims=True)  # y one-hot: the true class

    return balanced


def _norm_matched(edit: Edit) -> Edit:
    def matched(g, s, y):
        e = edit(g, s, y)
        before = jnp.linalg.norm(g, axis=-1, keepdims=True)
        after = jnp.linalg.norm(e, axis=-1, keepdims=True)
        safe = jnp.where(after > 0, after, 1)
        return jnp.where(after > 0, e * (before / safe), e)

    return matched


def edit_gradient(loss: losses.LossFn, edit: Edit) -> losses.LossFn:
    """``loss`` with its value unchanged and its per-example logit gradient replaced by
    ``edit(g, logits, labels)``, where ``g`` is the loss's own gradient (from autodiff).

    The loss must be per-example (example ``i``'s value depends on logits ``i`` only, as every
    lossjax loss is), so that the gradient of the summed loss is the per-example gradient. The
    labels get no gradient. Arguments after the labels (a parameterized loss's parameters, as
    arrays, traced in a sweep) are passed on to ``loss`` and get no gradient either.
    """

    @jax.custom_vjp
    def variant(logits, labels, *params):
        return loss(logits, labels, *params)

    def forward(logits, labels, *params):
        value, pullback = jax.vjp(lambda s: loss(s, labels, *params), logits)
        (g,) = pullback(jnp.ones_like(value))
        return value, (edit(g, logits, labels), labels, params)

    def backward(saved, cotangent):
        g, labels, params = saved
        return (cotangent[..., None] * g, jnp.zeros_like(labels),
                *(jnp.zeros_like(p) for p in params))

    variant.defvjp(forward, backward)
    return variant


def _with_suffixes(edit: Edit, balanced: bool, norm_matched: bool) -> Edit:
    if balanced:
        edit = _balanced(edit)
    return _norm_matched(edit) if norm_matched else edit


def no_push_up(loss: losses.LossFn, *, balanced: bool = False,
               norm_matched: bool = False) -> losses.LossFn:
    """``loss`` whose gradient never pushes a wrong class up (those components zeroed).
    ``balanced`` and ``norm_matched`` are the ``-balanced`` and ``-norm_matched`` suffixes:
    ``no_push_up(losses.softmax_mse, balanced=True)`` is ``softmax_mse-no_push_up-balanced``."""
    return edit_gradient(loss, _with_suffixes(_no_push_up, balanced, norm_matched))


def push_up(loss: losses.LossFn, fraction: float, *, scale: float = 1.0, balanced: bool = False,
            norm_matched: bool = False) -> losses.LossFn:
    """``loss`` with the gradient components of a ``fraction`` of the wrong classes negated
    and scaled by ``scale`` (``push_up_<P>x<A>`` with P = 100 · fraction, A = scale; no ``x``
    when the scale is 1); suffixes as in ``no_push_up``."""
    return edit_gradient(loss, _with_suffixes(_push_up(fraction, scale), balanced, norm_matched))


def true_pull(loss: losses.LossFn, *, norm_matched: bool = False) -> losses.LossFn:
    """``exp_mse`` whose true-class pull does not vanish below ``s_c = 0``."""
    return edit_gradient(loss, _with_suffixes(_true_pull, False, norm_matched))


_NAME = re.compile(r"^(?P<base>[a-z_]+?(?:\([^()]*\))?)"  # a parameterized base's label
                   r"-(?P<edit>no_push_up|push_up_(?P<pct>\d{1,3})(?:x(?P<scale>[0-9.e+-]+?))?|true_pull)"
                   r"(?P<balanced>-balanced)?(?P<matched>-norm_matched)?$")
EDITS = ("no_push_up", "push_up_<P>", "push_up_<P>x<A>", "true_pull")


def is_variant(name: str) -> bool:
    """Whether ``name`` looks like ``<base>-<edit>...`` (not whether it is valid); a ``-`` in a
    label's parameters (``label_smoothing_ce(alpha=1e-05)``) does not count."""
    return ":" not in name and "-" in losses.without_params(name)


@dataclass(frozen=True)
class Variant:
    """A variant's name taken apart: ``<base>-<edit>[-balanced][-norm_matched]``, with
    ``str(Variant.parse(name)) == name`` for a name in canonical form. The base is a name in
    ``losses.LOSSES`` or a parameterized loss's label (``rescaled_mse(k=5,M=15)-no_push_up``;
    the bare name ``squentropy``, or ``rescaled_mse`` for its defaults, made canonical:
    ``rescaled_mse(k=1,M=1)``)."""

    base: str  # a name in losses.LOSSES, or a canonical label of losses.PARAMETERIZED
    edit: str  # 'no_push_up', 'push_up_<P>', 'push_up_<P>x<A>' or 'true_pull'
    balanced: bool = False
    norm_matched: bool = False

    @classmethod
    def parse(cls, name: str) -> Variant:
        """``ValueError`` (one line) for a name that does not follow the scheme."""
        m = _NAME.match(name)
        bases = [*losses.LOSSES, *(losses.signature(n) for n in losses.PARAMETERIZED)]
        scheme = (f"a variant is <base>-<edit>[-balanced][-norm_matched], "
                  f"base one of {', '.join(bases)}, edit one of {', '.join(EDITS)} "
                  "(P a percentage, A a scale in (0, 1)), e.g. 'mse-no_push_up', "
                  "'focal(gamma=2)-push_up_50' or 'cross_entropy-push_up_11x0.1'")
        base = m["base"] if m else ""
        if losses.without_params(base) in losses.PARAMETERIZED:
            try:
                loss_name, params = losses.parse_label(base)
            except ValueError as e:
                raise ValueError(f"loss {name!r}: {str(e).partition(': ')[2]}") from None
            base = losses.PARAMETERIZED[loss_name].label(params)
        elif base not in losses.LOSSES:
            raise ValueError(f"unknown loss {name!r}; {scheme}")
        if m["pct"] is not None and int(m["pct"]) > 100:
            # 0 edits nothing: a control with the variants' program path
            raise ValueError(f"loss {name!r}: push_up_<P> takes P in 0..100; {scheme}")
        edit = m["edit"]
        if m["scale"] is not None:
            try:
                scale = float(m["scale"])
            except ValueError:
                scale = float("nan")
            if not 0 < scale < 1:
                raise ValueError(f"loss {name!r}: push_up_<P>x<A> takes A in (0, 1) (without "
                                 f"x<A> the flip is whole); {scheme}")
            edit = f"push_up_{m['pct']}x{scale:g}"
        if m["edit"] == "true_pull" and m["base"] != "exp_mse":
            raise ValueError(f"loss {name!r}: true_pull edits exp_mse's true-class gradient; "
                             "use exp_mse-true_pull")
        return cls(base, edit, bool(m["balanced"]), bool(m["matched"]))

    def __str__(self) -> str:
        suffixes = [s for s, on in (("balanced", self.balanced),
                                    ("norm_matched", self.norm_matched)) if on]
        return "-".join([self.base, self.edit, *suffixes])

    @property
    def base_name(self) -> str:
        """The base's registry name: ``rescaled_mse`` for ``rescaled_mse(k=5,M=15)``."""
        return losses.without_params(self.base)

    @property
    def params(self) -> dict[str, float]:
        """The base's parameters ({} for a loss without any)."""
        return losses.parse_label(self.base)[1] if self.base_name in losses.PARAMETERIZED else {}

    def base_functions(self) -> tuple[losses.LossFn, losses.LossFn]:
        """The base loss and its closed-form gradient, with the base's parameters set."""
        if self.base_name in losses.LOSSES:
            return losses.LOSSES[self.base], losses.GRADIENTS[self.base]
        entry, params = losses.PARAMETERIZED[self.base_name], self.params
        return (functools.partial(entry.loss, **params), functools.partial(entry.grad, **params))

    @property
    def percent(self) -> int | None:
        """P of ``push_up_<P>``; None for the other edits."""
        if not self.edit.startswith("push_up_"):
            return None
        return int(self.edit.removeprefix("push_up_").partition("x")[0])

    @property
    def scale(self) -> float:
        """A of ``push_up_<P>x<A>``: 1 for a whole flip and for the other edits."""
        return float(self.edit.partition("x")[2] or 1.0)

    def gradient_edit(self) -> Edit:
        """The edit with its suffixes, as :func:`edit_gradient` takes it."""
        if self.percent is not None:
            edit = _push_up(self.percent / 100, self.scale)
        elif self.edit == "true_pull":
            edit = _true_pull
        else:
            edit = _no_push_up
        return _with_suffixes(edit, self.balanced, self.norm_matched)


def variant(name: str) -> losses.LossFn:
    """The loss a variant name stands for."""
    v = Variant.parse(name)
    return edit_gradient(v.base_functions()[0], v.gradient_edit())


def closed_form(name: str) -> losses.LossFn:
    """The variant's gradient from its base's closed form: ``edit(GRADIENTS[base])`` (a
    parameterized base: its ``PARAMETERIZED`` closed form at the base's parameters)."""
    v = Variant.parse(name)
    edit = v.gradient_edit()
    base_grad = v.base_functions()[1]

    def grad(logits, labels):
        s = jnp.asarray(logits)
        y = jnp.asarray(labels, s.dtype)
        return edit(base_grad(s, y), s, y)

    return grad


#: The variants ``lossjax check-grads`` checks by default: each edit on the losses it is for.
STANDARD = ("mse-no_push_up", "softmax_mse-no_push_up", "cross_entropy-push_up_50",
            "mse-no_push_up-norm_matched", "softmax_mse-no_push_up-norm_matched",
            "cross_entropy-push_up_50-norm_matched", "softmax_mse-no_push_up-balanced",
            "cross_entropy-push_up_50-balanced", "softmax_mse-no_push_up-balanced-norm_matched",
            "exp_mse-true_pull")

#: Variants of the parameterized losses that ``lossjax check-grads`` checks by default, each at
#: every test value of its base (``losses.PARAMETERIZED``).
STANDARD_PARAMETERIZED = ("rescaled_mse-no_push_up", "squentropy-no_push_up",
                          "label_smoothing_ce-no_push_up-balanced",
                          "focal-push_up_50-norm_matched")


def family(name: str) -> tuple[Callable, Callable]:
    """A parameterized loss, or a variant of one, named without its parameters (``'focal'``,
    ``'rescaled_mse-no_push_up'``): the loss and its closed-form gradient, each taking the
    parameters as arguments after the labels, in ``PARAMETERIZED[...].names`` order. The
    parameters may be traced, so one program serves every setting (a sweep's members, the
    settings ``lossjax check-grads`` vmaps over)."""
    v = Variant.parse(name) if is_variant(name) else None
    entry = losses.PARAMETERIZED[v.base_name if v else name]

    def base(s, y, *values):
        return entry.loss(s, y, **dict(zip(entry.names, values, strict=True)))

    def base_grad(s, y, *values):
        return entry.grad(s, y, **dict(zip(entry.names, values, strict=True)))

    if v is None:
        return base, base_grad
    edit = v.gradient_edit()

    def grad(logits, labels, *values):
        s = jnp.asarray(logits)
        y = jnp.asarray(labels, s.dtype)
        return edit(base_grad(s, y, *values), s, y)

    return edit_gradient(base, edit), grad
