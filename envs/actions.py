"""Action strings: the primitives an agent may emit, and a pure parser for them.

Actions are plain text such as ``click(120, 48)`` or ``type("alice")``. They are parsed
into an :class:`Action` and dispatched by name; nothing is ever executed as code.
Coordinates are in screenshot pixels (CSS pixels times the device scale factor).

The primitives, their signatures and their docstrings live in :data:`ACTION_SIGNATURES`
and :data:`ACTION_DOCS`; :func:`describe_actions` renders them for a prompt.

>>> parse_action('click(10, 20.5)')
Action(name='click', args=(10, 20.5))
>>> parse_action('type("hello \\\\"world\\\\"")').args
('hello "world"',)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = [
    "ACTION_DOCS",
    "ACTION_SIGNATURES",
    "Action",
    "ActionParseError",
    "describe_actions",
    "format_action",
    "parse_action",
]

MAX_ACTION_CHARS = 10_000
"""Longest action string the parser accepts (longer text is rejected, not truncated)."""

# name -> tuple of (parameter name, kind) where kind is "number" or "string"
_PARAMS: dict[str, tuple[tuple[str, str], ...]] = {
    "click": (("x", "number"), ("y", "number")),
    "double_click": (("x", "number"), ("y", "number")),
    "type": (("text", "string"),),
    "press": (("key", "string"),),
    "scroll": (("dx", "number"), ("dy", "number")),
    "done": (),
}

ACTION_SIGNATURES: dict[str, str] = {
    "click": "click(x, y)",
    "double_click": "double_click(x, y)",
    "type": 'type("text")',
    "press": 'press("Enter")',
    "scroll": "scroll(dx, dy)",
    "done": "done()",
}
"""Signature of each primitive, as an agent should write it."""

ACTION_DOCS: dict[str, str] = {
    "click": "Left-click at pixel (x, y) of the screenshot.",
    "double_click": "Double-click at pixel (x, y) of the screenshot.",
    "type": "Type the text into the focused element, one key at a time.",
    "press": 'Press one key or a chord, e.g. "Enter", "Tab", "Backspace", "Control+a".',
    "scroll": "Scroll by (dx, dy) screenshot pixels; positive dy scrolls down.",
    "done": "Declare the task finished; ends the episode.",
}
"""One-line description of each primitive (feeds prompts and docs)."""

_KEY_RE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9]*\+)*(?:[A-Za-z][A-Za-z0-9]*|[!-~])$")
_CALL_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)\s*;?\s*$", re.DOTALL)
_NUMBER_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_KWARG_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*=")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0"}


class ActionParseError(ValueError):
    """The text is not one of the action primitives written correctly."""


@dataclass(frozen=True)
class Action:
    """A parsed action: the primitive's ``name`` and its positional ``args``."""

    name: str
    args: tuple[float | int | str, ...] = ()

    def __post_init__(self) -> None:
        if self.name not in _PARAMS:
            raise ActionParseError(
                f"unknown action {self.name!r}; use one of {', '.join(ACTION_SIGNATURES.values())}"
            )
        if len(self.args) != len(_PARAMS[self.name]):
            raise ActionParseError(
                f"{ACTION_SIGNATURES[self.name]} takes {len(_PARAMS[self.name])} argument(s), "
                f"got {len(self.args)}"
            )

    def __str__(self) -> str:
        return format_action(self)


def describe_actions() -> str:
    """Return one line per primitive, ``signature: description``, for a prompt."""
    return "\n".join(f"{ACTION_SIGNATURES[n]}: {ACTION_DOCS[n]}" for n in ACTION_SIGNATURES)


def format_action(action: Action) -> str:
    """Write ``action`` back as text that :func:`parse_action` reads to the same action."""
    parts = []
    for value in action.args:
        if isinstance(value, str):
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            escaped = escaped.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
            parts.append(f'"{escaped.replace(chr(0), chr(92) + "0")}"')
        else:
            parts.append(repr(value))
    return f"{action.name}({', '.join(parts)})"


