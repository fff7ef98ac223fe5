"""How worker processes load the vlm policy's model: the run's ``ModelLoading`` (device, dtype,
attention, dialect, pointer head) travels with the EvalConfig and is recorded with the results."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import FakeEnvFactory

from catp_agent.harness.evaluation import EvalConfig, parse_variants, run_eval
from catp_agent.harness.evaluation.runner import _EpisodePlayer
from catp_agent.harness.validate import ModelLoading


def _config(loading: ModelLoading, **kw) -> EvalConfig:
    return EvalConfig(tasks=("fake/click-v0",), seeds=(0,), variants=parse_variants("none"), policy="vlm",
                      max_steps=2, fidelity=False, loading=loading, **kw)


@pytest.mark.parametrize(("kw", "message"), [
    ({"device": "gpu"}, "device must be one of auto, cpu, cuda, cuda:N, got 'gpu'"),
    ({"dtype": "half"}, "dtype must be one of auto, bf16, fp16, fp32, got 'half'"),
    ({"attn": "eager"}, "attn must be one of sdpa, flash_attention_2, got 'eager'"),
    ({"dialect": "gpt"}, "unknown dialect 'gpt'"),
    ({"pointer": "no"}, "pointer must be True or False, got 'no'"),
])
def test_bad_loading_options_name_the_value(kw, message):
    with pytest.raises(ValueError, match=message):
        ModelLoading(**kw)


def test_the_names_are_the_loaders_own():
    from catp_agent.agent import model_io

    assert ModelLoading.DEVICES == model_io.DEVICES and ModelLoading.ATTN == model_io.ATTN
    assert ModelLoading.DTYPES == tuple(model_io.DTYPES)


def test_cuda_is_checked_where_the_model_loads_not_in_the_config():
    """A driver without a GPU can send ``cuda`` to workers that have one."""
    assert ModelLoading(device="cuda:1").device == "cuda:1"


def test_a_worker_loads_the_model_with_the_runs_options():
    """What a local worker process (and a Ray actor) does: the first episode loads the bundled
    model once with config.loading; the episode then runs on it."""
    player = _EpisodePlayer(_config(ModelLoading(device="cpu", dtype="bf16", dialect="native")), None,
                            FakeEnvFactory())
    try:
        outcome = player.play(_config(ModelLoading()).runs()[0])
        agent = player.policies.model
        assert agent.dtype == torch.bfloat16 and agent.device.type == "cpu" and agent.dialect == "native"
        assert outcome.record["error"] is None and outcome.record["steps"] >= 1
        assert player.play(_config(ModelLoading()).runs()[0]) and player.policies.model is agent  # loaded once
    finally:
        player.close()


def test_loading_is_part_of_the_results_identity(tmp_path):
    """A folder written in bf16 does not resume in fp32; the default adds nothing to the identity
    (older folders resume), and the device may change between runs."""
    assert "loading" not in _config(ModelLoading()).identity()
    assert "loading" not in _config(ModelLoading(device="cpu")).identity()
    bf16 = _config(ModelLoading(device="cpu", dtype="bf16"))
    assert bf16.identity()["loading"]["dtype"] == "bf16"
    out = tmp_path / "out"
    run_eval(bf16, out, env_factory=FakeEnvFactory(), progress=False)
    assert json.loads((out / "config.json").read_text())["config"]["loading"]["dtype"] == "bf16"
    with pytest.raises(ValueError, match="different setup"):
        run_eval(_config(ModelLoading(device="cpu", dtype="fp32")), out, env_factory=FakeEnvFactory(), progress=False)
