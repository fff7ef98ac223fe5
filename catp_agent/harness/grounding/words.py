"""Word recognition practice: a crop-level reading objective that works for any string.

Each crop is a short strip (``CropSpec``: 32x192 px by default, one row of the tower's 32 px
tokens) with one label drawn on it the way pages draw controls (plain, bold, link, bordered or
filled button; light or dark ground; the system's fonts at 11-20 px). The glyphs' extent comes
from the renderer (PIL's ink box of the drawn text), never from a control's box: the tokens
whose cells the ink covers are pooled, weighted by how much ink area each cell holds, and the
pooled key must pick its own text among every text of the batch, encoded from characters by the
probe's :class:`~catp_agent.harness.grounding.probe.CharEncoder`. The batch's texts are the
classes, so the vocabulary is whatever the generator draws: open, not ours.

Half of the crops come in pairs that differ in one letter, one dropped letter or one added
word, drawn in the same font, size, colours and place, so that telling them apart takes the
whole text and no cue but the glyphs. Both directions are trained (key -> text, text -> key),
as CLIP trains images and captions.

The pooled key is the probe's own key projection over the tower's tokens, so what is learned
here is what the pointing probe reads: its head starts aligned with the tower.

A second form, :func:`pretrain_on_word_classes`, classifies the same ink-pooled keys among a
closed vocabulary drawn from the same open generator (:func:`generated_vocabulary`, thousands of
labels, half of them near misses of another), with a linear head that is thrown away after.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from PIL import Image, ImageDraw

from catp_agent.harness.grounding.glyphs import contrast_colours, find_fonts, font_at, near_miss, random_text
from catp_agent.harness.grounding.probe import Budget, GroundingProbe, run_until_spent


__all__ = ["CropSpec", "generated_vocabulary", "ink_weights", "pretrain_on_word_classes", "pretrain_on_words", "render_word_pair",
           "word_batch", "word_loss", "word_optimizer"]


@dataclass(frozen=True)
class CropSpec:
    """How word crops are drawn: ``height`` x ``width`` px, fonts of ``min_size``-``max_size``
    px, and the share of crops that come as near-miss pairs."""

    height: int = 32
    width: int = 192
    min_size: int = 11
    max_size: int = 20
    pairs: float = 0.5

    def __post_init__(self) -> None:
        if self.height % 32 or self.width % 32:
            raise ValueError(f"crop sides must be multiples of the tower's 32 px stride, got {self.height}x{self.width}")
        if not 6 <= self.min_size <= self.max_size < self.height:
            raise ValueError(f"font sizes must satisfy 6 <= min_size <= max_size < height, got "
                             f"{self.min_size}, {self.max_size}, height {self.height}")
        if not 0.0 <= self.pairs <= 1.0:
            raise ValueError(f"pairs is a share in [0, 1], got {self.pairs}")


def render_word_pair(rng: np.random.Generator, texts: Sequence[str], spec: CropSpec = CropSpec()
                     ) -> list[tuple[np.ndarray, tuple[float, float, float, float]]]:
    """Draw each of ``texts`` on its own crop in one shared style and place: [(uint8 (height,
    width, 3), ink box (x0, y0, x1, y1))]. The ink box is where the renderer put the glyphs; a
    text too wide for the crop is drawn at a smaller size (down to ``min_size``), then clipped."""
    fonts = find_fonts()
    path = fonts[int(rng.integers(len(fonts)))]
    size = int(rng.integers(spec.min_size, spec.max_size + 1))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    while size > spec.min_size and max(probe.textbbox((0, 0), t, font=font_at(path, size))[2] for t in texts) > spec.width - 4:
        size -= 1
    font = font_at(path, size)
    boxes = [probe.textbbox((0, 0), t, font=font) for t in texts]
    ink_w = max(b[2] - b[0] for b in boxes)
    ink_h = max(b[3] - b[1] for b in boxes)
    bg, fg = contrast_colours(rng, dark=rng.random() < 0.15)
    style = rng.random()
    fill = None
    if style < 0.3:  # filled button
        fill = tuple(int(v) for v in rng.integers(0, 256, size=3))
        fg = (255, 255, 255) if sum(fill) < 380 else (0, 0, 0)
    elif style < 0.4:  # link
        fg = (int(rng.integers(0, 60)), int(rng.integers(40, 110)), int(rng.integers(170, 240)))
    pad = int(rng.integers(3, 10))
    x = int(rng.integers(pad, max(pad + 1, spec.width - ink_w - pad)))
    y = int(rng.integers(1, max(2, spec.height - ink_h)))
    out = []
    for text, (left, top, right, bottom) in zip(texts, boxes):
        image = Image.new("RGB", (spec.width, spec.height), bg)
        draw = ImageDraw.Draw(image)
        if fill is not None or style < 0.5:
            frame = [x - pad, max(0, y - 3), min(spec.width - 1, x + ink_w + pad), min(spec.height - 1, y + ink_h + 3)]
            draw.rectangle(frame, fill=fill, outline=None if fill is not None else (150, 150, 150))
        draw.text((x - left, y - top), text, font=font, fill=fg)
        x0, y0 = float(x), float(y)
        x1, y1 = float(min(spec.width, x + right - left)), float(min(spec.height, y + bottom - top))
        out.append((np.asarray(image), (x0, y0, max(x1, x0 + 1), max(y1, y0 + 1))))
    return out


def ink_weights(inks: Sequence[tuple[float, float, float, float]], grid: tuple[int, int], stride: int) -> torch.Tensor:
    """(len(inks), rows*cols): the share of each ink box's area that falls in each token's cell."""
    rows, cols = grid
    ink = torch.tensor([list(b) for b in inks], dtype=torch.float32).reshape(-1, 4)
    edges_x = torch.arange(cols + 1, dtype=torch.float32) * stride
    edges_y = torch.arange(rows + 1, dtype=torch.float32) * stride
    ox = (torch.minimum(ink[:, 2:3], edges_x[1:]) - torch.maximum(ink[:, 0:1], edges_x[:-1])).clamp(min=0)  # (B, cols)
    oy = (torch.minimum(ink[:, 3:4], edges_y[1:]) - torch.maximum(ink[:, 1:2], edges_y[:-1])).clamp(min=0)  # (B, rows)
    area = (oy.unsqueeze(2) * ox.unsqueeze(1)).reshape(len(ink), rows * cols)
    return area / area.sum(1, keepdim=True).clamp(min=1e-6)


def word_batch(rng: np.random.Generator, n: int, spec: CropSpec, extra_words: Sequence[str], vocabulary: Sequence[str] = ()
           ) -> tuple[list[np.ndarray], list[str], list[tuple[float, float, float, float]]]:
    """``n`` crops with distinct texts (drawn from ``vocabulary`` when given, else the open
    generator with ``extra_words`` mixed in, a share ``spec.pairs`` as near-miss pairs): (images,
    texts, ink boxes)."""
    images: list[np.ndarray] = []
    texts: list[str] = []
    inks: list[tuple[float, float, float, float]] = []
    seen: set[str] = set()
    while len(texts) < n:
        text = str(vocabulary[int(rng.integers(len(vocabulary)))]) if vocabulary else random_text(rng, extra_words)
        group = [text]
        if not vocabulary and rng.random() < spec.pairs and len(texts) + 1 < n:
            group.append(near_miss(text, rng))
        if any(t in seen for t in group) or len(set(group)) < len(group):
            continue
        for image, ink in render_word_pair(rng, group, spec):
            images.append(image)
            inks.append(ink)
        texts += group
        seen.update(group)
    return images, texts, inks


def _ink_pooled_keys(probe: GroundingProbe, images: Sequence[np.ndarray],
                     inks: Sequence[tuple[float, float, float, float]]) -> torch.Tensor:
    """(len(images), dim): the probe's keys over each crop's tokens, weighted by the ink each holds."""
    feats = probe.tower_features(torch.from_numpy(np.stack(images)))
    b, rows, cols, _ = feats.shape
    keys = probe.keys(feats).reshape(b, rows * cols, -1)
    return torch.einsum("bn,bnd->bd", ink_weights(inks, (rows, cols), probe.front.stride), keys)


def word_loss(probe: GroundingProbe, images: Sequence[np.ndarray], texts: Sequence[str],
              inks: Sequence[tuple[float, float, float, float]]) -> tuple[torch.Tensor, float]:
    """The symmetric contrastive loss of crops (uint8 (height, width, 3) each) against their
    texts, every other text of the batch a negative, and the crop -> text accuracy."""
    pooled = F.normalize(_ink_pooled_keys(probe, images, inks), dim=-1)
    b = pooled.shape[0]
    scale = probe.log_scale.clamp(max=float(np.log(100.0))).exp()
    logits = scale * pooled @ probe.query(texts).T
    target = torch.arange(b)
    loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    return loss, float((logits.argmax(1) == target).float().mean())


def word_optimizer(probe: GroundingProbe, lr: float, tower_lr_scale: float = 0.1) -> torch.optim.AdamW:
    """AdamW over the probe's trainable parameters, the tower's at ``tower_lr_scale`` times
    ``lr``: at the heads' rate the tower drifts faster than the text encoder can follow, and not
    even one batch of 8 crops is fitted in 40 steps (accuracy 0.25 at lr 3e-3; 1.0 at 0.1x)."""
    params = [p for p in probe.parameters() if p.requires_grad]
    tower = {id(p) for p in probe.tower.parameters()}
    return torch.optim.AdamW([{"params": [p for p in params if id(p) not in tower], "lr": lr},
                              {"params": [p for p in params if id(p) in tower], "lr": lr * tower_lr_scale}], weight_decay=0.01)


def pretrain_on_words(probe: GroundingProbe, budget: Budget, *, batch: int = 96, lr: float = 2e-3, tower_lr_scale: float = 0.1,
                      spec: CropSpec = CropSpec(), extra_words: Sequence[str] = (), vocabulary: Sequence[str] = (),
                      seed: int = 0, log: Callable[[dict], None] | None = None) -> dict:
    """Word recognition practice (module doc) until ``budget`` runs out: CPU seconds of this
    process or crops seen. The tower learns at ``tower_lr_scale`` times ``lr`` (at the heads'
    rate it drifts faster than the text encoder can follow, and not even one batch is fitted).
    ``vocabulary``: draw every text from it (a closed set; no near-miss
    pairs) instead of the open generator. Returns {"steps", "images", "cpu_s", "accuracy"}, the
    last being the key -> text accuracy over the last 20 steps."""
    if vocabulary and len(set(vocabulary)) < batch:
        raise ValueError(f"a batch holds distinct texts: a vocabulary of {len(set(vocabulary))} cannot fill a batch of {batch}")
    rng = np.random.default_rng(seed)
    opt = word_optimizer(probe, lr, tower_lr_scale)
    params = [p for group in opt.param_groups for p in group["params"]]
    probe.train()
    recent: list[float] = []

    def step() -> tuple[float, int]:
        loss, accuracy = word_loss(probe, *word_batch(rng, batch, spec, extra_words, vocabulary))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        recent.append(accuracy)
        del recent[:-20]
        return loss.item(), batch

    stats = run_until_spent(step, budget, log)
    return stats | {"accuracy": round(float(np.mean(recent)), 4) if recent else 0.0}


def generated_vocabulary(seed: int, size: int, extra_words: Sequence[str] = (), near_misses: float = 0.5) -> list[str]:
    """``size`` distinct labels from the open generator (:func:`.glyphs.random_text`, with
    ``extra_words`` mixed in); a share ``near_misses`` of them are near misses of an earlier one
    (one letter changed or dropped, one word added), so that no class is told apart by its first
    letters or its length alone. Generated, not ours: the same seed gives the same list."""
    if size < 2:
        raise ValueError(f"a vocabulary needs at least 2 labels, got size={size}")
    rng = np.random.default_rng(seed)
    out: list[str] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < size:
        tries += 1
        if tries > 50 * size:
            raise ValueError(f"the generator gave only {len(out)} distinct labels in {tries} tries; ask for fewer than {size}")
        text = near_miss(out[int(rng.integers(len(out)))], rng) if out and rng.random() < near_misses else random_text(rng, extra_words)
        if text and text not in seen:
            out.append(text)
            seen.add(text)
    return out


def pretrain_on_word_classes(probe: GroundingProbe, budget: Budget, vocabulary: Sequence[str], *, batch: int = 128,
                             lr: float = 2e-3, tower_lr_scale: float = 1.0, spec: CropSpec = CropSpec(), seed: int = 0,
                             log: Callable[[dict], None] | None = None) -> dict:
    """Word classification practice: each crop's ink-pooled key (as in :func:`word_loss`) is
    classified among every label of ``vocabulary`` by a linear head that exists only for this
    practice. A fixed set of classes gives the tower a target that does not move while it
    learns, unlike the contrastive form, whose classes are encoded by a text encoder that learns
    at the same time. What it learns about glyphs in general shows in the probe's ``random`` and
    ``miniwob`` columns, strings outside the vocabulary. Returns {"steps", "images", "cpu_s",
    "accuracy", "classes"}, accuracy over the last 20 steps."""
    labels = list(dict.fromkeys(str(v) for v in vocabulary))
    if len(labels) < 2:
        raise ValueError(f"word classes need at least 2 distinct labels, got {len(labels)}")
    if len(labels) < batch:
        raise ValueError(f"a batch holds distinct texts: a vocabulary of {len(labels)} cannot fill a batch of {batch}")
    index = {t: i for i, t in enumerate(labels)}
    head = nn.Sequential(nn.LayerNorm(probe.keys[1].out_features), nn.Linear(probe.keys[1].out_features, len(labels)))
    rng = np.random.default_rng(seed)
    opt = word_optimizer(probe, lr, tower_lr_scale)
    opt.add_param_group({"params": list(head.parameters()), "lr": lr})
    params = [p for group in opt.param_groups for p in group["params"]]
    probe.train()
    recent: list[float] = []

    def step() -> tuple[float, int]:
        images, texts, inks = word_batch(rng, batch, spec, (), labels)
        logits = head(_ink_pooled_keys(probe, images, inks))
        target = torch.tensor([index[t] for t in texts])
        loss = F.cross_entropy(logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        recent.append(float((logits.argmax(1) == target).float().mean()))
        del recent[:-20]
        return loss.item(), batch

    stats = run_until_spent(step, budget, log)
    return stats | {"accuracy": round(float(np.mean(recent)), 4) if recent else 0.0, "classes": len(labels)}
