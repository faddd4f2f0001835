"""Probability quality: NLL, Brier score and ECE against numpy by hand (padding included),
temperature scaling against a grid search, and what a sweep writes of them."""

import re
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import SMALL_SWEEP

from lossjax import analysis, calibration, cli, data, engine, losses, report, tables

REPO = Path(__file__).resolve().parent.parent


def np_softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_metrics(s, y, bins=15):
    """NLL, Brier (sum over classes), ECE (Guo et al. 2017) and the bins, written plainly."""
    s = np.asarray(s, np.float64)
    p = np_softmax(s)
    n, k = p.shape
    nll = float(np.mean(-np.log(p[np.arange(n), y])))
    brier = float(np.mean(np.sum((p - np.eye(k)[y]) ** 2, axis=1)))
    conf, right = p.max(1), (s.argmax(1) == y)
    ece, table = 0.0, np.zeros((3, bins))
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = (conf > lo) & (conf <= hi)
        table[:, b] = inside.sum(), conf[inside].sum(), right[inside].sum()
        if inside.any():
            ece += inside.mean() * abs(right[inside].mean() - conf[inside].mean())
    return nll, brier, ece, table


def _logits(n=37, k=5, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    s = (rng.normal(size=(n, k)) * scale).astype(np.float32)
    y = rng.integers(0, k, n).astype(np.int32)
    y[: n // 2] = s[: n // 2].argmax(1)  # a model right about half the time and overconfident
    return s, y


def test_chunk_sums_and_finish_match_numpy_with_padding():
    s, y = _logits()
    nll, brier, ece, table = np_metrics(s, y)
    # Three chunks of 16, the last with 11 padding examples of junk that must not count.
    pad = 3 * 16 - len(s)
    sp = np.concatenate([s, np.full((pad, s.shape[1]), 50.0, np.float32)]).reshape(3, 16, -1)
    yp = np.concatenate([y, np.zeros(pad, np.int32)]).reshape(3, 16)
    mp = (np.arange(48) < len(s)).reshape(3, 16)
    sums = None
    for c in range(3):
        part = calibration.chunk_sums(jnp.asarray(sp[c]), jnp.asarray(yp[c]), jnp.asarray(mp[c]))
        sums = part if sums is None else jax.tree.map(jnp.add, sums, part)
    got = calibration.finish(sums, mp.sum())
    assert float(got["brier"]) == pytest.approx(brier, rel=1e-5)
    assert float(got["ece"]) == pytest.approx(ece, rel=1e-5, abs=1e-7)
    np.testing.assert_allclose(np.asarray(got["bins"]), table, rtol=1e-5, atol=1e-5)
    classes = np.asarray(got["classes"])
    np.testing.assert_array_equal(classes[0], np.bincount(y, minlength=s.shape[1]))
    right = s.argmax(1) == y
    np.testing.assert_array_equal(classes[1], np.bincount(y[right], minlength=s.shape[1]))
    assert nll > 0  # the NLL is the engine's cross-entropy: checked on the engine below


def test_a_confidence_on_a_bin_edge_goes_to_the_lower_bin():
    # softmax([log 2, 0, ...]) over 2 classes: confidence 2/3 = 10/15 exactly in (9/15, 10/15].
    s = jnp.asarray([[np.log(2.0), 0.0]], jnp.float32)
    sums = calibration.chunk_sums(s, jnp.asarray([0]), jnp.asarray([True]))
    b = int(np.flatnonzero(np.asarray(sums["bins"][0]))[0])
    assert b in (9, 10)  # float32 rounds 2/3 either side of the edge; never past it
    one = calibration.chunk_sums(jnp.asarray([[100.0, 0.0]]), jnp.asarray([0]),
                                 jnp.asarray([True]))
    assert float(one["bins"][0, -1]) == 1  # a confidence of 1 is in the last bin


def _nll(s, y, t):
    z = np.asarray(s, np.float64) / t
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return float(np.mean(-logp[np.arange(len(y)), y]))


@pytest.mark.parametrize("scale", [0.3, 3.0, 30.0])
def test_fitted_temperature_minimizes_the_nll_as_a_grid_search_finds(scale):
    s, y = _logits(n=200, k=10, seed=1, scale=scale)
    mask = np.ones(len(y), bool)
    beta = float(calibration.fit_inverse_temperature(jnp.asarray(s), jnp.asarray(y),
                                                     jnp.asarray(mask)))
    grid = np.exp(np.linspace(np.log(1e-2), np.log(1e3), 20001))
    nlls = np.array([_nll(s, y, t) for t in grid[::20]])  # coarse, then fine around the best
    best = grid[::20][nlls.argmin()]
    fine = grid[(grid > best / 1.05) & (grid < best * 1.05)]
    t_grid = fine[np.argmin([_nll(s, y, t) for t in fine])]
    assert 1 / beta == pytest.approx(t_grid, rel=2e-3)
    assert _nll(s, y, 1 / beta) <= _nll(s, y, t_grid) + 1e-6


def test_a_split_all_right_takes_the_bracket_edge():
    s = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]] * 5
    beta = calibration.fit_inverse_temperature(jnp.asarray(s), jnp.asarray([0, 1, 2, 0]),
                                               jnp.ones(4, bool))
    assert 1 / float(beta) == pytest.approx(1 / calibration.T_MAX, rel=1e-3)


