"""``stats.summarize`` on small hand-made ``epochs.csv`` tables: which learning rate it chooses
and what it reports there. No training runs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lossjax.folder import write_table
from lossjax.stats import ci95_halfwidth, summarize, tied_rates
from lossjax.tables import EPOCHS_COLUMNS, RATE_CHOICE_COLUMNS

TARGET = 0.9


class Table:
    """Builds an ``epochs.csv`` table one member at a time, numbering the members in order."""

    def __init__(self):
        self.rows: list[dict] = []
        self.members = 0

    def add(self, loss="mse", lr=0.1, seed=0, test=(0.5, 0.8), val=None, diverged_at=None,
            hidden="64", weight_decay=0.0, init_scale=1.0):
        """One member with test accuracy ``test[e - 1]`` at epoch e and validation accuracy
        ``val`` (a number for every epoch, a tuple per epoch; default: test - 0.01). From epoch
        ``diverged_at`` on it has diverged: its accuracies stay frozen at the epoch before and
        its training loss is NaN."""
        vals = val if isinstance(val, tuple) else (val,) * len(test)
        for epoch, acc in enumerate(test, start=1):
            gone = diverged_at is not None and epoch >= diverged_at
            if gone:
                acc = test[diverged_at - 2] if diverged_at > 1 else test[0]
            v = acc - 0.01 if vals[epoch - 1] is None else vals[epoch - 1]
            self.rows.append({
                "member": self.members, "loss": loss, "hidden": hidden, "learning_rate": lr,
                "weight_decay": weight_decay, "init_scale": init_scale, "seed": seed,
                "epoch": epoch, "train_loss": math.nan if gone else 1.0 / epoch,
                "train_acc": acc, "val_acc": v, "val_ce": 0.5, "test_acc": acc, "test_ce": 0.5,
                "wrong_frac": 0.1, "grad_norm": 0.1, "diverged": gone, "wall_time": 0.1 * epoch,
            })
        self.members += 1
        return self

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=EPOCHS_COLUMNS)

    def summary(self) -> pd.DataFrame:
        return summarize(self.frame(), TARGET)


def _row(summary: pd.DataFrame, **key) -> pd.Series:
    mask = np.ones(len(summary), bool)
    for k, v in key.items():
        mask &= summary[k] == v
    assert mask.sum() == 1, (key, summary)
    return summary[mask].iloc[0]


def test_rate_with_best_mean_final_val_acc_with_diverged_members_scored_zero():
    t = Table()
    # lr 1: the best single seed (val 0.95), but seed 1 diverged with frozen val 0.93: its raw
    # mean (0.94) beats lr 0.1 (0.80); scored as 0 it is 0.475 and loses.
    t.add(lr=1.0, seed=0, test=(0.5, 0.96), val=0.95)
    t.add(lr=1.0, seed=1, test=(0.94, 0.94), val=0.93, diverged_at=2)
    t.add(lr=0.1, seed=0, test=(0.5, 0.82), val=0.80)
    t.add(lr=0.1, seed=1, test=(0.5, 0.84), val=0.80)
    # lr 0.01: the best test accuracy, but the rate is chosen on validation accuracy only.
    t.add(lr=0.01, seed=0, test=(0.5, 0.99), val=0.70)
    t.add(lr=0.01, seed=1, test=(0.5, 0.99), val=0.70)
    s = t.summary()
    assert len(s) == 1
    r = s.iloc[0]
    assert r["learning_rate"] == 0.1
    assert r["val_acc_mean"] == pytest.approx(0.80)
    assert r["test_acc_mean"] == pytest.approx(0.83)
    assert r["n_seeds"] == 2
    assert r["diverged_at_lr"] == 0 and r["diverged"] == 1
    assert not r["lr_at_grid_edge"]  # 0.1 lies inside 0.01..1


def test_only_the_final_epoch_counts():
    t = Table()
    t.add(lr=0.1, test=(0.5, 0.95, 0.6), val=(0.5, 0.95, 0.6))  # best early, worse at the end
    t.add(lr=0.3, test=(0.5, 0.6, 0.7), val=(0.5, 0.6, 0.7))
    assert t.summary().iloc[0]["learning_rate"] == 0.3


@pytest.mark.parametrize(("best", "edge"), [(0.01, True), (0.1, False), (1.0, True)])
def test_lr_at_grid_edge(best, edge):
    t = Table()
    for lr in (0.01, 0.1, 1.0):
        t.add(lr=lr, val=0.9 if lr == best else 0.5)
    r = t.summary().iloc[0]
    assert r["learning_rate"] == best and bool(r["lr_at_grid_edge"]) is edge


def test_a_single_rate_is_not_at_an_edge():
    r = Table().add(lr=0.1).add(lr=0.1, seed=1).summary().iloc[0]
    assert r["learning_rate"] == 0.1 and not r["lr_at_grid_edge"]


def test_epochs_to_target_over_the_seeds_that_reached_it():
    t = Table()
    t.add(seed=0, test=(0.5, 0.91, 0.95, 0.95))  # first at or above 0.9 at epoch 2
    t.add(seed=1, test=(0.5, 0.6, 0.9, 0.8))  # exactly the target at epoch 3, then below
    t.add(seed=2, test=(0.5, 0.6, 0.7, 0.8))  # never
    r = t.summary().iloc[0]
    assert r["n_seeds"] == 3
    assert r["reached_target"] == 2
    assert r["epochs_to_target_mean"] == pytest.approx(2.5)


def test_no_seed_reached_the_target():
    r = Table().add(seed=0).add(seed=1).summary().iloc[0]
    assert r["reached_target"] == 0 and math.isnan(r["epochs_to_target_mean"])


def test_ci95_is_of_test_accuracy_at_the_chosen_rate():
    t = Table()
    finals = (0.80, 0.84, 0.83)
    for seed, acc in enumerate(finals):
        t.add(lr=0.1, seed=seed, test=(0.5, acc), val=0.8)
        t.add(lr=1.0, seed=seed, test=(0.5, 0.2 + 0.3 * seed), val=0.5)
    r = t.summary().iloc[0]
    assert r["learning_rate"] == 0.1
    assert r["test_acc_ci95"] == pytest.approx(ci95_halfwidth(finals))
    assert r["test_acc_ci95"] > 0


@pytest.mark.parametrize("n", [2, 3, 5])
def test_ci95_halfwidth_is_the_student_t_interval(n):
    stats = pytest.importorskip("scipy.stats")
    values = np.random.default_rng(n).uniform(0.7, 0.9, n)
    expected = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)
    # The table holds the critical values to 3 decimals.
    assert ci95_halfwidth(values) == pytest.approx(expected, rel=1e-3)


def test_ci95_halfwidth_needs_two_finite_values():
    assert math.isnan(ci95_halfwidth([0.9]))
    assert math.isnan(ci95_halfwidth([0.9, math.nan]))
    assert ci95_halfwidth([0.8, 0.9, math.nan]) == ci95_halfwidth([0.8, 0.9])


def test_a_group_whose_every_member_diverged_has_no_rate_and_no_accuracy():
    t = Table()
    for lr in (0.1, 1.0):
        for seed in (0, 1, 2):
            # Frozen after one epoch at an accuracy the old summary reported (and bolded).
            t.add(loss="mse", lr=lr, seed=seed, test=(0.95, 0.95, 0.95), diverged_at=2)
            t.add(loss="cross_entropy", lr=lr, seed=seed, test=(0.5, 0.8, 0.92))
    s = t.summary()
    gone = _row(s, loss="mse")
    assert math.isnan(gone["learning_rate"])
    for c in ("val_acc_mean", "test_acc_mean", "test_acc_ci95", "epochs_to_target_mean"):
        assert math.isnan(gone[c]), c
    assert gone["reached_target"] == 0
    assert not gone["lr_at_grid_edge"]
    assert gone["diverged"] == 6 and gone["diverged_at_lr"] == 3 and gone["n_seeds"] == 3
    # The other loss of the sweep is summarized as usual.
    ok = _row(s, loss="cross_entropy")
    assert ok["learning_rate"] == 0.1 and ok["test_acc_mean"] == pytest.approx(0.92)
    assert ok["reached_target"] == 3 and ok["diverged"] == 0


def test_all_diverged_row_survives_the_csv_round_trip(tmp_path):
    t = Table()
    for seed in (0, 1):
        t.add(loss="mse", lr=1.0, seed=seed, diverged_at=2)
        t.add(loss="cross_entropy", lr=1.0, seed=seed)
    write_table(tmp_path / "summary.csv", t.summary())
    back = pd.read_csv(tmp_path / "summary.csv")
    assert math.isnan(_row(back, loss="mse")["learning_rate"])
    assert _row(back, loss="cross_entropy")["learning_rate"] == 1.0


def test_partly_diverged_group_keeps_its_rate():
    # One seed of the only rate diverged: the rate is still chosen (the other seed stands).
    t = Table().add(lr=0.3, seed=0).add(lr=0.3, seed=1, diverged_at=2)
    r = t.summary().iloc[0]
    assert r["learning_rate"] == 0.3 and r["diverged_at_lr"] == 1 and r["diverged"] == 1


def test_one_row_per_loss_hidden_weight_decay_and_init_scale():
    t = Table()
    for hidden in ("32", "64-64"):
        for wd in (0.0, 1e-4):
            for init in (0.5, 1.0):
                for lr in (0.1, 1.0):
                    t.add(hidden=hidden, weight_decay=wd, init_scale=init, lr=lr,
                          val=0.9 if (lr == 1.0) == (wd > 0) else 0.5)
    s = t.summary()
    assert len(s) == 8
    assert set(s.loc[s["weight_decay"] > 0, "learning_rate"]) == {1.0}
    assert set(s.loc[s["weight_decay"] == 0, "learning_rate"]) == {0.1}
    assert (s["n_seeds"] == 1).all()


# --------------------------------------------------------------------------------------------
# How clearly the rate was chosen: runner-up, paired validation gap, ties


def _gap_table(vals: dict, seeds=(0, 1, 2), diverged=()) -> Table:
    """One group: at each rate, final validation accuracy vals[rate][i] for seeds[i]; members
    named in ``diverged`` as (rate, seed) diverge at the last epoch, their accuracy frozen."""
    t = Table()
    for lr, accs in vals.items():
        for seed, v in zip(seeds, accs, strict=True):
            gone = (lr, seed) in diverged
            t.add(lr=lr, seed=seed, test=(v, v), val=v, diverged_at=2 if gone else None)
    return t


def test_new_columns_follow_lr_at_grid_edge_and_the_old_ones_keep_their_order():
    s = Table().add(lr=0.1).add(lr=0.3).summary()
    assert list(s.columns) == [
        "loss", "hidden", "weight_decay", "init_scale", "learning_rate", "lr_at_grid_edge",
        "runner_up_lr", "val_gap_mean", "val_gap_ci95", "rate_tied", "rate_choice", "tied_lrs",
        "n_seeds", "val_acc_mean", "test_acc_mean", "test_acc_ci95", "epochs_to_target_mean",
        "reached_target", "diverged_at_lr", "diverged",
        "test_nll_mean", "test_brier_mean", "test_ece_mean", "temperature_mean",
        "test_nll_ts_mean", "test_brier_ts_mean", "test_ece_ts_mean"]


def test_a_clear_winner_is_decided():
    # Gaps 0.10, 0.09, 0.11 over the runner-up: interval 0.10 ± 0.025, clear of 0. The rate
    # 0.01 is far behind.
    t = _gap_table({0.1: (0.90, 0.91, 0.92), 1.0: (0.80, 0.82, 0.81), 0.01: (0.5, 0.5, 0.5)})
    r = t.summary().iloc[0]
    assert r["learning_rate"] == 0.1 and r["runner_up_lr"] == 1.0
    gaps = [0.10, 0.09, 0.11]
    assert r["val_gap_mean"] == pytest.approx(0.10, abs=1e-6)
    assert r["val_gap_ci95"] == pytest.approx(ci95_halfwidth(gaps), rel=1e-4)
    assert r["val_gap_ci95"] == pytest.approx(4.303 * 0.01 / math.sqrt(3), rel=1e-3)
    assert r["rate_choice"] == "decided" and not r["rate_tied"] and r["tied_lrs"] == ""


def test_overlapping_seeds_are_a_tie_listing_every_tied_rate():
    # Means 0.89 (0.1) and 0.8867 (0.3): per seed +0.02, -0.04, +0.03, an interval around 0.
    # 0.03 loses by 0.1 on every seed; 3.0 is as noisy against 0.1 as 0.3 is.
    t = _gap_table({0.1: (0.90, 0.85, 0.92), 0.3: (0.88, 0.89, 0.89),
                    0.03: (0.80, 0.75, 0.82), 3.0: (0.95, 0.70, 0.80)})
    r = t.summary().iloc[0]
    assert r["learning_rate"] == 0.1 and r["runner_up_lr"] == 0.3
    gaps = [0.02, -0.04, 0.03]
    assert r["val_gap_mean"] == pytest.approx(np.mean(gaps), abs=1e-6)
    assert r["val_gap_ci95"] == pytest.approx(ci95_halfwidth(gaps), rel=1e-4)
    assert abs(r["val_gap_mean"]) <= r["val_gap_ci95"]
    assert r["rate_choice"] == "tied" and r["rate_tied"]
    assert r["tied_lrs"] == "0.3;3.0"  # ascending, the chosen rate and 0.03 left out
    assert tied_rates(r["tied_lrs"]) == (0.3, 3.0)


def test_a_noisy_rate_tied_with_the_chosen_one_makes_a_tie_even_past_a_clear_runner_up():
    # The runner-up 1.0 trails by 0.10 on every seed (decided), but 3.0 beats 0.1 on two seeds
    # and collapses on the third: nothing tells 0.1 from 3.0, so the choice is a tie.
    t = _gap_table({0.1: (0.90, 0.91, 0.92), 1.0: (0.80, 0.81, 0.82), 3.0: (0.95, 0.96, 0.30)})
    r = t.summary().iloc[0]
    assert r["learning_rate"] == 0.1 and r["runner_up_lr"] == 1.0
    assert r["val_gap_mean"] > r["val_gap_ci95"]  # the runner-up alone would be decided
    assert r["rate_choice"] == "tied" and r["rate_tied"] and r["tied_lrs"] == "3.0"


def test_one_paired_seed_decides_nothing():
    r = _gap_table({0.1: (0.9,), 0.3: (0.5,)}, seeds=(0,)).summary().iloc[0]
    assert r["learning_rate"] == 0.1 and r["runner_up_lr"] == 0.3
    assert r["val_gap_mean"] == pytest.approx(0.4) and math.isnan(r["val_gap_ci95"])
    assert r["rate_choice"] == "one seed" and r["rate_tied"] and r["tied_lrs"] == "0.3"


def test_only_seeds_present_at_both_rates_pair():
    # Seed 1 alone is at both rates: one pair, whatever seeds 0 and 2 say.
    t = Table()
    t.add(lr=0.1, seed=0, val=0.9).add(lr=0.1, seed=1, val=0.9)
    t.add(lr=0.3, seed=1, val=0.5).add(lr=0.3, seed=2, val=0.5)
    r = t.summary().iloc[0]
    assert r["rate_choice"] == "one seed" and r["val_gap_mean"] == pytest.approx(0.4)


def test_a_single_rate_has_nothing_to_compare():
    r = _gap_table({0.1: (0.9, 0.8, 0.7)}).summary().iloc[0]
    assert r["rate_choice"] == "one rate" and not r["rate_tied"] and r["tied_lrs"] == ""
    assert math.isnan(r["runner_up_lr"]) and math.isnan(r["val_gap_mean"])


def test_every_member_diverged_chooses_nothing():
    t = _gap_table({0.1: (0.9, 0.9, 0.9), 1.0: (0.9, 0.9, 0.9)},
                   diverged=[(lr, s) for lr in (0.1, 1.0) for s in (0, 1, 2)])
    r = t.summary().iloc[0]
    assert math.isnan(r["learning_rate"])
    assert r["rate_choice"] == "none" and not r["rate_tied"] and r["tied_lrs"] == ""
    assert math.isnan(r["runner_up_lr"]) and math.isnan(r["val_gap_ci95"])


def test_a_diverged_member_scores_zero_in_the_gap():
    # Seed 2 at lr 1 diverged with a frozen 0.95: scored 0, its gap is 0.9, not -0.05.
    t = _gap_table({0.1: (0.9, 0.9, 0.9), 1.0: (0.95, 0.95, 0.95)}, diverged=[(1.0, 2)])
    r = t.summary().iloc[0]
    assert r["learning_rate"] == 0.1 and r["runner_up_lr"] == 1.0
    gaps = [-0.05, -0.05, 0.9]
    assert r["val_gap_mean"] == pytest.approx(np.mean(gaps), abs=1e-6)
    assert r["val_gap_ci95"] == pytest.approx(ci95_halfwidth(gaps), rel=1e-4)
    assert r["rate_choice"] == "tied"


def test_test_data_play_no_part_in_the_rate_choice():
    def table(shift):
        t = Table()
        for lr, vals in {0.1: (0.90, 0.85, 0.92), 0.3: (0.88, 0.89, 0.89)}.items():
            for seed, v in enumerate(vals):
                t.add(lr=lr, seed=seed, val=v, test=(0.5, 0.5 + shift * seed * lr))
        return t.summary()

    cols = list(RATE_CHOICE_COLUMNS)
    pd.testing.assert_frame_equal(table(0.0)[cols], table(1.0)[cols])


def test_rate_choice_columns_survive_the_csv_round_trip(tmp_path):
    t = _gap_table({0.1: (0.90, 0.91, 0.92), 1.0: (0.80, 0.82, 0.81)})
    write_table(tmp_path / "summary.csv", t.summary())
    back = pd.read_csv(tmp_path / "summary.csv", dtype={"tied_lrs": str})
    r = back.iloc[0]
    assert r["rate_choice"] == "decided" and not r["rate_tied"] and pd.isna(r["tied_lrs"])
    assert tied_rates(r["tied_lrs"]) == ()  # pandas reads the empty cell as NaN
