"""The action parser: pure, strict, and it only ever raises ActionParseError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.actions import (
    ACTION_DOCS,
    ACTION_SIGNATURES,
    Action,
    ActionParseError,
    describe_actions,
    format_action,
    parse_action,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("click(10, 20)", Action("click", (10, 20))),
        ("  click( 10.5 ,20 ) ", Action("click", (10.5, 20))),
        ("double_click(0, 0)", Action("double_click", (0, 0))),
        ('type("hello world")', Action("type", ("hello world",))),
        ("type('it\\'s')", Action("type", ("it's",))),
        ('type("a\\"b\\\\c\\n")', Action("type", ('a"b\\c\n',))),
        ('press("Enter")', Action("press", ("Enter",))),
        ('press("Control+a")', Action("press", ("Control+a",))),
        ("scroll(0, -200)", Action("scroll", (0, -200))),
        ("scroll(dx=0, dy=300)", Action("scroll", (0, 300))),
        ("click(y=5, x=7)", Action("click", (7, 5))),
        ("done()", Action("done", ())),
        ("click(1e2, 2.0)", Action("click", (100, 2))),
    ],
)
def test_parses_valid_actions(text: str, expected: Action) -> None:
    assert parse_action(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "", "click", "click()", "click(1)", "click(1, 2, 3)", "click('a', 2)", "type(5)",
        "type(\"unterminated)", "hover(1, 2)", "__import__('os').system('ls')", "click(1e999, 2)",
        "press(\"\")", "press(\"Enter; rm\")", "done(1)", "click(x=1, x=2)", "click(z=1, y=2)",
        "click(1, 2) click(3, 4)", "type(\"\\q\")", "click(nan, 1)", "scroll(1,,2)",
    ],
)
def test_rejects_garbage(text: str) -> None:
    with pytest.raises(ActionParseError):
        parse_action(text)


def test_rejects_non_strings_and_huge_input() -> None:
    with pytest.raises(ActionParseError):
        parse_action(None)  # type: ignore[arg-type]
    with pytest.raises(ActionParseError, match="limit"):
        parse_action('type("' + "a" * 20_000 + '")')


def test_error_is_a_value_error_that_names_the_problem() -> None:
    with pytest.raises(ValueError, match="hover"):
        parse_action("hover(1, 2)")


def test_every_primitive_is_documented() -> None:
    assert set(ACTION_SIGNATURES) == set(ACTION_DOCS)
    text = describe_actions()
    for signature in ACTION_SIGNATURES.values():
        assert signature in text
        parse_action(signature.replace("x, y", "1, 2").replace("dx, dy", "0, 1"))


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=80))
def test_arbitrary_text_raises_only_parse_errors(text: str) -> None:
    try:
        action = parse_action(text)
    except ActionParseError:
        return
    assert action.name in ACTION_SIGNATURES


_alphabet = st.sampled_from(list("click double_type press scroll done ( ) , \" ' \\ = 0 1 -2.5 e9 x y dx"))


@settings(max_examples=400, deadline=None)
@given(st.lists(_alphabet, max_size=20).map("".join))
def test_near_miss_text_raises_only_parse_errors(text: str) -> None:
    try:
        parse_action(text)
    except ActionParseError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.builds(lambda x, y: Action("click", (x, y)), st.integers(-10**6, 10**6), st.integers(-10**6, 10**6)),
        st.builds(lambda x, y: Action("scroll", (x, y)),
                  st.floats(-1e6, 1e6, allow_nan=False).map(lambda v: round(v, 3)), st.integers(-999, 999)),
        st.builds(lambda s: Action("type", (s,)), st.text(max_size=40)),
    )
)
def test_format_then_parse_round_trips(action: Action) -> None:
    assert parse_action(format_action(action)) == action
