"""dT and persistence against hand computations; protected tokens survive inside a real model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from catp_agent import PruningConfig, prune
from catp_agent.agent import HistoryWindow, TemporalSignals
from catp_agent.models.tiny import build_processor, build_tiny_model, demo_inputs
from catp_agent.records import ContextCandidates, ForwardRecord


def candidates(image_index, patch_index, att_k, n_images=2, n_keep=2) -> ContextCandidates:
    t = lambda v, dt=torch.float32: torch.tensor(v, dtype=dt)  # noqa: E731
    return ContextCandidates(
        image_index=t(image_index, torch.long), patch_index=t(patch_index, torch.long), attention_k=t(att_k),
        attention_prev=torch.zeros(len(att_k)), query_patch_index=t([0, 1], torch.long),
        query_attention_k=t([0.1, 0.3]), n_images=n_images, n_keep=n_keep,
    )


def record(image_index, patch_index, values, spans, kept_after_k, kept_final, scores) -> ForwardRecord:
    rec = ForwardRecord(method="catp", ratio=0.5, k_layer=1, n_tokens=10, image_spans=spans)
    rec.layer_k_attention = (torch.tensor(image_index), torch.tensor(patch_index), torch.tensor(values))
    rec.kept_after_k = [torch.tensor(k) for k in kept_after_k]
    rec.kept_final = [torch.tensor(k) for k in kept_final]
    rec.context_scores = torch.tensor(scores)
    return rec


def test_temporal_difference_and_persistence_by_hand():
    cfg = PruningConfig(method="catp", ratio=0.5, mode="both", persistence=True, gamma=0.5,
                        persistence_strength=1.0, temporal_fallback="zero")
    sig = TemporalSignals(cfg)
    # step 0: one screenshot (id 7, a 1x2 grid) is the query; no ICD, nothing to score
    sig.begin_step([7], [(1, 2)])
    sig.end_step(record([0, 0], [0, 1], [0.2, 0.6], [(0, 2)], [[0, 1]], [[0, 1]], []))
    # query persistence: r = minmax([0.2, 0.6]) = [0, 1]; p = 0.5 * r = [0, 0.5]
    assert sig.persistence.get([(7, 0), (7, 1)]).tolist() == pytest.approx([0.0, 0.5])
    # step 1: screenshot 7 is the ICD, 8 the new query (same grid: inherits p by position)
    sig.begin_step([7, 8], [(1, 2), (1, 2)])
    assert sig.persistence.get([(8, 0), (8, 1)]).tolist() == pytest.approx([0.0, 0.5])
    out = sig(candidates([0, 0], [0, 1], [0.5, 0.4]))
    # dT = max(0, a_t - a_{t-1}) = [0.5 - 0.2, max(0, 0.4 - 0.6)] = [0.3, 0]
    assert out.temporal.tolist() == pytest.approx([0.3, 0.0])
    assert out.persistence.tolist() == pytest.approx([1.0, 1.5])
    # the scores it got: r = minmax([2, 1]) = [1, 0]; p = 0.5 * p_prev + 0.5 * r
    sig.end_step(record([0, 0, 1, 1], [0, 1, 0, 1], [0.5, 0.4, 0.3, 0.1], [(0, 2), (3, 5)],
                        [[0, 1], [0, 1]], [[0], [0, 1]], [2.0, 1.0]))
    assert sig.persistence.get([(7, 0), (7, 1)]).tolist() == pytest.approx([0.5, 0.25])
    # query 8: r = minmax([0.3, 0.1]) = [1, 0]; p = 0.5 * [0, 0.5] + 0.5 * [1, 0] = [0.5, 0.25]
    assert sig.persistence.get([(8, 0), (8, 1)]).tolist() == pytest.approx([0.5, 0.25])


@pytest.mark.parametrize("fallback,expected", [("zero", 0.0), ("current", 0.9)])
def test_tokens_without_a_previous_value_use_the_fallback(fallback, expected):
    sig = TemporalSignals(PruningConfig(method="catp", mode="temporal", temporal_fallback=fallback))
    sig.begin_step([1, 2], [(1, 1), (1, 1)])
    out = sig(candidates([0], [0], [0.9]))
    assert out.temporal.tolist() == pytest.approx([expected])


def test_absolute_difference_option():
    sig = TemporalSignals(PruningConfig(method="catp", mode="temporal", temporal_diff="absolute"))
    sig.begin_step([1], [(1, 2)])
    sig.end_step(record([0, 0], [0, 1], [0.2, 0.6], [(0, 2)], [[0, 1]], [[0, 1]], []))
    sig.begin_step([1, 2], [(1, 2), (1, 2)])
    assert sig(candidates([0, 0], [0, 1], [0.5, 0.4])).temporal.tolist() == pytest.approx([0.3, 0.2])


def test_protected_tokens_survive_stage_two_in_a_real_model():
    model, tok = build_tiny_model("qwen2_vl", num_layers=6, seed=3)
    inputs = demo_inputs(build_processor("qwen2_vl", tok), n_images=3)
    cfg = PruningConfig(method="catp", ratio=0.667, k_layer=2, n_protected=3)
    sig = TemporalSignals(cfg)
    sig.begin_step([10, 11, 12], [(2, 3)] * 3)
    # make three ICD tokens the most persistent: low context scores would drop them otherwise
    with prune(model, PruningConfig(method="catp", ratio=0.667, k_layer=2)) as plain:
        with torch.no_grad():
            model(**inputs)
    after_k = plain.last.kept_after_k
    stage1 = plain.last.kept_stage1
    dropped = [(i, int(p)) for i in range(2) for p in stage1[i] if p not in after_k[i]][:3]
    assert len(dropped) == 3
    sig.persistence.update([(10 + i, p) for i, p in dropped], torch.ones(3), gamma=0.0)
    with prune(model, cfg) as handle:
        handle.signal_provider = sig
        with torch.no_grad():
            model(**inputs)
    survivors = {(i, int(p)) for i in range(2) for p in handle.last.kept_after_k[i]}
    assert set(dropped) <= survivors
    assert handle.last.n_kept_final == plain.last.n_kept_final  # budget unchanged


def test_history_window_keeps_the_last_w_screens_with_their_actions():
    window = HistoryWindow(size=2)
    for step in range(4):
        window.observe(np.full((2, 2, 3), step, np.uint8))
        window.act(f"click({step}, 0)")
    window.observe(np.zeros((2, 2, 3), np.uint8))
    screens = window.screens()
    assert [s.screenshot_id for s in screens] == [2, 3, 4]
    assert [s.action for s in screens[:-1]] == ["click(2, 0)", "click(3, 0)"]
    with pytest.raises(RuntimeError, match="without act"):
        window.observe(np.zeros((2, 2, 3), np.uint8))
