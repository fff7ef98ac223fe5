"""Tests for catp_agent.pruning.temporal: dT, persistence, recency budgets, grid matching."""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from catp_agent.pruning import (
    PersistenceState,
    grid_match,
    persistence_weights,
    protected_mask,
    recency_budgets,
    temporal_difference,
)

CUR = torch.tensor([0.30, 0.10, 0.50, 0.20, 0.40])
PREV = torch.tensor([0.10, 0.25, float("nan"), 0.20, 0.0])
HAS = torch.tensor([True, True, False, True, False])

# Hand-computed: positive diffs of tokens with a previous value: 0.2, 0, 0 (mean 1/15)
#                absolute diffs:                                0.2, 0.15, 0 (mean 0.35/3)
EXPECTED = {
    ("positive", "zero"): [0.2, 0.0, 0.0, 0.0, 0.0],
    ("positive", "current"): [0.2, 0.0, 0.5, 0.0, 0.4],
    ("positive", "mean"): [0.2, 0.0, 0.2 / 3, 0.0, 0.2 / 3],
    ("absolute", "zero"): [0.2, 0.15, 0.0, 0.0, 0.0],
    ("absolute", "current"): [0.2, 0.15, 0.5, 0.0, 0.4],
    ("absolute", "mean"): [0.2, 0.15, 0.35 / 3, 0.0, 0.35 / 3],
}


@pytest.mark.parametrize("mode,fallback", sorted(EXPECTED))
def test_temporal_difference_hand_computed(mode: str, fallback: str) -> None:
    got = temporal_difference(CUR, PREV, HAS, mode=mode, fallback=fallback)
    assert not torch.isnan(got).any()  # NaN in ignored previous entries must not leak
    assert torch.allclose(got, torch.tensor(EXPECTED[(mode, fallback)]), atol=1e-7)


def test_temporal_difference_mean_fallback_without_any_previous_is_zero() -> None:
    got = temporal_difference(CUR, PREV, torch.zeros(5, dtype=torch.bool), fallback="mean")
    assert torch.equal(got, torch.zeros(5))


def test_temporal_difference_validation() -> None:
    with pytest.raises(ValueError, match="mode must be one of \\['positive', 'absolute'\\]"):
        temporal_difference(CUR, PREV, HAS, mode="signed")
    with pytest.raises(ValueError, match="fallback must be one of"):
        temporal_difference(CUR, PREV, HAS, fallback="nan")
    with pytest.raises(ValueError, match="has_previous must be a bool tensor"):
        temporal_difference(CUR, PREV, HAS.long())
    with pytest.raises(ValueError, match="same shape"):
        temporal_difference(CUR, PREV[:4], HAS)


# --------------------------------------------------------------------------- persistence


def test_persistence_two_steps_by_hand_zero_init() -> None:
    state = PersistenceState(init="zero")
    a, b, c = (0, 1), (0, 2), (1, 1)
    p1 = state.update([a, b], torch.tensor([1.0, 0.5]), gamma=0.8)
    assert torch.allclose(p1, torch.tensor([0.2, 0.1]))
    p2 = state.update([a, c], torch.tensor([0.0, 1.0]), gamma=0.8)
    # a: 0.8 * 0.2 + 0.2 * 0 = 0.16 ; c is new: 0.2 * 1 = 0.2 ; b untouched 0.1
    assert torch.allclose(p2, torch.tensor([0.16, 0.2]))
    assert torch.allclose(state.get([a, b, c, (9, 9)]), torch.tensor([0.16, 0.1, 0.2, 0.0]))
    assert torch.allclose(state.get([(9, 9)], default=-1.0), torch.tensor([-1.0]))
    state.forget([b, (9, 9)])
    assert b not in state and a in state and len(state) == 2


def test_persistence_two_steps_by_hand_first_init() -> None:
    state = PersistenceState(init="first")
    p1 = state.update(["x", "y"], torch.tensor([0.6, 0.2]), gamma=0.5)
    assert torch.allclose(p1, torch.tensor([0.6, 0.2]))
    p2 = state.update(["x", "y"], torch.tensor([0.0, 1.0]), gamma=0.5)
    assert torch.allclose(p2, torch.tensor([0.3, 0.6]))


def test_persistence_validation() -> None:
    with pytest.raises(ValueError, match="init must be one of \\['zero', 'first'\\]"):
        PersistenceState(init="ones")
    state = PersistenceState()
    with pytest.raises(ValueError, match="gamma must be in \\[0.0, 1.0\\], got 1.5"):
        state.update(["a"], torch.ones(1), gamma=1.5)
    with pytest.raises(ValueError, match="keys must be distinct"):
        state.update(["a", "a"], torch.ones(2), gamma=0.5)
    with pytest.raises(ValueError, match="r must have shape \\(2,\\)"):
        state.update(["a", "b"], torch.ones(3), gamma=0.5)


