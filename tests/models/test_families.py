"""Every registered model family builds a tiny model, is found by adapter_for, reads its image
grids, and runs a forward on precomputed image features; a new family is one module."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch
from torch import nn
from transformers import LlavaForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutputWithPooling

from catp_agent import PruningConfig, prune
from catp_agent.agent.vision_cache import PRECOMPUTED_FEATURES, model_image_inputs
from catp_agent.models import tiny
from catp_agent.models.families import (
    ModelAdapter,
    ModelFamily,
    TinySizes,
    adapter_for,
    family_for,
    family_names,
    get_family,
    register_family,
    unregister_family,
)
from catp_agent.models.families.llava import LLAVA_TEMPLATE, LLAVA_TOKENS, LlavaFamily
from catp_agent.pruning import keep_count
from catp_agent.pruning.spans import expand_image_tokens

pytestmark = pytest.mark.compat  # CI runs it on the oldest supported versions too (the pruning core on every family)

BUILT_INS = ("qwen2_vl", "qwen2_5_vl", "llava", "llava_next")
REGISTERED = family_names()  # every family registered when the tests are collected
IMAGE_SIZE = (84, 112)  # (height, width) of the random screenshots
# (rows, cols) of one 84x112 image's tokens, worked out by hand from each tiny processor:
# Qwen resizes to 84x112 (multiples of 28): 6x8 patches of 14 px, merged 2x2 -> 3x4.
# LLaVA resizes and crops to 56x56: 4x4 patches of 14 px. LLaVA-NeXT adds tiles and newline
# tokens (44 tokens), which form no grid: one row.
EXPECTED_GRID = {"qwen2_vl": (3, 4), "qwen2_5_vl": (3, 4), "llava": (4, 4), "llava_next": (1, 44)}

_BUILT: dict[str, tuple] = {}


def built(name: str) -> tuple:
    """(family, model, tokenizer, processor) of a 3-layer tiny model, built once per family."""
    if name not in _BUILT:
        model, tok = tiny.build_tiny_model(name, num_layers=3, seed=0)
        _BUILT[name] = (get_family(name), model, tok, tiny.build_processor(name, tok))
    return _BUILT[name]


def precomputed_inputs(family: ModelFamily, model: nn.Module, tok, processor, n_images: int = 2) -> tuple[dict, list]:
    """What VLMPolicy.build_inputs does: each image encoded alone, its features passed
    precomputed, the family's extra inputs added. Returns (inputs, per-image vision inputs)."""
    images = tiny.random_images(n_images, IMAGE_SIZE)
    image_processor = processor.image_processor
    per_image = [family.vision_inputs(dict(image_processor(images=[im], return_tensors="pt"))) for im in images]
    with torch.no_grad():
        features = [family.image_features(model, p)[0] for p in per_image]
    text = processor.apply_chat_template(tiny.icl_messages(n_images), add_generation_prompt=True, tokenize=False)
    enc = tok([expand_image_tokens(text, family.tokens.image, [f.shape[0] for f in features])], return_tensors="pt")
    inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
              "mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=features)}}
    inputs.update(family.extra_inputs(enc["input_ids"], per_image, adapter_for(model).image_token_id))
    return inputs, per_image


def test_the_four_built_ins_are_registered_and_tiny_lists_them():
    assert family_names()[:4] == BUILT_INS
    assert tiny.FAMILIES == BUILT_INS


def test_the_adapter_keeps_its_attributes():
    assert [f.name for f in fields(ModelAdapter)] == [
        "family", "model", "language_model", "layers", "image_token_id", "text_config"]


