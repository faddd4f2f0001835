"""lossjax.data: every published form, every failure and its one-line message, the source
order, the cache, splits, preprocessing, and what ``lossjax data info`` / ``prepare`` report.
Downloads are tested in test_data_download.py, the real datasets in test_data_real.py; the tiny
fixtures all of them load, and why their checksums are the tests' own, are in data_helpers.py.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from data_helpers import (
    BATCHES,
    STEMS,
    cifar_batches,
    error,
    expect_cifar,
    expect_mnist,
    idx_bytes,
    isolate,
    py_batch,
    run_cli,
    same_arrays,
    sha,
    tiny_cifar,
    tiny_mnist,
    write_cifar,
    write_idx,
)

from lossjax import data
from lossjax.data import checksums, registry, sources


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    isolate(tmp_path, monkeypatch)


# --------------------------------------------------------------------------------------------
# MNIST-style IDX files and .npz


@pytest.mark.parametrize("gz,dotted,sub", [(True, False, "mnist"), (False, False, ""),
                                           (True, True, ""), (False, True, "mnist")])
def test_idx_forms_load_the_same_arrays(tmp_path, monkeypatch, gz, dotted, sub):
    arrays = tiny_mnist()
    expect_mnist(monkeypatch, arrays)
    write_idx(tmp_path / "d" / sub, arrays, gz=gz, dotted=dotted)
    ds = data.load("mnist", data_dir=tmp_path / "d", val_size=0)
    same_arrays(ds, arrays)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int32
    assert ds.x_val.shape == (0, 28, 28) and ds.num_classes == 10
    assert not ds.x_train.flags.writeable and not ds.y_test.flags.writeable
    assert ds.meta["source"]["kind"] == "local" and ds.meta["source"]["form"] == "idx"
    assert ds.meta["source"]["path"] == str(tmp_path / "d" / sub).rstrip("/")
    assert set(ds.meta["verified"]) == set(STEMS)
    json.dumps(ds.meta)


def test_recompressed_copy_passes_and_other_data_fails(tmp_path, monkeypatch):
    arrays = tiny_mnist()
    expect_mnist(monkeypatch, arrays)
    folder = write_idx(tmp_path / "a", arrays, mtime=12345)
    raw = gzip.decompress((folder / "train-images-idx3-ubyte.gz").read_bytes())
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw, compresslevel=1))
    same_arrays(data.load("mnist", data_dir=folder, val_size=0), arrays)

    other = dict(arrays, x_train=arrays["x_train"].copy())
    other["x_train"][3, 10, 10] ^= 1
    folder = write_idx(tmp_path / "b", other)
    msg = error(data.load, "mnist", data_dir=folder)
    assert str(folder / "train-images-idx3-ubyte.gz") in msg
    assert "content is not the official mnist train-images-idx3-ubyte" in msg
    assert f"expected tiny with sha256 {sha(idx_bytes(arrays['x_train']))}" in msg
    assert f"found 30x28x28 with sha256 {sha(idx_bytes(other['x_train']))}" in msg


def test_mnist_files_offered_as_fashion_mnist_are_named(tmp_path, monkeypatch):
    arrays = tiny_mnist()
    expect_mnist(monkeypatch, arrays)
    expect_mnist(monkeypatch, tiny_mnist(seed=1), name="fashion_mnist")
    write_idx(tmp_path / "d", arrays)  # flat folder: both names look here
    msg = error(data.load, "fashion_mnist", data_dir=tmp_path / "d")
    assert "not the official fashion_mnist train-images-idx3-ubyte" in msg
    assert "(that is the content of mnist train-images-idx3-ubyte)" in msg


def test_fashion_mnist_folder_names(tmp_path, monkeypatch):
    arrays = tiny_mnist(seed=2)
    expect_mnist(monkeypatch, arrays, name="fashion_mnist")
    write_idx(tmp_path / "d" / "fashion-mnist", arrays)
    ds = data.load("fashion_mnist", data_dir=tmp_path / "d", val_size=0)
    same_arrays(ds, arrays)
    assert ds.class_names[9] == "Ankle boot"


def test_mnist_npz_shares_the_idx_content_check(tmp_path, monkeypatch):
    arrays = tiny_mnist()
    expect_mnist(monkeypatch, arrays)
    (tmp_path / "d").mkdir()
    np.savez(tmp_path / "d" / "mnist.npz", **arrays)
    ds = data.load("mnist", data_dir=tmp_path / "d", val_size=0)
    same_arrays(ds, arrays)
    assert ds.meta["source"]["form"] == "npz"
    arrays["y_test"] = arrays["y_test"][::-1].copy()
    np.savez(tmp_path / "d" / "mnist.npz", **arrays)
    msg = error(data.load, "mnist", data_dir=tmp_path / "d")
    assert f"{tmp_path / 'd' / 'mnist.npz'}[y_test]: content is not the official" in msg


def test_idx_truncated_gzip(tmp_path, monkeypatch):
    arrays = tiny_mnist()
    expect_mnist(monkeypatch, arrays)
    folder = write_idx(tmp_path / "d", arrays)
    path = folder / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])
    msg = error(data.load, "mnist", data_dir=folder)
    assert msg.startswith(f"{path}: truncated gzip stream: expected a complete gzip file")


def test_idx_truncated_data_and_header(tmp_path, monkeypatch):
    arrays = tiny_mnist()
    expect_mnist(monkeypatch, arrays)
    folder = write_idx(tmp_path / "d", arrays, gz=False)
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-50])
    assert error(data.load, "mnist", data_dir=folder) == (
        f"{path}: truncated: header says 30x28x28 = 23520 bytes of data, found 23470 bytes")
    path.write_bytes(b"\x00\x00\x08\x03\x00")
    assert error(data.load, "mnist", data_dir=folder) == (
        f"{path}: truncated: expected an IDX header of 16 bytes, found 5 bytes")


def test_idx_count_disagrees_with_header(tmp_path, monkeypatch):
    arrays = tiny_mnist()
    expect_mnist(monkeypatch, arrays)
    folder = write_idx(tmp_path / "d", arrays, gz=False)
    path = folder / "train-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes() + b"\x01\x02")
    assert error(data.load, "mnist", data_dir=folder) == (
        f"{path}: count disagrees with the header: header says 30 = 30 bytes of data, "
        "found 32 bytes")


def test_idx_wrong_magic(tmp_path, monkeypatch):
    arrays = tiny_mnist()
    expect_mnist(monkeypatch, arrays)
    folder = write_idx(tmp_path / "d", arrays)
    labels = (folder / "t10k-labels-idx1-ubyte.gz").read_bytes()
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(labels)  # labels where images belong
    msg = error(data.load, "mnist", data_dir=folder)
    assert msg == (f"{folder / 't10k-images-idx3-ubyte.gz'}: wrong IDX magic number: expected "
                   "0x00000803 (unsigned bytes, images, 3 dimensions), found 0x00000801")


def test_idx_label_count_must_match_images(tmp_path, monkeypatch):
    arrays = tiny_mnist()
    arrays["y_test"] = arrays["y_test"][:9]
    expect_mnist(monkeypatch, arrays)
    folder = write_idx(tmp_path / "d", arrays)
    assert error(data.load, "mnist", data_dir=folder) == (
        f"{folder / 't10k-labels-idx1-ubyte.gz'}: count disagrees with the images: "
        "expected 10 labels, found 9")


def test_incomplete_idx_set_is_an_error_not_a_fallback(tmp_path, monkeypatch):
    arrays = tiny_mnist()
    expect_mnist(monkeypatch, arrays)
    folder = write_idx(tmp_path / "d", arrays, stems=STEMS[:3])
    assert error(data.load, "mnist", data_dir=folder) == (
        f"{folder}: incomplete mnist IDX set: expected all of {', '.join(STEMS)}, "
        "missing t10k-labels-idx1-ubyte[.gz]")


def test_npz_failures(tmp_path, monkeypatch):
    arrays = tiny_mnist()
    expect_mnist(monkeypatch, arrays)
    folder = tmp_path / "d"
    folder.mkdir()
    path = folder / "mnist.npz"
    np.savez(path, x_train=arrays["x_train"], y_train=arrays["y_train"])
    assert error(data.load, "mnist", data_dir=folder) == (
        f"{path}: expected arrays x_train y_train x_test y_test, found x_train y_train")
    np.savez(path, **dict(arrays, x_train=arrays["x_train"].astype(np.float32)))
    assert error(data.load, "mnist", data_dir=folder) == (
        f"{path}: x_train must be uint8 images, found float32")
    np.savez_compressed(path, **arrays)
    path.write_bytes(path.read_bytes()[:-200])
    assert error(data.load, "mnist", data_dir=folder).startswith(
        f"{path}: not a readable .npz (truncated or corrupt): ")


# --------------------------------------------------------------------------------------------
# CIFAR-10: python and binary batches, as folders and as tar.gz, and .npz


@pytest.mark.parametrize("form", ["py-dir", "py-tar", "bin-dir", "bin-tar", "npz"])
def test_cifar_forms_load_the_same_arrays(tmp_path, monkeypatch, form):
    arrays = tiny_cifar()
    expect_cifar(monkeypatch, arrays)
    write_cifar(tmp_path / "d" / "cifar10", arrays, form)
    ds = data.load("cifar10", data_dir=tmp_path / "d", val_size=0)
    same_arrays(ds, arrays)
    assert ds.x_train.shape == (20, 32, 32, 3) and ds.x_train.dtype == np.uint8
    assert ds.class_names[0] == "airplane"
    expected_parts = ["all"] if form == "npz" else list(BATCHES)
    assert list(ds.meta["verified"]) == expected_parts


def test_cifar_python3_pickles_and_folder_of_batches_directly(tmp_path, monkeypatch):
    arrays = tiny_cifar()
    expect_cifar(monkeypatch, arrays)
    folder = tmp_path / "batches"
    folder.mkdir()
    for b, (x, y) in cifar_batches(arrays).items():
        (folder / b).write_bytes(py_batch(x, y, py2=False))
    same_arrays(data.load("cifar10", data_dir=folder, val_size=0), arrays)


def test_cifar_batch_mismatch_names_the_batch(tmp_path, monkeypatch):
    arrays = tiny_cifar()
    expect_cifar(monkeypatch, arrays)
    folder = write_cifar(tmp_path / "d", arrays, "py-dir") / "cifar-10-batches-py"
    x, y = cifar_batches(arrays)["data_batch_3"]
    (folder / "data_batch_3").write_bytes(py_batch(x, (y + 1) % 10))
    msg = error(data.load, "cifar10", data_dir=tmp_path / "d")
    assert msg.startswith(f"{folder / 'data_batch_3'}: content is not the official cifar10 "
                          f"data_batch_3: expected tiny with sha256 {sha(x, y)}, "
                          "found 4x32x32x3+4 with sha256 ")


def test_cifar_archive_failures(tmp_path, monkeypatch):
    arrays = tiny_cifar()
    expect_cifar(monkeypatch, arrays)
    folder = write_cifar(tmp_path / "d", arrays, "py-tar")
    archive = folder / "cifar-10-python.tar.gz"
    good = archive.read_bytes()
    archive.write_bytes(good[: len(good) // 2])
    assert error(data.load, "cifar10", data_dir=folder).startswith(
        f"{archive}: truncated or corrupt archive: ")
    with tarfile.open(archive, "w:gz") as tf:
        for b, (x, y) in list(cifar_batches(arrays).items())[:5]:
            payload = py_batch(x, y)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{b}")
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    assert error(data.load, "cifar10", data_dir=folder) == (
        f"{archive}: expected members data_batch_1..5 and test_batch, missing test_batch")


def test_cifar_binary_truncated_record(tmp_path, monkeypatch):
    arrays = tiny_cifar()
    expect_cifar(monkeypatch, arrays)
    folder = write_cifar(tmp_path / "d", arrays, "bin-dir") / "cifar-10-batches-bin"
    path = folder / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:-1000])
    assert error(data.load, "cifar10", data_dir=tmp_path / "d") == (
        f"{path}: truncated: expected whole 3073-byte records (label + 32x32x3 pixels), "
        "found 11292 bytes = 3.67 records")


def test_cifar_incomplete_batch_folder(tmp_path, monkeypatch):
    arrays = tiny_cifar()
    expect_cifar(monkeypatch, arrays)
    folder = write_cifar(tmp_path / "d", arrays, "py-dir") / "cifar-10-batches-py"
    (folder / "data_batch_4").unlink()
    assert error(data.load, "cifar10", data_dir=tmp_path / "d") == (
        f"{folder}: incomplete CIFAR-10 batches: expected {', '.join(BATCHES)}, "
        "missing data_batch_4")


class Boom:
    """Unpickling this would create a file, if the unpickler allowed calling open()."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_cifar_pickle_cannot_run_code(tmp_path, monkeypatch):
    arrays = tiny_cifar()
    expect_cifar(monkeypatch, arrays)
    folder = write_cifar(tmp_path / "d", arrays, "py-dir") / "cifar-10-batches-py"
    marker = tmp_path / "pickle-ran"
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Boom(marker)}, protocol=2))
    msg = error(data.load, "cifar10", data_dir=tmp_path / "d")
    assert msg.startswith(f"{folder / 'data_batch_1'}: not a CIFAR-10 python batch")
    assert "UnpicklingError: refusing global io.open" in msg
    assert not marker.exists()
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"labels": [1]}, protocol=2))
    assert error(data.load, "cifar10", data_dir=tmp_path / "d") == (
        f"{folder / 'data_batch_1'}: expected data (N x 3072 uint8) and N labels, "
        "found data NoneType , 1 labels")


