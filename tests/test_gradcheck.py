"""``lossjax check-grads`` end to end through ``lossjax.cli.main``: the built-in table, the
parameterized losses at their test values, a user loss with and without its closed form, wrong
gradients that must fail, and bad references that must give one line on stderr and exit 2."""

from __future__ import annotations

import itertools
import sys
import textwrap

import jax.numpy as jnp
import pytest

from lossjax import cli, gradcheck, losses

USER_MODULE = '''
import jax
import jax.numpy as jnp
import numpy as np

NOT_CALLABLE = 3


def sigmoid_mse(logits, labels):
    """(1/K) ||y - sigmoid(s)||^2 per example."""
    return jnp.mean(jnp.square(labels - jax.nn.sigmoid(logits)), axis=-1)


def sigmoid_mse_grad(logits, labels):
    q = jax.nn.sigmoid(logits)
    return (-2.0 / logits.shape[-1]) * (labels - q) * q * (1.0 - q)


def sigmoid_mse_grad_missing_factor(logits, labels):  # forgot the 2
    q = jax.nn.sigmoid(logits)
    return (-1.0 / logits.shape[-1]) * (labels - q) * q * (1.0 - q)


@jax.custom_jvp
def _square(x):
    return x * x


@_square.defjvp
def _square_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return x * x, 3.0 * x * t  # wrong: the derivative of x² is 2x


def mse_with_wrong_autodiff(logits, labels):
    return jnp.mean(_square(labels - logits), axis=-1)


def one_argument(logits):
    return jnp.sum(logits, axis=-1)


def batch_mean(logits, labels):
    return jnp.mean(jnp.square(labels - logits))


def numpy_loss(logits, labels):
    return np.mean(np.square(np.asarray(labels) - np.asarray(logits)), axis=-1)


def grad_wrong_shape(logits, labels):
    return jnp.sum(logits - labels, axis=-1)
'''

_counter = itertools.count()


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Writes the user module under a fresh name on a tmp folder added to sys.path."""
    name = f"lossjax_user_losses_{next(_counter)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


@pytest.fixture
def small_battery(monkeypatch):
    """Two shapes instead of five for user-loss runs (the built-in run covers the full battery):
    each shape is an XLA compilation, which is what these tests would spend their time on."""
    monkeypatch.setattr(gradcheck, "CASES", ((2, (8,)), (10, (2, 3))))


def _run(capsys, *args):
    rc = cli.main(["check-grads", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def _table_rows(out, dtype="float64"):
    """The table's rows of one dtype, split into fields (name, dtype, examples, abs, rel, ...)."""
    rows = [line.split() for line in out.splitlines()]
    return [r for r in rows if len(r) > 5 and r[1] == dtype]


@pytest.mark.slow
def test_builtin_table_passes(capsys):
    rc, out, err = _run(capsys)
    assert rc == 0, out
    assert err == ""
    for name in ("cross_entropy", "mse", "softmax_mse", "exp_mse"):
        row = next(r for r in _table_rows(out) if r[0] == name)
        assert row[-1] == "pass"
        assert float(row[4]) <= 1e-10 or name == "softmax_mse"  # max relative error
        assert any(r[0] == name and r[-1] == "info" for r in _table_rows(out, "float32"))
    for entry in losses.PARAMETERIZED.values():  # every test value of every parameterized loss
        for params in entry.settings():
            row = next(r for r in _table_rows(out) if r[0] == entry.label(params))
            assert row[-1] == "pass" and float(row[4]) <= 1e-10
            assert any(r[0] == row[0] and r[-1] == "info" for r in _table_rows(out, "float32"))
    assert "FAIL" not in out
    assert "float64 rows decide the exit status" in out
    # float64 was switched on only for the command, not for this process
    assert jnp.ones(1).dtype == jnp.float32


def test_single_builtin_by_name(capsys, small_battery):
    rc, out, _ = _run(capsys, "--loss", "exp_mse")
    assert rc == 0
    assert [r[0] for r in _table_rows(out)] == ["exp_mse"]


@pytest.mark.slow  # every setting of every parameterized loss
def test_parameterized_by_name(capsys, small_battery):
    rc, out, _ = _run(capsys, "--loss", "focal")
    assert rc == 0, out
    rows = _table_rows(out)
    assert [r[0] for r in rows] == [f"focal(gamma={g})" for g in ("0", "0.5", "1", "2", "5")]
    assert all(r[-1] == "pass" for r in rows)
    rc, out, _ = _run(capsys, "--loss", "squentropy")
    assert rc == 0
    assert [r[0] for r in _table_rows(out)] == ["squentropy"]


