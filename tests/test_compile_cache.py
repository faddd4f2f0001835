"""Compile once: JAX's persistent cache on by default (``lossjax.compile_cache``), programs
reused within a process (``engine.programs``), and reading a results folder without JAX."""

import csv
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import pytest
import yaml
from conftest import SMALL_SWEEP, one_line, run_counting_groups

import lossjax
from lossjax import cli, compile_cache, engine

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp: Path, **extra) -> dict:
    """This environment without the test run's cache: lossjax's default, rooted in ``tmp``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE",
                                "JAX_ENABLE_COMPILATION_CACHE"))}
    return {**env, "JAX_PLATFORMS": "cpu", "LOSSJAX_CACHE_DIR": str(tmp / "cache"), **extra}


def _sweep(tmp: Path, name: str, env: dict) -> subprocess.CompletedProcess:
    cfg = {**SMALL_SWEEP, "name": name, "epochs": 2, "output": {"dir": str(tmp / "runs")}}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.run([sys.executable, "-m", "lossjax.cli", "sweep", str(path), "--quiet"],
                          env=env, capture_output=True, text=True, timeout=600, cwd=tmp)


def _rows(folder: Path) -> list[dict]:
    with open(folder / "epochs.csv") as f:
        return [{k: v for k, v in row.items() if k != "wall_time"} for row in csv.DictReader(f)]


def _entries(tmp: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns
            for p in (tmp / "cache" / "xla").rglob("*") if p.is_file()}


@pytest.mark.slow
def test_cold_warm_and_damaged_caches_give_the_same_tables(tmp_path):
    env = _env(tmp_path)
    cold = _sweep(tmp_path, "cold", env)
    assert cold.returncode == 0, cold.stderr
    entries = _entries(tmp_path)
    (folder,) = (tmp_path / "cache" / "xla").iterdir()
    assert folder.name == compile_cache.machine_key()  # one folder per jaxlib and machine
    assert any("member_epoch" in name for name in entries), sorted(entries)

    warm = _sweep(tmp_path, "warm", env)
    assert warm.returncode == 0 and "compilation cache" not in warm.stderr, warm.stderr
    assert _entries(tmp_path) == entries  # every program read back: nothing compiled, written

    for path in folder.iterdir():  # every entry damaged: compiled again, said once
        path.write_bytes(b"not an executable")
    damaged = _sweep(tmp_path, "damaged", env)
    assert damaged.returncode == 0, damaged.stderr
    assert damaged.stderr.count("compilation cache has an entry it cannot use") == 1, (
        damaged.stderr)

    runs = tmp_path / "runs"
    for name in ("warm", "damaged"):
        assert _rows(runs / name) == _rows(runs / "cold"), name
        assert (runs / name / "summary.csv").read_bytes() == (
            runs / "cold" / "summary.csv").read_bytes(), name


PROBE = textwrap.dedent("""
    import logging
    from lossjax import compile_cache
    logging.basicConfig(format="lossjax: %(message)s")
    print(compile_cache.enable())
    compile_cache.enable()  # said once, not again
