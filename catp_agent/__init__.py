"""catp-agent: Contextually Adaptive Token Pruning (CATP) for vision-language GUI agents.

    from catp_agent import PruningConfig, prune
    cfg = PruningConfig(method="catp", ratio=0.778, k_layer=6)
    with prune(model, cfg) as handle:
        out = model.generate(**inputs, max_new_tokens=8)
    handle.last.summary()
"""

from catp_agent.config import METHODS, PruningConfig
from catp_agent.prune import prune
from catp_agent.records import ContextCandidates, ContextSignals, ForwardRecord
from catp_agent.session import PruningHandle, attach

__all__ = [
    "METHODS",
    "ContextCandidates",
    "ContextSignals",
    "ForwardRecord",
    "PruningConfig",
    "PruningHandle",
    "attach",
    "prune",
]
__version__ = "0.1.0"