@pytest.mark.slow  # check-grads over every setting of a loss
def test_parameterized_wrong_closed_form_fails(capsys, small_battery, monkeypatch):
    """A closed form that ignores its parameter passes at gamma = 0 only: each setting reaches
    both functions (vmapped, traced) and gets its own row."""
    entry = losses.PARAMETERIZED["focal"]

    def ignores_gamma(logits, labels, gamma):
        return losses.focal_grad(logits, labels, 0.0)

    monkeypatch.setitem(losses.PARAMETERIZED, "focal",
                        losses.Parameterized(entry.loss, ignores_gamma, entry.test_values))
    rc, out, _ = _run(capsys, "--loss", "focal")
    assert rc == 1
    results = {r[0]: r[-1] for r in _table_rows(out)}
    assert results == {"focal(gamma=0)": "pass", **{f"focal(gamma={g})": "FAIL"
                                                     for g in ("0.5", "1", "2", "5")}}
    assert "disagree beyond tolerance" in out


def test_user_loss_with_closed_form_passes(capsys, user_module, small_battery):
    loss = f"{user_module}:sigmoid_mse"
    rc, out, err = _run(capsys, "--loss", loss, "--grad", f"{user_module}:sigmoid_mse_grad")
    assert rc == 0, out
    assert err == ""
    assert "closed-form gradient" in out
    (row,) = _table_rows(out)
    assert row[0] == loss and row[-1] == "pass"


def test_user_loss_against_finite_differences_passes(capsys, user_module, small_battery):
    rc, out, err = _run(capsys, "--loss", f"{user_module}:sigmoid_mse")
    assert rc == 0, out
    assert err == ""
    assert "central differences" in out
    (row,) = _table_rows(out)
    assert row[-1] == "pass"


def test_wrong_closed_form_fails(capsys, user_module, small_battery):
    rc, out, _ = _run(
        capsys,
        "--loss",
        f"{user_module}:sigmoid_mse",
        "--grad",
        f"{user_module}:sigmoid_mse_grad_missing_factor",
    )
    assert rc == 1
    (row,) = _table_rows(out)
    assert row[-1] == "FAIL"
    assert float(row[4]) == pytest.approx(1.0)  # ‖g − g/2‖ / ‖g/2‖: relative to the closed form
    assert "disagree beyond tolerance" in out


def test_wrong_autodiff_fails_against_finite_differences(capsys, user_module, small_battery):
    rc, out, _ = _run(capsys, "--loss", f"{user_module}:mse_with_wrong_autodiff")
    assert rc == 1
    (row,) = _table_rows(out)
    assert row[-1] == "FAIL"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--loss", "no_such_module_xyz:f"], "cannot import module 'no_such_module_xyz'"),
        (["--loss", "{m}:missing"], "has no attribute 'missing'"),
        (["--loss", "{m}:NOT_CALLABLE"], "'NOT_CALLABLE' is a int, not a function"),
        (["--loss", "hinge"], "unknown loss 'hinge'; choose one of cross_entropy, mse"),
        (["--loss", "{m}:"], "must be 'module:function'"),
        (["--loss", "{m}:one_argument"], "failed on (2, 3) logits and labels: TypeError"),
        (["--loss", "{m}:batch_mean"], "gave shape (), expected (2,)"),
        (["--loss", "{m}:numpy_loss"], "is not differentiable by jax.grad"),
        (
            ["--loss", "{m}:sigmoid_mse", "--grad", "{m}:grad_wrong_shape"],
            "gave shape (2,), expected (2, 3)",
        ),
        (["--loss", "{m}:sigmoid_mse", "--grad", "{m}:nope"], "gradient '"),
        (["--grad", "{m}:sigmoid_mse_grad"], "--grad needs --loss"),
        (["--loss", "focal", "--grad", "{m}:sigmoid_mse_grad"], "--grad is for a user loss"),
    ],
)
def test_bad_reference_is_one_line(capsys, user_module, args, message):
    args = [a.format(m=user_module) for a in args]
    rc, out, err = _run(capsys, *args)
    assert rc == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lossjax: error: ")
    assert message in lines[0]
    assert "Traceback" not in err
