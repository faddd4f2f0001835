"""``results.summarize`` on small hand-made ``epochs.csv`` tables: which learning rate it chooses
and what it reports there. No training runs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lossjax import results

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
        return pd.DataFrame(self.rows, columns=results.COLUMNS)

    def summary(self) -> pd.DataFrame:
        return results.summarize(self.frame(), TARGET)


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
    assert r["test_acc_ci95"] == pytest.approx(results.ci95_halfwidth(finals))
    assert r["test_acc_ci95"] > 0


@pytest.mark.parametrize("n", [2, 3, 5])
def test_ci95_halfwidth_is_the_student_t_interval(n):
    stats = pytest.importorskip("scipy.stats")
    values = np.random.default_rng(n).uniform(0.7, 0.9, n)
    expected = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)
    # The table holds the critical values to 3 decimals.
    assert results.ci95_halfwidth(values) == pytest.approx(expected, rel=1e-3)


def test_ci95_halfwidth_needs_two_finite_values():
    assert math.isnan(results.ci95_halfwidth([0.9]))
    assert math.isnan(results.ci95_halfwidth([0.9, math.nan]))
    assert results.ci95_halfwidth([0.8, 0.9, math.nan]) == results.ci95_halfwidth([0.8, 0.9])


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
    results.write_table(tmp_path / "summary.csv", t.summary())
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
