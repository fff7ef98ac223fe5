"""The default agent model's architecture, tokenizer and image processor, built offline.

Architecture: LLaVA (``LlavaForConditionalGeneration``), scaled down. Why LLaVA rather than
Qwen2-VL: a web agent clicks at pixel coordinates, so the model must say *where* a patch is.
CLIP's vision tower adds a learned absolute position embedding to every patch, which a small
model trained from scratch on a CPU learns to read out quickly; Qwen2-VL's vision tower and
decoder only carry relative (rotary) positions, so absolute coordinates would have to be
derived indirectly. Both families are supported by the pruning adapters.

Screens are resized (squashed, no crop) to 336x336 and cut into 28x28 patches: 12x12 = 144
image tokens per screenshot. The decoder (Llama) has 6 layers, so CATP's default K is a real
shallow layer.

Tokenizer: byte-level BPE learned from the demonstrations' text (instructions, actions, the
prompt scaffolding), with digits split one by one, plus one whole token for every multiple of
10 from 0 to 1000 (:data:`NUMBER_TOKENS`) and LLaVA's special tokens. The demonstrations click
at multiples of 10 px, so a coordinate is one token: choosing it is one classification over
positions, read out from the attended patch, instead of three digits where the tens digit is a
saw-tooth function of the position. Byte-level means any text still encodes and decodes exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, PreTrainedTokenizerFast

from catp_agent.models.families.llava import LLAVA_SPECIALS, LLAVA_TEMPLATE

__all__ = ["NUMBER_TOKENS", "READING_TOWER", "ModelSize", "build_bpe_tokenizer", "build_image_processor", "build_model",
           "build_reading_image_processor", "build_reading_model", "sincos_init"]

READING_TOWER = Path(__file__).resolve().parents[2] / "assets" / "reading_tower"
"""The kept convolutional tower with reading practice (``scripts/grounding_probe.py keep``)."""

NUMBER_TOKENS = tuple(str(n) for n in range(0, 1001, 10))
"""Whole-number tokens: a click coordinate rounded to 10 px is one of these."""


@dataclass(frozen=True)
class ModelSize:
    """The sizes of the default model (defaults: the shipped one)."""

    image_size: int = 336
    patch_size: int = 28
    vision_hidden: int = 192
    vision_layers: int = 3
    vision_heads: int = 4
    hidden: int = 192
    layers: int = 6
    heads: int = 6
    kv_heads: int = 2
    intermediate: int = 512
    vocab_size: int = 1024

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")
        if self.layers < 3:
            raise ValueError(f"layers must be >= 3 (CATP needs layers K-1, K, K+1), got {self.layers}")
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise ValueError(f"hidden {self.hidden} / heads {self.heads} / kv_heads {self.kv_heads} do not divide")

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def to_dict(self) -> dict:
        return asdict(self)


def build_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 1024, number_tokens: bool = True) -> PreTrainedTokenizerFast:
    """Byte-level BPE over ``texts`` (deterministic for the same texts), LLaVA specials, chat template;
    with ``number_tokens`` also :data:`NUMBER_TOKENS` as whole tokens (matched longest first)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    core = Tokenizer(models.BPE(unk_token=None))
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(LLAVA_SPECIALS), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=2,
    )
    core.train_from_iterator(list(texts), trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        additional_special_tokens=["<image>"],
    )
    if number_tokens:
        tok.add_tokens(list(NUMBER_TOKENS))
    tok.chat_template = LLAVA_TEMPLATE
    return tok


def build_image_processor(size: ModelSize = ModelSize()) -> CLIPImageProcessorPil:
    """Squash the screenshot to image_size x image_size (no crop: nothing on the page is cut off)."""
    side = size.image_size
    return CLIPImageProcessorPil(size={"height": side, "width": side}, do_center_crop=False,
                                 crop_size={"height": side, "width": side})


