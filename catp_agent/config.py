"""Pruning configuration: one frozen, validated dataclass shared by every method.

``ratio`` is R, the fraction of ALL image tokens in the sequence that is removed
(method.md section 1). ``ratio=0`` reproduces the unpruned model exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

METHODS = ("none", "catp", "fastv", "divprune", "random", "recency")
MODES = ("layer", "temporal", "both")
NORMALIZATIONS = ("raw", "minmax", "zscore", "sum")
STAGE2_SPLITS = ("proportional",)
PAIRED_TEXT = ("following", "preceding")
TEMPORAL_DIFFS = ("positive", "absolute")
TEMPORAL_FALLBACKS = ("zero", "current", "mean")
PERSISTENCE_SIGNALS = ("score", "kept")

# alpha (layer difference dA) and beta (temporal difference dT) implied by each mode.
MODE_WEIGHTS = {"layer": (1.0, 0.0), "temporal": (0.0, 1.0), "both": (1.0, 1.0)}


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


def _check_range(name: str, value: float, lo: float, hi: float, hi_open: bool = False) -> None:
    bad = value < lo or (value >= hi if hi_open else value > hi)
    if bad:
        bracket = ")" if hi_open else "]"
        raise ValueError(f"{name} must be in [{lo}, {hi}{bracket}, got {value}")


@dataclass(frozen=True)
class PruningConfig:
    """How image tokens are pruned. Frozen; every field is validated on construction.

    Core (method.md sections 2, 3, 5):
        method: one of ``none, catp, fastv, divprune, random, recency``.
        ratio: R, fraction of all image tokens removed, in [0, 1). Each CATP stage removes R/2.
        k_layer: K, 0-indexed decoder layer where stage 2 starts (CATP decides after layers K and
            K+1; FastV decides after layer K-1). ``None``: about 20 % of the decoder depth.
        lambda_align: lambda_1 of Eq. 5 (weight of text alignment in stage 1). Default 0.7.
        lambda_query: lambda_2 of Eq. 9 (weight of the similarity to the query). Default 0.6.
        score_normalization: ``raw`` uses the terms as written (dA is ~1e-3, cosine ~1);
            ``minmax``/``zscore``/``sum`` normalise each term over the candidates first.
        stage2_split: how stage 2's share splits between ICD and query tokens; ``proportional``
            removes from each group in proportion to its size (R/2 of each group).
        query_vector_includes_image: whether vq (Eq. 9) averages the query's image tokens too.
        paired_text: which text tokens pair with an image for v_i (Eq. 6): the text that
            ``following``s the image up to the next image, or the text ``preceding`` it.
        recency_decay: per-screenshot budget weight decay**age for the ``recency`` baseline.
        seed: seed of the ``random`` and ``recency`` selections.

    GUI extension (method.md section 4), used when the agent supplies temporal signals:
        mode: ``layer`` (alpha=1, beta=0: the paper), ``temporal`` (0, 1) or ``both`` (1, 1).
        alpha, beta: explicit overrides of the mode's weights (``None``: from the mode).
        temporal_diff: ``positive`` = max(0, a_t - a_{t-1}); ``absolute`` = |a_t - a_{t-1}|.
        temporal_fallback: dT for tokens without a value at t-1: ``zero``, ``current`` (a_t)
            or ``mean`` (mean dT of the tokens that have one).
        persistence: weight the context score by running importance p (Sec. 4).
        gamma: decay of p_t = gamma * p_{t-1} + (1 - gamma) * r_t.
        persistence_strength: score multiplier is 1 + strength * p.
        persistence_signal: r_t is the min-max normalised ``score`` or the ``kept`` indicator.
        n_protected: tokens with the highest p that are always kept (0: none).
    """

    method: str = "catp"
    ratio: float = 0.778
    k_layer: int | None = None
    lambda_align: float = 0.7
    lambda_query: float = 0.6
    score_normalization: str = "raw"
    stage2_split: str = "proportional"
    query_vector_includes_image: bool = True
    paired_text: str = "following"
    recency_decay: float = 0.5
    seed: int = 0
    mode: str = "layer"
    alpha: float | None = None
    beta: float | None = None
    temporal_diff: str = "positive"
    temporal_fallback: str = "zero"
    persistence: bool = False
    gamma: float = 0.5
    persistence_strength: float = 1.0
    persistence_signal: str = "score"
    n_protected: int = 0

    def __post_init__(self) -> None:
        _check_choice("method", self.method, METHODS)
        if not isinstance(self.ratio, (int, float)) or isinstance(self.ratio, bool):
            raise TypeError(f"ratio must be a float in [0, 1), got {self.ratio!r}")
        _check_range("ratio (fraction of image tokens removed)", float(self.ratio), 0.0, 1.0, hi_open=True)
        if self.k_layer is not None and (not isinstance(self.k_layer, int) or self.k_layer < 1):
            raise ValueError(f"k_layer must be an int >= 1 (layer K-1 must exist) or None, got {self.k_layer!r}")
        _check_range("lambda_align", self.lambda_align, 0.0, float("inf"))
        _check_range("lambda_query", self.lambda_query, 0.0, float("inf"))
        _check_choice("score_normalization", self.score_normalization, NORMALIZATIONS)
        _check_choice("stage2_split", self.stage2_split, STAGE2_SPLITS)
        _check_choice("paired_text", self.paired_text, PAIRED_TEXT)
        _check_range("recency_decay", self.recency_decay, 0.0, 1.0)
        if self.recency_decay == 0.0:
            raise ValueError("recency_decay must be in (0, 1], got 0.0 (0 would give old screenshots no budget at all)")
        _check_choice("mode", self.mode, MODES)
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0 or None (taken from mode), got {value}")
        _check_choice("temporal_diff", self.temporal_diff, TEMPORAL_DIFFS)
        _check_choice("temporal_fallback", self.temporal_fallback, TEMPORAL_FALLBACKS)
        _check_range("gamma", self.gamma, 0.0, 1.0)
        _check_range("persistence_strength", self.persistence_strength, 0.0, float("inf"))
        _check_choice("persistence_signal", self.persistence_signal, PERSISTENCE_SIGNALS)
        if not isinstance(self.n_protected, int) or self.n_protected < 0:
            raise ValueError(f"n_protected must be an int >= 0, got {self.n_protected!r}")

    @property
    def weights(self) -> tuple[float, float]:
        """(alpha, beta): the weights of dA and dT in the stage-2 context score."""
        alpha, beta = MODE_WEIGHTS[self.mode]
        return (alpha if self.alpha is None else self.alpha, beta if self.beta is None else self.beta)

    @property
    def uses_temporal(self) -> bool:
        """True when the stage-2 score needs signals from the previous agent step."""
        return self.method == "catp" and (self.weights[1] > 0 or self.persistence or self.n_protected > 0)

    @property
    def is_identity(self) -> bool:
        """True when nothing can be removed (method ``none`` or ratio 0)."""
        return self.method == "none" or self.ratio == 0.0

    def replace(self, **changes: Any) -> "PruningConfig":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, for results files."""
        return asdict(self)


def default_k_layer(num_layers: int) -> int:
    """About 20 % of the decoder depth, at least 1 and leaving room for layer K+1."""
    if num_layers < 3:
        raise ValueError(f"stage-2 pruning needs a decoder of at least 3 layers, got {num_layers}")
    return min(max(1, round(0.2 * num_layers)), num_layers - 2)
