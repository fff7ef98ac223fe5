"""Our observations and actions <-> BrowserGym's, as pure functions (no browsergym import).

Observations: BrowserGym's dict (``screenshot`` (H, W, 3) uint8, ``goal_object`` OpenAI-style
parts, ``last_action_error``, ``url``, the DOM, the AXTree, ...) becomes what our policies read
(``screenshot``, ``instruction``, ``url``, ``last_action_error``, ``step``), in two stages:
:func:`keep_needed` is the agent's ``obs_preprocessor`` (it runs inside BrowserGym's loop, so the
saved step pickles hold only this), :func:`policy_observation` adds the step and any error of
ours that BrowserGym never saw.

:func:`keep_needed` puts the URL and the last action error under ``"page"``, not at the top level:
BrowserGym's experiment loop counts the GPT-4 tokens (tiktoken) of every top-level string of the
preprocessed observation, which means nothing for our models and downloads tiktoken's vocabulary,
so an offline run fails there.

Actions: an :class:`envs.actions.Action` becomes one call of BrowserGym's ``coord`` action set,
in screenshot pixels (BrowserGym maps them to the page with its own scale factor):

    click(x, y)        -> mouse_click(x, y)
    double_click(x, y) -> mouse_dblclick(x, y)
    type("text")       -> keyboard_type('text')     (a Python literal: BrowserGym reads it with
                                                     ast.literal_eval, so any text round-trips)
    press("key")       -> keyboard_press('key')     (Playwright key names on both sides)
    scroll(dx, dy)     -> scroll_at(x, y, dx, dy)   (x, y: the last click, else the centre)
    done()             -> None: the episode ends (BrowserGym's loop stops on a None action)

:func:`from_coord` maps a parsed ``coord`` call back (for tests and traces).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from envs.actions import Action, ActionParseError

__all__ = ["COORD_NAMES", "NOOP", "Pointer", "from_coord", "goal_text", "keep_needed", "policy_observation",
           "to_coord"]

NOOP = "noop()"
"""BrowserGym's always-allowed action; sent when the model's output is not an action."""

COORD_NAMES = {"click": "mouse_click", "double_click": "mouse_dblclick", "type": "keyboard_type",
               "press": "keyboard_press", "scroll": "scroll_at"}
"""Our primitive -> the ``coord`` function it becomes (``done`` has none: it ends the episode)."""

_OURS = {v: k for k, v in COORD_NAMES.items()}
_PAGE_TEXT = ("url", "last_action_error")


class Pointer:
    """Where the mouse is, in screenshot pixels: the last click, else the screenshot's centre.

    ``scroll(dx, dy)`` has no position of its own; ``scroll_at`` needs one (as our envs do, the
    wheel turns where the mouse last was)."""

    def __init__(self) -> None:
        self.position: tuple[float, float] | None = None

    def reset(self) -> None:
        self.position = None

    def at(self, screenshot: np.ndarray) -> tuple[float, float]:
        if self.position is not None:
            return self.position
        height, width = np.asarray(screenshot).shape[:2]
        return (width / 2, height / 2)


def to_coord(action: Action, pointer: Pointer, screenshot: np.ndarray) -> str | None:
    """The ``coord`` action string for ``action`` (None for ``done()``); moves ``pointer`` on clicks.

    Strings are written with :func:`repr`, a Python literal that BrowserGym's parser
    (``ast.literal_eval``) reads back to the same text, quotes, backslashes, newlines and
    non-ASCII included.
    """
    if action.ends_episode:
        return None
    name = COORD_NAMES.get(action.name)
    if name is None:
        raise ActionParseError(f"action {action.name!r} has no BrowserGym coord equivalent; "
                               f"mapped actions: {', '.join(COORD_NAMES)}, done")
    args: Sequence[Any] = action.args
    if action.name in ("click", "double_click"):
        pointer.position = (float(args[0]), float(args[1]))
    if action.name == "scroll":
        x, y = pointer.at(screenshot)
        args = (x, y, *args)
    return f"{name}({', '.join(repr(a) for a in args)})"  # plain str, int, float: repr is a Python literal


def from_coord(name: str, args: Sequence[Any]) -> Action | None:
    """Our action for a parsed ``coord`` call (``name``, positional ``args``): None for ``noop``.

    Raises:
        ActionParseError: for a function we never write (``mouse_drag_and_drop``, ...).
    """
    if name == "noop":
        return None
    ours = _OURS.get(name)
    if ours is None:
        raise ActionParseError(f"BrowserGym action {name!r} has no equivalent here; "
                               f"mapped: {', '.join(sorted(_OURS))}, noop")
    if ours == "scroll":
        args = args[2:]  # the position is the pointer's, not part of our action
    return Action(ours, tuple(args))


def goal_text(goal_object: Sequence[Mapping[str, Any]] | None) -> str:
    """The text parts of BrowserGym's ``goal_object``, joined by newlines (images are dropped:
    our policies read the task as text)."""
    return "\n".join(str(part.get("text", "")) for part in goal_object or () if part.get("type") == "text")


def keep_needed(obs: Mapping[str, Any]) -> dict[str, Any]:
    """BrowserGym's observation cut to what the policy reads: ``screenshot``, ``goal_object``, and
    ``page`` (``url`` and ``last_action_error``; see the module doc for why they are nested). No
    DOM or AXTree is flattened (BrowserGym's default preprocessor does that)."""
    missing = [key for key in ("screenshot", "goal_object") if key not in obs]
    if missing:
        raise KeyError(f"the BrowserGym observation has no {missing}; it has {sorted(obs)}")
    return {"screenshot": obs["screenshot"], "goal_object": list(obs["goal_object"]),
            "page": {key: str(obs.get(key) or "") for key in _PAGE_TEXT}}


def policy_observation(obs: Mapping[str, Any], step: int, own_error: str = "") -> dict[str, Any]:
    """Our policy's observation from a preprocessed (:func:`keep_needed`) BrowserGym one.
    ``own_error``: the reason our last action never reached BrowserGym (unparsable output), put
    before BrowserGym's."""
    page = obs.get("page", {})
    errors = [e for e in (own_error, str(page.get("last_action_error") or "")) if e]
    screenshot = np.asarray(obs["screenshot"])
    if screenshot.ndim != 3 or screenshot.shape[2] != 3 or screenshot.dtype != np.uint8:
        raise ValueError(f"screenshot must be (H, W, 3) uint8, got {screenshot.shape} {screenshot.dtype}")
    return {"screenshot": screenshot, "instruction": goal_text(obs.get("goal_object")), "url": str(page.get("url", "")),
            "last_action_error": "; ".join(errors), "step": step}
