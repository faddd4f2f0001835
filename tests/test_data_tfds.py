"""Source 3 of lossjax.data: what tensorflow-datasets keeps in ``$TFDS_DATA_DIR``. Each test
builds that folder with tfds itself, without network or TensorFlow: downloads through tfds's
DownloadManager from the local HTTP server of the ``hosts`` fixture, prepared datasets through a
tfds builder writing array_record. The tiny data cannot match the official checksums, so, as
everywhere in the data tests, each test puts the tiny data's own content checksums into
``data.CHECKSUMS``; the order a prepared split is stored in is undone for real, since those
checksums depend on it."""

from __future__ import annotations

import gzip
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from data_helpers import (
    REAL,
    STEMS,
    error,
    expect_cifar,
    expect_mnist,
    idx_bytes,
    isolate,
    run_cli,
    same_arrays,
    serve_mnist,
    tiny_cifar,
    tiny_mnist,
    write_idx,
)

from lossjax import data
from lossjax.data import download, tfds_local


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    isolate(tmp_path, monkeypatch)


@pytest.fixture
def tfds_dir(tmp_path) -> Path:
    return tmp_path / "tensorflow_datasets"  # $TFDS_DATA_DIR, as isolate() sets it


def offline(monkeypatch):
    monkeypatch.setattr(download, "network_reachable", lambda urls, timeout=3.0: "offline")


# --------------------------------------------------------------------------------------------
# tfds downloads


def tfds_fetch(monkeypatch, hosts, tfds_dir) -> None:
    """What ``hosts`` serves as MNIST, fetched by tfds's DownloadManager into
    $TFDS_DATA_DIR/downloads the way a tfds builder fetches it (download folder, dataset name,
    registered checksums); then offline."""
    import tensorflow_datasets as tfds

    dm = tfds.download.DownloadManager(download_dir=tfds_dir / "downloads", dataset_name="mnist",
                                       force_checksums_validation=True,
                                       url_infos=download.registered_checksums("mnist"))
    dm.download(dict(data.DOWNLOADS["mnist"]))
    offline(monkeypatch)
    hosts[1].clear()


def tfds_download(tmp_path, monkeypatch, hosts, tfds_dir) -> dict[str, np.ndarray]:
    """Tiny MNIST, as tfds downloads it."""
    arrays = serve_mnist(tmp_path, monkeypatch, hosts[0])
    tfds_fetch(monkeypatch, hosts, tfds_dir)
    return arrays


@pytest.mark.parametrize("legacy", [False, True])
def test_tfds_downloads_are_found_and_used(tmp_path, monkeypatch, hosts, tfds_dir, capsys,
                                           legacy):
    arrays = tfds_download(tmp_path, monkeypatch, hosts, tfds_dir)
    folder = tfds_dir / "downloads" / "mnist"
    assert len(list(folder.glob("*.INFO"))) == 4  # tfds named them; lossjax reads its INFO
    if legacy:  # older tfds releases kept every dataset's downloads in one folder
        for f in folder.iterdir():
            f.rename(folder.parent / f.name)
        folder.rmdir()
        folder = folder.parent
    ds = data.load("mnist", data_dir=tmp_path / "home", val_size=0)
    same_arrays(ds, arrays)
    assert hosts[1] == []  # nothing fetched again
    assert ds.meta["source"]["kind"] == "tfds-download"
    assert ds.meta["source"]["form"] == "idx" and ds.meta["source"]["path"] == str(folder)
    assert list(ds.meta["verified"]) == list(STEMS)
    assert ds.meta["cache"]["status"] == "written"
    shutil.rmtree(tmp_path / "home" / "prepared")
    assert run_cli("data", "info", "mnist") == 0
    assert f"mnist          ok        tfds download IDX files in {folder}; cache " \
        in capsys.readouterr().out


def test_corrupt_tfds_download_is_rejected_with_the_checksum_message(tmp_path, monkeypatch,
                                                                      hosts, tfds_dir):
    arrays = tfds_download(tmp_path, monkeypatch, hosts, tfds_dir)
    info = next(p for p in (tfds_dir / "downloads" / "mnist").glob("*.INFO")
                if json.loads(p.read_text())["urls"] == [data.DOWNLOADS["mnist"][STEMS[1]]])
    labels = info.with_name(info.name.removesuffix(".INFO"))
    wrong = arrays["y_train"].copy()
    wrong[0] += 1  # a valid gzip of a valid IDX file, with one label changed
    labels.write_bytes(gzip.compress(idx_bytes(wrong)))
    msg = error(data.load, "mnist", data_dir=tmp_path / "home")
    assert msg.startswith(f"{labels}: content is not the official mnist train-labels-idx1-ubyte: "
                          f"expected tiny with sha256 {data.CHECKSUMS['mnist'][STEMS[1]].sha256}")
    status = data.info("mnist").datasets[0]
    assert status.status == "broken" and status.problem == msg


