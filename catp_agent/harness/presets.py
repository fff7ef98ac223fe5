"""Benchmark models at a real model's shape, with random weights and a small tokenizer.

A preset is the published configuration of a model that GUI agents run on (the decoder, the
vision tower with its window attention, the projector's output width), built offline with
random weights: the prefill, the KV cache and the selection then cost what they cost on the
real model, which is what a latency benchmark needs (what the model answers does not matter).
The vocabulary is the character-level test tokenizer's (``catp_agent.models.tiny``), so the
embedding and LM head are small: about 1 GB less than the real model in bf16.

``scale="full"`` is the published shape (7.2 B parameters here, 8.3 B with the real 152k-token
vocabulary; 13.4 GiB of bf16 weights) and needs a CUDA device; ``scale="tiny"`` keeps the structure (GQA ratio,
head width of the text model, M-RoPE sections, windowed vision blocks with full-attention ones
between) at widths a CPU runs in seconds, to test the preset's path.

    model, tokenizer = build_preset_model("qwen2.5-vl-7b", "full", device="cuda", dtype=torch.bfloat16)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

SCALES = ("full", "tiny")


@dataclass(frozen=True)
class ModelPreset:
    """A published configuration: decoder and vision-tower sizes of ``family``."""

    name: str
    family: str
    source: str  # where the numbers come from
    text: dict[str, int]  # hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size
    vision: dict[str, Any]  # the vision config's own keys (depth, hidden_size, ...)
    tiny_text: dict[str, int]
    tiny_vision: dict[str, Any]
    rope_theta: float = 1_000_000.0
    max_positions: int = 128_000

    def sizes(self, scale: str) -> tuple[dict[str, int], dict[str, Any]]:
        if scale not in SCALES:
            raise ValueError(f"preset scale must be one of {list(SCALES)}, got {scale!r}")
        return (self.text, self.vision) if scale == "full" else (self.tiny_text, self.tiny_vision)


QWEN2_5_VL_7B = ModelPreset(
    name="qwen2.5-vl-7b",
    family="qwen2_5_vl",
    source="config.json of Qwen/Qwen2.5-VL-7B-Instruct (UI-TARS-1.5-7B has the same shape)",
    text=dict(hidden_size=3584, num_layers=28, num_heads=28, num_kv_heads=4, intermediate_size=18944),
    vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                fullatt_block_indexes=[7, 15, 23, 31], window_size=112, patch_size=14, spatial_merge_size=2,
                temporal_patch_size=2, in_channels=3, hidden_act="silu"),
    tiny_text=dict(hidden_size=224, num_layers=4, num_heads=7, num_kv_heads=1, intermediate_size=1184),
    tiny_vision=dict(depth=4, hidden_size=128, intermediate_size=256, num_heads=4, out_hidden_size=224,
                     fullatt_block_indexes=[1, 3], window_size=112, patch_size=14, spatial_merge_size=2,
                     temporal_patch_size=2, in_channels=3, hidden_act="silu"),
)

PRESETS: dict[str, ModelPreset] = {QWEN2_5_VL_7B.name: QWEN2_5_VL_7B}


def get_preset(name: str) -> ModelPreset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]


def check_preset_device(name: str, scale: str, device: str) -> None:
    """Refuse, in one line, a full-scale preset anywhere but on a CUDA device that is there."""
    get_preset(name).sizes(scale)
    kind = torch.device(device).type
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch {torch.__version__} sees no CUDA device here")
    if scale == "full" and kind != "cuda":
        raise ValueError(f"preset {name!r} at full scale needs a CUDA device (13.4 GiB of bf16 weights), got "
                         f"device {device!r}: pass --device cuda on a GPU machine, or --preset-scale tiny to run "
                         "its structure at small widths here")


def preset_config(name: str, scale: str, tokenizer: Any) -> Any:
    """The transformers config of preset ``name`` at ``scale``, vocabulary from ``tokenizer``."""
    from catp_agent.models.families import get_family

    preset = get_preset(name)
    text, vision = preset.sizes(scale)
    spec = get_family(preset.family)
    config = spec.tiny_config(tokenizer, vision_hidden=vision["hidden_size"], vision_depth=vision["depth"], **text)
    for key, value in vision.items():  # the tiny config's vision tower, reshaped to the preset's
        setattr(config.vision_config, key, value)
    text_config = config.get_text_config()
    text_config.max_position_embeddings = preset.max_positions
    text_config.rope_parameters = {**text_config.rope_parameters, "rope_theta": preset.rope_theta}
    return config


def build_preset_model(name: str, scale: str = "full", device: str = "cuda",
                       dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> tuple[torch.nn.Module, Any]:
    """(model, tokenizer): preset ``name`` with random weights, created directly on ``device``
    in ``dtype`` (a 7B model is never materialised on the host), SDPA attention, eval mode."""
    from catp_agent.models.families import get_family
    from catp_agent.models.tiny import build_tokenizer

    check_preset_device(name, scale, device)
    preset = get_preset(name)
    tokenizer = build_tokenizer(preset.family)
    config = preset_config(name, scale, tokenizer)
    torch.manual_seed(seed)
    with torch.device(device):
        model = get_family(preset.family).load_model_class()._from_config(config, attn_implementation="sdpa", dtype=dtype)
    return model.eval(), tokenizer


def preset_summary(model: torch.nn.Module) -> dict[str, Any]:
    """The shape that was built, read back from the model (for the benchmark's JSON); keys a
    family's config lacks (Qwen2-VL's tower has no window) are None."""
    text = model.config.get_text_config()
    vision = model.config.vision_config
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "text": {k: getattr(text, k, None) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                                "num_key_value_heads", "intermediate_size", "vocab_size")},
        "vision": {k: getattr(vision, k, None) for k in ("depth", "hidden_size", "intermediate_size", "num_heads",
                                                    "out_hidden_size", "fullatt_block_indexes", "window_size")},
    }
