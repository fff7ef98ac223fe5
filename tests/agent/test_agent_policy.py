"""The VLM policy's plumbing: vision-feature reuse, action parsing, never crashing on output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from catp_agent import PruningConfig
from catp_agent.agent import parse_action_text
from catp_agent.agent.model_io import load_agent_model
from catp_agent.agent.vision_cache import PRECOMPUTED_FEATURES
from catp_agent.models.tiny import build_tiny_model
from policies import make_policy

pytestmark = pytest.mark.compat  # CI runs it on the oldest supported versions too (the agent step)


def tiny_agent():
    model, tok = build_tiny_model("qwen2_vl", num_layers=4, seed=2)
    return load_agent_model(model, tokenizer=tok)


def screens(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.RandomState(seed)
    return [(rng.rand(112, 140, 3) * 255).astype("uint8") for _ in range(n)]


@pytest.mark.skipif(not PRECOMPUTED_FEATURES, reason="transformers < 5.18 takes no precomputed features: no reuse")
def test_reused_vision_features_equal_re_encoding():
    agent = tiny_agent()
    policy = make_policy("vlm", model=agent, history=2, max_new_tokens=2)
    policy.reset()
    for i, pixels in enumerate(screens(3)):
        policy.act({"screenshot": pixels, "instruction": "go", "last_action_error": "", "step": i}, {})
    assert policy.last_report.vision_reuse_saved_s > 0  # the two past screens came from the cache
    inputs, _ = policy.build_inputs("go")
    cached = inputs["mm_encoder_outputs"]["image"].pooler_output
    window = policy.window.screens()
    assert len(cached) == len(window) == 3
    from PIL import Image

    for feats, screen in zip(cached, window):
        fresh_inputs = agent.image_processor(images=[Image.fromarray(screen.pixels)], return_tensors="pt")
        with torch.no_grad():
            fresh = agent.model.model.get_image_features(
                pixel_values=fresh_inputs["pixel_values"], image_grid_thw=fresh_inputs["image_grid_thw"], return_dict=True
            ).pooler_output[0]
        assert torch.equal(feats, fresh)


def test_policy_logs_tokens_and_matches_unpruned_at_ratio_zero():
    agent = tiny_agent()
    plain = make_policy("vlm", model=agent, history=1, max_new_tokens=4)
    zero = make_policy("vlm", model=agent, history=1, max_new_tokens=4, pruning=PruningConfig(method="catp", ratio=0.0, k_layer=1))
    pruned = make_policy("vlm", model=agent, history=1, max_new_tokens=4, fidelity=True,
                         pruning=PruningConfig(method="catp", ratio=0.778, k_layer=1))
    for p in (plain, zero, pruned):
        p.reset()
    for i, pixels in enumerate(screens(2)):
        obs = {"screenshot": pixels, "instruction": "log in", "last_action_error": "", "step": i}
        assert plain.act(obs, {}) == zero.act(obs, {})
        pruned.act(obs, {})
    step, plain_step = pruned.last_report.to_dict(), plain.last_report.to_dict()
    assert step["image_tokens_in"] == plain_step["image_tokens_in"]
    assert step["kept_final"] < step["kept_stage1"] < step["image_tokens_in"]
    assert isinstance(step["action_matches_reference"], bool)
    assert step["kv_cache_bytes"] < plain_step["kv_cache_bytes"]
    assert step["k_layer"] == 1 and plain_step["k_layer"] is None  # K as used; method none has no K


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_action_parser_never_raises(text):
    out = parse_action_text(text)
    assert isinstance(out, str)
    assert "\n" not in out


def test_action_parser_reads_the_first_call():
    assert parse_action_text(' click(12, 30) and then more') == "click(12, 30)"
    assert parse_action_text('type("a (b) c")\nclick(1, 2)') == 'type("a (b) c")'
    assert parse_action_text("nonsense") == "nonsense"
