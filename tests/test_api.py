"""lossjax from Python: ``lossjax.run`` / ``load`` / ``compare``, the same errors as the command,
provenance in env.json, TensorBoard output, and ``lossjax compare`` on the command line."""

import logging

import numpy as np
import pandas as pd
import pytest
from conftest import read_events, scalars
from matplotlib.figure import Figure

import lossjax
from lossjax import cli
from lossjax.errors import ConfigError

CONFIG = {
    "name": "api",
    "seeds": [0, 1],
    "epochs": 2,
    "batch_size": 64,
    "losses": ["cross_entropy", "mse"],
    "dataset": {"name": "digits"},
    "model": {"hidden": [[16]]},
    "optimizer": {"learning_rate": {"cross_entropy": [0.1], "mse": [0.1]}},
    "eval": {"target_accuracy": 0.5},
    "output": {"tensorboard": True},
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("api")
    return lossjax.run(CONFIG, output_dir=out, progress=False)


def test_run_returns_the_results_as_dataframes(finished):
    assert isinstance(finished, lossjax.Results)
    assert finished.path.name == "api" and finished.config["epochs"] == 2
    assert isinstance(finished.epochs, pd.DataFrame) and len(finished.epochs) == 4 * 2
    assert list(finished.summary["loss"]) == ["cross_entropy", "mse"]
    on_disk = pd.read_csv(finished.path / "summary.csv")
    np.testing.assert_array_equal(finished.summary["test_acc_mean"], on_disk["test_acc_mean"])
    fig = finished.plot("test_accuracy")
    assert isinstance(fig, Figure) and fig.axes
    assert set(finished.figures()) == {"test_accuracy", "test_error", "train_loss",
                                       "lr_sensitivity", "wrong_direction"}
    assert "| `cross_entropy` |" in finished._repr_markdown_()
    assert finished.report().startswith("# api")


def test_load_reads_the_same_folder(finished):
    again = lossjax.load(finished.path)
    pd.testing.assert_frame_equal(again.epochs, finished.epochs)
    assert again.env == finished.env


def test_env_json_records_how_the_sweep_was_started(finished):
    env = finished.env
    (start,) = env["invocations"]
    assert start["via"] == "python" and start["call"].startswith("lossjax.run({...}")
    assert env["versions"]["jax"] and env["data"]["verified"]
    assert "## Provenance" in (finished.path / "report.md").read_text()


def test_a_bad_config_raises_the_line_the_command_prints(tmp_path, capsys):
    bad = {**CONFIG, "epochs": 0}
    with pytest.raises(ConfigError) as e:
        lossjax.run(bad, output_dir=tmp_path)
    path = tmp_path / "bad.yaml"
    import yaml

    path.write_text(yaml.safe_dump(bad))
    assert cli.main(["sweep", str(path), "--quiet"]) == 2
    assert capsys.readouterr().err == f"lossjax: error: {e.value}\n"
    assert not (tmp_path / "api").exists()


def test_resuming_a_finished_sweep_warns_and_loads_it(finished, caplog):
    with caplog.at_level(logging.WARNING, logger="lossjax"):
        again = lossjax.run(CONFIG, output_dir=finished.path.parent, resume=True)
    assert "nothing changed" in caplog.text
    pd.testing.assert_frame_equal(again.summary, finished.summary)


def test_tensorboard_holds_the_tables_numbers(finished):
    runs = sorted((finished.path / "tensorboard").iterdir())
    assert len(runs) == 4 and runs[0].name.startswith("m0000-cross_entropy")
    (events_file,) = runs[0].glob("events.out.tfevents.*")
    values = scalars(read_events(events_file))
    row = finished.epochs.query("member == 0 and epoch == 2").iloc[0]
    assert values[(2, "test_acc")] == np.float32(row["test_acc"])


@pytest.mark.slow
def test_compare_from_python_and_from_the_command(finished, tmp_path, capsys):
    other = lossjax.run(CONFIG, overrides=["name=api_wide", "model.hidden=[[32]]"],
                        output_dir=finished.path.parent, progress=False)
    table = lossjax.compare([finished.path, other.path]).table
    assert list(table["sweep"].unique()) == ["api", "api_wide"]
    assert cli.main(["compare", str(finished.path), str(other.path), "--out",
                     str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "api_wide" in out and str(tmp_path / "cmp" / "comparison.png") in out
