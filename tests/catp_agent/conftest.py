"""Tiny random-weight models of every supported family, with a 3-image in-context prompt."""

from __future__ import annotations

import pytest
import torch

from catp_agent.models.tiny import FAMILIES, build_processor, build_tiny_model, demo_inputs

_CACHE: dict[str, tuple] = {}


def family_setup(family: str) -> tuple:
    """(model, tokenizer, processor, inputs), built once per family (6 decoder layers)."""
    if family not in _CACHE:
        model, tok = build_tiny_model(family, num_layers=6, seed=1)
        proc = build_processor(family, tok)
        _CACHE[family] = (model, tok, proc, demo_inputs(proc))
    return _CACHE[family]


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    return request.param


@pytest.fixture
def setup(family):
    torch.manual_seed(0)
    return family_setup(family)


@pytest.fixture
def family_setup_fn():
    return family_setup
