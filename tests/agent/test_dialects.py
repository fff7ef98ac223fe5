"""Action dialects: documented outputs parse, coordinates round-trip, no text raises, the env's
parser reads every action a dialect writes, and CATP finds spans and paired text in each layout."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from catp_agent import PruningConfig
from catp_agent.agent.dialects import Frame, default_dialect, dialect_names, get_dialect
from catp_agent.agent.report import build_step_report
from catp_agent.pruning import keep_count
from catp_agent.pruning.spans import build_layout
from envs.actions import parse_action

FRAME = Frame(1280, 720, 1288, 728)  # a screenshot and its smart_resize'd size (multiples of 28)

# Outputs written exactly as each model's own documentation shows them.
DOCUMENTED = [
    # bytedance/UI-TARS codes/tests/action_parser_test.py (test_parse_action_with_box_tokens)
    ("uitars_v1", "Thought: test\nAction: click(start_box='<|box_start|>(112,224)<|box_end|>')",
     f"click({round(112 * 1280 / 1000)}, {round(224 * 720 / 1000)})"),
    # same file, test_parse_action: the <point> form
    ("uitars_v1", "Thought: test\nAction: click(point='<point>200 300</point>')", "click(256, 216)"),
    # UI-TARS-1.5 (README_coordinates.md): absolute pixels of the resized image, box tokens stripped on decode
    ("uitars", "Thought: Click the login button.\nAction: click(start_box='(644,364)')", "click(640, 360)"),
    ("uitars", "Thought: t\nAction: type(content='alice\\n')", 'type("alice\\n")'),
    ("uitars", "Thought: t\nAction: hotkey(key='ctrl c')", 'press("Control+c")'),
    ("uitars", "Thought: t\nAction: scroll(start_box='(10,10)', direction='down')", "scroll(0, 360)"),
    ("uitars", "Thought: t\nAction: finished(content='done')", "done()"),
    # QwenLM/Qwen2.5-VL cookbooks/computer_use.ipynb: the tool call the model answers with
    ("qwen25vl", '<tool_call>\n{"name": "computer_use", "arguments": {"action": "left_click", "coordinate": [644, 364]}}\n</tool_call>',
     "click(640, 360)"),
    ("qwen25vl", '<tool_call>\n{"name": "computer_use", "arguments": {"action": "type", "text": "alice"}}\n</tool_call>',
     'type("alice")'),
    ("qwen25vl", '<tool_call>\n{"name": "computer_use", "arguments": {"action": "key", "keys": ["enter"]}}\n</tool_call>',
     'press("Enter")'),
    ("qwen25vl", '<tool_call>\n{"name": "computer_use", "arguments": {"action": "terminate", "status": "success"}}\n</tool_call>',
     "done()"),
    # Qwen2-VL model card / OS-Atlas README: <|box_start|>(x1,y1),(x2,y2)<|box_end|> in [0, 1000)
    ("boxes", "<|object_ref_start|>login<|object_ref_end|><|box_start|>(100,200),(300,400)<|box_end|>",
     "click(256, 216)"),
    ("boxes", "(100,200),(300,400)", "click(256, 216)"),  # the same, box tokens skipped when decoding
    ("boxes", "(500,500)", "click(640, 360)"),  # UGround-V1 model card: a point (x, y)
    ("boxes", "actions:\nTYPE [alice]", 'type("alice")'),  # OS-Atlas-Pro navigation answers
    # showlab/ShowUI README: {'action': 'CLICK', 'value': None, 'position': [0.49, 0.42]}
    ("showui", "{'action': 'CLICK', 'value': None, 'position': [0.49, 0.42]}", "click(627, 302)"),
    ("showui", "{'action': 'INPUT', 'value': 'alice', 'position': [0.3, 0.4]}", 'type("alice")'),
    ("showui", "{'action': 'ENTER', 'value': None, 'position': None}", 'press("Enter")'),
    ("native", 'click(300, 110)', "click(300, 110)"),
]


@pytest.mark.parametrize(("name", "text", "expected"), DOCUMENTED)
def test_documented_outputs_parse_to_env_actions(name, text, expected):
    action = get_dialect(name).parse(text, FRAME)
    assert action == expected
    parse_action(action)  # the environment reads what the dialect wrote


ENV_ACTIONS = ["click(300, 110)", "double_click(5, 7)", 'type("alice \\"x\\"")', 'press("Enter")', "done()"]


@pytest.mark.parametrize("name", dialect_names())
@pytest.mark.parametrize("size", [(640, 480), (1280, 720), (333, 214), (1920, 1080)])
def test_coordinates_round_trip(name, size):
    """pixels -> model coordinates (as the model writes them) -> pixels, within 1 px or one model unit."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    w, h = size
    rh, rw = smart_resize(h, w, factor=28)
    frame = Frame(w, h, rw, rh)
    dialect = get_dialect(name)
    sx, sy = frame.scale(dialect.coords)
    unit = 0.01 if dialect.coords == "unit" else 1.0  # ShowUI writes two decimals
    for x, y in [(0, 0), (w // 3, h // 2), (w - 1, h - 1), (17, h - 5)]:
        text = dialect.render(f"click({x}, {y})", frame)
        back = parse_action(dialect.parse(text, frame))
        assert back.name == "click", (text, back)
        assert abs(back.args[0] - x) <= max(1.0, unit / sx / 2 + 1), (text, back)
        assert abs(back.args[1] - y) <= max(1.0, unit / sy / 2 + 1), (text, back)


@pytest.mark.parametrize("name", dialect_names())
@pytest.mark.parametrize("action", ENV_ACTIONS)
def test_rendered_history_reads_back_as_a_valid_env_action(name, action):
    """What a dialect shows the model for a past action reads back as an action the env accepts."""
    out = get_dialect(name).parse(get_dialect(name).render(action, FRAME), FRAME)
    parse_action(out)


@pytest.mark.parametrize("name", dialect_names())
@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=300) | st.sampled_from([t for _, t, _ in DOCUMENTED]).flatmap(
    lambda t: st.text(max_size=20).map(lambda junk: t[: len(t) // 2] + junk + t[len(t) // 2:])))
def test_no_text_makes_a_parser_raise(name, text):
    out = get_dialect(name).parse(text, FRAME)
    assert isinstance(out, str) and "\n" not in out


def test_defaults_per_model_type():
    assert default_dialect("llava", "tiny-random") == "native"
    assert default_dialect("qwen2_5_vl", "Qwen/Qwen2.5-VL-7B-Instruct") == "qwen25vl"
    assert default_dialect("qwen2_vl", "Qwen/Qwen2-VL-2B-Instruct") == "boxes"
    assert default_dialect("qwen2_5_vl", "ByteDance-Seed/UI-TARS-1.5-7B") == "uitars"
    assert default_dialect("qwen2_vl", "bytedance-research/UI-TARS-7B-DPO") == "uitars_v1"
    assert default_dialect("qwen2_vl", "showlab/ShowUI-2B") == "showui"
    with pytest.raises(ValueError, match="unknown dialect 'nope'; registered dialects: native"):
        get_dialect("nope")


# ------------------------------------------------------------------ CATP in each dialect's layout
def _screens(n: int) -> list[np.ndarray]:
    rng = np.random.RandomState(0)
    return [(rng.rand(112, 140, 3) * 255).astype("uint8") for _ in range(n)]


@pytest.fixture(scope="module")
def tiny_agent():
    from catp_agent.agent.model_io import load_agent_model
    from catp_agent.models.tiny import build_tiny_model

    model, tok = build_tiny_model("qwen2_vl", num_layers=4, seed=2)
    return load_agent_model(model, tokenizer=tok)


@pytest.mark.parametrize("name", dialect_names())
def test_catp_spans_paired_text_and_budget_in_each_layout(tiny_agent, name):
    from policies import make_policy

    ratio = 0.778
    policy = make_policy("vlm", model=tiny_agent, history=3, max_new_tokens=3, dialect=name,
                         pruning=PruningConfig(method="catp", ratio=ratio, k_layer=1))
    assert policy.pruning.paired_text == get_dialect(name).paired_text
    policy.reset()
    actions = ["click(30, 40)", 'type("alice")']
    pixels = _screens(3)
    for p, a in zip(pixels[:2], actions):  # history: two past screens with their actions
        policy.window.observe(p)
        policy.window.act(a)
    policy.window.observe(pixels[2])
    inputs, meta = policy.build_inputs("Log in as alice")
    ids = inputs["input_ids"].cpu()
    layout = build_layout(ids, policy._image_token_id, policy.pruning.paired_text)
    assert layout.n_images == 3
    if "mm_encoder_outputs" in inputs:  # transformers >= 5.18: the policy passes precomputed features
        sizes = [int(f.shape[0]) for f in inputs["mm_encoder_outputs"]["image"].pooler_output]
    else:  # 5.17: the model encodes the pixels; its grids give the token counts
        merge = tiny_agent.model.config.vision_config.spatial_merge_size
        sizes = (inputs["image_grid_thw"].prod(-1) // merge**2).tolist()
    assert [s.size for s in layout.spans] == sizes
    tok = tiny_agent.tokenizer
    texts = [tok.decode(ids[0, pair]) for pair in layout.text_pairs]
    dialect, frames = get_dialect(name), [policy._frames[i] for i in meta["ids"]]
    for i, action in enumerate(actions):  # each ICD's paired text holds its action, in the model's grammar
        assert dialect.render(action, frames[i]).strip() in texts[i], (texts[i], action)
    assert "Log in as alice" in texts[2]  # the query's holds the instruction
    rendered = tok.decode(ids[0])
    if dialect.system:
        assert rendered.index(dialect.system_text(frames[-1])[:40]) < rendered.index("<|vision_start|>")
    raw, record, _, _ = policy._generate(inputs, policy.pruning, None)
    n = layout.n_image_tokens
    report = build_step_report(
        record, action="x", raw_output=raw, generate_s=0.0, vision_s=0.0, vision_reuse_saved_s=0.0,
        grid=meta["grids"][-1], screen_size=pixels[2].shape[:2], grids=meta["grids"], screenshot_ids=meta["ids"])
    d = report.to_dict()
    assert d["image_tokens_in"] == n
    assert d["kept_final"] == keep_count(n, ratio), d
    assert isinstance(dialect.parse(raw, frames[-1]), str)  # random weights: any text, never a crash
