"""Behaviour-cloning pieces: demos, tokenizer, samples in the agent's exact prompt format, and a
training step that learns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from catp_agent.agent.model_io import load_agent_model
from catp_agent.harness.training.data import SampleSet, corpus_texts, prompt_messages
from catp_agent.harness.training.demos import Demo, round_action
from catp_agent.harness.training.model import NUMBER_TOKENS, ModelSize, build_bpe_tokenizer, build_image_processor, build_model
from catp_agent.harness.training.train import TrainConfig, forward_loss

SMALL = ModelSize(image_size=112, patch_size=28, vision_hidden=32, vision_layers=1, vision_heads=2, hidden=48,
                  layers=3, heads=4, kv_heads=2, intermediate=64, vocab_size=300)


def _demo(seed: int, steps: int = 3, task: str = "catp/login-v0") -> Demo:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, size=(steps, 48, 64, 3), dtype=np.uint8)
    actions = [f"click({10 * (seed + i)}, {20 + 10 * i})" for i in range(steps - 1)] + ['type("alice7")']
    return Demo(task, 10000 + seed, f'Log in as "alice7" number {seed}.', frames, actions, [""] * (steps - 1) + ["bad click"])


@pytest.fixture(scope="module")
def parts():
    demos = [_demo(s, steps=3 + s % 3) for s in range(6)]
    tok = build_bpe_tokenizer(corpus_texts(demos, history=2), SMALL.vocab_size)
    return demos, tok, build_image_processor(SMALL)


def test_round_action_rounds_clicks_only():
    assert round_action("click(295, 111)") == "click(300, 110)"
    assert round_action("double_click(4, 13)", round_to=8) == "double_click(0, 16)"  # half to even
    assert round_action('type("x 295")') == 'type("x 295")'
    with pytest.raises(ValueError, match="round_to"):
        round_action("click(1, 2)", round_to=0)


def test_tokenizer_round_trips_and_makes_coordinates_one_token(parts):
    demos, tok, _ = parts
    for text in corpus_texts(demos, history=2) + ['type("Zürich ünïcode 12345")', "click(640, 480)", "#4570, 1987  10100\n"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    pieces = tok.convert_ids_to_tokens(tok("click(300, 120)", add_special_tokens=False)["input_ids"])
    assert [p for p in pieces if any(c.isdigit() for c in p)] == ["300", "120"]
    # Other numbers: digits one by one, except where a multiple of 10 matches (longest first).
    pieces = tok.convert_ids_to_tokens(tok("1987", add_special_tokens=False)["input_ids"])
    assert pieces == ["1", "9", "8", "7"]
    assert tok("<image>", add_special_tokens=False)["input_ids"] == [tok.convert_tokens_to_ids("<image>")]
    plain = build_bpe_tokenizer(corpus_texts(demos, history=2), SMALL.vocab_size, number_tokens=False)
    assert "300" not in plain.convert_ids_to_tokens(plain("click(300, 120)", add_special_tokens=False)["input_ids"])


def test_copy_practice_swaps_typed_values_everywhere(parts):
    from catp_agent.harness.training.practice import CopySet, typed_values

    demos, tok, _ = parts
    demos = demos + [Demo("catp/login-v0", 10099, 'Log in as "bob" then "bob pw".', demos[0].frames[:2],
                          ['type("bob")', 'type("bob pw")'], ["", ""])]
    assert typed_values(demos[-1]) == ["bob", "bob pw"]
    copy = CopySet(demos, tok, history=2, side=(112, 112))
    assert len(copy) == len(demos) + 1  # one type step per synthetic demo, two in the last
    rng = np.random.default_rng(0)
    seen = set()
    for i in range(len(copy)):
        for _ in range(5):
            prompt, answer = copy.swapped(i, rng)
            typed = answer.split('"')[1]
            assert f'"{typed}"' in prompt and "<image>" not in prompt
            assert not any(f'"{old}"' in prompt + answer for old in copy.steps[i][3])
            seen.add(typed)
    assert len(seen) > 10  # values really vary
    batch = copy.batch(4, rng)
    assert batch.pixel_values.shape[0] == 0 and batch.input_ids.shape[0] == 4
    eos = tok.eos_token_id
    for row, lab in zip(batch.input_ids, batch.labels):
        scored = lab[lab != -100].tolist()
        assert scored[-1] == eos and tok.decode(scored[:-1]).startswith(" type(")
    model = build_model(tok, SMALL, seed=0)
    loss, correct, _ = forward_loss(model, batch)  # text only: no screens to encode
    assert torch.isfinite(loss) and correct.numel() == int((batch.labels != -100).sum())


def test_ground_targets_take_unique_texts_at_their_centres():
    from catp_agent.harness.training.practice import ground_targets

    elements = [
        {"text": "Log  in", "role": "button", "bbox": [50, 100, 60, 28]},  # centre (80, 114) -> (80, 110)
        {"text": "Add to cart", "role": "button", "bbox": [0, 0, 10, 10]},
        {"text": "Add to cart", "role": "button", "bbox": [100, 0, 10, 10]},  # ambiguous: left out
        {"text": "on", "role": "checkbox", "bbox": [5, 5, 10, 10]},  # a form value, not shown
        {"text": "", "role": "textbox", "bbox": [5, 5, 10, 10]},
        {"text": "x" * 41, "role": "link", "bbox": [5, 5, 10, 10]},
        {"text": 'say "hi"', "role": "link", "bbox": [5, 5, 10, 10]},
        {"text": "Password", "role": "textbox", "bbox": [128, 151, 216, 28]},  # (236, 165) -> (240, 160)
    ]
    assert ground_targets(elements) == [('Click "Log in".', "click(80, 110)"), ('Click "Password".', "click(240, 160)")]


def test_ground_set_batches_one_screen_per_frame_with_the_agent_prompt(parts):
    """Grounding practice: the agent's prompt with no history, the right screen, the element's
    centre as the answer; each screen is encoded once per batch."""
    from catp_agent.agent.history import Screenshot
    from catp_agent.agent.prompt import build_messages
    from catp_agent.harness.training.practice import GroundSet

    demos, tok, proc = parts
    with_elements = []
    for k, d in enumerate(demos[:3]):
        els = [[{"text": f"Button {k}{t}", "role": "button", "bbox": [10 * t, 20, 40, 20]},
                {"text": "Help", "role": "link", "bbox": [600, 400, 30, 10]}] for t in range(len(d))]
        with_elements.append(Demo(d.task, d.seed, d.instruction, d.frames, d.actions, d.errors, els))
    with_elements.append(demos[3])  # an old demo without elements adds nothing
    data = SampleSet(with_elements, tok, proc, history=2, progress=False)
    ground = GroundSet(data, with_elements)
    assert len(ground.screens) == sum(len(d) for d in demos[:3]) and len(ground) == 2 * len(ground.screens)
    batch = ground.batch(12, np.random.default_rng(0), SMALL.image_tokens, per_screen=2)
    assert batch.input_ids.shape[0] == 12 and batch.pixel_values.shape[0] == 6  # 6 screens, 2 questions each
    img = tok.convert_tokens_to_ids("<image>")
    for row in range(12):
        ids = batch.input_ids[row][batch.attention_mask[row].bool()].tolist()
        n_prompt = int((batch.labels[row] == -100).sum() - (batch.attention_mask[row] == 0).sum())
        prompt, answer = ids[:n_prompt], ids[n_prompt:]
        text = tok.decode([t for t in prompt if t != img])
        target = text.split('Task: Click "', 1)[1].split('"', 1)[0]
        messages = build_messages([Screenshot(0, demos[0].frames[0], None)], f'Click "{target}".')
        ref = tok(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False), add_special_tokens=False)["input_ids"]
        assert [t for t in prompt if t != img] == [t for t in ref if t != img] and prompt.count(img) == SMALL.image_tokens
        # the screen is the one whose element this is, and the answer is that element's centre
        pix = batch.pixel_values[batch.frame_order[row]]
        k, t = next((k, t) for k, d in enumerate(with_elements[:3]) for t in range(len(d))
                    if torch.allclose(pix, data.batch([sum(len(x) for x in demos[:k]) + t], SMALL.image_tokens).pixel_values[-1]))
        want = "click(620, 400)" if target == "Help" else f"click({20 + 10 * t}, 30)"
        assert target in ("Help", f"Button {k}{t}") and tok.decode(answer[:-1]) == " " + want and answer[-1] == tok.eos_token_id
    assert sum(b.input_ids.shape[0] for b in ground.fixed(5, SMALL.image_tokens)) == 5


def test_samples_match_the_agent_prompt_exactly(parts):
    """What training feeds the model is what VLMPolicy feeds it: same ids, same screens."""
    from policies.vlm import VLMPolicy

    demos, tok, proc = parts
    model = build_model(tok, SMALL, seed=0).eval()
    history = 2
    data = SampleSet(demos[:2], tok, proc, history=history, progress=False)
    agent = load_agent_model(model, tokenizer=tok, image_processor=proc)
    k = 0
    for demo in demos[:2]:
        policy = VLMPolicy(agent, history=history)
        policy.reset()
        for t in range(len(demo)):
            policy.window.observe(demo.frames[t])
            inputs, _ = policy.build_inputs(demo.instruction, demo.errors[t])
            batch = data.batch([k], SMALL.image_tokens)
            n_prompt = int((batch.labels[0] == -100).sum())
            assert batch.input_ids[0, :n_prompt].tolist() == inputs["input_ids"][0].tolist()
            answer = batch.input_ids[0, n_prompt:].tolist()
            assert tok.decode(answer[:-1]) == " " + demo.actions[t] and answer[-1] == tok.eos_token_id
            # the screens' pixels equal the processor's output (up to float rounding)
            ref = torch.cat([policy._image_inputs[s.screenshot_id]["pixel_values"] for s in policy.window.screens()])
            assert torch.allclose(batch.pixel_values[batch.frame_order], ref, atol=1e-5)
            policy.window.act(demo.actions[t])
            k += 1
    assert k == len(data)


def test_prompt_history_window(parts):
    demos, _, _ = parts
    msgs = prompt_messages(demos[5], 4, history=2)
    content = msgs[0]["content"]
    assert [c["type"] for c in content] == ["image", "text"] * 3
    assert content[1]["text"] == f"Action: {demos[5].actions[2]}\n" and content[3]["text"] == f"Action: {demos[5].actions[3]}\n"
    assert content[-1]["text"].startswith(f"Task: {demos[5].instruction}\n")


def test_training_steps_fit_a_batch(parts):
    """A few optimizer steps on one batch drive its loss down: gradients reach the answer."""
    demos, tok, proc = parts
    torch.manual_seed(0)
    model = build_model(tok, SMALL, seed=0).train()
    data = SampleSet(demos, tok, proc, history=2, progress=False)
    batch = data.batch(list(range(8)), SMALL.image_tokens)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        loss, _, _ = forward_loss(model, batch)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.3 * first


def test_sincos_init_codes_patch_positions_and_coordinates(parts):
    """Only the position embedding and the number tokens' rows change; neighbours are alike, far ones are not."""
    _, tok, _ = parts
    plain, coded = build_model(tok, SMALL, seed=0), build_model(tok, SMALL, seed=0, structured_init=True)
    changed = {name for (name, a), (_, b) in zip(plain.named_parameters(), coded.named_parameters()) if not torch.equal(a, b)}
    assert changed == {"model.vision_tower.embeddings.position_embedding.weight", "model.language_model.embed_tokens.weight",
                       "lm_head.weight"}
    pos = coded.model.vision_tower.embeddings.position_embedding.weight.detach()
    side = SMALL.image_size // SMALL.patch_size
    assert torch.equal(pos[0], torch.zeros_like(pos[0]))  # the class position, dropped by LLaVA anyway
    assert len({tuple(row.tolist()) for row in pos[1:]}) == side * side  # every patch position distinct
    cos = torch.nn.functional.cosine_similarity
    assert cos(pos[1], pos[2], dim=0) > cos(pos[1], pos[1 + side * side - 1], dim=0)  # a neighbour beats the far corner
    ids = tok.convert_tokens_to_ids(list(NUMBER_TOKENS))
    for name in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        rows = dict(coded.named_parameters())[name].detach()
        numbers = rows[ids]
        assert cos(numbers[22], numbers[23], dim=0) > 0.9 > 0.3 > cos(numbers[22], numbers[70], dim=0)
        other = [i for i in range(len(tok)) if i not in set(ids)]
        assert abs(float(numbers.norm(dim=1).mean() / rows[other].norm(dim=1).mean()) - 1.0) < 0.1  # random rows' norm


