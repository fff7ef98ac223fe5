"""Training the reading model (issue 28): a frozen reading tower, encoded once per screen, and the
whole model asked the grounding probe's questions in the agent's own prompt form.

- :func:`tower_encoder` gives what the model's projector reads (the tower's selected hidden
  states), so cached features are what the model would compute from the pixels.
- :func:`freeze_tower` stops the tower's gradients (and puts it in eval mode); with it frozen,
  :meth:`~catp_agent.harness.training.data.SampleSet.cache_features` encodes every screen once
  for the whole run.
- :func:`probe_whole_model` asks ``Click "<text>".`` about every question of a
  :class:`~catp_agent.harness.grounding.data.GroundingSet` (one screen, no history, the agent's
  prompt) and scores where the pointer head points, the way the probe scores the tower alone.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

__all__ = ["freeze_tower", "probe_whole_model", "reading_grid", "tower_encoder"]


def reading_grid(model, image_processor) -> tuple[int, int]:
    """(rows, cols) of the token grid of one screen: the processor's (height, width) cut into
    the model's ``image_seq_length`` square cells (a 640x480 screen in 32 px tokens is 15x20, a
    336 px one in 28 px patches 12x12), the rule the agent's family adapter applies."""
    size = image_processor.size
    h, w, n = int(size["height"]), int(size["width"]), int(model.config.image_seq_length)
    side = int(round((h * w / n) ** 0.5))
    if not side or h % side or w % side or (h // side) * (w // side) != n:
        raise ValueError(f"{n} image tokens do not cut a {w}x{h} screen into square cells")
    return h // side, w // side


def tower_encoder(model) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function: normalised pixel_values (F, 3, H, W) -> (F, N, C), the features the model's
    projector would receive for those screens: the tower's hidden states at
    ``vision_feature_layer`` (several layers concatenated), the class token dropped under the
    ``default`` strategy, as LLaVA's ``get_image_features`` selects them (the tests check that
    training on these gives what training on the pixels gives)."""
    tower = model.model.vision_tower
    cfg = model.config

    def encode(pixel_values: torch.Tensor) -> torch.Tensor:
        out = tower(pixel_values.to(model.device), output_hidden_states=True, return_dict=True)
        layers = cfg.vision_feature_layer
        picked = [out.hidden_states[k] for k in ([layers] if isinstance(layers, int) else layers)]
        if cfg.vision_feature_select_strategy == "default":
            picked = [h[:, 1:] for h in picked]
        return torch.cat(picked, dim=-1)

    return encode


def freeze_tower(model) -> int:
    """No gradients and eval mode for the vision tower; returns how many parameters it froze.
    (``model.train()`` later puts the tower back in train mode; a FocalNet without dropout and
    drop-path computes the same in both.)"""
    tower = model.model.vision_tower
    n = 0
    for p in tower.parameters():
        p.requires_grad_(False)
        n += p.numel()
    tower.eval()
    return n


@torch.no_grad()
def probe_whole_model(model, pointer, tokenizer, image_processor, gset, grid: tuple[int, int], *,
                      batch: int = 8) -> dict[str, dict]:
    """The grounding probe's scores for the whole model: for each question of ``gset``, the
    prompt ``Click "<text>".`` on its screen (resized by ``image_processor`` as the agent's
    screens are), the pointer head's token and offset turned into a pixel of the screen, and
    that pixel scored by ``gset.is_right``. Returns per task (and ``all``): ``questions``,
    ``pick`` (right element) and ``inside`` (the pixel inside the target's box)."""
    from catp_agent.agent.pointer import patch_point
    from catp_agent.harness.training.practice import grounding_prompt

    was_training = model.training
    model.eval()
    pointer.eval()
    encode = tower_encoder(model)
    size = image_processor.size
    side = (int(size["height"]), int(size["width"]))
    mean = torch.tensor(image_processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(image_processor.image_std).view(1, 3, 1, 1)
    n_tok = grid[0] * grid[1]
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    prompts: dict[str, list[int]] = {}
    tally: dict[str, list[int]] = {}
    by_screen = gset.by_screen()
    screens = sorted(by_screen)
    for start in range(0, len(screens), batch):
        chunk = screens[start:start + batch]
        frames = np.stack([np.asarray(Image.fromarray(gset.frames[s]).resize((side[1], side[0]), resample=image_processor.resample)
                                      .convert("RGB")) for s in chunk])
        pix = torch.from_numpy(frames).permute(0, 3, 1, 2).float() * float(image_processor.rescale_factor)
        feats = model.model.multi_modal_projector(encode((pix - mean) / std))  # (F, N, d)
        for b, s in enumerate(chunk):
            questions = [gset.questions[k] for k in by_screen[s]]
            ids = []
            for q in questions:
                instruction = f'Click "{q.text}".'
                if instruction not in prompts:
                    prompts[instruction] = grounding_prompt(tokenizer, instruction)
                ids.append(prompts[instruction])
            width = max(len(p) for p in ids) + n_tok - 1
            input_ids = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
            attention = torch.zeros_like(input_ids)
            for i, p in enumerate(ids):
                expanded = [t for tok in p for t in ([tok] * n_tok if tok == image_id else [tok])]
                input_ids[i, :len(expanded)] = torch.tensor(expanded)
                attention[i, :len(expanded)] = 1
            embeds = model.get_input_embeddings()(input_ids.to(model.device))
            mask = (input_ids == image_id).unsqueeze(-1).to(model.device)
            image = feats[b].unsqueeze(0).expand(len(ids), -1, -1).reshape(-1, feats.shape[-1])
            embeds = embeds.masked_scatter(mask, image.to(embeds.dtype))
            hidden = model.model.language_model(inputs_embeds=embeds, attention_mask=attention.to(model.device)).last_hidden_state
            height, width_px = gset.frames[s].shape[:2]
            for i, q in enumerate(questions):
                last = int(attention[i].sum()) - 1
                start_img = int((input_ids[i] == image_id).nonzero()[0])
                token, offset, _ = pointer.point(hidden[i, last], hidden[i, start_img:start_img + n_tok])
                point = patch_point(token, offset, grid, (width_px, height))
                right, inside = gset.is_right(q, point)
                for key in (q.task, "all"):
                    t = tally.setdefault(key, [0, 0, 0])
                    t[0] += 1
                    t[1] += right
                    t[2] += inside
    if was_training:
        model.train()
        pointer.train()
    return {task: {"questions": n, "pick": r / n, "inside": i / n} for task, (n, r, i) in tally.items()}
