"""Ray is optional: nothing imports it unless the Ray backend runs, and asking for that backend
without Ray installed is refused (exit 2) with how to install it. Runs with or without Ray."""

from __future__ import annotations

import subprocess
import sys

import pytest

from catp_agent.harness.cli import main
from catp_agent.harness.evaluation import EvalConfig, parse_variants, run_eval

ORACLE = ["eval", "--policy", "oracle", "--tasks", "catp/login-v0", "--seeds", "0", "--methods", "none",
          "--no-progress"]


def test_importing_the_harness_does_not_import_ray():
    code = ("import sys, catp_agent.harness.cli, catp_agent.harness.evaluation.runner, "
            "catp_agent.harness.evaluation.ray_backend; print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_backend_ray_without_ray_exits_2_saying_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    out = tmp_path / "out"
    assert main([*ORACLE, "--out", str(out), "--backend", "ray"]) == 2
    err = capsys.readouterr().err
    assert "needs Ray, which is not installed" in err and "pip install 'catp-agent[ray]'" in err
    assert not out.exists()  # refused before anything was written
    config = EvalConfig(tasks=("catp/login-v0",), seeds=(0,), variants=parse_variants("none"), policy="oracle")
    with pytest.raises(ValueError, match=r"catp-agent\[ray\]"):
        run_eval(config, out, backend="ray")
    assert not out.exists()


@pytest.mark.parametrize(("flags", "message"), [
    (["--episode-timeout", "0"], "episode timeout must be a number of seconds in (0, 604800], got 0.0"),
    (["--ray-gpus-per-worker", "-1"], "gpus per worker must be a number in [0, 64]"),
    (["--ray-address", " "], "ray address must be HOST:PORT"),
])
def test_bad_ray_options_exit_2_before_anything_runs(tmp_path, capsys, flags, message):
    assert main([*ORACLE, "--out", str(tmp_path / "out"), "--backend", "ray", *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_unknown_backend_is_refused(tmp_path):
    config = EvalConfig(tasks=("catp/login-v0",), seeds=(0,), variants=parse_variants("none"), policy="oracle")
    with pytest.raises(ValueError, match="backend must be 'local' or 'ray', got 'spark'"):
        run_eval(config, tmp_path / "out", backend="spark")
    with pytest.raises(ValueError, match="cannot be sent to Ray workers"):
        run_eval(config, tmp_path / "out", backend="ray", model=object())


def test_bad_model_loading_options_exit_2_naming_the_value(tmp_path, capsys):
    """--device, --dtype, --attn, --dialect travel to every worker (local or Ray); a bad one is
    refused up front, before anything is written."""
    for flags, message in ((["--device", "gpu"], "device must be one of auto, cpu, cuda, cuda:N, got 'gpu'"),
                           (["--dtype", "int8"], "dtype must be one of auto, bf16, fp16, fp32, got 'int8'")):
        assert main([*ORACLE, "--out", str(tmp_path / "out"), "--workers", "2", *flags]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
