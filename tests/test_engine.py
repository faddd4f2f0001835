"""The sweep engine on small random data (shapes only: these tests are about the engine's
mechanics, not learning). Learning on real data is covered by the sweep tests."""

import dataclasses
import os
import textwrap

import jax
import jax.monitoring
import numpy as np
import pytest
from conftest import member_numbers, run_in_subprocess

from lossjax import engine, losses

NAMES = list(losses.LOSSES)
FNS = [losses.LOSSES[n] for n in NAMES]


def _data(n=240, d=20, k=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, d), np.float32)
    y = rng.integers(0, k, n)
    return x, y, x[:50], y[:50], x[50:110], y[50:110]


def _settings(**kw):
    base = dict(hidden=(16,), num_classes=5, activation="relu", init="lecun_normal",
                dtype="float32", optimizer="momentum", momentum=0.9, schedule="constant",
                batch_size=32, epochs=3, block_size=4)
    return engine.TrainSettings(**{**base, **kw})


def _members(lrs):
    return [engine.Member(i, loss, lr, 0.0, 1.0, seed, (16,))
            for i, (loss, lr, seed) in enumerate(lrs)]


def _group(members, settings=None, mesh=None):
    return engine.Group(settings or _settings(), members, NAMES, FNS, _data(),
                        mesh or engine.make_mesh())


def _run(members, epochs=3, mesh=None, settings=None):
    g = _group(members, settings, mesh)
    state = g.init_state()
    history = []
    for e in range(epochs):
        state, m = g.train_epoch(state, e)
        history.append({**m, **g.evaluate(state)})
    return g, history


GRID = [(loss, lr, seed) for loss in NAMES for lr in (0.05, 0.5) for seed in (0, 1)]
EPOCHS = 3


@pytest.fixture(scope="module")
def baseline():
    """The GRID sweep for EPOCHS epochs, with every compilation after the first epoch counted."""
    compiles = []

    def listener(name, secs, **kw):
        if name == "/jax/core/compile/backend_compile_duration":
            compiles.append(name)

    engine.clear_programs()  # so this group builds its programs, and counts them
    g = _group(_members(GRID))  # 16 members in 4 blocks of 4: one program serves every call
    state = g.init_state()
    state, m = g.train_epoch(state, 0)
    g.evaluate(state)
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        for e in range(1, EPOCHS):
            state, m = g.train_epoch(state, e)
            g.evaluate(state)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    _, history = _run(_members(GRID), epochs=EPOCHS)
    return g, history, compiles


def _assert_same(a, b, rows=slice(None)):
    for ea, eb in zip(a, b, strict=True):
        for k in ea:
            np.testing.assert_array_equal(ea[k][rows], eb[k][rows], err_msg=k)


def test_same_inputs_same_numbers(baseline):
    _, again = _run(_members(GRID), epochs=EPOCHS)
    _assert_same(baseline[1], again)


def test_training_lowers_the_loss(baseline):
    hist = baseline[1]
    ce = [i for i, (loss, lr, _) in enumerate(GRID) if loss == "cross_entropy" and lr == 0.5]
    assert np.all(hist[-1]["train_loss"][ce] < hist[0]["train_loss"][ce])


def test_no_recompilation_across_epochs(baseline):
    g, _, compiles = baseline
    assert compiles == []
    # One program each: init, epoch, and evaluation per split shape (val, test). The fixture
    # trained a second group after this one: it counts its own programs, not these.
    assert g.compiled_counts() == {"init": 1, "epoch": 1, "eval": 2}


def test_a_group_like_an_earlier_one_compiles_nothing(baseline):
    # The fixture's second group had the first one's settings, losses, shapes and mesh: it
    # called the same programs (stages, in-process resumes and repeated runs are such groups).
    g = _group(_members(GRID[:4]))  # fewer members, same block program
    assert g.programs is baseline[0].programs
    state = g.init_state()
    for e in range(2):
        state, _ = g.train_epoch(state, e)
        g.evaluate(state)
    assert g.compiled_counts() == {}
    # another shape is another program
    other = _group(_members(GRID[:4]), _settings(block_size=2))
    assert other.programs is not g.programs


def test_diverged_member_is_frozen_and_others_are_untouched(baseline):
    blowup = list(GRID)
    # mse at an absurd rate overflows float32 within an epoch.
    i = blowup.index(("mse", 0.5, 1))
    blowup[i] = ("mse", 1e6, 1)
    _, b = _run(_members(blowup), epochs=EPOCHS)  # same blocks as the baseline
    assert b[0]["diverged"][i] and b[-1]["diverged"][i]
    assert np.isnan(b[-1]["train_loss"][i])
    # Frozen: its parameters stay at their initial (last good) values, so evaluation is fixed.
    assert b[1]["val_acc"][i] == b[2]["val_acc"][i]
    others = np.arange(len(GRID)) != i
    assert not b[-1]["diverged"][others].any()
    _assert_same(baseline[1], b, others)


