"""Practice beside behaviour cloning, built on a :class:`~catp_agent.harness.training.data.SampleSet`.

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

import numpy as np
import torch

from catp_agent.agent.history import Screenshot
from catp_agent.agent.prompt import build_messages, target_text
from catp_agent.harness.training.data import Batch, Sample, SampleSet, action_primitive, pad_rows, prompt_messages
from catp_agent.harness.training.demos import Demo

__all__ = ["CopySet", "GroundSet", "ground_targets", "grounding_prompt", "typed_values"]


def typed_values(demo: Demo) -> list[str]:
    """The distinct strings ``demo`` types in its answers (:attr:`Demo.targets`: the labels where
    it has them, else the executed actions), in order."""
    from envs.actions import parse_action

    values: list[str] = []
    for action in demo.targets:
        if action_primitive(action) == "type":
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
                if action_primitive(action) == "type":
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
        return pad_rows(rows, self.tokenizer.pad_token_id, no_screens, torch.zeros(0, dtype=torch.long))

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
    return [(instruction, action) for instruction, action, _ in _ground_items(elements, round_to, max_text)]


def grounding_prompt(tokenizer, instruction: str) -> list[int]:
    """The agent's own prompt ids for ``instruction`` on one screen with no history (one image
    placeholder, not expanded)."""
    messages = build_messages([Screenshot(0, np.zeros((1, 1, 3), np.uint8), None)], instruction)
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _ground_items(elements: Sequence[dict], round_to: int = 10, max_text: int = 40
                  ) -> list[tuple[str, str, tuple[float, float, float, float]]]:
    """:func:`ground_targets` with each element's box (x, y, w, h)."""
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
        pairs.append((f'Click "{text}".', round_action(click(round(x + w / 2), round(y + h / 2)), round_to),
                      (float(x), float(y), float(w), float(h))))
    return pairs


class GroundSet:
    """Grounding practice on the screens of a :class:`SampleSet` (see the module doc).

    ``batch(n, rng, tokens_per_image)`` draws ``n`` (screen, element) pairs: screens uniformly,
    then a few of each one's elements; the prompt is the agent's own with no history. Every
    row is a click, so every row has pointer targets (the element's box, its centre's token).
    Demos without stored elements (collected by an older version) contribute nothing."""

    def __init__(self, samples: SampleSet, demos: Sequence[Demo], round_to: int = 10) -> None:
        if len(demos) != len(samples.demo_offsets):
            raise ValueError(f"GroundSet needs the demos the SampleSet was built from: {len(demos)} demos, "
                             f"{len(samples.demo_offsets)} in the SampleSet")
        self.samples = samples
        # (index into samples.pixels, (instruction, action, box) triples, the screen's (width, height))
        self.screens: list[tuple[int, list[tuple[str, str, tuple]], tuple[int, int]]] = []
        for demo, offset in zip(demos, samples.demo_offsets):
            for t, elements in enumerate(demo.elements or []):
                pairs = _ground_items(elements, round_to)
                if pairs:
                    height, width = demo.frames[t].shape[:2]
                    self.screens.append((offset + t, pairs, (int(width), int(height))))
        self._prompts: dict[str, list[int]] = {}

    def __len__(self) -> int:
        return sum(len(pairs) for _, pairs, _ in self.screens)

    def _prompt_ids(self, instruction: str) -> list[int]:
        if instruction not in self._prompts:
            self._prompts[instruction] = grounding_prompt(self.samples.tokenizer, instruction)
        return self._prompts[instruction]

    def _rows(self, picks: Sequence[tuple[int, tuple[str, str, tuple], tuple[int, int]]], tokens_per_image: int) -> Batch:
        tok = self.samples.tokenizer
        frames = sorted({f for f, _, _ in picks})
        where = {f: k for k, f in enumerate(frames)}
        rows = [(self.samples.expand_images(self._prompt_ids(instruction), tokens_per_image),
                 tok(target_text(action), add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
                for _, (instruction, action, _), _ in picks]
        batch = self.samples.padded_batch(rows, frames, [where[f] for f, _, _ in picks])
        samples = _click_samples(picks)
        batch.pointer = self.samples.pointer_targets(samples, [p for p, _ in rows], tokens_per_image)
        return batch

    def batch(self, n: int, rng: np.random.Generator, tokens_per_image: int, per_screen: int = 4) -> Batch:
        """``n`` pairs: screens drawn with replacement, up to ``per_screen`` distinct pairs from
        each (a batch encodes each screen once, so fewer screens make a cheaper step)."""
        picks = self._draw(n, rng, per_screen)
        return self._rows(picks, tokens_per_image)

    def _draw(self, n: int, rng: np.random.Generator, per_screen: int
              ) -> list[tuple[int, tuple[str, str, tuple], tuple[int, int]]]:
        """``n`` (screen, (instruction, action, box), screen size) picks: screens drawn with
        replacement, up to ``per_screen`` distinct pairs from each."""
        picks: list[tuple[int, tuple[str, str, tuple], tuple[int, int]]] = []
        while len(picks) < n:
            frame, pairs, screen = self.screens[int(rng.integers(len(self.screens)))]
            k = min(per_screen, len(pairs), n - len(picks))
            picks += [(frame, pairs[int(j)], screen) for j in rng.choice(len(pairs), size=k, replace=False)]
        return picks

    def packed_batch(self, n: int, rng: np.random.Generator, tokens_per_image: int, per_screen: int = 4) -> Batch:
        """The pairs :meth:`batch` draws (same ``rng`` use), packed (:func:`pack_rows`): one row
        per screen's run of questions, the prompt's part they share (the screen's image tokens
        included) once, so each question computes exactly what its own row would, at a
        fraction of the tokens."""
        picks = self._draw(n, rng, per_screen)
        tok = self.samples.tokenizer
        groups: list[list[int]] = []  # runs of picks on one screen (as drawn)
        for i, (f, _, _) in enumerate(picks):
            if groups and picks[groups[-1][0]][0] == f and len(groups[-1]) < per_screen:
                groups[-1].append(i)
            else:
                groups.append([i])
        rows = []
        for group in groups:
            rows.append([(self._prompt_ids(picks[i][1][0]), [picks[i][0]],
                          tok(target_text(picks[i][1][1]), add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
                         for i in group])
        samples = _click_samples([picks[i] for g in groups for i in g])
        return self.samples.packed(rows, samples, tokens_per_image)

    def fixed(self, n: int, tokens_per_image: int) -> list[Batch]:
        """One fixed pair from each of up to ``n`` screens spread evenly over the set, in batches
        of 32: for validation."""
        step = max(1, len(self.screens) // max(1, n))
        picks = [(f, pairs[(7 * k) % len(pairs)], screen) for k, (f, pairs, screen) in enumerate(self.screens[::step][:n])]
        return [self._rows(picks[i:i + 32], tokens_per_image) for i in range(0, len(picks), 32)]


def _click_samples(picks: Sequence[tuple[int, tuple[str, str, tuple], tuple[int, int]]]) -> list[Sample]:
    """Grounding picks (screen, (instruction, action, box), screen size) as click samples at their
    boxes' centres: what the pointer targets are made from."""
    return [Sample([], [], [f], "ground", "click", (box[0] + box[2] / 2, box[1] + box[3] / 2), box, screen)
            for f, (_, _, box), screen in picks]
