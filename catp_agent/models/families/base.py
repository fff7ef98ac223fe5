"""What a model family is: everything that differs between VLM families, in one frozen object.

A :class:`ModelFamily` says which transformers classes it covers, where their decoder layers
and attention modules are, which special tokens and chat template its checkpoints use, which
processor outputs its vision tower takes, how an image's token grid is read, which extra
inputs its forward needs, and how to build a tiny random-weight config and processor of it
for tests. The generic defaults here fit every family whose model keeps the decoder at
``model.model.language_model`` (all four built-ins); a family overrides only what differs.

Nothing heavy is imported here: model, config and processor classes are named by entry point
(``"transformers:LlavaForConditionalGeneration"``) and imported on first use.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


def load_entry_point(entry_point: str) -> Any:
    """The object an entry point ``"package.module:Name"`` names (imported now)."""
    module_name, _, attr = entry_point.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImportError(f"module {module_name!r} has no {attr!r} (entry point {entry_point!r})") from None


def _check_entry_point(field: str, value: str) -> None:
    module_name, colon, attr = value.partition(":") if isinstance(value, str) else ("", "", "")
    if not (colon and module_name and attr.isidentifier()):
        raise ValueError(f"{field} must be an entry point 'package.module:ClassName', got {value!r}")


@dataclass(frozen=True)
class SpecialTokens:
    """A family's special tokens, as its checkpoints' tokenizers define them.

    vocab: every special token, in the order a tiny tokenizer puts them first in its vocabulary.
    image: the placeholder standing for one image token in ``input_ids``.
    eos / pad / unk / bos: the tokenizer roles (``bos`` None where the family has none).
    additional: the tokens registered as additional special tokens.
    """

    vocab: tuple[str, ...]
    image: str
    eos: str
    pad: str
    unk: str
    bos: str | None = None
    additional: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        used = [self.image, self.eos, self.pad, self.unk, *self.additional] + ([self.bos] if self.bos else [])
        missing = [t for t in used if t not in self.vocab]
        if missing:
            raise ValueError(f"special tokens {missing} are not in vocab {list(self.vocab)}: add them to vocab")

    def tokenizer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``PreTrainedTokenizerFast`` that set these roles."""
        kwargs: dict[str, Any] = dict(eos_token=self.eos, pad_token=self.pad, unk_token=self.unk,
                                      additional_special_tokens=list(self.additional))
        if self.bos is not None:
            kwargs["bos_token"] = self.bos
        return kwargs


@dataclass(frozen=True)
class TinySizes:
    """Sizes of a tiny random-weight model (``ModelFamily.tiny_config``). ``image_size`` is the
    square input side of families with a fixed-resolution vision tower (LLaVA); dynamic
    resolution families (Qwen2-VL) ignore it."""

    hidden_size: int = 64
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int | None = None
    vision_hidden: int = 32
    vision_depth: int = 1
    image_size: int = 56

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size", "vision_hidden",
                     "vision_depth", "image_size"):
            value = getattr(self, name)
            if name == "intermediate_size" and value is None:
                continue  # 2 * hidden_size
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads}) "
                f"and num_heads by num_kv_heads ({self.num_kv_heads})"
            )

    def text_config(self, tokenizer: Any) -> dict[str, Any]:
        """The decoder part of a tiny config; vocabulary and special ids from ``tokenizer``."""
        return dict(
            vocab_size=len(tokenizer),
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size or 2 * self.hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            max_position_embeddings=4096,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )


