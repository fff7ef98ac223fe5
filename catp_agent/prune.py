"""The public entry point: ``with prune(model, cfg) as handle: model.generate(...)``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from catp_agent.config import PruningConfig
from catp_agent.session import PruningHandle


@contextmanager
def prune(model: nn.Module, cfg: PruningConfig) -> Iterator[PruningHandle]:
    """Prune image tokens of ``model`` inside the block; leaving it restores the model exactly.

    >>> cfg = PruningConfig(method="catp", ratio=0.778, k_layer=6)
    >>> with prune(model, cfg) as handle:            # doctest: +SKIP
    ...     out = model.generate(**inputs, max_new_tokens=8)
    >>> handle.last.summary()                        # doctest: +SKIP
    """
    handle = PruningHandle(model, cfg)
    try:
        yield handle
    finally:
        handle.remove()
