"""What one agent step did, typed: the action, the token accounting, the timings.

A :class:`StepReport` is built by :func:`build_step_report` from the pruned forward's
:class:`~catp_agent.records.ForwardRecord` plus what only the policy knows (the model's text,
the vision-encoder timings, the generate wall time, the unpruned reference action, which
screenshot each image of the prompt is). Its :meth:`StepReport.to_dict` is what the evaluation
harness writes into each step record, as is (``kept_map`` aside); :class:`PromptImages` is what
``catp-agent report`` draws the kept tokens of every image from.

>>> StepReport.null_dict()["kept_final"] is None
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only annotations: importing this module does not import torch
    from catp_agent.records import ForwardRecord

__all__ = ["KeptMap", "PromptImages", "StepReport", "build_step_report"]


@dataclass(frozen=True)
class KeptMap:
    """The current screenshot's image tokens that survived pruning, for heatmaps and traces.

    grid: (rows, cols) of its image-token grid. kept: the kept tokens' indices in that grid
    (row-major). patch_pixels: screenshot pixels per token side. screen_size: (height, width).
    """

    grid: tuple[int, int]
    kept: tuple[int, ...]
    patch_pixels: int
    screen_size: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        """``{"grid": [rows, cols], "kept": [...], "patch_pixels": n, "screen_size": [h, w]}``."""
        return {"grid": list(self.grid), "kept": list(self.kept), "patch_pixels": self.patch_pixels,
                "screen_size": list(self.screen_size)}


@dataclass(frozen=True)
class PromptImages:
    """Every image of the prompt, in prompt order: the ICDs (past screenshots, oldest first),
    then the query (the current screenshot).

    screenshot_ids: which screenshot each image is (the history window's ids: the query of the
    step that first showed it). grids: (rows, cols) of each image's token grid. tokens: each
    image's tokens in the prompt (rows * cols for a plain grid). kept: the indices (row-major in
    the grid) of each image's tokens kept after all decoder decisions. kept_stage1: how many of
    each image's tokens entered the decoder (after stage 1).
    """

    screenshot_ids: tuple[int, ...]
    grids: tuple[tuple[int, int], ...]
    tokens: tuple[int, ...]
    kept: tuple[tuple[int, ...], ...]
    kept_stage1: tuple[int, ...]

    def __post_init__(self) -> None:
        names = ("screenshot_ids", "grids", "tokens", "kept", "kept_stage1")
        sizes = {name: len(getattr(self, name)) for name in names}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"PromptImages needs one entry per image in every field, got lengths {sizes}")

    def to_dict(self) -> dict[str, Any]:
        """``{"screenshot_ids": [...], "grids": [[rows, cols], ...], "tokens": [...], "kept": [[...], ...],
        "kept_stage1": [...]}``."""
        return {"screenshot_ids": list(self.screenshot_ids), "grids": [list(g) for g in self.grids],
                "tokens": list(self.tokens), "kept": [list(k) for k in self.kept],
                "kept_stage1": list(self.kept_stage1)}


@dataclass(frozen=True)
class StepReport:
    """One step of a model policy. Times are seconds; token counts are image tokens.

    action: the action string sent to the environment. raw_output: the model's text.
    image_tokens_in / kept_stage1 / kept_final: image tokens in the prompt, entering the decoder
    (after stage 1), and after all decoder decisions. vision_s: vision-encoder time this step
    (new screenshots only); vision_reuse_saved_s: the estimated time reusing cached features
    saved. prefill_s: the pruned prefill; decode_s: the rest of generation; selection_s: time
    spent choosing tokens (stage 1 + stage 2). kv_cache_bytes: the cache after the prefill.
    reference_action: the unpruned model's action on the same input (None unless fidelity is
    measured); action_matches_reference: whether they agree. k_layer: the decoder layer K the
    method used on this model (None for methods without K). kept_map: the current screenshot's
    kept tokens. prompt_images: the kept tokens of every image of the prompt (ICDs and query)
    and which screenshot each is; None when the policy does not say.
    """

    action: str
    raw_output: str
    image_tokens_in: int
    kept_stage1: int
    kept_final: int
    vision_s: float
    vision_reuse_saved_s: float
    prefill_s: float
    decode_s: float
    selection_s: float
    kv_cache_bytes: int
    reference_action: str | None
    action_matches_reference: bool | None
    k_layer: int | None
    kept_map: KeptMap | None
    prompt_images: PromptImages | None = None
    pointer_token: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (``kept_map`` and ``prompt_images`` as their ``to_dict()``)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["kept_map"] = None if self.kept_map is None else self.kept_map.to_dict()
        out["prompt_images"] = None if self.prompt_images is None else self.prompt_images.to_dict()
        return out

    @classmethod
    def null_dict(cls) -> dict[str, None]:
        """The keys of :meth:`to_dict`, all None: the record of a policy that reports nothing."""
        return {f.name: None for f in fields(cls)}


def build_step_report(record: ForwardRecord, *, action: str, raw_output: str, generate_s: float,
                      vision_s: float, vision_reuse_saved_s: float, grid: tuple[int, int],
                      screen_size: tuple[int, int], reference_action: str | None = None,
                      grids: Sequence[tuple[int, int]] | None = None,
                      screenshot_ids: Sequence[int] | None = None, pointer_token: int | None = None) -> StepReport:
    """The report of a step whose pruned prefill is ``record``.

    generate_s: wall time of the whole ``generate`` call (decode_s is what the prefill leaves of
    it). grid: (rows, cols) token grid of the current screenshot, the last image of the prompt.
    screen_size: the screenshot's (height, width). reference_action: the unpruned action, if run.
    grids, screenshot_ids: per image of the prompt (prompt order), its token grid and which
    screenshot it is; given both, the report carries :class:`PromptImages`.
    """
    prefill_s = record.timings.get("prefill_s", 0.0)
    kept_map = None
    if record.kept_final:
        height, width = (int(v) for v in screen_size)
        rows, cols = (int(v) for v in grid)
        kept_map = KeptMap(grid=(rows, cols), kept=tuple(int(p) for p in record.kept_final[-1]),
                           patch_pixels=max(1, int(round(width / max(1, cols)))), screen_size=(height, width))
    prompt_images = None
    if grids is not None and screenshot_ids is not None and record.kept_final:
        prompt_images = PromptImages(
            screenshot_ids=tuple(int(i) for i in screenshot_ids),
            grids=tuple((int(r), int(c)) for r, c in grids),
            tokens=tuple(int(end - start) for start, end in record.image_spans),
            kept=tuple(tuple(int(p) for p in kept) for kept in record.kept_final),
            kept_stage1=tuple(int(k.numel()) for k in record.kept_stage1) if record.kept_stage1
            else tuple(len(k) for k in record.kept_final))
    return StepReport(
        action=action,
        raw_output=raw_output,
        image_tokens_in=record.n_image_tokens,
        kept_stage1=record.n_kept_stage1,
        kept_final=record.n_kept_final,
        vision_s=float(vision_s),
        vision_reuse_saved_s=float(vision_reuse_saved_s),
        prefill_s=prefill_s,
        decode_s=max(0.0, generate_s - prefill_s),
        selection_s=record.timings.get("stage1_s", 0.0) + record.timings.get("stage2_s", 0.0),
        kv_cache_bytes=record.kv_cache_bytes,
        reference_action=reference_action,
        action_matches_reference=None if reference_action is None else reference_action == action,
        k_layer=record.k_layer,
        kept_map=kept_map,
        prompt_images=prompt_images,
        pointer_token=pointer_token,
    )
