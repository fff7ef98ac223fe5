"""The greedy selection loops of stage 1 and DivPrune as NumPy loops, for the CPU.

The greedies are sequential: one step per kept token (782 steps for a 1280-token screenshot at
R = 0.778), and each step is a dozen operations on vectors of ``n`` values. As torch operations on
the CPU each costs several microseconds of dispatch, which is most of a step; the same
operations on NumPy arrays cost about a microsecond each. These loops compute exactly what the
torch reference loops in :mod:`catp_agent.pruning.stage1` compute, with the same tie rule, so
their picks are the same (tested against the torch loops and brute force, with ties and
duplicates):

* :func:`facility_location_picks` is ``stage1._greedy_incremental`` on all images of a group in
  ONE loop (one step picks one token in every image): float64 gain estimates updated only for
  the tokens whose coverage the pick improves; where more than one candidate of an image lies
  within rounding slack of its best, the exact gains are computed by the same torch expression
  as the reference and the reference's tie rule decides.
* :func:`divprune_picks` is the max-min loop of ``stage1.divprune_select``; min, max and
  comparisons round nothing, so the NumPy values are the torch values bit for bit.

Only CPU tensors; on CUDA the torch loops run (they queue kernels without waiting for the GPU).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor

__all__ = ["facility_location_picks", "divprune_picks", "single_threaded"]


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run a greedy loop on one torch intra-op thread. Its torch operations (all of the torch
    loops, the exact tie-breaks of the NumPy loop) are tiny; spreading each over several threads
    costs more in synchronisation than it saves (measured in issue 17: 37 ms on 1 thread
    against 278 ms on 2 busy threads for 289 tokens). The similarity matrices before the loop
    keep the caller's threads (their float32 products were bitwise the same on 1 and 2 threads,
    n = 100-1280, d = 32-3584)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def facility_location_picks(sim: Tensor, align_bonus: Tensor, keep: int, tie_rtol: float, slack_rel: float,
                            first_near_max) -> Tensor:
    """Facility-location greedy picks for ``B`` images at once, in pick order.

    Args:
        sim: ``(B, n, n)`` bitwise-symmetric similarities on the CPU (float32 or float64).
        align_bonus: ``(B, n)`` ``lambda * s(j, v)`` in the same dtype.
        keep: picks per image, ``0 < keep < n``.
        tie_rtol: relative tie tolerance of ``sim``'s dtype (``stage1.TIE_RTOL``).
        slack_rel: slack of the float64 estimates, relative to the largest initial gain.
        first_near_max: ``stage1._first_near_max`` (the reference tie rule), used on near ties.

    Returns:
        ``(B, keep)`` LongTensor of picks, in the order they were taken.
    """
    b, n, _ = sim.shape
    s = sim.contiguous().numpy()
    rows = np.arange(b)
    # gain estimates for the empty selection (best = 0): column sums plus the alignment bonus
    estimate = s.sum(axis=1, dtype=np.float64) + align_bonus.numpy().astype(np.float64)
    slack = slack_rel * max(1.0, float(np.abs(estimate).max()))
    best = np.zeros((b, n), dtype=s.dtype)  # each token's best similarity to its image's picks
    picks = np.empty((b, keep), dtype=np.int64)
    neg_inf = -np.inf
    for step in range(keep):
        j = estimate.argmax(axis=1)
        first = estimate[rows, j]
        floor = first - (slack + tie_rtol * np.maximum(np.abs(first), 1.0))
        near = estimate >= floor[:, None]
        tied = np.flatnonzero(near.sum(axis=1) > 1)
        if tied.size:  # near ties: the exact gains decide, as in the reference
            j[tied] = _exact_tie_break(sim, align_bonus, best, near, tied, first_near_max)
        picks[:, step] = j
        cover = s[rows, j]  # (B, n): s(x, p) for every token x (sim is symmetric: row p)
        img, x = np.nonzero(cover > best)
        if img.size:
            lo, hi = best[img, x], cover[img, x]
            # gain_j loses sum over changed x of max(0, s_xj - lo_x) - max(0, s_xj - hi_x),
            # which is clip(s_xj, lo_x, hi_x) - lo_x (hi_x > lo_x): no rounding in the clip
            block = s[img, x]
            np.maximum(block, lo[:, None], out=block)
            np.minimum(block, hi[:, None], out=block)
            # per-image sums in float64 (nonzero lists the rows image by image); no BLAS call, whose
            # threads would spin on every step
            counts = np.bincount(img, minlength=b)
            present = np.flatnonzero(counts)
            starts = (np.cumsum(counts) - counts)[present]
            changed = np.add.reduceat(block.astype(np.float64), starts, axis=0)
            changed -= np.add.reduceat(lo.astype(np.float64), starts)[:, None]
            estimate[present] -= changed
            best[img, x] = hi
        estimate[rows, j] = neg_inf
    return torch.from_numpy(picks)


def _exact_tie_break(sim: Tensor, align_bonus: Tensor, best: np.ndarray, near: np.ndarray, tied: np.ndarray,
                     first_near_max) -> np.ndarray:
    """For the images ``tied``: the lowest near candidate whose exact gain (the reference's
    expression, in ``sim``'s dtype) is within tolerance of the best exact gain."""
    near_t = torch.from_numpy(near[tied])
    img_local, cand = near_t.nonzero(as_tuple=True)
    img = torch.from_numpy(tied)[img_local]
    best_t = torch.from_numpy(best)
    exact = (sim[img, :, cand] - best_t[img]).clamp_(min=0.0).sum(dim=1) + align_bonus[img, cand]
    scores = torch.full(near_t.shape, float("-inf"), dtype=sim.dtype)
    scores[img_local, cand] = exact
    return first_near_max(scores, near_t).numpy()


def divprune_picks(dist: Tensor, first: int, keep: int, tie_rtol: float) -> Tensor:
    """DivPrune's max-min greedy after its first pick: ``keep`` picks in pick order.

    Args:
        dist: ``(n, n)`` bitwise-symmetric cosine distances on the CPU.
        first: the first pick.
        keep: picks in all, ``1 <= keep <= n``.
        tie_rtol: relative tie tolerance of ``dist``'s dtype.
    """
    d = dist.contiguous().numpy()
    picks = np.empty(keep, dtype=np.int64)
    picks[0] = first
    min_dist = d[first].copy()
    min_dist[first] = -np.inf  # picked: never the maximum again (min with -inf stays -inf)
    for step in range(1, keep):
        top = min_dist.max()
        tol = tie_rtol * max(abs(top), 1.0)
        j = int(np.argmax(min_dist >= top - top.dtype.type(tol)))
        picks[step] = j
        np.minimum(min_dist, d[j], out=min_dist)
        min_dist[j] = -np.inf
    return torch.from_numpy(picks)