# --------------------------------------------------------------------------------------------
# Source order and cache


def test_cache_hit_rebuild_and_cache_only(tmp_path, monkeypatch):
    arrays = tiny_mnist()
    expect_mnist(monkeypatch, arrays)
    folder = write_idx(tmp_path / "d", arrays)
    first = data.load("mnist", data_dir=folder)
    assert first.meta["cache"] == {"path": str(folder / "prepared" / "mnist"),
                                   "status": "written"}
    second = data.load("mnist", data_dir=folder)
    assert second.meta["cache"]["status"] == "hit"
    assert second.meta["source"]["kind"] == "local"
    for s in ("train", "val", "test"):
        assert np.array_equal(getattr(first, "x_" + s), getattr(second, "x_" + s))
    write_idx(folder, arrays, mtime=999)  # same content, other raw bytes: the cache is rebuilt
    assert data.load("mnist", data_dir=folder).meta["cache"]["status"] == "written"
    for s in STEMS:
        (folder / (s + ".gz")).unlink()
    third = data.load("mnist", data_dir=folder, val_size=0)
    same_arrays(third, arrays)
    assert third.meta["source"]["kind"] == "cache"
    assert third.meta["source"]["built_from"]["path"] == str(folder)


def test_damaged_cache_is_reported_and_rebuilt(tmp_path, monkeypatch):
    arrays = tiny_mnist()
    expect_mnist(monkeypatch, arrays)
    folder = write_idx(tmp_path / "d", arrays)
    data.load("mnist", data_dir=folder)
    cached = folder / "prepared" / "mnist" / "x_test.npy"
    np.save(cached, np.zeros_like(arrays["x_test"]))
    with pytest.warns(UserWarning, match="ignoring damaged cache .*x_test.npy: content is not"):
        ds = data.load("mnist", data_dir=folder)
    assert ds.meta["cache"]["status"] == "written"
    assert np.array_equal(ds.x_test, arrays["x_test"])


