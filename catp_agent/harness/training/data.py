"""Behaviour-cloning samples in exactly the agent's prompt format.

A sample is one step of a demo: the history window of the last ``history`` screens with their
actions, the current screen with the task (and the error shown with it), exactly as
:class:`policies.vlm.VLMPolicy` builds it (:func:`catp_agent.agent.build_messages`, the chat
template, the image placeholders expanded), followed by the answer
``target_text(action)`` and the end-of-sequence token. Only the answer is scored.

A demo with ``labels`` (a DAgger round, :mod:`catp_agent.harness.training.dagger`) is answered
with the label of each step (the oracle's action from that screen) while its history shows the
actions that were executed (the model's own, as the agent sees them at inference);
:attr:`Demo.targets` is the one place that picks between the two.

Screens are stored once, resized to the model's input size as uint8; every sample refers to
them by index, so a batch encodes each distinct screen once. With a frozen vision tower
(:meth:`SampleSet.cache_features`) each screen is encoded once for the whole run instead: a
batch then carries the tower's outputs (``Batch.features``) and the model applies only its
projector to them.

Copy and grounding practice (:class:`~catp_agent.harness.training.practice.CopySet`,
:class:`~catp_agent.harness.training.practice.GroundSet`) are built on a :class:`SampleSet`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from catp_agent.agent.history import Screenshot
from catp_agent.agent.prompt import build_messages, target_text
from catp_agent.harness.training.demos import Demo
from catp_agent.harness.training.packing import pack_rows, shared_prefix

__all__ = ["Batch", "PointerTargets", "Sample", "SampleSet", "action_primitive", "click_and_box", "corpus_texts", "pad_rows",
           "prompt_messages"]


@dataclass
class Sample:
    prompt_ids: list[int]  # with one image token per screen (expanded at batch time)
    target_ids: list[int]  # the answer tokens, then EOS
    frames: list[int]  # screen indices into SampleSet.pixels, prompt order
    task: str
    action: str = ""  # the answer's primitive ("click", "type", ...)
    click: tuple[float, float] | None = None  # a click answer's (x, y), screen pixels
    box: tuple[float, float, float, float] | None = None  # the clicked element's box (x, y, w, h), when stored
    screen: tuple[int, int] = (0, 0)  # the screen's (width, height)


@dataclass
class PointerTargets:
    """The pointer head's targets for the click samples of a batch (see catp_agent.agent.pointer).

    rows: which batch rows are clicks. query_pos: the position predicting each one's first answer
    token. key_start: where its current screen's image tokens start. right (n, N): the tokens
    whose patch centre is in the clicked element's box (and the click's own). own (n,): the
    click's token. offset (n, 2): the click inside it. box (n, 4) and screen (n, 2): for
    inside-the-box accuracy (box -1 where none is stored). grid (n, 2): the screen's token grid
    (rows, cols), row-major."""

    rows: torch.Tensor
    query_pos: torch.Tensor
    key_start: torch.Tensor
    right: torch.Tensor
    own: torch.Tensor
    offset: torch.Tensor
    box: torch.Tensor
    screen: torch.Tensor
    grid: torch.Tensor

    def to(self, device) -> "PointerTargets":
        return PointerTargets(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T), image tokens expanded, right padded
    attention_mask: torch.Tensor  # (B, T); or (B, 1, T, T) additive float, for packed rows (with position_ids)
    labels: torch.Tensor  # (B, T), -100 except the answer
    pixel_values: torch.Tensor  # (F, 3, H, W) distinct screens, normalised; (0, ...) when features are given
    frame_order: torch.Tensor  # (n images in batch,) index into the distinct screens, in token order
    pointer: PointerTargets | None = None  # the click rows' pointer targets (None: no clicks, or not asked for)
    features: torch.Tensor | None = None  # (F, N, C) a frozen tower's outputs for the distinct screens
    position_ids: torch.Tensor | None = None  # (B, T) for packed rows; None: 0, 1, 2, ...

    def to(self, device) -> "Batch":
        return Batch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.labels, self.pixel_values, self.frame_order)),
                     pointer=None if self.pointer is None else self.pointer.to(device),
                     features=None if self.features is None else self.features.to(device),
                     position_ids=None if self.position_ids is None else self.position_ids.to(device))


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
            texts.append(target_text(demo.targets[t]))
    return texts


class SampleSet:
    """All samples of a list of demos, with their screens preprocessed once.

    ``grid`` is the (rows, cols) token grid of one screen, for the pointer targets; None: a
    square grid of the batch's ``tokens_per_image``."""

    def __init__(self, demos: Sequence[Demo], tokenizer, image_processor, history: int = 3, progress: bool = True,
                 grid: tuple[int, int] | None = None) -> None:
        from tqdm import tqdm

        self.tokenizer = tokenizer
        self.grid = grid
        self.features: torch.Tensor | None = None  # (screens, N, C) float16: a frozen tower's outputs
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
        self.demo_offsets: list[int] = []  # demo k's screen t is pixels[demo_offsets[k] + t]
        self.sample_demo: list[int] = []  # sample i is a step of demo sample_demo[i]
        eos = tokenizer.eos_token_id
        offset = 0
        for demo in tqdm(demos, desc="samples", unit="demo", disable=not progress):
            self.demo_offsets.append(offset)
            for t in range(len(demo)):
                self.pixels[offset + t] = self._resize(demo.frames[t])
            answers = demo.targets  # the labels where the demo has them; the prompt's history keeps demo.actions
            for t in range(len(demo)):
                text = tokenizer.apply_chat_template(prompt_messages(demo, t, history), add_generation_prompt=True, tokenize=False)
                prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
                target = tokenizer(target_text(answers[t]), add_special_tokens=False)["input_ids"] + [eos]
                first = max(0, t - history)
                click, box = click_and_box(answers[t], demo.elements[t] if demo.elements else None)
                height, width = demo.frames[t].shape[:2]
                self.samples.append(Sample(prompt, target, [offset + i for i in range(first, t + 1)], demo.task,
                                           action_primitive(answers[t]), click, box, (int(width), int(height))))
                self.sample_demo.append(len(self.demo_offsets) - 1)
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
        rows, order = [], []
        for s in samples:
            n_images = sum(1 for tok in s.prompt_ids if tok == self.image_token_id)
            if n_images != len(s.frames):
                raise RuntimeError(f"sample has {n_images} image placeholders for {len(s.frames)} screens")
            order.extend(where[f] for f in s.frames)
            rows.append((self.expand_images(s.prompt_ids, tokens_per_image), s.target_ids))
        batch = self.padded_batch(rows, frames, order)
        batch.pointer = self.pointer_targets(samples, [p for p, _ in rows], tokens_per_image)
        return batch

    def episodes(self) -> list[list[int]]:
        """Per demo, the indices of its samples (its steps), in step order."""
        out: list[list[int]] = [[] for _ in self.demo_offsets]
        for i, d in enumerate(self.sample_demo):
            out[d].append(i)
        return out

    def packed_batch(self, indices: Sequence[int], tokens_per_image: int) -> Batch:
        """Samples ``indices`` with one row per demo (:func:`pack_rows`): the steps of an episode
        share their prompts' common parts (the earlier screens and actions, each screen's image
        tokens once), and each step computes exactly what its own row would. Steps of one demo
        pack well when the history window reaches back to the episode's start."""
        by_demo: dict[int, list[int]] = {}
        for i in sorted(indices):  # step order: a step shares most with the one before it
            by_demo.setdefault(self.sample_demo[i], []).append(i)
        rows = [[(self.samples[i].prompt_ids, self.samples[i].frames, self.samples[i].target_ids) for i in group]
                for group in by_demo.values()]
        return self.packed(rows, [self.samples[i] for group in by_demo.values() for i in group], tokens_per_image)

    def packed(self, rows: Sequence[Sequence[tuple[list[int], list[int], list[int]]]], samples: Sequence[Sample],
               tokens_per_image: int) -> Batch:
        """A batch of packed rows: each row a list of (prompt ids with one image placeholder per
        screen, those screens' indices, answer ids); ``samples`` (one per sequence, row by row)
        give the pointer targets."""
        packed = []
        for seqs in rows:
            keyed = []
            for prompt, frames, answer in seqs:
                shots = iter(frames)
                keys = [k for t in prompt for k in ([(t, next(shots))] * tokens_per_image if t == self.image_token_id else [(t, -1)])]
                keyed.append((keys + [(t, -1) for t in answer], len(keys)))
            # A sequence sharing less than a third of itself with the row so far starts a new row: a
            # long episode's late windows share little, and attention grows with the row's square.
            current: list = []
            for seq in keyed:
                if current and max(shared_prefix(seq[0], other[0]) for other in current) < len(seq[0]) / 3:
                    packed.append(pack_rows(current))
                    current = []
                current.append(seq)
            packed.append(pack_rows(current))
        width = max(len(p.keys) for p in packed)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(packed), width), pad, dtype=torch.long)
        labels = torch.full((len(packed), width), -100, dtype=torch.long)
        position_ids = torch.zeros((len(packed), width), dtype=torch.long)
        mask = torch.full((len(packed), 1, width, width), torch.finfo(torch.float32).min)
        frames: list[int] = []
        order: list[int] = []
        places: list[tuple[int, int, int]] = []
        for r, p in enumerate(packed):
            n = len(p.keys)
            input_ids[r, :n] = torch.tensor([t for t, _ in p.keys])
            position_ids[r, :n] = torch.tensor(p.positions)
            labels[r, :n] = torch.tensor(p.labels)
            allowed = torch.zeros((width, width), dtype=torch.bool)
            allowed[:n, :n] = p.allowed
            allowed[n:, n:] = torch.ones((width - n, width - n), dtype=torch.bool).tril()  # padding sees itself
            mask[r, 0].masked_fill_(allowed, 0.0)
            for k, (t, f) in enumerate(p.keys):  # one entry per image run, in row order
                if t == self.image_token_id and (k == 0 or p.keys[k - 1] != (t, f)):
                    if f not in frames:
                        frames.append(f)
                    order.append(frames.index(f))
            places += [(r, q, key) for q, key in zip(p.query_pos, p.last_image_start)]
        batch = self.padded_batch([([pad], [])], frames, order)
        batch.input_ids, batch.attention_mask, batch.labels, batch.position_ids = input_ids, mask, labels, position_ids
        batch.pointer = self.pointer_targets(samples, None, tokens_per_image, places)
        return batch

    def grid_of(self, tokens_per_image: int) -> tuple[int, int]:
        """The (rows, cols) token grid of a screen: :attr:`grid`, else the square one."""
        if self.grid is not None:
            if self.grid[0] * self.grid[1] != tokens_per_image:
                raise ValueError(f"the sample set's grid {self.grid} does not hold {tokens_per_image} tokens per image")
            return self.grid
        side = int(round(tokens_per_image ** 0.5))
        if side * side != tokens_per_image:
            raise ValueError(f"{tokens_per_image} tokens per image make no square grid; give the SampleSet its grid")
        return side, side

    def pointer_targets(self, samples: Sequence[Sample], prompts: Sequence[Sequence[int]] | None,
                        tokens_per_image: int, places: Sequence[tuple[int, int, int]] | None = None
                        ) -> PointerTargets | None:
        """The pointer targets of the click samples among ``samples``: sample i is batch row i,
        its expanded prompt ``prompts[i]``; or, for packed rows, ``places[i]`` gives (row, the
        position of its prompt's last token, where its current screen's image tokens start).
        None when there is no click."""
        from catp_agent.agent.pointer import pointer_targets

        grid = self.grid_of(tokens_per_image)
        if places is None:
            places = []
            for i, p in enumerate(prompts):
                last_image = max(k for k, tok in enumerate(p) if tok == self.image_token_id)
                places.append((i, len(p) - 1, last_image - tokens_per_image + 1))
        picked = [(s, place) for s, place in zip(samples, places, strict=True) if s.click is not None]
        if not picked:
            return None
        cols = {f.name: [] for f in PointerTargets.__dataclass_fields__.values()}
        for s, (row, query_pos, key_start) in picked:
            right, own, offset = pointer_targets(s.click, s.box, grid, s.screen)
            mask = torch.zeros(tokens_per_image, dtype=torch.bool)
            mask[right] = True
            cols["rows"].append(row)
            cols["query_pos"].append(query_pos)
            cols["key_start"].append(key_start)
            cols["right"].append(mask)
            cols["own"].append(own)
            cols["offset"].append(offset)
            cols["box"].append(s.box if s.box is not None else (-1.0, -1.0, -1.0, -1.0))
            cols["screen"].append(s.screen)
        return PointerTargets(
            rows=torch.tensor(cols["rows"]), query_pos=torch.tensor(cols["query_pos"]), key_start=torch.tensor(cols["key_start"]),
            right=torch.stack(cols["right"]), own=torch.tensor(cols["own"]), offset=torch.tensor(cols["offset"], dtype=torch.float32),
            box=torch.tensor(cols["box"], dtype=torch.float32), screen=torch.tensor(cols["screen"], dtype=torch.float32),
            grid=torch.tensor([grid] * len(picked), dtype=torch.long))

    def expand_images(self, prompt_ids: Sequence[int], tokens_per_image: int) -> list[int]:
        """``prompt_ids`` with each image placeholder repeated ``tokens_per_image`` times."""
        ids: list[int] = []
        for tok in prompt_ids:
            ids.extend([tok] * tokens_per_image if tok == self.image_token_id else [tok])
        return ids

    def screens(self, frames: Sequence[int]) -> torch.Tensor:
        """Screens ``frames`` as the model's normalised ``pixel_values`` ``(F, 3, H, W)``."""
        pix = torch.from_numpy(self.pixels[list(frames)]).permute(0, 3, 1, 2).float() * self.rescale
        return (pix - self.mean) / self.std

    def cache_features(self, encode, batch: int = 16, progress: bool = True) -> None:
        """Encode every screen once with ``encode`` (normalised pixel_values (F, 3, H, W) -> a
        frozen tower's outputs (F, N, C), e.g. :func:`catp_agent.harness.training.reading.tower_encoder`)
        and keep them (float16); batches then carry them instead of pixels."""
        from tqdm import tqdm

        chunks = []
        with torch.no_grad():
            for start in tqdm(range(0, len(self.pixels), batch), desc="tower features", unit="batch", disable=not progress):
                out = encode(self.screens(range(start, min(len(self.pixels), start + batch)))).float()
                if not torch.isfinite(out).all() or out.abs().max() > 6e4:
                    raise ValueError("the tower's outputs do not fit float16 (non-finite or above 6e4); cannot cache them")
                chunks.append(out.half())
        self.features = torch.cat(chunks) if chunks else None

    def padded_batch(self, rows: list[tuple[list[int], list[int]]], frames: Sequence[int], order: Sequence[int]) -> Batch:
        """``rows`` (prompt ids, answer ids) with the distinct screens ``frames`` (pixels, or the
        cached features) in the order ``order`` (indices into ``frames``)."""
        order_t = torch.tensor(list(order), dtype=torch.long)
        if self.features is None:
            return pad_rows(rows, self.tokenizer.pad_token_id, self.screens(frames), order_t)
        batch = pad_rows(rows, self.tokenizer.pad_token_id, torch.zeros((0, 3, *self.side)), order_t)
        batch.features = self.features[list(frames)].float()
        return batch


