"""Stage 1 of CATP: context-aware coarse pruning of one image's tokens, before the decoder.

Method reference: ``docs/method.md`` section 2 (paper Eqs. 5-7), and the ``divprune`` and
``random`` baselines of section 5. Everything here works on the projector output of ONE image,
``features`` of shape ``(n_tokens, dim)``; the caller loops over images and keeps
``keep_count(S_i, R / 2)`` tokens of image ``i``.

All selection functions return a ``LongTensor`` of kept token indices, of length exactly
``keep``, sorted ascending (the tokens' order of appearance), on the input's device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_float, check_int, check_matrix_vector, check_tensor, compute_dtype
from .greedy_cpu import divprune_picks, facility_location_picks, single_threaded

# Relative tolerance under which two greedy gains / distances count as tied (32 machine
# epsilons of the compute dtype, relative to max(1, |best value|)): about the rounding error of
# a float32 sum over a few thousand tokens.
TIE_RTOL: dict[torch.dtype, float] = {
    torch.float32: 32 * torch.finfo(torch.float32).eps,
    torch.float64: 32 * torch.finfo(torch.float64).eps,
}

__all__ = [
    "keep_count",
    "pairwise_similarity",
    "similarity_to_vector",
    "facility_location_greedy",
    "facility_location_greedy_many",
    "facility_location_objective",
    "divprune_select",
    "random_select",
]


def keep_count(n_tokens: int, ratio_removed: float) -> int:
    """Number of tokens kept when a fraction ``ratio_removed`` of ``n_tokens`` is removed.

    ``floor(n_tokens * (1 - ratio_removed))`` as in docs/method.md; the product is first rounded to
    9 decimals so float fuzz (``576 * (1 - 0.5) = 287.99999...``) does not lose a token.
    ``keep_count(n, 0) == n`` and ``keep_count(n, 1) == 0``.
    """
    check_int("n_tokens", n_tokens, 0)
    ratio = check_float("ratio_removed", ratio_removed, 0.0, 1.0)
    return int(math.floor(round(n_tokens * (1.0 - ratio), 9)))


def _normalized(x: Tensor) -> Tensor:
    """Rows of ``x`` scaled to unit L2 norm, in the compute dtype; zero rows stay zero."""
    return F.normalize(x.to(compute_dtype(x)), p=2.0, dim=-1, eps=1e-12)


def pairwise_similarity(x: Tensor) -> Tensor:
    """Rescaled cosine similarity ``s(a, b) = (cos(a, b) + 1) / 2`` of all pairs of rows.

    Args:
        x: ``(n, dim)`` token features.

    Returns:
        ``(n, n)`` similarities in ``[0, 1]``, float32 (float64 if ``x`` is float64).
        A zero row has cosine 0 with everything (itself included), so similarity 0.5.
    """
    check_tensor("x", x, 2)
    xn = _normalized(x)
    cos = (xn @ xn.T).clamp_(-1.0, 1.0)
    return (cos + 1.0) / 2.0


def similarity_to_vector(x: Tensor, vector: Tensor) -> Tensor:
    """``s(x_j, v)`` for every row of ``x``: ``(n, dim), (dim,) -> (n,)``, values in ``[0, 1]``."""
    check_matrix_vector("x", x, "vector", vector)
    xn = _normalized(x)
    vn = _normalized(vector.to(device=x.device)).to(xn.dtype)
    cos = (xn @ vn).clamp_(-1.0, 1.0)
    return (cos + 1.0) / 2.0


def _alignment(features: Tensor, text_vector: Tensor | None) -> Tensor:
    """``s(y, v)`` per token ``(n,)``, or zeros when there is no text vector."""
    if text_vector is None:
        return torch.zeros(features.shape[0], dtype=compute_dtype(features), device=features.device)
    return similarity_to_vector(features, text_vector)


def _first_near_max(values: Tensor, available: Tensor) -> Tensor:
    """Per row (last dimension): lowest available index whose value is within float noise of
    the available maximum.

    ``values`` ``(..., n)``, ``available`` ``(..., n)`` bool with at least one True per row;
    returns ``(...)`` indices. "Within noise" is ``>= max - TIE_RTOL[dtype] * max(1, |max|)``:
    exact ties of the real-valued criterion (common in facility location, e.g. two tokens that
    only cover each other) can differ in the last bits after summation, and must still go to the
    lower index.
    """
    masked = values.masked_fill(~available, float("-inf"))  # a scalar fill: no host-to-device copy
    top = masked.max(dim=-1, keepdim=True).values
    tol = TIE_RTOL[values.dtype] * torch.clamp(top.abs(), min=1.0)
    return torch.argmax((masked >= top - tol).to(torch.uint8), dim=-1)  # argmax returns the first maximum


def _all_or_none(n: int, keep: int, device: torch.device) -> Tensor | None:
    """The selection when there is nothing to choose (keep all ``n`` or none), else None."""
    if keep == n:
        return torch.arange(n, dtype=torch.long, device=device)
    if keep == 0:
        return torch.empty(0, dtype=torch.long, device=device)
    return None


def facility_location_greedy(
    features: Tensor,
    text_vector: Tensor | None,
    keep: int,
    lambda_align: float = 0.7,
    impl: str | None = None,
) -> Tensor:
    """Greedy maximiser of ``F(Y) = F_div(Y) + lambda_align * F_align(Y)`` (paper Eqs. 5-7).

    ``F_div(Y) = sum_{x in X} max_{y in Y} s(x, y)`` (facility location over all ``n`` tokens,
    ``F_div(empty) = 0``) and ``F_align(Y) = sum_{y in Y} s(y, v)``.

    Plain greedy's picks: each step adds the token with the largest marginal gain, ties broken
    by the lower index (gains equal up to ``TIE_RTOL`` relative count as tied). ``O(n^2)``
    memory for the similarity matrix. On the CPU the gains are updated incrementally, per step
    in time proportional to the tokens whose coverage the pick improves (see ``GREEDY_IMPLS``).

    Args:
        features: ``(n, dim)`` projector output of one image.
        text_vector: ``(dim,)`` mean input embedding of the image's paired text (``v_i``), or
            ``None`` for no alignment term.
        keep: number of tokens to keep, in ``[0, n]``.
        lambda_align: weight ``lambda_1`` of the alignment term, ``>= 0``.
        impl: the loop, one of ``GREEDY_IMPLS`` (same picks); ``None``: the device's fastest.

    Returns:
        ``(keep,)`` LongTensor of kept indices, sorted ascending.
    """
    check_tensor("features", features, 2)
    n = features.shape[0]
    check_int("keep", keep, 0, n)
    lam = check_float("lambda_align", lambda_align, 0.0)
    device = features.device
    trivial = _all_or_none(n, keep, device)
    if trivial is not None:
        return trivial

    return _greedy_batch(pairwise_similarity(features)[None], (lam * _alignment(features, text_vector))[None], keep,
                         impl)[0]


def facility_location_greedy_many(
    features: list[Tensor],
    text_vectors: list[Tensor | None],
    keeps: list[int],
    lambda_align: float = 0.7,
    impl: str | None = None,
) -> list[Tensor]:
    """:func:`facility_location_greedy` for several images at once, with the same results.

    Images with the same token count, keep count, dtype and device run as one batch: the greedy's
    ``keep`` steps are taken for all of them together, so the per-step overhead (a handful of
    small kernels, which dominates at a few hundred tokens) is paid once per group, not once per
    image. ``impl`` as in :func:`facility_location_greedy`. Returns one ``(keep_i,)`` sorted
    LongTensor per image, in input order.
    """
    if not (len(features) == len(text_vectors) == len(keeps)):
        raise ValueError(f"features, text_vectors and keeps must have one entry per image, got "
                         f"{len(features)}, {len(text_vectors)}, {len(keeps)}")
    lam = check_float("lambda_align", lambda_align, 0.0)
    out: list[Tensor | None] = [None] * len(features)
    groups: dict[tuple, list[int]] = {}
    for i, (feats, keep) in enumerate(zip(features, keeps)):
        check_tensor(f"features[{i}]", feats, 2)
        n = feats.shape[0]
        check_int(f"keeps[{i}]", keep, 0, n)
        trivial = _all_or_none(n, keep, feats.device)
        if trivial is not None:
            out[i] = trivial
        else:
            groups.setdefault((n, keep, feats.dtype, feats.device), []).append(i)
    for (_, keep, _, _), members in groups.items():
        sims = torch.stack([pairwise_similarity(features[i]) for i in members])
        bonus = torch.stack([lam * _alignment(features[i], text_vectors[i]) for i in members])
        for i, kept in zip(members, _greedy_batch(sims, bonus, keep, impl)):
            out[i] = kept
    return out  # type: ignore[return-value]


# Slack of the incremental float64 gains, relative to the largest column sum: bounds their
# accumulated rounding (about steps * n * eps64 ~ 1e-10 relative at n = 2880).
_INCREMENTAL_SLACK = 1e-9
# The loops that compute the greedy, all with the same picks (tested against each other and
# against brute force): ``numpy`` (:mod:`.greedy_cpu`, the incremental loop with about a
# microsecond per operation instead of several), ``incremental`` (the same in torch, the
# reference) and ``recompute`` (every gain recomputed each step: O(n^2) work per step, but a
# fixed chain of kernels that never waits for the device, so the loop for CUDA).
GREEDY_IMPLS = ("numpy", "incremental", "recompute")
# CUDA only, opt-in until measured: the recompute loop captured as one CUDA graph (.greedy_cuda).
CUDA_GREEDY_IMPLS = ("recompute_graph",)
_GRAPHED: object | None = None  # the captured loops by shape, made on first use


def greedy_impl_for(device: torch.device) -> str:
    """The loop :func:`facility_location_greedy` uses on ``device``: ``numpy`` on the CPU,
    ``recompute`` elsewhere (the incremental loops read back which tokens changed every step,
    a host-device round trip per pick on a GPU)."""
    return "numpy" if torch.device(device).type == "cpu" else "recompute"


def _greedy_batch(sim: Tensor, align_bonus: Tensor, keep: int, impl: str | None = None) -> list[Tensor]:
    """The facility-location greedy on ``B`` images at once: ``sim`` ``(B, n, n)`` similarities,
    ``align_bonus`` ``(B, n)`` = lambda * s(j, v), ``0 < keep < n``. Returns B sorted index tensors.

    ``impl`` names the loop (one of ``GREEDY_IMPLS``; ``None``: :func:`greedy_impl_for` the
    device). Ties (gains equal up to ``TIE_RTOL`` of the input dtype) go to the lower index,
    per image."""
    sim = (sim + sim.transpose(1, 2)) / 2  # bitwise symmetric, so symmetric ties stay exact
    impl = greedy_impl_for(sim.device) if impl is None else impl
    if impl == "numpy" and sim.device.type != "cpu":
        raise ValueError(f"the numpy greedy needs CPU tensors, got device {sim.device}: pass impl=None or 'recompute'")
    if sim.device.type == "cpu":
        with single_threaded():
            return _greedy_loop(sim, align_bonus, keep, impl)
    return _greedy_loop(sim, align_bonus, keep, impl)


def _greedy_loop(sim: Tensor, align_bonus: Tensor, keep: int, impl: str) -> list[Tensor]:
    """:func:`_greedy_batch` after the symmetrisation: the loop named ``impl``."""
    if impl == "numpy":
        picks = facility_location_picks(sim, align_bonus, keep, TIE_RTOL[sim.dtype], _INCREMENTAL_SLACK, _first_near_max)
    elif impl == "incremental":
        picks = _greedy_incremental(sim, align_bonus, keep)
    elif impl == "recompute":
        picks = _greedy_recompute(sim, align_bonus, keep)
    elif impl == "recompute_graph":
        global _GRAPHED
        if _GRAPHED is None:
            from .greedy_cuda import GraphedGreedy

            _GRAPHED = GraphedGreedy(_greedy_recompute)
        picks = _GRAPHED(sim, align_bonus, keep)
    else:
        raise ValueError(f"greedy impl must be one of {GREEDY_IMPLS + CUDA_GREEDY_IMPLS}, got {impl!r}")
    return list(torch.sort(picks, dim=1).values.unbind(0))


def _greedy_recompute(sim: Tensor, align_bonus: Tensor, keep: int) -> Tensor:
    """Every step recomputes all gains ``gain_j = sum_x max(0, s(x, j) - best_x) + lambda *
    s(j, v)``, with ``best`` ``(B, n)`` each token's max similarity to its image's selection
    (zeros for the empty set, as ``s >= 0``): ``O(n^2)`` per step. Returns (B, keep) picks."""
    b, n, _ = sim.shape
    rows = torch.arange(b, device=sim.device)
    best = torch.zeros((b, n), dtype=sim.dtype, device=sim.device)
    available = torch.ones((b, n), dtype=torch.bool, device=sim.device)
    buffer = torch.empty_like(sim)
    chosen: list[Tensor] = []
    for _ in range(keep):
        torch.sub(sim, best[:, :, None], out=buffer).clamp_(min=0.0)
        j = _first_near_max(buffer.sum(dim=1) + align_bonus, available)
        chosen.append(j)
        available.scatter_(1, j[:, None], False)  # scatter, not index_put: no copy, no wait on CUDA
        best = torch.maximum(best, sim[rows, j])  # row p = column p: sim is symmetric
    return torch.stack(chosen, dim=1)


def _greedy_incremental(sim: Tensor, align_bonus: Tensor, keep: int) -> Tensor:
    """The gains are kept in float64 and updated incrementally: adding a pick ``p`` raises
    ``best_x`` only for the tokens ``x`` that ``p`` covers better, and only their rows change the
    gains, so a step costs ``O(changed * n)`` (a few rows per step after the first picks). Where
    more than one candidate is within rounding slack of the best, their gains are recomputed
    exactly as :func:`_greedy_recompute` computes them before the tie rule. Returns (B, keep)."""
    b, n, _ = sim.shape
    rows = torch.arange(b, device=sim.device)
    sim64 = sim.to(torch.float64)
    estimate = sim64.sum(dim=1) + align_bonus.to(torch.float64)  # empty selection: best = 0
    slack = _INCREMENTAL_SLACK * float(estimate.abs().max().clamp(min=1.0))
    tol = TIE_RTOL[sim.dtype]
    best = torch.zeros((b, n), dtype=torch.float64, device=sim.device)  # the float32 values, held in float64
    chosen: list[Tensor] = []
    for _ in range(keep):  # picked candidates have estimate -inf
        first, second = estimate.topk(2, dim=1).values.unbind(1)
        floor = first - (slack + tol * first.abs().clamp(min=1.0))
        if bool((second < floor).all()):  # one clear winner per image
            j = estimate.argmax(dim=1)
        else:  # near ties: the exact gains decide, as in plain greedy
            near = estimate >= floor[:, None]
            img, cand = near.nonzero(as_tuple=True)
            scores = torch.full((b, n), float("-inf"), dtype=sim.dtype, device=sim.device)
            exact = (sim[img, :, cand] - best[img].to(sim.dtype)).clamp_(min=0.0).sum(dim=1) + align_bonus[img, cand]
            scores[img, cand] = exact
            j = _first_near_max(scores, near)
        chosen.append(j)
        cover = sim64[rows, j]  # (B, n): s(x, p) for every token x (sim is symmetric: row p)
        img, x = (cover > best).nonzero(as_tuple=True)
        block = sim64[img, x]  # (changed, n): the rows whose best rises
        estimate.index_add_(0, img, (block - best[img, x, None]).clamp_(min=0.0) - (block - cover[img, x, None]).clamp_(min=0.0),
                            alpha=-1.0)
        best = torch.maximum(best, cover)
        estimate[rows, j] = float("-inf")
    return torch.stack(chosen, dim=1)


def facility_location_objective(
    features: Tensor,
    text_vector: Tensor | None,
    selected: Tensor,
    lambda_align: float = 0.7,
) -> float:
    """``F(Y)`` of Eq. 5 for the index set ``selected`` (``(k,)`` LongTensor), as a float.

    Used by tests and diagnostics; ``F(empty) = 0``.
    """
    check_tensor("features", features, 2)
    check_tensor("selected", selected, 1, floating=False)
    lam = check_float("lambda_align", lambda_align, 0.0)
    n = features.shape[0]
    if selected.numel() == 0:
        return 0.0
    sel = selected.to(device=features.device, dtype=torch.long)
    if int(sel.min()) < 0 or int(sel.max()) >= n:
        raise ValueError(f"selected indices must be in [0, {n - 1}], got {sel.tolist()}")
    if torch.unique(sel).numel() != sel.numel():
        raise ValueError(f"selected indices must be distinct, got {sel.tolist()}")
    sim = pairwise_similarity(features)
    f_div = sim[:, sel].max(dim=1).values.sum()
    f_align = _alignment(features, text_vector)[sel].sum()
    return float(f_div + lam * f_align)


def divprune_select(features: Tensor, keep: int, impl: str | None = None) -> Tensor:
    """DivPrune baseline: greedy max-min diversity selection of one image's tokens.

    Distance is ``d(a, b) = 1 - cos(a, b)``. The first pick is the token whose minimum distance
    to all OTHER tokens is largest; then each step adds the unselected token whose minimum
    distance to the selected set is largest. Ties (up to ``TIE_RTOL``) go to the lower index.
    This follows the DivPrune reference code (max-min / MMDP greedy).

    Args:
        features: ``(n, dim)`` projector output of one image.
        keep: number of tokens to keep, in ``[0, n]``.
        impl: the loop after the first pick, ``numpy`` (CPU only) or ``torch`` (same picks);
            ``None``: ``numpy`` on the CPU, ``torch`` elsewhere.

    Returns:
        ``(keep,)`` LongTensor of kept indices, sorted ascending.
    """
    check_tensor("features", features, 2)
    n = features.shape[0]
    check_int("keep", keep, 0, n)
    device = features.device
    impl = ("numpy" if device.type == "cpu" else "torch") if impl is None else impl
    if impl not in ("numpy", "torch"):
        raise ValueError(f"divprune impl must be 'numpy' or 'torch', got {impl!r}")
    if impl == "numpy" and device.type != "cpu":
        raise ValueError(f"the numpy divprune loop needs CPU tensors, got device {device}: pass impl=None or 'torch'")
    trivial = _all_or_none(n, keep, device)
    if trivial is not None:
        return trivial

    xn = _normalized(features)
    cos = (xn @ xn.T).clamp_(-1.0, 1.0)
    dist = 1.0 - (cos + cos.T) / 2  # bitwise symmetric
    available = torch.ones(n, dtype=torch.bool, device=device)
    if n > 1:
        off_diag = dist.masked_fill(torch.eye(n, dtype=torch.bool, device=device), float("inf"))
        first = _first_near_max(off_diag.min(dim=1).values, available)
    else:
        first = torch.tensor(0, device=device)
    if device.type == "cpu":
        with single_threaded():
            return _divprune_loop(dist, first, keep, impl)
    return _divprune_loop(dist, first, keep, impl)


def _divprune_loop(dist: Tensor, first: Tensor, keep: int, impl: str) -> Tensor:
    """DivPrune's picks after the first, sorted: the loop named ``impl`` (``numpy`` / ``torch``)."""
    available = torch.ones(dist.shape[0], dtype=torch.bool, device=dist.device)
    if impl == "numpy":
        return torch.sort(divprune_picks(dist, int(first), keep, TIE_RTOL[dist.dtype])).values
    # index_fill_ / index_select with 1-element index tensors: indexing with a 0-d tensor would
    # read it back to the host (a wait per step on CUDA)
    chosen = [first.reshape(1)]
    available.index_fill_(0, chosen[0], False)
    min_dist = dist.index_select(0, chosen[0])[0]
    for _ in range(keep - 1):
        j = _first_near_max(min_dist, available).reshape(1)
        chosen.append(j)
        available.index_fill_(0, j, False)
        min_dist = torch.minimum(min_dist, dist.index_select(0, j)[0])
    return torch.sort(torch.cat(chosen)).values


def random_select(n: int, keep: int, generator: torch.Generator) -> Tensor:
    """Random baseline: ``keep`` of ``n`` indices uniformly without replacement.

    Deterministic given the generator's state (``torch.Generator().manual_seed(seed)``); the
    generator's device decides the output device.

    Returns:
        ``(keep,)`` LongTensor of indices, sorted ascending.
    """
    check_int("n", n, 0)
    check_int("keep", keep, 0, n)
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            "generator must be a torch.Generator (seeded by the caller), "
            f"got {type(generator).__name__}"
        )
    perm = torch.randperm(n, generator=generator, device=generator.device)
    return torch.sort(perm[:keep]).values
