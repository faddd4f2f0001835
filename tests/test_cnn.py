"""model.kind beyond the MLP: the built-in CNN and a user's Flax module, trained by the same
engine under the same promises (a member alone = in a crowd, divergence its own, exact resume,
1 = N devices), and a user's module checked before any folder is made."""

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest
from conftest import (
    FORCED_NPROC,
    assert_same_files,
    forced_devices_env,
    member_numbers,
    one_line,
    quiet_sweep,
    small_config,
)

from lossjax import analysis, engine, losses, model, preflight, sweep
from lossjax import config as config_lib

NAMES = list(losses.LOSSES)
FNS = [losses.LOSSES[n] for n in NAMES]
CNN = {"kind": "cnn", "channels": [4, 8], "hidden": [[16]]}


def _images(n=240, k=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 8, 8, 1), np.float32)
    y = rng.integers(0, k, n)
    return x, y, x[:50], y[:50], x[50:110], y[50:110]


def _settings(**kw):
    base = dict(hidden=(16,), num_classes=5, activation="relu", init="lecun_normal",
                dtype="float32", optimizer="momentum", momentum=0.9, schedule="constant",
                batch_size=32, epochs=2, block_size=4, kind="cnn", channels=(4, 8))
    return engine.TrainSettings(**{**base, **kw})


def _member(i, lr, seed, scale=1.0):
    return engine.Member(i, "mse", lr, 0.0, scale, seed, (16,), kind="cnn", channels=(4, 8))


def _numbers(members, index, settings, epochs=2):
    """What the engine reports for member ``index``, and its final parameters."""
    g = engine.Group(settings, members, NAMES, FNS, _images(), engine.make_mesh())
    return member_numbers(g, index, epochs)


# ---- the model ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, channels, hidden", [
    ((8, 8, 1), (16, 32), (64,)), ((28, 28, 1), (32, 64), (128,)),
    ((32, 32, 3), (32, 64, 128), (128,))])
def test_the_cnn_s_parameter_count_is_what_flax_makes(shape, channels, hidden):
    net = model.make_model("cnn", hidden, 10, channels=channels)
    params = jax.eval_shape(net.init, jax.random.key(0), np.zeros((1, *shape), np.float32))
    assert sum(p.size for p in jax.tree.leaves(params)) == model.cnn_param_count(
        shape, channels, hidden, 10)


def test_init_scale_multiplies_the_kernels_only():
    g = engine.Group(_settings(block_size=1), [_member(0, 0.1, 3), _member(1, 0.1, 3, 2.0)],
                     NAMES, FNS, _images(), engine.make_mesh())
    state = g.init_state()
    one, two = (jax.tree.map(np.asarray, state[i]["params"]) for i in (0, 1))
    paths = jax.tree_util.tree_flatten_with_path(one)[0]
    for (path, a), b in zip(paths, jax.tree.leaves(two), strict=True):
        factor = 2.0 if path[-1].key == "kernel" else 1.0
        np.testing.assert_array_equal(a[0] * np.float32(factor), b[0])
    assert any(p[-1].key == "kernel" and "Conv" in str(p) for p, _ in paths)


def test_kind_and_channels_make_separate_groups():
    mlp = engine.Member(0, "mse", 0.1, 0.0, 1.0, 0, (16,))
    a, b = _member(1, 0.1, 0), dataclasses.replace(_member(2, 0.1, 0), channels=(4,))
    assert sweep.group_members([mlp, a, b, _member(3, 0.2, 1)]) == [[mlp], [a, _member(3, 0.2, 1)],
                                                                     [b]]


def test_an_mlp_config_resolves_as_before():
    cfg = config_lib.parse_config({"name": "x"})
    assert cfg.model.kind == "mlp"
    assert set(config_lib.config_to_dict(cfg)["model"]) == {
        "hidden", "activation", "init", "init_scale", "dtype"}
    cnn = config_lib.parse_config({"name": "x", "model": CNN})
    assert config_lib.config_to_dict(cnn)["model"]["channels"] == [4, 8]


# ---- the promises ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_cnn_member_computes_the_same_alone_or_among_others():
    # Also: the crowd holds a member whose rate diverges, and the target does not notice.
    settings = _settings()
    target = _member(0, 0.3, 7)
    alone = _numbers([target], 0, settings)
    crowd = [_member(i, 0.05 * (i + 1), i) for i in range(6)]
    crowd[1] = _member(1, 1e6, 1)
    crowd[5] = dataclasses.replace(target, index=5)
    g = engine.Group(settings, crowd, NAMES, FNS, _images(), engine.make_mesh())
    state, m = g.train_epoch(g.init_state(), 0)
    assert m["diverged"][1] and not m["diverged"][[0, 2, 3, 4, 5]].any()
    np.testing.assert_equal(alone, _numbers(crowd, 5, settings))


