"""The bundled tasks' oracles act correctly from states they would never reach themselves.

DAgger-style relabelling lets a model act and asks the oracle for the right next action in
whatever state the model reached, so every oracle must solve its task from any reachable state.
For each bundled task these tests drive the real page (Chromium through ``gymnasium.make``,
served on 127.0.0.1) into wrong states with explicit actions at the boxes in
``info["elements"]``, then let the oracle finish and check that it succeeds within the number
of steps an optimal recovery takes. A second test plays 1-3 actions of the random policy first.

A few wrong actions end a task for good, by design of its page (a wrong result, order or
submission is final). There the oracle answers None (the oracle policy then says ``done()``);
the tests check that, and that the page really is in such a state.

The oracles' actions on the happy path must not change: the demonstrations and the shipped model
were made from them. ``data/oracle_happy_path.json`` holds the sequences as recorded before the
recovery work; the first test compares against it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gymnasium
import pytest

import envs  # noqa: F401 - registers the ids
from envs import actions
from envs.actions import parse_action
from envs.tasks import BUNDLED_TASKS, PageView
from envs.tasks.miniwob import miniwob_task_names
from policies import make_policy

pytestmark = pytest.mark.browser

HAPPY = json.loads((Path(__file__).parent / "data" / "oracle_happy_path.json").read_text())
MAX_STEPS = 40  # room for a wrong prefix plus the recovery; bounds are asserted per scenario


@pytest.fixture(scope="module", params=BUNDLED_TASKS)
def env(request: pytest.FixtureRequest) -> Iterator[gymnasium.Env]:
    env = gymnasium.make(f"catp/{request.param}-v0", max_steps=MAX_STEPS)
    yield env
    env.close()


# ----------------------------------------------------------------------------- an episode, driven
class Episode:
    """One episode of ``env``: wrong actions by element id, then the oracle."""

    def __init__(self, env: gymnasium.Env, seed: int) -> None:
        self.env = env
        self.obs, self.info = env.reset(seed=seed)
        self.spec: dict[str, Any] = getattr(env.unwrapped.task, "spec", {})
        self.ended = False

    def centre(self, element_id: str) -> tuple[int, int]:
        for el in self.info["elements"]:
            if el.get("id") == element_id:
                x, y, w, h = el["bbox"]
                return x + w // 2, y + h // 2
        visible = [el.get("id") for el in self.info["elements"]]
        raise AssertionError(f"no visible element #{element_id}; visible ids: {visible}")

    def click(self, *element_ids: str) -> "Episode":
        for element_id in element_ids:
            self.do(actions.click(*self.centre(element_id)))
        return self

    def do(self, *texts: str) -> "Episode":
        for text in texts:
            assert not self.ended, f"the episode ended before {text}"
            self.obs, _, terminated, truncated, self.info = self.env.step(text)
            self.ended = terminated or truncated
        return self

    def state(self) -> dict[str, Any]:
        """The page's ``window.__CATP_STATE__`` (test-only introspection of the live page)."""
        unwrapped = self.env.unwrapped
        return unwrapped._call(lambda: PageView(unwrapped._session).state())

    def solve(self, bound: int) -> list[str]:
        """Let the oracle act; assert it succeeds within ``bound`` actions. Returns its actions."""
        taken: list[str] = []
        while not self.ended and not self.info["success"]:
            action = self.env.unwrapped.oracle_action(self.obs, self.info)
            assert action is not None, f"the oracle gave up after {taken}; page state {self.state()}"
            taken.append(action)
            assert len(taken) <= bound, f"no success within {bound} oracle actions: {taken}"
            self.do(action)
        assert self.info["success"], f"the episode ended without success after {taken}"
        return taken


def oracle_from_reset(env: gymnasium.Env, seed: int, round_to: int | None = None) -> list[str]:
    """The oracle's actions from reset on the happy path (clicks rounded first when ``round_to``)."""
    ep, taken = Episode(env, seed), []
    while not ep.ended:
        action = env.unwrapped.oracle_action(ep.obs, ep.info)
        if action is None:
            break
        if round_to is not None:  # as demo collection does (catp_agent.harness.training.demos)
            parsed = parse_action(action)
            if parsed.name == "click":
                action = actions.click(*(int(round(float(v) / round_to)) * round_to for v in parsed.args))
        taken.append(action)
        ep.do(action)
    assert ep.info["success"], (seed, taken)
    return taken


