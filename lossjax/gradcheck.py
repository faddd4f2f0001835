"""``lossjax check-grads``: proof that autodiff and the closed-form gradients agree.

(Over 450 lines: the battery, the rules with their measured reasons, and the checks of a user's
functions that turn each failure into one line are one command's parts, read together.)

For each loss, ``jax.grad`` of the per-example loss is compared with a reference gradient over a
fixed, deterministic battery of random logits (several scales, batch shapes and class counts,
one-hot and soft labels). The reference is

- the closed form in ``losses.GRADIENTS`` for the four built-in losses, and in
  ``losses.PARAMETERIZED`` for the parameterized ones, at each of their test values;
- the user's closed form for ``--loss module:fn --grad module:fn``;
- central finite differences in float64 for ``--loss module:fn`` alone.

The error of one example is ``‖autodiff − reference‖`` (absolute) and that divided by
``‖reference‖`` (relative); the table shows the maximum of each over the battery. Only the
float64 rows decide the exit status; float32 rows are shown for information (see ``_RULE_F32``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from lossjax import interventions, losses, resolve
from lossjax.interventions import STANDARD

GradFn = Callable[[jax.Array, jax.Array], jax.Array]

# Battery: (K, batch shape) pairs. K spans 2..100 and the batch shapes ranks 0..2; each array also
# carries a leading axis over the scales. Every distinct shape costs one XLA compilation per loss
# and dtype, so the battery pairs them up instead of taking their product: that keeps the command
# to seconds (the test suite covers the product of shapes).
CASES = ((2, (64,)), (3, ()), (17, (4, 16)), (100, (32,)))
# Logits are uniform in [-scale, scale], so |s| never exceeds the largest scale. exp_mse stops at
# 20: at |s| = 50 its float32 value and gradient overflow (e^50 ≈ 5e21 squared is past 3.4e38).
SCALES = (0.01, 1.0, 5.0, 20.0, 50.0)
SCALES_EXP = (0.01, 1.0, 5.0, 10.0, 20.0)
SEED = 0

# float64 rule: ‖Δ‖ ≤ RTOL·‖g‖ + atol per example. atol is 0 (pure relative error) where the
# gradient keeps relative precision. Saturated softmax-MSE does not: each component is
# p_i·[(y_i − p_i) − ⟨y − p, p⟩], a difference of O(1) terms that cancel to a residue far below
# float64's resolution of them (at p ≈ one-hot the true gradient can be ~1e-40 while rounding
# leaves ~1e-17), so no formula, autodiff or closed, keeps relative precision there; the absolute
# floor of 1e-12 (≈ 4500 ulps of an O(1) quantity) allows exactly that rounding and no more.
# User-supplied closed forms get the same floor: we cannot know they are free of such residues.
# The parameterized losses keep relative precision, focal too (its log p and 1 − p are computed
# to relative precision as p → 1): on the battery, at every test value, max |d|/|g| is below
# 2e-13 (focal, gamma = 1, soft labels), below 4e-14 for the others; they get atol 0.
RTOL_F64 = 1e-10
ATOL_RESIDUE = 1e-12

# Finite differences (--loss without --grad): central differences with h = eps^(1/3)·max(1,|s|),
# the step that balances truncation O(h²) against rounding O(eps·|ℓ|/h); each is then about
# eps^(2/3) ≈ 4e-11 of the loss's scale. 1e-6 leaves room for third derivatives ~1e4 times that
# scale; the absolute term scales with |ℓ| because the rounding error does.
FD_RTOL = 1e-6
FD_ATOL = 1e-8

# float32 rows are informational: two float32 evaluations of the same gradient round
# differently at each of O(K) operations (exp, sums over up to 100 classes), so they can agree
# only to some hundred ulps of float32 (eps ≈ 1.2e-7): on the built-in battery cross-entropy
# differs by up to ~6e-6 relative, focal by up to ~1e-4 (gamma = 1) and saturated softmax-MSE by
# ~2e-7 absolute. They show how a
# loss behaves in the precision the trainer uses; they do not decide the exit status.
_RULE_F32 = "info (float32 rounding)"


@dataclass(frozen=True)
class Row:
    loss: str
    dtype: str
    examples: int
    max_abs: float
    max_rel: float
    rule: str
    ok: bool | None  # None: informational row
    note: str = ""  # where the absolute term of the rule is what holds the worst example


def _battery(scales, dtype) -> list[tuple[np.ndarray, np.ndarray]]:
    """Deterministic (logits, labels) pairs, float64 numpy, cast by the caller to ``dtype``.

    Each pair has shape ``(len(scales), *batch, K)``: slice ``i`` holds logits uniform in
    ``[-scales[i], scales[i]]``. Labels are one-hot, except every other example of a batch of
    more than one, which gets a soft (Dirichlet) probability vector.
    """
    rng = np.random.default_rng(SEED)
    out = []
    for k, batch in CASES:
        shape = (len(scales), *batch, k)
        scale = np.asarray(scales).reshape((-1,) + (1,) * (len(batch) + 1))
        logits = rng.uniform(-1.0, 1.0, size=shape) * scale
        labels = np.eye(k)[rng.integers(0, k, size=shape[:-1])]
        if batch:
            flat = labels.reshape(-1, k)
            soft = rng.dirichlet(np.ones(k), size=flat.shape[0])
            flat[1::2] = soft[1::2]
            labels = flat.reshape(shape)
        out.append((logits.astype(dtype), labels.astype(dtype)))
    return out


def _autodiff(loss):
    """``jit`` of the per-example gradient of ``loss``.

    Per-example losses are independent, so the gradient of their sum is the per-example gradient
    ``d loss_i / d s_i``. Compiled: run op by op, every primitive compiles once per shape.
    """
    return jax.jit(lambda s, y: jax.grad(lambda s: jnp.sum(loss(s, y)))(s))


def _central_differences(loss_jit, logits, labels) -> np.ndarray:
    """float64 central differences of a per-example loss, all examples and classes at once."""
    s = np.asarray(logits, dtype=np.float64)
    k = s.shape[-1]
    h = np.finfo(np.float64).eps ** (1 / 3) * np.maximum(1.0, np.abs(s))
    eye = np.eye(k).reshape((k,) + (1,) * (s.ndim - 1) + (k,))
    plus, minus = s + eye * h, s - eye * h  # (K, *batch, K): slice i perturbs class i
    step = (plus - minus).sum(-1)  # the step actually taken, after rounding s ± h
    y = np.broadcast_to(np.asarray(labels, np.float64), plus.shape)
    lp = np.asarray(loss_jit(jnp.asarray(plus), jnp.asarray(y)), np.float64)
    lm = np.asarray(loss_jit(jnp.asarray(minus), jnp.asarray(y)), np.float64)
    return np.moveaxis((lp - lm) / step, 0, -1)


def _errors(got, ref) -> tuple[np.ndarray, np.ndarray]:
    """Per-example ``‖Δ‖`` and ``‖ref‖`` in float64."""
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    return np.linalg.norm(got - ref, axis=-1).ravel(), np.linalg.norm(ref, axis=-1).ravel()


def _row(name, dtype, pairs, rtol=None, atol=0.0, atol_scale=None) -> Row:
    """Summarises ``[(‖Δ‖, ‖g‖), ...]`` per example; ``rtol=None`` marks an informational row.

    The relative error is taken over examples with ``‖g‖ > 0`` (a relative error against an
    exactly zero reference is undefined; those examples are judged by the absolute term).
    """
    diff = np.concatenate([d for d, _ in pairs])
    ref = np.concatenate([r for _, r in pairs])
    finite = bool(np.all(np.isfinite(diff)))
    max_abs = float(np.max(diff)) if finite else math.nan
    nz = ref > 0
    max_rel = (
        float(np.max(diff[nz] / ref[nz])) if finite and nz.any() else 0.0 if finite else math.nan
    )
    if not finite:  # say so: a table of nan alone does not tell a NaN loss from a bug here
        bad = int(np.sum(~np.isfinite(diff)))
        note = (f"note: {name} {dtype}: {bad} of {diff.size} examples have a NaN or inf "
                "error (the gradient or its reference is not finite there)")
    if rtol is None:
        return Row(name, dtype, diff.size, max_abs, max_rel, _RULE_F32, None,
                   "" if finite else note)
    floor = atol * (1.0 if atol_scale is None else atol_scale)
    ok = finite and bool(np.all(diff <= rtol * ref + floor))
    if atol_scale is not None:
        rule = f"|d| <= {rtol:g}|g| + {atol:g}(1+|l|)"
    elif atol:
        rule = f"|d| <= {rtol:g}|g| + {atol:g}"
    else:
        rule = f"|d|/|g| <= {rtol:g}"
    note = "" if finite else note
    if finite and atol and max_rel > rtol:
        worst = np.argmax(np.where(nz, diff / np.where(nz, ref, 1.0), 0.0))
        big = rtol * ref >= floor  # examples where the relative term dominates the rule
        rel_big = float(np.max(diff[big] / ref[big])) if big.any() else 0.0
        note = (
            f"note: {name} {dtype}: max |d|/|g| comes from an example with |g| = "
            f"{ref[worst]:.1e} (|d| = {diff[worst]:.1e}), which the absolute term covers; where "
            f"the relative term dominates, max |d|/|g| = {rel_big:.2e}."
        )
    return Row(name, dtype, diff.size, max_abs, max_rel, rule, ok, note)


@dataclass(frozen=True)
class Check:
    """One loss to check against a closed-form gradient."""

    name: str
    loss: GradFn
    grad: GradFn
    scales: tuple[float, ...]
    atol: float  # absolute floor of the float64 rule (0: pure relative error)
    grad_name: str = ""  # the user's 'module:function' closed form, checked for its shape
    # A parameterized loss: loss and grad take these keyword parameters, one row pair per
    # setting, labelled by ``labels``; the settings are vmapped, so the parameters are traced.
    settings: tuple[dict[str, float], ...] = ()
    labels: tuple[str, ...] = ()

    def row_names(self) -> tuple[str, ...]:
        return self.labels or (self.name,)


def _both(check: Check):
    """(autodiff, closed form) of one check; for settings, each with a leading settings axis."""
    if not check.settings:
        return lambda s, y: (_autodiff(check.loss)(s, y), check.grad(s, y))

    def one(params, s, y):
        loss = functools.partial(check.loss, **params)
        return _autodiff(loss)(s, y), check.grad(s, y, **params)

    stacked = {k: np.array([p[k] for p in check.settings], np.float64) for k in check.settings[0]}
    return lambda s, y: jax.vmap(one, in_axes=(0, None, None))(stacked, s, y)


def check_closed_form(checks: list[Check]) -> list[Row]:
    """Per check (per setting, for a parameterized loss), a float64 row (judged) and a float32
    row (informational): autodiff vs closed form.

    All checks share one compiled program per battery shape and dtype: XLA compilation, not
    arithmetic, is what this command spends its time on (hence the settings are vmapped rather
    than compiled one by one).
    """

    def all_checks(inputs):
        return [_both(c)(s, y) for c, (s, y) in zip(checks, inputs, strict=True)]

    fused = jax.jit(all_checks)
    rows: dict[tuple[str, str], Row] = {}
    for dtype, label in ((np.float64, "float64"), (np.float32, "float32")):
        batteries = [_battery(c.scales, dtype) for c in checks]
        pairs: dict[str, list] = {n: [] for c in checks for n in c.row_names()}
        for case in range(len(CASES)):
            inputs = [tuple(map(jnp.asarray, b[case])) for b in batteries]
            for i, (auto, closed) in enumerate(fused(inputs)):
                c = checks[i]
                if c.grad_name:
                    s = inputs[i][0]
                    _check_shape(c.grad_name, "gradient", closed, s, s.shape)
                if c.settings:
                    for j, n in enumerate(c.labels):
                        pairs[n].append(_errors(auto[j], closed[j]))
                else:
                    pairs[c.name].append(_errors(auto, closed))
        for c in checks:
            for n in c.row_names():
                judged = label == "float64"
                rows[n, label] = (
                    _row(n, label, pairs[n], RTOL_F64, c.atol) if judged
                    else _row(n, label, pairs[n])
                )
    return [rows[n, d] for c in checks for n in c.row_names() for d in ("float64", "float32")]


def check_finite_differences(name: str, loss, scales) -> list[Row]:
    """float64 autodiff vs float64 central differences (judged); float32 autodiff vs the same
    float64 reference, taken at the float32-rounded logits (informational)."""
    loss_jit = jax.jit(loss)
    per_example = jax.jit(lambda s, y: (loss(s, y), _autodiff(loss)(s, y)))
    rows = []
    for dtype, label in ((np.float64, "float64"), (np.float32, "float32")):
        pairs, loss_scale = [], []
        for s, y in _battery(scales, dtype):
            ell, auto = per_example(jnp.asarray(s), jnp.asarray(y))
            _check_shape(name, "loss", ell, s, s.shape[:-1])
            pairs.append(_errors(auto, _central_differences(loss_jit, s, y)))
            loss_scale.append(1.0 + np.abs(np.asarray(ell, np.float64)).ravel())
        if label == "float64":
            scale = np.concatenate(loss_scale)
            rows.append(_row(name, label, pairs, FD_RTOL, FD_ATOL, atol_scale=scale))
        else:
            rows.append(_row(name, label, pairs))
    return rows


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__


class _Refused(ValueError):
    """lossjax's own verdict on a user function (it already names the function): passed on as
    it is, where anything else the user's code raises, a ``ValueError`` too, gets its name."""


