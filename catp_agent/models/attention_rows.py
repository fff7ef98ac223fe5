"""The attention row of one query token at chosen layers, without eager attention.

Stage 2 needs ``A_l[t_ql, :]`` (last prompt token, averaged over heads) at layers K-1 and K.
Switching the model to eager attention would build an n x n matrix in every layer; instead we
catch the query and key projections of the chosen layers with forward hooks, apply the layer's
own rotary embedding, and compute one softmax row: O(n) memory per head. The layer itself keeps
running on SDPA (or whatever attention it was configured with).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


class AttentionRowRecorder:
    """Records the head-averaged attention row of the last token at some decoder layers.

    Attach with :meth:`attach`; rows land in ``rows[layer_idx]`` as (seq,) float32 tensors over
    the keys the layer attended to in that forward (the layer's own sequence, causal: the last
    token sees every key). Only records while ``active`` is True (prefill).
    """

    def __init__(self) -> None:
        self.rows: dict[int, torch.Tensor] = {}
        self.active = False
        self._captured: dict[int, dict[str, torch.Tensor]] = {}
        self._handles: list[RemovableHandle] = []

    def attach(self, layer_idx: int, attention: nn.Module, rotary_fn: Callable) -> None:
        store = self._captured.setdefault(layer_idx, {})

        def keep_output(name: str) -> Callable:
            def hook(_module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
                if self.active:
                    store[name] = output

            return hook

        def keep_rotary(_module: nn.Module, _args: tuple, kwargs: dict) -> None:
            if self.active:
                store["position_embeddings"] = kwargs.get("position_embeddings")

        def compute_row(_module: nn.Module, _args: tuple, _kwargs: dict, _output: object) -> None:
            if self.active and "q" in store and "k" in store:
                self.rows[layer_idx] = self._row(attention, store, rotary_fn)
            store.clear()

        self._handles += [
            attention.q_proj.register_forward_hook(keep_output("q")),
            attention.k_proj.register_forward_hook(keep_output("k")),
            attention.register_forward_pre_hook(keep_rotary, with_kwargs=True),
            attention.register_forward_hook(compute_row, with_kwargs=True),
        ]

    @staticmethod
    def _row(attention: nn.Module, store: dict, rotary_fn: Callable) -> torch.Tensor:
        """softmax(q_last . K^T * scaling) averaged over heads: (seq,) float32."""
        q, k = store["q"], store["k"]  # (1, seq, heads * head_dim), (1, seq, kv_heads * head_dim)
        head_dim = attention.head_dim
        bsz, seq, _ = k.shape
        q = q.view(bsz, seq, -1, head_dim).transpose(1, 2)  # (1, heads, seq, head_dim)
        k = k.view(bsz, seq, -1, head_dim).transpose(1, 2)  # (1, kv_heads, seq, head_dim)
        cos, sin = store["position_embeddings"]  # (1, seq, head_dim) each
        q_last = q[:, :, -1:, :]
        q_last = rotary_fn(q_last, q_last, cos[..., -1:, :], sin[..., -1:, :])[0].float()  # (1, heads, 1, hd)
        k = rotary_fn(k, k, cos, sin)[1]
        groups = q.shape[1] // k.shape[1]
        k = k.float().repeat_interleave(groups, dim=1)  # (1, heads, seq, head_dim)
        logits = torch.matmul(q_last, k.transpose(-1, -2)) * attention.scaling  # (1, heads, 1, seq)
        return logits.softmax(dim=-1).mean(dim=1).reshape(seq)

    def clear(self) -> None:
        self.rows.clear()
        for store in self._captured.values():
            store.clear()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.clear()
