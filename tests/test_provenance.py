"""env.json's provenance (lossjax.provenance, lossjax.machine) and how report.md shows it. The
git work trees here are temporary repositories made by the tests; no sweep runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import make_results

from lossjax import analysis, machine, provenance, report, report_provenance

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="no git program")


def _git(repo, *args):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
           "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, env=env).stdout.strip()


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A researcher's project: one commit holding a config and a loss module."""
    # The git lossjax runs must not read the developer's own settings either.
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    root = tmp_path / "project"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "mine.yaml").write_text("epochs: 3\n")
    (root / "my losses.py").write_text("# a loss\n")
    _git(root, "init", "-q", "-b", "work")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "first")
    return root


@needs_git
def test_dirty_then_clean(repo):
    (repo / "my losses.py").write_text("# a changed loss\n")
    (repo / "notes.txt").write_text("untracked: not counted\n")
    state = provenance.git_state(repo)
    commit = _git(repo, "rev-parse", "HEAD")
    assert state["state"] == "ok" and state["commit"] == commit and state["branch"] == "work"
    assert state["dirty"] and state["modified"] == ["my losses.py"]
    assert state["modified_count"] == 1 and "untracked" in state["dirty_means"]
    assert len(state["diff_sha256"]) == 64

    _git(repo, "commit", "-q", "-am", "second")
    state = provenance.git_state(repo)
    assert not state["dirty"] and state["modified"] == [] and "diff_sha256" not in state
    assert state["commit"] == _git(repo, "rev-parse", "HEAD") != commit


@needs_git
def test_staged_renamed_and_detached(repo):
    _git(repo, "mv", "configs/mine.yaml", "configs/ours.yaml")
    (repo / "extra.py").write_text("x = 1\n")
    _git(repo, "add", "extra.py")  # staged counts as much as modified
    state = provenance.git_state(repo)
    assert state["dirty"] and sorted(state["modified"]) == ["configs/ours.yaml", "extra.py"]
    _git(repo, "commit", "-q", "-m", "second")
    _git(repo, "checkout", "-q", "--detach")
    state = provenance.git_state(repo)
    assert state["branch"] is None and not state["dirty"]


@needs_git
def test_many_paths_are_cut_short(repo):
    for i in range(provenance.MAX_PATHS + 5):
        (repo / f"f{i}.py").write_text("")
    _git(repo, "add", ".")
    state = provenance.git_state(repo)
    assert len(state["modified"]) == provenance.MAX_PATHS
    assert state["modified_count"] == provenance.MAX_PATHS + 5


@needs_git
def test_the_config_s_own_tree(repo, tmp_path):
    (repo / "my losses.py").write_text("# changed\n")
    # Relative to the invocation's working folder, as the CLI passes it.
    invocation = {"via": "cli", "config_path": "configs/mine.yaml", "cwd": str(repo)}
    git = provenance.git_record(provenance._config_path(invocation))
    config = git["config"]
    assert config["root"] == str(repo.resolve()) and config["dirty"]
    assert config["config_tracked"] is True
    (repo / "configs" / "new.yaml").write_text("epochs: 1\n")
    assert provenance.git_record(repo / "configs" / "new.yaml")["config"]["config_tracked"] is False
    outside = tmp_path / "loose.yaml"
    outside.write_text("epochs: 1\n")
    assert provenance.git_record(outside)["config"] is None


def test_no_git_program_gives_an_unknown_record(monkeypatch, tmp_path):
    tree = tmp_path / "project"
    (tree / ".git").mkdir(parents=True)  # a work tree as seen without git
    (tree / "mine.yaml").write_text("epochs: 1\n")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    state = provenance.git_state(tree)
    assert state == {"state": "unknown", "root": str(tree), "reason": "no git program found"}
    git = provenance.git_record(tree / "mine.yaml")
    assert git["config"]["state"] == "unknown"


@needs_git
def test_a_hanging_git_gives_an_unknown_record(repo, monkeypatch):
    def hang(cmd, **kw):
        raise subprocess.TimeoutExpired(cmd, kw.get("timeout"))

    monkeypatch.setattr(provenance.subprocess, "run", hang)
    state = provenance.git_state(repo)
    assert state["state"] == "unknown" and "took over" in state["reason"]


