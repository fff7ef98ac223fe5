"""Each screenshot goes through the vision encoder once and is reused while it is in the window."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

# Per-image processor outputs that the vision encoder consumes, by family.
IMAGE_KEYS = ("pixel_values", "image_grid_thw", "image_sizes")


@dataclass
class _Entry:
    features: torch.Tensor  # (S, dim) projector output of one screenshot
    grid: tuple[int, int]  # (rows, cols) of its token grid
    encode_s: float  # what encoding it cost


class VisionFeatureCache:
    """Projector outputs per screenshot id. ``features(...)`` encodes only what is missing.

    ``saved_s`` of the last call is the encoding time that reuse avoided (the recorded cost of
    the screenshots served from the cache).
    """

    def __init__(self) -> None:
        self._entries: dict[int, _Entry] = {}
        self.last_encode_s = 0.0
        self.last_saved_s = 0.0

    def clear(self) -> None:
        self._entries.clear()

    def keep_only(self, ids: list[int]) -> None:
        """Drop screenshots that left the window."""
        for key in [k for k in self._entries if k not in ids]:
            del self._entries[key]

    def grid(self, screenshot_id: int) -> tuple[int, int]:
        return self._entries[screenshot_id].grid

    def features(self, model: torch.nn.Module, screenshot_ids: list[int], per_image_inputs: list[dict]) -> BaseModelOutputWithPooling:
        """Features of every screenshot in prompt order, as ``mm_encoder_outputs["image"]``.

        per_image_inputs[i]: the processor's image tensors for screenshot i alone (batch of 1).
        """
        self.last_encode_s, self.last_saved_s = 0.0, 0.0
        pooled = []
        for sid, image_inputs in zip(screenshot_ids, per_image_inputs):
            entry = self._entries.get(sid)
            if entry is None:
                t0 = time.perf_counter()
                with torch.no_grad():
                    out = model.model.get_image_features(**image_inputs, return_dict=True)
                feats = out.pooler_output[0] if isinstance(out.pooler_output, (list, tuple)) else out.pooler_output[0]
                entry = _Entry(feats, image_grid(image_inputs, feats.shape[0]), time.perf_counter() - t0)
                self._entries[sid] = entry
                self.last_encode_s += entry.encode_s
            else:
                self.last_saved_s += entry.encode_s
            pooled.append(entry.features)
        return BaseModelOutputWithPooling(pooler_output=pooled)


def image_grid(image_inputs: dict, n_tokens: int, merge: int = 2) -> tuple[int, int]:
    """(rows, cols) of an image's token grid: Qwen2-VL from ``image_grid_thw`` divided by the
    spatial merge size (2 in every released Qwen2-VL / Qwen2.5-VL), otherwise the nearest
    square (LLaVA's fixed grid; LLaVA-NeXT's tiles give no single grid: one row)."""
    thw = image_inputs.get("image_grid_thw")
    if thw is not None:
        _, h, w = (int(v) for v in thw.reshape(-1, 3)[0])
        return h // merge, w // merge
    side = int(round(n_tokens**0.5))
    return (side, n_tokens // side) if side * (n_tokens // side) == n_tokens else (1, n_tokens)