@pytest.mark.skipif(not (REAL / "mnist").is_dir(), reason=f"no MNIST copy in {REAL}")
def test_real_mnist_from_a_tfds_download(tmp_path, monkeypatch, hosts, tfds_dir):
    """The real MNIST in a tfds download folder, checked against the pinned checksums
    themselves. (The copy at hand may be re-compressed, so the sha256 registered for it is its
    own, not tfds's: the content check is the same either way.)"""
    for s in STEMS:
        hosts[0]("mnist", s, REAL / "mnist" / (s + ".gz"))
    tfds_fetch(monkeypatch, hosts, tfds_dir)
    monkeypatch.setenv("LOSSJAX_CACHE_DIR", str(tmp_path / "cache"))
    ds = data.load("mnist", val_size=0)
    assert ds.meta["source"]["kind"] == "tfds-download"
    assert ds.meta["verified"] == {s: data.CHECKSUMS["mnist"][s].sha256 for s in STEMS}
    assert ds.x_train.shape == (60000, 28, 28) and ds.y_test[:3].tolist() == [7, 2, 1]


def test_partial_tfds_download_is_not_a_copy(tmp_path, monkeypatch, hosts, tfds_dir):
    tfds_download(tmp_path, monkeypatch, hosts, tfds_dir)
    next((tfds_dir / "downloads" / "mnist").glob("*.INFO")).unlink()  # as tfds would see it
    status = data.info("mnist").datasets[0]
    assert status.status == "missing" and status.problem.startswith("no local files or cache; ")


# --------------------------------------------------------------------------------------------
# tfds prepared datasets