def test_record_and_resumes():
    import jax

    meta = {"name": "digits", "verified": {"digits.csv": "6e" * 32}}
    first = {"via": "cli", "command": "lossjax sweep c.yaml", "resume": False}
    env = provenance.record(jax.devices(), meta, first)
    old_keys = {"python", "platform", "jax", "jaxlib", "flax", "optax", "numpy", "devices",
                "device_kind", "process_count", "x64", "default_matmul_precision", "data"}
    assert old_keys <= env.keys()
    assert env["invocations"] == [first] and env["resumes"] == [] and env["data"] is meta
    assert env["versions"]["jax"] == env["jax"] and env["versions"]["lossjax"]
    assert set(env["git"]) == {"lossjax", "config"}
    json.dumps(env)  # what env.json holds

    again = {"via": "cli", "command": "lossjax sweep c.yaml --resume", "resume": True}
    resumed = provenance.add_resume(env, again, devices=jax.devices())
    assert resumed["invocations"] == [first, again] and env["invocations"] == [first]
    assert resumed["resumes"][0]["device_kind"] == env["device_kind"]
    # An env.json from before invocations were recorded: the first start is unknown.
    old = {k: env[k] for k in old_keys}
    assert provenance.add_resume(old, again)["invocations"] == [None, again]


def test_importing_provenance_imports_no_jax():
    code = "import sys, lossjax.provenance; print('jax' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "False", r.stderr[-2000:]


# ---- report.md ----------------------------------------------------------------------------


def _dirty_env(folder, **extra):
    env = json.loads((folder / "env.json").read_text())
    commit = "0123456789abcdef" * 2 + "01234567"
    paths = [f"lossjax/file{i}.py" for i in range(7)]
    env.update(dict(
        versions={"python": "3.11", "lossjax": "0.1.0", "jax": "0.0-test", "tensorboardX": None},
        invocations=[{"via": "cli", "command": "lossjax sweep configs/mnist.yaml --set epochs=3"}],
        resumes=[], started_at="2026-01-02T03:04:05+00:00",
        git={"lossjax": {"state": "ok", "root": "/src/lossjax", "commit": commit,
                         "branch": "main", "dirty": True, "modified": paths,
                         "modified_count": 7, "diff_sha256": "ab" * 32},
             "config": None},
        data={"name": "digits", "source": {"kind": "embedded", "form": "csv.gz"},
              "verified": {"digits.csv": "6ebb3d2fee246a4e99363262ddf8a00a3c41bee6014c3"}}),
        **extra)
    (folder / "env.json").write_text(json.dumps(env, sort_keys=True))  # as a sweep writes it
    return env


def test_report_warns_of_a_dirty_tree(tmp_path):
    folder = make_results(tmp_path / "sweep")
    _dirty_env(folder)
    text = report.render(analysis.load_results(folder))
    assert "## Provenance" in text and "Environment:" not in text
    warning = next(line for line in text.splitlines() if "uncommitted changes:" in line)
    assert warning.startswith("**Warning: made from a git tree with uncommitted changes: ")
    assert "`lossjax/file4.py` and 2 more" in warning and "file5" not in warning
    assert "commit `0123456` on branch `main`" in text
    assert "`lossjax sweep configs/mnist.yaml --set epochs=3`" in text
    assert "python 3.11, lossjax 0.1.0, jax 0.0-test" in text and "tensorboardX" not in text
    assert "1 × cpu; x64 off" in text and "digits.csv `6ebb3d2fee24…`" in text


def test_report_of_a_resume(tmp_path):
    folder = make_results(tmp_path / "sweep")
    env = _dirty_env(folder)
    same = {"at": "2026-01-03T00:00:00+00:00", "git": env["git"], "versions": env["versions"]}
    other = {**same, "git": {"lossjax": {**env["git"]["lossjax"], "dirty": False,
                                         "commit": "f" * 40}},
             "versions": {**env["versions"], "jax": "0.1-test"}}
    _dirty_env(folder, resumes=[same, other], invocations=[
        *env["invocations"], {"via": "python", "call": "lossjax.run('c.yaml', resume=True)"},
        {"via": "cli", "command": "lossjax sweep c.yaml --resume"}])
    text = report.render(analysis.load_results(folder))
    assert "Resumed at 2026-01-03T00:00:00+00:00: `lossjax.run('c.yaml', resume=True)`" in text
    # The same uncommitted changes as at the start are not warned of twice.
    assert text.count("uncommitted changes:") == 1
    assert "resume 2 ran lossjax at commit `fffffff`, the start at `0123456`" in text
    assert "resume 2 ran other versions: jax 0.0-test → 0.1-test" in text