def _call(fn, ref: str, what: str, *args):
    try:
        return fn(*args)
    except resolve.UserExitError:
        raise  # names the function and the sys.exit already
    except Exception as e:  # a user function that cannot take (logits, labels), or that raised
        raise _Refused(
            f"{what} {ref!r} failed on (2, 3) logits and labels: {_first_line(e)}"
        ) from None


def _finite(value, ref: str, what: str) -> None:
    """A user function's output on the ordinary (2, 3) probe holds no NaN or inf: past that
    point NaN would only show as broadcasting errors or a table of nan."""
    bad = ~np.isfinite(np.asarray(value, np.float64))
    if bad.any():
        kinds = " and ".join(k for k, m in (("NaN", np.isnan), ("inf", np.isinf))
                             if m(np.asarray(value, np.float64)).any())
        raise _Refused(
            f"{what} {ref!r} returned {kinds} for ordinary (2, 3) logits (|s| <= 2) and one-hot "
            f"labels ({int(bad.sum())} of {bad.size} values); it must be finite there: check it"
        )


def load_user_functions(loss_ref: str, grad_ref: str | None) -> tuple[GradFn, GradFn | None]:
    """Resolves the loss (a registry name or ``module:function``) and imports the gradient, and
    checks their signatures, shapes and finiteness on a (2, 3) probe.

    Raises ``ValueError`` with one line, naming the function, for a bad reference, a wrong
    signature or shape, a non-finite value, an exception the function raised or its
    ``sys.exit``.
    """
    loss = resolve.resolve_loss(loss_ref)
    grad = resolve.import_callable(grad_ref, what="gradient") if grad_ref else None
    s = jnp.asarray([[0.5, -1.0, 2.0], [0.0, 0.3, -0.2]])
    y = losses.one_hot(jnp.asarray([0, 2]), 3, dtype=s.dtype)
    out = _call(loss, loss_ref, "loss", s, y)
    if np.shape(out) != (2,):
        raise ValueError(
            f"loss {loss_ref!r} must return per-example losses: (2, 3) logits and labels gave "
            f"shape {np.shape(out)}, expected (2,)."
        )
    _finite(out, loss_ref, "loss")
    try:
        g = jax.grad(lambda s: jnp.sum(loss(s, y)))(s)
    except resolve.UserExitError:
        raise
    except Exception as e:
        raise ValueError(
            f"loss {loss_ref!r} is not differentiable by jax.grad ({type(e).__name__}); "
            "write it with jax.numpy."
        ) from None
    _finite(g, loss_ref, "the autodiff gradient of loss")
    if grad is not None:
        g = _call(grad, grad_ref, "gradient", s, y)
        if np.shape(g) != (2, 3):
            raise ValueError(
                f"gradient {grad_ref!r} must return d loss / d logits per example: (2, 3) logits "
                f"and labels gave shape {np.shape(g)}, expected (2, 3)."
            )
        _finite(g, grad_ref, "gradient")
    return loss, grad


