"""Tiny random-weight models of every supported family, with a 3-image in-context prompt."""

from __future__ import annotations

import pytest
import torch

from catp_agent.models.tiny import (FAMILIES, build_conv_processor, build_processor, build_tiny_conv_llava,
                                    build_tiny_model, demo_inputs)

CONV_LLAVA = "llava-conv"
"""Not a family: LLaVA with a convolutional tower and a 4x6 (non-square) grid, the reading
model's layout; every pruning test runs on it too."""

_CACHE: dict[str, tuple] = {}


def family_setup(family: str) -> tuple:
    """(model, tokenizer, processor, inputs), built once per family (6 decoder layers)."""
    if family not in _CACHE:
        if family == CONV_LLAVA:
            model, tok = build_tiny_conv_llava(seed=1, num_layers=6)
            proc = build_conv_processor(tok)
        else:
            model, tok = build_tiny_model(family, num_layers=6, seed=1)
            proc = build_processor(family, tok)
        _CACHE[family] = (model, tok, proc, demo_inputs(proc))
    return _CACHE[family]


@pytest.fixture(params=(*FAMILIES, CONV_LLAVA))
def family(request) -> str:
    return request.param


@pytest.fixture
def setup(family):
    torch.manual_seed(0)
    return family_setup(family)


@pytest.fixture
def family_setup_fn():
    return family_setup
