"""Tests for catp_agent.pruning.stage2: scores, normalisation, selection, budget split."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from catp_agent.pruning import (
    attention_growth,
    context_scores,
    cosine_to_vector,
    fastv_select,
    keep_count,
    normalize_scores,
    query_scores,
    select_top,
    stage2_removal,
)

# --------------------------------------------------------------------------- scores


def test_attention_growth_clamps_negative() -> None:
    prev = torch.tensor([0.10, 0.20, 0.30, 0.0])
    cur = torch.tensor([0.15, 0.10, 0.30, 0.05])
    assert torch.allclose(attention_growth(prev, cur), torch.tensor([0.05, 0.0, 0.0, 0.05]))
    assert attention_growth(prev.half(), cur.half()).dtype == torch.float32
    with pytest.raises(ValueError, match="same shape"):
        attention_growth(prev, cur[:3])


def test_cosine_to_vector_known_values() -> None:
    h = torch.tensor([[1.0, 0.0], [0.0, 3.0], [-2.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    v = torch.tensor([2.0, 0.0])
    expected = torch.tensor([1.0, 0.0, -1.0, 2**-0.5, 0.0])
    assert torch.allclose(cosine_to_vector(h, v), expected, atol=1e-6)
    assert torch.allclose(query_scores(h, v), expected, atol=1e-6)
    with pytest.raises(ValueError, match="vector must have shape \\(2,\\)"):
        cosine_to_vector(h, torch.ones(3))


def test_normalize_scores_values() -> None:
    x = torch.tensor([1.0, 3.0, 2.0, 5.0])
    assert normalize_scores(x, "raw") is x
    assert torch.allclose(normalize_scores(x, "minmax"), torch.tensor([0.0, 0.5, 0.25, 1.0]))
    z = normalize_scores(x, "zscore")
    assert torch.allclose(z, (x - 2.75) / torch.tensor(2.1875).sqrt())
    assert abs(float(z.mean())) < 1e-6 and abs(float(z.std(unbiased=False)) - 1) < 1e-6
    assert torch.allclose(normalize_scores(x, "sum"), x / 11)
    mixed = torch.tensor([-1.0, 3.0])
    assert torch.allclose(normalize_scores(mixed, "sum"), torch.tensor([-0.25, 0.75]))


@pytest.mark.parametrize("how", ["minmax", "zscore", "sum"])
def test_normalize_scores_degenerate_inputs(how: str) -> None:
    assert torch.equal(normalize_scores(torch.full((5,), 0.0), how), torch.zeros(5))
    if how != "sum":
        assert torch.equal(normalize_scores(torch.full((5,), 0.7), how), torch.zeros(5))
        assert torch.equal(normalize_scores(torch.tensor([3.0]), how), torch.zeros(1))
    assert normalize_scores(torch.empty(0), how).shape == (0,)
    assert not torch.isnan(normalize_scores(torch.tensor([1e-3, 1e-3, 2e-3]), how)).any()


def test_normalize_scores_rejects_unknown_mode() -> None:
    allowed = "\\['raw', 'minmax', 'zscore', 'sum'\\]"
    with pytest.raises(ValueError, match=f"how must be one of {allowed}, got 'l2'"):
        normalize_scores(torch.ones(3), "l2")


def test_context_scores_raw_is_eq9() -> None:
    da = torch.tensor([0.001, 0.0, 0.003])
    cos = torch.tensor([0.5, 0.9, -0.2])
    assert torch.allclose(context_scores(da, cos), da + 0.6 * cos)
    assert torch.allclose(context_scores(da, cos, lambda_query=0.0), da)


def test_context_scores_normalized_and_temporal_and_persistence() -> None:
    da = torch.tensor([0.0, 0.002, 0.004])
    cos = torch.tensor([0.2, 0.6, 0.4])
    dt = torch.tensor([0.03, 0.0, 0.01])
    w = torch.tensor([1.0, 2.0, 1.5])
    got = context_scores(
        da, cos, lambda_query=0.5, normalize="minmax", temporal=dt, alpha=2.0, beta=3.0,
        persistence=w,
    )
    expected = (2 * torch.tensor([0.0, 0.5, 1.0]) + 3 * torch.tensor([1.0, 0.0, 1 / 3])
                + 0.5 * torch.tensor([0.0, 1.0, 0.5])) * w
    assert torch.allclose(got, expected)
    # temporal-only ablation: alpha=0, beta=1
    only_t = context_scores(da, cos, lambda_query=0.0, temporal=dt, alpha=0.0, beta=1.0)
    assert torch.allclose(only_t, dt)
    # beta=0 ignores temporal entirely
    assert torch.allclose(context_scores(da, cos, temporal=dt), da + 0.6 * cos)


def test_context_scores_validation() -> None:
    da, cos = torch.zeros(3), torch.zeros(3)
    with pytest.raises(ValueError, match="beta=1.0 .* temporal is None"):
        context_scores(da, cos, beta=1.0)
    with pytest.raises(ValueError, match="same shape"):
        context_scores(da, torch.zeros(4))
    with pytest.raises(ValueError, match="same shape"):
        context_scores(da, cos, persistence=torch.ones(2))
    with pytest.raises(ValueError, match="normalize must be one of"):
        context_scores(da, cos, normalize="softmax")


# --------------------------------------------------------------------------- selection


def test_select_top_basic_and_ties_to_lower_index() -> None:
    s = torch.tensor([0.5, 0.9, 0.5, 0.1, 0.9, 0.5])
    assert select_top(s, 0).tolist() == []
    assert select_top(s, 1).tolist() == [1]
    assert select_top(s, 2).tolist() == [1, 4]
    assert select_top(s, 3).tolist() == [0, 1, 4]
    assert select_top(s, 4).tolist() == [0, 1, 2, 4]
    assert select_top(s, 6).tolist() == [0, 1, 2, 3, 4, 5]
    assert select_top(torch.zeros(5), 2).tolist() == [0, 1]
    assert select_top(torch.tensor([0.0, -0.0, 0.0]), 1).tolist() == [0]


def test_select_top_matches_reference_on_random_scores_with_ties() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        s = torch.randint(0, 4, (20,), generator=g).float()
        for keep in (0, 3, 10, 20):
            ref = sorted(sorted(range(20), key=lambda i: (-float(s[i]), i))[:keep])
            assert select_top(s, keep).tolist() == ref


def test_select_top_protected_mask_and_indices() -> None:
    s = torch.tensor([0.9, 0.1, 0.8, 0.2, 0.7])
    mask = torch.tensor([False, True, False, False, False])
    assert select_top(s, 2, protected=mask).tolist() == [0, 1]
    assert select_top(s, 3, protected=torch.tensor([3, 1])).tolist() == [0, 1, 3]
    assert select_top(s, 2, protected=torch.tensor([1, 1])).tolist() == [0, 1]  # duplicates
    assert select_top(s, 2, protected=torch.tensor([], dtype=torch.long)).tolist() == [0, 2]
    assert select_top(s, 2, protected=torch.tensor([1, 3])).tolist() == [1, 3]
    with pytest.raises(ValueError, match="2 protected positions do not fit in keep=1"):
        select_top(s, 1, protected=torch.tensor([1, 3]))
    with pytest.raises(ValueError, match="protected indices must be in \\[0, 4\\]"):
        select_top(s, 2, protected=torch.tensor([7]))
    with pytest.raises(ValueError, match="bool mask must have shape \\(5,\\)"):
        select_top(s, 2, protected=torch.tensor([True, False]))


def test_select_top_validation() -> None:
    with pytest.raises(ValueError, match="keep must be in \\[0, 3\\], got 4"):
        select_top(torch.zeros(3), 4)
    with pytest.raises(ValueError, match="NaN"):
        select_top(torch.tensor([0.1, float("nan")]), 1)


def test_fastv_select_keeps_highest_previous_layer_attention() -> None:
    attn = torch.tensor([0.01, 0.2, 0.05, 0.2, 0.0])
    assert fastv_select(attn, 3).tolist() == [1, 2, 3]


# --------------------------------------------------------------------------- stage-2 budget


@pytest.mark.parametrize("share", ["proportional", "icd_first"])
def test_stage2_removal_sums_exactly_on_grid(share: str) -> None:
    for ratio in (0.0, 0.3, 0.5, 0.667, 0.778, 0.889, 1.0):
        for n_icd_orig in (0, 1, 7, 576, 2304):
            for n_query_orig in (0, 1, 5, 576):
                total = n_icd_orig + n_query_orig
                # stage 1 at R/2 per group, as the pipeline does
                n_icd_in = keep_count(n_icd_orig, ratio / 2)
                n_query_in = keep_count(n_query_orig, ratio / 2)
                icd, query = stage2_removal(n_icd_in, n_query_in, total, ratio, share)
                assert icd + query == min(keep_count(total, ratio), n_icd_in + n_query_in)
                assert 0 <= icd <= n_icd_in and 0 <= query <= n_query_in
                if share == "proportional" and n_icd_in == 0:
                    assert icd == 0
                if ratio == 0.0:
                    assert (icd, query) == (n_icd_orig, n_query_orig)


def test_stage2_removal_proportional_rounding() -> None:
    # keep_count(1000, 0.5) = 500; n_in = 700 = 600 ICD + 100 query
    # ICD keep = floor(500 * 600 / 700) = 428, query gets the remainder 72
    assert stage2_removal(600, 100, 1000, 0.5) == (428, 72)
    # no ICDs: everything to the query group
    assert stage2_removal(0, 300, 576, 0.778) == (0, keep_count(576, 0.778))
    # icd_first: ICD tokens go first
    assert stage2_removal(600, 100, 1000, 0.5, "icd_first") == (400, 100)
    assert stage2_removal(600, 100, 1000, 0.95, "icd_first") == (0, 50)
    # stage 1 already below the total budget: keep everything
    assert stage2_removal(10, 5, 20, 0.1) == (10, 5)


def test_stage2_removal_validation() -> None:
    with pytest.raises(ValueError, match="n_total_original must be in >= 15, got 10"):
        stage2_removal(10, 5, 10, 0.5)
    with pytest.raises(ValueError, match="icd_share must be one of"):
        stage2_removal(10, 5, 20, 0.5, "half")
    with pytest.raises(ValueError, match="ratio_removed"):
        stage2_removal(10, 5, 20, 1.5)


@settings(max_examples=300, deadline=None)
@given(
    n_icd=st.integers(0, 5000),
    n_query=st.integers(0, 3000),
    extra=st.integers(0, 3000),
    ratio=st.floats(0.0, 1.0),
    share=st.sampled_from(["proportional", "icd_first"]),
)
def test_stage2_removal_property(
    n_icd: int, n_query: int, extra: int, ratio: float, share: str
) -> None:
    icd, query = stage2_removal(n_icd, n_query, n_icd + n_query + extra, ratio, share)
    assert icd + query == min(keep_count(n_icd + n_query + extra, ratio), n_icd + n_query)
    assert 0 <= icd <= n_icd and 0 <= query <= n_query