def _check_shape(ref: str, what: str, got, logits, expected) -> None:
    """A user function's output on a battery input has the shape it must have: one that is
    right only on the (2, 3) probe (a fixed-size result) would fail later as a broadcast."""
    if np.shape(got) != tuple(expected):
        raise _Refused(
            f"{what} {ref!r} returned shape {np.shape(got)} for logits of shape "
            f"{np.shape(logits)}; expected {tuple(expected)} (one value per "
            f"{'example' if what == 'loss' else 'logit'}, for any batch shape)"
        )


def format_table(rows: list[Row], title: str) -> str:
    w = max([len("loss"), *(len(r.loss) for r in rows)])
    header = (
        f"{'loss':<{w}}  {'dtype':<7}  {'examples':>8}  {'max |d|':>9}  {'max |d|/|g|':>11}  "
        f"{'pass rule (per example)':<32}  result"
    )
    lines = [title, "", header, "-" * len(header)]
    for r in rows:
        result = "info" if r.ok is None else ("pass" if r.ok else "FAIL")
        lines.append(
            f"{r.loss:<{w}}  {r.dtype:<7}  {r.examples:>8}  {r.max_abs:>9.2e}  {r.max_rel:>11.2e}  "
            f"{r.rule:<32}  {result}"
        )
    return "\n".join(lines)


