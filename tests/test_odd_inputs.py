"""Odd and hostile inputs: each ends in one line ``lossjax: error: ...`` and exit 2 (or runs),
with nothing written. User code that calls ``sys.exit``, control characters in paths, YAML
alias bombs, huge lists and files, deep nesting, user functions that return NaN or raise
``ValueError`` under ``check-grads``, and ``XLA_FLAGS`` that XLA would abort on.

Anything that could hang runs under :func:`deadline` (a generous bound, not a timed assertion:
without the fixes these took minutes)."""

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from lossjax import cli, config, validate, xla_flags
from lossjax.errors import ConfigError

SMALL = {
    "name": "small",
    "seeds": [0],
    "epochs": 1,
    "batch_size": 128,
    "block_size": 1,
    "losses": ["mse"],
    "dataset": {"name": "digits"},
    "model": {"hidden": [[8]]},
    "optimizer": {"learning_rate": [0.1]},
}
USER_PY = textwrap.dedent("""
    import sys
    import jax.numpy as jnp

    def ok(s, y):
        return jnp.sum((s - y) ** 2, axis=-1)

    def ok_grad(s, y):
        return 2 * (s - y)

    def exits0(s, y):
        sys.exit(0)

    def exits3(s, y):
        sys.exit(3)

    def exits_when_training(s, y):  # fine on the (2, K) trial call, exits when traced for 128
        if s.shape[0] != 2:
            sys.exit(3)
        return jnp.sum((s - y) ** 2, axis=-1)

    def always_nan(s, y):
        return jnp.full((2,), jnp.nan)

    def nan_per_example(s, y):
        return jnp.sum(s * y, axis=-1) * jnp.nan

    def fixed_shape(s, y):  # right on the (2, 3) probe only
        return jnp.zeros((2,)) + jnp.sum(s)

    def raises(s, y):
        raise ValueError("nope")

    def raises_on_battery(s, y):
        if s.ndim != 2 or s.shape[0] != 2:
            raise ValueError("nope")
        return jnp.sum((s - y) ** 2, axis=-1)
""")
_names = itertools.count()


@contextlib.contextmanager
def deadline(seconds: int):
    """Fails the test (a TimeoutError, reported by cli.main as an unexpected error) instead of
    hanging the suite; the bound is generous, and nothing asserts on time."""

    def fail(*_):
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture
def user(tmp_path, monkeypatch):
    """A fresh module of user functions (a new name each time: sys.modules keeps the old)."""
    name = f"odd_user_{os.getpid()}_{next(_names)}"
    (tmp_path / f"{name}.py").write_text(USER_PY)
    (tmp_path / f"{name}_exits.py").write_text("import sys\nsys.exit(3)\ndef f(s, y): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def _config(tmp: Path, **changes) -> str:
    cfg = {**SMALL, **changes}
    cfg.setdefault("output", {"dir": str(tmp / "runs")})
    path = tmp / "odd.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _main(capsys, *argv, seconds: int = 300) -> tuple[int, str]:
    with deadline(seconds):
        code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, err


def _one_line(code: int, err: str, *needles: str) -> str:
    """Exit 2 and one line ``lossjax: error: ...`` holding every needle."""
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("lossjax: error: "), err
    assert "Traceback" not in err and "unexpected" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _nothing_written(tmp: Path) -> None:
    assert not (tmp / "runs").exists()


# ---- user code that calls sys.exit ----------------------------------------------------------


@pytest.mark.parametrize("fn", ["exits0", "exits3"])
def test_a_loss_calling_sys_exit_is_one_line_naming_it(tmp_path, capsys, user, fn):
    code, err = _main(capsys, "sweep", _config(tmp_path, losses=[f"{user}:{fn}"]), "--quiet")
    _one_line(code, err, f"{user}:{fn} called sys.exit({fn[-1]})", "losses")
    _nothing_written(tmp_path)


def test_a_loss_module_calling_sys_exit_at_import_is_one_line(tmp_path, capsys, user):
    code, err = _main(capsys, "sweep", _config(tmp_path, losses=[f"{user}_exits:f"]), "--quiet")
    _one_line(code, err, f"importing '{user}_exits' called sys.exit(3)", "losses[0]")
    _nothing_written(tmp_path)


@pytest.mark.slow
def test_a_loss_calling_sys_exit_when_traced_for_training_leaves_a_resumable_folder(
        tmp_path, capsys, user):
    cfg = _config(tmp_path, losses=[f"{user}:exits_when_training"])
    code, err = _main(capsys, "sweep", cfg, "--quiet")
    _one_line(code, err, f"{user}:exits_when_training called sys.exit(3)", "--resume continues")
    folder = tmp_path / "runs" / "small"
    assert (folder / "status.json").exists()  # lossjax's folder: --resume or a rerun takes it
    assert not (folder / "summary.csv").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--loss", "{m}:exits3"], "loss {m}:exits3 called sys.exit(3)"),
        (["--loss", "{m}:exits0"], "loss {m}:exits0 called sys.exit(0)"),
        (["--loss", "{m}:ok", "--grad", "{m}:exits3"], "gradient {m}:exits3 called sys.exit(3)"),
        (["--loss", "{m}_exits:f"], "importing '{m}_exits' called sys.exit(3)"),
        (["--loss", "{m}:ok", "--grad", "{m}_exits:f"], "importing '{m}_exits' called sys.exit"),
    ],
)
def test_check_grads_with_a_user_function_calling_sys_exit(capsys, user, args, needle):
    code, err = _main(capsys, "check-grads", *[a.format(m=user) for a in args])
    _one_line(code, err, needle.format(m=user))