def test_cache_dir_env_and_unwritable_cache(tmp_path, monkeypatch):
    arrays = tiny_mnist()
    expect_mnist(monkeypatch, arrays)
    folder = write_idx(tmp_path / "d", arrays)
    monkeypatch.setenv("LOSSJAX_CACHE_DIR", str(tmp_path / "c"))
    assert data.load("mnist", data_dir=folder).meta["cache"]["path"] == str(
        tmp_path / "c" / "prepared" / "mnist")
    assert not (folder / "prepared").exists()
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("LOSSJAX_CACHE_DIR", str(tmp_path / "file"))
    with pytest.warns(UserWarning, match="could not cache mnist"):
        ds = data.load("mnist", data_dir=folder)
    assert ds.meta["cache"]["status"].startswith("not written: ")


def test_read_only_data_dir_gets_no_cache_even_as_root(tmp_path, monkeypatch):
    """A shared copy of the data, deliberately read-only (mode r-x). Root could write there;
    lossjax must not, and caches in ~/.cache/lossjax instead."""
    arrays = tiny_mnist()
    expect_mnist(monkeypatch, arrays)
    monkeypatch.delenv("LOSSJAX_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    folder = write_idx(tmp_path / "d", arrays)
    folder.chmod(0o555)
    try:
        ds = data.load("mnist", data_dir=folder, val_size=0)
        same_arrays(ds, arrays)
        assert not (folder / "prepared").exists()
        assert ds.meta["cache"]["path"] == str(
            tmp_path / "home" / ".cache" / "lossjax" / "prepared" / "mnist")
    finally:
        folder.chmod(0o755)


def test_env_data_dir_is_the_default(tmp_path, monkeypatch):
    arrays = tiny_mnist()
    expect_mnist(monkeypatch, arrays)
    monkeypatch.setenv("LOSSJAX_DATA_DIR", str(tmp_path / "env"))
    assert data.default_data_dir() == tmp_path / "env"
    write_idx(tmp_path / "env" / "mnist", arrays)
    assert data.load("mnist").meta["source"]["path"] == str(tmp_path / "env" / "mnist")
    monkeypatch.delenv("LOSSJAX_DATA_DIR")
    assert data.default_data_dir() == Path.home() / ".cache" / "lossjax"


def test_system_dirs_come_after_the_cache(tmp_path, monkeypatch):
    arrays = tiny_mnist(seed=3)
    expect_mnist(monkeypatch, arrays, name="fashion_mnist")
    write_idx(tmp_path / "sys", arrays)
    monkeypatch.setattr(sources, "SYSTEM_DIRS", {"fashion_mnist": (str(tmp_path / "sys"),)})
    ds = data.load("fashion_mnist", data_dir=tmp_path / "d", val_size=0)
    same_arrays(ds, arrays)
    assert ds.meta["source"]["kind"] == "system"
    assert data.load("fashion_mnist", data_dir=tmp_path / "d").meta["source"]["kind"] == "cache"



# --------------------------------------------------------------------------------------------
# digits (embedded)


def test_digits_embedded_with_fixed_test_split():
    a = data.load("digits", val_size=0.1, split_seed=0)
    b = data.load("digits", val_size=0.1, split_seed=1)
    assert a.x_train.shape[1:] == (8, 8) and a.x_train.dtype == np.uint8
    assert int(a.x_train.max()) == 16 and a.meta["pixel_max"] == 16
    assert a.meta["sizes"] == {"train": 1294, "val": 144, "test": 359}
    assert a.meta["class_counts"]["test"] == [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]
    assert np.array_equal(a.x_test, b.x_test) and np.array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.y_val, b.y_val) or not np.array_equal(a.x_val, b.x_val)
    assert a.meta["source"]["kind"] == "embedded"
    json.dumps(a.meta)


