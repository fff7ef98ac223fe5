"""What a pruning method is: a frozen config, the layers where it decides, and its decisions.

A method answers two questions for the engine (``catp_agent/engine.py``), which owns the hooks
and really removes what a method drops:

* before the decoder: which patches of each image enter it (:meth:`PruningMethod.before_decoder`);
* after chosen decoder layers: which of the tokens still in the sequence go on
  (:meth:`PruningMethod.decide`, at the layers :meth:`PruningMethod.decisions` names, reading the
  attention rows of the layers :meth:`PruningMethod.attention_layers` names).

Everything here is torch only: a method never sees the model, only tensors. docs/method.md is
the reference for what each built-in method computes.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar

import torch

from catp_agent.pruning.spans import SequenceLayout
from catp_agent.records import ContextCandidates, ContextSignals, ForwardRecord

SignalProvider = Callable[[ContextCandidates], ContextSignals | None]


def check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    """Raise ``ValueError`` naming ``name``, the value and the allowed ones."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


def check_real(name: str, value: object, lo: float, hi: float = math.inf, hi_open: bool = False) -> None:
    """A finite real number (not a bool) in ``[lo, hi]`` (or ``[lo, hi)``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    inside = lo <= value and (value < hi if hi_open else value <= hi)
    if not math.isfinite(value) or not inside:
        bracket = ")" if hi_open or math.isinf(hi) else "]"
        raise ValueError(f"{name} must be in [{lo}, {hi}{bracket} and finite, got {value}")


def check_int(name: str, value: object, lo: int, why: str = "") -> None:
    """An int (not a bool) ``>= lo``; ``why`` is said in parentheses."""
    because = f" ({why})" if why else ""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {lo}{because}, got {value!r} ({type(value).__name__})")
    if value < lo:
        raise ValueError(f"{name} must be an int >= {lo}{because}, got {value}")


def check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")


@dataclass(frozen=True)
class MethodConfig:
    """Fields every method has. A method's own config subclasses this, adds its fields (each
    with a default) and sets the class attribute ``method`` to the method's registered name.

    ratio: R, the fraction of ALL image tokens in the sequence that is removed, in [0, 1).
        0 reproduces the unpruned model exactly.
    seed: seed of any random choice the method makes (``random``, ``recency``).
    """

    method: ClassVar[str] = ""
    ratio: float = 0.778
    seed: int = 0

    def __post_init__(self) -> None:
        check_real("ratio (fraction of image tokens removed)", self.ratio, 0.0, 1.0, hi_open=True)
        check_int("seed", self.seed, 0)

    @property
    def is_identity(self) -> bool:
        """True when nothing can be removed (ratio 0, or a method that never removes)."""
        return self.ratio == 0.0

    @property
    def uses_temporal(self) -> bool:
        """True when stage 2 needs signals from the previous agent step (only CATP's GUI modes)."""
        return False

    def replace(self, **changes: Any) -> MethodConfig:
        """A copy with some fields changed (validated again). ``method=`` switches method,
        keeping the fields the new method also has."""
        method = changes.pop("method", self.method)
        if method == self.method:
            return replace(self, **changes)
        from catp_agent.methods.registry import method_class

        target = method_class(method).config_class
        shared = {f.name: getattr(self, f.name) for f in fields(target) if hasattr(self, f.name)}
        return target(**{**shared, **changes})

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with ``method`` first, for results files."""
        return {"method": self.method, **asdict(self)}


@dataclass
class DecisionInput:
    """What a method sees when it decides after a decoder layer.

    Tensors index the tokens still in the sequence (``n`` of them, in sequence order):
        hidden: (n, dim) hidden states output by the deciding layer.
        image_index: (n,) image of each token (0 = oldest; the last image is the query's), -1 text.
        patch_index: (n,) patch index inside its image, -1 for text.
        positions: (n,) positions in the ORIGINAL sequence.
        rows: layer -> (n,) head-averaged attention of the last prompt token at that layer (the
            layers :meth:`PruningMethod.attention_layers` asked for).
    layout: the sequence layout (image spans, paired text, query positions).
    state: a dict that lives for one prefill, shared by the method's decisions in it.
    record: the forward's :class:`ForwardRecord` (a method may fill its optional fields).
    signals: the agent's temporal signal provider, or None.
    """

    layer: int
    hidden: torch.Tensor
    image_index: torch.Tensor
    patch_index: torch.Tensor
    positions: torch.Tensor
    rows: dict[int, torch.Tensor]
    layout: SequenceLayout
    record: ForwardRecord
    state: dict[str, Any] = field(default_factory=dict)
    signals: SignalProvider | None = None

    def keep_with_text(self, candidates: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        """Sorted indices of every token that is NOT a candidate plus ``candidates[kept]``.

        candidates: (m,) indices of the tokens the decision ranked; kept: indices into them.
        """
        others = torch.ones(self.image_index.numel(), dtype=torch.bool)
        others[candidates] = False
        return torch.cat([others.nonzero().reshape(-1), candidates[kept]]).sort().values


class SelectionCache:
    """Per-image selections kept across forwards, so work is done once per screenshot.

    A history screenshot's stage-1 picks depend only on its features and its paired text, which
    do not change while it stays in the agent's window: the second and later steps find them
    here. Entries are keyed by the exact bytes of every input of the selection
    (:meth:`key`), so a hit returns what recomputing would return. Least recently used entries
    go beyond ``max_entries``. ``hits`` / ``misses`` count lookups.
    """

    def __init__(self, max_entries: int = 64) -> None:
        check_int("max_entries", max_entries, 1)
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(*parts: torch.Tensor | Hashable | None) -> bytes:
        """A digest of tensors (dtype, shape and bytes) and plain values. SHA-256: with the CPU's
        SHA instructions about twice as fast as BLAKE2b on a 5 MB screenshot's features, and the
        agent hashes every screenshot in its window at every step."""
        digest = hashlib.sha256()
        for part in parts:
            if isinstance(part, torch.Tensor):
                t = part.detach().contiguous().cpu()
                digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
                digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
            else:
                digest.update(repr(part).encode())
            digest.update(b"|")
        return digest.digest()

    def get(self, key: bytes) -> torch.Tensor | None:
        value = self._entries.get(key)
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return value

    def put(self, key: bytes, value: torch.Tensor) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def cached_per_image(
    cache: SelectionCache | None,
    keys: list[bytes] | None,
    compute: Callable[[list[int]], list[torch.Tensor]],
    n_images: int,
) -> list[torch.Tensor]:
    """Each image's selection from ``cache`` where its key is there, the others from
    ``compute(indices)`` (which returns their selections in that order) and then stored."""
    if cache is None or keys is None:
        return compute(list(range(n_images)))
    out: list[torch.Tensor | None] = [cache.get(k) for k in keys]
    todo = [i for i, value in enumerate(out) if value is None]
    if todo:
        for i, value in zip(todo, compute(todo)):
            cache.put(keys[i], value)
            out[i] = value
    return out  # type: ignore[return-value]


class PruningMethod:
    """A registered pruning method. Subclass, set ``name`` and ``config_class``, override
    :meth:`before_decoder` and/or :meth:`decisions` + :meth:`decide`, and decorate with
    :func:`catp_agent.methods.register_method`.

    An instance is made per model the method is installed on: ``num_layers`` is the decoder's
    depth. Validate layer choices in ``__init__`` with an error naming the value.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    internal: ClassVar[bool] = False  # True: a tool (the benchmark's replay), not offered to users

    def __init__(self, cfg: MethodConfig, num_layers: int) -> None:
        if not isinstance(cfg, self.config_class):
            raise TypeError(f"method {self.name!r} needs a {self.config_class.__name__}, got {type(cfg).__name__}")
        self.cfg = cfg
        self.num_layers = num_layers
        # Set by the engine when the caller keeps selections across forwards (the agent does).
        self.selection_cache: SelectionCache | None = None

    @property
    def k_layer(self) -> int | None:
        """The decoder layer K the method works at, resolved for this model (None: no K)."""
        return None

    def resolved_config(self) -> dict[str, Any]:
        """The config as it runs on this model (``k_layer`` resolved), for results files."""
        out = self.cfg.to_dict()
        if "k_layer" in out:
            out["k_layer"] = self.k_layer
        return out

    def decisions(self) -> dict[int, str]:
        """Decoder layer index -> name of the decision taken on that layer's output."""
        return {}

    def attention_layers(self) -> tuple[int, ...]:
        """Layers whose last-token attention row the decisions read (``DecisionInput.rows``)."""
        return ()

    def before_decoder(self, layout: SequenceLayout, embeds: torch.Tensor) -> list[torch.Tensor] | None:
        """Patch indices kept per image before the decoder, each sorted, or None for all.

        embeds: (seq, dim) decoder inputs (image features already in place).
        """
        return None

    def decide(self, decision: str, step: DecisionInput) -> torch.Tensor:
        """Sorted indices (into the current tokens) of those that go on. Text tokens must stay."""
        raise NotImplementedError(f"method {self.name!r} named decision {decision!r} but does not implement decide()")


def default_k_layer(num_layers: int) -> int:
    """About 20 % of the decoder depth, at least 1, and leaving layer K+1 a layer after it."""
    if num_layers < 4:
        raise ValueError(f"stage-2 pruning needs a decoder of at least 4 layers, got {num_layers}")
    return min(max(1, round(0.2 * num_layers)), num_layers - 3)


def resolve_k_layer(method: str, k_layer: int | None, num_layers: int, needs_next: bool) -> int:
    """K for this decoder: the configured one, checked, or :func:`default_k_layer`.

    needs_next: the method also decides after layer K+1 (CATP); a layer must follow that
    decision for it to save anything, so K <= num_layers - 3. Otherwise K <= num_layers - 1.
    """
    k = k_layer if k_layer is not None else default_k_layer(num_layers)
    hi = num_layers - 3 if needs_next else num_layers - 1
    if not 1 <= k <= hi:
        raise ValueError(
            f"k_layer must be in [1, {hi}] for method {method!r} on this {num_layers}-layer decoder "
            f"(layer K-1 must exist{' and a layer must follow K+1' if needs_next else ''}), got {k}"
        )
    return k
