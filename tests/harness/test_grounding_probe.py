"""The grounding probe: questions from stored elements, picks, dense targets, rendered canvases,
front ends that a LLaVA can carry, and a probe that learns to point on a small set."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from catp_agent.harness.grounding.data import GroundingSet, picked_element, question_elements
from catp_agent.harness.grounding.glyphs import CanvasSpec, render_canvas
from catp_agent.harness.grounding.probe import (Budget, CharEncoder, GroundingProbe, dense_targets, evaluate,
                                                pretrain_on_canvases, train_on_screens)
from catp_agent.harness.grounding.towers import build_front_end, load_front_end
from catp_agent.harness.grounding.words import (CropSpec, generated_vocabulary, ink_weights, pretrain_on_word_classes,
                                               pretrain_on_words, render_word_pair, word_batch, word_loss,
                                               word_optimizer)
from catp_agent.harness.training.demos import Demo, _save, demo_path

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: these small models gain nothing from two, and lose much on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _el(text, role, box):
    return {"text": text, "role": role, "bbox": list(box)}


def test_question_elements_keep_unique_short_texts_and_skip_checkboxes():
    elems = [_el("Save", "button", (0, 0, 10, 10)), _el("Save", "button", (20, 0, 10, 10)),
             _el("Music", "checkbox", (0, 20, 5, 5)), _el("", "textbox", (0, 40, 10, 10)),
             _el("x" * 41, "", (0, 60, 10, 10)), _el("Sign in", "button", (0, 80, 10, 10))]
    assert question_elements(elems) == [5]


def test_picked_element_prefers_the_smallest_holding_box_then_the_nearest():
    elems = [_el("panel", "", (0, 0, 100, 100)), _el("ok", "button", (10, 10, 20, 10)), _el("far", "", (200, 0, 10, 10))]
    assert picked_element((15, 15), elems) == 1
    assert picked_element((50, 50), elems) == 0
    assert picked_element((150, 5), elems) == 2  # outside all: 50 px from the panel, 50 from 'far'; 'far' is smaller
    assert picked_element((120, 5), elems) == 0
    assert picked_element((1, 1), []) == -1


def test_dense_targets_mark_tokens_whose_centre_is_in_the_box_else_the_holder():
    # 4x4 grid of 10 px tokens on a 40x40 image; token centres at 5, 15, 25, 35
    right, offsets = dense_targets([(0, 0, 20, 20), (31, 31, 3, 3)], (4, 4), (40, 40))
    assert right[0].nonzero().flatten().tolist() == [0, 1, 4, 5]
    assert right[1].nonzero().flatten().tolist() == [15]  # no centre inside: the token holding (32.5, 32.5)
    # the first box's centre (10, 10) is half a token right/down of token 0's centre, clamped to the token
    assert offsets[0, 0].tolist() == [0.5, 0.5]
    assert offsets[0, 5].tolist() == [-0.5, -0.5]
    assert torch.allclose(offsets[1, 15], torch.tensor([-0.25, -0.25]))


@pytest.mark.parametrize("spec", [CanvasSpec(), CanvasSpec(height=128, lists=1.0)])
def test_canvas_words_are_distinct_inside_and_apart(spec):
    rng = np.random.default_rng(3)
    for _ in range(20):
        image, words = render_canvas(rng, spec, extra_words=["Settings", "Sign in"])
        assert image.shape == (spec.height, spec.width, 3) and image.dtype == np.uint8
        texts = [t for t, _ in words]
        assert len(set(texts)) == len(texts) >= 1
        for _, (x, y, w, h) in words:
            assert 0 <= x and 0 <= y and x + w <= spec.width and y + h <= spec.height
            # something is drawn inside every box: its pixels are not all the background
            patch = image[int(y):int(y + h), int(x):int(x + w)].reshape(-1, 3)
            assert (patch != patch[0]).any()
        boxes = [b for _, b in words]
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert a[0] + a[2] <= b[0] or b[0] + b[2] <= a[0] or a[1] + a[3] <= b[1] or b[1] + b[3] <= a[1]


def test_canvas_spec_refuses_bad_sizes():
    with pytest.raises(ValueError, match="min_words"):
        CanvasSpec(min_words=4, max_words=2)
    with pytest.raises(ValueError, match="font sizes"):
        CanvasSpec(max_size=200)


def test_char_encoder_encodes_any_text_and_tells_texts_apart():
    enc = CharEncoder(dim=32)
    out = enc(["Settings", "Settingz", "", "é ünïcode " * 10])
    assert out.shape == (4, 32)
    assert torch.allclose(out.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert not torch.allclose(out[0], out[1])


@pytest.mark.parametrize("name,grid", [("convnet", (15, 20)), ("vit336", (12, 12))])
def test_front_ends_give_the_grid_a_llava_projector_would_see(name, grid):
    front = build_front_end(name)
    feats = front.features(front.pixels(torch.zeros(2, 480, 640, 3, dtype=torch.uint8)))
    assert feats.shape == (2, *grid, front.channels)


def test_the_convnet_tower_rides_in_a_llava_that_loads_with_from_pretrained(tmp_path):
    from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    front = build_front_end("convnet")
    text = LlamaConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1,
                       intermediate_size=64, vocab_size=64)
    config = LlavaConfig(vision_config=front.model.config.to_dict(), text_config=text.to_dict(), image_token_index=4,
                         vision_feature_select_strategy="full", vision_feature_layer=-1)
    model = LlavaForConditionalGeneration(config)
    model.model.vision_tower.load_state_dict(front.model.state_dict())
    model.save_pretrained(tmp_path)
    loaded = LlavaForConditionalGeneration.from_pretrained(tmp_path).eval()
    pixels = front.pixels(torch.randint(0, 255, (1, 480, 640, 3), dtype=torch.uint8))
    feats = loaded.model.get_image_features(pixels, vision_feature_layer=-1, vision_feature_select_strategy="full")
    assert feats.pooler_output[0].shape == (300, 32)  # 20x15 tokens, projected to the decoder's width
    with torch.no_grad():
        expected = loaded.model.multi_modal_projector(front.features(pixels).reshape(1, 300, -1))
    assert torch.allclose(feats.pooler_output[0], expected[0], atol=1e-5)


def _tiny_demos(root: Path, seeds: range) -> None:
    """Screens with three labels each at seeded places: 'Alpha' in red, 'Beta' in green,
    'Gamma' in blue, so that a tower can learn where each is from the pixels."""
    colours = {"Alpha": (255, 0, 0), "Beta": (0, 255, 0), "Gamma": (0, 0, 255)}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        frame = np.full((128, 192, 3), 255, np.uint8)
        elems = []
        for k, (text, colour) in enumerate(colours.items()):
            x, y = int(rng.integers(0, 160)), 40 * k + int(rng.integers(0, 16))
            frame[y:y + 24, x:x + 32] = colour
            elems.append(_el(text, "button", (x, y, 32, 24)))
        demo = Demo("catp/toy-v0", seed, "toy", frame[None], ["click(1, 1)"], [""], elements=[elems])
        path = demo_path(root, demo.task, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        _save(demo, path)


@pytest.mark.slow
def test_probe_learns_to_point_and_the_role_only_control_cannot(tmp_path):
    _tiny_demos(tmp_path, range(40))
    train = GroundingSet.from_demos(tmp_path, ["catp/toy-v0"], range(32))
    test = GroundingSet.from_demos(tmp_path, ["catp/toy-v0"], range(32, 40))
    assert len(train.questions) == 96 and len(test.frames) == 8
    torch.manual_seed(0)
    probe = GroundingProbe(build_front_end("convnet"), dim=32)
    before = evaluate(probe, test)["all"]["pick"]
    stats = train_on_screens(probe, train, Budget(images=960), lr=3e-3, screens_per_step=8, per_screen=3)
    assert stats["images"] >= 960
    after = evaluate(probe, test)["all"]
    assert after["questions"] == 24
    assert after["pick"] >= 0.9 > before
    control = GroundingProbe(build_front_end("convnet"), dim=32)
    train_on_screens(control, train, Budget(images=400), lr=3e-3, control=True)
    assert evaluate(control, test, control=True)["all"]["pick"] <= 0.6  # three look-alike buttons: a guess


def test_canvas_pretraining_spends_its_budget_and_trains_tower_and_query():
    torch.manual_seed(0)
    probe = GroundingProbe(build_front_end("convnet"), dim=32)
    before = {k: v.clone() for k, v in probe.state_dict().items()}
    losses: list[float] = []
    stats = pretrain_on_canvases(probe, Budget(images=8 * 20), batch=8, lr=3e-3, log=lambda r: losses.append(r["loss"]))
    assert stats["steps"] == 20 and stats["images"] == 160
    assert len(losses) == 1 and np.isfinite(losses[0])
    after = probe.state_dict()
    for prefix in ("tower.embeddings", "tower.encoder.stages.3", "query.", "keys.", "offset."):
        assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith(prefix)), prefix


def test_budget_refuses_nonpositive_values():
    with pytest.raises(ValueError, match="cpu_seconds"):
        Budget(cpu_seconds=0)


def test_missing_demos_name_the_command_that_collects_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="grounding_probe.py collect"):
        GroundingSet.from_demos(tmp_path, ["catp/login-v0"], range(3))


@pytest.mark.slow
def test_script_runs_pretrain_run_and_table(tmp_path):
    _tiny_demos(tmp_path / "demos", range(12))
    run = [sys.executable, str(ROOT / "scripts" / "grounding_probe.py")]
    common = ["--demo-dir", str(tmp_path / "demos"), "--tasks", "catp/toy-v0"]
    subprocess.run(run + ["pretrain", "--images", "16", "--batch", "8", "--out", str(tmp_path / "glyphs")],
                   check=True, cwd=ROOT, capture_output=True)
    assert (tmp_path / "glyphs" / "config.json").exists() and (tmp_path / "glyphs" / "probe_head.pt").exists()
    subprocess.run(run + ["pretrain", "--front", str(tmp_path / "glyphs"), "--images", "8", "--batch", "8", "--height", "128",
                          "--lists", "1", "--out", str(tmp_path / "glyphs2")], check=True, cwd=ROOT, capture_output=True)
    first = json.loads((tmp_path / "glyphs" / "probe.json").read_text())
    second = json.loads((tmp_path / "glyphs2" / "probe.json").read_text())
    assert second["front"] == "convnet" and second["spec"]["lists"] == 1.0
    assert second["total_cpu_s"] == pytest.approx(first["total_cpu_s"] + second["pretrain"]["cpu_s"])
    subprocess.run(run + ["run", *common, "--train-seeds", "0-7", "--test-seeds", "8-11", "--tower", str(tmp_path / "glyphs"),
                          "--freeze", "--images", "16", "--random-screens", "4", "--out", str(tmp_path / "probe" / "frozen.json")],
                   check=True, cwd=ROOT, capture_output=True)
    result = json.loads((tmp_path / "probe" / "frozen.json").read_text())
    assert result["freeze"] and result["metrics"]["all"]["questions"] == 12
    assert result["metrics"]["random"]["questions"] > 20  # the generality column: 4 synthetic screens here
    assert "miniwob" not in result["metrics"]  # no MiniWoB++ demos in this folder: the column is left out
    kept = tmp_path / "kept"
    subprocess.run(run + ["keep", "--tower", str(tmp_path / "glyphs"), "--probe", str(tmp_path / "probe" / "frozen.json"),
                          "--out", str(kept)], check=True, cwd=ROOT, capture_output=True)
    manifest = json.loads((kept / "manifest.json").read_text())
    assert manifest["total_cpu_s"] == first["total_cpu_s"] and "pretrain --images 16" in manifest["commands"][0]["command"]
    assert manifest["probe"]["pick"]["all"] == pytest.approx(result["metrics"]["all"]["pick"], abs=1e-3)
    from safetensors.torch import load_file

    assert {v.dtype for v in load_file(str(kept / "model.safetensors")).values() if v.is_floating_point()} == {torch.float16}
    original, small = load_front_end(tmp_path / "glyphs"), load_front_end(kept)
    for (name, a), b in zip(original.model.state_dict().items(), small.model.state_dict().values()):
        assert b.dtype == a.dtype and torch.equal(b, a.half().to(a.dtype) if a.is_floating_point() else a), name
    with pytest.raises(subprocess.CalledProcessError):  # a probe result of another tower is refused
        subprocess.run(run + ["keep", "--tower", str(tmp_path / "glyphs2"), "--probe", str(tmp_path / "probe" / "frozen.json"),
                              "--out", str(tmp_path / "wrong")], check=True, cwd=ROOT, capture_output=True)
    subprocess.run(run + ["pretrain", "--objective", "words", "--images", "16", "--batch", "8", "--out", str(tmp_path / "words")],
                   check=True, cwd=ROOT, capture_output=True)
    words = json.loads((tmp_path / "words" / "probe.json").read_text())
    assert words["pretrain"]["objective"] == "words" and words["spec"]["height"] == 32
    table = subprocess.run(run + ["table", str(tmp_path / "probe")], check=True, cwd=ROOT, capture_output=True, text=True)
    assert re.search(r"\| frozen \| convnet \| \d+ \| yes \| text \|", table.stdout), table.stdout


def test_word_pairs_share_style_and_place_and_differ_only_where_the_texts_do():
    rng = np.random.default_rng(3)
    (a, ink_a), (b, ink_b) = render_word_pair(rng, ["Settings", "Setlings"], CropSpec())
    assert a.shape == b.shape == (32, 192, 3)
    assert ink_a[:2] == ink_b[:2]  # same place: the glyphs start at the same pixel
    diff = np.abs(a.astype(int) - b.astype(int)).sum(-1).nonzero()[1]
    assert diff.size and ink_a[0] <= diff.min() and diff.max() < ink_a[2]  # only inside the ink
    (same, _), (again, _) = render_word_pair(np.random.default_rng(5), ["Save", "Save"], CropSpec())
    assert np.array_equal(same, again)


def test_ink_weights_split_an_ink_box_by_the_area_each_cell_holds():
    w = ink_weights([(16, 0, 48, 32), (0, 0, 10, 10)], (1, 3), 32)
    assert w[0].tolist() == [0.5, 0.5, 0.0] and w[1].tolist() == [1.0, 0.0, 0.0]
    assert torch.allclose(w.sum(1), torch.ones(2))


def test_crop_spec_refuses_sides_off_the_token_grid():
    with pytest.raises(ValueError, match="multiples of the tower's 32 px stride, got 30x192"):
        CropSpec(height=30)


def test_word_loss_fits_a_batch_and_practice_trains_every_part():
    """The recogniser can learn to tell one batch's texts apart from
    the pixels, which only holds if crops, inks and texts line up; the open practice loop spends
    its budget and moves the tower, the keys and the text encoder."""
    torch.manual_seed(0)
    probe = GroundingProbe(build_front_end("convnet"), dim=32)
    batch = word_batch(np.random.default_rng(0), 8, CropSpec(pairs=0.0), ())
    assert len(set(batch[1])) == 8
    opt = word_optimizer(probe, lr=3e-3)  # the tower at 0.1x: at 1x the batch is not fitted
    first, accuracy = word_loss(probe, *batch)
    for _ in range(40):
        loss, accuracy = word_loss(probe, *batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert accuracy == 1.0 and loss.item() < 0.5 * first.item()
    with pytest.raises(ValueError, match="vocabulary of 2 cannot fill a batch of 4"):
        pretrain_on_words(probe, Budget(images=4), batch=4, vocabulary=["a", "b", "a"])
    before = {k: v.clone() for k, v in probe.state_dict().items()}
    stats = pretrain_on_words(probe, Budget(images=16 * 2), batch=16)
    assert stats["steps"] == 2 and stats["images"] == 32
    after = probe.state_dict()
    for prefix in ("tower.embeddings", "tower.encoder.stages.3", "query.", "keys."):
        assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith(prefix)), prefix


def test_generated_vocabulary_is_distinct_reproducible_and_half_near_misses():
    words = generated_vocabulary(seed=4, size=400)
    assert len(set(words)) == 400 and words == generated_vocabulary(seed=4, size=400)
    assert words != generated_vocabulary(seed=5, size=400)
    # a near miss shares all but a letter or a word with an earlier label
    close = sum(any(w != u and (w in u or u in w or (len(w) == len(u) and sum(a != b for a, b in zip(w, u)) == 1))
                    for u in words[:i]) for i, w in enumerate(words))
    assert 0.3 * 400 < close < 0.8 * 400
    with pytest.raises(ValueError, match="at least 2 labels, got size=1"):
        generated_vocabulary(seed=0, size=1)


def test_word_class_practice_moves_the_tower_and_refuses_a_small_vocabulary():
    torch.manual_seed(0)
    probe = GroundingProbe(build_front_end("convnet"), dim=32)
    with pytest.raises(ValueError, match="vocabulary of 3 cannot fill a batch of 8"):
        pretrain_on_word_classes(probe, Budget(images=8), ["a", "b", "c", "a"], batch=8)
    before = {k: v.clone() for k, v in probe.state_dict().items()}
    stats = pretrain_on_word_classes(probe, Budget(images=16), generated_vocabulary(0, 50), batch=8)
    assert stats["steps"] == 2 and stats["classes"] == 50 and 0.0 <= stats["accuracy"] <= 1.0
    after = probe.state_dict()
    for prefix in ("tower.embeddings", "tower.encoder.stages.3", "keys."):
        assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith(prefix)), prefix


def test_synthetic_screens_ask_random_strings_and_padding_keeps_boxes(tmp_path):
    gset = GroundingSet.synthetic(seed=1, screens=3)
    assert gset.frames.shape == (3, 480, 640, 3) and {q.task for q in gset.questions} == {"random"}
    assert len(gset.questions) >= 20 and len({q.text for q in gset.questions}) == len(gset.questions)
    again = GroundingSet.synthetic(seed=1, screens=3)
    assert [q.text for q in again.questions] == [q.text for q in gset.questions]
    _tiny_demos(tmp_path, range(2))
    plain = GroundingSet.from_demos(tmp_path, ["catp/toy-v0"], range(2))
    padded = GroundingSet.from_demos(tmp_path, ["catp/toy-v0"], range(2), pad_to=48)
    h, w = plain.frames.shape[1:3]
    assert padded.frames.shape[1] % 48 == 0 and padded.frames.shape[2] % 48 == 0
    assert np.array_equal(padded.frames[:, :h, :w], plain.frames)
    assert [q.box for q in padded.questions] == [q.box for q in plain.questions]