def test_digits_match_scikit_learn():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    ref = sklearn_datasets.load_digits()
    ds = data.load("digits", val_size=0)
    ours = sorted(x.tobytes() + bytes([y]) for x, y in zip(
        np.concatenate([ds.x_train, ds.x_test]), np.concatenate([ds.y_train, ds.y_test]),
        strict=True))
    theirs = sorted(x.astype(np.uint8).tobytes() + bytes([y])
                    for x, y in zip(ref.images, ref.target, strict=True))
    assert ours == theirs


def test_digits_checksum_is_checked(monkeypatch):
    monkeypatch.setitem(data.CHECKSUMS, "digits", {
        "digits.csv": data.Expected("1" * 64, "1797 rows", "test")})
    msg = error(data.load, "digits")
    assert "digits.csv.gz: content is not the official digits digits.csv: expected 1797 rows" in msg


# --------------------------------------------------------------------------------------------
# Validation split


def ids(x: np.ndarray) -> set[int]:
    return set(x[:, 0, 0].tolist())


def test_validation_split_is_deterministic_stratified_and_disjoint(tmp_path, monkeypatch):
    arrays = tiny_mnist(n_train=100, n_test=10)
    expect_mnist(monkeypatch, arrays)
    folder = write_idx(tmp_path / "d", arrays)
    a = data.load("mnist", data_dir=folder, val_size=20, split_seed=0)
    assert len(a.y_val) == 20 and np.bincount(a.y_val).tolist() == [2] * 10
    assert ids(a.x_train).isdisjoint(ids(a.x_val))
    assert ids(a.x_train) | ids(a.x_val) == set(range(100))
    assert ids(a.x_test) == set(range(200, 210))
    assert ids(data.load("mnist", data_dir=folder, val_size=20, split_seed=0).x_val) == \
        ids(a.x_val)
    b = data.load("mnist", data_dir=folder, val_size=0.2, split_seed=1)
    assert len(b.y_val) == 20 and ids(b.x_val) != ids(a.x_val)
    assert np.array_equal(a.x_test, b.x_test)
    assert a.meta["split"]["val_size"] == 20 and b.meta["split"]["split_seed"] == 1
    assert np.all(np.diff(a.x_train[:, 0, 0].astype(int)) > 0)  # original order kept