def test_old_env_json_renders_as_before(tmp_path):
    folder = make_results(tmp_path / "sweep")
    text = report.render(analysis.load_results(folder))
    assert "Environment: jax 0.0-test, python 3.11; 1 × cpu; x64 off" in text
    assert "Provenance" not in text and "Warning" not in text


def test_installed_or_unknown_trees_in_the_report(tmp_path):
    folder = make_results(tmp_path / "sweep")
    _dirty_env(folder, git={"lossjax": None, "config": {
        "state": "unknown", "root": "/home/me/project", "reason": "no git program found"}})
    text = report.render(analysis.load_results(folder))
    assert "lossjax: version 0.1.0, not from a git work tree (an installed package)" in text
    assert "git state unknown in `/home/me/project` (no git program found)" in text
    assert "Warning" not in text


# ---- the CPU ------------------------------------------------------------------------------

SAPPHIRE = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R)   Platinum 8480+
stepping\t: 8
flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 avx512f avx512cd avx512dq \
avx512bw avx512vl avx512_vnni avx512_bf16 avx512_fp16 avx_vnni amx_tile amx_bf16 amx_int8 sha_ni

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: some other core
flags\t\t: fpu sse
"""
GRAVITON = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes sha2 crc32 atomics fphp asimdhp sve sve2 svebf16
CPU implementer\t: 0x41
CPU architecture: 8
CPU part\t: 0xd4f
"""
X86_ALL = ["sse4_2", "avx", "f16c", "fma", "avx2", "avx_vnni", "avx512f", "avx512cd",
           "avx512dq", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
           "amx_tile", "amx_int8", "amx_bf16"]


@pytest.fixture
def sapphire(monkeypatch):
    monkeypatch.setattr(machine, "_read_cpuinfo", lambda: SAPPHIRE)
    monkeypatch.setattr(machine.platform, "machine", lambda: "x86_64")
    monkeypatch.delenv("XLA_FLAGS", raising=False)


def test_this_machine_s_cpu_record_has_the_fields():
    cpu = machine.cpu_record()
    assert set(cpu) == {"model", "vendor", "signature", "machine", "logical_cpus", "pjrt_nproc",
                        "host_features", "xla_cpu_max_isa", "features", "source"}
    json.dumps(cpu)
    if cpu["source"] == "/proc/cpuinfo" and machine._arch() == "x86":
        assert cpu["model"] and cpu["vendor"] and "sse4_2" in cpu["host_features"]
        assert set(cpu["features"]) <= set(cpu["host_features"])


def test_the_cpu_record_names_the_thread_pool_size_xla_was_given(sapphire, monkeypatch):
    # PJRT_NPROC sizes XLA's CPU thread pool, and with it how loops are split, where a run has
    # more devices than cores: part of what a run's bits depend on (docs/promises.md).
    monkeypatch.delenv("PJRT_NPROC", raising=False)
    assert machine.cpu_record()["pjrt_nproc"] is None
    monkeypatch.setenv("PJRT_NPROC", "8")
    cpu = machine.cpu_record()
    assert cpu["pjrt_nproc"] == "8"
    assert "PJRT_NPROC=8" in report_provenance._cpu_words(cpu)


def test_the_cpu_record_from_cpuinfo(sapphire):
    cpu = machine.cpu_record()
    # The first processor's entry, spaces tidied; only the features XLA's compiler uses.
    assert cpu["model"] == "Intel(R) Xeon(R) Platinum 8480+" and cpu["vendor"] == "GenuineIntel"
    assert cpu["signature"] == "family 6 model 143 stepping 8"
    assert cpu["host_features"] == cpu["features"] == X86_ALL
    assert cpu["xla_cpu_max_isa"] is None and cpu["source"] == "/proc/cpuinfo"


