"""Installs CATP (and the baselines) into a real transformers VLM with removable hooks.

Where tokens are removed (method.md sections 2-3):
  * before the decoder, in a forward pre-hook on the language model: the image features the
    projector produced (already scattered into ``inputs_embeds``) are selected per image, and the
    embeddings, position ids (original values, M-RoPE rows included) and attention mask are cut;
  * after decoder layers K and K+1 (FastV: after K-1), in forward hooks that return shorter
    hidden states; every later layer gets a pre-hook that cuts its mask, rotary embeddings and
    position ids to the same tokens, and its KV cache only ever holds those tokens.
A :class:`PrunedCache` reports the original (logical) length so that ``generate()`` and the
models' own position bookkeeping stay right while decoding on the shorter cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from catp_agent import stages
from catp_agent.config import PruningConfig, default_k_layer
from catp_agent.models.adapters import ModelAdapter, adapter_for
from catp_agent.models.attention_rows import AttentionRowRecorder
from catp_agent.models.cache import PrunedCache, cache_nbytes
from catp_agent.models.spans import SequenceLayout, build_layout
from catp_agent.pruning import stage2_removal
from catp_agent.records import ContextCandidates, ContextSignals, ForwardRecord

SignalProvider = Callable[[ContextCandidates], ContextSignals | None]


@dataclass
class _Sequence:
    """State of the sequence being prefilled / decoded. Index space "g0" = tokens after stage 1."""

    layout: SequenceLayout
    kept0: torch.Tensor  # (n1,) original positions of the tokens entering the decoder
    image_index0: torch.Tensor  # (n1,) image of each g0 token, -1 for text
    patch_index0: torch.Tensor  # (n1,) patch index of each g0 token, -1 for text
    groups: list[torch.Tensor]  # groups[g]: g0 indices of the tokens in layer group g
    cache: PrunedCache | None
    record: ForwardRecord
    n_query_keep: int = 0
    prefill: bool = True
    timers: dict[str, float] = field(default_factory=dict)


def _check_batch(tensor: torch.Tensor | None, what: str) -> None:
    if tensor is not None and tensor.shape[0] != 1:
        raise ValueError(
            f"pruning supports batch size 1, got {what} with batch size {tensor.shape[0]}: "
            "run the sequences one at a time"
        )


class PruningHandle:
    """Hooks that prune one model; remove them with :meth:`remove` (or leave the ``with``).

    ``last`` is the :class:`ForwardRecord` of the last prefill. ``signal_provider`` (optional)
    supplies temporal / persistence signals to stage 2 (the GUI agent sets it).
    """

    def __init__(self, model: nn.Module, cfg: PruningConfig) -> None:
        if not isinstance(cfg, PruningConfig):
            raise TypeError(f"cfg must be a PruningConfig, got {type(cfg).__name__}")
        self.adapter: ModelAdapter = adapter_for(model)
        self.cfg = cfg
        n_layers = self.adapter.num_layers
        self.k_layer = cfg.k_layer if cfg.k_layer is not None else default_k_layer(n_layers)
        hi = n_layers - 2 if cfg.method == "catp" else n_layers - 1
        if cfg.method in ("catp", "fastv") and not 1 <= self.k_layer <= hi:
            raise ValueError(
                f"k_layer must be in [1, {hi}] for method {cfg.method!r} on this {n_layers}-layer decoder "
                f"(layers K-1{' and K+1' if cfg.method == 'catp' else ''} must exist), got {self.k_layer}"
            )
        self.signal_provider: SignalProvider | None = None
        self.last: ForwardRecord | None = None
        self.decode_steps = 0
        self._seq: _Sequence | None = None
        self._call: dict[str, object] = {}
        self._rows = AttentionRowRecorder()
        self._handles: list[RemovableHandle] = []
        # decision layer -> what it decides; layer -> group index of its tokens
        decisions: dict[int, str] = {}
        if not cfg.is_identity and cfg.method == "catp":
            decisions = {self.k_layer: "context", self.k_layer + 1: "query"}
        elif not cfg.is_identity and cfg.method == "fastv":
            decisions = {self.k_layer - 1: "fastv"}
        self._decisions = decisions
        self._layer_group = [sum(1 for d in decisions if d < j) for j in range(n_layers)]
        self._install()

    # ------------------------------------------------------------------ installation
    def _install(self) -> None:
        a = self.adapter
        self._handles.append(a.model.register_forward_pre_hook(self._on_model_start, with_kwargs=True))
        self._handles.append(a.model.register_forward_hook(self._on_model_end, with_kwargs=True))
        self._handles.append(a.language_model.register_forward_pre_hook(self._on_decoder_start, with_kwargs=True))
        row_layers = {"context": (self.k_layer - 1, self.k_layer), "fastv": (self.k_layer - 1,)}
        for layer_idx, kind in self._decisions.items():
            for r in row_layers.get(kind, ()):
                self._rows.attach(r, a.attention(r), a.rotary_fn(r))
            self._handles.append(a.layers[layer_idx].register_forward_hook(self._decision_hook(kind)))
        for j, layer in enumerate(a.layers):
            if self._layer_group[j] > 0:
                self._handles.append(layer.register_forward_pre_hook(self._slice_hook(self._layer_group[j]), with_kwargs=True))

    def remove(self) -> None:
        """Remove every hook: the model is exactly as it was before."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._rows.remove()
        self._seq = None

    def __enter__(self) -> "PruningHandle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    # ------------------------------------------------------------------ model-level hooks
    def _on_model_start(self, _module: nn.Module, args: tuple, kwargs: dict) -> None:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        past = kwargs.get("past_key_values")
        prefill = past is None or past.get_seq_length() == 0
        _check_batch(input_ids, "input_ids")
        self._call = {"input_ids": input_ids, "prefill": prefill, "t0": time.perf_counter()}
        if prefill:
            self._rows.active = True

    def _on_model_end(self, _module: nn.Module, _args: tuple, _kwargs: dict, output: object) -> None:
        self._rows.active = False
        self._rows.clear()
        if not self._call.get("prefill"):
            self.decode_steps += 1
            return
        seq = self._seq
        if seq is None:
            return
        rec = seq.record
        rec.timings["prefill_s"] = time.perf_counter() - float(self._call["t0"])
        rec.timings.setdefault("stage2_s", 0.0)
        rec.kv_cache_bytes = cache_nbytes(getattr(output, "past_key_values", None))
        final = seq.groups[-1]
        img, patch = seq.image_index0[final], seq.patch_index0[final]
        rec.kept_final = [patch[img == i] for i in range(seq.layout.n_images)]
        if not rec.kept_after_k:
            rec.kept_after_k = rec.kept_final
        rec.tokens_per_layer = [int(seq.groups[g].numel()) for g in self._layer_group]
        rec.image_tokens_per_layer = [int((seq.image_index0[seq.groups[g]] >= 0).sum()) for g in self._layer_group]
        self.last = rec
        self.decode_steps = 0

    # ------------------------------------------------------------------ decoder input (stage 1)
    def _on_decoder_start(self, _module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if not self._call.get("prefill"):
            return self._decode_inputs(args, kwargs)
        t_start = time.perf_counter()
        input_ids = self._call.get("input_ids")
        embeds = kwargs.get("inputs_embeds")
        if input_ids is None or embeds is None:
            raise ValueError("pruning needs input_ids (to find the image spans) and inputs_embeds reaching the decoder")
        _check_batch(embeds, "inputs_embeds")
        cfg = self.cfg
        layout = build_layout(input_ids, self.adapter.image_token_id, cfg.paired_text)
        with torch.no_grad(), stages.single_threaded():
            kept_patches = stages.before_decoder(cfg, layout, embeds[0])
        keep_mask = layout.image_index() < 0
        for span, patches in zip(layout.spans, kept_patches):
            keep_mask[span.start + patches] = True
        kept0 = keep_mask.nonzero().reshape(-1)
        n, n1 = layout.length, int(kept0.numel())
        rec = ForwardRecord(
            method=cfg.method,
            ratio=cfg.ratio,
            k_layer=self.k_layer if cfg.method in ("catp", "fastv") else None,
            n_tokens=n,
            image_spans=[(s.start, s.end) for s in layout.spans],
            kept_stage1=kept_patches,
        )
        rec.timings["vision_s"] = t_start - float(self._call["t0"])
        seq = _Sequence(
            layout=layout,
            kept0=kept0,
            image_index0=layout.image_index()[kept0],
            patch_index0=layout.patch_index()[kept0],
            groups=[torch.arange(n1)],
            cache=None,
            record=rec,
        )
        self._seq = seq
        if cfg.is_identity:
            rec.timings["stage1_s"] = time.perf_counter() - t_start
            return None
        use_cache = kwargs.get("use_cache")
        if use_cache is None:
            use_cache = bool(getattr(self.adapter.text_config, "use_cache", True))
        past = kwargs.get("past_key_values")
        if past is not None and past.get_seq_length() > 0:
            raise ValueError("prefill under pruning must start from an empty cache, got one holding tokens")
        if use_cache:
            seq.cache = PrunedCache(self.adapter.num_layers, removed_before_decoder=n - n1)
            kwargs["past_key_values"] = seq.cache
        if n1 < n:
            device = embeds.device
            idx = kept0.to(device)
            kwargs["inputs_embeds"] = embeds.index_select(1, idx)
            position_ids = kwargs.get("position_ids")
            if position_ids is None:
                position_ids = torch.arange(n, device=device).unsqueeze(0)
            kwargs["position_ids"] = position_ids.index_select(-1, idx)
            kwargs["attention_mask"] = self._cut_2d_mask(kwargs.get("attention_mask"), idx)
        rec.timings["stage1_s"] = time.perf_counter() - t_start
        return args, kwargs

    @staticmethod
    def _cut_2d_mask(mask: object, columns: torch.Tensor) -> object:
        if mask is None:
            return None
        if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
            raise ValueError(
                "pruning needs a 2D attention_mask (batch, seq) or None, got "
                f"{type(mask).__name__}{'' if not isinstance(mask, torch.Tensor) else ' of shape ' + str(tuple(mask.shape))}"
            )
        return mask.index_select(1, columns.to(mask.device))

    def _decode_inputs(self, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        seq = self._seq
        if seq is None or seq.cache is None or kwargs.get("past_key_values") is not seq.cache:
            return None
        mask = kwargs.get("attention_mask")
        if mask is not None:
            n = seq.layout.length
            mask_len = mask.shape[-1]
            cols = torch.cat([seq.kept0, torch.arange(n, mask_len)])
            kwargs["attention_mask"] = self._cut_2d_mask(mask, cols)
        return args, kwargs

    # ------------------------------------------------------------------ decoder layers (stage 2)
    def _slice_hook(self, group: int) -> Callable:
        def hook(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
            seq = self._seq
            if seq is None or seq.cache is None and not self._call.get("prefill"):
                return None
            idx = seq.groups[group].to(args[0].device if args else kwargs["hidden_states"].device)
            mask = kwargs.get("attention_mask")
            if self._call.get("prefill"):
                if isinstance(mask, torch.Tensor):
                    kwargs["attention_mask"] = mask.index_select(-2, idx).index_select(-1, idx)
                cos, sin = kwargs["position_embeddings"]
                kwargs["position_embeddings"] = (cos.index_select(-2, idx), sin.index_select(-2, idx))
                if isinstance(kwargs.get("position_ids"), torch.Tensor):
                    kwargs["position_ids"] = kwargs["position_ids"].index_select(-1, idx)
            elif isinstance(mask, torch.Tensor):
                n1 = seq.groups[0].numel()
                cols = torch.cat([idx, torch.arange(n1, mask.shape[-1], device=idx.device)])
                kwargs["attention_mask"] = mask.index_select(-1, cols)
            return args, kwargs

        return hook

    def _decision_hook(self, kind: str) -> Callable:
        def hook(module: nn.Module, _args: tuple, output: object) -> object:
            seq = self._seq
            if seq is None or not self._call.get("prefill"):
                return None
            t0 = time.perf_counter()
            hidden = output[0] if isinstance(output, tuple) else output
            with torch.no_grad():
                keep_local = self._decide(kind, seq, hidden[0])
            group = seq.groups[-1]
            seq.groups.append(group[keep_local])
            if seq.cache is not None:
                first_after = self._layer_group.index(len(seq.groups) - 1)
                seq.cache.set_removed(first_after, seq.layout.length - int(seq.groups[-1].numel()))
            new_hidden = hidden.index_select(1, keep_local.to(hidden.device))
            seq.record.timings["stage2_s"] = seq.record.timings.get("stage2_s", 0.0) + time.perf_counter() - t0
            if kind == "context":
                img = seq.image_index0[seq.groups[-1]]
                patch = seq.patch_index0[seq.groups[-1]]
                seq.record.kept_after_k = [patch[img == i] for i in range(seq.layout.n_images)]
            if isinstance(output, tuple):
                return (new_hidden, *output[1:])
            return new_hidden

        return hook

    def _decide(self, kind: str, seq: _Sequence, hidden: torch.Tensor) -> torch.Tensor:
        """Indices (into the current group) of the tokens that go on. hidden: (n_g, dim)."""
        group = seq.groups[-1]
        img = seq.image_index0[group]
        n_images = seq.layout.n_images
        total_images = seq.layout.n_image_tokens
        everything = torch.arange(group.numel())
        if kind == "fastv":
            cand = (img >= 0).nonzero().reshape(-1)
            row = self._rows.rows[self.k_layer - 1]
            keep = stages.fastv_keep(self.cfg, row[cand].cpu(), total_images)
            return torch.cat([everything[img < 0], cand[keep]]).sort().values
        if kind == "context":
            cand = ((img >= 0) & (img < n_images - 1)).nonzero().reshape(-1)
            query_img = (img == n_images - 1).nonzero().reshape(-1)
            n_icd_keep, seq.n_query_keep = stage2_removal(
                int(cand.numel()), int(query_img.numel()), total_images, self.cfg.ratio
            )
            prev_row, row = self._rows.rows[self.k_layer - 1].cpu(), self._rows.rows[self.k_layer].cpu()
            seq.record.layer_k_attention = (img[img >= 0], seq.patch_index0[group][img >= 0], row[img >= 0])
            if cand.numel() == 0:
                return everything
            query_pos = seq.layout.query_positions
            in_query = torch.isin(seq.kept0[group], query_pos)
            if not self.cfg.query_vector_includes_image:
                in_query &= img < 0
            vq = hidden[in_query.to(hidden.device)].float().mean(dim=0)
            signals = None
            if self.signal_provider is not None:
                signals = self.signal_provider(
                    ContextCandidates(
                        image_index=img[cand],
                        patch_index=seq.patch_index0[group][cand],
                        attention_k=row[cand],
                        attention_prev=prev_row[cand],
                        query_patch_index=seq.patch_index0[group][query_img],
                        query_attention_k=row[query_img],
                        n_images=n_images,
                        n_keep=n_icd_keep,
                    )
                )
            keep, scores = stages.context_keep(
                self.cfg, n_icd_keep, prev_row[cand], row[cand],
                hidden[cand.to(hidden.device)].float().cpu(), vq.cpu(), signals,
            )
            seq.record.context_scores = scores
            return torch.cat([everything[(img < 0) | (img == n_images - 1)], cand[keep]]).sort().values
        # kind == "query": the query image tokens, scored against the surviving ICD tokens
        query_img = (img == n_images - 1).nonzero().reshape(-1)
        icd = ((img >= 0) & (img < n_images - 1)).nonzero().reshape(-1)
        if icd.numel():
            context_vector = hidden[icd.to(hidden.device)].float().mean(dim=0)
        else:  # no demonstration: score against the query's own text (documented fallback)
            context_vector = hidden[(img < 0).to(hidden.device)].float().mean(dim=0)
        keep = stages.query_keep(seq.n_query_keep, hidden[query_img.to(hidden.device)].float().cpu(), context_vector.cpu())
        return torch.cat([everything[img != n_images - 1], query_img[keep]]).sort().values


def attach(model: nn.Module, cfg: PruningConfig) -> PruningHandle:
    """Install pruning on ``model`` until ``handle.remove()``; prefer :func:`prune` (a ``with``)."""
    return PruningHandle(model, cfg)