def test_forward_loss_equals_the_models_own_forward(parts):
    """Encoding screens once per batch and scattering them is the model's forward with pixel_values."""
    demos, tok, proc = parts
    model = build_model(tok, SMALL, seed=1).eval()
    data = SampleSet(demos[:1], tok, proc, history=2, progress=False)
    batch = data.batch([2], SMALL.image_tokens)
    with torch.no_grad():
        loss, _, _ = forward_loss(model, batch)
        ref = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                    pixel_values=batch.pixel_values[batch.frame_order], labels=batch.labels).loss
    assert abs(float(loss) - float(ref)) < 1e-5


def test_train_config_rejects_overlapping_seeds():
    with pytest.raises(ValueError, match="seed_start"):
        TrainConfig(seed_start=500)
    with pytest.raises(ValueError, match="episodes_per_task"):
        TrainConfig(episodes_per_task=4, val_episodes_per_task=4)
    with pytest.raises(ValueError, match="copy_warmup_batch"):
        TrainConfig(copy_warmup_batch=0)
    with pytest.raises(ValueError, match="-3"):
        TrainConfig(copy_batch=-3)
    with pytest.raises(ValueError, match="ground_warmup_batch"):
        TrainConfig(ground_warmup_batch=0)
    with pytest.raises(ValueError, match="warmup_steps must be >= 1, got 0"):
        TrainConfig(warmup_steps=0)
    with pytest.raises(ValueError, match="no/such/model"):
        TrainConfig(init_from="no/such/model")
    with pytest.raises(ValueError, match="sincos_init"):
        TrainConfig(init_from="no/such/model", sincos_init=True)


