"""A KV cache that really holds fewer tokens but keeps the sequence's logical length.

``generate()`` decides what to feed next from ``cache.get_seq_length()`` and the models derive
decoding position ids from it, so it must report the ORIGINAL length (tokens seen), while the
masks must be sized to what is physically stored. Each layer knows how many tokens were removed
before they reached it.

transformers 5.24 renamed the cache argument of every forward, and the cache field of every model
output, from ``past_key_values`` to ``cache``. The old argument name is still accepted with a
deprecation warning, but where a caller passes both, the new one wins and the old one is ignored,
so a hook that sets ``past_key_values`` next to the ``cache=`` its caller passed is silently
dropped. The helpers below read whichever name is present and write the name the module's
``forward`` declares, so the engine behaves the same on 5.17 through 5.25.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

from torch import nn
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

CACHE_NAMES = ("cache", "past_key_values")  # transformers >= 5.24 first, then the older name


class PrunedCacheLayer(DynamicLayer):
    """A dynamic layer that stores only kept tokens; ``removed`` counts the others."""

    def __init__(self, removed: int = 0) -> None:
        super().__init__()
        self.removed = removed

    def get_seq_length(self) -> int:
        """Logical length: tokens this layer has seen, stored or removed."""
        return super().get_seq_length() + self.removed

    def physical_length(self) -> int:
        """Tokens actually stored."""
        return super().get_seq_length()

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.physical_length() + query_length, 0


class PrunedCache(DynamicCache):
    """A ``DynamicCache`` of :class:`PrunedCacheLayer`, one per decoder layer."""

    def __init__(self, num_layers: int, removed_before_decoder: int) -> None:
        super().__init__()
        self.layers = [PrunedCacheLayer(removed_before_decoder) for _ in range(num_layers)]
        self.layer_class_to_replicate = None

    def set_removed(self, first_layer: int, removed: int) -> None:
        """Layers ``first_layer`` and later have ``removed`` tokens removed in all."""
        for layer in self.layers[first_layer:]:
            layer.removed = removed


def cache_argument(module: nn.Module) -> str:
    """The name under which ``module.forward`` takes the KV cache: ``"cache"`` (transformers
    >= 5.24) or ``"past_key_values"`` (older); a TypeError if it declares neither."""
    params = inspect.signature(module.forward).parameters
    for name in CACHE_NAMES:
        if name in params:
            return name
    raise TypeError(
        f"{type(module).__name__}.forward takes no KV cache argument (none of {list(CACHE_NAMES)} in its "
        "signature): pruning needs a decoder that accepts a Cache"
    )


def passed_cache(kwargs: Mapping[str, object]) -> Cache | None:
    """The cache a forward call was given, under either name (None if none was)."""
    for name in CACHE_NAMES:
        if kwargs.get(name) is not None:
            return kwargs[name]  # type: ignore[return-value]
    return None


def set_cache(kwargs: dict[str, object], name: str, cache: Cache) -> None:
    """Pass ``cache`` as argument ``name`` (see :func:`cache_argument`), dropping the other name so
    that the forward cannot prefer the cache its caller passed over ours."""
    for other in CACHE_NAMES:
        kwargs.pop(other, None)
    kwargs[name] = cache


def output_cache(output: object) -> Cache | None:
    """The cache a model or ``generate()`` output carries, under either field name (None if none)."""
    if isinstance(output, Mapping):  # ModelOutput; its keys are the fields that are set
        for name in CACHE_NAMES:
            if name in output.keys():
                return output[name]
    return None


def cache_nbytes(cache: object) -> int:
    """Bytes held by keys and values of any transformers cache (0 for None)."""
    if cache is None:
        return 0
    total = 0
    for layer in getattr(cache, "layers", []):
        if getattr(layer, "is_initialized", False):
            total += layer.keys.numel() * layer.keys.element_size()
            total += layer.values.numel() * layer.values.element_size()
    return total
