"""``--resume`` on another machine: refused (one line, exit 2, every file untouched) unless
``--allow-other-machine``, and then env.json and report.md say where the rows stop being
bit-exact. The other machine is faked by editing the env.json of a sweep stopped after its
second epoch; nothing here needs two machines. The refusals are quick (one 2-epoch sweep for
them all); the resumes that train are marked slow."""

import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import SMALL_SWEEP

import lossjax
from lossjax import cli, engine, machine
from lossjax.errors import ConfigError, ResultsError

SMALL = {**SMALL_SWEEP, "seeds": [0]}
AMD = {"model": "AMD EPYC 7B13", "vendor": "AuthenticAMD", "machine": "x86_64",
       "logical_cpus": 8, "host_features": ["sse4_2", "avx", "f16c", "fma", "avx2"],
       "xla_cpu_max_isa": None, "features": ["sse4_2", "avx", "f16c", "fma", "avx2"],
       "source": "/proc/cpuinfo"}


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """A sweep stopped after its second epoch (of three): its folder."""
    tmp = tmp_path_factory.mktemp("stopped")
    real = engine.Group.train_epoch

    def interrupted(self, state, epoch, active=None):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(self, state, epoch, active)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine.Group, "train_epoch", interrupted)
        assert cli.main(["sweep", _config(tmp), "--quiet"]) == 130
    folder = tmp / "runs" / "small"
    assert json.loads((folder / "checkpoints" / "group0.json").read_text())["epoch"] == 2
    return folder


def _config(tmp: Path) -> str:
    path = tmp / "small.yaml"
    path.write_text(yaml.safe_dump({**SMALL, "output": {"dir": str(tmp / "runs")}}))
    return str(path)


def _copy(stopped, tmp_path, **edit) -> tuple[str, Path]:
    """The stopped folder under tmp_path, its env.json's start edited (a key set to None is
    removed: an older env.json), and a config that resumes it."""
    folder = tmp_path / "runs" / "small"
    shutil.copytree(stopped, folder)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["output"]["dir"] = str(folder.parent)  # where it now is
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    env = json.loads((folder / "env.json").read_text())
    for key, value in edit.items():
        if key in ("jax", "jaxlib"):
            env[key] = env["versions"][key] = value
        elif value is None:
            env.pop(key)
        else:
            env[key] = value
    (folder / "env.json").write_text(json.dumps(env, sort_keys=True))
    return _config(tmp_path), folder


def _snapshot(folder: Path) -> dict:
    """Every path under ``folder``, and each file's bytes and modification time."""
    return {p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file()
            else "folder" for p in folder.rglob("*")}


def _one_line(err: str, *needles: str) -> None:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err


def _here() -> str:
    return machine.cpu_record()["model"] or "an unnamed CPU"


@pytest.mark.slow
@pytest.mark.parametrize(("edit", "needles"), [
    ({"cpu": AMD}, ['was started on "AMD EPYC 7B13" (avx2); this is "']),
    ({"jaxlib": "0.0.1"}, ["was started on jaxlib 0.0.1; this is jaxlib "]),
    ({"cpu": AMD, "jax": "0.0.1"}, ['"AMD EPYC 7B13" (avx2) with jax 0.0.1; this is "']),
    ({"cpu": None, "jaxlib": "0.0.1"}, ["jaxlib 0.0.1 (its CPU was not recorded)"]),
])
def test_a_resume_elsewhere_is_refused_and_touches_nothing(stopped, tmp_path, capsys, edit,
                                                           needles):
    cfg, folder = _copy(stopped, tmp_path, **edit)
    before = _snapshot(folder)
    assert cli.main(["sweep", cfg, "--quiet", "--resume"]) == 2
    _one_line(capsys.readouterr().err, "lossjax: error: --resume: ", *needles,
              "--overwrite", "--allow-other-machine", "bit for bit")
    assert _snapshot(folder) == before


@pytest.mark.slow
def test_the_refusal_names_this_cpu_and_lossjax_run_refuses_too(stopped, tmp_path):
    cfg, folder = _copy(stopped, tmp_path, cpu=AMD)
    before = _snapshot(folder)
    with pytest.raises(ResultsError) as e:
        lossjax.run(cfg, resume=True, progress=False)
    # Its features that the AMD machine lacks, not the ones both have (else its newest).
    ours = machine.cpu_record()["features"]
    extra = [f for f in ours if f not in AMD["features"]] or ours[-1:]
    shown = ", ".join(extra[:3]) + (", ..." if len(extra) > 3 else "")
    assert f'this is "{_here()}" ({shown}):' in str(e.value)
    assert _snapshot(folder) == before


def test_allow_other_machine_needs_resume(tmp_path, capsys):
    with pytest.raises(ConfigError, match="--allow-other-machine applies to --resume only"):
        lossjax.run(_config(tmp_path), allow_other_machine=True, progress=False)
    assert not (tmp_path / "runs").exists()
    args = cli.build_parser().parse_args(["sweep", "c.yaml", "--resume", "--allow-other-machine"])
    assert args.allow_other_machine and args.resume


@pytest.mark.slow
def test_allow_other_machine_resumes_and_the_report_names_the_break(stopped, tmp_path, capsys):
    cfg, folder = _copy(stopped, tmp_path, cpu=AMD, jaxlib="0.0.1")
    assert cli.main(["sweep", cfg, "--quiet", "--resume", "--allow-other-machine"]) == 0
    assert "not bit-reproducible" in capsys.readouterr().err  # the warning, as it resumes
    env = json.loads((folder / "env.json").read_text())
    (resume,) = env["resumes"]
    assert resume["resumed_after_epochs"] == [2] and resume["epochs"] == 3
    assert resume["cpu"] == machine.cpu_record() and env["cpu"] == AMD
    assert resume["other_machine"].startswith(
        'started on "AMD EPYC 7B13" (avx2) with jaxlib 0.0.1; resumed on "')
    text = (folder / "report.md").read_text()
    assert ('epochs 1–2 ran on "AMD EPYC 7B13" (avx2) with jaxlib 0.0.1, epoch 3 on "'
            in text)
    assert "rows after epoch 2 are not bit-reproducible with an uninterrupted run" in text
    assert "- CPU: `AMD EPYC 7B13` (AuthenticAMD, x86_64, 8 logical CPUs); XLA compiles for " \
           "sse4_2, avx, f16c, fma, avx2" in text
    assert f"- CPU of resume 1: `{_here()}`" in text


@pytest.mark.slow
def test_an_old_env_json_without_cpu_resumes_with_a_note(stopped, tmp_path, caplog):
    cfg, folder = _copy(stopped, tmp_path, cpu=None)
    res = lossjax.run(cfg, resume=True, progress=False)
    assert any("does not record the CPU" in r.getMessage() for r in caplog.records)
    text = res.report()
    assert "- CPU not recorded" in text and "bit-reproducible" not in text
    assert res.env["resumes"][0]["resumed_after_epochs"] == [2]


@pytest.mark.slow
def test_the_same_machine_resumes_silently(stopped, tmp_path, caplog):
    cfg, folder = _copy(stopped, tmp_path)
    assert cli.main(["sweep", cfg, "--quiet", "--resume"]) == 0
    env = json.loads((folder / "env.json").read_text())
    assert "other_machine" not in env["resumes"][0]
    text = (folder / "report.md").read_text()
    assert "bit-reproducible" not in text and "CPU of resume" not in text
