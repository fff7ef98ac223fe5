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