@pytest.mark.parametrize("bad", [True, -1, 1.0, 1.5, "0.1", None])
def test_bad_val_size(bad):
    with pytest.raises(ValueError, match="val_size must be"):
        data.load("digits", val_size=bad)


def test_val_size_leaving_no_training_data_and_unknown_name():
    from lossjax.errors import ConfigError  # the config's val_size, checked against the data

    with pytest.raises(ConfigError, match=r"^dataset\.val_size: got 1438, which leaves no "
                       "training data: the training set has 1438 examples; expected a count"):
        data.load("digits", val_size=1438)
    with pytest.raises(ConfigError, match=r"^dataset\.val_size: got 0\.9999, which leaves no "):
        data.load("digits", val_size=0.9999)
    with pytest.raises(ValueError, match="unknown dataset 'imagenet': expected one of digits"):
        data.load("imagenet")


def test_val_size_fraction_leaving_no_validation_data():
    """A fraction that rounds to 0 examples fails here, not later in a reshape; 0 itself is an
    empty validation set on purpose."""
    from lossjax.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        data.load("digits", val_size=1e-9)
    assert str(info.value) == (
        "dataset.val_size: got 1e-09, which leaves 0 of the 1438 training examples for "
        "validation; expected a fraction >= 1/1438 (about 0.0007) or a count >= 1"
    )
    assert len(data.load("digits", val_size=1 / 1438).y_val) == 1
    assert len(data.load("digits", val_size=np.float32(0.1)).y_val) == 144
    assert len(data.load("digits", val_size=0).y_val) == 0