def test_default_tasks_are_envs_bundled_tasks_in_the_shipped_models_order():
    """The task list comes from envs; its order is the one the default model was trained in
    (the order fixes demos, tokenizer and batches), so `catp-agent train` still reproduces it."""
    import envs
    from catp_agent.harness.training.train import BUNDLED_TASKS

    shipped = Path(__file__).resolve().parents[3] / "catp_agent" / "assets" / "default_model" / "training.json"
    assert list(BUNDLED_TASKS) == json.loads(shipped.read_text())["config"]["tasks"]
    assert sorted(BUNDLED_TASKS) == sorted(envs.BUNDLED_IDS) and TrainConfig().tasks == BUNDLED_TASKS


@pytest.mark.browser
@pytest.mark.slow
def test_train_command_end_to_end_is_deterministic(tmp_path):
    """`catp-agent train` on a few real oracle episodes: a loadable model folder with card and
    loss log, and the same weights when run twice (the demos are reused from the cache)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText

    from catp_agent.harness.cli import main

    args = ["train", "--tasks", "catp/login-v0", "--episodes-per-task", "3", "--val-episodes", "1",
            "--epochs", "2", "--batch-size", "2", "--workers", "1", "--demo-dir", str(tmp_path / "demos"), "--no-progress",
            "--copy-warmup-steps", "3", "--copy-batch", "2"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    a, b = tmp_path / "a", tmp_path / "b"
    assert sorted(p.name for p in (tmp_path / "demos" / "catp_login-v0").iterdir()) == [f"seed0{s}.npz" for s in (10000, 10001, 10002)]
    log = [json.loads(line) for line in (a / "training_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, len(log) + 1)) and all(np.isfinite(r["loss"]) for r in log)
    # Phase 1: three text-only copy-practice steps; phase 2: behaviour cloning with copy practice beside it.
    assert [r["phase"] for r in log[:4]] == ["copy", "copy", "copy", "bc"] and "copy_loss" in log[3]
    assert "val_copy_acc" in log[-1] and "val_type_acc" in log[-1]
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not (a / "train_state.pt").exists()
    assert "seeds 10000-10002" in (a / "README.md").read_text()
    model = AutoModelForImageTextToText.from_pretrained(a)
    assert model.config.text_config.num_hidden_layers == 6
    # The demos keep each screen's elements, and a second stage starts from the first with
    # grounding practice: phase "ground", then behaviour cloning with both practices beside it.
    from catp_agent.harness.training.demos import load_demos

    demo = load_demos(tmp_path / "demos")[0]
    assert len(demo.elements) == len(demo) and any(e["role"] == "textbox" and len(e["bbox"]) == 4 for e in demo.elements[0])
    stage2 = list(args)
    stage2[stage2.index("--copy-warmup-steps") + 1] = "0"
    assert main([*stage2, "--init", str(a), "--ground-warmup-steps", "2", "--ground-batch", "2", "--out", str(tmp_path / "c")]) == 0
    log = [json.loads(line) for line in (tmp_path / "c" / "training_log.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in log[:3]] == ["ground", "ground", "bc"] and "ground_loss" in log[2] and "copy_loss" in log[2]
    assert "val_ground_acc" in log[-1]
    assert (tmp_path / "c" / "tokenizer.json").read_text() == (a / "tokenizer.json").read_text()
    card = (tmp_path / "c" / "README.md").read_text()
    assert "Grounding practice: 2 steps of 64" in card and f"Started from the weights and tokenizer of `{a}`" in card
    assert "No grounding practice." in (a / "README.md").read_text()
    # Another screen size, with sine-cosine initialisation: the saved model and processor agree on it.
    d = tmp_path / "d"
    assert main([*args, "--image-size", "112", "--patch-size", "28", "--sincos-init", "--out", str(d)]) == 0
    small = load_agent_model(str(d))
    assert small.model.config.vision_config.image_size == 112 and small.model.config.image_seq_length == 16
    assert small.image_processor.size == {"height": 112, "width": 112}
    assert "started as sine-cosine codes" in (d / "README.md").read_text()
    assert main([*args, "--image-size", "100", "--out", str(tmp_path / "e")]) == 2  # not a multiple of 28
    # A pointer head trained beside the model (from its weights): saved next to it, scored in the
    # log, loaded with it, and the policy's clicks come from it.
    p = tmp_path / "p"
    assert main([*stage2, "--init", str(a), "--pointer-weight", "1", "--pointer-dim", "16", "--out", str(p)]) == 0
    log = [json.loads(line) for line in (p / "training_log.jsonl").read_text().splitlines()]
    clicks = [r for r in log if "pointer_loss" in r]
    assert clicks and all(np.isfinite(r["pointer_loss"]) for r in clicks)
    assert "val_pointer_hit" in log[-1] and "val_pointer_inside" in log[-1]
    pointed = load_agent_model(str(p))
    assert pointed.pointer is not None and pointed.pointer.config.dim == 16
    assert load_agent_model(str(a)).pointer is None
    assert "Pointer head" in (p / "README.md").read_text()
