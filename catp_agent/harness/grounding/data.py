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
                   max_screens_per_task: int | None = None, rng_seed: int = 0) -> "GroundingSet":
        """Questions on the screens of the demos of ``tasks`` x ``seeds`` stored in ``demo_dir``.

        ``max_screens_per_task`` keeps a random subset (drawn with ``rng_seed``) of each task's
        screens that hold a question, so that a large demo folder fits in memory. Missing demos
        raise with the command that collects them."""
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
        return cls(np.stack(frames), elements, questions, list(tasks))

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
