"""Grounding questions from the demos' stored elements: given an element's text, point at it.

Every demo screen stores its visible elements (text, role, box; see
:mod:`catp_agent.harness.training.demos`). Each element whose text is short and unique on its
screen is one question: the query is its text (or, for the no-text control, its role only), the
target its box. Checkboxes and radios are left out, as in grounding practice: their text is
their form value, not what the screen shows.

An answer is a point on the screen. The element it *picks* is the element whose box holds the
point (the smallest, when boxes nest), else the nearest box. A pick is right when it is the
target, or an element with the target's text (a label and its own control). Inside-target
asks more: the point itself lies in the target's box.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["GroundingQuestion", "GroundingSet", "picked_element", "question_elements"]

MAX_TEXT = 40
"""Longer texts are paragraphs, not the labels an agent is told to click."""


@dataclass(frozen=True)
class GroundingQuestion:
    screen: int  # index into GroundingSet.frames
    target: int  # index into the screen's elements
    text: str
    role: str
    box: tuple[float, float, float, float]  # x, y, w, h in screen pixels
    task: str


def _clean(text: str) -> str:
    return " ".join(str(text).split())


def question_elements(elements: Sequence[dict]) -> list[int]:
    """Indices of the elements that make a grounding question: text non-empty, at most
    :data:`MAX_TEXT` characters, unique on the screen, and not a checkbox or radio."""
    texts = [_clean(e.get("text", "")) for e in elements]
    counts: dict[str, int] = {}
    for text in texts:
        counts[text] = counts.get(text, 0) + 1
    return [i for i, (text, e) in enumerate(zip(texts, elements))
            if text and len(text) <= MAX_TEXT and counts[text] == 1 and e.get("role") not in ("checkbox", "radio")
            and e["bbox"][2] > 0 and e["bbox"][3] > 0]


def picked_element(point: tuple[float, float], elements: Sequence[dict]) -> int:
    """The element a click at ``point`` picks: the smallest box holding it, else the nearest box
    (distance from the point to the box's edge). -1 when the screen has no elements."""
    x, y = point
    best, best_key = -1, None
    for i, e in enumerate(elements):
        bx, by, bw, bh = e["bbox"]
        dx = max(bx - x, 0.0, x - (bx + bw))
        dy = max(by - y, 0.0, y - (by + bh))
        key = (dx * dx + dy * dy, bw * bh)
        if best_key is None or key < best_key:
            best, best_key = i, key
    return best


@dataclass
class GroundingSet:
    """Screens (uint8, (N, H, W, 3)), their elements, and the questions on them."""

    frames: np.ndarray
    elements: list[list[dict]]
    questions: list[GroundingQuestion]
    tasks: list[str] = field(default_factory=list)

    @classmethod
    def from_demos(cls, demo_dir: str | Path, tasks: Sequence[str], seeds: Sequence[int], *,
                   max_screens_per_task: int | None = None, rng_seed: int = 0, pad_to: int = 1) -> "GroundingSet":
        """Questions on the screens of the demos of ``tasks`` x ``seeds`` stored in ``demo_dir``.

        ``max_screens_per_task`` keeps a random subset (drawn with ``rng_seed``) of each task's
        screens that hold a question, so that a large demo folder fits in memory. Missing demos
        raise with the command that collects them. ``pad_to``: screens are padded at the right and
        bottom (their edge pixels repeated) to a multiple of it, e.g. the 32 px stride of a
        tower that sees the screen at its own size; boxes keep their coordinates."""
        from catp_agent.harness.training.demos import demo_path, load_demo

        rng = np.random.default_rng(rng_seed)
        frames: list[np.ndarray] = []
        elements: list[list[dict]] = []
        questions: list[GroundingQuestion] = []
        missing = [(t, s) for t in tasks for s in seeds if not demo_path(Path(demo_dir), t, s).exists()]
        if len(missing) == len(tasks) * len(seeds):
            raise FileNotFoundError(
                f"no demos for {list(tasks)} on seeds {min(seeds)}-{max(seeds)} in {demo_dir}; collect them with "
                f"catp_agent.harness.training.demos.collect_demos (or `python scripts/grounding_probe.py collect`)")
        for task in tasks:
            screens: list[tuple[np.ndarray, list[dict], list[int]]] = []
            for seed in seeds:
                path = demo_path(Path(demo_dir), task, seed)
                if not path.exists():
                    continue
                demo = load_demo(path)
                if demo.elements is None:
                    raise ValueError(f"{path} was collected without its elements (an old demo); delete it and collect again")
                for frame, elems in zip(demo.frames, demo.elements):
                    keep = question_elements(elems)
                    if keep:
                        screens.append((frame, elems, keep))
            if max_screens_per_task is not None and len(screens) > max_screens_per_task:
                picks = sorted(rng.choice(len(screens), size=max_screens_per_task, replace=False).tolist())
                screens = [screens[i] for i in picks]
            for frame, elems, keep in screens:
                index = len(frames)
                frames.append(frame)
                elements.append(elems)
                for i in keep:
                    e = elems[i]
                    questions.append(GroundingQuestion(index, i, _clean(e["text"]), str(e.get("role", "")),
                                                       tuple(float(v) for v in e["bbox"]), task))
        if not frames:
            raise ValueError(f"the demos of {list(tasks)} hold no grounding question (no unique element texts)")
        shapes = {f.shape for f in frames}
        if len(shapes) != 1:
            raise ValueError(f"grounding screens must share one size, got {sorted(shapes)}")
        stacked = np.stack(frames)
        h, w = stacked.shape[1:3]
        pad_h, pad_w = -h % pad_to, -w % pad_to
        if pad_h or pad_w:
            stacked = np.pad(stacked, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        return cls(stacked, elements, questions, list(tasks))

    @classmethod
    def synthetic(cls, seed: int, screens: int, size: tuple[int, int] = (640, 480)) -> "GroundingSet":
        """Screens of random labels (:func:`~catp_agent.harness.grounding.glyphs.render_canvas`
        at a screen's ``size`` (width, height): 10-18 labels and buttons, half of them starting
        with a vertical list, near misses of each other) whose texts come from no task: the
        probe's test of reading strings it never saw. Task name ``random``."""
        from catp_agent.harness.grounding.glyphs import CanvasSpec, render_canvas

        if screens < 1:
            raise ValueError(f"synthetic needs at least one screen, got {screens}")
        rng = np.random.default_rng(seed)
        spec = CanvasSpec(height=size[1], width=size[0], min_words=10, max_words=18, lists=0.5)
        frames, elements, questions = [], [], []
        for index in range(screens):
            image, placed = render_canvas(rng, spec)
            elems = [{"text": text, "role": "button", "bbox": list(box)} for text, box in placed]
            frames.append(image)
            elements.append(elems)
            questions += [GroundingQuestion(index, i, _clean(elems[i]["text"]), "button", tuple(elems[i]["bbox"]), "random")
                          for i in question_elements(elems)]
        return cls(np.stack(frames), elements, questions, ["random"])

    def is_right(self, question: GroundingQuestion, point: tuple[float, float]) -> tuple[bool, bool]:
        """(the pick is right, the point is inside the target's box) for an answer at ``point``."""
        elems = self.elements[question.screen]
        picked = picked_element(point, elems)
        right = picked == question.target or (picked >= 0 and _clean(elems[picked].get("text", "")) == question.text)
        x, y, w, h = question.box
        inside = x <= point[0] <= x + w and y <= point[1] <= y + h
        return right, inside

    def by_screen(self) -> dict[int, list[int]]:
        """{screen: indices of its questions}."""
        out: dict[int, list[int]] = {}
        for k, q in enumerate(self.questions):
            out.setdefault(q.screen, []).append(k)
        return out