@dataclass(frozen=True)
class ModelFamily:
    """Everything family-specific about one VLM family. Register one with ``register_family``.

    name: registry key (``"llava"``). title: display name (``"LLaVA-1.5"``).
    model_class / config_class / image_processor_class: entry points, imported on first use.
    tokens: the special tokens; ``tokens.image`` marks image tokens in ``input_ids``.
    chat_template: used when a checkpoint ships none (and by tiny tokenizers).
    vision_input_keys: the processor outputs the vision tower takes, all required.
    also_covers: more transformers class names (besides ``model_class``'s) with this layout.
    """

    name: str
    title: str
    model_class: str
    config_class: str
    image_processor_class: str
    tokens: SpecialTokens
    chat_template: str
    vision_input_keys: tuple[str, ...] = ("pixel_values",)
    also_covers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not (isinstance(self.name, str) and self.name.isidentifier()):
            raise ValueError(f"family name must be an identifier like 'llava_next', got {self.name!r}")
        for field in ("model_class", "config_class", "image_processor_class"):
            _check_entry_point(field, getattr(self, field))
        if "pixel_values" not in self.vision_input_keys:
            raise ValueError(f"vision_input_keys must include 'pixel_values', got {self.vision_input_keys}")

    # ------------------------------------------------------------------ classes
    @property
    def class_names(self) -> tuple[str, ...]:
        """The transformers class names this family covers (subclasses are covered too)."""
        return (self.model_class.rpartition(":")[2], *self.also_covers)

    def load_model_class(self) -> type[nn.Module]:
        return load_entry_point(self.model_class)

    def load_image_processor(self, path: str | None = None, **kwargs: Any) -> Any:
        """The family's PIL image processor: ``from_pretrained(path)``, or built from ``kwargs``."""
        cls = load_entry_point(self.image_processor_class)
        return cls.from_pretrained(path) if path is not None else cls(**kwargs)

    # ------------------------------------------------------------------ where things are
    def language_model(self, model: nn.Module) -> nn.Module:
        """The decoder stack of ``model`` (it receives ``inputs_embeds`` with the image features in)."""
        return model.model.language_model

    def decoder_layers(self, language_model: nn.Module) -> nn.ModuleList:
        """The decoder layers of the stack, in order."""
        return language_model.layers

    def attention(self, layer: nn.Module) -> nn.Module:
        """The self-attention module of one decoder layer."""
        return layer.self_attn

    def rotary_fn(self, attention: nn.Module) -> Callable:
        """The family's own ``apply_rotary_pos_emb(q, k, cos, sin)``, from the attention's module."""
        fn = getattr(sys.modules[type(attention).__module__], "apply_rotary_pos_emb", None)
        if fn is None:
            raise TypeError(f"{type(attention).__name__} has no apply_rotary_pos_emb in its module; "
                            f"override rotary_fn in the {self.name!r} family")
        return fn

    def image_token_id(self, config: Any) -> int:
        """Id of the image placeholder token, from the model's config."""
        for name in ("image_token_id", "image_token_index"):
            value = getattr(config, name, None)
            if value is not None:
                return int(value)
        raise ValueError(f"{type(config).__name__} has neither image_token_id nor image_token_index; "
                         f"override image_token_id in the {self.name!r} family")

    def text_config(self, config: Any) -> Any:
        """The decoder's config (for the cache)."""
        return config.get_text_config(decoder=True)

    # ------------------------------------------------------------------ images
    def vision_inputs(self, processor_output: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """The image processor outputs the vision tower takes (``vision_input_keys``), nothing else."""
        missing = [k for k in self.vision_input_keys if k not in processor_output]
        if missing:
            raise ValueError(f"{self.title} needs processor outputs {list(self.vision_input_keys)}; {missing} missing "
                           f"from {sorted(processor_output)}: use the {self.image_processor_class} image processor")
        return {k: processor_output[k] for k in self.vision_input_keys}

    def image_features(self, model: nn.Module, vision_inputs: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        """Projector output per image, as the decoder will see it: a list of (S_i, dim)."""
        pooled = model.model.get_image_features(**vision_inputs, return_dict=True).pooler_output
        if isinstance(pooled, torch.Tensor):
            return list(pooled.unbind(0)) if pooled.dim() == 3 else [pooled]
        return list(pooled)

    def image_grid(self, image_inputs: Mapping[str, torch.Tensor], n_tokens: int) -> tuple[int, int]:
        """(rows, cols) of one image's token grid. Default: a fixed-resolution tower's grid. When
        the image's ``pixel_values`` (..., H, W) split into ``n_tokens`` square cells of a whole
        number of pixels, the grid is (H / side, W / side): a 640x480 screen in 32 px tokens is
        15x20, a 336x336 one in 28 px patches 12x12. Otherwise the factorisation nearest a square
        (rows = round(sqrt(n)) when that divides n); any other count (tiles with newline tokens)
        gives one row."""
        pixels = image_inputs.get("pixel_values")
        if isinstance(pixels, torch.Tensor) and pixels.dim() == 4 and n_tokens > 0:  # (images, C, H, W); not tiles
            h, w = int(pixels.shape[-2]), int(pixels.shape[-1])
            side = int(round((h * w / n_tokens) ** 0.5))
            if side and h % side == 0 and w % side == 0 and (h // side) * (w // side) == n_tokens:
                return h // side, w // side
        rows = int(round(n_tokens**0.5))
        return (rows, n_tokens // rows) if rows and rows * (n_tokens // rows) == n_tokens else (1, n_tokens)

    def extra_inputs(self, input_ids: torch.Tensor, per_image_inputs: Sequence[Mapping[str, torch.Tensor]],
                     image_token_id: int) -> dict[str, torch.Tensor]:
        """Inputs besides ``input_ids``, ``attention_mask`` and the image features that the forward
        needs when the features are passed precomputed. input_ids: (1, seq);
        per_image_inputs: ``vision_inputs`` of each image in prompt order. Default: none."""
        return {}

    # ------------------------------------------------------------------ tiny models (tests, bench)
    def tiny_config(self, tokenizer: Any, **sizes: int | None) -> Any:
        """A config of this family with small sizes (``TinySizes`` fields) around ``tokenizer``."""
        return self._tiny_config(tokenizer, TinySizes(**sizes))

    def _tiny_config(self, tokenizer: Any, sizes: TinySizes) -> Any:
        raise NotImplementedError(f"the {self.name!r} family does not define _tiny_config")

    def tiny_processor(self, tokenizer: Any, image_size: int = 56, min_pixels: int | None = None,
                       max_pixels: int | None = None) -> Any:
        """A processor (``apply_chat_template`` and ``__call__(images=, text=)``) around ``tokenizer``
        with PIL image processors only. ``image_size``: square side of fixed-resolution towers;
        ``min_pixels`` / ``max_pixels``: the resize bounds of dynamic-resolution ones."""
        raise NotImplementedError(f"the {self.name!r} family does not define tiny_processor")
