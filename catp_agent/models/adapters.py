"""One adapter per supported model family: where the image token, the language model and the
decoder layers are. Everything family-specific lives here; the pruning session is generic."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelAdapter:
    """What the pruning session needs to know about one model instance.

    Attributes:
        family: short family name (``qwen2_vl``, ``qwen2_5_vl``, ``llava``, ``llava_next``).
        model: the ``...ForConditionalGeneration`` model.
        language_model: the decoder stack (receives ``inputs_embeds`` with image features in).
        layers: the decoder layers, in order.
        image_token_id: id of the image placeholder token in ``input_ids``.
        text_config: the decoder's config (for the cache).
    """

    family: str
    model: nn.Module
    language_model: nn.Module
    layers: nn.ModuleList
    image_token_id: int
    text_config: object

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def attention(self, layer_idx: int) -> nn.Module:
        """The self-attention module of decoder layer ``layer_idx``."""
        return self.layers[layer_idx].self_attn

    def rotary_fn(self, layer_idx: int) -> Callable:
        """The family's own ``apply_rotary_pos_emb(q, k, cos, sin)``, from the attention's module."""
        module = sys.modules[type(self.attention(layer_idx)).__module__]
        fn = getattr(module, "apply_rotary_pos_emb", None)
        if fn is None:
            raise TypeError(f"{type(self.attention(layer_idx)).__name__} has no apply_rotary_pos_emb in its module")
        return fn

    def vision_features(self, **image_inputs: torch.Tensor) -> list[torch.Tensor]:
        """Projector output per image, as the decoder will see it: a list of (S_i, dim)."""
        out = self.model.model.get_image_features(**image_inputs, return_dict=True)
        pooled = out.pooler_output
        if isinstance(pooled, torch.Tensor):
            if pooled.dim() == 3:
                return list(pooled.unbind(0))
            return [pooled]
        return list(pooled)


def _config_image_token_id(config: object) -> int:
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if value is not None:
            return int(value)
    raise ValueError(f"{type(config).__name__} has no image_token_id")


# class name -> family. Subclasses of these are accepted too.
SUPPORTED_CLASSES: dict[str, str] = {
    "Qwen2VLForConditionalGeneration": "qwen2_vl",
    "Qwen2_5_VLForConditionalGeneration": "qwen2_5_vl",
    "LlavaForConditionalGeneration": "llava",
    "LlavaNextForConditionalGeneration": "llava_next",
}


def adapter_for(model: nn.Module) -> ModelAdapter:
    """The adapter for ``model``; a clear error for anything unsupported."""
    family = None
    for cls in type(model).__mro__:
        if cls.__name__ in SUPPORTED_CLASSES:
            family = SUPPORTED_CLASSES[cls.__name__]
            break
    if family is None:
        raise TypeError(
            f"unsupported model class {type(model).__name__}; catp-agent supports "
            f"{sorted(SUPPORTED_CLASSES)} (load one with AutoModelForImageTextToText.from_pretrained(path))"
        )
    language_model = model.model.language_model
    return ModelAdapter(
        family=family,
        model=model,
        language_model=language_model,
        layers=language_model.layers,
        image_token_id=_config_image_token_id(model.config),
        text_config=model.config.get_text_config(decoder=True),
    )
