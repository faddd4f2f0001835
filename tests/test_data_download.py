"""Source 5 of lossjax.data: downloads through tensorflow-datasets, against a local HTTP server
that stands in for the dataset hosts (the ``hosts`` fixture), so tfds's real DownloadManager,
requests and checksum validation all run; and the failures with no network, which must be fast
and one line."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from conftest import PROXY_VARIABLES, REAL_NETWORK_REACHABLE
from data_helpers import (
    STEMS,
    error,
    expect_cifar,
    isolate,
    same_arrays,
    serve_mnist,
    tiny_cifar,
    write_cifar,
)

from lossjax import data
from lossjax.data import download


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    isolate(tmp_path, monkeypatch)


def test_no_files_and_no_network_fails_with_one_line(tmp_path):
    msg = error(data.load, "cifar10", data_dir=tmp_path / "d")
    assert msg == (
        "cifar10: no local files or cache, and no network to download them (offline (tests)); "
        "put cifar-10-python.tar.gz, cifar-10-batches-py/ (data_batch_1..5, test_batch), "
        "cifar-10-binary.tar.gz, cifar-10-batches-bin/, or cifar10.npz in "
        f"{tmp_path / 'd' / 'cifar10'} or {tmp_path / 'd'}, "
        "or run `lossjax data prepare cifar10 --from DIR`")


def test_unreachable_host_fails_fast(tmp_path, monkeypatch):
    for var in PROXY_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(download, "network_reachable", REAL_NETWORK_REACHABLE)
    monkeypatch.setitem(data.DOWNLOADS, "mnist", {s: f"https://lossjax.invalid/{s}.gz"
                                                  for s in STEMS})
    start = time.perf_counter()
    msg = error(data.load, "mnist", data_dir=tmp_path / "d")
    assert time.perf_counter() - start < 10
    assert "no network to download them (cannot reach lossjax.invalid:443" in msg
    assert "train-images-idx3-ubyte[.gz]" in msg and "mnist.npz" in msg


def test_read_only_cache_means_no_download(tmp_path, monkeypatch):
    (tmp_path / "ro").mkdir(mode=0o555)
    monkeypatch.setenv("LOSSJAX_CACHE_DIR", str(tmp_path / "ro"))
    msg = error(data.load, "mnist", data_dir=tmp_path / "d")
    assert msg.startswith(f"mnist: no local files or cache, and nowhere to download them "
                          f"({tmp_path / 'ro'} is read-only (mode 555); set $LOSSJAX_CACHE_DIR)")


def test_registered_checksums_through_the_public_tfds_api():
    """lossjax's one read of tfds's checksum registry (``tfds.builder_cls(name).url_infos``):
    this fails if a tfds release moves or reshapes it, before any user's download does."""
    for name, urls in data.DOWNLOADS.items():
        registered = download.registered_checksums(name)
        for key, url in urls.items():
            assert url in registered, (name, url)  # else tfds refuses to download it
            info = registered[url]
            assert info.filename == (key if name == "cifar10" else key + ".gz")
            assert len(info.checksum) == 64 and int(info.checksum, 16) >= 0
            assert int(info.size) > 0
    assert download.registered_checksums("mnist")[data.DOWNLOADS["mnist"][STEMS[0]]].checksum \
        == "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"


def test_download_through_tfds_then_from_the_download_folder(tmp_path, monkeypatch, hosts):
    serve, calls = hosts
    arrays = serve_mnist(tmp_path, monkeypatch, serve)
    ds = data.load("mnist", data_dir=tmp_path / "home", val_size=0)
    same_arrays(ds, arrays)
    assert ds.meta["source"]["kind"] == "download" and ds.meta["source"]["form"] == "idx"
    assert ds.meta["source"]["path"] == str(tmp_path / "home" / "downloads" / "mnist")
    assert sorted(calls) == sorted(f"/mnist/{s}.gz" for s in STEMS)
    assert all(Path(f).is_file() for f in ds.meta["source"]["files"])
    assert ds.meta["cache"]["status"] == "written"

    # Without the prepared cache, the files downloaded before serve: no network needed.
    shutil.rmtree(tmp_path / "home" / "prepared")
    monkeypatch.setattr(download, "network_reachable", lambda urls, timeout=3.0: "offline")
    calls.clear()
    again = data.load("mnist", data_dir=tmp_path / "home", val_size=0)
    same_arrays(again, arrays)
    assert calls == [] and again.meta["source"]["kind"] == "download"
    assert again.meta["source"]["files"] == ds.meta["source"]["files"]

    # A damaged download no longer has its registered sha256: it is not used.
    shutil.rmtree(tmp_path / "home" / "prepared")
    damaged = Path(ds.meta["source"]["files"][0])
    raw = damaged.read_bytes()
    damaged.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    assert "no network to download them (offline)" in error(
        data.load, "mnist", data_dir=tmp_path / "home")


def test_download_of_cifar_binary_archive(tmp_path, monkeypatch, hosts):
    serve, _ = hosts
    arrays = tiny_cifar()
    expect_cifar(monkeypatch, arrays)
    folder = write_cifar(tmp_path / "server", arrays, "bin-tar")
    serve("cifar10", "cifar-10-binary.tar.gz", folder / "cifar-10-binary.tar.gz")
    ds = data.load("cifar10", data_dir=tmp_path / "home", val_size=0)
    same_arrays(ds, arrays)
    assert ds.meta["source"]["form"] == "cifar-bin-tar"


def test_download_with_wrong_registered_checksum_fails(tmp_path, monkeypatch, hosts):
    serve, _ = hosts
    serve_mnist(tmp_path, monkeypatch, serve, registered_sha="0" * 64)
    msg = error(data.load, "mnist", data_dir=tmp_path / "home")
    assert msg.startswith("mnist: download through tensorflow-datasets failed: "
                          "NonMatchingChecksumError: Artifact http://127.0.0.1:")
    assert "0" * 64 in msg and "train-images-idx3-ubyte[.gz]" in msg


def test_unregistered_url_is_refused(tmp_path, monkeypatch, hosts):
    serve, calls = hosts
    serve_mnist(tmp_path, monkeypatch, serve)
    monkeypatch.setattr(download, "registered_checksums", lambda name: {})
    msg = error(data.load, "mnist", data_dir=tmp_path / "home")
    assert msg.startswith("mnist: download through tensorflow-datasets failed: ValueError: "
                          "Missing checksums url: http://127.0.0.1:")
    assert calls == []