ON_DEVICES = textwrap.dedent("""
    import hashlib, sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    import test_cnn as t
    from lossjax import engine
    numbers = t._numbers([t._member(0, 0.3, 7), t._member(1, 0.1, 2)], 1, t._settings(block_size=1))
    digest = hashlib.sha256()
    for v in numbers:
        digest.update(np.ascontiguousarray(v).tobytes())
    print("DIGEST", digest.hexdigest())
""")


@pytest.mark.slow
def test_a_cnn_member_is_bitwise_the_same_on_1_and_2_devices():
    digests = []
    for n in (1, 2):
        r = subprocess.run([sys.executable, "-c", ON_DEVICES, str(Path(__file__).parent)],
                           env=forced_devices_env(n, nproc=FORCED_NPROC), capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        digests += [s.split()[1] for s in r.stdout.splitlines() if s.startswith("DIGEST")]
    assert len(digests) == 2 and digests[0] == digests[1], digests


@pytest.mark.slow
def test_a_cnn_sweep_resumes_exactly(tmp_path, capsys):
    from test_resume_integrity import _interrupted_sweep

    # Two groups, so that the interruption (the sixth epoch) falls inside the second.
    changes = {"model": {**CNN, "hidden": [[16], [8]]}, "epochs": 3, "seeds": [0]}
    ref = small_config(tmp_path, tmp_path / "ref", **changes)
    assert quiet_sweep(capsys, ref)[0] == 0
    cut = small_config(tmp_path, tmp_path / "cut", **changes)
    _interrupted_sweep(cut)
    code, err = quiet_sweep(capsys, cut, "--resume")
    assert code == 0, err
    assert_same_files(tmp_path / "ref" / "small", tmp_path / "cut" / "small")


# ---- from a config --------------------------------------------------------------------------

NET = """
import flax.linen as nn
import jax.numpy as jnp


class Net(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3))(x)
        return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))
"""


def _module(tmp_path, monkeypatch, source: str, name: str) -> str:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    return f"module:{name}:Net"


ONE = {"epochs": 1, "seeds": [0], "losses": ["cross_entropy"], "block_size": 1}


@pytest.fixture
def no_plots(monkeypatch):
    """Plots cost more than these sweeps' training; the report is kept."""
    from lossjax import plots

    monkeypatch.setattr(plots, "plot_results", lambda out: None)


def test_a_cnn_trains_on_digits(tmp_path, capsys, no_plots):
    cfg = small_config(tmp_path, **ONE, model=CNN)
    code, err = quiet_sweep(capsys, cfg)
    assert code == 0, err
    folder = tmp_path / "runs" / "small"
    epochs = pd.read_csv(folder / "epochs.csv")
    assert np.isfinite(epochs["train_loss"]).all() and not epochs["diverged"].any()
    assert set(epochs["model"]) == set(pd.read_csv(folder / "summary.csv")["model"]) == {
        "cnn 4-8"}
    count = model.cnn_param_count((8, 8, 1), (4, 8), (16,), 10)
    assert "a CNN (3x3 convolutions of 4-8 channels" in (folder / "report.md").read_text()
    assert f"({count:,} parameters per member)" in (folder / "report.md").read_text()


def test_a_folder_without_the_model_column_reads_as_an_mlp_s():
    folder = Path(__file__).resolve().parent.parent / "results" / "digits"
    if not (folder / "epochs.csv").exists():
        pytest.skip("no committed digits results")
    res = analysis.load_results(folder)
    assert "model" not in pd.read_csv(folder / "summary.csv").columns
    assert set(res.epochs["model"]) == set(res.summary["model"]) == {"mlp"}
    assert analysis.model_names(res) == ["mlp"] and "MLP" in analysis.describe(res)


def test_a_user_module_trains_on_digits(tmp_path, capsys, monkeypatch, no_plots):
    kind = _module(tmp_path, monkeypatch, NET, "lossjax_test_net")
    cfg = small_config(tmp_path, **ONE, name="mine", model={"kind": kind})
    code, err = quiet_sweep(capsys, cfg)
    assert code == 0, err
    env = json.loads((tmp_path / "runs" / "mine" / "env.json").read_text())
    assert env["model"]["module"]["sha256"] == __import__("hashlib").sha256(
        (tmp_path / "lossjax_test_net.py").read_bytes()).hexdigest()
    epochs = pd.read_csv(tmp_path / "runs" / "mine" / "epochs.csv")
    assert (epochs["model"] == kind).all()
    assert "Model: `module:lossjax_test_net:Net`" in (
        tmp_path / "runs" / "mine" / "report.md").read_text()


BAD = {
    "missing": (None, "cannot import module"),
    "no_field": ("""
        import flax.linen as nn
        class Net(nn.Module):
            def __call__(self, x):
                return x
        """, "no num_classes field"),
    "shape": ("""
        import flax.linen as nn
        class Net(nn.Module):
            num_classes: int
            @nn.compact
            def __call__(self, x):
                return nn.Dense(3)(x.reshape(x.shape[0], -1))
        """, "returned shape (2, 3)"),
    "dtype": ("""
        import flax.linen as nn
        import jax.numpy as jnp
        class Net(nn.Module):
            num_classes: int
            @nn.compact
            def __call__(self, x):
                return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1)).astype(jnp.int32)
        """, "returned int32 logits"),
    "nonfinite": ("""
        import flax.linen as nn
        import jax.numpy as jnp
        class Net(nn.Module):
            num_classes: int
            @nn.compact
            def __call__(self, x):
                init = lambda key, shape, dtype=None: jnp.full(shape, jnp.nan)
                return nn.Dense(self.num_classes, kernel_init=init)(x.reshape(x.shape[0], -1))
        """, "non-finite initial parameters"),
    "raises": ("""
        import flax.linen as nn
        class Net(nn.Module):
            num_classes: int
            @nn.compact
            def __call__(self, x):
                raise RuntimeError("boom at init")
        """, "raised RuntimeError: boom at init"),
    "not_a_module": ("""
        def Net(num_classes):
            return None
        """, "not a Flax linen Module class"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_user_module_is_one_line_and_no_folder(tmp_path, capsys, monkeypatch, case):
    source, needle = BAD[case]
    name = f"lossjax_bad_{case}"
    kind = (f"module:{name}:Net" if source is None
            else _module(tmp_path, monkeypatch, source, name))
    cfg = small_config(tmp_path, model={"kind": kind})
    code, err = quiet_sweep(capsys, cfg)
    assert code == 2
    one_line(err, "lossjax: error: ", "model.kind", name, needle)
    assert not (tmp_path / "runs" / "small").exists()


def test_a_cnn_pooling_past_the_image_is_one_line(tmp_path, capsys):
    cfg = small_config(tmp_path, model={"kind": "cnn", "channels": [4, 4, 4, 4]})
    code, err = quiet_sweep(capsys, cfg)
    assert code == 2
    one_line(err, "model.channels", "8x8")
    assert not (tmp_path / "runs" / "small").exists()


def test_the_memory_check_counts_the_cnn(tmp_path):
    cfg = config_lib.parse_config({"name": "x", "model": CNN, "block_size": 1})
    members = sweep.expand_members(cfg)
    assert preflight._param_count((8, 8, 1), (16,), 10, cfg) == model.cnn_param_count(
        (8, 8, 1), (4, 8), (16,), 10)
    assert preflight._activations(cfg, (8, 8, 1), (16,)) > 0
    preflight.check_resources(cfg, sweep.group_members(members), (8, 8, 1), 10, tmp_path)


def test_images_reach_the_cnn_as_nhwc_views_of_the_mlp_s_features():
    from lossjax import data

    raw = data.load("digits")
    flat = data.preprocess(raw)
    ds = sweep.model_input("cnn", flat, raw.x_train.shape[1:])
    assert ds.x_train.shape == (len(flat.x_train), 8, 8, 1)
    assert np.shares_memory(ds.x_train, flat.x_train)
    np.testing.assert_array_equal(ds.x_val[:, 2, 5, 0], raw.x_val[:, 2, 5] / np.float32(16))
    assert sweep.model_input("mlp", flat, raw.x_train.shape[1:]) is flat
    x48 = np.arange(2 * 48, dtype=np.float32).reshape(2, 48)
    rgb = dataclasses.replace(flat, x_train=x48, x_val=x48[:0], x_test=x48[:1])
    x = sweep.model_input("module:m:Net", rgb, (4, 4, 3)).x_train
    assert x.shape == (2, 4, 4, 3) and x[1, 3, 2, 1] == 48 + (3 * 4 + 2) * 3 + 1


@pytest.mark.slow
def test_a_folder_started_before_the_model_column_resumes(tmp_path, capsys):
    from test_resume_integrity import _interrupted_sweep

    changes = {"model": {"hidden": [[8], [4]]}, "epochs": 3, "seeds": [0]}
    ref = small_config(tmp_path, tmp_path / "ref", **changes)
    assert quiet_sweep(capsys, ref)[0] == 0
    cut = small_config(tmp_path, tmp_path / "cut", **changes)
    _interrupted_sweep(cut)
    table = tmp_path / "cut" / "small" / "epochs.csv"
    pd.read_csv(table, dtype=str, keep_default_na=False).drop(columns="model").to_csv(
        table, index=False)
    code, err = quiet_sweep(capsys, cut, "--resume")
    assert code == 0, err
    assert_same_files(tmp_path / "ref" / "small", tmp_path / "cut" / "small")