def _read_string(src: str, pos: int) -> tuple[str, int]:
    """Read a quoted string literal starting at ``src[pos]``; return (value, next position)."""
    quote = src[pos]
    out: list[str] = []
    i = pos + 1
    while i < len(src):
        ch = src[i]
        if ch == "\\":
            if i + 1 >= len(src):
                break
            nxt = src[i + 1]
            if nxt not in _ESCAPES:
                raise ActionParseError(f"unknown escape \\{nxt} in string at position {i}")
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        if ch == quote:
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise ActionParseError(f"unterminated string starting at position {pos}; close it with {quote}")


def _read_args(src: str) -> list[tuple[str | None, float | int | str]]:
    """Split the text between the parentheses into (keyword or None, value) pairs."""
    args: list[tuple[str | None, float | int | str]] = []
    i, n = 0, len(src)
    while True:
        while i < n and src[i].isspace():
            i += 1
        if i >= n:
            if args:
                raise ActionParseError("trailing comma in argument list")
            return args
        keyword = None
        kw = _KWARG_RE.match(src, i)
        if kw:
            keyword = kw.group(1)
            i = kw.end()
            while i < n and src[i].isspace():
                i += 1
        if i < n and src[i] in "\"'":
            value, i = _read_string(src, i)
        else:
            num = _NUMBER_RE.match(src, i)
            if not num:
                raise ActionParseError(
                    f"expected a number or a quoted string at {src[i:i + 20]!r}"
                )
            text = num.group(0)
            value = float(text) if any(c in text for c in ".eE") else int(text)
            if isinstance(value, float) and not math.isfinite(value):
                raise ActionParseError(f"number {text!r} is not finite")
            if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
                value = int(value)
            i = num.end()
        args.append((keyword, value))
        while i < n and src[i].isspace():
            i += 1
        if i >= n:
            return args
        if src[i] != ",":
            raise ActionParseError(f"expected ',' or ')' at {src[i:i + 20]!r}")
        i += 1
        if not src[i:].strip():
            return args  # a single trailing comma is tolerated: click(1, 2,)


def parse_action(text: str) -> Action:
    """Parse one action string such as ``click(10, 20)`` into an :class:`Action`.

    Accepts positional or keyword arguments (``scroll(dx=0, dy=200)``), single- or
    double-quoted strings with backslash escapes, and ints or finite floats.

    Raises:
        ActionParseError: for anything else, with a message saying what was expected.
    """
    if not isinstance(text, str):
        raise ActionParseError(f"action must be a string, got {type(text).__name__}")
    if len(text) > MAX_ACTION_CHARS:
        raise ActionParseError(f"action is {len(text)} characters long; the limit is {MAX_ACTION_CHARS}")
    match = _CALL_RE.match(text)
    if not match:
        raise ActionParseError(
            f"could not read {text[:60]!r} as an action; write one of "
            f"{', '.join(ACTION_SIGNATURES.values())}"
        )
    name, body = match.group(1), match.group(2)
    if name not in _PARAMS:
        raise ActionParseError(
            f"unknown action {name!r}; use one of {', '.join(ACTION_SIGNATURES.values())}"
        )
    params = _PARAMS[name]
    raw = _read_args(body)
    if len(raw) != len(params):
        raise ActionParseError(
            f"{ACTION_SIGNATURES[name]} takes {len(params)} argument(s), got {len(raw)}"
        )
    values: dict[str, float | int | str] = {}
    for index, (keyword, value) in enumerate(raw):
        if keyword is None:
            if values and any(k is not None for k, _ in raw[:index]):
                raise ActionParseError("positional argument after a keyword argument")
            pname = params[index][0]
        else:
            pname = keyword
            if pname not in dict(params):
                raise ActionParseError(f"{name}() has no parameter {pname!r}; see {ACTION_SIGNATURES[name]}")
        if pname in values:
            raise ActionParseError(f"parameter {pname!r} given twice")
        values[pname] = value
    args: list[float | int | str] = []
    for pname, kind in params:
        value = values[pname]
        if kind == "number" and isinstance(value, str):
            raise ActionParseError(f"{name}: {pname} must be a number, got the string {value!r}")
        if kind == "string" and not isinstance(value, str):
            raise ActionParseError(f"{name}: {pname} must be a quoted string, got {value!r}")
        args.append(value)
    if name == "press" and not _KEY_RE.match(str(args[0])):
        raise ActionParseError(
            f"press: {args[0]!r} is not a key name; use e.g. \"Enter\", \"Tab\" or \"Control+a\""
        )
    return Action(name, tuple(args))
