"""Loading the agent's model: a local checkpoint, a model object, or the bundled default.

Only PIL image processors are used (torchvision must not be installed, see README).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from catp_agent.models.adapters import adapter_for

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "default_model"


@dataclass
class AgentModel:
    """A VLM with what it takes to feed it: tokenizer (with chat template) and image processor."""

    model: nn.Module
    tokenizer: Any
    image_processor: Any
    family: str
    source: str  # path, "object" or "tiny-random"

    @property
    def image_token(self) -> str:
        return self.tokenizer.convert_ids_to_tokens(adapter_for(self.model).image_token_id)


def _image_processor_for(family: str, path: str | None = None, **kwargs: Any) -> Any:
    from transformers import CLIPImageProcessorPil, LlavaNextImageProcessorPil, Qwen2VLImageProcessorPil

    cls = {"qwen2_vl": Qwen2VLImageProcessorPil, "qwen2_5_vl": Qwen2VLImageProcessorPil,
           "llava": CLIPImageProcessorPil, "llava_next": LlavaNextImageProcessorPil}[family]
    return cls.from_pretrained(path) if path is not None else cls(**kwargs)


def load_agent_model(model: str | Path | nn.Module | None = None, tokenizer: Any = None,
                     image_processor: Any = None, dtype: torch.dtype = torch.float32) -> AgentModel:
    """``model``: a checkpoint folder (``from_pretrained``), a model object (then pass its
    ``tokenizer`` and ``image_processor``), or None for the bundled default model (a tiny
    random-weight Qwen2-VL when no trained default ships with this copy)."""
    if isinstance(model, nn.Module):
        family = adapter_for(model).family
        if tokenizer is None:
            raise ValueError("a model object needs its tokenizer too: load_agent_model(model, tokenizer=..., image_processor=...)")
        return AgentModel(model.eval(), tokenizer, image_processor or _image_processor_for(family), family, "object")
    if model is None:
        if (DEFAULT_MODEL_DIR / "config.json").exists():
            model = DEFAULT_MODEL_DIR
        else:
            from catp_agent.models.tiny import build_tiny_model

            print("catp-agent: no trained default model in this copy; using a tiny RANDOM-weight Qwen2-VL "
                  "(it will not solve tasks). Pass --model PATH for a real checkpoint.", file=sys.stderr)
            net, tok = build_tiny_model("qwen2_vl", seed=0, hidden_size=128, num_layers=8, num_heads=4, num_kv_heads=2)
            return AgentModel(net, tok, _image_processor_for("qwen2_vl"), "qwen2_vl", "tiny-random")
    path = Path(model)
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"no model checkpoint at {str(path)!r} (expected a folder with config.json, as saved by save_pretrained); "
            "weights cannot be downloaded here: pass a local folder"
        )
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    net = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
    family = adapter_for(net).family
    tok = AutoTokenizer.from_pretrained(path)
    if tok.chat_template is None:
        from catp_agent.models.tiny import LLAVA_TEMPLATE, QWEN_TEMPLATE

        tok.chat_template = QWEN_TEMPLATE if family.startswith("qwen") else LLAVA_TEMPLATE
    return AgentModel(net.eval(), tok, image_processor or _image_processor_for(family, str(path)), family, str(path))