# ---- check-grads names the user function and the problem ------------------------------------


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--loss", "{m}:always_nan"], ["loss '{m}:always_nan' returned NaN", "(2, 3) logits"]),
        (["--loss", "{m}:nan_per_example"], ["'{m}:nan_per_example' returned NaN"]),
        (["--loss", "{m}:fixed_shape"],
         ["loss '{m}:fixed_shape' returned shape (2,) for logits of shape", "expected (5, 64)"]),
        (["--loss", "{m}:ok", "--grad", "{m}:raises"],
         ["gradient '{m}:raises' failed on (2, 3) logits", "ValueError: nope"]),
        (["--loss", "{m}:raises"], ["loss '{m}:raises' failed", "ValueError: nope"]),
        (["--loss", "{m}:raises_on_battery"],
         ["'{m}:raises_on_battery' failed under jax.jit on the battery", "ValueError: nope"]),
        (["--loss", "../x:f"], ["'../x:f'", "dotted Python names"]),
        (["--loss", "{m}:ok", "--grad", "/tmp/x.py:f"], ["'/tmp/x.py:f'", "not by a path"]),
    ],
)
def test_check_grads_names_the_function_and_the_problem(capsys, user, args, needles):
    code, err = _main(capsys, "check-grads", *[a.format(m=user) for a in args])
    _one_line(code, err, *[n.format(m=user) for n in needles])


# ---- paths with control characters ----------------------------------------------------------


@pytest.mark.parametrize("value", ["{tmp}/a\nb", "{tmp}/a\tb", "{tmp}/a\rb", "{tmp}/a\x1bb"])
def test_a_control_character_in_a_set_value_is_refused(tmp_path, capsys, value):
    value = value.format(tmp=tmp_path)
    code, err = _main(capsys, "sweep", _config(tmp_path), "--quiet", "--set",
                      f"output.dir={value}")
    _one_line(code, err, "output.dir", "control character")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.yaml"]


@pytest.mark.parametrize("key", ["output", "dataset"])
def test_a_control_character_in_a_folder_path_of_the_file_is_refused(tmp_path, capsys, key):
    section = ({"output": {"dir": f"{tmp_path}/a\nb"}} if key == "output"
               else {"dataset": {"name": "digits", "data_dir": f"{tmp_path}/a\nb"}})
    code, err = _main(capsys, "sweep", _config(tmp_path, **section), "--quiet")
    _one_line(code, err, "control character \\n", "dir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.yaml"]