@pytest.mark.slow  # test_bundled_tasks' oracle runs the happy path of every task in the default run
def test_happy_path_is_unchanged(env: gymnasium.Env) -> None:
    task = env.unwrapped.task.name
    for seed, recorded in HAPPY["from_reset"][task].items():
        assert oracle_from_reset(env, int(seed)) == recorded, (task, seed)
    for seed, recorded in HAPPY["rounded_clicks"][task].items():
        assert oracle_from_reset(env, int(seed), round_to=10) == recorded, (task, seed, "rounded")


# -------------------------------------------------------------------------------- the wrong states
# Each scenario: (name, seed, drive, bound). ``drive(ep)`` puts the page into a wrong state;
# ``bound(ep)`` is the most oracle actions an optimal recovery takes from there, or LOST when
# the state is final by design (the oracle must then answer None).
LOST = -1
Scenario = tuple[str, int, Callable[[Episode], Any], Callable[[Episode], int]]


def happy(ep: Episode, extra: int = 0) -> int:
    """Length of the recorded happy path for the episode's seed, plus ``extra``."""
    return len(HAPPY["from_reset"][ep.env.unwrapped.task.name][str(ep.info["seed"])]) + extra


def _login() -> list[Scenario]:
    def user(ep: Episode) -> str:
        return ep.spec["user"]

    return [
        ("wrong text in the username field", 0,
         lambda ep: ep.click("username").do(actions.type_("wrong")), lambda ep: 5),
        ("the username typed into the password field", 1,
         lambda ep: ep.click("password").do(actions.type_(user(ep))), lambda ep: 6),
        ("part of the username typed, caret moved to the start", 3,
         lambda ep: ep.click("username").do(actions.type_(user(ep)[:3]), actions.press("Home")), lambda ep: 5),
        ("part of the username typed and selected (Tab away and back)", 4,
         lambda ep: ep.click("username").do(actions.type_(user(ep)[:3]), actions.press("Tab"),
                                            actions.press("Shift+Tab")), lambda ep: 4),
        ("a wrong password submitted with Enter, then the blocked 'Forgot password?' link", 2,
         lambda ep: ep.click("username").do(actions.type_(user(ep))).click("password")
         .do(actions.type_("nope"), actions.press("Enter")).click("forgot"), lambda ep: 4),
    ]


def _search() -> list[Scenario]:
    def near(ep: Episode) -> str:  # a near-duplicate title: "<target> II", "<target>-Larsen", ...
        return next(it["title"] for it in ep.spec["items"]
                    if it["title"].startswith(ep.spec["target"]) and it["title"] != ep.spec["target"])

    def result(ep: Episode, title: str) -> str:
        return "result-" + str(next(it["id"] for it in ep.spec["items"] if it["title"] == title))

    return [
        ("a query with no results submitted with Enter", 0,
         lambda ep: ep.click("q").do(actions.type_("zzz"), actions.press("Enter")), lambda ep: 4),
        ("a near-duplicate title submitted", 1,
         lambda ep: ep.click("q").do(actions.type_(near(ep))).click("go"), lambda ep: 5),
        ("part of the query typed, not submitted", 2,
         lambda ep: ep.click("q").do(actions.type_(ep.spec["target"][:4])), lambda ep: 3),
        ("a one-letter query whose results hold the target, then a scroll", 3,
         lambda ep: ep.click("q").do(actions.type_(ep.spec["target"][1]), actions.press("Enter"),
                                     actions.scroll(0, 300)), lambda ep: 1),
        ("a near-duplicate result opened (final)", 4,
         lambda ep: ep.click("q").do(actions.type_(ep.spec["target"])).click("go").click(result(ep, near(ep))),
         lambda ep: LOST),
    ]


def _form() -> list[Scenario]:
    def other(ep: Episode) -> str:  # the text field that does not have focus at reset
        return ep.spec["order"][1]

    def unwanted(ep: Episode) -> str:
        return f"interest-{next(i for i, it in enumerate(ep.spec['interests']) if it not in ep.spec['wanted'])}"

    def country(ep: Episode) -> int:
        return ep.spec["countries"].index(ep.spec["country"])

    return [
        ("the first field's text typed into the other field", 0,
         lambda ep: ep.click(other(ep)).do(actions.type_(ep.spec[ep.spec["order"][0]])), lambda ep: happy(ep, 2)),
        ("a wrong country chosen", 2,
         lambda ep: ep.click("country", f"country-opt-{(country(ep) + 1) % 6}"), lambda ep: happy(ep, 1)),
        # Seed 1 wants interests 0 and 1, which the open country list always covers.
        ("the right country chosen, then its list opened again over the checkboxes", 1,
         lambda ep: ep.click("country", f"country-opt-{country(ep)}", "country"), lambda ep: happy(ep, 0)),
        ("an unwanted interest ticked, submitted without a country", 3,
         lambda ep: ep.click(unwanted(ep), "submit"), lambda ep: happy(ep, 2)),
        ("Enter pressed in a field once a country is set (final)", 4,
         lambda ep: ep.click("country", "country-opt-0", ep.spec["order"][0]).do(actions.press("Enter")),
         lambda ep: LOST),
    ]


