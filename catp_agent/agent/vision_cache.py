"""Each screenshot goes through the vision encoder once and is reused while it is in the window.

The model takes the reused features as ``mm_encoder_outputs``, which transformers has since 5.18
(:data:`PRECOMPUTED_FEATURES`). With 5.17 (the oldest supported) :func:`model_image_inputs`
gives the screenshots' processor outputs instead, and the model encodes them again in each
forward: the same result, without the reuse's saving.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import transformers
from packaging.version import Version
from transformers.modeling_outputs import BaseModelOutputWithPooling

from catp_agent.engine import synced_clock
from catp_agent.models.families import family_for


PRECOMPUTED_FEATURES = Version(transformers.__version__).release >= (5, 18)
"""Whether this transformers takes precomputed image features (``mm_encoder_outputs``, 5.18+)."""


def model_image_inputs(features: BaseModelOutputWithPooling, per_image: Sequence[Mapping[str, torch.Tensor]],
                       precomputed: bool = PRECOMPUTED_FEATURES) -> dict[str, Any]:
    """The image inputs of a forward over these screenshots: their reused ``features`` as
    ``mm_encoder_outputs`` (transformers 5.18+), else their vision inputs (``per_image``, each
    ``ModelFamily.vision_inputs``) concatenated along the batch axis, for the model to encode."""
    if precomputed:
        return {"mm_encoder_outputs": {"image": features}}
    return {key: torch.cat([inputs[key] for inputs in per_image]) for key in per_image[0]} if per_image else {}


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

        per_image_inputs[i]: the vision inputs of screenshot i alone (batch of 1), as
        ``ModelFamily.vision_inputs`` selects them from the image processor's output.
        """
        family = family_for(model)
        self.last_encode_s, self.last_saved_s = 0.0, 0.0
        pooled = []
        for sid, image_inputs in zip(screenshot_ids, per_image_inputs):
            entry = self._entries.get(sid)
            if entry is None:
                t0 = synced_clock(model.device)
                with torch.no_grad():
                    feats = family.image_features(model, image_inputs)[0]
                entry = _Entry(feats, family.image_grid(image_inputs, feats.shape[0]), synced_clock(model.device) - t0)
                self._entries[sid] = entry
                self.last_encode_s += entry.encode_s
            else:
                self.last_saved_s += entry.encode_s
            pooled.append(entry.features)
        return BaseModelOutputWithPooling(pooler_output=pooled)

