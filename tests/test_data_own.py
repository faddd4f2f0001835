"""A user's own arrays (``dataset.name: arrays``), class subsets and ``per_class`` on any
dataset, and sweeps over them: the data they load, the record they leave, and every bad input
refused in one line with exit 2 and no results folder."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import tarfile

import numpy as np
import pandas as pd
import pytest
from conftest import one_line, quiet_sweep, small_config
from data_helpers import isolate, run_cli

from lossjax import data
from lossjax.data import cifar100, registry
from lossjax.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    isolate(tmp_path, monkeypatch)


def own(k=4, n_train=80, n_test=20, shape=(6, 5), dtype=np.uint8, seed=0, **extra):
    """Arrays of ``k`` classes whose class shows in the features, so a model can learn it."""
    rng = np.random.default_rng(seed)

    def part(n):
        y = np.arange(n) % k
        x = rng.normal(size=(n, *shape)) + y.reshape(-1, *[1] * len(shape))
        if dtype == np.uint8:
            x = np.clip(x * 40 + 60, 0, 255)
        return x.astype(dtype), y.astype(np.int64)

    (x_train, y_train), (x_test, y_test) = part(n_train), part(n_test)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test, **extra}


def save(tmp_path, arrays, name="mine.npz"):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


# --------------------------------------------------------------------------------------------
# Loading a user's arrays


def test_npz_loads_as_a_dataset_with_its_sha256(tmp_path):
    arrays = own(class_names=np.array(["a", "b", "c", "d"]))
    path = save(tmp_path, arrays)
    ds = data.load("arrays", path=path, val_size=0.25)
    assert ds.num_classes == 4 and ds.class_names == ("a", "b", "c", "d")
    assert ds.x_train.dtype == np.uint8 and ds.x_train.shape == (60, 6, 5)
    assert len(ds.y_val) == 20 and np.array_equal(ds.x_test, arrays["x_test"])
    assert ds.meta["files_sha256"] == {"mine.npz": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert ds.meta["shapes"]["x_train"] == [80, 6, 5]
    json.dumps(ds.meta)  # goes into env.json as it is
    feats = data.preprocess(ds)
    assert feats.x_train.dtype == np.float32 and feats.x_train.max() <= 1.0


def test_float_features_and_a_folder_of_npy(tmp_path):
    arrays = own(k=3, shape=(7,), dtype=np.float64)
    folder = tmp_path / "mine"
    folder.mkdir()
    for key, a in arrays.items():
        np.save(folder / f"{key}.npy", a)
    ds = data.load("arrays", path=folder, val_size=0)
    assert ds.num_classes == 3 and ds.class_names == ("0", "1", "2")
    assert sorted(ds.meta["files_sha256"]) == ["x_test.npy", "x_train.npy", "y_test.npy",
                                               "y_train.npy"]
    feats = data.preprocess(ds, standardize=True)  # per feature: unscaled floats
    assert np.allclose(feats.x_train.mean(axis=0), 0, atol=1e-5)
    assert np.allclose(feats.x_train[:, 0] * feats.meta["preprocess"]["std"][0]
                       + feats.meta["preprocess"]["mean"][0], arrays["x_train"][:, 0], atol=1e-5)
    with pytest.raises(ValueError, match="already preprocessed"):
        data.preprocess(feats)


def pickled(tmp_path):
    a = own()
    a["class_names"] = np.array([{"evil": 1}] * 4, dtype=object)
    return save(tmp_path, a)


def negative(tmp_path):
    a = own()
    a["y_train"][3] = -1
    return save(tmp_path, a)


def with_nan(tmp_path):
    a = own(dtype=np.float32)
    a["x_test"][2, 1, 1] = np.nan
    return save(tmp_path, a)


def with_inf(tmp_path):
    a = own(dtype=np.float32)
    a["x_train"][0, 0, 0] = np.inf
    return save(tmp_path, a)


@pytest.mark.parametrize(("make", "needles"), [
    (lambda t: t / "absent.npz", ["absent.npz: no such file"]),
    (lambda t: (t / "empty").mkdir() or t / "empty", ["empty: a folder without x_train.npy"]),
    (pickled, ["'class_names' holds Python objects (a pickle)"]),
    (lambda t: save(t, {k: v for k, v in own().items() if k != "y_test"}),
     ["missing y_test", "np.savez"]),
    (lambda t: save(t, {**own(), "y_train": own()["y_train"][:-1]}),
     ["x_train has 80 examples but y_train has 79 labels"]),
    (negative, ["y_train holds the negative label -1"]),
    (lambda t: save(t, {**own(), "y_test": own()["y_test"] + 0.5}),
     ["y_test is float64", "integer class labels"]),
    (lambda t: save(t, {**own(), "class_names": np.array(["a", "b", "c"])}),
     ["holds the label 3 but class_names names 3 classes"]),
    (with_nan, ["x_test holds NaN or infinite values"]),
    (with_inf, ["x_train holds NaN or infinite values"]),
    (lambda t: save(t, own(k=1)), ["only 1 class"]),
    (lambda t: save(t, {**own(), "x_test": own(shape=(5, 6))["x_test"]}),
     ["x_train is uint8 (6, 5) per example but x_test is uint8 (5, 6)"]),
    (lambda t: (t / "junk.npz").write_bytes(b"not a zip") and t / "junk.npz",
     ["junk.npz: not a readable .npz archive"]),
])
def test_bad_arrays_are_one_line_naming_the_file(tmp_path, make, needles):
    path = make(tmp_path)
    with pytest.raises(DataError) as e:
        data.load("arrays", path=path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    for n in needles:
        assert n in msg, msg


# --------------------------------------------------------------------------------------------
# Class subsets and per_class


def test_class_subsets_are_nested_and_keep_their_names():
    kept = {k: data.load("digits", classes=k, subset_seed=3, val_size=0) for k in (2, 5, 8)}
    names = {k: set(ds.class_names) for k, ds in kept.items()}
    assert names[2] < names[5] < names[8]
    assert data.load("digits", classes=5, subset_seed=4).class_names != kept[5].class_names
    full = data.load("digits", val_size=0)
    ds = kept[5]
    assert ds.num_classes == 5 and set(ds.y_train.tolist()) == set(range(5))
    originals = np.array([int(n) for n in ds.class_names])
    assert list(originals) == sorted(originals)  # renumbered in their original order
    mask = np.isin(full.y_train, originals)
    assert np.array_equal(ds.x_train, full.x_train[mask])
    assert np.array_equal(originals[ds.y_train], full.y_train[mask])
    assert ds.meta["classes"]["kept"] == originals.tolist()
    assert ds.meta["class_names"] == list(ds.class_names)


def test_classes_by_name_or_index_and_per_class(tmp_path):
    path = save(tmp_path, own(k=4, class_names=np.array(["a", "b", "c", "d"])))
    ds = data.load("arrays", path=path, classes=["d", 1], per_class=6, val_size=0.5)
    assert ds.class_names == ("b", "d")
    assert np.bincount(ds.y_train).tolist() == [3, 3] and np.bincount(ds.y_val).tolist() == [3, 3]
    assert np.bincount(ds.y_test).tolist() == [5, 5]  # per_class caps training only
    again = data.load("arrays", path=path, classes=["d", 1], per_class=6, val_size=0.5)
    assert np.array_equal(again.x_train, ds.x_train)  # drawn with split_seed alone
    other = data.load("arrays", path=path, classes=["d", 1], per_class=6, val_size=0.5,
                      split_seed=1)
    assert not np.array_equal(other.x_train, ds.x_train)


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"classes": 11}, "dataset.classes: got 11, but the dataset has 10 classes"),
    ({"classes": [1, 1]}, "dataset.classes: class '1' is listed twice"),
    ({"classes": [1, "seven"]}, "dataset.classes: 'seven' is not a class of this dataset"),
    ({"classes": [3, 10]}, "dataset.classes: 10 is not a class"),
    ({"per_class": 1, "val_size": 5}, "dataset.val_size leaves class"),
])
def test_bad_subsets(kwargs, needle):
    with pytest.raises(ConfigError) as e:
        data.load("digits", **kwargs)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_a_class_without_training_examples_is_refused(tmp_path):
    path = save(tmp_path, own(k=3, class_names=np.array(["a", "b", "c", "never"])))
    with pytest.raises(ConfigError, match="the training set leaves class 'never' with no "):
        data.load("arrays", path=path)
    assert data.load("arrays", path=path, classes=["a", "c"]).num_classes == 2


# --------------------------------------------------------------------------------------------
# Sweeps


@pytest.mark.slow
def test_sweep_on_own_arrays_records_the_file(tmp_path, capsys):
    """... and, at 25 classes, report.md summarises the per-class accuracy instead of giving
    each class a column."""
    path = save(tmp_path, own(k=25, n_train=90, shape=(4, 4, 3)))
    config = small_config(tmp_path, name="own", dataset={"name": "arrays", "path": str(path)},
                          batch_size=16, epochs=1, seeds=[0], losses=["mse"])
    code, err = quiet_sweep(capsys, config)
    assert code == 0, err
    out = tmp_path / "runs" / "own"
    env = json.loads((out / "env.json").read_text())
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert env["data"]["files_sha256"] == {"mine.npz": sha}
    assert env["data"]["shapes"]["x_train"] == [90, 4, 4, 3]
    report = (out / "report.md").read_text()
    assert sha[:12] in report and "90x4x4x3" in report
    table = report.split("## Per-class test accuracy")[1].split("\n\n")[1].splitlines()
    assert "| Worst 5 (class: %) | Best 5 (class: %) |" in table[0]
    assert len(table) == 3 and table[2].count("|") == 10  # one row, 9 columns
    assert "summarised over the 25 classes" in report


@pytest.mark.parametrize(("dataset", "needles"), [
    ({"name": "arrays", "path": "MISSING"}, ["absent.npz: no such file"]),
    ({"name": "arrays", "path": "BAD"}, ["holds the negative label"]),
    ({"name": "arrays"}, ["dataset.path: the arrays dataset reads your own file"]),
    ({"name": "digits", "classes": 12}, ["dataset.classes: got 12"]),
    ({"name": "digits", "classes": [2, 2]}, ["dataset.classes", "list each class once"]),
    ({"name": "digits", "per_class": 1, "val_size": 5}, ["dataset.val_size leaves class"]),
    ({"name": "digits", "label": "coarse"}, ["dataset.label: got 'coarse', but only cifar100"]),
    ({"name": "tfds:NAME"}, ["dataset.name: replace NAME in tfds:NAME"]),
    ({"name": "tfds:not_there"}, ["tfds:not_there: no copy prepared by tensorflow-datasets"]),
    ({"name": "cifar100"}, ["no CIFAR-100 found"]),
])
def test_bad_data_in_a_sweep_is_one_line_exit_2_no_folder(tmp_path, capsys, dataset, needles):
    if dataset.get("path") == "MISSING":
        dataset = {**dataset, "path": str(tmp_path / "absent.npz")}
    elif dataset.get("path") == "BAD":
        a = own()
        a["y_train"][0] = -3
        dataset = {**dataset, "path": str(save(tmp_path, a))}
    code, err = quiet_sweep(capsys, small_config(tmp_path, dataset=dataset))
    assert code == 2
    one_line(err, *needles)
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_subset_members_numbers_do_not_depend_on_the_sweep(tmp_path, capsys):
    """A member of a sweep on a class subset trains to the same bits alone as beside others."""
    dataset = {"name": "digits", "classes": 4, "subset_seed": 1, "per_class": 60}
    alone = small_config(tmp_path, name="alone", dataset=dataset, seeds=[1], losses=["mse"])
    assert quiet_sweep(capsys, alone)[0] == 0
    crowd = small_config(tmp_path, name="crowd", dataset=dataset, seeds=[0, 1],
                         losses=["cross_entropy", "mse"],
                         optimizer={"learning_rate": [0.1, 0.3]})
    assert quiet_sweep(capsys, crowd)[0] == 0
    a = pd.read_csv(tmp_path / "runs" / "alone" / "epochs.csv")
    c = pd.read_csv(tmp_path / "runs" / "crowd" / "epochs.csv")
    c = c[(c["loss"] == "mse") & (c["seed"] == 1) & (c["learning_rate"] == 0.1)]
    numbers = [col for col in a.columns if col.endswith(("_acc", "_loss", "_ce", "grad_norm"))]
    assert numbers and len(a) == len(c) == 3
    assert a[numbers].to_numpy().tobytes() == c[numbers].to_numpy().tobytes()
    env = json.loads((tmp_path / "runs" / "crowd" / "env.json").read_text())
    assert env["data"]["classes"]["subset_seed"] == 1 and len(env["data"]["class_names"]) == 4


# --------------------------------------------------------------------------------------------
# CIFAR-100 from its official python version (a tiny copy in the same format)


def cifar100_files(n_train=40, n_test=20) -> dict[str, bytes]:
    """train, test and meta pickled as the official files are (protocol 2, bytes keys)."""
    rng = np.random.default_rng(0)
    coarse_names = [n.encode() for n in registry.CIFAR100_COARSE]

    def split(n, tag):
        fine = np.arange(n) % 100
        return {b"batch_label": tag, b"filenames": [b"f%d.png" % i for i in range(n)],
                b"fine_labels": fine.tolist(), b"coarse_labels": (fine % 20).tolist(),
                b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)}

    meta = {b"fine_label_names": [n.encode() for n in data.CLASS_NAMES["cifar100"]],
            b"coarse_label_names": coarse_names}
    return {"train": pickle.dumps(split(n_train * 5, b"training batch 1 of 1"), protocol=2),
            "test": pickle.dumps(split(n_test * 5, b"testing batch 1 of 1"), protocol=2),
            "meta": pickle.dumps(meta, protocol=2)}


@pytest.fixture
def tiny_cifar100(tmp_path, monkeypatch):
    """A cifar-100-python.tar.gz in <data>/cifar100/, its md5s made the official ones."""
    files = cifar100_files()
    monkeypatch.setattr(cifar100, "MD5", {k: hashlib.md5(v).hexdigest()
                                          for k, v in files.items()})
    root = tmp_path / "data"
    (root / "cifar100").mkdir(parents=True)
    with tarfile.open(root / "cifar100" / "cifar-100-python.tar.gz", "w:gz") as tf:
        for k, v in files.items():
            info = tarfile.TarInfo(f"cifar-100-python/{k}")
            info.size = len(v)
            tf.addfile(info, io.BytesIO(v))
    return root, files


def test_cifar100_from_the_official_archive_and_folder(tiny_cifar100, tmp_path):
    root, files = tiny_cifar100
    ds = data.load("cifar100", data_dir=root, val_size=0)
    assert ds.num_classes == 100 and ds.class_names[:2] == ("apple", "aquarium_fish")
    assert ds.x_train.shape == (200, 32, 32, 3) and ds.x_test.shape == (100, 32, 32, 3)
    raw = pickle.loads(files["train"])
    assert np.array_equal(ds.x_train[3], raw[b"data"][3].reshape(3, 32, 32).transpose(1, 2, 0))
    assert ds.y_train.tolist() == raw[b"fine_labels"]
    assert ds.meta["verified"]["train"] == hashlib.sha256(files["train"]).hexdigest()
    coarse = data.load("cifar100", data_dir=root, val_size=0, label="coarse")
    assert coarse.num_classes == 20 and coarse.y_train.tolist() == raw[b"coarse_labels"]
    assert coarse.class_names[0] == "aquatic_mammals"
    folder = tmp_path / "elsewhere" / "cifar-100-python"
    folder.mkdir(parents=True)
    for k, v in files.items():
        (folder / k).write_bytes(v)
    again = data.load("cifar100", data_dir=folder.parent, val_size=0)
    assert np.array_equal(again.x_train, ds.x_train)
    assert again.meta["source"]["form"] == "cifar100-py-dir"


def test_cifar100_refuses_what_is_not_official(tiny_cifar100, monkeypatch):
    root, _ = tiny_cifar100
    monkeypatch.setitem(cifar100.MD5, "test", "0" * 32)
    with pytest.raises(DataError, match=r"\[test\]: not the official CIFAR-100 test file"):
        data.load("cifar100", data_dir=root)
    with pytest.raises(DataError, match="no CIFAR-100 found; put cifar-100-python.tar.gz"):
        data.load("cifar100", data_dir=root / "nothing")


@pytest.mark.slow
def test_sweep_on_cifar100_coarse_subset(tiny_cifar100, tmp_path, capsys):
    root, _ = tiny_cifar100
    config = small_config(tmp_path, name="c100", seeds=[0], losses=["mse"], epochs=1,
                          batch_size=16, dataset={"name": "cifar100", "data_dir": str(root),
                                                  "label": "coarse", "classes": 5})
    code, err = quiet_sweep(capsys, config)
    assert code == 0, err
    env = json.loads((tmp_path / "runs" / "c100" / "env.json").read_text())
    assert env["data"]["label"] == "coarse" and len(env["data"]["class_names"]) == 5


# --------------------------------------------------------------------------------------------
# Any dataset tensorflow-datasets prepared in array_record ("tfds:NAME")


def tfds_prepare_named(root, name: str, arrays, names) -> None:
    """``name`` prepared by a tfds builder in array_record, as ``download_and_prepare`` leaves
    it, with class names (no TensorFlow: images are given as PNG bytes)."""
    import tensorflow_datasets as tfds
    from test_data_tfds import png

    dataset_name = name

    class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = dataset_name
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(*arrays["x_train"].shape[1:3], 3)),
                "label": tfds.features.ClassLabel(names=names)}))

        def _split_generators(self, dl_manager):
            return {s: self._generate_examples(s) for s in ("train", "test")}

        def _generate_examples(self, split):
            for i, (x, y) in enumerate(zip(arrays["x_" + split], arrays["y_" + split],
                                           strict=True)):
                yield i, {"image": png(x), "label": int(y)}

    Builder(data_dir=root, file_format="array_record").download_and_prepare()


def test_any_prepared_tfds_dataset(tmp_path):
    arrays = own(k=3, n_train=30, n_test=9, shape=(5, 4, 3))
    tfds_prepare_named(tmp_path / "tensorflow_datasets", "my_shapes", arrays,
                       ["circle", "square", "star"])
    ds = data.load("tfds:my_shapes", val_size=0)
    assert ds.class_names == ("circle", "square", "star") and ds.name == "tfds:my_shapes"
    order = np.argsort(ds.x_train.reshape(30, -1).sum(axis=1), kind="stable")
    want = np.argsort(arrays["x_train"].reshape(30, -1).sum(axis=1).astype(np.int64),
                      kind="stable")
    assert np.array_equal(ds.x_train[order], arrays["x_train"][want])  # stored shuffled
    assert sorted(ds.y_test.tolist()) == sorted(arrays["y_test"].tolist())
    assert "dataset_info.json" in ds.meta["files_sha256"]
    assert ds.meta["source"]["path"].endswith("my_shapes/1.0.0")
    with pytest.raises(DataError) as e:
        data.load("tfds:not_there", data_dir=tmp_path / "home")
    assert "tfds:not_there: no copy prepared by tensorflow-datasets" in str(e.value)
    assert str(tmp_path / "home" / "not_there") in str(e.value)
    assert str(tmp_path / "tensorflow_datasets" / "not_there") in str(e.value)


def test_data_info_lists_the_new_datasets(tiny_cifar100, tmp_path, capsys):
    root, _ = tiny_cifar100
    arrays = own(k=2, n_train=4, n_test=2, shape=(3, 3, 3))
    tfds_prepare_named(tmp_path / "tensorflow_datasets", "my_pairs", arrays, ["x", "y"])
    assert run_cli("data", "info", "--data-dir", str(root)) == 0
    out = capsys.readouterr().out
    archive = root / "cifar100" / "cifar-100-python.tar.gz"
    assert f"cifar100       ok        local cifar-100-python.tar.gz in {archive}" in out
    assert "train 200, test 100, images 32x32x3 uint8, 100 classes" in out
    assert "double_mnist   missing   no local files or cache" in out
    assert "arrays         yours     your own .npz or folder of .npy files" in out
    assert "tfds:NAME      yours     datasets tensorflow-datasets prepared" in out
    assert "found: my_pairs" in out
    assert not (root / "prepared").exists()  # info writes nothing