@pytest.mark.parametrize(("flags", "newest"), [
    ("--xla_cpu_max_isa=SSE4_2", ["sse4_2"]),
    # XLA's own rules: at AVX, avx_vnni stays on; at AVX512, avx512_fp16 does.
    ("--xla_cpu_max_isa=AVX", ["sse4_2", "avx", "f16c", "avx_vnni"]),
    ("--xla_force_host_platform_device_count=2 --xla_cpu_max_isa=avx2",
     ["sse4_2", "avx", "f16c", "fma", "avx2", "avx_vnni"]),
    ("--xla_cpu_max_isa=AVX512", [*X86_ALL[:11], "avx512_fp16"]),
    ("--xla_cpu_max_isa=AVX512_VNNI", [*X86_ALL[:12], "avx512_fp16"]),
    ("--xla_cpu_max_isa=AVX512_BF16", X86_ALL[:14]),
    ("--xla_cpu_max_isa=AMX", X86_ALL),
    ("--xla_cpu_max_isa=AVX2 --xla_cpu_max_isa=SSE4_2", ["sse4_2"]),  # the last one counts
    ("--xla_cpu_max_isa=AVX9000", X86_ALL),  # unknown: XLA warns and caps nothing
    ("--xla_cpu_max_isa=NEON", X86_ALL),  # another architecture's value caps nothing
])
def test_xla_flags_cap_the_features(sapphire, monkeypatch, flags, newest):
    monkeypatch.setenv("XLA_FLAGS", flags)
    cpu = machine.cpu_record()
    assert cpu["features"] == newest and cpu["host_features"] == X86_ALL
    assert cpu["xla_cpu_max_isa"] == flags.split("=")[-1]


def test_aarch64_is_capped_at_neon_unless_xla_flags_say_otherwise(monkeypatch):
    monkeypatch.setattr(machine, "_read_cpuinfo", lambda: GRAVITON)
    monkeypatch.setattr(machine.platform, "machine", lambda: "aarch64")
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    cpu = machine.cpu_record()
    assert cpu["vendor"] == "ARM" and cpu["model"] == "CPU part 0xd4f"
    assert cpu["host_features"] == ["asimd", "sve", "sve2"] and cpu["features"] == ["asimd"]
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_max_isa=SVE")
    assert machine.cpu_record()["features"] == ["asimd", "sve"]


def test_an_unknown_system_gives_nones_and_never_raises(monkeypatch):
    monkeypatch.setattr(machine, "_read_cpuinfo", lambda: None)
    monkeypatch.setattr(machine.platform, "system", lambda: "Plan9")
    monkeypatch.setattr(machine.platform, "processor", lambda: "")
    cpu = machine.cpu_record()
    assert cpu["model"] is cpu["vendor"] is cpu["features"] is cpu["host_features"] is None

    def broken():
        raise RuntimeError("no")

    monkeypatch.setattr(machine, "_read_cpu", broken)
    assert machine.cpu_record()["model"] is None


def _machine(cpu=None, jax="0.10.2", jaxlib="0.10.2"):
    return {"cpu": cpu, "jax": jax, "jaxlib": jaxlib}


EPYC = {"model": "AMD EPYC 7B13", "vendor": "AuthenticAMD",
        "features": ["sse4_2", "avx", "f16c", "fma", "avx2"], "xla_cpu_max_isa": None}
XEON = {"model": "Intel Xeon", "vendor": "GenuineIntel", "features": X86_ALL[:11],
        "xla_cpu_max_isa": None}


def test_compare_machines_names_what_differs():
    assert machine.compare_machines(_machine(EPYC), _machine(dict(EPYC))) is None
    assert machine.compare_machines(_machine(EPYC), _machine(XEON)) == (
        '"AMD EPYC 7B13" (avx2)', '"Intel Xeon" (avx_vnni, avx512f, avx512cd, ...)')
    capped = {**XEON, "features": XEON["features"][:6], "xla_cpu_max_isa": "AVX2"}
    assert machine.compare_machines(_machine(XEON), _machine(capped)) == (
        '"Intel Xeon" (avx512f, avx512cd, avx512dq, ...)',
        '"Intel Xeon" (avx_vnni; xla_cpu_max_isa=AVX2)')
    assert machine.compare_machines(_machine(EPYC), _machine(EPYC, jaxlib="0.11")) == (
        "jaxlib 0.10.2", "jaxlib 0.11")
    # The same generic name and features on other silicon (as a hypervisor may show it).
    a, b = {**XEON, "signature": "family 6 model 143 stepping 8"}, {
        **XEON, "signature": "family 6 model 207 stepping 2"}
    assert machine.compare_machines(_machine(a), _machine(b)) == (
        '"Intel Xeon" [family 6 model 143 stepping 8] (avx512vl)',
        '"Intel Xeon" [family 6 model 207 stepping 2] (avx512vl)')
    # Not recorded: only versions are compared, and the words say so.
    assert machine.compare_machines(_machine(None), _machine(XEON)) is None
    assert machine.compare_machines(_machine(None, jax="0.9"), _machine(XEON)) == (
        "jax 0.9 (its CPU was not recorded)", "jax 0.10.2")


