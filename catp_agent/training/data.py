"""Behaviour-cloning samples in exactly the agent's prompt format.

A sample is one step of a demo: the history window of the last ``history`` screens with their
actions, the current screen with the task (and the error shown with it), exactly as
:class:`policies.vlm.VLMPolicy` builds it (:func:`catp_agent.agent.build_messages`, the chat
template, the image placeholders expanded), followed by the answer
``target_text(action)`` and the end-of-sequence token. Only the answer is scored.

Screens are stored once, resized to the model's input size as uint8; every sample refers to
them by index, so a batch encodes each distinct screen once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from catp_agent.agent.history import Screenshot
from catp_agent.agent.prompt import build_messages, target_text
from catp_agent.training.demos import Demo

__all__ = ["Batch", "Sample", "SampleSet", "build_samples", "corpus_texts"]


@dataclass
class Sample:
    prompt_ids: list[int]  # with one image token per screen (expanded at batch time)
    target_ids: list[int]  # the answer tokens, then EOS
    frames: list[int]  # screen indices into SampleSet.pixels, prompt order
    task: str


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T), image tokens expanded, right padded
    attention_mask: torch.Tensor  # (B, T)
    labels: torch.Tensor  # (B, T), -100 except the answer
    pixel_values: torch.Tensor  # (F, 3, S, S) distinct screens, normalised
    frame_order: torch.Tensor  # (n images in batch,) index into pixel_values, in token order

    def to(self, device) -> "Batch":
        return Batch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.labels, self.pixel_values, self.frame_order)))


def prompt_messages(demo: Demo, step: int, history: int) -> list[dict]:
    """The chat messages the agent sees at ``step`` of ``demo`` with a window of ``history``."""
    first = max(0, step - history)
    screens = [Screenshot(i, demo.frames[i], demo.actions[i]) for i in range(first, step)]
    screens.append(Screenshot(step, demo.frames[step], None))
    return build_messages(screens, demo.instruction, demo.errors[step])


def corpus_texts(demos: Sequence[Demo], history: int = 3) -> list[str]:
    """Texts the tokenizer is learned from: every prompt (rendered with the LLaVA chat template,
    image placeholders removed) and every answer."""
    from catp_agent.models.tiny import build_tokenizer

    render = build_tokenizer("llava")  # only its chat template is used
    texts = []
    for demo in demos:
        for t in range(len(demo)):
            text = render.apply_chat_template(prompt_messages(demo, t, history), add_generation_prompt=True, tokenize=False)
            texts.append(text.replace("<image>", ""))
            texts.append(target_text(demo.actions[t]))
    return texts


class SampleSet:
    """All samples of a list of demos, with their screens preprocessed once."""

    def __init__(self, demos: Sequence[Demo], tokenizer, image_processor, history: int = 3, progress: bool = True) -> None:
        from tqdm import tqdm

        self.tokenizer = tokenizer
        self.image_token_id = tokenizer.convert_tokens_to_ids("<image>")
        size = image_processor.size
        self.side = (int(size["height"]), int(size["width"]))
        self.mean = torch.tensor(image_processor.image_mean).view(1, 3, 1, 1)
        self.std = torch.tensor(image_processor.image_std).view(1, 3, 1, 1)
        self.rescale = float(image_processor.rescale_factor)
        self._resample = image_processor.resample
        n_frames = sum(len(d) for d in demos)
        self.pixels = np.zeros((n_frames, self.side[0], self.side[1], 3), dtype=np.uint8)
        self.samples: list[Sample] = []
        eos = tokenizer.eos_token_id
        offset = 0
        for demo in tqdm(demos, desc="samples", unit="demo", disable=not progress):
            for t in range(len(demo)):
                self.pixels[offset + t] = self._resize(demo.frames[t])
            for t in range(len(demo)):
                text = tokenizer.apply_chat_template(prompt_messages(demo, t, history), add_generation_prompt=True, tokenize=False)
                prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
                target = tokenizer(target_text(demo.actions[t]), add_special_tokens=False)["input_ids"] + [eos]
                first = max(0, t - history)
                self.samples.append(Sample(prompt, target, [offset + i for i in range(first, t + 1)], demo.task))
            offset += len(demo)

    def _resize(self, frame: np.ndarray) -> np.ndarray:
        # The processor's own resize (PIL, same filter), so training sees what inference sees.
        image = Image.fromarray(frame).resize((self.side[1], self.side[0]), resample=self._resample)
        return np.asarray(image.convert("RGB"), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.samples)

    def batch(self, indices: Sequence[int], tokens_per_image: int) -> Batch:
        samples = [self.samples[i] for i in indices]
        frames = sorted({f for s in samples for f in s.frames})
        where = {f: k for k, f in enumerate(frames)}
        rows, labels, order = [], [], []
        for s in samples:
            ids: list[int] = []
            for tok in s.prompt_ids:
                ids.extend([tok] * tokens_per_image if tok == self.image_token_id else [tok])
            n_images = sum(1 for tok in s.prompt_ids if tok == self.image_token_id)
            if n_images != len(s.frames):
                raise RuntimeError(f"sample has {n_images} image placeholders for {len(s.frames)} screens")
            order.extend(where[f] for f in s.frames)
            rows.append(ids + s.target_ids)
            labels.append([-100] * len(ids) + s.target_ids)
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        label_t = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, (r, lab) in enumerate(zip(rows, labels)):
            input_ids[i, : len(r)] = torch.tensor(r)
            attention[i, : len(r)] = 1
            label_t[i, : len(lab)] = torch.tensor(lab)
        pix = torch.from_numpy(self.pixels[frames]).permute(0, 3, 1, 2).float() * self.rescale
        pix = (pix - self.mean) / self.std
        return Batch(input_ids, attention, label_t, pix, torch.tensor(order, dtype=torch.long))


def build_samples(demos: Sequence[Demo], tokenizer, image_processor, history: int = 3, progress: bool = True) -> SampleSet:
    return SampleSet(demos, tokenizer, image_processor, history, progress)