@pytest.mark.parametrize("name", REGISTERED)
def test_tiny_model_and_adapter(name):
    family, model, tok, _ = built(name)
    assert isinstance(model, family.load_model_class())
    assert type(model).__name__ in family.class_names
    assert family_for(model) is family
    adapter = adapter_for(model)
    assert adapter.family == name
    assert adapter.num_layers == 3  # the tiny model's decoder depth, not the vision tower's
    assert all(layer in list(adapter.language_model.modules()) for layer in adapter.layers)
    for i in range(3):
        attention = adapter.attention(i)
        assert attention in list(adapter.layers[i].modules())
        # what the engine's attention-row recorder uses: projections, head size, scaling, rotary
        assert isinstance(attention.q_proj, nn.Linear) and isinstance(attention.k_proj, nn.Linear)
        assert attention.head_dim * model.config.get_text_config().num_attention_heads == attention.q_proj.out_features
        assert attention.scaling == pytest.approx(attention.head_dim**-0.5)
        assert callable(adapter.rotary_fn(i))
    assert adapter.image_token_id == tok.convert_tokens_to_ids(family.tokens.image)
    assert adapter.text_config.num_hidden_layers == 3
    assert tok.chat_template == family.chat_template


@pytest.mark.parametrize("name", REGISTERED)
def test_image_grid_of_the_tiny_processor_output(name):
    family, model, tok, processor = built(name)
    _, per_image = precomputed_inputs(family, model, tok, processor, n_images=1)
    with torch.no_grad():
        n_tokens = family.image_features(model, per_image[0])[0].shape[0]
    rows, cols = family.image_grid(per_image[0], n_tokens)
    if name not in EXPECTED_GRID:
        pytest.fail(f"add the (rows, cols) of one {IMAGE_SIZE} image of family {name!r} to EXPECTED_GRID")
    assert (rows, cols) == EXPECTED_GRID[name]
    assert rows * cols == n_tokens


@pytest.mark.skipif(not PRECOMPUTED_FEATURES, reason="transformers < 5.18 takes no mm_encoder_outputs")
@pytest.mark.parametrize("name", REGISTERED)
def test_precomputed_features_with_extra_inputs_give_the_processor_forward(name):
    family, model, tok, processor = built(name)
    inputs, _ = precomputed_inputs(family, model, tok, processor)
    reference = tiny.demo_inputs(processor, n_images=2, size=IMAGE_SIZE)
    assert torch.equal(inputs["input_ids"], reference["input_ids"])
    with torch.no_grad():
        got, want = model(**inputs).logits, model(**reference).logits
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


@pytest.mark.parametrize("name", REGISTERED)
def test_vision_inputs_name_what_is_missing(name):
    family = get_family(name)
    with pytest.raises(ValueError, match=rf"{family.title} needs processor outputs.*missing"):
        family.vision_inputs({"input_ids": torch.zeros(1, 1)})


def test_unsupported_classes_get_a_clear_error():
    class NotAVLM(nn.Module):
        pass

    with pytest.raises(TypeError, match=r"unsupported model class NotAVLM; catp-agent supports \[.*LlavaForCond"):
        adapter_for(NotAVLM())


def test_registry_errors_name_the_bad_value():
    with pytest.raises(ValueError, match=r"family must be one of \['qwen2_vl'.*got 'gpt2'"):
        get_family("gpt2")
    def llava_like(name: str, model_class: str = "transformers:LlavaForConditionalGeneration") -> LlavaFamily:
        return LlavaFamily(name=name, title=name, model_class=model_class, config_class="transformers:LlavaConfig",
                           image_processor_class="transformers:CLIPImageProcessorPil", tokens=LLAVA_TOKENS,
                           chat_template="")

    with pytest.raises(ValueError, match="named 'llava' is registered already"):
        register_family(llava_like("llava"))
    with pytest.raises(ValueError, match=r"covers \['LlavaForConditionalGeneration'\].*'llava' covers already"):
        register_family(llava_like("llava_again"))
    with pytest.raises(ValueError, match="model_class must be an entry point 'package.module:ClassName', got 'Llava'"):
        llava_like("x", model_class="Llava")
    with pytest.raises(ValueError, match=r"hidden_size \(60\) must be divisible by num_heads \(8\)"):
        TinySizes(hidden_size=60, num_heads=8)
    assert family_names()[:4] == BUILT_INS  # nothing half-registered


# ---------------------------------------------------------------------- a new family, one module
class RenamedLlava(LlavaForConditionalGeneration):
    """Stands in for a new architecture: a class no built-in family names (a LLaVA subclass)."""


