"""CATP and the baselines inside real (tiny, random-weight) transformers VLMs."""

from __future__ import annotations

import warnings

import pytest
import torch

from catp_agent import PruningConfig, prune
from catp_agent.methods import METHODS, config_fields
from catp_agent.models.cache import PrunedCache, output_cache
from catp_agent.pruning import keep_count

pytestmark = pytest.mark.compat  # CI runs it on the oldest supported versions too (the pruning core on every family)

K_LAYER = 2  # the tiny models have 6 decoder layers

PRUNING_METHODS = [m for m in METHODS if m != "none"]


def config(method: str, ratio: float):
    """The method's config at R = ratio, with K = K_LAYER for the methods that have a K."""
    with_k = {"k_layer": K_LAYER} if "k_layer" in config_fields(method) else {}
    return PruningConfig(method=method, ratio=ratio, **with_k)


def logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits[0]


def greedy(model, inputs, n: int = 6) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=n, do_sample=False, min_new_tokens=n)


@pytest.mark.parametrize("method", METHODS)
def test_ratio_zero_reproduces_the_unpruned_model(setup, method):
    model, _, _, inputs = setup
    ref, ref_tokens = logits(model, inputs), greedy(model, inputs)
    with prune(model, config(method, 0.0)) as handle:
        out, tokens = logits(model, inputs), greedy(model, inputs)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-5, rtol=0)
    assert torch.equal(tokens, ref_tokens)
    assert handle.last.n_kept_final == handle.last.n_image_tokens


def test_leaving_the_context_restores_the_model_bit_for_bit(setup):
    model, _, _, inputs = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hooks_before = hook_census(model)
    ref = logits(model, inputs)
    with prune(model, config("catp", 0.778)):
        pruned = logits(model, inputs)
    assert not torch.allclose(pruned[-1], ref[-1])  # pruning changed something inside
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert hook_census(model) == hooks_before
    assert torch.equal(logits(model, inputs), ref)


def hook_census(model) -> list[tuple[str, int, int]]:
    """(module name, forward hooks, forward pre-hooks) of every module that has any."""
    return [(name, len(m._forward_hooks), len(m._forward_pre_hooks)) for name, m in model.named_modules()
            if m._forward_hooks or m._forward_pre_hooks]


def masked_reference(model, inputs, record, method: str) -> torch.Tensor:
    """The full sequence, with removed tokens masked out of attention from their removal on."""
    n = record.n_tokens
    alive_at = {name: torch.zeros(n, dtype=torch.bool) for name in ("stage1", "after_k", "final")}
    for name in alive_at:
        alive_at[name][record.kept_positions(name)] = True
    layers = model.model.language_model.layers
    per_layer = []
    for j in range(len(layers)):
        if method == "catp":
            name = "stage1" if j <= K_LAYER else ("after_k" if j == K_LAYER + 1 else "final")
        elif method == "fastv":
            name = "stage1" if j <= K_LAYER - 1 else "final"
        else:
            name = "final"
        alive = alive_at[name]
        causal = torch.ones(n, n, dtype=torch.bool).tril()
        allowed = causal & (alive[None, :] | torch.eye(n, dtype=torch.bool))
        per_layer.append(allowed[None, None])
    handles = []
    for j, layer in enumerate(layers):
        def pre(_m, args, kwargs, mask=per_layer[j]):
            kwargs["attention_mask"] = mask
            return args, kwargs
        handles.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
    try:
        return logits(model, inputs)
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("method", PRUNING_METHODS)
def test_pruned_forward_equals_masked_reference(setup, method):
    model, _, _, inputs = setup
    with prune(model, config(method, 0.778)) as handle:
        pruned = logits(model, inputs)
    record = handle.last
    final = record.kept_positions("final")
    assert pruned.shape[0] == final.numel() < record.n_tokens
    reference = masked_reference(model, inputs, record, method)
    assert torch.allclose(pruned, reference[final], atol=1e-4, rtol=1e-4), (pruned - reference[final]).abs().max()