def test_overflowing_branch_does_not_poison_other_losses():
    # Logits near 100 overflow exp_mse (and its gradient), but an mse member must see a finite
    # gradient: the unselected branch is fed zeros (see engine._select_loss).
    logits = jax.numpy.full((4, 5), 100.0)
    y = jax.nn.one_hot(np.arange(4) % 5, 5)
    idx = NAMES.index("mse")
    grad = jax.grad(lambda s, i: engine._select_loss(FNS, i, s, y).sum())
    g = jax.jit(grad)(logits, idx)
    np.testing.assert_allclose(g, losses.mse_grad(logits, y), rtol=1e-6)
    batched = jax.jit(jax.vmap(grad, in_axes=(None, 0)))(logits, np.arange(4))
    assert np.isfinite(batched[: NAMES.index("exp_mse")]).all()


def _member_numbers(members, index, settings, mesh=None, epochs=2):
    """Everything the engine reports for member ``index`` of ``members``, plus its final
    parameters, after training the group for ``epochs``."""
    return member_numbers(_group(members, settings, mesh), index, epochs)


def _assert_bitwise(a, b):
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.slow
@pytest.mark.parametrize("block_size", [1, 8])
def test_a_member_computes_the_same_alone_or_among_others(block_size):
    # XLA's CPU kernels split batched work differently for different batch shapes; fixed
    # blocks make a member's numbers independent of who else trains (here: 1 member padded to
    # a block, or 11 members in two blocks, at another position in its block).
    settings = _settings(block_size=block_size)
    target = engine.Member(0, "mse", 0.3, 0.0, 1.0, 7, (16,))
    alone = _member_numbers([target], 0, settings)
    crowd = [engine.Member(i, "mse", 0.05 * (i + 1), 0.0, 1.0, i, (16,)) for i in range(11)]
    crowd[9] = dataclasses.replace(target, index=9)
    _assert_bitwise(alone, _member_numbers(crowd, 9, settings))


def test_wrong_direction_statistic_matches_the_loss_library(baseline):
    # CE and exp_mse never push a wrong logit up; mse does when wrong logits are below 0.
    frac = {loss: baseline[1][0]["wrong_frac"][i] for i, (loss, _, _) in enumerate(GRID)}
    assert frac["cross_entropy"] == 0
    assert frac["exp_mse"] == 0
    assert frac["mse"] > 0


def test_batch_larger_than_training_set_is_refused():
    with pytest.raises(ValueError, match="exceeds the 240 training examples"):
        _group(_members(GRID[:1]), _settings(batch_size=1000))


SHARDED = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax, numpy as np
    sys.path.insert(0, {tests!r})
    import test_engine as t
    from lossjax import engine
    assert len(jax.devices()) == 8
    members = t._members(t.GRID[:13])  # 13: padding of blocks and of devices
    settings = t._settings(block_size=2)
    runs = {{}}
    for n in (1, 2, 4, 8):
        g, runs[n] = t._run(members, epochs=2, settings=settings,
                            mesh=engine.make_mesh(jax.devices()[:n]))
        assert len(g.hp[0]["lr"].sharding.device_set) == n
        # init, epoch and evaluation per split shape (val, test): no second compile
        assert g.compiled_counts() == {{"init": 1, "epoch": 1, "eval": 2}}, g.compiled_counts()
    # 1 device included: the single-device compile (no SPMD partitioner) and the partitioned
    # one agree bit for bit once no division by a broadcast value is left in the program
    # (losses._softmax says why).
    for n in (1, 4, 8):
        for a, b in zip(runs[2], runs[n]):
            for k in a:
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"2 vs {{n}} devices: {{k}}")
    print("SHARDED-OK")
""")


@pytest.mark.slow
def test_numbers_are_bitwise_the_same_on_1_2_4_8_devices():
    code = SHARDED.format(tests=os.path.dirname(__file__))
    run_in_subprocess(code, "SHARDED-OK")


def test_weight_decay_is_per_member():
    members = [engine.Member(i, "cross_entropy", 0.1, wd, 1.0, 0, (16,))
               for i, wd in enumerate((0.0, 0.05))]
    g = _group(members, _settings(weight_decay=True))
    state = g.init_state()
    for e in range(2):
        state, _ = g.train_epoch(state, e)
    leaves = jax.tree.leaves(jax.tree.map(np.asarray, state[0]["params"]))  # the one call
    norms = [float(np.sqrt(sum(np.sum(x[i] ** 2) for x in leaves))) for i in range(2)]
    # Same seed, same batches: only the decay differs, and it shrinks the weights.
    assert norms[1] < 0.9 * norms[0]


def test_a_lone_member_trains_without_recompiling():
    engine.clear_programs()
    g = _group(_members([("cross_entropy", 0.5, 0)]))
    state = g.init_state()
    losses_seen = []
    for e in range(3):
        state, m = g.train_epoch(state, e)
        g.evaluate(state)
        losses_seen.append(m["train_loss"][0])
    assert losses_seen[-1] < losses_seen[0]
    assert g.compiled_counts() == {"init": 1, "epoch": 1, "eval": 2}

