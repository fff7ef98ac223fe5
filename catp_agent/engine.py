"""The hook engine: installs any registered pruning method into a real transformers VLM.

The engine knows nothing of what a method scores; it asks the method (``catp_agent.methods``)
which patches enter the decoder and, after the layers the method names, which tokens go on,
and it really removes the others (docs/method.md section 3, "Removal is real"):

  * before the decoder, in a forward pre-hook on the language model: the image features the
    projector produced (already in ``inputs_embeds``) are cut to the method's picks, with the
    position ids (original values, M-RoPE rows included) and the attention mask;
  * after a deciding layer, a forward hook returns shorter hidden states; every later layer
    gets a pre-hook that cuts its mask, rotary embeddings and position ids to the same tokens,
    and its KV cache only ever holds those tokens.

A :class:`PrunedCache` reports the original (logical) length so that ``generate()`` and the
models' own position bookkeeping stay right while decoding on the shorter cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from catp_agent.methods import DecisionInput, MethodConfig, PruningMethod, SelectionCache, make_method
from catp_agent.methods.base import SignalProvider
from catp_agent.models.attention_rows import AttentionRowRecorder
from catp_agent.models.cache import PrunedCache, cache_argument, cache_nbytes, output_cache, passed_cache, set_cache
from catp_agent.models.families import ModelAdapter, adapter_for
from catp_agent.pruning.spans import SequenceLayout, build_layout
from catp_agent.records import ForwardRecord


def synced_clock(device: torch.device | str | None = None) -> float:
    """``time.perf_counter()`` after the work queued on a CUDA ``device`` has finished (on a GPU
    a kernel launch returns at once, so an unsynchronised clock times the queueing, not the
    work). On the CPU it is the plain clock."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


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
    state: dict = field(default_factory=dict)  # the method's per-prefill state

    def kept_per_image(self, group: torch.Tensor) -> list[torch.Tensor]:
        img, patch = self.image_index0[group], self.patch_index0[group]
        return [patch[img == i] for i in range(self.layout.n_images)]


def _check_batch(tensor: torch.Tensor | None, what: str) -> None:
    if tensor is not None and tensor.shape[0] != 1:
        raise ValueError(
            f"pruning supports batch size 1, got {what} with batch size {tensor.shape[0]}: "
            "run the sequences one at a time"
        )


def _cut_2d_mask(mask: object, columns: torch.Tensor) -> object:
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        raise ValueError(
            "pruning needs a 2D attention_mask (batch, seq) or None, got "
            f"{type(mask).__name__}{'' if not isinstance(mask, torch.Tensor) else ' of shape ' + str(tuple(mask.shape))}"
        )
    return mask.index_select(1, columns.to(mask.device))