@pytest.mark.parametrize("ratio", [0.3, 0.667, 0.778, 0.889])
@pytest.mark.parametrize("method", PRUNING_METHODS)
def test_image_tokens_reaching_layer_k_plus_2_match_the_budget(setup, method, ratio):
    model, _, _, inputs = setup
    with prune(model, config(method, ratio)) as handle:
        logits(model, inputs)
    record = handle.last
    expected = keep_count(record.n_image_tokens, ratio)
    assert record.image_tokens_per_layer[K_LAYER + 2] == expected
    assert record.n_kept_final == expected
    n_text = record.n_tokens - record.n_image_tokens
    assert record.tokens_per_layer[-1] == n_text + expected
    if method == "catp":  # stage 1 keeps floor(S_i (1 - R/2)) of every image
        sizes = [end - start for start, end in record.image_spans]
        assert [k.numel() for k in record.kept_stage1] == [keep_count(s, ratio / 2) for s in sizes]
        assert record.image_tokens_per_layer[K_LAYER] == sum(keep_count(s, ratio / 2) for s in sizes)


@pytest.mark.parametrize("method", PRUNING_METHODS)
def test_every_method_generates_on_the_pruned_cache(setup, method):
    model, _, _, inputs = setup
    n_new = 5
    with prune(model, config(method, 0.778)) as handle, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False,
                                 return_dict_in_generate=True)
    # transformers >= 5.24 ignores a cache passed under the old name next to the new one, with a warning
    assert not [w for w in caught if "ignoring deprecated" in str(w.message)]
    assert out.sequences.shape[1] == inputs["input_ids"].shape[1] + n_new
    assert handle.decode_steps == n_new - 1
    cache = output_cache(out)
    assert isinstance(cache, PrunedCache)  # generate() decoded on the engine's cache, not its own
    final_len = handle.last.tokens_per_layer[-1]
    # the last layer stores only the kept prompt tokens plus the decoded ones
    assert cache.layers[-1].keys.shape[-2] == final_len + n_new - 1
    assert cache.get_seq_length() == inputs["input_ids"].shape[1] + n_new - 1
    assert handle.last.kv_cache_bytes > 0


def test_kv_cache_shrinks_with_the_ratio(setup):
    model, _, _, inputs = setup
    sizes = []
    for ratio in (0.0, 0.5, 0.889):
        with prune(model, config("catp", ratio)) as handle:
            logits(model, inputs)
        sizes.append(handle.last.kv_cache_bytes)
    assert sizes[0] > sizes[1] > sizes[2]


def test_mrope_position_ids_of_survivors_are_their_original_ids(family, family_setup_fn):
    if not family.startswith("qwen"):
        pytest.skip("M-RoPE is Qwen2-VL's")
    model, _, _, inputs = family_setup_fn(family)
    full_positions, _ = model.model.get_rope_index(
        inputs["input_ids"], image_grid_thw=inputs["image_grid_thw"],
        attention_mask=inputs["attention_mask"], mm_token_type_ids=inputs["mm_token_type_ids"],
    )  # (3, 1, n)
    seen: dict[str, torch.Tensor] = {}
    full_cos: dict[str, torch.Tensor] = {}

    def grab_ids(_m, _a, kwargs):
        seen["ids"] = kwargs["position_ids"]

    def grab_cos(store):
        def hook(_m, _a, kwargs):
            store["cos"] = kwargs["position_embeddings"][0]
        return hook

    late = model.model.language_model.layers[K_LAYER + 2]
    h = late.register_forward_pre_hook(grab_cos(full_cos), with_kwargs=True)
    logits(model, inputs)
    h.remove()
    with prune(model, config("catp", 0.778)) as handle:
        lm = model.model.language_model
        hooks = [lm.register_forward_pre_hook(grab_ids, with_kwargs=True),
                 late.register_forward_pre_hook(grab_cos(seen), with_kwargs=True)]
        logits(model, inputs)
        for hk in hooks:
            hk.remove()
    stage1 = handle.last.kept_positions("stage1")
    ids = seen["ids"]
    ids = ids[-3:] if ids.shape[0] == 4 else ids  # (4, 1, n): the first row is the text position
    assert torch.equal(ids[:, 0, :], full_positions[:, 0, stage1])
    # 3-row ids really differ from plain 1-D positions here (images have 2-D grids)
    assert not torch.equal(full_positions[0], full_positions[1])
    final = handle.last.kept_positions("final")
    assert torch.equal(seen["cos"][0], full_cos["cos"][0, final])
