"""double_mnist and triple_mnist, built from the real MNIST files where a copy is at hand (a
user's clone has none, and these tests skip): what each image is made of, that train and test
never share an MNIST image, that the build is deterministic and cached, and sweeps at 100 and
1,000 classes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import quiet_sweep, small_config
from data_helpers import REAL, isolate

from lossjax import data

pytestmark = pytest.mark.skipif(not (REAL / "mnist").is_dir(), reason=f"no MNIST copy in {REAL}")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    isolate(tmp_path, monkeypatch)
    monkeypatch.setenv("LOSSJAX_CACHE_DIR", str(tmp_path / "cache"))


def rows_of(images: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """For each image, the index of an identical image in ``pool`` (-1 if none)."""
    index = {p.tobytes(): i for i, p in enumerate(pool)}
    return np.array([index.get(im.tobytes(), -1) for im in images])


def test_double_mnist_is_made_of_mnist_digits_train_from_train_test_from_test():
    mnist = data.load("mnist", data_dir=REAL, val_size=0)
    ds = data.load("double_mnist", data_dir=REAL, val_size=0, per_class=3)
    assert ds.num_classes == 100 and ds.class_names[37] == "37"
    assert ds.x_train.shape == (300, 28, 56) and ds.x_test.shape == (100, 28, 56)
    assert np.bincount(ds.y_train).tolist() == [3] * 100
    for x, y, pool, labels in ((ds.x_train, ds.y_train, mnist.x_train, mnist.y_train),
                               (ds.x_test, ds.y_test, mnist.x_test, mnist.y_test)):
        left, right = rows_of(x[:, :, :28], pool), rows_of(x[:, :, 28:], pool)
        assert (left >= 0).all() and (right >= 0).all()  # train from train, test from test
        assert np.array_equal(labels[left] * 10 + labels[right], y)
    meta = ds.meta
    assert meta["recipe"]["per_class_train"] == 3 and meta["recipe"]["mnist_sha256"]
    assert set(meta["built_sha256"]) == {"x_train", "y_train", "x_test", "y_test"}
    json.dumps(meta)


def test_the_build_is_deterministic_cached_and_rebuilt_when_damaged():
    first = data.load("triple_mnist", data_dir=REAL, per_class=2)
    assert first.meta["cache"]["status"] == "written" and first.num_classes == 1000
    assert first.x_train.shape[1:] == (28, 84)
    again = data.load("triple_mnist", data_dir=REAL, per_class=2)
    assert again.meta["cache"]["status"] == "hit"
    assert np.array_equal(first.x_train, again.x_train)
    assert np.array_equal(first.x_val, again.x_val)
    cached = first.meta["cache"]["path"]
    damaged = np.load(f"{cached}/x_test.npy")
    damaged[0, 0, 0] ^= 1
    np.save(f"{cached}/x_test.npy", damaged)
    with pytest.warns(UserWarning, match="ignoring damaged cache"):
        rebuilt = data.load("triple_mnist", data_dir=REAL, per_class=2)
    assert np.array_equal(rebuilt.x_test, first.x_test)
    other = data.load("triple_mnist", data_dir=REAL, per_class=2, split_seed=1)
    assert not np.array_equal(other.x_test, first.x_test)


def test_subsets_of_double_mnist_are_nested():
    small = data.load("double_mnist", data_dir=REAL, classes=10, per_class=2, val_size=0)
    large = data.load("double_mnist", data_dir=REAL, classes=30, per_class=2, val_size=0)
    assert set(small.class_names) < set(large.class_names)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["double_mnist", "triple_mnist"])
def test_sweep_on_multi_digit_mnist(tmp_path, capsys, name):
    config = small_config(tmp_path, name=name, seeds=[0], losses=["cross_entropy"], epochs=1,
                          batch_size=32,
                          dataset={"name": name, "data_dir": str(REAL), "per_class": 2})
    code, err = quiet_sweep(capsys, config)
    assert code == 0, err
    env = json.loads((tmp_path / "runs" / name / "env.json").read_text())
    assert env["data"]["recipe"]["per_class_train"] == 2
    assert len(env["data"]["class_counts"]["train"]) == {"double_mnist": 100,
                                                        "triple_mnist": 1000}[name]
