"""A vision-language model as a web agent, with image-token pruning.

Each step: the current screenshot joins the history window; the prompt holds the last W
screenshots with their actions (in-context demonstrations) and the current one with the task
(the query); the model generates greedily under the configured pruning; the first action call
in its text is the action. Output that is not an action is passed on as is and the
environment reports it invalid: the policy never crashes on model output.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from PIL import Image

from catp_agent.engine import prune, synced_clock
from catp_agent.methods import MethodConfig, PruningConfig, SelectionCache
from catp_agent.agent import HistoryWindow, TemporalSignals, VisionFeatureCache
from catp_agent.agent.dialects import Dialect, Frame, default_dialect, get_dialect
from catp_agent.agent.model_io import AgentModel, load_agent_model
from catp_agent.agent.vision_cache import model_image_inputs
from catp_agent.agent.pointer import POINTER_ACTIONS, patch_point
from catp_agent.agent.report import StepReport, build_step_report
from catp_agent.models.families import adapter_for
from catp_agent.pruning.spans import expand_image_tokens
from envs.actions import Action, ActionParseError, format_action, parse_action
from envs.actions import action_help as envs_action_help
from policies.base import register_policy

UNPRUNED = PruningConfig(method="none", ratio=0.0)


@register_policy("vlm")
class VLMPolicy:
    """model: checkpoint path, model object (with ``tokenizer=`` and ``image_processor=``), an
    :class:`AgentModel`, or None (bundled default). pruning: its config, ``PruningConfig(method=...)``.
    history: W, past screenshots in the prompt. fidelity: also run the unpruned model on the
    same input each step and report whether the actions agree (doubles the cost).
    action_help: put the env's action primitives (``envs.actions.action_help()``) in the query
    (off by default: the shipped model was trained without it). reuse_selections: keep each
    screenshot's stage-1 selection across the steps it stays in the window (same picks as
    recomputing, tested; off only to measure what it saves). min_new_tokens: generate at least
    this many tokens (benchmarks use it so every method decodes the same length).
    dialect: the action dialect (``catp_agent.agent.dialects``: prompt, history layout, output
    grammar, coordinates); None: the loaded model's, else the default for its type. device,
    dtype, attn: how a checkpoint is loaded (``load_agent_model``). CATP pairs each screenshot
    with the text the dialect puts next to it (``Dialect.paired_text``) unless the config sets
    ``paired_text`` to something other than its default. A pointer head saved beside the
    checkpoint (``catp_agent.agent.pointer``) gives the (x, y) of every click the model writes,
    chosen among the current screenshot's tokens that pruning kept; ``pointer=False`` runs the
    model without it (its clicks are its own coordinates)."""

    name = "vlm"

    def __init__(self, model: Any = None, pruning: MethodConfig = UNPRUNED, history: int = 3,
                 max_new_tokens: int = 24, fidelity: bool = False, tokenizer: Any = None,
                 image_processor: Any = None, seed: int = 0, action_help: bool = False,
                 reuse_selections: bool = True, min_new_tokens: int = 0, dialect: str | Dialect | None = None,
                 device: str = "auto", dtype: str | torch.dtype = "auto", attn: str = "sdpa", pointer: bool = True,
                 **_: Any) -> None:
        if not isinstance(pruning, MethodConfig):
            raise TypeError(f"pruning must be a pruning config (PruningConfig(method=...)), got {type(pruning).__name__}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.agent = (model if isinstance(model, AgentModel)
                      else load_agent_model(model, tokenizer, image_processor, dtype=dtype, device=device, attn=attn,
                                            pointer_head=pointer))
        if not pointer and self.agent.pointer is not None:  # a shared AgentModel stays as it is
            self.agent = dataclasses.replace(self.agent, pointer=None)
        self.dialect = get_dialect(dialect or self.agent.dialect
                                   or default_dialect(str(getattr(self.agent.model.config, "model_type", "")),
                                                      self.agent.source))
        pruning = _with_paired_text(pruning, self.dialect.paired_text)
        self.pruning = pruning
        self.max_new_tokens = max_new_tokens
        if not 0 <= min_new_tokens <= max_new_tokens:
            raise ValueError(f"min_new_tokens must be in [0, max_new_tokens={max_new_tokens}], got {min_new_tokens}")
        self.min_new_tokens = min_new_tokens
        self.fidelity = fidelity and not pruning.is_identity
        self.seed = seed
        self.action_help = envs_action_help() if action_help else ""
        self.window = HistoryWindow(history)
        self.vision = VisionFeatureCache()
        # stage-1 picks of history screenshots are made once, at their first step as a history image
        self.selections = SelectionCache(max_entries=4 * (history + 1)) if reuse_selections else None
        self.signals = TemporalSignals(pruning) if pruning.uses_temporal else None
        self._image_inputs: dict[int, dict] = {}
        self._frames: dict[int, Frame] = {}
        self.last_report: StepReport | None = None  # what the last act() did
        adapter = adapter_for(self.agent.model)
        self._image_token_id = adapter.image_token_id

    def reset(self) -> None:
        self.window.reset()
        self.vision.clear()
        if self.selections is not None:
            self.selections.clear()
        self._image_inputs.clear()
        self._frames.clear()
        if self.signals is not None:
            self.signals.reset()
        torch.manual_seed(self.seed)

    # ------------------------------------------------------------------ inputs
    def build_inputs(self, instruction: str, last_error: str = "") -> tuple[dict, dict]:
        """(model inputs, timing info) for the window as it stands, reusing encoded screenshots."""
        screens = self.window.screens()
        ids = [s.screenshot_id for s in screens]
        for screen in screens:
            if screen.screenshot_id not in self._image_inputs:
                image = Image.fromarray(screen.pixels)
                out = dict(self.agent.image_processor(images=[image], return_tensors="pt"))
                self._image_inputs[screen.screenshot_id] = out
                self._frames[screen.screenshot_id] = _frame(screen.pixels.shape, out, self.agent.image_processor)
        for sid in [k for k in self._image_inputs if k not in ids]:
            del self._image_inputs[sid]
            self._frames.pop(sid, None)
        self.vision.keep_only(ids)
        family = self.agent.model_family
        device, dtype = self.agent.device, self.agent.dtype
        per_image = [{k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)
                      for k, v in family.vision_inputs(self._image_inputs[i]).items()} for i in ids]
        features = self.vision.features(self.agent.model, ids, per_image)
        counts = [int(f.shape[0]) for f in features.pooler_output]
        messages = self.dialect.messages(screens, instruction, [self._frames[i] for i in ids], last_error,
                                         action_help=self.action_help)
        text = self.agent.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        text = expand_image_tokens(text, self.agent.image_token, counts)
        enc = self.agent.tokenizer([text], return_tensors="pt")
        inputs: dict[str, Any] = {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device),
                                  **model_image_inputs(features, per_image)}
        extra = family.extra_inputs(enc["input_ids"], per_image, self._image_token_id)
        inputs.update({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in extra.items()})
        grids = [self.vision.grid(i) for i in ids]
        return inputs, {"vision_s": self.vision.last_encode_s, "vision_reuse_saved_s": self.vision.last_saved_s,
                        "grids": grids, "ids": ids}

    def _generate(self, inputs: dict, cfg: MethodConfig, signals: TemporalSignals | None
                  ) -> tuple[str, Any, float, torch.Tensor | None]:
        """(text, forward record, generate seconds, the prefill's last hidden states (T', d) when
        a pointer head is loaded, else None)."""
        captured: list[torch.Tensor] = []
        hook = None
        if self.agent.pointer is not None:
            final_norm = getattr(self.agent.model_family.language_model(self.agent.model), "norm", None)
            if final_norm is None:
                raise ValueError(f"a pointer head needs the decoder's final norm, which {type(self.agent.model).__name__} "
                                 "does not have as language_model.norm")

            def grab(_module: Any, _args: Any, output: torch.Tensor) -> None:
                if not captured:  # the first call is the prefill
                    captured.append(output[0].detach())

            hook = final_norm.register_forward_hook(grab)
        try:
            with prune(self.agent.model, cfg, self.selections if cfg is self.pruning else None) as handle:
                handle.signal_provider = signals
                device = inputs["input_ids"].device
                t0 = synced_clock(device)
                with torch.no_grad():
                    out = self.agent.model.generate(**inputs, max_new_tokens=self.max_new_tokens,
                                                    min_new_tokens=self.min_new_tokens, do_sample=False)
                total = synced_clock(device) - t0
        finally:
            if hook is not None:
                hook.remove()
        new = out[0, inputs["input_ids"].shape[1]:]
        return (self.agent.tokenizer.decode(new, skip_special_tokens=True), handle.last, total,
                captured[0] if captured else None)

    def _point(self, action: str, hidden: torch.Tensor | None, record: Any, grid: tuple[int, int],
               screen: tuple[int, int]) -> tuple[str, int | None]:
        """``action`` with its (x, y) from the pointer head when it is a click and a head is
        loaded; and the token pointed at (row-major in the current screenshot's grid), else None."""
        if hidden is None or record is None or not record.image_spans:
            return action, None
        try:
            parsed = parse_action(action)
        except ActionParseError:
            return action, None
        if parsed.name not in POINTER_ACTIONS:
            return action, None
        start, end = record.image_spans[-1]
        rows, cols = grid
        if end - start != rows * cols:
            raise ValueError(f"the pointer head needs a plain token grid, but the current screenshot has {end - start} "
                             f"tokens for a {rows} x {cols} grid ({self.agent.family}); use the model without its pointer head")
        if record.kept_final:
            alive = record.kept_positions("final").to(hidden.device)
            patches = record.kept_final[-1].to(hidden.device)
        else:  # nothing was pruned
            alive = torch.arange(record.n_tokens, device=hidden.device)
            patches = torch.arange(end - start, device=hidden.device)
        if alive.numel() != hidden.shape[0]:
            raise RuntimeError(f"pointer: the prefill's final hidden states have {hidden.shape[0]} positions but the "
                               f"record keeps {alive.numel()}")
        where = torch.searchsorted(alive, start + patches)
        best, offset, _ = self.agent.pointer.point(hidden[-1], hidden[where])
        token = int(patches[best])
        x, y = patch_point(token, offset, grid, (screen[1], screen[0]))
        return format_action(Action(parsed.name, (x, y))), token

    # ------------------------------------------------------------------ acting
    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> str:
        self.window.observe(obs["screenshot"])
        inputs, meta = self.build_inputs(str(obs.get("instruction", "")), str(obs.get("last_action_error", "")))
        if self.signals is not None:
            self.signals.begin_step(meta["ids"], meta["grids"])
        raw, record, total, hidden = self._generate(inputs, self.pruning, self.signals)
        if self.signals is not None:
            self.signals.end_step(record)
        frame = self._frames[meta["ids"][-1]]
        screen = obs["screenshot"].shape[:2]
        action, pointed = self._point(self.dialect.parse(raw, frame), hidden, record, meta["grids"][-1], screen)
        reference = None
        if self.fidelity:
            ref_raw, ref_record, _, ref_hidden = self._generate(inputs, UNPRUNED, None)
            reference, _ = self._point(self.dialect.parse(ref_raw, frame), ref_hidden, ref_record, meta["grids"][-1], screen)
        self.window.act(action)
        self.last_report = build_step_report(
            record, action=action, raw_output=raw, generate_s=total, vision_s=meta["vision_s"],
            vision_reuse_saved_s=meta["vision_reuse_saved_s"], grid=meta["grids"][-1],
            screen_size=screen, reference_action=reference,
            grids=meta["grids"], screenshot_ids=meta["ids"], pointer_token=pointed)
        return action


def _with_paired_text(pruning: MethodConfig, paired_text: str) -> MethodConfig:
    """``pruning`` with the dialect's ``paired_text`` when the method has that option and the
    config leaves it at its default (a value the user set is kept)."""
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(pruning)}
    if "paired_text" not in fields or pruning.paired_text == paired_text:
        return pruning
    if pruning.paired_text != fields["paired_text"].default:
        return pruning
    return pruning.replace(paired_text=paired_text)


def _frame(shape: tuple[int, ...], processor_output: dict, image_processor: Any) -> Frame:
    """The screenshot's size and the size of the image the model sees: Qwen2-VL's grid (rows and
    columns of ``patch_size`` patches after ``smart_resize``), else the pixel tensor's size."""
    height, width = int(shape[0]), int(shape[1])
    grid = processor_output.get("image_grid_thw")
    if grid is not None:
        patch = int(getattr(image_processor, "patch_size", 14))
        return Frame(width, height, int(grid[0][2]) * patch, int(grid[0][1]) * patch)
    pixels = processor_output.get("pixel_values")
    if isinstance(pixels, torch.Tensor) and pixels.dim() == 4:
        return Frame(width, height, int(pixels.shape[-1]), int(pixels.shape[-2]))
    return Frame(width, height)
