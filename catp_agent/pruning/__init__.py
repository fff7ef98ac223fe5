"""Token-pruning core of CATP: scoring and selection as pure tensor functions (torch only).

- ``stage1``: context-aware coarse pruning per image before the decoder (facility location
  greedy), and the ``divprune`` / ``random`` baselines.
- ``stage2``: query-guided fine pruning scores inside the decoder, top-k selection, the
  ``fastv`` baseline and the stage-2 budget split.
- ``temporal``: the GUI extension (temporal difference, persistence, recency budgets).

Every selection function returns kept indices as a LongTensor sorted ascending, of exactly the
requested length.
"""

from .stage1 import (
    divprune_select,
    facility_location_greedy,
    facility_location_greedy_many,
    facility_location_objective,
    keep_count,
    pairwise_similarity,
    random_select,
    similarity_to_vector,
)
from .stage2 import (
    ICD_SHARES,
    NORMALIZATIONS,
    attention_growth,
    context_scores,
    cosine_to_vector,
    fastv_select,
    normalize_scores,
    query_scores,
    select_top,
    stage2_removal,
)
from .temporal import (
    PERSISTENCE_INITS,
    TEMPORAL_FALLBACKS,
    TEMPORAL_MODES,
    PersistenceState,
    grid_match,
    persistence_weights,
    protected_mask,
    recency_budgets,
    temporal_difference,
)

__all__ = [
    "ICD_SHARES",
    "NORMALIZATIONS",
    "PERSISTENCE_INITS",
    "TEMPORAL_FALLBACKS",
    "TEMPORAL_MODES",
    "PersistenceState",
    "attention_growth",
    "context_scores",
    "cosine_to_vector",
    "divprune_select",
    "facility_location_greedy",
    "facility_location_greedy_many",
    "facility_location_objective",
    "fastv_select",
    "grid_match",
    "keep_count",
    "normalize_scores",
    "pairwise_similarity",
    "persistence_weights",
    "protected_mask",
    "query_scores",
    "random_select",
    "recency_budgets",
    "select_top",
    "similarity_to_vector",
    "stage2_removal",
    "temporal_difference",
]