RENAMED = LlavaFamily(
    name="renamed_llava",
    title="Renamed LLaVA",
    model_class=f"{__name__}:RenamedLlava",
    config_class="transformers:LlavaConfig",
    image_processor_class="transformers:CLIPImageProcessorPil",
    tokens=LLAVA_TOKENS,
    chat_template=LLAVA_TEMPLATE,
)


@pytest.fixture
def renamed_family():
    register_family(RENAMED)
    try:
        yield RENAMED
    finally:
        unregister_family(RENAMED.name)


def test_a_new_family_is_one_registration_and_prunes(renamed_family):
    assert renamed_family.name in family_names()
    model, tok = tiny.build_tiny_model("renamed_llava", num_layers=4, seed=0)
    assert type(model) is RenamedLlava
    assert family_for(model) is renamed_family  # the subclass's own family, first in the MRO
    plain, _ = tiny.build_tiny_model("llava", num_layers=4, seed=0)
    assert family_for(plain) is get_family("llava")  # the others are unchanged
    assert adapter_for(model).family == "renamed_llava"
    inputs = tiny.demo_inputs(tiny.build_processor("renamed_llava", tok), n_images=3)
    with torch.no_grad():
        unpruned = model(**inputs).logits[0, -1]
    with prune(model, PruningConfig(method="catp", ratio=0.5)) as handle:
        with torch.no_grad():
            pruned = model(**inputs).logits[0, -1]
    record = handle.last
    assert record.n_image_tokens == 3 * 16
    assert record.n_kept_final == keep_count(record.n_image_tokens, 0.5)
    assert pruned.shape == unpruned.shape and torch.isfinite(pruned).all()
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits[0, -1], unpruned)  # the hooks are gone


def test_without_its_family_a_subclass_falls_back_to_its_base_family(renamed_family):
    model, _ = tiny.build_tiny_model("renamed_llava", num_layers=3, seed=0)
    unregister_family("renamed_llava")
    try:
        assert family_for(model) is get_family("llava")  # falls back to the base class's family
    finally:
        register_family(renamed_family)


@pytest.mark.parametrize("name", REGISTERED)
def test_the_inputs_without_precomputed_features_give_the_processor_forward(name):
    """The path for transformers 5.17 (no mm_encoder_outputs): the screenshots' vision inputs,
    concatenated, with the family's extra inputs; the same logits as the processor's own inputs."""
    family, model, tok, processor = built(name)
    inputs, per_image = precomputed_inputs(family, model, tok, processor)
    del inputs["mm_encoder_outputs"]
    inputs.update(model_image_inputs(None, per_image, precomputed=False))
    reference = tiny.demo_inputs(processor, n_images=2, size=IMAGE_SIZE)
    with torch.no_grad():
        got, want = model(**inputs).logits, model(**reference).logits
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_a_convolutional_llava_has_a_non_square_grid_and_loads_with_its_processor(tmp_path):
    """The reading model's layout: a FocalNet tower in a LLaVA, every token kept, 32 px tokens on
    a 128x192 screen: 4 rows of 6. The grid comes from the pixels, not from the square nearest
    the token count (which would give one row of 24); a saved checkpoint loads through
    load_agent_model although its tower has no SDPA attention."""
    from catp_agent.agent.model_io import load_agent_model

    model, tok = tiny.build_tiny_conv_llava(seed=0, num_layers=3)
    processor = tiny.build_conv_processor(tok)
    inputs = tiny.demo_inputs(processor, n_images=1, size=IMAGE_SIZE)
    family = family_for(model)
    assert family.name == "llava"
    per_image = family.vision_inputs(inputs)
    with torch.no_grad():
        n_tokens = family.image_features(model, per_image)[0].shape[0]
    assert n_tokens == 24 and family.image_grid(per_image, n_tokens) == (4, 6)
    assert family.image_grid({}, n_tokens) == (1, 24)  # without pixels: the old rule
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    processor.image_processor.save_pretrained(tmp_path)
    loaded = load_agent_model(str(tmp_path), device="cpu", dtype="fp32")
    assert loaded.model.config.vision_config.model_type == "focalnet"
    assert loaded.model.config.text_config._attn_implementation == "sdpa"
    with torch.no_grad():
        assert torch.allclose(loaded.model(**inputs).logits, model(**inputs).logits, atol=1e-5)