# --------------------------------------------------------------------------------------------
# preprocess


def test_preprocess_scales_and_flattens():
    ds = data.load("digits")
    p = data.preprocess(ds)
    assert p.x_train.dtype == np.float32 and p.x_train.shape == (len(ds.y_train), 64)
    assert p.x_val.shape == (len(ds.y_val), 64) and p.x_test.shape == (len(ds.y_test), 64)
    assert float(p.x_train.max()) == 1.0 and float(p.x_train.min()) == 0.0
    assert ds.x_train.dtype == np.uint8  # the input is left alone
    assert np.array_equal(p.y_train, ds.y_train) and p.meta["preprocess"]["scale"] == "1/16"
    with pytest.raises(ValueError, match="already preprocessed"):
        data.preprocess(p)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.name = "x"


def test_preprocess_standardizes_per_feature_for_digits_from_train_only():
    ds = data.load("digits")
    p = data.preprocess(ds, standardize=True)
    std = p.x_train.std(axis=0)
    assert np.allclose(p.x_train.mean(axis=0), 0, atol=1e-5)
    assert np.allclose(std[std > 0], 1, atol=1e-4)
    changed = dataclasses.replace(ds, x_test=np.full_like(ds.x_test, 16))
    assert data.preprocess(changed, standardize=True).meta["preprocess"]["mean"] == \
        p.meta["preprocess"]["mean"]
    json.dumps(p.meta)


