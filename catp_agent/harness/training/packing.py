"""Packing several prompts that share their beginnings into one row, exactly.

Behaviour-cloning steps of one episode repeat each other's beginnings (the same earlier screens
and actions), and grounding questions on one screen share everything up to the task's words.
:func:`pack_rows` lays such sequences out as a prefix tree in one row: a shared beginning once,
then each sequence's own rest. Every position attends only to its own sequence's earlier
positions (a (n, n) mask) and carries its own sequence's position index, so every token computes
what it would in its own row, while the row holds each screen's image tokens once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["PackedRow", "pack_rows", "shared_prefix"]


def shared_prefix(a: Sequence, b: Sequence) -> int:
    """Length of the common prefix of ``a`` and ``b``."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@dataclass
class PackedRow:
    """Sequences packed into one row by :func:`pack_rows`."""

    keys: list[tuple[int, int]]  # (token id, screen index or -1) per row position
    positions: list[int]  # each position's index inside its own sequence
    labels: list[int]  # the answer tokens' ids where they are, -100 elsewhere
    allowed: torch.Tensor  # (n, n) bool: position i may attend to j (j is i or one of its sequence's earlier tokens)
    query_pos: list[int]  # per sequence: the row position of its prompt's last token
    last_image_start: list[int]  # per sequence: where its last screen's image tokens start (-1: none)


def pack_rows(seqs: Sequence[tuple[Sequence[tuple[int, int]], int]]) -> PackedRow:
    """Pack sequences into one row as a prefix tree. ``seqs``: (keys, prompt length) per
    sequence, keys (token id, screen index or -1) so that image tokens of different screens
    differ. Each sequence reuses the longest prefix it shares with an earlier one (at most its
    prompt minus one token, so that its answer follows its own last prompt token in the row)
    and appends the rest. A position attends to its own sequence's earlier positions only and
    has its own sequence's position index: every token computes what it would in its own row."""
    keys: list[tuple[int, int]] = []
    positions: list[int] = []
    labels: list[int] = []
    maps: list[list[int]] = []
    query_pos, image_start = [], []
    for seq, n_prompt in seqs:
        if not 0 < n_prompt <= len(seq):
            raise ValueError(f"a packed sequence needs a prompt of 1..{len(seq)} tokens, got {n_prompt}")
        best, shared = -1, 0
        for j, earlier in enumerate(maps):
            n = min(shared_prefix([keys[i] for i in earlier], seq), n_prompt - 1)
            if n > shared:
                best, shared = j, n
        mine = list(maps[best][:shared]) if best >= 0 else []
        for k in range(shared, len(seq)):
            mine.append(len(keys))
            keys.append(seq[k])
            positions.append(k)
            labels.append(seq[k][0] if k >= n_prompt else -100)
        maps.append(mine)
        query_pos.append(mine[n_prompt - 1])
        images = [k for k in range(n_prompt) if seq[k][1] >= 0]
        start = -1
        if images:
            first = images[-1]
            while first > 0 and seq[first - 1] == seq[images[-1]]:
                first -= 1
            start = mine[first]
        image_start.append(start)
    n = len(keys)
    allowed = torch.zeros((n, n), dtype=torch.bool)
    for mine in maps:  # a sequence's positions see its own earlier positions
        index = torch.tensor(mine)
        allowed[index.unsqueeze(1), index.unsqueeze(0)] |= torch.ones((len(mine), len(mine)), dtype=torch.bool).tril()
    return PackedRow(keys, positions, labels, allowed, query_pos, image_start)