def png(image: np.ndarray) -> bytes:
    """PNG bytes: tfds encodes numpy images with TensorFlow, but stores given bytes as they are."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="png")
    return buf.getvalue()


def tfds_prepare(tfds_dir: Path, name: str, arrays, file_format: str = "array_record") -> Path:
    """``name`` prepared by a tfds builder as tfds's own builds it: features image and label
    (and id for CIFAR-10), version 3.0.1, each example keyed by its index in the official
    files, so tfds stores each split in its shuffled order."""
    import tensorflow_datasets as tfds

    shape = arrays["x_train"].shape[1:] if name == "cifar10" else (28, 28, 1)
    features = {"image": tfds.features.Image(shape=shape),
                "label": tfds.features.ClassLabel(num_classes=10)}
    if name == "cifar10":
        features["id"] = tfds.features.Text()

    dataset_name = name

    class TinyBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = dataset_name
        VERSION = tfds.core.Version("3.0.1")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self,
                                         features=tfds.features.FeaturesDict(features))

        def _split_generators(self, dl_manager):
            return {s: self._generate_examples(s) for s in ("train", "test")}

        def _generate_examples(self, split):
            for i, (x, y) in enumerate(zip(arrays["x_" + split], arrays["y_" + split],
                                           strict=True)):
                example = {"image": png(x), "label": int(y)}
                if name == "cifar10":
                    example["id"] = f"{split}_{i:05d}"
                yield i, example

    builder = TinyBuilder(data_dir=tfds_dir, file_format=file_format)
    builder.download_and_prepare()
    return Path(builder.data_dir)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_tfds_prepared_array_record_is_read_without_tensorflow(tmp_path, monkeypatch, tfds_dir,
                                                               capsys, name):
    arrays = tiny_mnist() if name == "mnist" else tiny_cifar()
    (expect_mnist if name == "mnist" else expect_cifar)(monkeypatch, arrays)
    folder = tfds_prepare(tfds_dir, name, arrays)
    assert folder == tfds_dir / name / "3.0.1"
    assert not (tfds_dir / "downloads" / name).exists()
    ds = data.load(name, data_dir=tmp_path / "home", val_size=0)
    same_arrays(ds, arrays)  # in the official order again: the content check needs it
    assert ds.meta["source"]["kind"] == "tfds-prepared"
    assert ds.meta["source"]["form"] == "tfds-array_record"
    assert ds.meta["source"]["path"] == str(folder)
    assert ds.meta["cache"]["status"] == "written"
    shutil.rmtree(tmp_path / "home" / "prepared")
    assert run_cli("data", "info", name) == 0
    out = capsys.readouterr()
    assert f"{name:<14} ok        tfds prepared array_record in {folder}; cache " in out.out
    assert "OpenCV" not in out.err


def test_corrupt_tfds_prepared_is_rejected_with_the_checksum_message(tmp_path, monkeypatch,
                                                                      tfds_dir):
    arrays = tiny_mnist()
    expect_mnist(monkeypatch, arrays)
    folder = tfds_prepare(tfds_dir, "mnist", {**arrays, "y_test": arrays["y_test"][::-1]})
    msg = error(data.load, "mnist", data_dir=tmp_path / "home")
    assert msg.startswith(f"{folder}[y_test]: content is not the official mnist "
                          "t10k-labels-idx1-ubyte: expected tiny with sha256 ")


def test_tfds_downloads_come_before_prepared_and_data_dir_before_both(tmp_path, monkeypatch,
                                                                      hosts, tfds_dir, capsys):
    arrays = tfds_download(tmp_path, monkeypatch, hosts, tfds_dir)
    prepared = tfds_prepare(tfds_dir, "mnist", arrays)
    downloads = tfds_dir / "downloads" / "mnist"
    status = data.info("mnist").datasets[0]
    assert status.source["kind"] == "tfds-download"
    assert status.notes == (f"also found: tfds prepared array_record in {prepared}",)
    local = write_idx(tmp_path / "mine", arrays)
    status = data.info("mnist", data_dir=local).datasets[0]
    assert status.source["kind"] == "local"
    assert status.notes == (f"also found: tfds download IDX files in {downloads}",
                            f"also found: tfds prepared array_record in {prepared}")
    data.load("mnist")  # caches from the tfds download: not "also found" any more
    status = data.info("mnist").datasets[0]
    assert status.source["kind"] == "cache"
    assert status.notes == (f"also found: tfds prepared array_record in {prepared}",)
    assert run_cli("data", "info", "mnist") == 0
    out = capsys.readouterr().out
    assert f"(built from tfds download IDX files in {downloads})" in out
    assert f"\n{'':<25}also found: tfds prepared array_record in {prepared}\n" in out


def fake_tfrecord(tfds_dir: Path, name: str) -> Path:
    """What a prepare in tfds's default format leaves: dataset_info.json and tfrecord shards
    (empty here: lossjax must recognise them, never read them)."""
    folder = tfds_dir / name / "3.0.1"
    folder.mkdir(parents=True)
    (folder / "dataset_info.json").write_text(json.dumps({"name": name, "version": "3.0.1"}))
    for split in ("train", "test"):
        (folder / f"{name}-{split}.tfrecord-00000-of-00001").write_bytes(b"")
    (tfds_dir / name / "incomplete.X1_3.0.1").mkdir()  # tfds's unfinished prepare: ignored
    return folder


def test_tfds_tfrecord_needs_tensorflow_and_says_so(tmp_path, monkeypatch, tfds_dir, capsys):
    folder = fake_tfrecord(tfds_dir, "mnist")
    note = (f"{folder}: tfds prepared mnist in tfrecord, which only TensorFlow reads; not used "
            "(with tensorflow installed, `tfds convert_format "
            f"--dataset_version_dir={folder} --out_file_format=array_record` adds an "
            "array_record copy that lossjax reads)")
    # The only copy: missing, and the message says why this one is not read.
    status = data.info("mnist").datasets[0]
    assert status.status == "missing" and status.problem.endswith(f"(needs a network); {note}")
    assert error(data.load, "mnist").endswith(f"`lossjax data prepare mnist --from DIR`; {note}")
    # Not the only copy: a one-line note, and no error.
    arrays = tiny_mnist()
    expect_mnist(monkeypatch, arrays)
    local = write_idx(tmp_path / "mine", arrays)
    same_arrays(data.load("mnist", data_dir=local, val_size=0), arrays)
    assert run_cli("data", "info", "mnist", "--data-dir", str(local)) == 0
    assert f"\n{'':<25}{note}\n" in capsys.readouterr().out


def test_finding_tfds_copies_imports_no_tfds(tmp_path, tfds_dir):
    """Looking costs a directory listing: only reading a prepared dataset needs tfds."""
    fake_tfrecord(tfds_dir, "mnist")  # no system copy of MNIST can answer first
    code = ("import sys\nfrom lossjax import data\n"
            "print(data.info('mnist').datasets[0].status, "
            "'tensorflow_datasets' in sys.modules)")
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={"TFDS_DATA_DIR": str(tfds_dir),
                                           "LOSSJAX_DATA_DIR": str(tmp_path / "home"),
                                           "PATH": "/usr/bin:/bin"})
    assert out.stdout.split() == ["missing", "False"], out.stderr
    assert tfds_local.tfds_root() == tfds_dir