def test_preprocess_standardizes_per_channel_for_images(tmp_path, monkeypatch):
    arrays = tiny_cifar(per_batch=20)
    arrays["x_train"][..., 2] //= 4  # give the channels different statistics
    expect_cifar(monkeypatch, arrays)
    write_cifar(tmp_path / "d", arrays, "npz")
    ds = data.load("cifar10", data_dir=tmp_path / "d", val_size=0.1)
    p = data.preprocess(ds, standardize=True)
    assert p.x_train.shape == (90, 3072) and p.x_val.shape == (10, 3072)
    per_channel = p.x_train.reshape(-1, 3)
    assert np.allclose(per_channel.mean(axis=0), 0, atol=1e-5)
    assert np.allclose(per_channel.std(axis=0), 1, atol=1e-4)
    ref = ds.x_train.reshape(-1, 3) / 255.0
    assert np.allclose(p.meta["preprocess"]["mean"], ref.mean(axis=0))
    assert np.allclose(p.meta["preprocess"]["std"], ref.std(axis=0))


# --------------------------------------------------------------------------------------------
# info and prepare: records from lossjax.data, text from the CLI


def test_prepare_then_load_from_the_cache(tmp_path, monkeypatch, capsys):
    arrays = tiny_mnist()
    expect_mnist(monkeypatch, arrays)
    source = write_idx(tmp_path / "src" / "mnist", arrays).parent
    home = str(tmp_path / "home")
    assert run_cli("data", "prepare", "mnist", "--from", str(source), "--data-dir", home) == 0
    out = capsys.readouterr().out
    cache = tmp_path / "home" / "prepared" / "mnist"
    assert out == (f"mnist: local IDX files in {source / 'mnist'}; cache {cache}: written\n"
                   f"mnist: train 30, test 10; content sha256 verified: {', '.join(STEMS)}\n")
    ds = data.load("mnist", data_dir=tmp_path / "home", val_size=0)
    same_arrays(ds, arrays)
    assert ds.meta["source"]["kind"] == "cache"
    assert run_cli("data", "prepare", "digits", "--from", str(source)) == 0
    assert capsys.readouterr().out == "digits is embedded in lossjax; nothing to prepare\n"
    assert data.prepare("digits", source) is None
    assert error(data.prepare, "mnist", tmp_path / "nowhere") == (
        f"{tmp_path / 'nowhere'}: no such directory (expected a folder holding "
        f"{registry.ACCEPTED['mnist']})")
    assert error(data.prepare, "cifar10", source).startswith(
        f"{source}: no cifar10 files found: expected cifar-10-python.tar.gz")
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("LOSSJAX_CACHE_DIR", str(tmp_path / "file"))
    assert error(data.prepare, "mnist", source).startswith(
        f"{tmp_path / 'file' / 'prepared' / 'mnist'}: could not write the cache: ")


def test_prepare_returns_a_record(tmp_path, monkeypatch):
    arrays = tiny_mnist()
    expect_mnist(monkeypatch, arrays)
    source = write_idx(tmp_path / "src", arrays)
    status = data.prepare("mnist", source, data_dir=tmp_path / "home")
    assert isinstance(status, data.DatasetStatus)
    assert (status.name, status.status, status.problem) == ("mnist", "ok", "")
    assert (status.train_size, status.test_size, status.image_shape) == (30, 10, (28, 28))
    assert status.num_classes == 10 and status.verified == STEMS
    assert status.source["kind"] == "local" and status.source["form"] == "idx"
    assert status.cache == {"path": str(tmp_path / "home" / "prepared" / "mnist"),
                            "status": "written"}