def _builtin_check(name: str) -> Check:
    """A built-in loss against its closed form, or a variant (``lossjax.interventions``) against
    the edit applied to its base's closed form, on the base's battery."""
    if name in losses.LOSSES:
        loss, grad, base = losses.LOSSES[name], losses.GRADIENTS[name], name
    elif not _is_variant(name):  # a parameterized loss's label: that one setting
        loss, (grad_name, params) = resolve.resolve_loss(name), losses.parse_label(name)
        grad, base = functools.partial(losses.PARAMETERIZED[grad_name].grad, **params), grad_name
    else:
        loss, grad = interventions.variant(name), interventions.closed_form(name)
        base = interventions.Variant.parse(name).base_name
    return Check(
        name,
        loss,
        grad,
        SCALES_EXP if base == "exp_mse" else SCALES,
        ATOL_RESIDUE if base == "softmax_mse" else 0.0,
    )


def _parameterized_check(name: str) -> Check:
    """A parameterized loss, or a variant of one named without its parameters
    (``focal-push_up_50``: its edit applied to the closed form), against its closed form at
    each of its test values (traced: the path a sweep over them takes, through
    ``interventions.family``), rows labelled like ``focal(gamma=0.5)``, on the full battery
    (|s| <= 50), held to the pure relative bound (see ``RTOL_F64``)."""
    v = interventions.Variant.parse(name) if _is_variant(name) else None
    entry = losses.PARAMETERIZED[v.base_name if v else name]
    loss, grad = interventions.family(name)
    settings = entry.settings()
    # -balanced on a gradient that sums to 0 (label smoothing's, at one-hot labels) can cancel
    # it exactly: K = 2, alpha = 0.5 and p_wrong < 1/4 leave (g_0 + g_1, 0) = 0, which both
    # sides compute as a rounding residue (~1e-17); the floor of saturated softmax-MSE covers
    # that residue (measured: max |d| 1.2e-16), and nothing more.
    atol = ATOL_RESIDUE if v is not None and v.balanced else 0.0
    if settings == [{}]:  # no parameters: an ordinary check
        return Check(name, loss, grad, SCALES, atol)

    def by_name(fn):
        return lambda s, y, **p: fn(s, y, *(p[n] for n in entry.names))

    labels = tuple(str(dataclasses.replace(v, base=entry.label(p))) if v else entry.label(p)
                   for p in settings)
    return Check(name, by_name(loss), by_name(grad), SCALES, atol, settings=tuple(settings),
                 labels=labels)