# ---- the engine's evaluation ---------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluated():
    """Two members after one epoch on digits, evaluated in chunks of 100 (val: 144 examples,
    padded to 200; test 359, to 400), with the logits of each split by plain apply."""
    ds = data.preprocess(data.load("digits", val_size=0.1, split_seed=0), standardize=True)
    settings = engine.TrainSettings(
        hidden=(16,), num_classes=10, activation="relu", init="lecun_normal",
        dtype="float32", optimizer="momentum", momentum=0.9, schedule="constant",
        batch_size=64, epochs=1)
    members = [engine.Member(i, loss, 0.1, 0.0, 1.0, 0, (16,))
               for i, loss in enumerate(("cross_entropy", "mse"))]
    names = list(losses.LOSSES)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine, "EVAL_CHUNK", 100)
        g = engine.Group(settings, members, names, [losses.LOSSES[n] for n in names],
                         (ds.x_train, ds.y_train, ds.x_val, ds.y_val, ds.x_test, ds.y_test),
                         engine.make_mesh())
    state, _ = g.train_epoch(g.init_state(), 0)
    out = g.evaluate(state, final=True)
    logits = {}
    for name, x in (("val", ds.x_val), ("test", ds.x_test)):
        logits[name] = [np.asarray(g.model.apply(jax.tree.map(lambda a, i=i: a[0],
                                                              state[i]["params"]),
                                                 x.astype(np.float32)))
                        for i in range(len(members))]
    return out, logits, {"val": ds.y_val, "test": ds.y_test}


@pytest.mark.slow  # a group compiled and trained: ~10-25 s on 2 cores
def test_engine_metrics_match_numpy_on_padded_chunks(evaluated):
    out, logits, labels = evaluated
    assert engine.EVAL_CHUNK == 1000
    for split in ("val", "test"):
        for i, s in enumerate(logits[split]):
            nll, brier, ece, table = np_metrics(s, labels[split])
            assert out[f"{split}_ce"][i] == pytest.approx(nll, rel=1e-4)
            assert out[f"{split}_brier"][i] == pytest.approx(brier, rel=1e-4)
            assert out[f"{split}_ece"][i] == pytest.approx(ece, rel=1e-3, abs=1e-5)
            np.testing.assert_allclose(out[f"{split}_bins"][i], table, rtol=1e-4, atol=1e-3)
            assert out[f"{split}_bins"][i][0].sum() == len(labels[split])


@pytest.mark.slow  # a group compiled and trained: ~10-25 s on 2 cores
def test_engine_temperature_is_fitted_on_val_and_applied_to_test(evaluated):
    out, logits, labels = evaluated
    for i in range(2):
        t = float(out["temperature"][i])
        grid = t * np.exp(np.linspace(-0.05, 0.05, 201))
        val = [_nll(logits["val"][i], labels["val"], g) for g in grid]
        assert _nll(logits["val"][i], labels["val"], t) <= min(val) + 1e-5
        nll, brier, ece, table = np_metrics(np.asarray(logits["test"][i], np.float64) / t,
                                            labels["test"])
        assert out["test_ce_ts"][i] == pytest.approx(nll, rel=1e-4)
        assert out["test_brier_ts"][i] == pytest.approx(brier, rel=1e-4)
        assert out["test_ece_ts"][i] == pytest.approx(ece, rel=1e-3, abs=1e-5)
        np.testing.assert_allclose(out["test_bins_ts"][i], table, rtol=1e-4, atol=1e-3)
    # The two losses calibrate differently: mse's logits are far too timid for softmax.
    assert out["temperature"][1] < out["temperature"][0]


# ---- what a sweep writes -------------------------------------------------------------------


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("calibration")
    cfg = {**SMALL_SWEEP, "epochs": 2, "optimizer": {"learning_rate": [0.1, 0.3]},
           "output": {"dir": str(tmp)}}
    path = tmp / "small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli.main(["sweep", str(path), "--quiet"]) == 0
    return tmp / "small"


