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
them by index, so a batch encodes each distinct screen once.

:class:`CopySet` adds copy practice: text-only versions of the ``type`` steps (the screens left
out) in which every value the demo types is swapped, consistently in the instruction, the history
and the answer, for another task's value or a random string. It trains what the screens cannot
teach: typing exactly the text the instruction gives, whatever that text is.

:class:`GroundSet` adds grounding practice: one screen, the task ``Click "<text>".`` for an
element whose text is unique on that screen, answered by a click at the element's centre. Every
screen of the demos yields several of them (the demos store each screen's visible elements), so
the model gets dense practice at what behaviour cloning alone teaches slowly: reading the words
on a screen and finding where a control is.
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

__all__ = ["Batch", "CopySet", "GroundSet", "PointerTargets", "Sample", "SampleSet", "corpus_texts", "ground_targets", "typed_values"]


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
    inside-the-box accuracy (box -1 where none is stored)."""

    rows: torch.Tensor
    query_pos: torch.Tensor
    key_start: torch.Tensor
    right: torch.Tensor
    own: torch.Tensor
    offset: torch.Tensor
    box: torch.Tensor
    screen: torch.Tensor

    def to(self, device) -> "PointerTargets":
        return PointerTargets(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T), image tokens expanded, right padded
    attention_mask: torch.Tensor  # (B, T)
    labels: torch.Tensor  # (B, T), -100 except the answer
    pixel_values: torch.Tensor  # (F, 3, S, S) distinct screens, normalised
    frame_order: torch.Tensor  # (n images in batch,) index into pixel_values, in token order
    pointer: PointerTargets | None = None  # the click rows' pointer targets (None: no clicks, or not asked for)

    def to(self, device) -> "Batch":
        return Batch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.labels, self.pixel_values, self.frame_order)),
                     pointer=None if self.pointer is None else self.pointer.to(device))


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
        self.demo_offsets: list[int] = []  # demo k's screen t is pixels[demo_offsets[k] + t]
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
                                           _primitive(answers[t]), click, box, (int(width), int(height))))
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
        batch = _padded_batch(rows, self.tokenizer.pad_token_id, self.screens(frames), torch.tensor(order, dtype=torch.long))
        batch.pointer = self.pointer_targets(samples, [p for p, _ in rows], tokens_per_image)
        return batch

    def pointer_targets(self, samples: Sequence[Sample], prompts: Sequence[Sequence[int]],
                        tokens_per_image: int) -> PointerTargets | None:
        """The pointer targets of the click samples among ``samples`` (their expanded prompts
        ``prompts``); None when there is no click."""
        from catp_agent.agent.pointer import pointer_targets

        side = int(round(tokens_per_image ** 0.5))
        if side * side != tokens_per_image:
            raise ValueError(f"pointer targets need a square token grid, got {tokens_per_image} tokens per image")
        picked = [(i, s, p) for i, (s, p) in enumerate(zip(samples, prompts)) if s.click is not None]
        if not picked:
            return None
        cols = {f.name: [] for f in PointerTargets.__dataclass_fields__.values()}
        for i, s, p in picked:
            right, own, offset = pointer_targets(s.click, s.box, (side, side), s.screen)
            mask = torch.zeros(tokens_per_image, dtype=torch.bool)
            mask[right] = True
            last_image = max(k for k, tok in enumerate(p) if tok == self.image_token_id)
            cols["rows"].append(i)
            cols["query_pos"].append(len(p) - 1)
            cols["key_start"].append(last_image - tokens_per_image + 1)
            cols["right"].append(mask)
            cols["own"].append(own)
            cols["offset"].append(offset)
            cols["box"].append(s.box if s.box is not None else (-1.0, -1.0, -1.0, -1.0))
            cols["screen"].append(s.screen)
        return PointerTargets(
            rows=torch.tensor(cols["rows"]), query_pos=torch.tensor(cols["query_pos"]), key_start=torch.tensor(cols["key_start"]),
            right=torch.stack(cols["right"]), own=torch.tensor(cols["own"]), offset=torch.tensor(cols["offset"], dtype=torch.float32),
            box=torch.tensor(cols["box"], dtype=torch.float32), screen=torch.tensor(cols["screen"], dtype=torch.float32))

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


def _padded_batch(rows: list[tuple[list[int], list[int]]], pad: int, pixel_values: torch.Tensor,
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


def _primitive(action: str) -> str:
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


def typed_values(demo: Demo) -> list[str]:
    """The distinct strings ``demo`` types in its answers (:attr:`Demo.targets`: the labels where
    it has them, else the executed actions), in order."""
    from envs.actions import parse_action

    values: list[str] = []
    for action in demo.targets:
        if _primitive(action) == "type":
            text = str(parse_action(action).args[0])
            if text and text not in values:
                values.append(text)
    return values


_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _random_value(rng: np.random.Generator, like: str) -> str:
    """A random string shaped a little like ``like`` (an e-mail stays an e-mail)."""

    def word(lo: int, hi: int) -> str:
        w = "".join(rng.choice(list(_LETTERS + "0123456789" if rng.random() < 0.3 else _LETTERS), int(rng.integers(lo, hi + 1))))
        return w.capitalize() if rng.random() < 0.4 else w

    if "@" in like:
        return f"{word(3, 7).lower()}.{word(3, 8).lower()}@{word(4, 8).lower()}.org"
    return " ".join(word(2, 9) for _ in range(int(rng.integers(1, 4))))


class CopySet:
    """Text-only ``type`` steps of ``demos`` with their typed values swapped (see the module doc).

    ``batch(n, rng)`` draws ``n`` of them; each typed value is replaced, everywhere in the
    prompt and the answer, by a value another demo of the same task typed (half the time) or by
    a random string. The prompt is the agent's, rendered by the chat template, with the image
    placeholders removed.

    With a labelled demo (DAgger) the steps are those whose *label* types, answered by the label,
    and the swapped values are the ones the labels type, as in :class:`SampleSet`: the answer is
    always what the model is trained to say. A value that only the executed actions typed (a
    model's wrong text, shown in the history) is left as it is, and never enters the pool of
    values to swap in."""

    def __init__(self, demos: Sequence[Demo], tokenizer, history: int = 3, side: tuple[int, int] = (1, 1)) -> None:
        self.tokenizer = tokenizer
        self.side = side
        self.steps: list[tuple[str, str, str, list[str]]] = []  # (task, prompt text, answer text, typed values)
        self.pool: dict[tuple[str, bool], list[str]] = {}
        for demo in demos:
            values = typed_values(demo)
            for v in values:
                self.pool.setdefault((demo.task, "@" in v), []).append(v)
            for t, action in enumerate(demo.targets):
                if _primitive(action) == "type":
                    text = tokenizer.apply_chat_template(prompt_messages(demo, t, history), add_generation_prompt=True, tokenize=False)
                    self.steps.append((demo.task, text.replace("<image>", ""), target_text(action), values))

    def __len__(self) -> int:
        return len(self.steps)

    def swapped(self, index: int, rng: np.random.Generator) -> tuple[str, str]:
        """(prompt, answer) of step ``index`` with its typed values swapped."""
        task, prompt, answer, values = self.steps[index]
        used = set(values)
        marks = {}
        for k, value in enumerate(values):
            pool = self.pool.get((task, "@" in value), [])
            choices = [p for p in pool if p not in used]
            new = choices[int(rng.integers(len(choices)))] if choices and rng.random() < 0.5 else _random_value(rng, value)
            used.add(new)
            marks[value] = (f"\x00{k}\x00", new)
        # Two passes through placeholders, so one swap never rewrites another's result.
        for value, (mark, _) in sorted(marks.items(), key=lambda kv: -len(kv[0])):
            prompt, answer = prompt.replace(value, mark), answer.replace(value, mark)
        for mark, new in marks.values():
            prompt, answer = prompt.replace(mark, new), answer.replace(mark, new)
        return prompt, answer

    def _rows(self, pairs) -> Batch:
        eos = self.tokenizer.eos_token_id
        rows = [(self.tokenizer(prompt, add_special_tokens=False)["input_ids"],
                 self.tokenizer(answer, add_special_tokens=False)["input_ids"] + [eos]) for prompt, answer in pairs]
        no_screens = torch.zeros((0, 3, *self.side))
        return _padded_batch(rows, self.tokenizer.pad_token_id, no_screens, torch.zeros(0, dtype=torch.long))

    def batch(self, n: int, rng: np.random.Generator) -> Batch:
        """``n`` steps drawn with replacement, values swapped."""
        return self._rows([self.swapped(int(i), rng) for i in rng.integers(len(self.steps), size=n)])

    def original(self, indices: Sequence[int]) -> Batch:
        """Steps ``indices`` as the demos had them (nothing swapped): for validation."""
        return self._rows([self.steps[i][1:3] for i in indices])


def ground_targets(elements: Sequence[dict], round_to: int = 10, max_text: int = 40) -> list[tuple[str, str]]:
    """(instruction, action) grounding pairs for one screen's elements: ``Click "<text>".`` and
    a click at the element's centre (rounded like the demos' clicks), for every element whose
    text is short and unique on the screen (an ambiguous text has no single right answer).
    Checkboxes and radios are left out: their text is their form value, not what is shown."""
    from catp_agent.harness.training.demos import round_action
    from envs.actions import click

    texts = [" ".join(str(e.get("text", "")).split()) for e in elements]
    counts: dict[str, int] = {}
    for text in texts:
        counts[text] = counts.get(text, 0) + 1
    pairs = []
    for text, e in zip(texts, elements):
        if not text or len(text) > max_text or counts[text] > 1 or e.get("role") in ("checkbox", "radio") or '"' in text:
            continue
        x, y, w, h = e["bbox"]
        pairs.append((f'Click "{text}".', round_action(click(round(x + w / 2), round(y + h / 2)), round_to)))
    return pairs


class GroundSet:
    """Grounding practice on the screens of a :class:`SampleSet` (see the module doc).

    ``batch(n, rng, tokens_per_image)`` draws ``n`` (screen, element) pairs: screens uniformly,
    then a few of each one's elements; the prompt is the agent's own with no history. Demos
    without stored elements (collected by an older version) contribute nothing."""

    def __init__(self, samples: SampleSet, demos: Sequence[Demo], round_to: int = 10) -> None:
        if len(demos) != len(samples.demo_offsets):
            raise ValueError(f"GroundSet needs the demos the SampleSet was built from: {len(demos)} demos, "
                             f"{len(samples.demo_offsets)} in the SampleSet")
        self.samples = samples
        self.screens: list[tuple[int, list[tuple[str, str]]]] = []  # (index into samples.pixels, pairs)
        for demo, offset in zip(demos, samples.demo_offsets):
            for t, elements in enumerate(demo.elements or []):
                pairs = ground_targets(elements, round_to)
                if pairs:
                    self.screens.append((offset + t, pairs))
        self._prompts: dict[str, list[int]] = {}

    def __len__(self) -> int:
        return sum(len(pairs) for _, pairs in self.screens)

    def _prompt_ids(self, instruction: str) -> list[int]:
        if instruction not in self._prompts:
            tok = self.samples.tokenizer
            messages = build_messages([Screenshot(0, np.zeros((1, 1, 3), np.uint8), None)], instruction)
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            self._prompts[instruction] = tok(text, add_special_tokens=False)["input_ids"]
        return self._prompts[instruction]

    def _rows(self, picks: Sequence[tuple[int, str, str]], tokens_per_image: int) -> Batch:
        tok = self.samples.tokenizer
        frames = sorted({f for f, _, _ in picks})
        where = {f: k for k, f in enumerate(frames)}
        rows = [(self.samples.expand_images(self._prompt_ids(instruction), tokens_per_image),
                 tok(target_text(action), add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
                for _, instruction, action in picks]
        return _padded_batch(rows, tok.pad_token_id, self.samples.screens(frames),
                             torch.tensor([where[f] for f, _, _ in picks], dtype=torch.long))

    def batch(self, n: int, rng: np.random.Generator, tokens_per_image: int, per_screen: int = 4) -> Batch:
        """``n`` pairs: screens drawn with replacement, up to ``per_screen`` distinct pairs from
        each (a batch encodes each screen once, so fewer screens make a cheaper step)."""
        picks: list[tuple[int, str, str]] = []
        while len(picks) < n:
            frame, pairs = self.screens[int(rng.integers(len(self.screens)))]
            k = min(per_screen, len(pairs), n - len(picks))
            picks += [(frame, *pairs[int(j)]) for j in rng.choice(len(pairs), size=k, replace=False)]
        return self._rows(picks, tokens_per_image)

    def fixed(self, n: int, tokens_per_image: int) -> list[Batch]:
        """One fixed pair from each of up to ``n`` screens spread evenly over the set, in batches
        of 32: for validation."""
        step = max(1, len(self.screens) // max(1, n))
        picks = [(f, *pairs[(7 * k) % len(pairs)]) for k, (f, pairs) in enumerate(self.screens[::step][:n])]
        return [self._rows(picks[i:i + 32], tokens_per_image) for i in range(0, len(picks), 32)]
