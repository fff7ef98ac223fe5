"""Argument checks shared by the pruning modules.

Every check raises ``ValueError`` (or ``TypeError`` for a wrong type) naming the argument, the
value it got and what is allowed, as the house style asks.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype scores are computed in: float64 for float64 input, float32 otherwise."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """Return ``value`` as an int after checking it is an int in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < low or (high is not None and value > high):
        allowed = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be in {allowed}, got {value}")
    return value


def check_float(
    name: str, value: object, low: float | None = None, high: float | None = None
) -> float:
    """Return ``value`` as a float after checking it is a finite real in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def check_choice(name: str, value: object, allowed: tuple[str, ...]) -> str:
    """Return ``value`` after checking it is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value  # type: ignore[return-value]


def check_tensor(name: str, x: object, ndim: int, floating: bool = True) -> Tensor:
    """Return ``x`` after checking it is a tensor with ``ndim`` dims (and a float dtype)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dim(s), got shape {tuple(x.shape)}")
    if floating and not x.is_floating_point():
        raise ValueError(f"{name} must have a floating dtype, got {x.dtype}")
    return x


def check_same_shape(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    """Raise unless ``a`` and ``b`` have the same shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def check_no_nan(name: str, x: Tensor) -> None:
    """Raise if ``x`` holds NaN (a NaN score has no rank)."""
    if bool(torch.isnan(x).any()):
        raise ValueError(f"{name} must not contain NaN, got {int(torch.isnan(x).sum())} NaN(s)")


def check_matrix_vector(matrix_name: str, matrix: torch.Tensor, vector_name: str, vector: torch.Tensor) -> None:
    """A (n, d) matrix and a (d,) vector that must match in d."""
    check_tensor(matrix_name, matrix, 2)
    check_tensor(vector_name, vector, 1)
    if vector.shape[0] != matrix.shape[1]:
        raise ValueError(
            f"{vector_name} must have shape ({matrix.shape[1]},) to match {matrix_name} {tuple(matrix.shape)}, "
            f"got {tuple(vector.shape)}"
        )
