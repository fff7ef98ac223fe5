"""The default model's LLaVA with the kept reading tower (item 3 of the reading-agent issue):
loads with from_pretrained, a 640x480 screen is 15 rows of 20 tokens, and it is prunable."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoTokenizer, FocalNetModel

from catp_agent.harness.training.model import (READING_TOWER, ModelSize, build_reading_image_processor,
                                               build_reading_model)
from catp_agent.models.families import family_for
from catp_agent.pruning import keep_count

DEFAULT_MODEL = READING_TOWER.parent / "default_model"
SMALL = ModelSize(hidden=64, layers=4, heads=4, kv_heads=2, intermediate=128)


def _build(tmp_path):
    tok = AutoTokenizer.from_pretrained(DEFAULT_MODEL)
    model = build_reading_model(tok, size=SMALL)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    build_reading_image_processor().save_pretrained(tmp_path)
    return model, tok


def test_the_reading_model_carries_the_kept_tower_and_a_non_square_grid(tmp_path):
    model, _ = _build(tmp_path)
    kept = FocalNetModel.from_pretrained(READING_TOWER, dtype=torch.float32).state_dict()
    mine = model.model.vision_tower.state_dict()
    assert all(torch.equal(kept[k], mine[k]) for k in kept)
    assert model.config.image_seq_length == 300 and model.config.vision_feature_select_strategy == "full"
    family = family_for(model)
    frame = {"pixel_values": torch.randn(1, 3, 480, 640)}
    with torch.no_grad():
        n_tokens = family.image_features(model, frame)[0].shape[0]
    assert n_tokens == 300 and family.image_grid(frame, n_tokens) == (15, 20)


def test_bad_towers_and_screens_are_refused(tmp_path):
    tok = AutoTokenizer.from_pretrained(DEFAULT_MODEL)
    with pytest.raises(FileNotFoundError, match="holds no saved tower"):
        build_reading_model(tok, tower=tmp_path)
    with pytest.raises(ValueError, match="multiples of 32, got 650x480"):
        build_reading_image_processor((650, 480))
    with pytest.raises(ValueError, match="screen 640x490 is not a whole number of the tower's 32 px tokens"):
        build_reading_model(tok, size=SMALL, screen=(640, 490))


@pytest.mark.browser
def test_a_saved_reading_model_runs_an_episode_under_catp(tmp_path):
    _build(tmp_path / "ckpt")
    proc = subprocess.run([sys.executable, "-m", "catp_agent.harness.cli", "run", "--model", str(tmp_path / "ckpt"),
                           "--task", "catp/login-v0", "--device", "cpu", "--max-steps", "2", "--method", "catp",
                           "--ratio", "0.778", "--no-speedup", "--json"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["steps"] >= 1
    for step in result["step_records"]:
        assert step["image_tokens_in"] % 300 == 0, step  # 300 tokens per screen, however many screens
        assert step["kept_final"] == keep_count(step["image_tokens_in"], 0.778), step


def test_the_tokenizer_spells_out_any_string_it_may_be_asked_to_click_or_type():
    """Byte-level BPE: held-out random labels (the probe's generator, a seed no training used) and
    non-ASCII text decode back exactly, and a random label costs about a token per character
    (0.84 measured), so the decoder reads its letters, not an unknown token."""
    import numpy as np

    from catp_agent.harness.grounding.glyphs import random_text

    tok = AutoTokenizer.from_pretrained(DEFAULT_MODEL)
    rng = np.random.default_rng(123)
    texts = [random_text(rng) for _ in range(300)] + ["Ünïcödé ✓ 東京", "  two  spaces ", "it's \"quoted\""]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert [tok.decode(i) for i in ids] == texts
    assert tok.unk_token_id not in {x for i in ids for x in i}
    assert 0.5 < sum(map(len, ids[:300])) / sum(len(t) for t in texts[:300]) < 1.2


# ---------------------------------------------------------------- training the reading model (item 4)
def _screen_demos(n: int = 3):
    """Demos of 640x480 screens with stored elements: a click on one element, then done."""
    import numpy as np

    from catp_agent.harness.training.demos import Demo

    rng = np.random.default_rng(5)
    demos = []
    for k in range(n):
        frames = rng.integers(0, 255, size=(2, 480, 640, 3), dtype=np.uint8)
        elements = [[{"text": f"Item {k}{t}", "role": "button", "bbox": [320, 240, 20, 20]},
                     {"text": "Help", "role": "link", "bbox": [32 * k, 400, 60, 24]}] for t in range(2)]
        demos.append(Demo("catp/menu-v0", 10000 + k, f'Click "Item {k}0".', frames, ["click(330, 250)", "done()"],
                          ["", ""], elements))
    return demos


def test_cached_tower_features_give_the_losses_the_pixels_give():
    """A frozen tower encoded once per screen (float16 cache) trains on what the pixels give:
    the same answer and pointer losses, on behaviour-cloning and grounding batches."""
    import numpy as np

    from catp_agent.agent.pointer import PointerConfig, PointerHead
    from catp_agent.harness.training.data import SampleSet
    from catp_agent.harness.training.practice import GroundSet
    from catp_agent.harness.training.reading import freeze_tower, reading_grid, tower_encoder
    from catp_agent.harness.training.train import forward_loss

    tok = AutoTokenizer.from_pretrained(DEFAULT_MODEL)
    model = build_reading_model(tok, size=SMALL).eval()
    proc = build_reading_image_processor()
    assert freeze_tower(model) == sum(p.numel() for p in model.model.vision_tower.parameters())
    assert not any(p.requires_grad for p in model.model.vision_tower.parameters())
    grid = reading_grid(model, proc)
    assert grid == (15, 20)
    demos = _screen_demos()
    data = SampleSet(demos, tok, proc, history=1, progress=False, grid=grid)
    ground = GroundSet(data, demos)
    torch.manual_seed(0)
    pointer = PointerHead(PointerConfig(hidden_size=SMALL.hidden, dim=16))
    with torch.no_grad():
        before = [forward_loss(model, b, pointer, extra := {})[0].item() for b in
                  (data.batch([0, 1, 2, 3], 300), ground.batch(4, np.random.default_rng(0), 300))]
        data.cache_features(tower_encoder(model), progress=False)
        assert data.features.shape == (len(data.pixels), 300, 256) and data.features.dtype == torch.float16
        cached = data.batch([0, 1, 2, 3], 300)
        assert cached.pixel_values.shape[0] == 0 and cached.features.shape[0] == 4
        extra = {}
        after = [forward_loss(model, cached, pointer, extra)[0].item(),
                 forward_loss(model, ground.batch(4, np.random.default_rng(0), 300), pointer)[0].item()]
    assert after == pytest.approx(before, rel=1e-3)
    assert extra["pointer_loss"].item() > 0 and extra["pointer_xy"].shape == (2, 2)  # the two click rows


def test_pointer_targets_and_points_follow_the_15_by_20_grid():
    """A click at (330, 250) on 640x480 is token 7 * 20 + 10 (rows of 20 tokens, not a square
    grid), and a pointer choosing that token at its centre points at (336, 240)."""
    import numpy as np

    from catp_agent.harness.training.data import SampleSet
    from catp_agent.harness.training.practice import GroundSet
    from catp_agent.harness.training.train import pointer_forward

    tok = AutoTokenizer.from_pretrained(DEFAULT_MODEL)
    demos = _screen_demos(1)
    data = SampleSet(demos, tok, build_reading_image_processor(), history=1, progress=False, grid=(15, 20))
    batch = data.batch([0], 300)
    targets = batch.pointer
    assert targets.own.tolist() == [150] and targets.grid.tolist() == [[15, 20]]
    assert targets.right[0].nonzero().flatten().tolist() == [150]  # the 20x20 box holds one token centre
    ground = GroundSet(data, demos).batch(2, np.random.default_rng(0), 300, per_screen=2).pointer
    helps = [r for r in range(2) if ground.own[r] != 150]
    assert len(helps) == 1 and ground.own[helps[0]] == 12 * 20 + 0  # "Help": box (0, 400, 60, 24), centre (30, 412)

    class Chooses150(torch.nn.Module):  # a stand-in head: the geometry is what is tested
        def forward(self, query, keys):
            logits = torch.full(keys.shape[:2], -10.0)
            logits[:, 150] = 10.0
            return logits, torch.full((*keys.shape[:2], 2), 0.5)

    hidden = torch.zeros(1, batch.input_ids.shape[1], 4)
    out = pointer_forward(Chooses150(), hidden, targets)
    assert out["pointer_xy"].tolist() == [[336.0, 240.0]] and out["pointer_hit"].tolist() == [True]
    with pytest.raises(ValueError, match="does not hold 144 tokens"):
        data.batch([0], 144)


def test_the_whole_model_probe_scores_where_the_pointer_points():
    """probe_whole_model turns the pointer's token and offset into a pixel of the question's own
    screen and scores it as the probe does (GroundingSet.is_right)."""
    from catp_agent.agent.pointer import patch_point
    from catp_agent.harness.grounding.data import GroundingSet
    from catp_agent.harness.training.reading import probe_whole_model

    tok = AutoTokenizer.from_pretrained(DEFAULT_MODEL)
    model = build_reading_model(tok, size=SMALL).eval()
    gset = GroundingSet.synthetic(3, 2)
    asked = []

    class PointsAt(torch.nn.Module):
        def point(self, query, keys):
            asked.append(keys.shape[0])
            return 7 * 20 + 10, (0.25, 0.75), 1.0

    scores = probe_whole_model(model, PointsAt(), tok, build_reading_image_processor(), gset, (15, 20))
    point = patch_point(150, (0.25, 0.75), (15, 20), (640, 480))
    assert point == (328, 248)
    want = [gset.is_right(q, point) for q in gset.questions]
    assert scores["random"]["questions"] == scores["all"]["questions"] == len(gset.questions) == len(asked)
    assert set(asked) == {300}
    assert scores["all"]["pick"] == pytest.approx(sum(r for r, _ in want) / len(want))
    assert scores["all"]["inside"] == pytest.approx(sum(i for _, i in want) / len(want))


def test_packed_grounding_rows_compute_what_one_row_per_question_computes():
    """GroundSet.packed_batch shares each screen's prompt prefix among its questions; every
    answer token's logit and every pointer target come out as in the unpacked batch, with
    fewer tokens."""
    import numpy as np

    from catp_agent.agent.pointer import PointerConfig, PointerHead
    from catp_agent.harness.training.data import SampleSet
    from catp_agent.harness.training.practice import GroundSet
    from catp_agent.harness.training.train import answer_logits, forward_loss

    tok = AutoTokenizer.from_pretrained(DEFAULT_MODEL)
    model = build_reading_model(tok, size=SMALL).eval()
    demos = _screen_demos()
    for demo in demos:  # a third element, so that screens have questions of different lengths
        for elements in demo.elements:
            elements.append({"text": "A much longer label here", "role": "link", "bbox": [400, 100, 150, 20]})
    data = SampleSet(demos, tok, build_reading_image_processor(), history=1, progress=False, grid=(15, 20))
    ground = GroundSet(data, demos)
    plain = ground.batch(7, np.random.default_rng(4), 300, per_screen=3)
    packed = ground.packed_batch(7, np.random.default_rng(4), 300, per_screen=3)
    assert packed.input_ids.shape[0] == 3 and packed.input_ids.numel() < plain.input_ids.numel() / 2
    torch.manual_seed(0)
    pointer = PointerHead(PointerConfig(hidden_size=SMALL.hidden, dim=16))
    with torch.no_grad():
        a_logits, a_gold, _ = answer_logits(model, plain)
        b_logits, b_gold, _ = answer_logits(model, packed)
        assert torch.equal(a_gold, b_gold)
        torch.testing.assert_close(b_logits, a_logits, atol=1e-4, rtol=1e-4)
        a, b = {}, {}
        la = forward_loss(model, plain, pointer, a)[0]
        lb = forward_loss(model, packed, pointer, b)[0]
    torch.testing.assert_close(lb, la, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b["pointer_loss"], a["pointer_loss"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b["pointer_xy"], a["pointer_xy"])


def test_packed_episodes_compute_what_one_row_per_step_computes():
    """SampleSet.packed_batch: the steps of an episode in one row, each screen's image tokens
    once; the answers' logits and the pointer's targets and points match the unpacked batch."""
    import numpy as np

    from catp_agent.agent.pointer import PointerConfig, PointerHead
    from catp_agent.harness.training.data import SampleSet
    from catp_agent.harness.training.demos import Demo
    from catp_agent.harness.training.train import answer_logits, forward_loss

    tok = AutoTokenizer.from_pretrained(DEFAULT_MODEL)
    model = build_reading_model(tok, size=SMALL).eval()
    rng = np.random.default_rng(2)
    demos = []
    for k in range(2):
        frames = rng.integers(0, 255, size=(4, 480, 640, 3), dtype=np.uint8)
        elements = [[{"text": f"Row {t}", "role": "button", "bbox": [40 * t, 64 * t, 120, 30]}] for t in range(4)]
        demos.append(Demo("catp/menu-v0", 10000 + k, f"Open item {k}.", frames,
                          ["click(100, 15)", "click(140, 79)", 'type("abc")', "click(200, 207)"], ["", "", "bad", ""], elements))
    data = SampleSet(demos, tok, build_reading_image_processor(), history=3, progress=False, grid=(15, 20))
    picks = [0, 1, 2, 7, 5, 6]  # three steps of each demo, the second's in a mixed order
    plain, packed = data.batch(picks, 300), data.packed_batch(picks, 300)
    assert packed.input_ids.shape[0] == 2 and packed.features is None
    assert int((packed.input_ids == data.image_token_id).sum()) == 300 * 7  # 3 + 4 screens, each once
    assert int((plain.input_ids == data.image_token_id).sum()) == 300 * (1 + 2 + 3 + 2 + 3 + 4)
    # A step sharing less than a third of itself with its row starts a new one (steps 0 and 3: one screen of four).
    assert data.packed_batch([0, 3], 300).input_ids.shape[0] == 2
    torch.manual_seed(0)
    pointer = PointerHead(PointerConfig(hidden_size=SMALL.hidden, dim=16))
    with torch.no_grad():
        a_logits, a_gold, _ = answer_logits(model, plain)
        b_logits, b_gold, _ = answer_logits(model, packed)
        a, b = {}, {}
        forward_loss(model, plain, pointer, a)
        forward_loss(model, packed, pointer, b)
    # The rows order answers differently (demo by demo, then as drawn): compare as sets of rows.
    assert sorted(a_gold.tolist()) == sorted(b_gold.tolist())
    torch.testing.assert_close(b_logits.sort(0).values, a_logits.sort(0).values, atol=1e-4, rtol=1e-4)
    assert sorted(packed.pointer.own.tolist()) == sorted(plain.pointer.own.tolist())
    torch.testing.assert_close(b["pointer_xy"].sort(0).values, a["pointer_xy"].sort(0).values)
    torch.testing.assert_close(b["pointer_loss"], a["pointer_loss"], atol=1e-5, rtol=1e-5)


@pytest.mark.browser
@pytest.mark.slow
def test_train_with_the_reading_tower_then_probe_the_whole_model(tmp_path):
    """`catp-agent train --tower` on a few real oracle episodes: grounding practice trains the
    pointer, episodes are packed, the tower stays as kept; the saved model loads with its
    pointer head on the 15x20 grid, and `grounding_probe.py whole` scores it."""
    import importlib.util

    from catp_agent.agent.model_io import load_agent_model
    from catp_agent.harness.cli import main
    from catp_agent.harness.training.reading import reading_grid

    out, demos = tmp_path / "reading", tmp_path / "demos"
    assert main(["train", "--tower", str(READING_TOWER), "--tasks", "catp/login-v0", "--episodes-per-task", "3",
                 "--val-episodes", "1", "--epochs", "1", "--batch-size", "2", "--workers", "1", "--demo-dir", str(demos),
                 "--no-progress", "--copy-warmup-steps", "1", "--copy-batch", "2", "--ground-warmup-steps", "2",
                 "--pointer-weight", "1", "--pack-episodes", "--out", str(out)]) == 0
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in log[:4]] == ["copy", "ground", "ground", "bc"]
    assert all("pointer_loss" in r for r in log[1:]) and "val_pointer_hit" in log[-1]
    agent = load_agent_model(str(out), device="cpu")
    assert agent.pointer is not None and reading_grid(agent.model, agent.image_processor) == (15, 20)
    kept = FocalNetModel.from_pretrained(READING_TOWER, dtype=torch.float32).state_dict()
    assert all(torch.equal(kept[k], v) for k, v in agent.model.model.vision_tower.state_dict().items())  # frozen
    assert "reading tower" in (out / "README.md").read_text()
    spec = importlib.util.spec_from_file_location("grounding_probe", READING_TOWER.parents[2] / "scripts" / "grounding_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    result_path = tmp_path / "whole.json"
    assert probe.main(["whole", "--model", str(out), "--demo-dir", str(demos), "--tasks", "catp/login-v0",
                       "--test-seeds", "10000-10002", "--random-screens", "2", "--out", str(result_path)]) == 0
    result = json.loads(result_path.read_text())
    assert {"catp/login-v0", "all", "random"} <= set(result["metrics"]) and result["metrics"]["all"]["questions"] > 0
    assert 0.0 <= result["metrics"]["all"]["pick"] <= 1.0 and result["tower"] == str(READING_TOWER)
