"""A pointer head: a click chooses among the image tokens the model sees (GUI-Actor style).

The model still writes its action as text (``click(x, y)``). When a pointer head is saved beside
the checkpoint (``pointer_head.safetensors`` and ``pointer_head.json``), the click's location
comes from the head instead of from the text's numbers:

- the **query** is the decoder's last hidden state (after the final norm) at the position that
  predicts the first answer token: it has read the whole prompt, task and history included;
- the **keys** are the last hidden states of the current screenshot's image tokens, one per
  token *that survived pruning* (pruned tokens have no hidden state to point at);
- the head scores every key against the query (a scaled dot product of two projections), picks
  the best token, and reads an offset inside that token's patch (two sigmoids), so the click is
  any pixel of the screen, not only a patch centre.

The head is small (two ``hidden x dim`` projections and a ``2 dim x 2`` offset map: 50 k
parameters for the default model) and is trained inside behaviour cloning
(``catp-agent train --pointer-weight``) with dense targets from the element boxes the demos
store: every patch whose centre lies in the clicked element's box is a right answer (the loss is
minus the log of their summed probability), and the offset is regressed in the patch that holds
the demo's click.

A pointer can only point at tokens that pruning kept, so under pruning action fidelity measures
directly whether the target's token survived.

The geometry assumes the token grid covers the whole screenshot (the processor resizes without
cropping: the default model's squash, Qwen2-VL's ``smart_resize``) and that the current
screenshot's tokens are a plain row-major grid (LLaVA, Qwen2-VL, Qwen2.5-VL; not LLaVA-NeXT's
tiles).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["POINTER_ACTIONS", "POINTER_CONFIG", "POINTER_WEIGHTS", "PointerConfig", "PointerHead", "load_pointer_head",
           "patch_point", "pointer_loss", "pointer_targets", "save_pointer_head"]

POINTER_WEIGHTS = "pointer_head.safetensors"
POINTER_CONFIG = "pointer_head.json"
POINTER_ACTIONS = ("click", "double_click")
"""The actions whose (x, y) the pointer gives."""


@dataclass(frozen=True)
class PointerConfig:
    hidden_size: int  # the decoder's hidden size
    dim: int = 128  # the query/key projection's size

    def __post_init__(self) -> None:
        if self.hidden_size < 1 or self.dim < 1:
            raise ValueError(f"pointer head sizes must be positive, got hidden_size={self.hidden_size}, dim={self.dim}")


class PointerHead(nn.Module):
    """Scores image tokens' hidden states against a query hidden state; an offset per token."""

    def __init__(self, config: PointerConfig) -> None:
        super().__init__()
        self.config = config
        d, p = config.hidden_size, config.dim
        self.norm_q = nn.LayerNorm(d)
        self.norm_k = nn.LayerNorm(d)
        self.q = nn.Linear(d, p)
        self.k = nn.Linear(d, p)
        self.offset = nn.Linear(2 * p, 2)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)  # starts at the patch centre

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """query (B, d), keys (B, N, d), mask (B, N) True where a key exists -> (logits (B, N),
        offsets (B, N, 2) in [0, 1], x then y, inside each token's patch). Masked logits are -inf."""
        q = self.q(self.norm_q(query.float()))
        k = self.k(self.norm_k(keys.float()))
        logits = torch.einsum("bp,bnp->bn", q, k) / self.config.dim ** 0.5
        offsets = torch.sigmoid(self.offset(torch.cat([k, q[:, None, :].expand_as(k)], dim=-1)))
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        return logits, offsets

    @torch.no_grad()
    def point(self, query: torch.Tensor, keys: torch.Tensor) -> tuple[int, tuple[float, float], float]:
        """query (d,), keys (N, d) -> (best key's index, its offset (x, y), its probability)."""
        logits, offsets = self.forward(query[None], keys[None])
        probs = logits[0].softmax(-1)
        best = int(probs.argmax())
        return best, (float(offsets[0, best, 0]), float(offsets[0, best, 1])), float(probs[best])


