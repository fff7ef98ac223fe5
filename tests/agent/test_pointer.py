"""The pointer head (catp_agent.agent.pointer): its targets and geometry, saving beside a
checkpoint, and VLMPolicy clicking through it, unpruned and under pruning (only kept tokens)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from catp_agent import PruningConfig
from catp_agent.agent.model_io import load_agent_model
from catp_agent.agent.pointer import (PointerConfig, PointerHead, load_pointer_head, patch_point, pointer_loss,
                                      pointer_targets, save_pointer_head)
from catp_agent.models.tiny import build_processor, build_tiny_model
from policies import make_policy


@settings(max_examples=200, deadline=None)
@given(rows=st.integers(1, 20), cols=st.integers(1, 20), width=st.integers(20, 1600), height=st.integers(20, 1200),
       fx=st.floats(0, 0.999), fy=st.floats(0, 0.999))
def test_a_click_is_its_own_token_and_offset(rows, cols, width, height, fx, fy):
    click = (fx * width, fy * height)
    right, own, offset = pointer_targets(click, None, (rows, cols), (width, height))
    assert right == [own] and 0 <= own < rows * cols
    x, y = patch_point(own, offset, (rows, cols), (width, height))
    assert abs(x - click[0]) <= 1 and abs(y - click[1]) <= 1


def test_right_tokens_are_the_patches_centred_in_the_box():
    # 4 x 4 grid over 400 x 400: patch centres at 50, 150, 250, 350.
    right, own, offset = pointer_targets((160, 60), (120, 20, 160, 60), (4, 4), (400, 400))
    assert own == 1 and offset == pytest.approx((0.6, 0.6))
    assert right == [1, 2]  # centres (150, 50) and (250, 50) are in the box; (350, 50) is not
    # A box smaller than a patch: only the click's own token.
    assert pointer_targets((390, 390), (380, 380, 15, 15), (4, 4), (400, 400))[0] == [15]


def test_pointer_loss_rewards_mass_on_right_tokens():
    right = torch.tensor([[False, True, True, False]])
    own, offset = torch.tensor([1]), torch.tensor([[0.5, 0.5]])
    offsets = torch.full((1, 4, 2), 0.5)
    good, hit_good = pointer_loss(torch.tensor([[0.0, 5.0, 5.0, 0.0]]), offsets, right, own, offset)
    bad, hit_bad = pointer_loss(torch.tensor([[5.0, 0.0, 0.0, 5.0]]), offsets, right, own, offset)
    assert good < bad and bool(hit_good) and not bool(hit_bad)
    off, _ = pointer_loss(torch.tensor([[0.0, 5.0, 5.0, 0.0]]), torch.full((1, 4, 2), 0.9), right, own, offset)
    assert off > good  # the offset is scored too


def test_saved_head_loads_beside_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    head = PointerHead(PointerConfig(hidden_size=64, dim=16))
    assert load_pointer_head(tmp_path) is None
    save_pointer_head(head, tmp_path)
    again = load_pointer_head(tmp_path)
    assert again.config == head.config
    assert all(torch.equal(a, b) for a, b in zip(head.state_dict().values(), again.state_dict().values()))
    (tmp_path / "pointer_head.json").unlink()
    with pytest.raises(FileNotFoundError, match="pointer_head.json"):
        load_pointer_head(tmp_path)


def _agent(family: str):
    model, tok = build_tiny_model(family, num_layers=6, seed=3)
    torch.manual_seed(1)
    head = PointerHead(PointerConfig(hidden_size=model.config.text_config.hidden_size, dim=32))
    processor = build_processor(family, tok).image_processor if family == "llava" else None
    return load_agent_model(model, tokenizer=tok, image_processor=processor, pointer=head)


def _screens(n: int) -> list[np.ndarray]:
    rng = np.random.RandomState(5)
    return [(rng.rand(112, 140, 3) * 255).astype("uint8") for _ in range(n)]


@pytest.mark.parametrize("family", ["qwen2_vl", "llava"])
def test_policy_points_with_the_final_hidden_states_of_kept_tokens(family):
    agent = _agent(family)
    screens = _screens(3)
    for cfg in (PruningConfig(method="none", ratio=0.0), PruningConfig(method="catp", ratio=0.778),
                PruningConfig(method="fastv", ratio=0.889)):
        policy = make_policy("vlm", model=agent, pruning=cfg, history=2, max_new_tokens=2)
        policy.reset()
        for screen in screens:
            policy.window.observe(screen)
            policy.window.act("click(1, 1)")
        policy.window.observe(screens[0])
        inputs, meta = policy.build_inputs("click the thing")
        text, record, _, hidden = policy._generate(inputs, cfg, None)
        grid = meta["grids"][-1]
        action, token = policy._point("click(3, 4)", hidden, record, grid, (112, 140))
        assert policy._point('type("a")', hidden, record, grid, (112, 140)) == ('type("a")', None)
        start, end = record.image_spans[-1]
        if cfg.method == "none":
            # The same head over an independent forward's last hidden states picks the same token.
            with torch.no_grad():
                out = agent.model(**inputs, output_hidden_states=True)
            final = out.hidden_states[-1][0]
            best, _, _ = agent.pointer.point(final[-1], final[start:end])
            assert token == best
            assert hidden.shape[0] == record.n_tokens
        else:
            kept = record.kept_final[-1].tolist()
            assert token in kept and len(kept) < end - start  # only a kept token can be pointed at
            assert hidden.shape[0] == record.n_tokens - (record.n_image_tokens - record.n_kept_final)
        # The click is inside the chosen token's patch.
        rows, cols = grid
        x, y = (int(v) for v in action[len("click("):-1].split(","))
        assert int(x // (140 / cols)) == token % cols and int(y // (112 / rows)) == token // cols


def test_act_reports_the_pointed_token(tmp_path):
    agent = _agent("qwen2_vl")
    policy = make_policy("vlm", model=agent, pruning=PruningConfig(method="catp", ratio=0.778), history=1,
                         max_new_tokens=3)
    policy.reset()
    action = policy.act({"screenshot": _screens(1)[0], "instruction": "go"}, {})
    report = policy.last_report
    assert report.to_dict()["pointer_token"] == report.pointer_token
    if action.startswith(("click(", "double_click(")):  # a random model rarely writes one
        assert report.pointer_token in report.kept_map.kept
    else:
        assert report.pointer_token is None


def test_no_pointer_runs_a_folder_without_its_head(tmp_path):
    """``--no-pointer`` (``pointer=False``): the folder's head is not loaded, and a policy given
    an AgentModel with a head runs without it while the shared model keeps it."""
    from test_checkpoints import save_tiny_checkpoint

    from catp_agent.harness import validate

    folder = save_tiny_checkpoint("qwen2_vl", tmp_path / "ckpt")
    hidden = json.loads((folder / "config.json").read_text())["text_config"]["hidden_size"]
    save_pointer_head(PointerHead(PointerConfig(hidden_size=hidden, dim=16)), folder)
    with_head = validate.load_model(str(folder), device="cpu")
    assert with_head.pointer is not None
    assert validate.load_model(str(folder), device="cpu", pointer=False).pointer is None
    policy = make_policy("vlm", model=with_head, pointer=False, history=1, max_new_tokens=3)
    assert policy.agent.pointer is None and with_head.pointer is not None
    policy.reset()
    policy.act({"screenshot": _screens(1)[0], "instruction": "go"}, {})
    assert policy.last_report.pointer_token is None
    assert make_policy("vlm", model=with_head, history=1).agent.pointer is with_head.pointer
