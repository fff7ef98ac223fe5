"""The pruned KV cache and the helpers that pass it under the cache argument name of the installed
transformers (``past_key_values`` before 5.24, ``cache`` from 5.24 on)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.cache_utils import DynamicCache

from catp_agent.models.cache import (
    CACHE_NAMES,
    PrunedCache,
    cache_argument,
    output_cache,
    passed_cache,
    set_cache,
)
from catp_agent.models.families import adapter_for
from catp_agent.models.tiny import FAMILIES, build_tiny_model

pytestmark = pytest.mark.compat


class _OldDecoder(nn.Module):
    def forward(self, inputs_embeds=None, past_key_values=None, **kwargs):  # transformers < 5.24
        return inputs_embeds


class _NewDecoder(nn.Module):
    def forward(self, inputs_embeds=None, cache=None, **kwargs):  # transformers >= 5.24
        return inputs_embeds


def test_cache_argument_is_the_name_forward_declares():
    assert cache_argument(_OldDecoder()) == "past_key_values"
    assert cache_argument(_NewDecoder()) == "cache"
    with pytest.raises(TypeError, match="takes no KV cache argument"):
        cache_argument(nn.Linear(2, 2))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_decoder_takes_a_cache_argument(family):
    model, _ = build_tiny_model(family, num_layers=2, seed=0)
    assert cache_argument(adapter_for(model).language_model) in CACHE_NAMES


@pytest.mark.parametrize("name", CACHE_NAMES)
def test_set_cache_replaces_what_the_caller_passed_under_either_name(name):
    ours, theirs = PrunedCache(2, removed_before_decoder=3), DynamicCache()
    for caller_name in CACHE_NAMES:
        kwargs = {caller_name: theirs, "use_cache": True}
        assert passed_cache(kwargs) is theirs
        set_cache(kwargs, name, ours)
        assert kwargs == {name: ours, "use_cache": True}
        assert passed_cache(kwargs) is ours
    assert passed_cache({"cache": None, "past_key_values": None}) is None


def test_pruned_cache_reports_the_logical_length_and_stores_the_kept_tokens():
    cache = PrunedCache(2, removed_before_decoder=3)
    cache.set_removed(1, 5)
    kv = torch.zeros(1, 2, 4, 8)  # (batch, kv_heads, kept tokens, head_dim)
    for layer in range(2):
        cache.update(kv, kv, layer)
    assert [layer.physical_length() for layer in cache.layers] == [4, 4]
    assert cache.get_seq_length(0) == 7 and cache.get_seq_length(1) == 9


@pytest.mark.parametrize("family", FAMILIES)
def test_output_cache_reads_the_model_output_of_the_installed_transformers(family):
    model, _ = build_tiny_model(family, num_layers=2, seed=0)
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True)
    cache = output_cache(out)
    assert cache is not None and cache.get_seq_length() == 3
    assert output_cache(None) is None and output_cache((out.logits,)) is None