def _is_family(name: str) -> bool:
    """A parameterized loss or a variant of one, named without parameters: checked at each of
    its test values."""
    if name in losses.PARAMETERIZED:
        return True
    return (_is_variant(name) and "(" not in name
            and losses.without_params(name.partition("-")[0]) in losses.PARAMETERIZED)


def _is_variant(name: str) -> bool:
    return interventions.is_variant(name)


def run(loss_ref: str | None = None, grad_ref: str | None = None) -> tuple[int, str]:
    """The agreement table as text, and 0 if every float64 row passes, else 1.

    ``loss_ref``: None for the four built-ins, their standard variants and every parameterized
    loss at each test value; a registry name for one of them (a parameterized one: at each of
    its test values); or a user loss
    ``module:function``, checked against ``grad_ref`` (``module:function``) if given, else
    against finite differences. Raises ``ValueError`` (one line) for a bad reference.
    """
    if grad_ref and not loss_ref:
        raise ValueError("--grad needs --loss: give the loss whose gradient it is.")
    if grad_ref and loss_ref and _is_family(loss_ref):
        raise ValueError(f"--grad is for a user loss: {loss_ref} is checked against its own "
                         "closed form at each of its test values; drop --grad.")
    # float64 only inside this call (scoped, so an in-process caller such as the test suite keeps
    # its own setting); every array is created inside the context.
    with jax.enable_x64(True):
        parameterized = _is_family(loss_ref or "")
        label = ("(" in (loss_ref or "") and ":" not in loss_ref
                 and losses.without_params(loss_ref) in losses.PARAMETERIZED)
        builtin = (loss_ref in losses.LOSSES or _is_variant(loss_ref or "") or label) and not (
            parameterized)
        if loss_ref is None or ((builtin or parameterized) and grad_ref is None):
            if loss_ref is None:
                checks = [_builtin_check(n) for n in [*losses.LOSSES, *STANDARD]]
                checks += [_parameterized_check(n) for n in
                           [*losses.PARAMETERIZED, *interventions.STANDARD_PARAMETERIZED]]
            elif parameterized:
                checks = [_parameterized_check(loss_ref)]
            else:
                checks = [_builtin_check(loss_ref)]
            rows = check_closed_form(checks)
            title = ("autodiff (jax.grad) vs closed-form gradient (losses.GRADIENTS; a variant: "
                     "its edit applied to its base's closed form; losses.PARAMETERIZED at each "
                     "test value)")
            scales = "|s| <= 50 (exp_mse and its variants: <= 20)"
        else:
            loss, grad = load_user_functions(loss_ref, grad_ref)
            # A user loss gets the exp_mse battery (|s| <= 20): a loss built on e^s, the kind a
            # researcher adds next, is finite there in float64 and float32 alike.
            scales = "|s| <= 20"
            try:
                if grad is not None:
                    check = Check(loss_ref, loss, grad, SCALES_EXP, ATOL_RESIDUE, grad_ref)
                    rows = check_closed_form([check])
                    title = f"autodiff (jax.grad) vs closed-form gradient {grad_ref}"
                else:
                    rows = check_finite_differences(loss_ref, loss, SCALES_EXP)
                    title = "autodiff (jax.grad) vs float64 central differences"
            except (_Refused, resolve.UserExitError):
                raise  # already names the function
            except Exception as e:  # the probe passed, but the battery (under jit) did not
                raise ValueError(
                    f"{loss_ref!r} failed under jax.jit on the battery: {_first_line(e)}"
                ) from None
    cases = ", ".join(f"K={k} batch {b}" for k, b in CASES)
    title += (
        f"\nbattery: logits uniform at {len(SCALES)} scales, {scales}; {cases}; "
        f"one-hot and soft labels; seed {SEED}"
        "\n|d| = ‖autodiff − reference‖ per example, |g| = ‖reference‖; float64 rows decide the "
        "exit status, float32 rows are for information"
    )
    out = [format_table(rows, title)]
    notes = [r.note for r in rows if r.note]
    if notes:
        out.append("\n" + "\n".join(notes))
    failed = [r.loss for r in rows if r.ok is False]
    if failed:
        out.append(f"\nFAIL: {', '.join(failed)} disagree beyond tolerance in float64.")
    else:
        out.append("\nall float64 rows within tolerance.")
    return (1 if failed else 0), "\n".join(out)