def test_record_and_resume_entries_carry_the_cpu(sapphire):
    import jax

    env = provenance.record(jax.devices(), {}, None)
    assert env["cpu"] == machine.cpu_record()
    same = provenance.add_resume(env, None, resumed_after_epochs=[3, 0], epochs=5)
    assert same["resumes"][0]["cpu"] == env["cpu"] and "other_machine" not in same["resumes"][0]
    assert same["resumes"][0]["resumed_after_epochs"] == [3, 0]
    elsewhere = provenance.add_resume({**env, "cpu": EPYC}, None)
    assert elsewhere["resumes"][0]["other_machine"].startswith(
        'started on "AMD EPYC 7B13" (avx2); resumed on "Intel(R) Xeon(R) Platinum 8480+" (')


def test_report_shows_the_cpu_and_where_a_resume_broke_bit_exactness(tmp_path):
    folder = make_results(tmp_path / "sweep")
    env = _dirty_env(folder, cpu=EPYC)
    versions = env["versions"]
    same = {"at": "2026-01-03T00:00:00+00:00", "versions": versions, "cpu": EPYC,
            "resumed_after_epochs": [5, 5], "epochs": 30}
    other = {**same, "cpu": XEON, "resumed_after_epochs": [30, 14]}
    back = {**same, "resumed_after_epochs": [30, 20]}
    _dirty_env(folder, cpu=EPYC, resumes=[same, other, back],
               invocations=[*env["invocations"], None, None, None])
    text = report.render(analysis.load_results(folder))
    assert ("- CPU: `AMD EPYC 7B13` (AuthenticAMD); XLA compiles for sse4_2, avx, f16c, fma, "
            "avx2") in text
    assert "- CPU of resume 2: `Intel Xeon` (GenuineIntel); XLA compiles for sse4_2" in text
    assert "CPU of resume 1" not in text and "CPU of resume 3" not in text
    # Group 0 had finished before resume 2: only group 1 broke, after epoch 14.
    assert ('epochs 6–14 ran on "AMD EPYC 7B13" (avx2), epochs 15–20 on "Intel Xeon" '
            "(avx_vnni, avx512f, avx512cd, ...): rows after epoch 14 are not bit-reproducible "
            "with an uninterrupted run.") in text
    assert ('epochs 15–20 ran on "Intel Xeon" (avx_vnni, avx512f, avx512cd, ...), epochs 21–30 '
            'on "AMD EPYC 7B13" (avx2): rows after epoch 20') in text
    assert text.count("bit-reproducible") == 2


def test_report_lists_groups_that_broke_at_different_epochs(tmp_path):
    folder = make_results(tmp_path / "sweep")
    resume = {"versions": {"jax": "0.0-test"}, "cpu": XEON, "resumed_after_epochs": [14, 0],
              "epochs": 30}
    _dirty_env(folder, cpu=EPYC, resumes=[resume])
    text = report.render(analysis.load_results(folder))
    assert ('resume 1 continued on "Intel Xeon" (avx_vnni, avx512f, avx512cd, ...), after '
            '"AMD EPYC 7B13" (avx2): group 0 after epoch 14, group 1 after epoch 0; each of '
            "those groups' rows after that epoch is not bit-reproducible") in text


def test_report_of_provenance_without_a_cpu_record(tmp_path):
    folder = make_results(tmp_path / "sweep")
    _dirty_env(folder, resumes=[{"versions": {"jax": "0.0-test"}, "resumed_after_epochs": [2],
                                 "epochs": 3}])
    text = report.render(analysis.load_results(folder))
    assert "- CPU not recorded" in text and "bit-reproducible" not in text