""")


def _probe(tmp: Path, **extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE], env=_env(tmp, **extra),
                          capture_output=True, text=True, timeout=120)


def test_the_state_follows_jaxs_variables(tmp_path, monkeypatch):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.delenv("JAX_ENABLE_COMPILATION_CACHE", raising=False)
    monkeypatch.setenv("LOSSJAX_CACHE_DIR", str(tmp_path))
    assert compile_cache.state() == {"enabled": True, "set_by": "lossjax",
                                     "folder": tmp_path / "xla" / compile_cache.machine_key()}
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "mine"))
    assert compile_cache.state()["folder"] == tmp_path / "mine"
    monkeypatch.setenv("JAX_ENABLE_COMPILATION_CACHE", "false")
    assert compile_cache.state()["enabled"] is False


@pytest.mark.slow
def test_the_cache_is_lossjaxs_unless_jax_is_told_otherwise(tmp_path):
    default = _probe(tmp_path)
    assert default.stdout.strip() == str(tmp_path / "cache" / "xla" / compile_cache.machine_key())
    mine = _probe(tmp_path, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "mine"))
    assert mine.stdout.strip() == str(tmp_path / "mine")  # the user's folder, as given
    off = _probe(tmp_path, JAX_ENABLE_COMPILATION_CACHE="false")
    assert off.stdout.strip() == "None"
    assert sorted(p.name for p in (tmp_path / "cache" / "xla").iterdir()) == [
        compile_cache.machine_key()]  # neither of the others made a lossjax folder


def test_a_cache_that_cannot_be_written_is_left_out_in_one_line(tmp_path):
    (tmp_path / "file").write_text("")  # a cache root that cannot be a folder
    r = _probe(tmp_path, LOSSJAX_CACHE_DIR=str(tmp_path / "file"))
    assert r.stdout.strip() == "None"
    one_line(r.stderr, "compilation cache", "cannot be written", "compiling without it",
             "LOSSJAX_CACHE_DIR", "JAX_ENABLE_COMPILATION_CACHE=false")
    # A sweep goes on without the cache: lossjax.sweep.run calls enable() and compiles.


def test_this_run_keeps_the_folder_the_user_gave_jax():
    # The test run sets JAX_COMPILATION_CACHE_DIR (conftest): a sweep uses it, untouched.
    given = jax.config.jax_compilation_cache_dir
    assert compile_cache.enable() == Path(given)
    assert jax.config.jax_compilation_cache_dir == given


def test_the_machine_key_changes_with_the_thread_pool(monkeypatch):
    monkeypatch.delenv("PJRT_NPROC", raising=False)
    own = compile_cache.machine_key()
    monkeypatch.setenv("PJRT_NPROC", "8")
    assert compile_cache.machine_key() != own
    assert own.startswith(f"jaxlib-{jax.lib.__version__}-")


def test_the_cache_command_shows_the_folder_and_clears_only_lossjaxs(tmp_path, monkeypatch,
                                                                      capsys):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.delenv("JAX_ENABLE_COMPILATION_CACHE", raising=False)
    monkeypatch.setenv("LOSSJAX_CACHE_DIR", str(tmp_path))
    mine = tmp_path / "xla" / compile_cache.machine_key()
    old = tmp_path / "xla" / "jaxlib-0.0.1-0123456789abcdef"
    for folder in (mine, old):
        folder.mkdir(parents=True)
        (folder / "jit_f-cache").write_bytes(b"x" * 1000)
    (tmp_path / "xla" / "notes.txt").write_text("mine")
    assert cli.main(["cache"]) == 0
    out = capsys.readouterr().out
    assert f"compilation cache: {mine}" in out and "1 files" in out, out
    assert "other jaxlibs or machines: 1 under" in out and "lossjax cache --clear" in out, out
    assert cli.main(["cache", "--clear"]) == 0
    assert "removed 2 files" in capsys.readouterr().out
    assert not mine.exists() and not old.exists()
    assert (tmp_path / "xla" / "notes.txt").read_text() == "mine"  # not lossjax's: kept


READERS = textwrap.dedent("""
    import sys
    import lossjax
    from lossjax import cli, comparison, plots, report  # every reader's module
    res = lossjax.load(sys.argv[1])
    assert len(res.summary) and len(res.epochs)
    assert len(lossjax.compare([sys.argv[1], sys.argv[2]]).table)
    commands = [["plot", sys.argv[1]], ["report", sys.argv[1]],
                ["compare", sys.argv[1], sys.argv[2], "--out", sys.argv[3]]]
    for args in commands if sys.argv[4] == "draw" else []:
        assert cli.main(args) == 0, args
    try:
        cli.main(["--help"])
    except SystemExit:
        pass
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "jaxlib", "flax", "optax"))
    print("IMPORTED", heavy)
""")


def _readers(tmp: Path, draw: bool) -> None:
    for name in ("a", "b"):
        shutil.copytree(ROOT / "results" / "digits", tmp / name)
    r = subprocess.run([sys.executable, "-c", READERS, str(tmp / "a"), str(tmp / "b"),
                        str(tmp / "cmp"), "draw" if draw else "read"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert "IMPORTED []" in r.stdout, (r.stdout[-2000:], r.stderr[-2000:])


def test_reading_a_results_folder_imports_no_jax(tmp_path):
    _readers(tmp_path, draw=False)


@pytest.mark.slow
def test_plot_report_and_compare_import_no_jax(tmp_path):
    _readers(tmp_path, draw=True)


def _counted_run(config, tmp: Path, name: str) -> list:
    return run_counting_groups({**config, "name": name}, tmp)[1]


@pytest.mark.slow
def test_stages_and_repeated_runs_in_a_process_compile_nothing_new(tmp_path):
    raced = {**SMALL_SWEEP, "epochs": 2, "optimizer": {"learning_rate": [0.03, 0.1, 0.3]},
             "search": {"method": "race", "extend": 1, "rungs": [1]},
             "confirm": {"seeds": [2]}}
    engine.clear_programs()
    first = _counted_run(raced, tmp_path, "first")
    assert len(first) > 1  # the grid and at least one later stage
    # The first group builds the programs; every stage after it reuses them.
    assert first[0].compiled_counts().keys() >= {"init", "epoch", "eval"}
    assert [g.compiled_counts() for g in first[1:]] == [{}] * (len(first) - 1)
    again = _counted_run(raced, tmp_path, "again")
    assert [g.compiled_counts() for g in again] == [{}] * len(again)
    a, b = (lossjax.load(tmp_path / n).epochs.drop(columns="wall_time") for n in ("first",
                                                                                 "again"))
    assert a.equals(b)


@pytest.mark.slow
def test_a_float64_sweep_leaves_64_bit_mode_as_it_found_it(tmp_path):
    assert not jax.config.jax_enable_x64
    lossjax.run({**SMALL_SWEEP, "epochs": 1, "seeds": [0], "model": {"hidden": [[4]],
                                                                     "dtype": "float64"}},
                output_dir=tmp_path, progress=False)
    assert not jax.config.jax_enable_x64  # a later float32 run in this process stays float32
    rows = lossjax.load(tmp_path / "small").epochs
    assert rows["train_loss"].notna().all()