def _settings() -> list[Scenario]:
    def target(ep: Episode) -> str:
        return f"choice-opt-{ep.spec['choices'].index(ep.spec['target_choice'])}"

    def wrong_choice(ep: Episode) -> str:
        return f"choice-opt-{next(i for i, c in enumerate(ep.spec['choices']) if c != ep.spec['target_choice'])}"

    return [
        ("a wrong switch flipped and a wrong choice made", 0,
         lambda ep: ep.click(f"flag-{(ep.spec['flip'] + 1) % len(ep.spec['names'])}", "choice", wrong_choice(ep)),
         lambda ep: happy(ep, 1)),
        ("all set, then the choice list opened again", 1,
         lambda ep: ep.click(f"flag-{ep.spec['flip']}", "choice", target(ep), "choice"), lambda ep: 1),
        ("saved unchanged, then the blocked Help link", 2, lambda ep: ep.click("save", "help"), lambda ep: happy(ep)),
    ]


def _menu() -> list[Scenario]:
    def wrong_item(ep: Episode) -> str:
        i, j, _ = ep.spec["target"]
        items = ep.spec["menus"][i]["items"]
        return f"m-{i}-{next((x for x, it in enumerate(items) if x != j and it['children']), (j + 1) % len(items))}"

    def wrong_leaf(ep: Episode) -> str:
        i, j, k = ep.spec["target"]
        return f"m-{i}-{j}-{(k + 1) % len(ep.spec['menus'][i]['items'][j]['children'])}"

    return [
        ("a wrong menu opened", 0,
         lambda ep: ep.click(f"m-{(ep.spec['target'][0] + 1) % len(ep.spec['menus'])}"), lambda ep: 3),
        ("the right menu, a wrong item opened", 1,
         lambda ep: ep.click(f"m-{ep.spec['target'][0]}", wrong_item(ep)), lambda ep: 2),
        ("a wrong leaf chosen", 2,
         lambda ep: ep.click(f"m-{ep.spec['target'][0]}", f"m-{ep.spec['target'][0]}-{ep.spec['target'][1]}",
                             wrong_leaf(ep)), lambda ep: 3),
    ]


def _tabs() -> list[Scenario]:
    def wrong_tab(ep: Episode) -> int:
        return next(t for t in range(len(ep.spec["tabs"])) if t not in (ep.spec["tab"], ep.spec["start_tab"]))

    def tab(ep: Episode) -> int:
        return ep.spec["tab"]

    return [
        ("a wrong tab opened", 0, lambda ep: ep.click(f"tab-{wrong_tab(ep)}"), lambda ep: 2),
        ("a wrong setting toggled in the right tab", 1,
         lambda ep: ep.click(f"tab-{tab(ep)}", f"toggle-{tab(ep)}-{(ep.spec['setting'] + 1) % 4}"), lambda ep: 2),
        ("a setting toggled in a wrong tab, then the right tab opened", 3,
         lambda ep: ep.click(f"tab-{wrong_tab(ep)}", f"toggle-{wrong_tab(ep)}-0", f"tab-{tab(ep)}"), lambda ep: 3),
    ]


def _cart() -> list[Scenario]:
    def unwanted(ep: Episode) -> str:
        return f"add-{next(i for i, p in enumerate(ep.spec['products']) if p['name'] not in ep.spec['wanted'])}"

    def wanted(ep: Episode) -> list[str]:
        return [f"add-{i}" for i, p in enumerate(ep.spec["products"]) if p["name"] in ep.spec["wanted"]]

    return [
        ("an unwanted product added and the cart opened", 2,
         lambda ep: ep.click(unwanted(ep), "open-cart"), lambda ep: happy(ep, 2)),
        ("everything added, then a wanted one removed in the cart", 3,
         lambda ep: ep.click(*wanted(ep), "open-cart", "remove-" + wanted(ep)[0][4:]), lambda ep: 4),
        ("checked out with an unwanted product (final)", 4,
         lambda ep: ep.click(unwanted(ep), "open-cart", "checkout"), lambda ep: LOST),
    ]