def test_info_reports_ok_missing_and_broken(tmp_path, monkeypatch, capsys):
    arrays = tiny_mnist()
    expect_mnist(monkeypatch, arrays)
    folder = write_idx(tmp_path / "d" / "mnist", arrays).parent
    assert run_cli("data", "info", "--data-dir", str(folder)) == 0
    out = capsys.readouterr().out
    assert f"data dir: {folder}  (given); cache: {folder}\n" in out
    assert "digits         ok        embedded" in out
    assert f"mnist          ok        local IDX files in {folder / 'mnist'}" in out
    assert "train 30, test 10, images 28x28 uint8, 10 classes" in out
    assert "cifar10        missing   no local files or cache; put cifar-10-python.tar.gz" in out
    assert not (folder / "prepared").exists()  # info writes nothing
    assert run_cli("data", "info", "cifar10", "--data-dir", str(folder)) == 1
    capsys.readouterr()
    (folder / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    assert run_cli("data", "info", "--data-dir", str(folder)) == 1
    assert "mnist          BROKEN    " in capsys.readouterr().out


def test_info_returns_records(tmp_path, monkeypatch):
    arrays = tiny_mnist()
    expect_mnist(monkeypatch, arrays)
    folder = write_idx(tmp_path / "d", arrays)
    report = data.info(data_dir=folder)
    assert isinstance(report, data.DataInfo)
    assert (report.data_dir, report.data_dir_origin, report.cache_dir) == (folder, "given", folder)
    by_name = {d.name: d for d in report.datasets}
    assert list(by_name) == [*data.NAMES, "tfds:NAME"]
    assert by_name["digits"].status == "ok" and by_name["digits"].image_shape == (8, 8)
    assert by_name["digits"].source["kind"] == "embedded"
    assert by_name["mnist"].status == "ok" and by_name["mnist"].verified == STEMS
    assert by_name["mnist"].cache["status"] == "not written (info)"
    # flat folder: fashion_mnist finds the MNIST files, whose content is not Fashion-MNIST's
    assert by_name["fashion_mnist"].status == "broken"
    assert "content is not the official fashion_mnist" in by_name["fashion_mnist"].problem
    assert by_name["cifar10"].status == "missing"
    assert by_name["cifar10"].problem.startswith("no local files or cache; put ")
    assert data.info("mnist", data_dir=folder).datasets[0].name == "mnist"
    assert data.info().data_dir_origin == "from $LOSSJAX_DATA_DIR"
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        data.info("svhn")


def test_cli_data_info_exit_code(tmp_path, capsys):
    from lossjax.cli import main

    assert main(["data", "info", "digits", "--data-dir", str(tmp_path)]) == 0
    assert main(["data", "prepare", "mnist", "--from", str(tmp_path / "none")]) == 2
    assert "lossjax: error: " in capsys.readouterr().err


def test_python_m_lossjax_data_is_data_info(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lossjax.data", "digits"], capture_output=True,
                         text=True, timeout=120,
                         env={**os.environ, "LOSSJAX_DATA_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"data dir: {tmp_path}  (from $LOSSJAX_DATA_DIR); ")
    assert "digits         ok        embedded" in out.stdout


# --------------------------------------------------------------------------------------------
# The package itself


def test_import_is_light_and_names_the_datasets():
    """Config validation imports lossjax.data for its dataset names: that must not load
    tensorflow-datasets (seconds) or matplotlib."""
    code = ("import sys, lossjax.data as d\n"
            "print(sorted(d.CLASS_NAMES) == sorted(set(d.NAMES) - {'arrays'}), "
            "[m for m in ('tensorflow_datasets', 'tensorflow', 'matplotlib', 'jax') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "True []"


def test_public_api():
    for name in data.__all__:
        assert getattr(data, name) is not None
    assert data.ENV_DATA_DIR == "LOSSJAX_DATA_DIR" and data.ENV_CACHE_DIR == "LOSSJAX_CACHE_DIR"
    assert data.DOWNLOADS is registry.DOWNLOADS and data.CHECKSUMS is checksums.CHECKSUMS
    assert set(data.CHECKSUMS) == set(data.DATASETS) == set(data.CLASS_NAMES) - set(
        data.BUILT) - {"cifar100"}
    assert all(len(data.CLASS_NAMES[n]) == 10 for n in data.DATASETS)
    assert [len(data.CLASS_NAMES[n]) for n in data.BUILT] == [100, 1000]


def test_no_module_is_a_monolith():
    """One job per module: a module that grows past about 400 lines is doing two."""
    for path in Path(data.__file__).parent.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, path.name
