"""Real checkpoints as their users run them: device / dtype / attention options, hub ids, pruning
in bf16, and tiny saved checkpoints run end to end through ``catp-agent run --dialect``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from catp_agent import PruningConfig
from catp_agent.agent.model_io import check_attn, load_agent_model, resolve_device, resolve_dtype
from catp_agent.models.families import get_family
from catp_agent.models.tiny import build_tiny_model
from catp_agent.pruning import keep_count

pytestmark = pytest.mark.compat  # CI runs it on the oldest supported versions too (checkpoints, and browser episodes through the CLI)

CLI = [sys.executable, "-m", "catp_agent.harness.cli"]


def test_loading_options_are_checked_with_clear_messages():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16") == torch.bfloat16 and resolve_dtype("fp16") == torch.float16
    with pytest.raises(ValueError, match="dtype must be one of auto, bf16, fp16, fp32, got 'f32'"):
        resolve_dtype("f32")
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda, cuda:N, got 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda:0")
    with pytest.raises(ValueError, match="attn must be one of sdpa, flash_attention_2"):
        check_attn("eager2")
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="needs the flash_attn package"):
            check_attn("flash_attention_2")


def test_unreachable_hub_id_is_one_line_exit_2(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([*CLI, "run", "--model", "fake-org/no-such-vlm-1b", "--max-steps", "1"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "fake-org/no-such-vlm-1b" in lines[0] and "could not be fetched" in lines[0], lines


@pytest.mark.parametrize("method", ["catp", "fastv", "divprune"])
def test_pruning_in_bf16_generates_and_meets_its_budget(method):
    from policies import make_policy

    model, tok = build_tiny_model("qwen2_vl", num_layers=4, seed=2)
    agent = load_agent_model(model, tokenizer=tok, dtype="bf16")
    assert agent.dtype == torch.bfloat16
    ratio = 0.778
    policy = make_policy("vlm", model=agent, history=2, max_new_tokens=3,
                         pruning=PruningConfig(method=method, ratio=ratio, **({} if method == "divprune" else {"k_layer": 1})))
    policy.reset()
    rng = np.random.RandomState(0)
    for i in range(3):
        pixels = (rng.rand(112, 140, 3) * 255).astype("uint8")
        action = policy.act({"screenshot": pixels, "instruction": "log in", "last_action_error": "", "step": i}, {})
        assert isinstance(action, str)
    step = policy.last_report.to_dict()
    assert step["kept_final"] == keep_count(step["image_tokens_in"], ratio), step


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["catp", "fastv", "divprune"])
def test_pruning_on_cuda_in_bf16(method):
    from policies import make_policy

    model, tok = build_tiny_model("qwen2_vl", num_layers=4, seed=2)
    agent = load_agent_model(model, tokenizer=tok, device="cuda", dtype="bf16")
    policy = make_policy("vlm", model=agent, history=2, max_new_tokens=3, dialect="qwen25vl",
                         pruning=PruningConfig(method=method, ratio=0.778, **({} if method == "divprune" else {"k_layer": 1})))
    policy.reset()
    rng = np.random.RandomState(0)
    for i in range(3):
        pixels = (rng.rand(224, 280, 3) * 255).astype("uint8")
        policy.act({"screenshot": pixels, "instruction": "log in", "last_action_error": "", "step": i}, {})
    step = policy.last_report.to_dict()
    assert step["kept_final"] == keep_count(step["image_tokens_in"], 0.778), step


def save_tiny_checkpoint(family: str, folder: Path) -> Path:
    """A random-weight checkpoint as save_pretrained writes it, with its tokenizer (chat template)
    and the image processor of the real checkpoint's kind."""
    model, tok = build_tiny_model(family, num_layers=4, seed=1)
    processor = get_family(family).tiny_processor(tok, image_size=56, min_pixels=56 * 56, max_pixels=224 * 224)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    processor.image_processor.save_pretrained(folder)
    return folder


@pytest.mark.browser
@pytest.mark.parametrize(("family", "dialect", "dtype"), [
    ("qwen2_vl", "boxes", "fp32"), ("llava", "native", "bf16"),  # the default run: one of each kind of position ids
    *(pytest.param(*case, marks=pytest.mark.slow) for case in [
        ("qwen2_vl", "uitars", "bf16"), ("llava", "showui", "fp32"),
        ("qwen2_5_vl", "qwen25vl", "fp32"), ("qwen2_5_vl", "uitars_v1", "bf16"),
        ("llava_next", "native", "fp32"), ("llava_next", "showui", "bf16")]),
])
def test_saved_checkpoint_runs_end_to_end(tmp_path, family, dialect, dtype):
    ckpt = save_tiny_checkpoint(family, tmp_path / family)
    proc = subprocess.run([*CLI, "run", "--model", str(ckpt), "--dialect", dialect, "--dtype", dtype, "--device", "cpu",
                           "--max-steps", "2", "--method", "catp", "--ratio", "0.778", "--set", "k_layer=1",
                           "--no-speedup", "--json"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["steps"] >= 1
    for step in result["step_records"]:
        assert step["kept_final"] == keep_count(step["image_tokens_in"], 0.778), step
