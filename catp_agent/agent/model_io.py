"""Loading the agent's model: a local checkpoint, a hub id, a model object, or the bundled default.

    load_agent_model("Qwen/Qwen2-VL-2B-Instruct", device="cuda", dtype="bf16")   # as users run it
    load_agent_model("path/to/ckpt", device="cpu", dtype="fp32", attn="sdpa")

device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:N``. dtype: ``auto``
(bf16 on CUDA, fp32 on the CPU), ``bf16``, ``fp16``, ``fp32`` (or a ``torch.dtype``). attn:
``sdpa`` (default) or ``flash_attention_2`` (needs the ``flash_attn`` package). Only PIL image
processors are used (torchvision must not be installed, see README).
"""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from catp_agent.models.families import ModelFamily, family_for, get_family

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "default_model"

DEVICES = ("auto", "cpu", "cuda", "cuda:N")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
ATTN = ("sdpa", "flash_attention_2")

FALLBACK_TINY_FAMILY = "qwen2_vl"
"""The family of the tiny random-weight stand-in used when no trained default model ships."""


@dataclass
class AgentModel:
    """A VLM with what it takes to feed it: tokenizer (with chat template) and image processor."""

    model: nn.Module
    tokenizer: Any
    image_processor: Any
    family: str  # the registered family name
    source: str  # path, hub id, "object" or "tiny-random"
    dialect: str | None = None  # the action dialect to use (None: default_dialect for this model)
    pointer: Any = None  # a PointerHead saved beside the checkpoint (catp_agent.agent.pointer), else None

    @property
    def model_family(self) -> ModelFamily:
        """The family object (vision inputs, image grids, extra forward inputs)."""
        return get_family(self.family)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def image_token(self) -> str:
        return self.tokenizer.convert_ids_to_tokens(self.model_family.image_token_id(self.model.config))


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda``/``cuda:N`` must exist."""
    text = str(device)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {text!r}")
    if not torch.cuda.is_available():
        raise ValueError(f"device {text!r} asked for, but torch sees no CUDA GPU here; use --device cpu (or auto)")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise ValueError(f"device {text!r}: there are {torch.cuda.device_count()} CUDA device(s) (cuda:0 ..)")
    return torch.device(text)


def resolve_dtype(dtype: str | torch.dtype = "auto", device: torch.device | None = None) -> torch.dtype:
    """``auto`` -> bf16 on CUDA, fp32 on the CPU; ``bf16``, ``fp16``, ``fp32`` or a ``torch.dtype``."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype}")
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device is not None and device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of auto, {', '.join(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def check_attn(attn: str) -> str:
    """``sdpa``, or ``flash_attention_2`` when the ``flash_attn`` package is importable."""
    if attn not in ATTN:
        raise ValueError(f"attn must be one of {', '.join(ATTN)}, got {attn!r}")
    if attn == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ValueError("attn 'flash_attention_2' needs the flash_attn package, which is not installed here "
                         "(pip install flash-attn on a CUDA machine); use --attn sdpa")
    return attn


def _is_hub_id(text: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}", text))


def load_agent_model(model: str | Path | nn.Module | None = None, tokenizer: Any = None,
                     image_processor: Any = None, dtype: str | torch.dtype = "auto", device: str | torch.device = "auto",
                     attn: str = "sdpa", pointer: Any = None, pointer_head: bool = True) -> AgentModel:
    """``model``: a checkpoint folder or hub id (``from_pretrained``; a hub id downloads where the
    hub can be reached), a model object (then pass its ``tokenizer`` and ``image_processor``; it
    is moved to ``device``/``dtype`` only when they are given explicitly), or None for the bundled
    default model (a tiny random-weight Qwen2-VL when no trained default ships with this copy).
    A pointer head saved beside a checkpoint folder (``pointer_head.safetensors``) is loaded with
    it; ``pointer`` passes one for a model object (or overrides the folder's); ``pointer_head=False``
    leaves the folder's head out (clicks are read from the model's own coordinates)."""
    attn = check_attn(attn)
    if isinstance(model, nn.Module):
        family = family_for(model)
        if tokenizer is None:
            raise ValueError("a model object needs its tokenizer too: load_agent_model(model, tokenizer=..., image_processor=...)")
        if str(device) != "auto" or dtype != "auto":
            target = resolve_device(device) if str(device) != "auto" else next(model.parameters()).device
            model = model.to(device=target, dtype=resolve_dtype(dtype, target) if dtype != "auto" else None)
        return AgentModel(model.eval(), tokenizer, image_processor or family.load_image_processor(), family.name, "object",
                          pointer=_placed(pointer, model))
    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    if model is None:
        if (DEFAULT_MODEL_DIR / "config.json").exists():
            model = DEFAULT_MODEL_DIR
        else:
            from catp_agent.models.tiny import build_tiny_model

            fallback = get_family(FALLBACK_TINY_FAMILY)
            print(f"catp-agent: no trained default model in this copy; using a tiny RANDOM-weight {fallback.title} "
                  "(it will not solve tasks). Pass --model PATH for a real checkpoint.", file=sys.stderr)
            net, tok = build_tiny_model(fallback.name, seed=0, hidden_size=128, num_layers=8, num_heads=4, num_kv_heads=2)
            net = net.to(device=target, dtype=torch_dtype)
            return AgentModel(net, tok, fallback.load_image_processor(), fallback.name, "tiny-random")
    path = Path(str(model)).expanduser()
    name = str(model)
    if not (path / "config.json").exists():
        if path.exists() or not _is_hub_id(name):
            raise FileNotFoundError(f"no model checkpoint at {name!r} (expected a folder with config.json, as "
                                    "saved by save_pretrained, or a hub id such as Qwen/Qwen2-VL-2B-Instruct)")
        source = name  # a hub id: from_pretrained downloads it (or finds it in the local hub cache)
    else:
        source = str(path)
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    try:
        try:
            net = AutoModelForImageTextToText.from_pretrained(source, dtype=torch_dtype, attn_implementation=attn)
        except ValueError as exc:
            if "does not support an attention implementation" not in str(exc):
                raise
            # A vision tower without that attention (a convolutional one has none): the decoder,
            # where the pruning hooks are, gets ``attn``; the tower keeps its own default.
            net = AutoModelForImageTextToText.from_pretrained(source, dtype=torch_dtype,
                                                              attn_implementation={"text_config": attn})
    except OSError as exc:
        if source != name:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OSError(f"hub id {name!r} could not be fetched (offline, a typo, or a gated repo needing a token: "
                      f"{first[:200]}); pass a local checkpoint folder or check the id") from None
    net = net.to(target)
    family = family_for(net)
    tok = AutoTokenizer.from_pretrained(source)
    if tok.chat_template is None:
        tok.chat_template = family.chat_template
    if pointer is None and pointer_head and source == str(path):
        from catp_agent.agent.pointer import load_pointer_head

        pointer = load_pointer_head(path)
    return AgentModel(net.eval(), tok, image_processor or family.load_image_processor(source), family.name, source,
                      pointer=_placed(pointer, net))


def _placed(pointer: Any, model: nn.Module) -> Any:
    """``pointer`` (a PointerHead or None) on the model's device, in float32 (it is tiny)."""
    if pointer is None:
        return None
    return pointer.to(device=next(model.parameters()).device, dtype=torch.float32).eval()
