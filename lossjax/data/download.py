"""Source 5: the official files, downloaded through tensorflow-datasets where there is a
network.

tfds is used for what it does well and through its public API only:

- ``tfds.builder_cls(name).url_infos`` (a class property of the public ``tfds.core.DatasetBuilder``)
  gives the size and sha256 tfds registers for each official URL; :func:`registered_checksums`
  is the one place lossjax reads it.
- ``tfds.download.DownloadManager(..., force_checksums_validation=True, url_infos=...)``
  downloads, refuses a URL without a registered sha256 and a file that does not match it, and
  keeps the files in ``<cache>/downloads/<name>/``. ``url_infos`` is how tfds's own builders
  hand it the registered checksums.

Two things happen before tfds is asked to download. Files downloaded before are found in that
folder by their registered size and sha256, so no network is needed for them (and no reliance
on how tfds names its cached files). And a quick connection test runs, because without a
network tfds retries for minutes; with no network the load fails at once with one line saying
where to put the files instead.
"""

from __future__ import annotations

import hashlib
import os
import socket
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lossjax.data.cache import ENV_CACHE_DIR, check_writable
from lossjax.data.checksums import message_line
from lossjax.data.registry import DOWNLOADS
from lossjax.data.types import Missing, Source
from lossjax.errors import DataError


def registered_checksums(name: str) -> Mapping[str, Any]:
    """{URL: tfds ``UrlInfo``} for the dataset tfds calls ``name``: what tfds registers for its
    downloads (``.checksum`` the sha256, ``.size`` in bytes, ``.filename``), read through the
    public builder class. tests/test_data_download.py checks that this still works, and that it
    covers every URL in :data:`~lossjax.data.registry.DOWNLOADS`, against the installed tfds."""
    import tensorflow_datasets as tfds  # here: ~0.5 s to import, and only a download needs it

    return dict(tfds.builder_cls(name).url_infos or {})


def network_reachable(urls: Iterable[str], timeout: float = 3.0) -> str | None:
    """Returns None if each host (or the proxy requests would use) accepts a TCP connection,
    else the reason. Without this, tfds retries an unreachable host for about 3.5 minutes."""
    proxies = urllib.request.getproxies()
    for url in urls:
        u = urllib.parse.urlsplit(url)
        target = u.hostname or ""
        if u.scheme in proxies and not urllib.request.proxy_bypass(target):
            u = urllib.parse.urlsplit(proxies[u.scheme])
        host, port = u.hostname or "", u.port or (443 if u.scheme == "https" else 80)
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as e:
            return f"cannot reach {host}:{port} ({e.strerror or e})"
    return None


def fetch(name: str, cache_root: Path, where: str) -> Source:
    """The official files of ``name``, from the download folder or downloaded now; ``where``
    (what to put where, instead) ends every failure message."""
    urls = DOWNLOADS[name]
    download_dir = cache_root / "downloads"
    try:
        check_writable(download_dir)
    except PermissionError as e:
        raise Missing(f"{name}: no local files or cache, and nowhere to download them "
                      f"({message_line(e)}; set ${ENV_CACHE_DIR}); {where}") from e
    try:
        import tensorflow_datasets as tfds  # here: ~0.5 s, and its absence is only a Missing
    except ImportError as e:
        raise Missing(f"{name}: no local files or cache, and tensorflow-datasets is not "
                      f"installed to download them ({message_line(e)}); {where}") from e
    try:
        registered = registered_checksums(name)
    except Exception as e:  # a tfds that changed its API: say so rather than crash
        raise DataError(f"{name}: cannot read the checksums tensorflow-datasets registers for "
                        f"its downloads: {type(e).__name__}: {message_line(e)}; {where}") from e
    form = "idx" if name != "cifar10" else "cifar-bin-tar"
    files = _downloaded_before(download_dir / name, urls, registered)
    if files is None:
        reason = network_reachable(urls.values())
        if reason is not None:
            raise Missing(f"{name}: no local files or cache, and no network to download them "
                          f"({reason}); {where}, or run `lossjax data prepare {name} --from DIR`")
        try:
            dm = tfds.download.DownloadManager(download_dir=download_dir, dataset_name=name,
                                               force_checksums_validation=True,
                                               url_infos=registered)
            paths = dm.download(dict(urls))
        except Exception as e:  # requests, tfds checksum and filesystem errors all end here
            raise DataError(f"{name}: download through tensorflow-datasets failed: "
                            f"{type(e).__name__}: {message_line(e)}; {where}") from e
        files = {k: Path(os.fspath(p)) for k, p in paths.items()}
    return Source("download", form, download_dir / name, files)


def _downloaded_before(folder: Path, urls: dict[str, str], registered: Mapping[str, Any]
                       ) -> dict[str, Path] | None:
    """{key: file} when ``folder`` holds, for every URL, a file with its registered size and
    sha256; else None. Only files of a registered size are hashed, so this is cheap."""
    if not folder.is_dir() or any(u not in registered for u in urls.values()):
        return None
    by_size: dict[int, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file():
            by_size.setdefault(p.stat().st_size, []).append(p)
    digests: dict[Path, str] = {}
    found = {}
    for key, url in urls.items():
        info = registered[url]
        for p in by_size.get(int(info.size), []):
            if p not in digests:
                with open(p, "rb") as f:
                    digests[p] = hashlib.file_digest(f, "sha256").hexdigest()
            if digests[p] == info.checksum:
                found[key] = p
                break
        else:
            return None
    return found