# ---- alias bombs, huge lists and files, deep nesting ----------------------------------------


def _bomb(indent: str) -> str:
    """Ten levels of nine aliases each: ~4e8 values in about 500 bytes."""
    text = f"{indent}- &a0 [x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 10):
        text += f"{indent}- &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n"
    return text


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("name:\n" + _bomb("  "), "name:"),
        ("name: t\noptimizer:\n  name: lion\n  args:\n    b1:\n" + _bomb("      "),
         "optimizer.args.b1:"),
    ],
)
def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path, capsys, text, key):
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    assert path.stat().st_size < 800
    code, err = _main(capsys, "sweep", str(path), "--quiet", "--set",
                      f"output.dir={tmp_path}/runs", seconds=120)
    line = _one_line(code, err, key, "aliases")
    assert len(line) < 300
    _nothing_written(tmp_path)


def test_shared_references_from_python_are_bounded_too():
    leaf = list(range(9))
    for _ in range(9):
        leaf = [leaf] * 9
    with deadline(60), pytest.raises(ConfigError, match=r"^optimizer\.args\.b1: holds more"):
        config.parse_config({"name": "t", "optimizer": {"name": "lion", "args": {"b1": leaf}}})


def test_error_messages_never_walk_a_huge_value():
    with deadline(60):
        assert len(validate.show(list(range(10**7)))) <= 80
        cyclic: list = []
        cyclic.append(cyclic)
        assert validate.show(cyclic).endswith("...")
        assert "bits" in validate.show(10**5000)  # repr refuses ints past 4300 digits


def test_five_million_seeds_are_refused_at_once_with_one_line():
    with deadline(60), pytest.raises(ConfigError, match=r"^seeds: got a list of 5,000,000 "):
        config.parse_config({"name": "t", "seeds": list(range(5_000_000))})


def test_the_duplicate_check_is_linear():
    with deadline(120):  # quadratic, 100,000 seeds took minutes
        cfg = config.parse_config({"name": "t", "seeds": list(range(100_000)), "losses": ["mse"]})
        assert len(cfg.seeds) == 100_000
        seeds = [*range(50_000), 7]
        with pytest.raises(ConfigError, match=r"^seeds\[50000\]: got 7, a duplicate of seeds\[7\]"):
            config.parse_config({"name": "t", "seeds": seeds, "losses": ["mse"]})


def test_a_huge_seed_list_in_a_file_is_refused_unread(tmp_path, capsys):
    path = tmp_path / "seeds.yaml"
    path.write_text("name: t\nseeds: [" + ",".join(map(str, range(2_000_000))) + "]\n")
    code, err = _main(capsys, "sweep", str(path), "--quiet", seconds=120)
    _one_line(code, err, str(path), "characters")
    _nothing_written(tmp_path)


def test_a_50_mb_config_file_is_refused_unread(tmp_path, capsys):
    path = tmp_path / "big.yaml"
    with open(path, "w") as f:
        f.write("name: t\n")
        f.truncate(50 * 2**20)
    code, err = _main(capsys, "sweep", str(path), "--quiet", seconds=120)
    _one_line(code, err, str(path), "more than 1,048,576 characters")