def _sincos(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """[len(positions), dim]: sin and cos of each position at dim/2 geometric frequencies (1 down to 1/100)."""
    freqs = 100.0 ** (-torch.arange(dim // 2, dtype=torch.float64) / max(1, dim // 2 - 1))
    angles = positions.to(torch.float64)[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


@torch.no_grad()
def sincos_init(model: LlavaForConditionalGeneration, tokenizer: PreTrainedTokenizerFast) -> None:
    """Give position a smooth structure from the start (the weights stay trainable, the architecture unchanged).

    - CLIP's learned patch position embedding starts as a 2D sine-cosine code of the patch's row
      and column (half the width each, as in MAE); the class position stays zero.
    - The input embedding and output (LM head) rows of :data:`NUMBER_TOKENS` start as a 1D sine-cosine
      code of the number, so neighbouring coordinates look alike in and out.

    Norms follow the random initialisation they replace: position rows RMS ~0.7 (like a patch
    embedding of normalised pixels), token rows the norm of a random row of the same matrix."""
    pos = model.model.vision_tower.embeddings.position_embedding.weight
    width = pos.shape[1]
    side = int(round((pos.shape[0] - 1) ** 0.5))
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    grid = torch.cat([_sincos(rows.flatten(), width // 2), _sincos(cols.flatten(), width - width // 2)], dim=1)
    pos[1:] = grid.to(pos.dtype)
    pos[0] = 0.0
    ids = torch.tensor(tokenizer.convert_tokens_to_ids(list(NUMBER_TOKENS)))
    values = torch.tensor([int(t) // 10 for t in NUMBER_TOKENS])
    for matrix in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
        code = _sincos(values, matrix.shape[1]).to(matrix.dtype)
        scale = matrix.norm(dim=1).mean() / code.norm(dim=1).mean()
        matrix[ids] = code * scale


def _text_config(tokenizer: PreTrainedTokenizerFast, size: ModelSize, max_positions: int) -> dict:
    """The Llama decoder's config of ``size`` around ``tokenizer``."""
    return dict(
        model_type="llama", vocab_size=len(tokenizer), hidden_size=size.hidden, intermediate_size=size.intermediate,
        num_hidden_layers=size.layers, num_attention_heads=size.heads, num_key_value_heads=size.kv_heads,
        max_position_embeddings=max_positions, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=False,
    )


def build_model(tokenizer: PreTrainedTokenizerFast, size: ModelSize = ModelSize(), seed: int = 0,
                structured_init: bool = False) -> LlavaForConditionalGeneration:
    """A freshly initialised model (weights from ``seed``), SDPA attention, train mode; with
    ``structured_init`` position and coordinate weights start from :func:`sincos_init`."""
    text = _text_config(tokenizer, size, max_positions=4096)
    vision = dict(
        model_type="clip_vision_model", hidden_size=size.vision_hidden, intermediate_size=4 * size.vision_hidden,
        num_hidden_layers=size.vision_layers, num_attention_heads=size.vision_heads, image_size=size.image_size,
        patch_size=size.patch_size, projection_dim=size.vision_hidden,
    )
    config = LlavaConfig(
        text_config=text, vision_config=vision, image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1, vision_feature_select_strategy="default", tie_word_embeddings=False,
        image_seq_length=size.image_tokens,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration._from_config(config, attn_implementation="sdpa", dtype=torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    if structured_init:
        sincos_init(model, tokenizer)
    return model


def build_reading_image_processor(screen: tuple[int, int] = (640, 480)) -> CLIPImageProcessorPil:
    """Screens squashed to ``screen`` (width, height) and nothing cut off: at 640x480, the size
    the bundled tasks render at, a screenshot reaches the tower at its own pixels."""
    width, height = screen
    if width % 32 or height % 32:
        raise ValueError(f"the reading tower's tokens are 32 px: screen sides must be multiples of 32, "
                         f"got {width}x{height}")
    return CLIPImageProcessorPil(size={"height": height, "width": width}, do_center_crop=False,
                                 crop_size={"height": height, "width": width})


def build_reading_model(tokenizer: PreTrainedTokenizerFast, tower: str | Path = READING_TOWER,
                        size: ModelSize = ModelSize(), screen: tuple[int, int] = (640, 480),
                        seed: int = 0) -> LlavaForConditionalGeneration:
    """The default model's LLaVA with the reading tower (a ``FocalNetModel`` saved by
    ``grounding_probe.py pretrain``/``keep``) in place of CLIP: every 32 px token is kept
    (``vision_feature_select_strategy="full"``, no class token), so a 640x480 screen gives
    15 rows of 20 tokens, 300 per screen. The tower's weights are loaded in float32; projector
    and decoder start from ``seed``. ``size``'s vision fields do not apply (the tower sets them).
    SDPA in the decoder; the tower has no attention to choose."""
    from transformers import FocalNetConfig, FocalNetModel

    tower = Path(tower)
    if not (tower / "config.json").exists():
        raise FileNotFoundError(f"{tower} holds no saved tower (config.json); make one with "
                                "`python scripts/grounding_probe.py pretrain --out DIR`")
    vision = FocalNetConfig.from_pretrained(tower)
    channels = int(vision.embed_dim * 2 ** (len(vision.depths) - 1))
    if getattr(vision, "hidden_size", channels) != channels:
        raise ValueError(f"{tower}/config.json says hidden_size {vision.hidden_size}, "
                         f"but its last stage has {channels} channels")
    vision.hidden_size = channels  # LLaVA's projector reads it
    stride = int(vision.patch_size) * 2 ** (len(vision.depths) - 1)
    width, height = screen
    if width % stride or height % stride:
        raise ValueError(f"screen {width}x{height} is not a whole number of the tower's {stride} px tokens")
    config = LlavaConfig(
        text_config=_text_config(tokenizer, size, max_positions=8192), vision_config=vision.to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1, vision_feature_select_strategy="full", tie_word_embeddings=False,
        image_seq_length=(width // stride) * (height // stride),
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration._from_config(config, attn_implementation={"text_config": "sdpa"},
                                                       dtype=torch.float32)
    trained = FocalNetModel.from_pretrained(tower, dtype=torch.float32)
    missing, unexpected = model.model.vision_tower.load_state_dict(trained.state_dict(), strict=False)
    if missing or unexpected:
        raise ValueError(f"{tower}'s weights do not fit the model's tower: "
                         f"missing {missing}, unexpected {unexpected}")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model
