"""A scripted policy in our action format that both our envs and BrowserGym's can run, for the
side-by-side benchmark (``scripts/bench_browsergym.py``) and the adapter's tests.

:class:`LabelClickPolicy` clicks the centre of the element whose text is the instruction's quoted
label (``Click on the "no" button.``), or of the first button when the instruction quotes
nothing (``Click the button.``), and says ``done()`` when there is none. It reads the
elements as our envs give them in ``info["elements"]`` (``text``, ``bbox`` (x, y, w, h) in
screenshot pixels); :func:`browsergym_elements` builds the same list from BrowserGym's
observation (AXTree names and ``extra_element_properties`` boxes, which BrowserGym gives in
screenshot pixels, its scale factor applied).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["LabelClickPolicy", "browsergym_elements", "quoted_label"]

_QUOTED = re.compile(r'"([^"]*)"')


def quoted_label(instruction: str) -> str | None:
    """The first double-quoted part of the instruction, or None."""
    match = _QUOTED.search(instruction)
    return match.group(1) if match else None


def browsergym_elements(obs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Our ``info["elements"]`` from a raw BrowserGym observation: every AXTree node with a name
    and a box, ``bbox`` (x, y, w, h) in screenshot pixels."""
    boxes = obs["extra_element_properties"]
    out = []
    for node in obs["axtree_object"]["nodes"]:
        bid = node.get("browsergym_id")
        name = str((node.get("name") or {}).get("value", "")).strip()
        box = (boxes.get(bid) or {}).get("bbox") if bid is not None else None
        if name and box is not None:
            x, y, w, h = (float(v) for v in box)
            out.append({"text": name, "role": (node.get("role") or {}).get("value", ""),
                        "bbox": (round(x), round(y), round(w), round(h))})
    return out


class LabelClickPolicy:
    """Click the element whose text is the quoted label (the first button when nothing is
    quoted); ``done()`` when there is none."""

    name = "label-click"

    def reset(self) -> None:
        """Stateless."""

    def choose(self, instruction: str, elements: Sequence[Mapping[str, Any]]) -> str:
        label = quoted_label(instruction)
        for element in elements:
            if (str(element.get("text", "")).strip() == label if label is not None
                    else element.get("role") == "button"):
                x, y, w, h = element["bbox"]
                return f"click({x + w // 2}, {y + h // 2})"
        return "done()"

    def act(self, obs: Mapping[str, Any], info: Mapping[str, Any]) -> str:
        return self.choose(str(obs["instruction"]), info.get("elements", ()))