def test_persistence_weights_and_protected_mask() -> None:
    p = torch.tensor([0.2, 0.5, 0.5, 0.0, 0.9])
    assert torch.allclose(persistence_weights(p, 2.0), torch.tensor([1.4, 2.0, 2.0, 1.0, 2.8]))
    assert torch.equal(persistence_weights(p, 0.0), torch.ones(5))
    assert protected_mask(p, 0).tolist() == [False] * 5
    assert protected_mask(p, 2).tolist() == [False, True, False, False, True]  # tie 1 vs 2 -> 1
    assert protected_mask(p, 3).tolist() == [False, True, True, False, True]
    with pytest.raises(ValueError, match="strength"):
        persistence_weights(p, -1.0)
    with pytest.raises(ValueError, match="n_protected must be in \\[0, 5\\], got 6"):
        protected_mask(p, 6)


# --------------------------------------------------------------------------- recency


def _cases() -> list[tuple[list[int], int, float]]:
    cases = []
    all_sizes = ([576] * 4, [10, 100, 5], [0, 64, 64], [3, 1, 4, 1, 5, 9, 2, 6], [7], [256, 1024])
    for sizes in all_sizes:
        total = sum(sizes)
        for frac in (0.0, 0.1, 0.333, 0.5, 0.9, 1.0):
            for decay in (0.3, 0.5, 0.9, 1.0):
                cases.append((sizes, int(total * frac), decay))
    return cases


@pytest.mark.parametrize("sizes,total_keep,decay", _cases())
def test_recency_budgets_exact_capped_and_recent_first(
    sizes: list[int], total_keep: int, decay: float
) -> None:
    budgets = recency_budgets(sizes, total_keep, decay)
    assert sum(budgets) == total_keep
    assert all(0 <= b <= s for b, s in zip(budgets, sizes))
    # The exact quotas give newer screenshots a per-token share >= older ones; rounding moves
    # each budget by less than one token, so shares may invert by < 1/size_i + 1/size_j.
    nonempty = [i for i, s in enumerate(sizes) if s > 0]
    for i, j in itertools.combinations(nonempty, 2):  # i older than j
        share_i, share_j = Fraction(budgets[i], sizes[i]), Fraction(budgets[j], sizes[j])
        assert share_j > share_i - Fraction(1, sizes[i]) - Fraction(1, sizes[j]), (i, j, budgets)
        if sizes[i] == sizes[j]:
            assert budgets[j] >= budgets[i], budgets


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=10),
    frac=st.floats(0.0, 1.0),
    decay=st.floats(0.01, 1.0),
)
def test_recency_budgets_property(sizes: list[int], frac: float, decay: float) -> None:
    total_keep = int(sum(sizes) * frac)
    budgets = recency_budgets(sizes, total_keep, decay)
    assert sum(budgets) == total_keep
    assert all(0 <= b <= s for b, s in zip(budgets, sizes))


def test_recency_budgets_decay_favours_recent_when_sizes_equal() -> None:
    budgets = recency_budgets([576] * 4, 800, 0.5)
    assert budgets == sorted(budgets) and budgets[0] < budgets[-1]
    assert recency_budgets([576] * 4, 800, 1.0) == [200, 200, 200, 200]


def test_recency_budgets_hand_computed() -> None:
    # weights 0.25, 0.5, 1 over equal sizes 100: quotas 60 * (1, 2, 4) / 7 = 8.57, 17.14, 34.29
    assert recency_budgets([100, 100, 100], 60, 0.5) == [9, 17, 34]
    # newest capped at 10, the rest (90) split 1 : 2 between the older ones -> 30, 60
    assert recency_budgets([100, 100, 10], 100, 0.5) == [30, 60, 10]
    assert recency_budgets([100, 100], 200, 0.5) == [100, 100]
    assert recency_budgets([4, 4], 1, 0.5) == [0, 1]
    assert recency_budgets([4, 4], 1, 1.0) == [0, 1]  # tie goes to the newer screenshot
    assert recency_budgets([], 0) == []


def test_recency_budgets_validation() -> None:
    with pytest.raises(ValueError, match="total_keep must be in \\[0, 20\\], got 21"):
        recency_budgets([10, 10], 21)
    with pytest.raises(ValueError, match="decay must be in \\(0, 1\\]"):
        recency_budgets([10, 10], 5, 0.0)
    with pytest.raises(ValueError, match="decay"):
        recency_budgets([10, 10], 5, 1.5)
    with pytest.raises(ValueError, match="sizes\\[1\\]"):
        recency_budgets([10, -1], 5)


# --------------------------------------------------------------------------- grid


def test_grid_match() -> None:
    assert torch.equal(grid_match((3, 4), (3, 4)), torch.arange(12))
    assert grid_match((3, 4), (4, 3)) is None
    assert grid_match((3, 4), (3, 5)) is None
    with pytest.raises(ValueError, match="cur_grid must be a \\(rows, cols\\) pair"):
        grid_match((3, 4), (12,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prev_grid\\[0\\] must be in >= 1, got 0"):
        grid_match((0, 4), (3, 4))