def _pagination() -> list[Scenario]:
    def pages(ep: Episode) -> int:
        return len(ep.spec["rows"]) // ep.spec["per_page"]

    def wrong_open(ep: Episode) -> str:
        return "open-" + next(r["code"] for r in ep.spec["rows"][:ep.spec["per_page"]] if r["code"] != ep.spec["code"])

    return [
        ("paged on to the last page, past the order's page", 1, lambda ep: ep.click(*["next"] * (pages(ep) - 1)),
         lambda ep: pages(ep) - 1 - ep.spec["target"] // ep.spec["per_page"] + 1),
        ("a wrong order opened (final)", 0, lambda ep: ep.click(wrong_open(ep)), lambda ep: LOST),
    ]


SCENARIOS: dict[str, list[Scenario]] = {
    "cart": _cart(), "form": _form(), "login": _login(), "menu": _menu(),
    "pagination": _pagination(), "search": _search(), "settings": _settings(), "tabs": _tabs(),
}


def test_every_bundled_task_has_scenarios() -> None:
    assert sorted(SCENARIOS) == sorted(BUNDLED_TASKS)


def lost_by_design(task: str, state: dict[str, Any]) -> bool:
    """The page states the oracles' docstrings call final: nothing on the page can undo them."""
    final = {"search": state.get("opened"), "pagination": state.get("opened"),
             "form": state.get("submitted"), "cart": state.get("ordered")}.get(task)
    return final is not None


def test_oracle_recovers_from_wrong_states(env: gymnasium.Env) -> None:
    task = env.unwrapped.task.name
    failures = []
    for name, seed, drive, bound in SCENARIOS[task]:
        ep = Episode(env, seed)
        drive(ep)
        assert not ep.info["success"] and not ep.ended, f"{task}: {name!r} did not leave a wrong state"
        limit = bound(ep)
        try:
            if limit == LOST:
                assert lost_by_design(task, ep.state()), ep.state()
                assert env.unwrapped.oracle_action(ep.obs, ep.info) is None
            else:
                ep.solve(limit)
        except AssertionError as exc:
            failures.append(f"{task} seed {seed}, {name}: {exc}")
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------------- random actions, then the oracle
RANDOM_RUNS = 2  # per task: policy seed k, env seed 40 + k, 1 + k % 3 random actions


def test_oracle_solves_after_random_actions(env: gymnasium.Env) -> None:
    task = env.unwrapped.task.name
    failures = []
    for k in range(RANDOM_RUNS):
        policy = make_policy("random", seed=k)
        policy.reset()
        ep = Episode(env, 40 + k)
        prefix: list[str] = []
        for _ in range(1 + k % 3):
            if ep.ended or ep.info["success"]:
                break
            prefix.append(policy.act(ep.obs, ep.info))
            ep.do(prefix[-1])
        try:
            if ep.info["success"]:
                continue
            if lost_by_design(task, ep.state()):
                assert env.unwrapped.oracle_action(ep.obs, ep.info) is None
                continue
            ep.solve(12)
        except AssertionError as exc:
            failures.append(f"{task} seed {40 + k} after {prefix}: {exc}")
    assert not failures, "\n".join(failures)


# ------------------------------------------------------------------------------- scrolled away
def test_oracle_scrolls_back_to_what_it_needs() -> None:
    """At 640x480 no bundled page is taller than the screen, so a scroll changes nothing there.
    At a 120 px high viewport the login form is: scrolled to the bottom, the oracle scrolls back
    up to the username field and finishes."""
    env = gymnasium.make("catp/login-v0", viewport=(640, 120), max_steps=MAX_STEPS)
    try:
        ep = Episode(env, 4).do(actions.scroll(0, 1000))
        assert not any(el.get("id") == "username" for el in ep.info["elements"])
        taken = ep.solve(6)
        assert parse_action(taken[0]).name == "scroll" and parse_action(taken[0]).args[1] < 0, taken
    finally:
        env.close()


# --------------------------------------------------------------------------------- MiniWoB++
@pytest.mark.skipif(not miniwob_task_names(), reason="needs `pip install --no-deps miniwob==1.1.0`")
def test_miniwob_enter_text_oracle_fixes_the_field() -> None:
    """The one multi-step MiniWoB++ oracle (``PageView.fill`` then Submit) from a field holding the
    start of the word with the caret before it, and with it selected. (The single-click oracles
    have no wrong state to recover from: a wrong click ends those episodes; so does a wrong
    submission in enter-text.)"""
    env = gymnasium.make("catp/miniwob.enter-text-v0", max_steps=MAX_STEPS, task_options={"time_limit_ms": 60000})
    try:
        for seed, keys in ((0, ["Home"]), (1, ["Tab", "Shift+Tab"])):
            ep = Episode(env, seed)
            word = ep.obs["instruction"].split('"')[1]
            ep.click("tt").do(actions.type_(word[:2]), *map(actions.press, keys))
            ep.solve(3)
    finally:
        env.close()
