"""Multi-digit MNIST (Sun 2019, "Multi-digit MNIST for few-shot learning",
https://github.com/shaohua0116/MultiDigitMNIST): ``double_mnist`` (100 classes "00".."99", two
MNIST digits side by side, 28x56) and ``triple_mnist`` (1,000 classes, 28x84), the label of
digits a, b being 10a + b (100a + 10b + c).

Sun's release splits the classes for few-shot learning (64/16/20 of them); here every class is
in both training and test, for ordinary classification with many classes. The images are built
from the verified MNIST files, deterministically: each example of class "ab" is a random MNIST
image of digit a beside one of digit b, drawn from ``split_seed``. Training examples use MNIST's
training images only and test examples its test images only, so no digit image is in both.

``per_class`` training examples per class (balanced), and a fifth as many test examples: by
default 500 and 100 for double_mnist (50,000 and 10,000 images), 50 and 10 for triple_mnist
(50,000 and 10,000), so a sweep stays MNIST-sized. The built arrays are cached under
``prepared/<name>-<recipe hash>/``; the meta records the recipe (MNIST's checksums included)
and the sha256 of the arrays, and a cached copy whose arrays no longer match is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import warnings
from pathlib import Path

import numpy as np

from lossjax.data import cache as _cache
from lossjax.data.checksums import PARTS

DIGITS = {"double_mnist": 2, "triple_mnist": 3}
PER_CLASS = {"double_mnist": 500, "triple_mnist": 50}
TEST_FRACTION = 5  # test examples per class = per_class // 5 (at least 1)
RECIPE_VERSION = 1  # bump when the construction changes, so old caches are not reused


def class_names(name: str) -> tuple[str, ...]:
    n = DIGITS[name]
    return tuple(f"{i:0{n}d}" for i in range(10 ** n))


def build(name: str, mnist: dict[str, np.ndarray], mnist_meta: dict, per_class: int | None,
          split_seed: int, cache_root: Path) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays of ``name`` made from MNIST's, and their meta (recipe, sha256, cache)."""
    per_class = per_class or PER_CLASS[name]
    recipe = {"name": name, "version": RECIPE_VERSION, "digits": DIGITS[name],
              "per_class_train": per_class,
              "per_class_test": max(1, per_class // TEST_FRACTION),
              "split_seed": split_seed, "mnist_sha256": mnist_meta.get("verified", {}),
              "method": "each example: random MNIST images of its digits side by side, drawn "
                        "with split_seed; train from MNIST train, test from MNIST test"}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    d = _cache.prepared_dir(f"{name}-{key}", cache_root)
    arrays = _read(d)
    status = "hit"
    if arrays is None:
        rng = np.random.default_rng([split_seed, 2])
        arrays = {}
        for s, n in (("train", recipe["per_class_train"]), ("test", recipe["per_class_test"])):
            arrays["x_" + s], arrays["y_" + s] = _compose(
                mnist["x_" + s], mnist["y_" + s], DIGITS[name], n, rng)
        status = _write(d, arrays, recipe)
    meta = {"name": name,
            "source": {"kind": "built", "form": name, "path": str(d),
                       "built_from": mnist_meta.get("source")},
            "recipe": recipe, "built_sha256": {k: _sha(arrays[k]) for k in PARTS},
            "verified": mnist_meta.get("verified", {}),
            "cache": {"path": str(d), "status": status}}
    return arrays, meta


def _compose(x: np.ndarray, y: np.ndarray, digits: int, per_class: int,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` examples of each of the 10**digits classes, class by class."""
    by_digit = [np.flatnonzero(y == d) for d in range(10)]
    labels = np.repeat(np.arange(10 ** digits), per_class)
    parts = []
    for place in range(digits):  # the leftmost digit first
        digit = labels // 10 ** (digits - 1 - place) % 10
        pick = np.empty(len(labels), np.int64)
        for d in range(10):
            rows = np.flatnonzero(digit == d)
            pick[rows] = by_digit[d][rng.integers(len(by_digit[d]), size=len(rows))]
        parts.append(x[pick])
    return np.concatenate(parts, axis=2), labels.astype(np.int32)


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _read(d: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays if they are all there and still match their recorded sha256."""
    try:
        record = json.loads((d / "meta.json").read_text())
        arrays = {k: np.load(d / f"{k}.npy", allow_pickle=False) for k in PARTS}
    except (OSError, ValueError):
        return None
    if any(_sha(arrays[k]) != record.get("built_sha256", {}).get(k) for k in PARTS):
        warnings.warn(f"ignoring damaged cache {d}: its arrays differ from those recorded; "
                      "rebuilding", stacklevel=4)
        return None
    return arrays


def _write(d: Path, arrays: dict[str, np.ndarray], recipe: dict) -> str:
    """Best effort, as the cache of the other datasets: building again is only slower."""
    tag = f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _cache.check_writable(d)
        d.mkdir(parents=True, exist_ok=True)
        for k in PARTS:
            np.save(d / f"{k}{tag}.npy", arrays[k], allow_pickle=False)
            os.replace(d / f"{k}{tag}.npy", d / f"{k}.npy")
        record = {"recipe": recipe, "built_sha256": {k: _sha(arrays[k]) for k in PARTS}}
        (d / f"meta{tag}.json").write_text(json.dumps(record, indent=1))
        os.replace(d / f"meta{tag}.json", d / "meta.json")  # last: a half-written cache is none
    except OSError as e:
        return f"not written: {' '.join(str(e).split())}"
    return "written"
