"""``experiments/local_step.py``: one step along a base and an edited gradient at the same
parameters (digits, hidden [16], one epoch, a few batches)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import experiment

from lossjax import data, folder, machine, report_provenance
from lossjax.model import MLP

NAMES = [f"local_step.{e}" for e in ("json", "md", "png", "svg")]
SMALL = ["--dataset", "digits", "--loss", "mse", "--hidden", "16", "--epochs", "1",
         "--at", "0,1", "--batches", "4", "--batch-size", "64", "--chunk", "2"]


@pytest.fixture(scope="module")
def script():
    return experiment("local_step")


@pytest.fixture(scope="module")
def digits():
    return data.preprocess(data.load("digits", val_size=0.1, split_seed=0))


def _local(script, digits, variant):
    """The per-batch measurements at the initial weights, 4 batches of 32 (2 at a time)."""
    s = script.check_args(script.parser().parse_args(
        [*SMALL, "--variant", variant, "--out", "unused"]))
    model = MLP(hidden=s["hidden"], num_classes=digits.num_classes)
    params = model.init(jax.random.key(0), digits.x_train[:1])
    idx = np.arange(128).reshape(4, 32)
    steps, _ = script.make_local_steps(model, s["base_fn"], s["variant_fn"], s["lr"], 2)
    out = steps(params, jnp.asarray(digits.x_train[idx]), jnp.asarray(digits.y_train[idx]),
                jnp.asarray(digits.x_val), jnp.asarray(digits.y_val))
    return jax.tree.map(np.asarray, out)


def test_the_push_share_is_the_pushing_components_share_of_the_norm(script):
    g = jnp.array([[-0.5, 0.2, -0.1], [0.3, -0.4, 0.0]])
    y = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # pushes: -0.1 in row 0, none in row 1
    expected = (0.1 / np.sqrt(0.25 + 0.04 + 0.01) + 0.0) / 2
    assert float(script.push_share(g, y)) == pytest.approx(expected, rel=1e-6)
    assert float(script.push_share(jnp.zeros((1, 3)), y[:1])) == 0.0


@pytest.mark.slow  # trains a base run and compiles the step program (about 6 s)
def test_the_base_as_its_own_variant_changes_nothing(script, digits):
    per = _local(script, digits, "mse")
    np.testing.assert_array_equal(per["edit"], per["base"])  # Δ exactly 0, every metric
    np.testing.assert_array_equal(per["edit_push_share"], per["base_push_share"])
    np.testing.assert_allclose(per["cosine"], 1.0, rtol=1e-6)
    np.testing.assert_array_equal(per["norm_ratio"], 1.0)


@pytest.mark.slow  # a program of its own; mse-no_push_up is checked by the run below
def test_a_norm_matched_edit_turns_the_step_but_keeps_its_length(script, digits):
    per = _local(script, digits, "mse-no_push_up-norm_matched")
    assert (per["cosine"] < 1 - 1e-4).all()
    assert (per["base_push_share"] > 0).all() and (per["edit_push_share"] == 0).all()
    np.testing.assert_allclose(per["rescaled_norm_ratio"], 1.0, rtol=1e-5)
    assert not np.array_equal(per["edit"], per["base"])


@pytest.fixture(scope="module")
def written(script, tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    (out / "notes.md").write_text("mine")
    (out / "status.json").write_text(json.dumps({"complete": True}))  # a lossjax folder
    assert script.main([*SMALL, "--variant", "mse-no_push_up", "--out", str(out)]) == 0
    return out


@pytest.mark.slow  # a whole run of the script (about 5 s)
def test_outputs_are_written_and_leave_a_users_file_alone(script, written):
    assert all((written / n).is_file() for n in NAMES)
    out = json.loads((written / "local_step.json").read_text())
    assert [r["epoch"] for r in out["states"]] == [0, 1]
    r = out["states"][0]
    assert r["n"] == 4 and len(r["per_batch"]["cosine"]) == 4
    assert r["cosine"]["max"] < 1
    assert abs(r["rescaled_norm_ratio"]["max"] - 1) < 1e-5
    for key in ("loss", "nll", "acc"):
        d = np.array(r["per_batch"]["edit"])[:, out["metrics"].index(key)] - np.array(
            r["per_batch"]["base"])[:, out["metrics"].index(key)]
        assert r[key]["delta_mean"] == pytest.approx(d.mean())
    assert "| 1 |" in (written / "local_step.md").read_text()
    # What made it, as a sweep's env.json says for a sweep: the command, the commit, the CPU.
    made = out["provenance"]
    assert made["command"].startswith("python experiments/local_step.py --dataset digits")
    assert made["cpu"] == machine.cpu_record() and made["versions"]["jax"] == jax.__version__
    assert made["git"]["lossjax"] is None or made["git"]["lossjax"]["state"] in ("ok", "unknown")
    assert report_provenance.script_line(made) in (written / "local_step.md").read_text()
    # A second write into the same folder: its own files replaced, the user's kept.
    script.write(out, written)
    assert (written / "notes.md").read_text() == "mine"
    # Recorded in the lossjax folder, so that --overwrite removes these and nothing else.
    recorded = folder.recorded(folder.status(written))
    assert set(NAMES) <= set(recorded)
    folder._clear_previous(written, recorded)
    assert not any((written / n).exists() for n in NAMES)
    assert (written / "notes.md").read_text() == "mine"


@pytest.mark.parametrize("args, where", [
    (["--loss", "nope", "--variant", "mse-no_push_up"], "--loss"),
    (["--variant", "cross_entropy-push_up_50"], "--variant"),
    (["--variant", "mse-no_push"], "--variant"),
    (["--variant", "mse-no_push_up", "--at", "0,2"], "--at"),
    (["--variant", "mse-no_push_up", "--batches", "x"], "--batches"),
])
def test_bad_arguments_give_one_line_and_exit_2(script, tmp_path, capsys, args, where):
    out = tmp_path / "out"
    try:
        rc = script.main([*SMALL, *args, "--out", str(out)])
    except SystemExit as e:  # argparse's own checks
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and where in err, err
    assert not out.exists()
