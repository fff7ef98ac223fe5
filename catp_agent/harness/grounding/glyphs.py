"""Reading practice where it is cheap: small rendered canvases of words, with their boxes.

A web screen is 640x480 px; a canvas is 96x320 px and holds several words, so a step on
canvases costs a small fraction of a step on screens while asking the same question: given a
text, point at it. The words are mostly random strings (letters, capitals, digits, prices,
codes, two-word phrases), so what is learned is reading letters, not a list of our words; a
caller may add its own words (``extra_words``, e.g. the training demos' element texts). On
every canvas some words are near misses of another one (one letter changed, or a word added),
so the pointer must read the whole text, not its first letter.

They are drawn the way web pages draw controls: plain labels, bold headings, links in blue,
bordered buttons, filled buttons, on light or dark backgrounds, in the system's sans, serif and
mono fonts at 11-20 px. This is the idea behind the grounding pretraining of GUI models
(SeeClick, UGround, OS-Atlas: element text and boxes as free supervision), made small.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["CanvasSpec", "contrast_colours", "find_fonts", "font_at", "near_miss", "random_text", "render_canvas"]

FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts")
_PREFERRED = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "LiberationSans-Regular.ttf", "LiberationSans-Bold.ttf",
              "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "LiberationSerif-Regular.ttf", "LiberationMono-Regular.ttf",
              "DejaVuSansCondensed.ttf", "LiberationSans-Italic.ttf")


@lru_cache(maxsize=1)
def find_fonts() -> tuple[str, ...]:
    """The system's Latin TrueType fonts that pages are drawn with (DejaVu and Liberation, which
    Chromium falls back to here), as paths. Raises with the package to install when none is found."""
    found: dict[str, str] = {}
    for root in FONT_DIRS:
        if Path(root).is_dir():
            for path in Path(root).rglob("*.ttf"):
                found.setdefault(path.name, str(path))
    fonts = tuple(found[name] for name in _PREFERRED if name in found)
    if not fonts:
        raise FileNotFoundError(f"no DejaVu or Liberation font under {FONT_DIRS}; install one "
                                f"(apt-get install fonts-dejavu-core fonts-liberation)")
    return fonts


@lru_cache(maxsize=256)
def font_at(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


_LOWER, _UPPER, _DIGITS = string.ascii_lowercase, string.ascii_uppercase, string.digits
_SYLLABLES = [c + v for c in "bcdfghklmnprstvwz" for v in "aeiou"] + ["th", "st", "ch", "er", "an", "on", "in"]


def _word(rng: np.random.Generator) -> str:
    if rng.random() < 0.5:  # pronounceable, like most UI words
        return "".join(rng.choice(_SYLLABLES) for _ in range(int(rng.integers(1, 5))))
    return "".join(rng.choice(list(_LOWER), size=int(rng.integers(2, 10))))


def random_text(rng: np.random.Generator, extra_words: Sequence[str] = ()) -> str:
    """One random label: a word or two (any case), a code, a price, a count in brackets, or one
    of ``extra_words``."""
    kind = rng.random()
    if extra_words and kind < 0.3:
        return str(extra_words[int(rng.integers(len(extra_words)))])
    kind = rng.random()
    if kind < 0.45:
        text = _word(rng)
        case = rng.random()
        return text.capitalize() if case < 0.6 else text.upper() if case < 0.7 else text
    if kind < 0.7:
        return " ".join(_word(rng) for _ in range(int(rng.integers(2, 4)))).capitalize()
    if kind < 0.8:
        return "".join(rng.choice(list(_UPPER + _DIGITS), size=int(rng.integers(3, 8))))
    if kind < 0.9:
        return f"${rng.integers(1, 999)}.{rng.integers(0, 100):02d}"
    return f"{_word(rng).capitalize()} ({rng.integers(0, 20)})"


def near_miss(text: str, rng: np.random.Generator) -> str:
    """``text`` with one letter changed, one letter dropped, or a word added."""
    kind = rng.random()
    if kind < 0.5 and len(text) > 1:
        i = int(rng.integers(len(text)))
        pool = _UPPER if text[i].isupper() else _DIGITS if text[i].isdigit() else _LOWER
        return text[:i] + str(rng.choice([c for c in pool if c != text[i]])) + text[i + 1:]
    if kind < 0.7 and len(text) > 3:
        i = int(rng.integers(len(text)))
        return text[:i] + text[i + 1:]
    return f"{text} {_word(rng)}" if rng.random() < 0.5 else f"{_word(rng).capitalize()} {text}"


@dataclass(frozen=True)
class CanvasSpec:
    """How canvases are drawn. Sizes in pixels; a canvas is ``height`` x ``width``."""

    height: int = 96
    width: int = 320
    min_words: int = 3
    max_words: int = 6
    min_size: int = 11
    max_size: int = 20
    near_miss: float = 0.5  # chance that a word is a near miss of one already on the canvas
    lists: float = 0.0  # chance that a canvas starts with a vertical list (menu, settings rows)

    def __post_init__(self) -> None:
        if not 1 <= self.min_words <= self.max_words:
            raise ValueError(f"need 1 <= min_words <= max_words, got {self.min_words} and {self.max_words}")
        if not 6 <= self.min_size <= self.max_size < self.height:
            raise ValueError(f"font sizes must satisfy 6 <= min_size <= max_size < height, got "
                             f"{self.min_size}, {self.max_size}, height {self.height}")


def contrast_colours(rng: np.random.Generator, dark: bool) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    light = tuple(int(v) for v in rng.integers(225, 256, size=3))
    deep = tuple(int(v) for v in rng.integers(0, 70, size=3))
    return (deep, light) if dark else (light, deep)


def _pick_text(rng: np.random.Generator, placed: Sequence[tuple[str, object]], spec: CanvasSpec,
               extra_words: Sequence[str]) -> str:
    if placed and rng.random() < spec.near_miss:
        return near_miss(placed[int(rng.integers(len(placed)))][0], rng)
    return random_text(rng, extra_words)


def _draw_list(draw: ImageDraw.ImageDraw, rng: np.random.Generator, spec: CanvasSpec, fg: tuple[int, int, int],
               extra_words: Sequence[str]) -> list[tuple[str, tuple[float, float, float, float]]]:
    """A vertical list of rows, as menus and settings pages draw them: rows 18-30 px apart,
    each row's box its full width, sometimes in a bordered panel. [] when it does not fit."""
    fonts = find_fonts()
    font = font_at(fonts[int(rng.integers(len(fonts)))], int(rng.integers(spec.min_size, min(spec.max_size, 16) + 1)))
    pitch = int(rng.integers(max(18, font.size + 4), 31))
    rows: list[str] = []
    for _ in range(int(rng.integers(3, 7))):
        text = _pick_text(rng, [(t, None) for t in rows], spec, extra_words)
        if text not in rows:
            rows.append(text)
    rows = rows[:max(1, (spec.height - 4) // pitch)]
    width = max(draw.textbbox((0, 0), t, font=font)[2] for t in rows) + int(rng.integers(16, 60))
    if width >= spec.width - 2:
        return []
    x0, y0 = int(rng.integers(1, spec.width - width)), int(rng.integers(1, spec.height - pitch * len(rows)))
    if rng.random() < 0.5:
        draw.rectangle([x0, y0, x0 + width - 1, y0 + pitch * len(rows) - 1], outline=(150, 150, 150))
    out = []
    for k, text in enumerate(rows):
        y = y0 + k * pitch
        left, top, _, bottom = draw.textbbox((0, 0), text, font=font)
        draw.text((x0 + 8 - left, y + (pitch - (bottom - top)) / 2 - top), text, font=font, fill=fg)
        out.append((text, (float(x0), float(y), float(width), float(pitch))))
    return out


def render_canvas(rng: np.random.Generator, spec: CanvasSpec = CanvasSpec(),
                  extra_words: Sequence[str] = ()) -> tuple[np.ndarray, list[tuple[str, tuple[float, float, float, float]]]]:
    """One canvas: (uint8 (height, width, 3), [(text, (x, y, w, h))]) with distinct texts whose
    boxes do not overlap. A box is the control's outline (button, bordered box, list row) or the
    text's ink."""
    fonts = find_fonts()
    bg, fg = contrast_colours(rng, dark=rng.random() < 0.15)
    image = Image.new("RGB", (spec.width, spec.height), bg)
    draw = ImageDraw.Draw(image)
    placed: list[tuple[str, tuple[float, float, float, float]]] = []
    if rng.random() < spec.lists:
        placed = _draw_list(draw, rng, spec, fg, extra_words)
    want = len(placed) + int(rng.integers(spec.min_words, spec.max_words + 1))
    for _ in range(want * 6):
        if len(placed) >= want:
            break
        text = _pick_text(rng, placed, spec, extra_words)
        if any(text == t for t, _ in placed):
            continue
        font = font_at(fonts[int(rng.integers(len(fonts)))], int(rng.integers(spec.min_size, spec.max_size + 1)))
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        style = rng.random()
        pad_x, pad_y = (int(rng.integers(6, 16)), int(rng.integers(4, 9))) if style < 0.45 else (0, 0)
        w, h = right - left + 2 * pad_x, bottom - top + 2 * pad_y
        if w >= spec.width - 2 or h >= spec.height - 2:
            continue
        x = int(rng.integers(1, spec.width - w))
        y = int(rng.integers(1, spec.height - h))
        box = (float(x), float(y), float(w), float(h))
        if any(x < bx + bw + 3 and bx < x + w + 3 and y < by + bh + 3 and by < y + h + 3 for _, (bx, by, bw, bh) in placed):
            continue
        colour = fg
        if style < 0.2:  # bordered button
            draw.rectangle([x, y, x + w - 1, y + h - 1], outline=tuple(int(v) for v in rng.integers(60, 170, size=3)))
        elif style < 0.45:  # filled button
            fill, colour = contrast_colours(rng, dark=rng.random() < 0.5)
            fill = tuple(int(v) for v in rng.integers(0, 256, size=3)) if rng.random() < 0.3 else fill
            colour = (255, 255, 255) if sum(fill) < 380 else (0, 0, 0)
            draw.rectangle([x, y, x + w - 1, y + h - 1], fill=fill)
        elif style < 0.55:  # link
            colour = (int(rng.integers(0, 60)), int(rng.integers(40, 110)), int(rng.integers(170, 240)))
        draw.text((x + pad_x - left, y + pad_y - top), text, font=font, fill=colour)
        placed.append((text, box))
    return np.asarray(image), placed
