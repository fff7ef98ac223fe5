"""The GUI extension of stage 2: temporal attention difference, persistence, recency budgets.

Method reference: ``docs/method.md`` section 4 and the ``recency`` baseline of section 5. A
token's identity across agent steps is a hashable key, e.g. ``(screenshot_id, patch_index)``;
the current screenshot's patches are matched to the previous screenshot's by grid position
(``grid_match``). Everything here is pure tensor code except ``PersistenceState``, the small
per-episode store of running importances.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from fractions import Fraction

import torch
from torch import Tensor

from ._checks import (
    check_choice,
    check_float,
    check_int,
    check_same_shape,
    check_tensor,
    compute_dtype,
)

__all__ = [
    "TEMPORAL_MODES",
    "TEMPORAL_FALLBACKS",
    "PERSISTENCE_INITS",
    "temporal_difference",
    "PersistenceState",
    "persistence_weights",
    "protected_mask",
    "recency_budgets",
    "grid_match",
]

TEMPORAL_MODES: tuple[str, ...] = ("positive", "absolute")
TEMPORAL_FALLBACKS: tuple[str, ...] = ("zero", "current", "mean")
PERSISTENCE_INITS: tuple[str, ...] = ("zero", "first")


def temporal_difference(
    current: Tensor,
    previous: Tensor,
    has_previous: Tensor,
    mode: str = "positive",
    fallback: str = "zero",
) -> Tensor:
    """Action-to-action attention difference ``dT`` at layer K.

    ``dT(x) = max(0, a_t(x) - a_{t-1}(x))`` (``mode="positive"``) or ``|a_t(x) - a_{t-1}(x)|``
    (``mode="absolute"``), where ``a_t(x) = A_K[t_ql, x]`` at agent step ``t``.

    Tokens without a value at ``t - 1`` (new, or pruned then; ``has_previous`` False; their
    ``previous`` entry is ignored and may hold anything, NaN included) get:

    - ``"zero"``: 0 (nothing is known to have changed);
    - ``"current"``: ``a_t(x)`` (treated as newly attended, i.e. ``a_{t-1} = 0``);
    - ``"mean"``: the mean ``dT`` of the tokens that do have a previous value (0 if none do).

    Args:
        current: ``(m,)`` attention at step ``t``.
        previous: ``(m,)`` attention of each token's counterpart at step ``t - 1``.
        has_previous: ``(m,)`` bool, whether the counterpart was scored at ``t - 1``.

    Returns:
        ``(m,)`` ``dT`` in the compute dtype.
    """
    check_tensor("current", current, 1)
    check_tensor("previous", previous, 1)
    check_tensor("has_previous", has_previous, 1, floating=False)
    if has_previous.dtype != torch.bool:
        raise ValueError(f"has_previous must be a bool tensor, got dtype {has_previous.dtype}")
    check_same_shape("current", current, "previous", previous)
    check_same_shape("current", current, "has_previous", has_previous)
    check_choice("mode", mode, TEMPORAL_MODES)
    check_choice("fallback", fallback, TEMPORAL_FALLBACKS)

    dtype = compute_dtype(current)
    cur = current.to(dtype)
    has = has_previous.to(cur.device)
    prev = torch.where(has, previous.to(device=cur.device, dtype=dtype), 0.0)
    diff = cur - prev
    diff = diff.clamp(min=0.0) if mode == "positive" else diff.abs()
    if fallback == "zero":
        fill = torch.zeros_like(cur)
    elif fallback == "current":
        fill = cur.clamp(min=0.0) if mode == "positive" else cur.abs()
    else:
        fill_value = diff[has].mean() if bool(has.any()) else cur.new_zeros(())
        fill = fill_value.expand_as(cur)
    return torch.where(has, diff, fill)


class PersistenceState:
    """Running importance ``p_t(x) = gamma * p_{t-1}(x) + (1 - gamma) * r_t(x)`` per token key.

    ``r_t`` is the token's normalised score or kept-indicator at step ``t`` (the caller's
    choice). A key seen for the first time starts from ``init``:

    - ``"zero"``: ``p_{t-1} = 0``, so ``p_t = (1 - gamma) * r_t``;
    - ``"first"``: ``p_t = r_t``.

    Keys that leave the history window should be dropped with ``forget``.
    """

    def __init__(self, init: str = "zero") -> None:
        self.init = check_choice("init", init, PERSISTENCE_INITS)
        self._p: dict[Hashable, float] = {}

    def __len__(self) -> int:
        return len(self._p)

    def keys(self) -> list[Hashable]:
        """Every key with a running value."""
        return list(self._p)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._p

    def update(self, keys: Sequence[Hashable], r: Tensor, gamma: float) -> Tensor:
        """Fold step ``t``'s values ``r`` ``(len(keys),)`` in; return the new ``p`` of those keys.

        ``gamma`` in ``[0, 1]``; keys must be distinct. Keys not in ``keys`` are unchanged.
        """
        g = check_float("gamma", gamma, 0.0, 1.0)
        check_tensor("r", r, 1)
        if r.shape[0] != len(keys):
            raise ValueError(
                f"r must have shape ({len(keys)},) to match keys, got {tuple(r.shape)}"
            )
        if len(set(keys)) != len(keys):
            raise ValueError(
                f"keys must be distinct, got {len(keys) - len(set(keys))} duplicate(s)"
            )
        new_values = []
        for key, value in zip(keys, r.detach().to("cpu", torch.float64).tolist()):
            if key in self._p:
                p = g * self._p[key] + (1.0 - g) * value
            elif self.init == "first":
                p = value
            else:
                p = (1.0 - g) * value
            self._p[key] = p
            new_values.append(p)
        return torch.tensor(new_values, dtype=compute_dtype(r), device=r.device)

    def get(self, keys: Sequence[Hashable], default: float = 0.0) -> Tensor:
        """Current ``p`` of each key, float32 ``(len(keys),)``; unseen keys get ``default``."""
        d = check_float("default", default)
        return torch.tensor([self._p.get(k, d) for k in keys], dtype=torch.float32)

    def forget(self, keys: Sequence[Hashable]) -> None:
        """Drop the given keys (e.g. a screenshot that left the window); unknown keys are ignored.
        """
        for key in keys:
            self._p.pop(key, None)


def persistence_weights(p: Tensor, strength: float) -> Tensor:
    """Multiplicative boost ``1 + strength * p`` ``(m,)`` for ``context_scores(persistence=...)``.

    ``strength >= 0``; ``strength = 0`` gives all-ones (no persistence).
    """
    check_tensor("p", p, 1)
    s = check_float("strength", strength, 0.0)
    return 1.0 + s * p.to(compute_dtype(p))


def protected_mask(p: Tensor, n_protected: int) -> Tensor:
    """Bool mask ``(m,)`` of the ``n_protected`` tokens with the highest ``p`` (ties: lower
    index).

    Pass it as ``select_top(..., protected=mask)`` so they are always kept.
    """
    check_tensor("p", p, 1)
    m = p.shape[0]
    check_int("n_protected", n_protected, 0, m)
    mask = torch.zeros(m, dtype=torch.bool, device=p.device)
    mask[torch.sort(-p, stable=True).indices[:n_protected]] = True
    return mask


def recency_budgets(sizes: Sequence[int], total_keep: int, decay: float = 0.5) -> list[int]:
    """Per-screenshot token budgets for the ``recency`` baseline.

    Screenshots are ordered oldest -> newest (the last is the current query screenshot, age 0).
    Screenshot ``i`` of age ``a_i`` gets a share proportional to ``decay**a_i * sizes[i]``
    (so its per-token keep rate is proportional to ``decay**a_i``), capped at ``sizes[i]``;
    budget freed by a cap is redistributed to the uncapped screenshots by the same weights
    (water-filling). The real-valued quotas are computed exactly (``fractions.Fraction``) and
    rounded by largest remainder, ties to the newer screenshot, so the result is integer,
    ``budget[i] <= sizes[i]`` and ``sum(budget) == total_keep`` exactly. For equal sizes,
    newer screenshots never get fewer tokens than older ones.

    Args:
        sizes: image-token count of each screenshot, ``>= 0``.
        total_keep: tokens to keep in all, in ``[0, sum(sizes)]``.
        decay: per-step decay in ``(0, 1]``; 1 spreads the budget uniformly over tokens.
    """
    sizes = [check_int(f"sizes[{i}]", s, 0) for i, s in enumerate(sizes)]
    check_int("total_keep", total_keep, 0, sum(sizes))
    d = check_float("decay", decay, 0.0, 1.0)
    if d == 0.0:
        raise ValueError("decay must be in (0, 1], got 0.0")
    n = len(sizes)
    weight = [Fraction(d) ** (n - 1 - i) for i in range(n)]
    quota: list[Fraction | None] = [Fraction(0) if s == 0 else None for s in sizes]
    while True:  # water-filling: fix screenshots whose quota exceeds their size
        free = [i for i in range(n) if quota[i] is None]
        remaining = total_keep - sum(q for q in quota if q is not None)
        if not free:
            break
        denom = sum(weight[i] * sizes[i] for i in free)
        trial = {i: remaining * weight[i] * sizes[i] / denom for i in free}
        over = [i for i in free if trial[i] > sizes[i]]
        if not over:
            for i in free:
                quota[i] = trial[i]
            break
        for i in over:
            quota[i] = Fraction(sizes[i])
    exact = [q if q is not None else Fraction(0) for q in quota]
    budgets = [int(q) for q in exact]  # floor (quotas are >= 0)
    leftover = total_keep - sum(budgets)
    by_remainder = sorted(range(n), key=lambda i: (exact[i] - budgets[i], i), reverse=True)
    for i in by_remainder[:leftover]:
        budgets[i] += 1
    return budgets


def grid_match(prev_grid: tuple[int, int], cur_grid: tuple[int, int]) -> Tensor | None:
    """Map the current screenshot's patch indices to the previous screenshot's by grid position.

    Patches are numbered row-major over a ``(rows, cols)`` grid. Same grid (same viewport):
    returns the identity ``(rows * cols,)`` LongTensor, ``match[i]`` = previous index of current
    patch ``i``. Different grids: ``None`` (no token has a counterpart; use the
    ``temporal_difference`` fallback for all).
    """
    for name, grid in (("prev_grid", prev_grid), ("cur_grid", cur_grid)):
        if not isinstance(grid, (tuple, list)) or len(grid) != 2:
            raise ValueError(f"{name} must be a (rows, cols) pair, got {grid!r}")
        check_int(f"{name}[0]", grid[0], 1)
        check_int(f"{name}[1]", grid[1], 1)
    if tuple(prev_grid) != tuple(cur_grid):
        return None
    return torch.arange(cur_grid[0] * cur_grid[1], dtype=torch.long)