class PruningHandle:
    """Hooks that prune one model; remove them with :meth:`remove` (or leave the ``with``).

    ``method`` is the method object (its ``k_layer`` resolved for this model), ``last`` the
    :class:`ForwardRecord` of the last prefill. ``signal_provider`` (optional) supplies
    temporal / persistence signals to methods that read them (the GUI agent sets it).
    ``selection_cache`` (optional) keeps per-image selections across forwards: pass the same
    :class:`SelectionCache` to every step of an episode and history screenshots are selected once.
    """

    def __init__(self, model: nn.Module, cfg: MethodConfig, selection_cache: SelectionCache | None = None) -> None:
        self.adapter: ModelAdapter = adapter_for(model)
        self.cfg = cfg
        self._device: torch.device | None = None  # the input's device, set per forward (timing syncs)
        self.method: PruningMethod = make_method(cfg, self.adapter.num_layers)
        self.method.selection_cache = selection_cache
        self.k_layer = self.method.k_layer
        self.signal_provider: SignalProvider | None = None
        self.last: ForwardRecord | None = None
        self.decode_steps = 0
        self._seq: _Sequence | None = None
        self._call: dict[str, object] = {}
        self._rows = AttentionRowRecorder()
        self._handles: list[RemovableHandle] = []
        self._cache_argument = cache_argument(self.adapter.language_model)  # "cache" or "past_key_values"
        n_layers = self.adapter.num_layers
        self._decisions = {} if cfg.is_identity else dict(sorted(self.method.decisions().items()))
        bad = [j for j in self._decisions if not 0 <= j < n_layers]
        if bad:
            raise ValueError(
                f"method {cfg.method!r} decides after layer {bad[0]}, but this decoder has layers 0..{n_layers - 1}"
            )
        self._row_layers = () if cfg.is_identity else tuple(self.method.attention_layers())
        # layer -> group index of the tokens it runs on (group g = after the first g decisions)
        self._layer_group = [sum(1 for d in self._decisions if d < j) for j in range(n_layers)]
        self._install()

    # ------------------------------------------------------------------ installation
    def _install(self) -> None:
        a = self.adapter
        self._handles.append(a.model.register_forward_pre_hook(self._on_model_start, with_kwargs=True))
        self._handles.append(a.model.register_forward_hook(self._on_model_end, with_kwargs=True))
        self._handles.append(a.language_model.register_forward_pre_hook(self._on_decoder_start, with_kwargs=True))
        for r in self._row_layers:
            self._rows.attach(r, a.attention(r), a.rotary_fn(r))
        for layer_idx, name in self._decisions.items():
            self._handles.append(a.layers[layer_idx].register_forward_hook(self._decision_hook(layer_idx, name)))
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

    def __enter__(self) -> PruningHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    # ------------------------------------------------------------------ model-level hooks
    def _on_model_start(self, _module: nn.Module, args: tuple, kwargs: dict) -> None:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        past = passed_cache(kwargs)
        prefill = past is None or past.get_seq_length() == 0
        _check_batch(input_ids, "input_ids")
        self._device = input_ids.device if isinstance(input_ids, torch.Tensor) else None
        self._call = {"input_ids": input_ids, "prefill": prefill, "t0": synced_clock(self._device)}
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
        rec.timings["prefill_s"] = synced_clock(self._device) - float(self._call["t0"])
        rec.timings.setdefault("stage2_s", 0.0)
        rec.kv_cache_bytes = cache_nbytes(output_cache(output))
        rec.kept_final = seq.kept_per_image(seq.groups[-1])
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
        t_start = synced_clock(self._device)
        input_ids = self._call.get("input_ids")
        embeds = kwargs.get("inputs_embeds")
        if input_ids is None or embeds is None:
            raise ValueError("pruning needs input_ids (to find the image spans) and inputs_embeds reaching the decoder")
        _check_batch(embeds, "inputs_embeds")
        cfg = self.cfg
        layout = build_layout(input_ids, self.adapter.image_token_id)
        kept_patches = None
        cache = self.method.selection_cache
        hits_before = cache.hits if cache is not None else 0
        if not cfg.is_identity:
            with torch.no_grad():  # the greedy loops inside run on one thread (pruning.greedy_cpu)
                kept_patches = self.method.before_decoder(layout, embeds[0])
            if kept_patches is not None:  # picks made on a GPU index the host-side layout
                kept_patches = [patches.cpu() for patches in kept_patches]
        if kept_patches is None:
            kept_patches = [torch.arange(span.size) for span in layout.spans]
        self._check_patches(kept_patches, layout)
        keep_mask = layout.image_index() < 0
        for span, patches in zip(layout.spans, kept_patches):
            keep_mask[span.start + patches] = True
        kept0 = keep_mask.nonzero().reshape(-1)
        n, n1 = layout.length, int(kept0.numel())
        rec = ForwardRecord(
            method=cfg.method,
            ratio=cfg.ratio,
            k_layer=self.k_layer,
            n_tokens=n,
            image_spans=[(s.start, s.end) for s in layout.spans],
            kept_stage1=list(kept_patches),
            config=self.method.resolved_config(),
            stage1_reused=(cache.hits - hits_before) if cache is not None else 0,
        )
        rec.timings["vision_s"] = t_start - float(self._call["t0"])
        seq = _Sequence(layout, kept0, layout.image_index()[kept0], layout.patch_index()[kept0], [torch.arange(n1)], None, rec)
        self._seq = seq
        if cfg.is_identity:
            rec.timings["stage1_s"] = synced_clock(self._device) - t_start
            return None
        use_cache = kwargs.get("use_cache")
        if use_cache is None:
            use_cache = bool(getattr(self.adapter.text_config, "use_cache", True))
        past = passed_cache(kwargs)
        if past is not None and past.get_seq_length() > 0:
            raise ValueError("prefill under pruning must start from an empty cache, got one holding tokens")
        if use_cache:
            seq.cache = PrunedCache(self.adapter.num_layers, removed_before_decoder=n - n1)
            set_cache(kwargs, self._cache_argument, seq.cache)
        if n1 < n:
            device = embeds.device
            idx = kept0.to(device)
            kwargs["inputs_embeds"] = embeds.index_select(1, idx)
            position_ids = kwargs.get("position_ids")
            if position_ids is None:
                position_ids = torch.arange(n, device=device).unsqueeze(0)
            kwargs["position_ids"] = position_ids.index_select(-1, idx)
            kwargs["attention_mask"] = _cut_2d_mask(kwargs.get("attention_mask"), idx)
        rec.timings["stage1_s"] = synced_clock(self._device) - t_start
        return args, kwargs

    def _check_patches(self, kept: list[torch.Tensor], layout: SequenceLayout) -> None:
        if len(kept) != layout.n_images:
            raise RuntimeError(
                f"method {self.cfg.method!r} returned picks for {len(kept)} images, the sequence holds {layout.n_images}"
            )
        for i, (patches, span) in enumerate(zip(kept, layout.spans)):
            if patches.numel() and (int(patches.min()) < 0 or int(patches.max()) >= span.size):
                raise RuntimeError(
                    f"method {self.cfg.method!r} picked patch indices outside image {i} (size {span.size})"
                )

    def _decode_inputs(self, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        seq = self._seq
        if seq is None or seq.cache is None or passed_cache(kwargs) is not seq.cache:
            return None
        mask = kwargs.get("attention_mask")
        if mask is not None:
            n = seq.layout.length
            cols = torch.cat([seq.kept0, torch.arange(n, mask.shape[-1])])
            kwargs["attention_mask"] = _cut_2d_mask(mask, cols)
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

    def _decision_hook(self, layer_idx: int, name: str) -> Callable:
        def hook(_module: nn.Module, _args: tuple, output: object) -> object:
            seq = self._seq
            if seq is None or not self._call.get("prefill"):
                return None
            hidden = output[0] if isinstance(output, tuple) else output
            t0 = synced_clock(hidden.device)
            group = seq.groups[-1]
            step = DecisionInput(
                layer=layer_idx,
                hidden=hidden[0],
                image_index=seq.image_index0[group],
                patch_index=seq.patch_index0[group],
                positions=seq.kept0[group],
                rows=dict(self._rows.rows),
                layout=seq.layout,
                record=seq.record,
                state=seq.state,
                signals=self.signal_provider,
            )
            with torch.no_grad():
                keep_local = self.method.decide(name, step).reshape(-1)
            self._check_decision(name, keep_local, step)
            seq.groups.append(group[keep_local])
            if seq.cache is not None:
                first_after = self._layer_group.index(len(seq.groups) - 1)
                seq.cache.set_removed(first_after, seq.layout.length - int(seq.groups[-1].numel()))
            new_hidden = hidden.index_select(1, keep_local.to(hidden.device))
            seq.record.timings["stage2_s"] = seq.record.timings.get("stage2_s", 0.0) + synced_clock(hidden.device) - t0
            kept = seq.kept_per_image(seq.groups[-1])
            seq.record.kept_by_layer.append((layer_idx, kept))
            if len(seq.groups) == 2:
                seq.record.kept_after_k = kept
            if isinstance(output, tuple):
                return (new_hidden, *output[1:])
            return new_hidden

        return hook

    def _check_decision(self, name: str, keep: torch.Tensor, step: DecisionInput) -> None:
        n = step.image_index.numel()
        text = int((step.image_index < 0).sum())
        valid = keep.numel() == 0 or (int(keep.min()) >= 0 and int(keep.max()) < n and bool((keep.diff() > 0).all()))
        if not valid or int((step.image_index[keep] < 0).sum()) != text:
            raise RuntimeError(
                f"method {self.cfg.method!r} decision {name!r} must return sorted, distinct indices into the "
                f"{n} current tokens that include all {text} text tokens"
            )


@contextmanager
def prune(model: nn.Module, cfg: MethodConfig, selection_cache: SelectionCache | None = None) -> Iterator[PruningHandle]:
    """Prune image tokens of ``model`` inside the block; leaving it restores the model exactly.

    cfg: any registered method's config, e.g. ``PruningConfig(method="catp", ratio=0.778)``.
    selection_cache: reuse per-image selections across calls (see :class:`PruningHandle`).

    >>> cfg = PruningConfig(method="catp", ratio=0.778, k_layer=6)
    >>> with prune(model, cfg) as handle:            # doctest: +SKIP
    ...     out = model.generate(**inputs, max_new_tokens=8)
    >>> handle.last.summary()                        # doctest: +SKIP
    """
    handle = PruningHandle(model, cfg, selection_cache)
    try:
        yield handle
    finally:
        handle.remove()


def attach(model: nn.Module, cfg: MethodConfig) -> PruningHandle:
    """Install pruning on ``model`` until ``handle.remove()``; prefer :func:`prune` (a ``with``)."""
    return PruningHandle(model, cfg)
