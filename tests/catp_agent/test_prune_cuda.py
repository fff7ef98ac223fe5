"""The pruning core on a CUDA device in bf16 with SDPA (``pytest -m gpu``; skipped without CUDA).

Tolerances: at R = 0 the hooks change nothing, so the logits are expected bit for bit equal;
the assertion allows 2 bf16 ulps at magnitude 1 (``atol = rtol = 2 ** -7``) so that a kernel
choice the hooks might change does not read as a failure, and the test records whether the
outputs were bitwise equal. The selection loops on the GPU (``recompute``) and on the CPU
(``numpy``) compute float32 sums in different orders; gains that differ by less than the tie
tolerance count as tied either way, so on random features their picks are expected equal.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from catp_agent import PruningConfig, prune
from catp_agent.methods import METHODS, config_fields
from catp_agent.models.cache import output_cache
from catp_agent.models.tiny import FAMILIES, build_processor, build_tiny_model, demo_inputs
from catp_agent.pruning import divprune_select, facility_location_greedy_many, keep_count

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

K_LAYER = 2
BF16_TOL = 2.0**-7
PRUNING_METHODS = [m for m in METHODS if m != "none"]
_MODELS: dict[str, tuple] = {}


def cuda_setup(family: str) -> tuple:
    """(model, inputs): a 6-layer random-weight model of ``family`` on CUDA in bf16, SDPA."""
    if family not in _MODELS:
        model, tok = build_tiny_model(family, num_layers=6, seed=1)
        inputs = demo_inputs(build_processor(family, tok))
        model = model.to(device="cuda", dtype=torch.bfloat16)
        inputs = {k: (v.to("cuda", torch.bfloat16) if v.is_floating_point() else v.to("cuda"))
                  if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        _MODELS[family] = (model, inputs)
    return _MODELS[family]


def config(method: str, ratio: float) -> PruningConfig:
    with_k = {"k_layer": K_LAYER} if "k_layer" in config_fields(method) else {}
    return PruningConfig(method=method, ratio=ratio, **with_k)


def logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits[0]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", METHODS)
def test_ratio_zero_reproduces_the_unpruned_model_in_bf16(family: str, method: str, record_property) -> None:
    model, inputs = cuda_setup(family)
    ref = logits(model, inputs)
    with prune(model, config(method, 0.0)):
        out = logits(model, inputs)
    assert out.device.type == "cuda" and out.dtype == torch.bfloat16
    record_property("bitwise_equal", bool(torch.equal(out, ref)))
    torch.testing.assert_close(out, ref, atol=BF16_TOL, rtol=BF16_TOL)


@pytest.mark.parametrize("method", PRUNING_METHODS)
@pytest.mark.parametrize("ratio", [0.667, 0.778, 0.889])
def test_kept_counts_meet_the_budget_on_cuda(method: str, ratio: float) -> None:
    model, inputs = cuda_setup("qwen2_5_vl")
    with prune(model, config(method, ratio)) as handle:
        out = logits(model, inputs)
    record = handle.last
    expected = keep_count(record.n_image_tokens, ratio)
    assert record.image_tokens_per_layer[K_LAYER + 2] == expected == record.n_kept_final
    assert out.shape[0] == record.tokens_per_layer[-1]
    assert torch.isfinite(out.float()).all()
    if method == "catp":
        sizes = [end - start for start, end in record.image_spans]
        assert [k.numel() for k in record.kept_stage1] == [keep_count(s, ratio / 2) for s in sizes]


@pytest.mark.parametrize("method", PRUNING_METHODS)
def test_generate_runs_on_the_pruned_cache_on_cuda(method: str) -> None:
    model, inputs = cuda_setup("qwen2_vl")
    n_new = 5
    with prune(model, config(method, 0.778)) as handle, torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False,
                             return_dict_in_generate=True)
    assert out.sequences.shape[1] == inputs["input_ids"].shape[1] + n_new
    assert output_cache(out).layers[-1].keys.shape[-2] == handle.last.tokens_per_layer[-1] + n_new - 1
    assert handle.last.timings["prefill_s"] > 0 and handle.last.kv_cache_bytes > 0


@pytest.mark.parametrize("tokens", [289, 1280])
def test_selection_on_cuda_picks_what_the_cpu_picks(tokens: int) -> None:
    g = torch.Generator().manual_seed(tokens)
    feats = [torch.randn(tokens, 256, generator=g) for _ in range(3)]
    vectors = [torch.randn(256, generator=g), None, torch.randn(256, generator=g)]
    keep = keep_count(tokens, 0.778 / 2)
    cpu = facility_location_greedy_many(feats, vectors, [keep] * 3)
    gpu = facility_location_greedy_many([f.cuda() for f in feats], [None if v is None else v.cuda() for v in vectors],
                                        [keep] * 3)
    assert all(p.device.type == "cuda" for p in gpu)
    assert all(torch.equal(a, b.cpu()) for a, b in zip(cpu, gpu))
    for _ in range(2):  # captured on the first call, replayed on the second
        graphed = facility_location_greedy_many([f.cuda() for f in feats],
                                                [None if v is None else v.cuda() for v in vectors], [keep] * 3,
                                                impl="recompute_graph")
        assert all(torch.equal(a, b) for a, b in zip(gpu, graphed))
    keep_d = keep_count(tokens, 0.778)
    assert all(torch.equal(divprune_select(f, keep_d), divprune_select(f.cuda(), keep_d).cpu()) for f in feats)


@pytest.mark.parametrize("method", ["catp", "fastv", "divprune", "random", "recency"])
def test_agent_step_on_cuda_in_bf16(method: str) -> None:
    """The real VLMPolicy (history, vision reuse, selection cache, temporal signals) on the
    Qwen2.5-VL 7B preset's structure at tiny widths, on CUDA in bf16."""
    from catp_agent.agent.model_io import load_agent_model
    from catp_agent.harness.presets import build_preset_model
    from policies import make_policy

    model, tok = build_preset_model("qwen2.5-vl-7b", "tiny", device="cuda", dtype=torch.bfloat16, seed=2)
    processor = build_processor("qwen2_5_vl", tok, min_pixels=224 * 280, max_pixels=224 * 280).image_processor
    agent = load_agent_model(model, tokenizer=tok, image_processor=processor)
    with_k = {"k_layer": 1} if "k_layer" in config_fields(method) else {}
    policy = make_policy("vlm", model=agent, history=2, max_new_tokens=3, dialect="qwen25vl",
                         pruning=PruningConfig(method=method, ratio=0.778, **with_k))
    policy.reset()
    rng = np.random.RandomState(0)
    for i in range(4):
        pixels = (rng.rand(224, 280, 3) * 255).astype("uint8")
        action = policy.act({"screenshot": pixels, "instruction": "log in", "last_action_error": "", "step": i}, {})
        assert isinstance(action, str)
    step = policy.last_report.to_dict()
    assert step["image_tokens_in"] == 3 * 80  # history 2 + current, 224 x 280 px = 8 x 10 tokens
    assert step["kept_final"] == keep_count(step["image_tokens_in"], 0.778), step
    assert step["kv_cache_bytes"] > 0 and step["prefill_s"] > 0
