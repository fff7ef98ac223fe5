"""The per-method decisions, as functions of tensors: which image tokens each stage keeps.

Torch only. The pruning session (``session.py``) gathers the tensors from the model and applies
the returned indices; this module decides.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from catp_agent.config import PruningConfig
from catp_agent.models.spans import SequenceLayout
from catp_agent.pruning import (
    attention_growth,
    context_scores,
    cosine_to_vector,
    divprune_select,
    facility_location_greedy_many,
    fastv_select,
    keep_count,
    query_scores,
    random_select,
    recency_budgets,
    select_top,
)
from catp_agent.records import ContextSignals


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run a block on one intra-op thread. The greedy selections are hundreds of tiny tensor
    ops; spreading each over several threads costs more in synchronisation than it saves
    (measured: 37 ms on 1 thread against 278 ms on 2 busy threads for 289 tokens)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def before_decoder(
    cfg: PruningConfig, layout: SequenceLayout, embeds: torch.Tensor
) -> list[torch.Tensor]:
    """Patch indices kept per image before the decoder.

    embeds: (seq, dim) decoder inputs (the projector's output at the image positions).
    Returns one sorted (k_i,) LongTensor of patch indices per image.
    """
    sizes = [span.size for span in layout.spans]
    keep_all = [torch.arange(s) for s in sizes]
    if cfg.is_identity or cfg.method == "fastv":
        return keep_all
    total_keep = keep_count(sum(sizes), cfg.ratio)
    if cfg.method == "catp":
        feats = [embeds[span.start : span.end] for span in layout.spans]
        vectors = [embeds[text].mean(dim=0) if text.numel() else None for text in layout.text_pairs]
        keeps = [keep_count(span.size, cfg.ratio / 2) for span in layout.spans]
        # All images' greedies run as one batch (same result as one by one, a fraction of the time).
        return facility_location_greedy_many(feats, vectors, keeps, lambda_align=cfg.lambda_align)
    if cfg.method == "divprune":
        budgets = recency_budgets(sizes, total_keep, decay=1.0)
        return [
            divprune_select(embeds[span.start : span.end], b) for span, b in zip(layout.spans, budgets)
        ]
    generator = torch.Generator().manual_seed(cfg.seed)
    if cfg.method == "random":
        flat = random_select(sum(sizes), total_keep, generator)
        offsets = torch.tensor([0] + sizes).cumsum(0)
        return [flat[(flat >= lo) & (flat < hi)] - lo for lo, hi in zip(offsets[:-1], offsets[1:])]
    if cfg.method == "recency":
        budgets = recency_budgets(sizes, total_keep, decay=cfg.recency_decay)
        return [random_select(s, b, generator) for s, b in zip(sizes, budgets)]
    raise ValueError(f"no pre-decoder selection for method {cfg.method!r}")


def fastv_keep(cfg: PruningConfig, attention_prev: torch.Tensor, n_image_tokens_original: int) -> torch.Tensor:
    """FastV at layer K: candidate indices (into ``attention_prev``) with the highest attention
    from the last token at layer K-1. attention_prev: (m,) over all image tokens."""
    return fastv_select(attention_prev, keep_count(n_image_tokens_original, cfg.ratio))


def context_keep(
    cfg: PruningConfig,
    n_keep: int,
    attention_prev: torch.Tensor,
    attention_k: torch.Tensor,
    hidden: torch.Tensor,
    query_vector: torch.Tensor,
    signals: ContextSignals | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 2 at layer K for the ICD image tokens (Eq. 8-9, plus section 4's signals).

    attention_prev, attention_k: (m,) rows at layers K-1 and K; hidden: (m, dim) at layer K;
    query_vector: (dim,) vq^K. Returns (kept candidate indices sorted, scores (m,)).
    """
    growth = attention_growth(attention_prev, attention_k)
    similarity = cosine_to_vector(hidden, query_vector)
    alpha, beta = cfg.weights
    temporal = signals.temporal if signals is not None else None
    if beta > 0 and temporal is None:
        temporal = torch.zeros_like(growth)  # first agent step or no history: no movement yet
    scores = context_scores(
        growth,
        similarity,
        lambda_query=cfg.lambda_query,
        normalize=cfg.score_normalization,
        temporal=temporal if beta > 0 else None,
        alpha=alpha,
        beta=beta,
        persistence=signals.persistence if signals is not None else None,
    )
    protected = signals.protected if signals is not None else None
    return select_top(scores, n_keep, protected=protected), scores


def query_keep(n_keep: int, query_hidden: torch.Tensor, context_vector: torch.Tensor) -> torch.Tensor:
    """Stage 2 at layer K+1 for the query image tokens (Eq. 10). query_hidden: (m, dim)."""
    return select_top(query_scores(query_hidden, context_vector), n_keep)
