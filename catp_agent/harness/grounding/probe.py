"""The grounding probe: can a vision front end tell where a given text is written?

The probe isolates the vision tower from everything else an agent does. A question is a text
(or, for the control, only the element's role) and a screen; the answer is one of the front
end's tokens and an offset inside it, as the agent's pointer head answers
(:mod:`catp_agent.agent.pointer`). The query is encoded from its characters
(:class:`CharEncoder`), so any string can be asked, not only the words seen in training.

Training uses dense targets: every token whose centre lies in the target's box is right (or,
for a box smaller than a token, the token holding the box's centre), and the loss is minus the
log of the probability mass on the right tokens. Budgets are CPU seconds of this process
(``time.process_time``, all threads) and images seen, so front ends are compared at equal
compute and at equal data. With the tower frozen its features are computed once per screen and
kept, so a frozen tower spends its budget on the head alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from catp_agent.harness.grounding.data import GroundingSet
from catp_agent.harness.grounding.glyphs import CanvasSpec, render_canvas
from catp_agent.harness.grounding.towers import FrontEnd

__all__ = ["Budget", "CharEncoder", "GroundingProbe", "dense_targets", "evaluate", "pretrain_on_canvases", "run_until_spent", "train_on_screens"]

MAX_CHARS = 40


class CharEncoder(nn.Module):
    """Text -> unit vector (dim,), from its characters: embeddings with positions, two
    convolutions over neighbouring characters, one attention layer, and a masked mean."""

    def __init__(self, dim: int = 128, width: int = 128) -> None:
        super().__init__()
        self.embed = nn.Embedding(98, 64, padding_idx=0)  # 0 pad, 1..95 printable ASCII, 96 other
        self.pos = nn.Parameter(torch.randn(MAX_CHARS, 64) * 0.02)
        self.conv = nn.Sequential(nn.Conv1d(64, width, 3, padding=1), nn.GELU(), nn.Conv1d(width, width, 3, padding=1), nn.GELU())
        self.mix = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.out = nn.Linear(width, dim)

    @staticmethod
    def ids(texts: Sequence[str]) -> torch.Tensor:
        """(len(texts), MAX_CHARS) character ids, texts cut at MAX_CHARS."""
        rows = torch.zeros(len(texts), MAX_CHARS, dtype=torch.long)
        for i, text in enumerate(texts):
            codes = [ord(c) - 31 if 32 <= ord(c) <= 126 else 96 for c in text[:MAX_CHARS]] or [96]
            rows[i, :len(codes)] = torch.tensor(codes)
        return rows

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        ids = self.ids(texts).to(self.pos.device)
        mask = ids > 0
        x = self.embed(ids) + self.pos
        x = self.conv(x.transpose(1, 2)).transpose(1, 2)
        x = self.mix(x, src_key_padding_mask=~mask)
        x = (x * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        return F.normalize(self.out(x), dim=-1)


class GroundingProbe(nn.Module):
    """A front end's tokens projected to keys, a character-encoded query, a temperature, and an
    offset head (where in the chosen token, as a fraction of the token's size)."""

    def __init__(self, front: FrontEnd, dim: int = 128) -> None:
        super().__init__()
        self.front = front
        self.tower = front.model
        self.query = CharEncoder(dim)
        self.keys = nn.Sequential(nn.LayerNorm(front.channels), nn.Linear(front.channels, dim))
        self.offset = nn.Sequential(nn.Linear(2 * dim, 64), nn.GELU(), nn.Linear(64, 2))
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def tower_features(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (batch, H, W, 3) -> (batch, rows, cols, channels)."""
        return self.front.features(self.front.pixels(frames))

    def head(self, feats: torch.Tensor, queries: torch.Tensor, owner: torch.Tensor, across: bool = False
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (B, rows, cols, C), queries (Q, dim) asked of screens ``owner`` (Q,) ->
        logits (Q, rows*cols) over the owner's tokens, or (Q, B*rows*cols) over every screen's
        when ``across``; offsets (Q, rows*cols, 2) in [-0.5, 0.5] over the owner's tokens."""
        b, rows, cols, _ = feats.shape
        keys = self.keys(feats).reshape(b, rows * cols, -1)
        unit = F.normalize(keys, dim=-1)
        scale = self.log_scale.clamp(max=math.log(100.0)).exp()
        own = unit[owner]  # (Q, N, dim)
        if across:
            logits = scale * queries @ unit.reshape(b * rows * cols, -1).T
        else:
            logits = scale * torch.einsum("qnd,qd->qn", own, queries)
        mixed = torch.cat([keys[owner], keys[owner] * queries.unsqueeze(1)], dim=-1)
        offsets = 0.5 * torch.tanh(self.offset(mixed))
        return logits, offsets


def dense_targets(boxes: Sequence[Sequence[float]], grid: tuple[int, int], size: tuple[int, int]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """For boxes (x, y, w, h) on an image of ``size`` (width, height) cut into ``grid`` (rows,
    cols): right (Q, rows*cols) bool, the tokens whose centre is in the box (or the one holding
    the box's centre when none is), and offsets (Q, rows*cols, 2): where the box's centre lies
    from each token's centre, in token sizes, clamped to the token."""
    rows, cols = grid
    cw, ch = size[0] / cols, size[1] / rows
    cx = (torch.arange(cols, dtype=torch.float32) + 0.5) * cw
    cy = (torch.arange(rows, dtype=torch.float32) + 0.5) * ch
    box = torch.tensor([list(b) for b in boxes], dtype=torch.float32).reshape(-1, 4)
    x0, y0, x1, y1 = box[:, 0:1], box[:, 1:2], box[:, 0:1] + box[:, 2:3], box[:, 1:2] + box[:, 3:4]
    in_x = (cx >= x0) & (cx <= x1)  # (Q, cols)
    in_y = (cy >= y0) & (cy <= y1)  # (Q, rows)
    right = (in_y.unsqueeze(2) & in_x.unsqueeze(1)).reshape(len(box), rows * cols)
    mx, my = (x0 + x1).squeeze(1) / 2, (y0 + y1).squeeze(1) / 2
    holder = (my / ch).long().clamp(0, rows - 1) * cols + (mx / cw).long().clamp(0, cols - 1)
    empty = ~right.any(1)
    right[empty, holder[empty]] = True
    gx = ((mx.unsqueeze(1) - cx) / cw).clamp(-0.5, 0.5)  # (Q, cols)
    gy = ((my.unsqueeze(1) - cy) / ch).clamp(-0.5, 0.5)  # (Q, rows)
    offsets = torch.stack([gx.unsqueeze(1).expand(-1, rows, -1), gy.unsqueeze(2).expand(-1, -1, cols)], dim=-1)
    return right, offsets.reshape(len(box), rows * cols, 2)


def _loss(logits: torch.Tensor, offsets: torch.Tensor, right: torch.Tensor, want: torch.Tensor,
          owner_cols: Sequence[int] | None = None) -> torch.Tensor:
    """-log P(right tokens) plus the offsets' L1 on the right tokens. ``right``/``want`` are over
    the owner's tokens; with logits over every screen, ``owner_cols`` places them."""
    if owner_cols is not None:
        n = right.shape[1]
        full = torch.zeros_like(logits, dtype=torch.bool)
        for q, start in enumerate(owner_cols):
            full[q, start:start + n] = right[q]
        picked = logits.masked_fill(~full, float("-inf"))
    else:
        picked = logits.masked_fill(~right, float("-inf"))
    point = (torch.logsumexp(logits, -1) - torch.logsumexp(picked, -1)).mean()
    l1 = ((offsets - want).abs().sum(-1) * right).sum() / right.sum()
    return point + l1


@dataclass
class Budget:
    """When training stops: CPU seconds of this process, or images seen, whichever comes first."""

    cpu_seconds: float = float("inf")
    images: int = 10**9

    def __post_init__(self) -> None:
        if self.cpu_seconds <= 0 or self.images <= 0:
            raise ValueError(f"a budget needs cpu_seconds > 0 and images > 0, got {self.cpu_seconds} and {self.images}")


def run_until_spent(step: Callable[[], tuple[float, int]], budget: Budget, log: Callable[[dict], None] | None, every: int = 20) -> dict:
    """Call ``step`` (-> (loss, images seen)) until ``budget`` is spent; log every ``every`` steps."""
    start, seen, steps = time.process_time(), 0, 0
    while time.process_time() - start < budget.cpu_seconds and seen < budget.images:
        loss, n = step()
        seen += n
        steps += 1
        if log is not None and steps % every == 0:
            log({"step": steps, "images": seen, "cpu_s": round(time.process_time() - start, 1), "loss": round(loss, 4)})
    return {"steps": steps, "images": seen, "cpu_s": round(time.process_time() - start, 1)}


def pretrain_on_canvases(probe: GroundingProbe, budget: Budget, *, batch: int = 32, lr: float = 2e-3,
                         spec: CanvasSpec = CanvasSpec(), extra_words: Sequence[str] = (), seed: int = 0,
                         log: Callable[[dict], None] | None = None) -> dict:
    """Reading practice on rendered canvases (:mod:`.glyphs`): every word of ``batch`` canvases
    is asked, against every token of the batch (the other canvases' words are negatives too)."""
    rng = np.random.default_rng(seed)
    params = [p for p in probe.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    probe.train()

    def step() -> tuple[float, int]:
        images, texts, boxes, owner = [], [], [], []
        for b in range(batch):
            image, words = render_canvas(rng, spec, extra_words)
            images.append(image)
            for text, box in words:
                texts.append(text)
                boxes.append(box)
                owner.append(b)
        feats = probe.tower_features(torch.from_numpy(np.stack(images)))
        rows, cols = feats.shape[1:3]
        owner_t = torch.tensor(owner)
        logits, offsets = probe.head(feats, probe.query(texts), owner_t, across=True)
        right, want = dense_targets(boxes, (rows, cols), (spec.width, spec.height))
        loss = _loss(logits, offsets, right, want, owner_cols=[o * rows * cols for o in owner])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item(), batch

    return run_until_spent(step, budget, log)


def _queries(gset: GroundingSet, picks: Sequence[int], control: bool) -> list[str]:
    qs = [gset.questions[k] for k in picks]
    return [(q.role or "text") if control else q.text for q in qs]


def train_on_screens(probe: GroundingProbe, gset: GroundingSet, budget: Budget, *, freeze_tower: bool = False,
                     tower_lr_scale: float = 1.0, control: bool = False, screens_per_step: int = 8, per_screen: int = 4,
                     lr: float = 1e-3, seed: int = 0, log: Callable[[dict], None] | None = None) -> dict:
    """Grounding on demo screens. ``control``: the query is the element's role only. A frozen
    tower's features are computed once per screen (on first use) and kept."""
    rng = np.random.default_rng(seed)
    for p in probe.tower.parameters():
        p.requires_grad_(not freeze_tower)
    head = [p for n, p in probe.named_parameters() if not n.startswith(("tower.", "front.")) and p.requires_grad]
    groups = [{"params": head, "lr": lr}]
    if not freeze_tower:
        groups.append({"params": list(probe.tower.parameters()), "lr": lr * tower_lr_scale})
    opt = torch.optim.AdamW(groups, weight_decay=0.01)
    by_screen = gset.by_screen()
    screens = sorted(by_screen)
    frames = torch.from_numpy(gset.frames)
    size = (gset.frames.shape[2], gset.frames.shape[1])
    cache: dict[int, torch.Tensor] = {}
    probe.train()
    if freeze_tower:
        probe.tower.eval()  # a frozen tower's features are its inference features (no dropout or drop path)

    def step() -> tuple[float, int]:
        chosen = [screens[int(i)] for i in rng.choice(len(screens), size=min(screens_per_step, len(screens)), replace=False)]
        picks, owner = [], []
        for b, s in enumerate(chosen):
            qs = by_screen[s]
            for k in rng.choice(len(qs), size=min(per_screen, len(qs)), replace=False):
                picks.append(qs[int(k)])
                owner.append(b)
        if freeze_tower:
            with torch.no_grad():
                todo = [s for s in chosen if s not in cache]
                if todo:
                    for s, f in zip(todo, probe.tower_features(frames[todo])):
                        cache[s] = f
            feats = torch.stack([cache[s] for s in chosen])
        else:
            feats = probe.tower_features(frames[chosen])
        logits, offsets = probe.head(feats, probe.query(_queries(gset, picks, control)), torch.tensor(owner))
        right, want = dense_targets([gset.questions[k].box for k in picks], feats.shape[1:3], size)
        loss = _loss(logits, offsets, right, want)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        opt.step()
        return loss.item(), len(chosen)

    return run_until_spent(step, budget, log)


@torch.no_grad()
def evaluate(probe: GroundingProbe, gset: GroundingSet, *, control: bool = False, batch: int = 16) -> dict[str, dict]:
    """Per task (and "all"): questions, right picks at the token's centre and with the offset,
    and answers inside the target's box (with the offset)."""
    probe.eval()
    by_screen = gset.by_screen()
    screens = sorted(by_screen)
    size = (gset.frames.shape[2], gset.frames.shape[1])
    tally: dict[str, list[int]] = {}
    for i in range(0, len(screens), batch):
        chunk = screens[i:i + batch]
        feats = probe.tower_features(torch.from_numpy(gset.frames[chunk]))
        rows, cols = feats.shape[1:3]
        picks, owner = [], []
        for b, s in enumerate(chunk):
            picks += by_screen[s]
            owner += [b] * len(by_screen[s])
        logits, offsets = probe.head(feats, probe.query(_queries(gset, picks, control)), torch.tensor(owner))
        best = logits.argmax(-1)
        off = offsets[torch.arange(len(picks)), best]
        cw, ch = size[0] / cols, size[1] / rows
        for k, token, (ox, oy) in zip(picks, best.tolist(), off.tolist()):
            q = gset.questions[k]
            cx, cy = (token % cols + 0.5) * cw, (token // cols + 0.5) * ch
            right_c, _ = gset.is_right(q, (cx, cy))
            right_o, inside = gset.is_right(q, (cx + ox * cw, cy + oy * ch))
            for key in (q.task, "all"):
                t = tally.setdefault(key, [0, 0, 0, 0])
                t[0] += 1
                t[1] += right_c
                t[2] += right_o
                t[3] += inside
    return {task: {"questions": n, "pick_centre": c / n, "pick": o / n, "inside": ins / n}
            for task, (n, c, o, ins) in tally.items()}
