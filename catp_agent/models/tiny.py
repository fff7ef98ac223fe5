"""Small random-weight models of every registered model family, built offline from configs.

Used by the tests and the benchmark. The tokenizer is character-level (every printable ASCII
character is a token) plus the family's special tokens, built with ``tokenizers`` so nothing
is downloaded. Everything family-specific (config, special tokens, chat template, processor)
comes from the family object (``catp_agent.models.families``).
"""

from __future__ import annotations

import string
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from catp_agent.models.families import family_names, get_family

FAMILIES: tuple[str, ...] = family_names()
"""The registered family names when this module was imported (the four built-ins)."""


def build_tokenizer(family: str) -> PreTrainedTokenizerFast:
    """A character-level tokenizer with the family's special tokens and chat template."""
    spec = get_family(family)
    chars = [c for c in string.printable if c not in "\x0b\x0c\r"]
    vocab = {tok: i for i, tok in enumerate(list(spec.tokens.vocab) + chars)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=spec.tokens.unk))
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    core.decoder = decoders.Fuse()  # characters join back without spaces
    tok = PreTrainedTokenizerFast(tokenizer_object=core, **spec.tokens.tokenizer_kwargs())
    tok.chat_template = spec.chat_template
    return tok


def tiny_config(family: str, tokenizer: PreTrainedTokenizerFast, **sizes: int | None) -> Any:
    """A config of ``family`` with small sizes (``TinySizes`` fields: hidden_size=64,
    num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size, vision_hidden=32,
    vision_depth=1, image_size=56); vocabulary and special ids from ``tokenizer``."""
    return get_family(family).tiny_config(tokenizer, **sizes)


def build_tiny_model(family: str, seed: int = 0, dtype: torch.dtype = torch.float32,
                     **sizes: int | None) -> tuple[torch.nn.Module, PreTrainedTokenizerFast]:
    """(model, tokenizer): a random-weight model of ``family`` in eval mode, SDPA attention."""
    spec = get_family(family)
    tokenizer = build_tokenizer(family)
    config = spec.tiny_config(tokenizer, **sizes)
    torch.manual_seed(seed)
    model = spec.load_model_class()._from_config(config, attn_implementation="sdpa", dtype=dtype)
    return model.eval(), tokenizer


def build_processor(family: str, tokenizer: PreTrainedTokenizerFast, image_size: int = 56,
                    min_pixels: int | None = None, max_pixels: int | None = None) -> Any:
    """The family's processor around ``tokenizer`` (PIL image processors: no torchvision).
    ``image_size``: square side of fixed-resolution towers (LLaVA); ``min_pixels`` /
    ``max_pixels``: resize bounds of dynamic-resolution ones (Qwen2-VL)."""
    return get_family(family).tiny_processor(tokenizer, image_size=image_size, min_pixels=min_pixels,
                                             max_pixels=max_pixels)


CONV_SCREEN = (128, 192)
"""(height, width) the tiny convolutional LLaVA's processor squashes every image to: 4x6 tokens."""


def build_tiny_conv_llava(seed: int = 0, num_layers: int = 6, dtype: torch.dtype = torch.float32
                          ) -> tuple[torch.nn.Module, PreTrainedTokenizerFast]:
    """(model, tokenizer): a random-weight LLaVA whose vision tower is convolutional (transformers'
    ``FocalNetModel``, 32 px tokens, every token kept: ``vision_feature_select_strategy="full"``),
    the layout of the reading model (``catp_agent.harness.training.model.build_reading_model``).
    Its grid is not square (:data:`CONV_SCREEN`: 4 rows of 6 tokens)."""
    from transformers import FocalNetConfig, LlavaConfig, LlavaForConditionalGeneration

    spec = get_family("llava")
    tokenizer = build_tokenizer("llava")
    text = spec.tiny_config(tokenizer, num_layers=num_layers).text_config.to_dict()
    # hidden_size: the last stage's channels (embed_dim * 2 ** 3), which LLaVA's projector reads
    vision = FocalNetConfig(patch_size=4, embed_dim=8, use_conv_embed=True, hidden_sizes=[8, 16, 32, 64],
                            depths=[1, 1, 1, 1], focal_levels=[2] * 4, focal_windows=[3] * 4, mlp_ratio=2.0,
                            hidden_size=64)
    config = LlavaConfig(text_config=text, vision_config=vision.to_dict(), vision_feature_layer=-1,
                         vision_feature_select_strategy="full", tie_word_embeddings=False,
                         image_token_index=tokenizer.convert_tokens_to_ids(spec.tokens.image),
                         image_seq_length=(CONV_SCREEN[0] // 32) * (CONV_SCREEN[1] // 32))
    torch.manual_seed(seed)
    # SDPA in the decoder; FocalNet has no attention layer to choose for
    model = LlavaForConditionalGeneration._from_config(config, attn_implementation={"text_config": "sdpa"},
                                                       dtype=dtype)
    return model.eval(), tokenizer


def build_conv_processor(tokenizer: PreTrainedTokenizerFast, screen: tuple[int, int] = CONV_SCREEN) -> Any:
    """LLaVA's processor for a convolutional tower: every image squashed to ``screen`` (height,
    width), one image token per 32 px cell, no class token."""
    from transformers import LlavaProcessor

    height, width = screen
    image_processor = get_family("llava").load_image_processor(
        size={"height": height, "width": width}, do_center_crop=False, crop_size={"height": height, "width": width})
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=32,
                          num_additional_image_tokens=0, vision_feature_select_strategy="full",
                          chat_template=tokenizer.chat_template)


def random_images(n: int, size: tuple[int, int] = (84, 112), seed: int = 0) -> list:
    """``n`` random RGB PIL images of (height, width) ``size``."""
    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(seed)
    return [Image.fromarray((rng.rand(size[0], size[1], 3) * 255).astype("uint8")) for _ in range(n)]


def icl_messages(n_images: int) -> list[dict]:
    """A chat with ``n_images - 1`` screenshot+action demonstrations and a query screenshot."""
    content: list[dict] = []
    for i in range(n_images - 1):
        content += [{"type": "image"}, {"type": "text", "text": f"Action: click({10 * i}, {20 + i})\n"}]
    content += [{"type": "image"}, {"type": "text", "text": "Task: open the settings page. Next action?"}]
    return [{"role": "user", "content": content}]


def demo_inputs(processor: Any, n_images: int = 3, size: tuple[int, int] = (84, 112), seed: int = 0) -> dict:
    """Model inputs for an in-context prompt of ``n_images`` random screenshots."""
    text = processor.apply_chat_template(icl_messages(n_images), add_generation_prompt=True, tokenize=False)
    return dict(processor(images=random_images(n_images, size, seed), text=[text], return_tensors="pt"))
