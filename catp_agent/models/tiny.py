"""Small random-weight models of every supported family, built offline from configs.

Used by the tests, the benchmark and as the architecture of the bundled default model. The
tokenizer is character-level (every printable ASCII character is a token) plus each family's
special tokens, built with ``tokenizers`` so nothing is downloaded.
"""

from __future__ import annotations

import string

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    CLIPImageProcessorPil,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
)

from catp_agent.models.spans import expand_image_tokens

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "llava", "llava_next")

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
LLAVA_SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]

# Minimal chat templates in each family's own format (real checkpoints ship their own).
QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAVA_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() }}: "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {list(FAMILIES)}, got {family!r}")


def build_tokenizer(family: str) -> PreTrainedTokenizerFast:
    """A character-level tokenizer with the family's special tokens and chat template."""
    _check_family(family)
    specials = QWEN_SPECIALS if family.startswith("qwen") else LLAVA_SPECIALS
    chars = [c for c in string.printable if c not in "\x0b\x0c\r"]
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    unk = "<unk>" if "<unk>" in vocab else "<|endoftext|>"
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    core.decoder = decoders.Fuse()  # characters join back without spaces
    if family.startswith("qwen"):
        tok = PreTrainedTokenizerFast(
            tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=unk,
            additional_special_tokens=specials[1:],
        )
    else:
        tok = PreTrainedTokenizerFast(
            tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
            additional_special_tokens=["<image>"],
        )
    tok.chat_template = QWEN_TEMPLATE if family.startswith("qwen") else LLAVA_TEMPLATE
    return tok