def test_800_nested_brackets_name_the_file(tmp_path, capsys):
    path = tmp_path / "deep.yaml"
    path.write_text("name: t\nseeds: " + "[" * 800 + "]" * 800 + "\n")
    code, err = _main(capsys, "sweep", str(path), "--quiet", seconds=120)
    _one_line(code, err, str(path), "nested too deeply")
    _nothing_written(tmp_path)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["seeds=" + "[" * 800], "seeds: value '[[[["),
        (["seeds=" + "[" * 40 + "]" * 40], "seeds: lists or mappings nested more than 32"),
        (["seeds=" + "9" * 5000], "seeds: value '9999"),
        (["epochs==3"], "epochs: got '=3', expected an integer >= 1"),
        (["model.hidden.x=y=1"], "model.hidden.x: unknown key"),
        (["=3"], "the key before '=' is empty"),
    ],
)
def test_odd_set_values_are_one_line(overrides, needle):
    with deadline(60), pytest.raises(ConfigError) as e:
        config.parse_config({"name": "t"}, overrides)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_a_cyclic_config_from_python_is_one_line():
    raw: dict = {"name": "t"}
    raw["model"] = raw
    with deadline(60), pytest.raises(ConfigError, match=r"nested more than 32 levels"):
        config.parse_config(raw)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("- name: t\n- seeds: [0]\n", "top level got [{'name': 't'}, {'seeds': [0]}]"),
        ("name: t\nseeds: " + "9" * 5000 + "\n", "holds a value Python cannot read"),
        ("name: \"a\\nb\"\n", "name: got 'a\\nb'"),
    ],
)
def test_odd_config_files_are_one_line(tmp_path, capsys, text, needle):
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    code, err = _main(capsys, "sweep", str(path), "--quiet", "--set",
                      f"output.dir={tmp_path}/runs", seconds=120)
    _one_line(code, err, needle)
    _nothing_written(tmp_path)


# ---- Ctrl-C before anything started ----------------------------------------------------------


@pytest.mark.parametrize("started", [False, True])
def test_an_interrupt_says_what_is_kept_only_once_something_is(started):
    code = textwrap.dedent(f"""
        import os, signal, time
        from lossjax import interrupts
        with interrupts.ExitOnSignal("kept", "nothing written"):
            if {started}:
                interrupts.STARTED.set()
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(60)
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 130
    assert r.stderr.strip() == ("kept" if started else "nothing written")


# ---- XLA_FLAGS --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stderr", "needle"),
    [
        ("F1201 20:54:15.352071 15317 parse_flags_from_env.cc:234] Unknown flag in XLA_FLAGS: "
         "--bogus_flag", "XLA has no flag --bogus_flag"),
        ("E1201 command_line_flags.cc:63] Couldn't interpret value abc for flag "
         "xla_force_host_platform_device_count.\nF1201 ... Flag parsing failed.\nusage: ...",
         "cannot read the value 'abc' of --xla_force_host_platform_device_count"),
        ('F1201 parse_flags_from_env.cc:171] Could not open file "bogus" to read flags for '
         'environment variable "XLA_FLAGS".', "'bogus' does not start with '--'"),
    ],
)
def test_xla_verdicts_are_read_into_one_line(stderr, needle):
    assert needle in xla_flags._verdict(stderr)


def test_no_xla_flags_no_probe(monkeypatch):
    def no(*a, **k):
        raise AssertionError("probed without XLA_FLAGS")

    monkeypatch.setattr(subprocess, "run", no)
    xla_flags.check({"XLA_FLAGS": "  "})
    xla_flags.check({})


@pytest.mark.slow
@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        ("--bogus_flag", "XLA has no flag --bogus_flag"),
        ("--xla_bogus=1", "XLA has no flag --xla_bogus=1"),
        ("--xla_force_host_platform_device_count=abc", "cannot read the value 'abc'"),
    ],
)
def test_bad_xla_flags_are_one_lossjax_line(tmp_path, flags, needle):
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run([sys.executable, "-m", "lossjax.cli", "sweep", _config(tmp_path),
                        "--quiet"], capture_output=True, text=True, env=env, timeout=300)
    _one_line(r.returncode, r.stderr, "XLA_FLAGS", needle)
    _nothing_written(tmp_path)


@pytest.mark.slow
def test_good_xla_flags_pass_the_probe():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2 "
                                      "--xla_gpu_deterministic_ops=true"}
    xla_flags.check(env)  # raises on a verdict