def pad_rows(rows: list[tuple[list[int], list[int]]], pad: int, pixel_values: torch.Tensor,
                  frame_order: torch.Tensor) -> Batch:
    """(prompt ids, answer ids) rows, right padded; only the answers are labelled."""
    width = max(len(p) + len(t) for p, t in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (p, t) in enumerate(rows):
        input_ids[i, : len(p) + len(t)] = torch.tensor(p + t)
        attention[i, : len(p) + len(t)] = 1
        labels[i, len(p): len(p) + len(t)] = torch.tensor(t)
    return Batch(input_ids, attention, labels, pixel_values, frame_order)


def action_primitive(action: str) -> str:
    return action.split("(", 1)[0].strip()


def click_and_box(action: str, elements: Sequence[dict] | None
                   ) -> tuple[tuple[float, float] | None, tuple[float, float, float, float] | None]:
    """A click answer's (x, y) and the smallest stored element box holding it (None, None for
    other answers; box None when no stored box holds the click)."""
    from catp_agent.agent.pointer import POINTER_ACTIONS
    from envs.actions import ActionParseError, parse_action

    try:
        parsed = parse_action(action)
    except ActionParseError:
        return None, None
    if parsed.name not in POINTER_ACTIONS:
        return None, None
    x, y = (float(v) for v in parsed.args)
    best = None
    for e in elements or []:
        bx, by, bw, bh = (float(v) for v in e["bbox"])
        if bx <= x <= bx + bw and by <= y <= by + bh and (best is None or bw * bh < best[2] * best[3]):
            best = (bx, by, bw, bh)
    return (x, y), best