def tiny_config(
    family: str,
    tokenizer: PreTrainedTokenizerFast,
    hidden_size: int = 64,
    num_layers: int = 4,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int | None = None,
    vision_hidden: int = 32,
    vision_depth: int = 1,
    image_size: int = 56,
):
    """A config of ``family`` with small sizes; vocabulary and special ids from ``tokenizer``."""
    _check_family(family)
    vocab = len(tokenizer)
    text = dict(
        vocab_size=vocab,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if family.startswith("qwen"):
        head_dim = hidden_size // num_heads
        section = [head_dim // 8, head_dim // 8 * 3 // 2, 0]
        section[2] = head_dim // 2 - section[0] - section[1]
        text["bos_token_id"] = None
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section}
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
        vision = dict(depth=vision_depth, embed_dim=vision_hidden, hidden_size=hidden_size, num_heads=2,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
        if family == "qwen2_5_vl":
            vision.update(intermediate_size=2 * vision_hidden, hidden_size=vision_hidden, out_hidden_size=hidden_size,
                          fullatt_block_indexes=[vision_depth - 1], window_size=112)
            vision.pop("embed_dim")
        cls = Qwen2VLConfig if family == "qwen2_vl" else Qwen2_5_VLConfig
        return cls(
            text_config=text, vision_config=vision,
            image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
            tie_word_embeddings=False, bos_token_id=None,
        )
    vision = dict(model_type="clip_vision_model", hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                  num_hidden_layers=max(2, vision_depth), num_attention_heads=2, image_size=image_size, patch_size=14,
                  projection_dim=vision_hidden)
    text["model_type"] = "llama"
    text["bos_token_id"] = tokenizer.bos_token_id
    common = dict(text_config=text, vision_config=vision, image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                  vision_feature_layer=-1, vision_feature_select_strategy="default", tie_word_embeddings=False)
    if family == "llava":
        return LlavaConfig(**common)
    return LlavaNextConfig(**common, image_grid_pinpoints=[[image_size, image_size], [image_size, 2 * image_size], [2 * image_size, image_size]])


MODEL_CLASSES = {
    "qwen2_vl": Qwen2VLForConditionalGeneration,
    "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
    "llava": LlavaForConditionalGeneration,
    "llava_next": LlavaNextForConditionalGeneration,
}


def build_tiny_model(family: str, seed: int = 0, dtype: torch.dtype = torch.float32, **sizes: int):
    """(model, tokenizer): a random-weight model of ``family`` in eval mode, SDPA attention."""
    tokenizer = build_tokenizer(family)
    config = tiny_config(family, tokenizer, **sizes)
    torch.manual_seed(seed)
    model = MODEL_CLASSES[family]._from_config(config, attn_implementation="sdpa", dtype=dtype)
    return model.eval(), tokenizer


class QwenVLInputBuilder:
    """What ``Qwen2VLProcessor`` does for images, without its video processor (which needs
    torchvision): pixel values and grids from the PIL image processor, each ``<|image_pad|>``
    expanded to the image's token count, and ``mm_token_type_ids`` (1 for image tokens)."""

    image_token = "<|image_pad|>"

    def __init__(self, image_processor: Qwen2VLImageProcessorPil, tokenizer: PreTrainedTokenizerFast) -> None:
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.chat_template = tokenizer.chat_template
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)

    def apply_chat_template(self, messages: list, **kwargs) -> str:
        return self.tokenizer.apply_chat_template(messages, **kwargs)

    def __call__(self, images: list | None = None, text: list[str] | str = "", return_tensors: str = "pt") -> dict:
        texts = [text] if isinstance(text, str) else list(text)
        out: dict[str, torch.Tensor] = {}
        if images:
            pix = self.image_processor(images=images, return_tensors="pt")
            out["pixel_values"], out["image_grid_thw"] = pix["pixel_values"], pix["image_grid_thw"]
            merge = self.image_processor.merge_size ** 2
            counts = (out["image_grid_thw"].prod(-1) // merge).tolist()
            expanded, used = [], 0
            for t in texts:
                n = t.count(self.image_token)
                expanded.append(expand_image_tokens(t, self.image_token, counts[used:used + n]))
                used += n
            texts = expanded
        enc = self.tokenizer(texts, return_tensors=return_tensors, padding=True)
        out["input_ids"], out["attention_mask"] = enc["input_ids"], enc["attention_mask"]
        out["mm_token_type_ids"] = (enc["input_ids"] == self.image_token_id).to(torch.int32)
        return out


def build_processor(family: str, tokenizer: PreTrainedTokenizerFast, image_size: int = 56,
                    min_pixels: int | None = None, max_pixels: int | None = None):
    """The family's processor around ``tokenizer`` (PIL image processors: no torchvision)."""
    _check_family(family)
    if family.startswith("qwen"):
        kwargs = {}
        if min_pixels is not None or max_pixels is not None:
            kwargs["size"] = {"shortest_edge": min_pixels or 56 * 56, "longest_edge": max_pixels or 28 * 28 * 1280}
        return QwenVLInputBuilder(Qwen2VLImageProcessorPil(**kwargs), tokenizer)
    size = {"shortest_edge": image_size}
    crop = {"height": image_size, "width": image_size}
    if family == "llava":
        image_processor = CLIPImageProcessorPil(size=size, crop_size=crop)
        return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=14, num_additional_image_tokens=1,
                              vision_feature_select_strategy="default", chat_template=tokenizer.chat_template)
    image_processor = LlavaNextImageProcessorPil(
        size=size, crop_size=crop,
        image_grid_pinpoints=[[image_size, image_size], [image_size, 2 * image_size], [2 * image_size, image_size]],
    )
    return LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=14, num_additional_image_tokens=1,
                              vision_feature_select_strategy="default", chat_template=tokenizer.chat_template)


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


def demo_inputs(processor, n_images: int = 3, size: tuple[int, int] = (84, 112), seed: int = 0) -> dict:
    """Model inputs for an in-context prompt of ``n_images`` random screenshots."""
    text = processor.apply_chat_template(icl_messages(n_images), add_generation_prompt=True, tokenize=False)
    return dict(processor(images=random_images(n_images, size, seed), text=[text], return_tensors="pt"))
