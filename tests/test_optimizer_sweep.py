"""Several optimizers in one sweep (``optimizer.name: [momentum, adam]``): each (loss, optimizer)
is a group with its own chosen rate, a member computes what it computes in a sweep of its
optimizer alone, and folders written before the optimizer column existed still read, with
the same report."""

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import assert_same_files

from lossjax import analysis, cli, engine, report, sweep, tables
from lossjax.config import parse_config
from lossjax.errors import ResultsError

REPO = Path(__file__).resolve().parent.parent
OLD = REPO / "results" / "hazards_digits"  # written before optimizers were swept (format 1)

CONFIG = {
    "name": "opts",
    "seeds": [0, 1],
    "epochs": 2,
    "losses": ["cross_entropy", "mse"],
    "dataset": {"name": "digits"},
    "model": {"hidden": [[8]]},
    "optimizer": {"name": ["momentum", "adam"],
                  "learning_rate": {"momentum": [0.03, 0.1], "adam": [0.001, 0.01]}},
    "eval": {"target_accuracy": 0.8},
}
KEYS = ["optimizer", "loss", "learning_rate", "seed", "epoch"]


def _write(tmp: Path, sweep_name: str, **optimizer) -> str:
    cfg = {**CONFIG, "name": sweep_name, "optimizer": {**CONFIG["optimizer"], **optimizer},
           "output": {"dir": str(tmp)}}
    path = tmp / f"{sweep_name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """The sweep of both optimizers, and one of each alone with the same grids."""
    tmp = tmp_path_factory.mktemp("opts")
    runs = {"both": {}, "momentum": {"name": "momentum", "learning_rate": [0.03, 0.1]},
            "adam": {"name": "adam", "learning_rate": [0.001, 0.01]}}
    for name, optimizer in runs.items():
        assert cli.main(["sweep", _write(tmp, name, **optimizer), "--quiet"]) == 0
    return {name: tmp / name for name in runs}


def _cells(folder: Path) -> pd.DataFrame:
    """epochs.csv as its text, keyed by what names a member (not its id), wall_time left out."""
    t = pd.read_csv(folder / "epochs.csv", dtype=str, keep_default_na=False)
    return t.drop(columns=["member", "wall_time"]).set_index(KEYS).sort_index()


def test_members_are_the_product_in_order_and_one_program_per_optimizer():
    cfg = parse_config({**CONFIG, "name": "t"})
    members = sweep.expand_members(cfg)
    assert [m.optimizer for m in members] == ["momentum"] * 8 + ["adam"] * 8
    assert [m.learning_rate for m in members[8:12]] == [0.001, 0.001, 0.01, 0.01]
    groups = sweep.group_members(members)
    assert [{m.optimizer for m in g} for g in groups] == [{"momentum"}, {"adam"}]
    # One optimizer: the members of before (ids, order, and the default optimizer).
    one = parse_config({**CONFIG, "name": "t", "optimizer": {"learning_rate": [0.03, 0.1]}})
    assert sweep.expand_members(one) == [
        engine.Member(i, loss, lr, 0.0, 1.0, seed, (8,))
        for i, (loss, lr, seed) in enumerate(
            (loss, lr, seed) for loss in ("cross_entropy", "mse") for lr in (0.03, 0.1)
            for seed in (0, 1))]


@pytest.mark.slow
def test_each_member_computes_what_it_computes_with_its_optimizer_alone(sweeps):
    both = _cells(sweeps["both"])
    for name in ("momentum", "adam"):
        alone = _cells(sweeps[name])
        assert len(alone) == 2 * 2 * 2 * 2  # losses × rates × seeds × epochs
        assert both.loc[[name]].equals(alone), name


@pytest.mark.slow
def test_summary_has_a_row_per_loss_and_optimizer_each_with_its_own_rate(sweeps):
    s = tables.read_summary(sweeps["both"])
    assert list(zip(s["loss"], s["optimizer"], strict=True)) == [
        ("cross_entropy", "momentum"), ("mse", "momentum"), ("cross_entropy", "adam"),
        ("mse", "adam")]
    assert set(s[s["optimizer"] == "adam"]["learning_rate"]) <= {0.001, 0.01}
    assert set(s[s["optimizer"] == "momentum"]["learning_rate"]) <= {0.03, 0.1}
    # Each row is the summary of the sweep of that optimizer alone.
    for name in ("momentum", "adam"):
        alone = tables.read_summary(sweeps[name]).reset_index(drop=True)
        mine = s[s["optimizer"] == name].reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, alone)


@pytest.mark.slow
def test_report_and_plots_name_the_optimizer_only_where_several_were_swept(sweeps):
    text = (sweeps["both"] / "report.md").read_text()
    assert "| Loss | Optimizer | Hidden |" in text
    assert "2 optimizers (momentum with 2 learning rates (0.03, 0.1); adam with" in text
    for name in ("test_accuracy", "lr_sensitivity", "train_loss", "wrong_direction"):
        assert (sweeps["both"] / "plots" / f"{name}.png").stat().st_size > 0
    res = analysis.load_results(sweeps["both"])
    assert analysis.varying_columns(res) == ["optimizer"]
    labels = [c.label() for c in analysis.chosen_runs(res)]
    assert labels[0].startswith("cross_entropy (momentum, lr ")
    assert labels[1].startswith("cross_entropy (adam, lr ")
    alone = (sweeps["adam"] / "report.md").read_text()
    assert "Optimizer" not in alone and "(adam, lr" not in alone


@pytest.mark.slow
def test_a_resumed_sweep_of_several_optimizers_ends_with_the_same_files(sweeps, tmp_path,
                                                                       monkeypatch):
    real = engine.Group.train_epoch

    def interrupted(self, state, epoch, active=None):  # in adam's group, after momentum's
        if self.settings.optimizer == "adam" and epoch == 1:
            raise KeyboardInterrupt
        return real(self, state, epoch, active)

    cfg = _write(tmp_path, "both")
    monkeypatch.setattr(engine.Group, "train_epoch", interrupted)
    assert cli.main(["sweep", cfg, "--quiet"]) == 130
    monkeypatch.setattr(engine.Group, "train_epoch", real)
    assert cli.main(["sweep", cfg, "--quiet", "--resume"]) == 0
    assert_same_files(sweeps["both"], tmp_path / "both")


def test_an_old_folder_reads_with_its_optimizer_filled_in():
    assert "format" not in (OLD / "status.json").read_text()
    assert "optimizer" not in (OLD / "epochs.csv").read_text().splitlines()[0]
    res = analysis.load_results(OLD)
    for table in (res.epochs, res.summary):
        cols = list(table.columns)
        assert cols[cols.index("loss") + 1] == "optimizer"
        assert set(table["optimizer"]) == {"momentum"}
    assert "optimizer" not in analysis.varying_columns(res)


@pytest.mark.slow
def test_an_old_folders_report_is_unchanged(tmp_path):
    copy = tmp_path / "digits"
    shutil.copytree(OLD, copy)
    (copy / "report.md").unlink()
    report.write_report(copy)
    # The same report, but for the test-error figure drawn since.
    text = re.sub(r"### Test error\n.*?(?=### )", "", (copy / "report.md").read_text(),
                  flags=re.S)
    assert text == (OLD / "report.md").read_text()


def test_an_old_unfinished_folder_is_refused_on_resume_in_one_line(tmp_path):
    copy = tmp_path / "digits"
    shutil.copytree(OLD, copy)
    with pytest.raises(ResultsError, match="earlier lossjax .folder format 1") as e:
        tables.read_epochs(copy, resume=True)
    assert "\n" not in str(e.value)
