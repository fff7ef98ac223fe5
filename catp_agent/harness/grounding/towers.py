"""Vision front ends for the grounding probe: each one a transformers vision model that a LLaVA
can carry as its tower, plus the image it is shown.

* ``vit336``: the shipped default model's CLIP tower (its trained weights), screens squashed
  to 336x336, 28 px patches: 12x12 tokens.
* ``vit336-scratch``: the same architecture from random weights.
* ``convnet``: a convolutional front end at the screen's native size, transformers'
  ``FocalNetModel`` with a convolutional stem (a stride-4 convolution, then stages that each
  halve the grid with a stride-2 convolution and mix neighbours with depthwise convolutions):
  16x16 px reach the first stage, and the last stage's tokens are 32 px apart (20x15 on a
  640x480 screen). Every token has seen small patches, while the decoder gets few of them: what
  Qwen2-VL's 2x2 merger does for a ViT, done here by the stages themselves. A LLaVA carries it
  with ``vision_feature_select_strategy="full"`` and a processor with ``patch_size=32`` and no
  additional token.

``features(pixels)`` returns what a LLaVA would give its projector: the last hidden state
(without CLIP's class token), as a (batch, rows, cols, channels) grid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, FocalNetConfig, FocalNetModel

__all__ = ["FRONT_ENDS", "FrontEnd", "build_front_end", "load_front_end"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "assets" / "default_model"


@dataclass
class FrontEnd:
    """A vision tower and the image size it sees (``None``: the screen's own size)."""

    name: str
    model: nn.Module
    input_size: tuple[int, int] | None  # (height, width)
    stride: int  # screen pixels of the seen image per token

    def pixels(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (batch, H, W, 3) -> normalised float (batch, 3, h, w) at ``input_size``."""
        x = frames.permute(0, 3, 1, 2).float().div_(255.0)
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bicubic", antialias=True, align_corners=False).clamp_(0, 1)
        mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(batch, 3, h, w) -> (batch, h // stride, w // stride, channels)."""
        b, _, h, w = pixels.shape
        out = self.model(pixel_values=pixels, output_hidden_states=True)
        hidden = out.hidden_states[-1]
        if isinstance(self.model, CLIPVisionModel):
            hidden = hidden[:, 1:]
        rows, cols = h // self.stride, w // self.stride
        if hidden.shape[1] != rows * cols:
            raise ValueError(f"{self.name}: {hidden.shape[1]} tokens for a {rows}x{cols} grid of a {h}x{w} image")
        return hidden.reshape(b, rows, cols, hidden.shape[-1])

    @property
    def channels(self) -> int:
        config = self.model.config
        return int(getattr(config, "hidden_size", 0) or config.hidden_sizes[-1])


def _convnet_config(widths: tuple[int, ...] = (32, 64, 128, 256), depths: tuple[int, ...] = (1, 1, 2, 1)) -> FocalNetConfig:
    # hidden_size is not a FocalNet field; LLaVA's projector reads it, so it is stored beside.
    return FocalNetConfig(patch_size=4, embed_dim=widths[0], use_conv_embed=True, hidden_sizes=list(widths),
                          depths=list(depths), focal_levels=[2] * len(depths), focal_windows=[3] * len(depths),
                          mlp_ratio=2.0, drop_path_rate=0.0, hidden_size=widths[-1])


def _clip_config(image_size: int = 336, patch_size: int = 28) -> CLIPVisionConfig:
    return CLIPVisionConfig(hidden_size=192, intermediate_size=768, num_hidden_layers=3, num_attention_heads=4,
                            image_size=image_size, patch_size=patch_size, hidden_act="quick_gelu", projection_dim=192)


def _shipped_clip(model_dir: Path = DEFAULT_MODEL) -> CLIPVisionModel:
    """The default model's trained CLIP tower, read from its safetensors (no decoder loaded)."""
    from safetensors.torch import load_file

    config = CLIPVisionConfig(**json.loads((model_dir / "config.json").read_text())["vision_config"])
    tower = CLIPVisionModel(config)
    state = load_file(str(model_dir / "model.safetensors"))
    prefix = next((p for p in ("model.vision_tower.", "vision_tower.") if any(k.startswith(p) for k in state)), None)
    if prefix is None:
        raise ValueError(f"{model_dir}/model.safetensors holds no vision_tower weights")
    own = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    missing, unexpected = tower.load_state_dict(own, strict=False)
    if unexpected or [m for m in missing if "position_ids" not in m]:
        raise ValueError(f"the shipped tower's weights do not fit CLIPVisionModel: missing {missing}, unexpected {unexpected}")
    return tower


FRONT_ENDS = ("vit336", "vit336-scratch", "convnet")


def build_front_end(name: str, seed: int = 0) -> FrontEnd:
    """A front end by name (see the module doc); random weights are drawn with ``seed``."""
    torch.manual_seed(seed)
    if name == "vit336":
        return FrontEnd(name, _shipped_clip(), (336, 336), 28)
    if name == "vit336-scratch":
        return FrontEnd(name, CLIPVisionModel(_clip_config()), (336, 336), 28)
    if name == "convnet":
        return FrontEnd(name, FocalNetModel(_convnet_config()), None, 32)
    raise ValueError(f"unknown front end {name!r}; choose from {', '.join(FRONT_ENDS)}")


def load_front_end(folder: str | Path, name: str = "convnet") -> FrontEnd:
    """A front end saved with ``front.model.save_pretrained(folder)`` (e.g. after glyph pretraining)."""
    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder} holds no saved tower (config.json); pretrain one with "
                                f"`python scripts/grounding_probe.py pretrain --out {folder}`")
    # float32 whatever the stored dtype (a kept tower is stored in float16 to stay small)
    if name.startswith("vit336"):
        return FrontEnd(name, CLIPVisionModel.from_pretrained(folder, dtype=torch.float32), (336, 336), 28)
    return FrontEnd(name, FocalNetModel.from_pretrained(folder, dtype=torch.float32), None, 32)