@pytest.mark.slow  # a group compiled and trained: ~10-25 s on 2 cores
def test_sweep_writes_the_calibration_columns(swept):
    table = tables.read_epochs(swept, resume=True)
    assert list(table.columns) == tables.EPOCHS_COLUMNS
    last = table["epoch"] == 2
    for c in ("val_brier", "val_ece", "test_brier", "test_ece"):
        assert table[c].notna().all(), c
        assert table[c].dtype == np.float32
    for c in ("temperature", "test_ce_ts", "test_brier_ts", "test_ece_ts"):
        assert table.loc[last, c].notna().all() and table.loc[~last, c].isna().all(), c
    assert (table["test_ece"].between(0, 1) & table["test_brier"].between(0, 2)).all()
    # Scaling never makes the test NLL much worse than it was (it is fitted on val).
    assert (table.loc[last, "test_ce_ts"] < table.loc[last, "test_ce"] * 1.2).all()


@pytest.mark.slow  # a group compiled and trained: ~10-25 s on 2 cores
def test_sweep_writes_final_csv(swept):
    final = tables.read_final(swept, resume=True)
    table = tables.read_epochs(swept)
    last = table[table["epoch"] == 2].set_index("member")
    assert list(final.columns) == tables.FINAL_COLUMNS
    n_test = 359
    for m, rows in final.groupby("member"):
        kinds = rows["kind"].tolist()
        assert kinds == ["class"] * 10 + ["reliability"] * 15 + ["reliability_ts"] * 15
        classes = rows[rows["kind"] == "class"]
        assert classes["count"].sum() == n_test
        acc = (classes["count"] * classes["accuracy"]).sum() / n_test
        assert acc == pytest.approx(last.loc[m, "test_acc"], abs=1e-6)
        for kind, ece_col in (("reliability", "test_ece"), ("reliability_ts", "test_ece_ts")):
            b = rows[rows["kind"] == kind]
            assert b["count"].sum() == n_test
            full = b["count"] > 0
            ece = (b["count"] * (b["accuracy"] - b["confidence"]).abs())[full].sum() / n_test
            assert ece == pytest.approx(last.loc[m, ece_col], rel=1e-4, abs=1e-6)
            # accuracy is unchanged by scaling
            assert (b["count"] * b["accuracy"])[full].sum() / n_test == pytest.approx(
                last.loc[m, "test_acc"], abs=1e-6)
    assert sorted(final["member"].unique()) == sorted(table["member"].unique())


@pytest.mark.slow  # a group compiled and trained: ~10-25 s on 2 cores
def test_summary_has_the_calibration_means_at_the_chosen_rate(swept):
    summary = tables.read_summary(swept)
    table = tables.read_epochs(swept)
    assert list(summary.columns)[-len(tables.CALIBRATION_SUMMARY):] == list(
        tables.CALIBRATION_SUMMARY)
    for _, row in summary.iterrows():
        chosen = table[(table["loss"] == row["loss"]) & (table["epoch"] == 2)
                       & np.isclose(table["learning_rate"], row["learning_rate"])]
        for c, src in tables.CALIBRATION_SOURCES.items():
            assert row[c] == pytest.approx(np.float32(chosen[src].mean()), rel=1e-6), c
    text = (swept / "report.md").read_text()
    assert "## Calibration" in text and "Per-class test accuracy" in text
    assert (swept / "plots" / "reliability.png").exists()


@pytest.mark.slow  # redraws every plot of a committed folder
def test_an_old_folder_loads_and_reports_as_before(tmp_path):
    old = REPO / "results" / "hazards_digits"  # written before calibration was measured
    copy = tmp_path / "hazards_digits"
    shutil.copytree(old, copy)
    res = analysis.load_results(copy)
    assert "test_nll_mean" not in res.summary.columns
    report.write_report(copy)
    # The same report, but for the test-error figure drawn since: no calibration table.
    text = re.sub(r"### Test error\n.*?(?=### )", "", (copy / "report.md").read_text(),
                  flags=re.S)
    assert text == (old / "report.md").read_text()
    assert not (copy / "plots" / "reliability.png").exists()


def test_a_resume_keeps_final_csv_only_behind_finished_checkpoints(tmp_path):
    from lossjax import sweep

    out = tmp_path / "f"
    out.mkdir()
    groups = [[engine.Member(0, "mse", 0.1, 0, 1, 0, (4,))],
              [engine.Member(1, "mse", 0.1, 0, 1, 0, (8,))]]
    rows = pd.DataFrame({"member": [0, 1], "kind": "class", "index": 0, "count": 5,
                         "confidence": np.float32("nan"), "accuracy": np.float32(0.5)})
    rows.to_csv(out / "final.csv", index=False)

    class Cfg:
        epochs = 3
        eval = type("E", (), {"splits": ("val", "test")})
        search = type("S", (), {"method": "grid"})

    kept = sweep._kept_finals(out, groups, {0: 3, 1: 2}, Cfg, resume=True)
    assert kept["member"].tolist() == [0]  # group 1 trains its last epoch again
    (out / "final.csv").write_text(",".join(tables.FINAL_COLUMNS) + "\n")
    with pytest.raises(Exception, match="final.csv lacks the last epoch of group 0"):
        sweep._kept_finals(out, groups, {0: 3, 1: 2}, Cfg, resume=True)