def patch_point(token: int, offset: tuple[float, float], grid: tuple[int, int], screen: tuple[int, int]) -> tuple[int, int]:
    """The screen pixel (x, y) at ``offset`` inside token ``token`` (row-major) of a ``grid``
    (rows, cols) covering a ``screen`` of (width, height)."""
    rows, cols = grid
    width, height = screen
    row, col = divmod(int(token), cols)
    x = (col + min(max(offset[0], 0.0), 1.0)) * width / cols
    y = (row + min(max(offset[1], 0.0), 1.0)) * height / rows
    return min(width - 1, max(0, int(x))), min(height - 1, max(0, int(y)))


def pointer_targets(click: tuple[float, float], box: Sequence[float] | None, grid: tuple[int, int],
                    screen: tuple[int, int]) -> tuple[list[int], int, tuple[float, float]]:
    """Dense targets for one click: (right tokens, the token holding the click, the click's offset
    inside it). Right tokens are those whose patch centre lies in ``box`` (x, y, w, h, screen
    pixels), plus always the click's own token. ``grid`` is (rows, cols), ``screen`` (width, height).

    >>> pointer_targets((150, 50), (100, 0, 200, 100), (2, 4), (400, 200))
    ([1, 2], 1, (0.5, 0.5))
    """
    rows, cols = grid
    width, height = screen
    pw, ph = width / cols, height / rows
    x, y = float(click[0]), float(click[1])
    col = min(cols - 1, max(0, int(x // pw)))
    row = min(rows - 1, max(0, int(y // ph)))
    own = row * cols + col
    offset = (min(1.0, max(0.0, x / pw - col)), min(1.0, max(0.0, y / ph - row)))
    right = {own}
    if box is not None:
        bx, by, bw, bh = (float(v) for v in box)
        for r in range(rows):
            cy = (r + 0.5) * ph
            if not by <= cy <= by + bh:
                continue
            for c in range(cols):
                if bx <= (c + 0.5) * pw <= bx + bw:
                    right.add(r * cols + c)
    return sorted(right), own, offset


def pointer_loss(logits: torch.Tensor, offsets: torch.Tensor, right: torch.Tensor, own: torch.Tensor,
                 offset: torch.Tensor, offset_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, whether the best token is a right one (B,)) for logits (B, N), offsets (B, N, 2),
    right (B, N) bool, own (B,) token index, offset (B, 2).

    The token loss is ``-log sum_{right} p``; the offset loss is the smooth L1 of the offset in
    the click's own token (scaled so a half-patch miss costs about 1)."""
    logp = logits.float().log_softmax(-1)
    token_loss = -(logp.masked_fill(~right, float("-inf")).logsumexp(-1)).mean()
    rows = torch.arange(logits.shape[0], device=logits.device)
    off_loss = F.smooth_l1_loss(offsets[rows, own] * 4, offset.float() * 4)
    hit = right[rows, logits.argmax(-1)]
    return token_loss + offset_weight * off_loss, hit


def save_pointer_head(head: PointerHead, folder: str | Path) -> None:
    """``pointer_head.safetensors`` and ``pointer_head.json`` into ``folder`` (beside a checkpoint)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}, str(folder / POINTER_WEIGHTS))
    (folder / POINTER_CONFIG).write_text(json.dumps(asdict(head.config), indent=2) + "\n")


def load_pointer_head(folder: str | Path) -> PointerHead | None:
    """The pointer head saved beside the checkpoint in ``folder``, or None when there is none."""
    folder = Path(folder)
    if not (folder / POINTER_WEIGHTS).is_file():
        return None
    from safetensors.torch import load_file

    if not (folder / POINTER_CONFIG).is_file():
        raise FileNotFoundError(f"{folder / POINTER_WEIGHTS} has no {POINTER_CONFIG} beside it (its sizes); "
                                "save both with save_pointer_head")
    config = PointerConfig(**json.loads((folder / POINTER_CONFIG).read_text()))
    head = PointerHead(config)
    head.load_state_dict(load_file(str(folder / POINTER_WEIGHTS)))
    return head.eval()
