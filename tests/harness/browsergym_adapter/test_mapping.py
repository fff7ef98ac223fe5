"""Our actions <-> BrowserGym's ``coord`` action strings, read back by BrowserGym's own parser; the
observation cut; the version refusal. (That ``import catp_agent`` imports neither BrowserGym nor
Playwright is checked in tests/test_import_rules.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("browsergym.core", reason="needs BrowserGym: pip install -e '.[browsergym]'")

from browsergym.core.action.parsers import highlevel_action_parser  # noqa: E402

from catp_agent.harness.browsergym import coord_action_set, require_browsergym  # noqa: E402
from catp_agent.harness.browsergym.mapping import Pointer, from_coord, keep_needed, policy_observation, to_coord  # noqa: E402
from envs.actions import Action, ActionParseError, parse_action  # noqa: E402

pytestmark = pytest.mark.compat
SCREEN = np.zeros((321, 498, 3), dtype=np.uint8)
ACTIONS = coord_action_set()


def _round_trip(action: Action, pointer: Pointer | None = None) -> tuple[str, Action | None]:
    """(the coord string, our action read back from what BrowserGym's strict parser made of it)."""
    text = to_coord(action, pointer or Pointer(), SCREEN)
    assert text is not None
    ACTIONS.to_python_code(text)  # BrowserGym accepts it (strict, single action)
    [(name, args)] = highlevel_action_parser.parse_string(text, parse_all=True).as_list()
    return text, from_coord(name, args)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40))
def test_typed_text_round_trips_through_browsergyms_parser(text: str) -> None:
    _, back = _round_trip(Action("type", (text,)))
    assert back == Action("type", (text,))


@pytest.mark.parametrize("text", ["it's", 'say "hi"', "back\\slash", "two\nlines\ttab", "café Ünïcødé", "日本語 ✓ 🙂",
                                  "'''\"\"\"", "\x00\x0b\u2028"])
def test_quoting_and_non_ascii(text: str) -> None:
    coord, back = _round_trip(parse_action(f"type({_ours(text)})"))
    assert coord.startswith("keyboard_type(") and back == Action("type", (text,))


def _ours(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t").replace(
        "\x00", "\\0") + '"'


def test_each_primitive_maps_to_its_coord_call_and_back() -> None:
    pointer = Pointer()
    assert _round_trip(parse_action("click(10, 20.5)"), pointer) == ("mouse_click(10, 20.5)",
                                                                     Action("click", (10, 20.5)))
    assert _round_trip(parse_action("double_click(3, 4)"), pointer)[0] == "mouse_dblclick(3, 4)"
    assert _round_trip(parse_action('press("Control+a")'), pointer) == ("keyboard_press('Control+a')",
                                                                       Action("press", ("Control+a",)))
    # scroll turns the wheel where the mouse last clicked
    assert _round_trip(parse_action("scroll(0, 120)"), pointer) == ("scroll_at(3.0, 4.0, 0, 120)",
                                                                    Action("scroll", (0, 120)))
    assert to_coord(parse_action("scroll(5, -7)"), Pointer(), SCREEN) == "scroll_at(249.0, 160.5, 5, -7)"  # centre
    assert to_coord(parse_action("done()"), pointer, SCREEN) is None
    assert from_coord("noop", []) is None
    with pytest.raises(ActionParseError, match="mouse_drag_and_drop"):
        from_coord("mouse_drag_and_drop", [1, 2, 3, 4])


def test_observation_keeps_only_what_the_policy_reads() -> None:
    raw = {"screenshot": SCREEN, "goal_object": [{"type": "text", "text": "Click on the \"no\" button."},
                                                 {"type": "image_url", "image_url": "data:..."}],
           "last_action_error": "TimeoutError", "url": "file:///x.html", "dom_object": {"big": 1},
           "axtree_object": {"nodes": []}, "extra_element_properties": {}}
    kept = keep_needed(raw)
    assert sorted(kept) == ["goal_object", "page", "screenshot"]
    assert kept["page"] == {"url": "file:///x.html", "last_action_error": "TimeoutError"}
    ours = policy_observation(kept, 3, "not an action")
    assert ours["instruction"] == 'Click on the "no" button.' and ours["step"] == 3
    assert ours["last_action_error"] == "not an action; TimeoutError" and ours["screenshot"] is SCREEN
    assert ours["url"] == "file:///x.html"
    with pytest.raises(ValueError, match="uint8"):
        policy_observation({**kept, "screenshot": SCREEN.astype(np.float32)}, 0)


def test_refuses_an_older_browsergym() -> None:
    assert require_browsergym()  # the installed one passes
    with pytest.raises(ImportError, match=r"browsergym-core 0\.14\.1 is older than 0\.14\.2.*pip install"):
        require_browsergym("0.14.1")
