"""``lossjax causal`` (causal_effects, within_loss, causal_report): paired effects of
gradient-edit interventions, within-loss rank correlations, the files and the figure. The
folders are synthetic finished sweeps (the layout of conftest's ``make_results``) whose
per-seed test-accuracy curves are set by hand, so every expected number follows from the curves
below by arithmetic done here; no training runs."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import all_diverge, make_results, resummarize
from scipy import stats

from lossjax import causal_curves, causal_effects, causal_report, cli, within_loss

COMMITTED = Path(__file__).resolve().parents[1] / "results" / "mnist_causal"

SEEDS = (0, 1, 2, 3, 4)
EPOCHS = 5
EVALUATED = (2, 4, 5)  # as with eval.every = 2: test accuracy is NaN at epochs 1 and 3
# Test accuracy at the evaluated epochs, per seed, at each side's chosen rate: the base `mse`
# at lr 0.1 and the variant `mse-no_push_up` at lr 1.0 (target 0.9).
BASE = {0: [0.80, 0.88, 0.91], 1: [0.70, 0.85, 0.89], 2: [0.90, 0.92, 0.93],
        3: [0.82, 0.90, 0.95], 4: [0.60, 0.70, 0.80]}
VARIANT = {0: [0.85, 0.91, 0.93], 1: [0.78, 0.90, 0.92], 2: [0.91, 0.93, 0.94],
           3: [0.80, 0.88, 0.96], 4: [0.50, 0.50, 0.50]}
DIVERGED_SEED = 4  # the variant's member at its chosen rate diverges at epoch 3
PAIRED = (0, 1, 2, 3)


def other_curve(loss: str, seed: int) -> list[float]:
    """Curves at the rates not chosen: the mse ones spread so that their speeds order the
    members in a known way against their wrong-direction fractions."""
    if loss == "mse":
        return [0.5 + 0.03 * ((3 * seed) % 5) + 0.01 * k for k in range(3)]
    return [0.4 + 0.02 * seed] * 3


def wrong_frac(loss: str, lr: float, seed: int) -> float:
    # The variant zeroes every push up; the base's fraction varies from member to member.
    return 0.0 if loss != "mse" else 0.05 + 0.01 * seed + (0.1 if lr == 1.0 else 0.0)


def grad_norm(loss: str, lr: float, seed: int) -> float:
    return (0.5 if loss == "mse" else 0.3) + 0.01 * seed


def curve(loss: str, lr: float, seed: int) -> list[float]:
    if (loss, lr) == ("mse", 0.1):
        return BASE[seed]
    if (loss, lr) == ("mse-no_push_up", 1.0):
        return VARIANT[seed]
    return other_curve(loss, seed)


def make_paired(path: Path) -> Path:
    """A finished sweep of `mse` and `mse-no_push_up` at lr 0.1 and 1.0, seeds 0-4, whose
    test-accuracy curves, wrong-direction fractions, gradient norms and chosen rates are the
    ones above."""
    variant = "mse-no_push_up"
    make_results(path, losses=("mse", variant), lrs=(0.1, 1.0), seeds=SEEDS, epochs=EPOCHS,
                 diverge=((variant, 1.0, DIVERGED_SEED, 3),))
    ep = pd.read_csv(path / "epochs.csv", dtype={"hidden": str})
    for i, r in ep.iterrows():
        loss, lr, seed, epoch = r["loss"], r["learning_rate"], r["seed"], r["epoch"]
        acc = dict(zip(EVALUATED, curve(loss, lr, seed), strict=True)).get(epoch, math.nan)
        chosen = (loss, lr) in (("mse", 0.1), (variant, 1.0))
        ep.loc[i, ["test_acc", "val_acc", "wrong_frac", "grad_norm"]] = [
            acc, 0.9 if chosen else 0.5, wrong_frac(loss, lr, seed), grad_norm(loss, lr, seed)]
    ep.to_csv(path / "epochs.csv", index=False)
    summary = resummarize(path)
    assert dict(zip(summary["loss"], summary["learning_rate"], strict=True)) == {
        "mse": 0.1, variant: 1.0}
    return path


@pytest.fixture(scope="module")
def paired_dir(tmp_path_factory):
    return make_paired(tmp_path_factory.mktemp("causal") / "mnist_causal")


@pytest.fixture(scope="module")
def analysed(paired_dir):
    return causal_report.analyse(paired_dir, n_resamples=200)


def t_interval(d):
    d = np.asarray(d, float)
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return d.mean(), half


def first_at(values, target=0.9):
    return next((e for e, a in zip(EVALUATED, values, strict=True) if a >= target), None)


# --------------------------------------------------------------------------------------------
# Names and predictions


def test_names_parse_into_base_edit_and_prediction():
    p, predict = causal_effects.parse_variant, causal_effects.prediction
    assert p("mse") is None and p("my_loss-no_push_up") is None and p("mse-") is None
    v = p("softmax_mse-push_up_50-norm_matched")
    assert (v.base, v.edit, v.balanced, v.norm_matched, predict(v)) == (
        "softmax_mse", "push_up_50", False, True, "< 0")
    assert predict(p("mse-no_push_up")) == "> 0"
    assert predict(p("cross_entropy-no_push_up")) == "= 0"  # nothing to zero: a no-op
    assert predict(p("cross_entropy-push_up_0")) == "= 0"
    assert predict(p("exp_mse-true_pull")) is None
    v = p("softmax_mse-no_push_up-balanced-norm_matched")
    assert (v.base, v.edit, v.balanced, v.norm_matched, predict(v)) == (
        "softmax_mse", "no_push_up", True, True, "> 0")
    assert str(v) == "softmax_mse-no_push_up-balanced-norm_matched"
    assert predict(p("cross_entropy-push_up_11-balanced")) == "< 0"


# --------------------------------------------------------------------------------------------
# Paired effects


def test_paired_effects_are_the_per_seed_differences(analysed):
    [c] = analysed["comparisons"]
    assert (c["base"], c["variant"], c["edit"], c["prediction"]) == (
        "mse", "mse-no_push_up", "no_push_up", "> 0")
    assert (c["base_learning_rate"], c["variant_learning_rate"]) == (0.1, 1.0)
    assert (c["n_pairs"], c["diverged_pairs"], c["unpaired_seeds"]) == (4, 1, 0)

    speed = [np.mean(VARIANT[s]) - np.mean(BASE[s]) for s in PAIRED]
    mean, half = t_interval(speed)
    assert c["speed"]["n"] == 4
    assert c["speed"]["mean"] == pytest.approx(mean)
    assert c["speed"]["ci95"] == pytest.approx(half)
    assert (c["speed"]["low"], c["speed"]["high"]) == pytest.approx((mean - half, mean + half))
    assert [p["speed"] for p in c["per_seed"]] == pytest.approx(speed)

    final = [VARIANT[s][-1] - BASE[s][-1] for s in PAIRED]
    assert (c["final_test_acc"]["mean"], c["final_test_acc"]["ci95"]) == pytest.approx(
        t_interval(final))


def test_per_epoch_effects_are_the_paired_differences(analysed):
    [c] = analysed["comparisons"]
    per = c["per_epoch"]
    assert per["epoch"] == list(range(1, EPOCHS + 1))
    acc = per["test_acc"]
    for k, e in enumerate(EVALUATED):
        mean, half = t_interval([VARIANT[s][k] - BASE[s][k] for s in PAIRED])
        i = per["epoch"].index(e)
        assert acc["mean"][i] == pytest.approx(mean) and acc["ci95"][i] == pytest.approx(half)
        assert acc["n"][i] == len(PAIRED)  # the diverged pair is left out, as in the effects
    for e in set(per["epoch"]) - set(EVALUATED):  # not evaluated: no difference to take
        i = per["epoch"].index(e)
        assert acc["n"][i] == 0 and math.isnan(acc["mean"][i])
    # The curve's last point is the final effect: the same pairs, the same differences.
    assert acc["mean"][-1] == c["final_test_acc"]["mean"]
    assert acc["ci95"][-1] == c["final_test_acc"]["ci95"]
    assert per["val_acc"]["mean"] == pytest.approx([0.0] * EPOCHS)  # both sides at 0.9


@pytest.fixture(scope="module")
def committed():
    """The analysis of the committed results/mnist_causal (read only; nothing is written)."""
    return causal_report.analyse(COMMITTED, n_resamples=200)


def test_paired_figure_of_the_committed_study_ends_at_the_final_effects(committed):
    comps = committed["comparisons"]
    fig = causal_curves.paired_figure(committed, causal_report.comparison_label)
    [ax] = fig.axes
    assert ax.get_yscale() == "symlog" and ax.get_ylim() == (-100.0, 100.0)
    assert any(list(line.get_ydata()) == [0, 0] for line in ax.lines)  # the zero line
    curves = [line for line in ax.lines if not line.get_label().startswith("_")]
    paired = [c for c in comps if c["n_pairs"]]
    assert len(curves) == len(paired) == len(comps) - 1  # cross_entropy-push_up_50: no pairs
    for c, line in zip(paired, curves, strict=True):
        final = c["final_test_acc"]
        assert line.get_ydata()[-1] == pytest.approx(100 * final["mean"], abs=1e-9)
        assert line.get_xdata()[-1] == 20  # the study's last epoch
        assert f": last {100 * final['mean']:+.2f} ± {100 * final['ci95']:.2f} (n 3)" in (
            line.get_label())
    # mse-no_push_up, as causal.md's table has it: +0.16 ± 0.22 points at the last epoch.
    label = next(line.get_label() for line in curves if "mse-no_push_up (" in line.get_label())
    assert label.startswith("mse → mse-no_push_up (lr 0.3 → 1): last +0.16 ± 0.22")
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "cross_entropy → cross_entropy-push_up_50: no pairs" in legend


def test_epochs_to_target_counts_censored_pairs(analysed):
    [c] = analysed["comparisons"]
    e = c["epochs_to_target"]
    # Seed 1's base never reaches 0.9: censored. The others: 4 → 5 (−1), 2 → 2, 4 → 5 (+1).
    reached = [s for s in PAIRED if first_at(BASE[s]) and first_at(VARIANT[s])]
    assert reached == [0, 2, 3]
    diffs = [first_at(VARIANT[s]) - first_at(BASE[s]) for s in reached]
    assert diffs == [-1, 0, 1]
    assert (e["n"], e["censored"], e["base_missed"], e["variant_missed"]) == (3, 1, 1, 0)
    assert (e["mean"], e["ci95"]) == pytest.approx(t_interval(diffs))
    assert math.isnan(c["per_seed"][1]["epochs_to_target"])


def test_gradient_profiles_average_the_paired_members(analysed):
    [c] = analysed["comparisons"]
    assert c["base_profile"]["wrong_frac"] == pytest.approx(
        np.mean([wrong_frac("mse", 0.1, s) for s in PAIRED]))
    assert c["variant_profile"]["wrong_frac"] == 0.0
    assert c["variant_profile"]["grad_norm"] == pytest.approx(
        np.mean([grad_norm("mse-no_push_up", 1.0, s) for s in PAIRED]))
    assert c["base_profile"]["speed"] == pytest.approx(np.mean([np.mean(BASE[s])
                                                                for s in PAIRED]))


def test_speed_averages_only_epochs_both_members_have():
    def rows(member, accs):
        return pd.DataFrame({"member": member, "seed": 0, "epoch": [1, 2, 3],
                             "test_acc": accs, "diverged": False})

    # The variant's epoch-2 accuracy is missing: both sides average epochs 1 and 3 only.
    pairs = causal_effects.pair_members(rows(0, [0.5, 0.6, 0.95]),
                                        rows(1, [0.7, math.nan, 0.9]), 0.9)
    r = pairs.iloc[0]
    assert (r["base_speed"], r["variant_speed"]) == pytest.approx((0.725, 0.8))
    assert (r["base_reach"], r["variant_reach"]) == (3, 3)
    # A seed on one side only is unpaired, and counted.
    pairs = causal_effects.pair_members(rows(0, [0.5, 0.6, 0.7]), rows(1, [0.5, 0.6, 0.7]).assign(
        seed=1), 0.9)
    assert list(pairs["status"]) == ["unpaired", "unpaired"]
    assert causal_effects.paired_effects(pairs)["unpaired_seeds"] == 2


def test_verdict_reads_the_interval_against_the_prediction():
    def e(lo, hi, n=4):
        return {"low": lo, "high": hi, "n": n}

    verdict = causal_effects.verdict
    assert verdict(e(0.01, 0.03), "> 0").startswith("CI excludes 0: the variant learns "
                                                    "faster (> 0), as the seed claim")
    assert "against the seed claim's prediction (< 0)" in verdict(e(0.01, 0.03), "< 0")
    assert causal_effects.verdict(e(-0.01, 0.03), "> 0").startswith("CI includes 0")
    assert "no interval" in causal_effects.verdict(e(math.nan, math.nan, 1), "> 0")


# --------------------------------------------------------------------------------------------
# Within-loss evidence


def test_within_loss_spearman_per_loss(analysed):
    w = analysed["within_loss"]
    groups = {g["loss"]: g for g in w["groups"]}
    # mse: every member (2 rates × 5 seeds), none diverged.
    members = [(wrong_frac("mse", lr, s), np.mean(curve("mse", lr, s)))
               for lr in (0.1, 1.0) for s in SEEDS]
    x, y = zip(*members, strict=True)
    assert groups["mse"]["n"] == 10
    assert groups["mse"]["spearman"] == pytest.approx(stats.spearmanr(x, y).statistic)
    # The variant never pushes up: no ranks, no correlation, and the diverged member is out.
    v = groups["mse-no_push_up"]
    assert v["n"] == 9 and math.isnan(v["spearman"]) and "constant" in v["note"]
    assert w["diverged_members_excluded"] == 1
    # With one loss contributing, its scaled ranks give its own ρ back.
    assert w["pooled_within_loss"]["groups"] == 1
    assert w["pooled_within_loss"]["spearman"] == pytest.approx(groups["mse"]["spearman"])


def test_pooled_within_loss_removes_the_confounding_by_loss():
    # Within each loss more pushing goes with faster learning (ρ = +1), but the loss that
    # pushes more is slower overall: the pooled cross-loss ρ is negative (Simpson's paradox).
    a = pd.DataFrame({"loss": "mse", "wrong_frac": [0.1, 0.2, 0.3, 0.4, 0.5],
                      "speed": [0.80, 0.81, 0.82, 0.83, 0.84]})
    b = pd.DataFrame({"loss": "softmax_mse", "wrong_frac": [0.6, 0.7, 0.8, 0.9],
                      "speed": [0.50, 0.51, 0.52, 0.53]})
    members = pd.concat([a, b]).assign(hidden="64", diverged=False)
    w = within_loss.within_loss(members, n_resamples=200)
    assert [g["spearman"] for g in w["groups"]] == pytest.approx([1.0, 1.0])
    assert w["pooled_within_loss"]["spearman"] == pytest.approx(1.0)
    assert w["pooled_within_loss"]["ci95"] == pytest.approx([1.0, 1.0])
    assert w["pooled_within_loss"]["n"] == 9
    cross = w["pooled_across_losses_confounded"]
    assert cross["spearman"] == pytest.approx(stats.spearmanr(
        members["wrong_frac"], members["speed"]).statistic) and cross["spearman"] < 0


def test_batched_rank_correlation_is_scipys_spearman():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 4, (6, 9)).astype(float)  # ties on purpose
    y = rng.random((6, 9))
    expect = [stats.spearmanr(a, b).statistic for a, b in zip(x, y, strict=True)]
    assert within_loss._rank_corr(x, y) == pytest.approx(expect)


def test_bootstrap_is_reproducible_and_holds_the_estimate():
    rng = np.random.default_rng(1)
    xs = [rng.random(8), rng.random(6)]
    ys = [x + 0.3 * rng.standard_normal(len(x)) for x in xs]
    lo, hi = within_loss.stratified_bootstrap(xs, ys, n_resamples=300)
    assert -1 <= lo <= float(within_loss.pooled_within(xs, ys)) <= hi <= 1
    assert within_loss.stratified_bootstrap(xs, ys, n_resamples=300) == (lo, hi)


# --------------------------------------------------------------------------------------------
# Command line: files, figure, refusal


def _strict_json(path):
    def refuse(name):
        raise AssertionError(f"{path} holds {name}, which JSON has not")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_main_writes_json_md_and_one_figure(tmp_path, capsys):
    first = make_paired(tmp_path / "mnist_causal")
    second = make_results(tmp_path / "fashion_causal", losses=(
        "cross_entropy", "cross_entropy-push_up_50", "cross_entropy-push_up_50-norm_matched"),
        diverge=())
    out = tmp_path / "figures"
    assert cli.main(["causal", str(first), str(second), "--out", str(out)]) == 0
    for folder in (first, second):
        data = _strict_json(folder / "causal.json")
        assert {"folder", "description", "target_accuracy", "comparisons", "within_loss",
                "bootstrap"} <= set(data)
        md = (folder / "causal.md").read_text()
        assert "| comparison |" in md and "confounded by loss" in md
    md = (first / "causal.md").read_text()
    assert "`mse → mse-no_push_up`" in md and "1 of 4" in md and "1 diverged" in md
    assert "predicted: > 0" in md
    assert len(_strict_json(second / "causal.json")["comparisons"]) == 2
    assert "predicted: < 0" in (second / "causal.md").read_text()
    for folder in (first, second):  # each folder's paired difference per epoch, linked
        assert (folder / "paired_difference.png").stat().st_size > 0
        assert ET.parse(folder / "paired_difference.svg").getroot().tag.endswith("svg")
        assert "](paired_difference.png)" in (folder / "causal.md").read_text()
        assert {"paired_difference.png", "paired_difference.svg"} <= set(
            _strict_json(folder / "status.json")["written"])
    assert (out / "causal_effects.png").stat().st_size > 0
    assert ET.parse(out / "causal_effects.svg").getroot().tag.endswith("svg")
    assert "causal_effects.png" in capsys.readouterr().out
    rows = [r for r in (out / "causal_effects.md").read_text().splitlines() if r.startswith("| `")]
    assert len(rows) == 1 + 2  # every comparison of both folders
    assert rows[0].startswith("| `mnist_causal` | `mse-no_push_up` | +")


def test_python_api_writes_what_the_command_writes(tmp_path):
    import lossjax

    folder = make_paired(tmp_path / "mnist_causal")
    for _ in range(2):  # the name stays the function once the analysis modules are imported
        [out] = lossjax.causal([folder], tmp_path / "figures")
    assert out["folder"] == str(folder) and out["comparisons"][0]["variant"] == "mse-no_push_up"
    assert _strict_json(folder / "causal.json")["comparisons"][0]["n_pairs"] == len(PAIRED)
    assert (tmp_path / "figures" / "causal_effects.md").exists()


def test_figure_has_a_panel_per_folder_and_a_row_per_comparison(analysed):
    two = [analysed, {**analysed, "folder": "other"}]
    fig = causal_report.effects_figure(two)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2
    for ax in axes:
        assert [t.get_text() for t in ax.get_yticklabels()] == ["mse → mse-no_push_up (n=4)"]
        texts = [t.get_text() for t in ax.texts]
        effect = 100 * analysed["comparisons"][0]["speed"]["mean"]
        assert texts == [f"{effect:+.2g}", "seed predicts > 0"]
        # The point sits at the mean effect, in accuracy points.
        point = [line for line in ax.lines if line.get_marker() == "o"][0]
        assert point.get_xdata()[0] == pytest.approx(100 * analysed["comparisons"][0][
            "speed"]["mean"])


def test_folder_without_variants_is_refused_with_one_line(tmp_path, capsys):
    plain = make_results(tmp_path / "plain")  # cross_entropy and mse only
    good = make_paired(tmp_path / "good")
    out = tmp_path / "figures"
    before = sorted(p.name for p in good.iterdir())
    assert cli.main(["causal", str(good), str(plain), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lossjax: error: ")
    assert "no loss variant beside its base" in err[0] and "cross_entropy, mse" in err[0]
    assert sorted(p.name for p in good.iterdir()) == before  # nothing written anywhere
    assert not out.exists() and not (plain / "causal.json").exists()


def test_variant_whose_every_member_diverged_is_reported_without_pairs(tmp_path):
    d = make_results(tmp_path / "gone", losses=("mse", "mse-no_push_up"),
                     diverge=all_diverge(["mse-no_push_up"]))
    resummarize(d)
    [c] = causal_report.analyse(d, n_resamples=50)["comparisons"]
    assert c["n_pairs"] == 0 and c["speed"]["n"] == 0
    assert c["note"] == "every member of the variant diverged at every rate"
    assert c["verdict"] == "no pair to compare"
    fig = causal_report.effects_figure([causal_report.analyse(d, n_resamples=50)])
    assert [t.get_text() for t in fig.axes[0].texts] == ["no pairs", "seed predicts > 0"]


def test_protocol_flags_grid_edges_and_losses_still_improving(analysed, tmp_path):
    rows = {r["loss"]: r for r in analysed["protocol"]}
    assert rows["mse"]["lr_at_grid_edge"]  # 0.1 of (0.1, 1.0)
    assert rows["mse"]["late_val_gain"] == 0 and not rows["mse"]["still_improving"]
    # The same folder with validation accuracy rising by a point an epoch at the chosen rate.
    d = make_paired(tmp_path / "rising")
    ep = pd.read_csv(d / "epochs.csv", dtype={"hidden": str})
    chosen = (ep["loss"] == "mse") & (ep["learning_rate"] == 0.1)
    ep.loc[chosen, "val_acc"] = 0.8 + 0.01 * ep.loc[chosen, "epoch"]
    ep.to_csv(d / "epochs.csv", index=False)
    resummarize(d)
    rows = {r["loss"]: r for r in causal_report.analyse(d, n_resamples=50)["protocol"]}
    assert rows["mse"]["late_val_gain"] == pytest.approx(0.03)
    assert rows["mse"]["still_improving"]
    assert "(still improving)" in causal_report.markdown(causal_report.analyse(d, n_resamples=50))



def test_protocol_rows_name_their_optimizer_and_the_table_shows_it_when_swept(analysed):
    assert {r["optimizer"] for r in analysed["protocol"]} == {"momentum"}
    md = causal_report.markdown(analysed)
    assert "| loss | hidden | chosen lr |" in md  # one optimizer: no column for it
    two = {**analysed, "protocol": analysed["protocol"] + [
        {**r, "optimizer": "adam"} for r in analysed["protocol"]]}
    md = causal_report.markdown(two)
    assert "| loss | optimizer | hidden | chosen lr |" in md
    assert "| `mse` | adam | 64-64 |" in md and "| `mse` | momentum | 64-64 |" in md

# --------------------------------------------------------------------------------------------
# Tied rate choices


def test_a_tied_side_is_also_compared_at_each_tied_rate(analysed):
    [c] = analysed["comparisons"]
    # The base's 0.1 beats its 1.0 by 0.4 on every seed: decided. The variant's 1.0 scores
    # 0.9 on four seeds and 0 on the diverged one, against 0.5 at 0.1: gaps 0.4 × 4 and -0.5,
    # an interval that includes 0: tied with 0.1.
    assert (c["base_rate_choice"], c["base_tied_lrs"]) == ("decided", [])
    assert (c["variant_rate_choice"], c["variant_tied_lrs"]) == ("tied", [0.1])
    head, moved = c["tied_rate_effects"]
    assert head["headline"] and head["moved"] is None
    assert (head["base_learning_rate"], head["variant_learning_rate"]) == (0.1, 1.0)
    assert head["speed"] == c["speed"]
    assert not moved["headline"] and moved["moved"] == "variant"
    assert (moved["base_learning_rate"], moved["variant_learning_rate"]) == (0.1, 0.1)
    # The variant at 0.1 follows other_curve on every seed (none diverged there).
    speed = [np.mean(other_curve("mse-no_push_up", s)) - np.mean(BASE[s]) for s in SEEDS]
    mean, half = t_interval(speed)
    assert moved["n_pairs"] == 5 and moved["diverged_pairs"] == 0
    assert (moved["speed"]["mean"], moved["speed"]["ci95"]) == pytest.approx((mean, half))
    assert moved["speed_direction"] == "< 0" and head["speed_direction"] == "includes 0"
    assert c["robust_to_rate_choice"] is False


def test_tied_rate_rows_in_causal_md_and_the_effects_table(analysed):
    md = causal_report.markdown(analysed)
    assert "## Tied rate choices" in md and "0.1 → 1 ‡" in md
    rows = [r for r in md.splitlines() if r.startswith("| `mse → mse-no_push_up` | ")]
    assert any("| **headline** | 0.1 → 1 |" in r for r in rows)
    assert any("| variant at tied rate | 0.1 → 0.1 |" in r and "| < 0 |" in r for r in rows)
    assert "In 0 of 1 the speed effect reads the same" in md
    assert "| `mse-no_push_up` | 64-64 | 1 (tie: 0.1) |" in md  # the protocol table
    table = causal_report.effects_table([analysed])
    assert table.splitlines()[2].endswith("| differs at 1 of 1 rate |")


def test_no_tied_choice_no_extra_rows(tmp_path):
    d = make_paired(tmp_path / "decided")
    ep = pd.read_csv(d / "epochs.csv", dtype={"hidden": str})
    # The variant's diverged member now sits at 0.1: 1.0 wins on every seed, by 0.4.
    ep.loc[(ep["loss"] == "mse-no_push_up") & (ep["learning_rate"] == 1.0), "diverged"] = False
    ep.to_csv(d / "epochs.csv", index=False)
    assert list(resummarize(d)["rate_choice"]) == ["decided", "decided"]
    out = causal_report.analyse(d, n_resamples=50)
    [c] = out["comparisons"]
    assert c["tied_rate_effects"] == [] and c["robust_to_rate_choice"] is None
    assert "Every rate choice here is decided" in causal_report.markdown(out)
    assert causal_report.effects_table([out]).splitlines()[2].endswith("| – |")
