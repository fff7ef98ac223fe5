"""MiniWoB++ over file://: scripted clicks from info's element boxes earn the page's reward."""

from __future__ import annotations

import re
from typing import Any, Iterator

import gymnasium
import numpy as np
import pytest
from conftest import center
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401 - registers the ids
from envs.tasks.miniwob import MINIWOB_ORACLES, miniwob_task_names

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not miniwob_task_names(), reason="needs `pip install --no-deps miniwob==1.1.0`"),
]

ORACLE_TASKS = ["click-test", "click-button", "click-link", "click-tab", "enter-text"]


def quoted(instruction: str) -> str:
    return re.search(r'"([^"]*)"', instruction).group(1)


def find(info: dict[str, Any], pred: Any) -> dict[str, Any]:
    matches = [el for el in info["elements"] if pred(el)]
    assert matches, info["elements"]
    return matches[0]


def scripted(task: str, obs: dict[str, Any], info: dict[str, Any], right: bool) -> list[str]:
    """Actions computed only from the instruction and info's element boxes."""
    text = obs["instruction"]
    if task == "click-test":
        button = find(info, lambda e: e["tag"] == "button")
        if right:
            return ["click(%d, %d)" % center(button["bbox"])]
        x, y, w, h = button["bbox"]  # a point on the page away from the button
        return [f"click({(x + w + 10) % 320}, {5})"]
    if task in ("click-button", "click-link"):
        tag = "button" if task == "click-button" else "span"
        target = quoted(text)
        if right:
            el = find(info, lambda e: e["tag"] == tag and e["text"] == target)
        else:  # another button or link if there is one, else some other element, else a blank spot
            wrong = [e for e in info["elements"] if e["text"] != target]
            if not wrong:  # e.g. click-link seed 1: the target is the only element
                x, y, w, h = find(info, lambda e: e["text"] == target)["bbox"]
                return [f"click({(x + w + 10) % 320}, {5})"]
            el = next((e for e in wrong if e["tag"] == tag), wrong[0])
        return ["click(%d, %d)" % center(el["bbox"])]
    if task == "click-tab":
        n = re.search(r"Tab #(\d)", text).group(1)
        el = find(info, lambda e: e["tag"] == "a" and (e["text"] == f"Tab #{n}") == right)
        return ["click(%d, %d)" % center(el["bbox"])]
    if task == "enter-text":
        box = find(info, lambda e: e["role"] == "textbox")
        submit = find(info, lambda e: e["tag"] == "button")
        value = quoted(text) if right else quoted(text) + "x"
        return ["click(%d, %d)" % center(box["bbox"]), f'type("{value}")',
                "click(%d, %d)" % center(submit["bbox"])]
    raise AssertionError(task)


@pytest.fixture(scope="module", params=ORACLE_TASKS)
def env(request: pytest.FixtureRequest) -> Iterator[gymnasium.Env]:
    env = gymnasium.make(f"catp/miniwob.{request.param}-v0", task_options={"time_limit_ms": 60_000})
    yield env
    env.close()


def play(env: gymnasium.Env, actions: list[str]) -> tuple[float, bool, dict[str, Any]]:
    total, terminated, info = 0.0, False, {}
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        assert obs["last_action_error"] == "", obs["last_action_error"]
        total += reward
        if terminated:
            break
    return total, terminated, info


def test_scripted_correct_clicks_earn_reward(env: gymnasium.Env) -> None:
    task = env.unwrapped.task.task
    for seed in range(3):
        obs, info = env.reset(seed=seed)
        total, terminated, info = play(env, scripted(task, obs, info, right=True))
        assert terminated and info["success"] and total == 1.0, (task, seed, obs["instruction"])
        assert info["wob_raw_reward"] == 1.0 and info["wob_reward"] > 0


def test_wrong_click_earns_nothing(env: gymnasium.Env) -> None:
    task = env.unwrapped.task.task
    for seed in range(3):
        obs, info = env.reset(seed=seed)
        total, terminated, info = play(env, scripted(task, obs, info, right=False))
        assert total == 0.0 and not info["success"], (task, seed)


def test_oracle_solves(env: gymnasium.Env) -> None:
    assert env.unwrapped.task.task in MINIWOB_ORACLES
    for seed in range(5, 8):
        obs, info = env.reset(seed=seed)
        for _ in range(5):
            action = env.unwrapped.oracle_action(obs, info)
            if action is None:
                break
            obs, reward, terminated, truncated, info = env.step(action)
            if terminated:
                break
        assert info["success"], (env.unwrapped.task_id, seed)


def test_seeded_start_and_scale(env: gymnasium.Env) -> None:
    a, _ = env.reset(seed=42)
    b, _ = env.reset(seed=42)
    assert a["instruction"] == b["instruction"] and a["instruction"]
    np.testing.assert_array_equal(a["screenshot"], b["screenshot"])
    assert a["screenshot"].shape == (420, 320, 3)  # 160x210 CSS pixels at scale 2
    assert a["url"].startswith("file://")


def test_the_committed_report_shows_todays_seed_0(env: gymnasium.Env) -> None:
    """envs/miniwob_report.md is regenerated when seeding changes (`python -m envs miniwob-report`)."""
    from envs.miniwob_report import REPORT_PATH

    task = env.unwrapped.spec.id.removeprefix("catp/miniwob.").removesuffix("-v0")
    rows = {cells[1].strip(): cells[5].strip() for line in REPORT_PATH.read_text().splitlines()
            if len(cells := line.split("|")) > 6}
    obs, _ = env.reset(seed=0)
    assert rows[task] == obs["instruction"].replace("|", "/")[:70].strip(), "rerun python -m envs miniwob-report"


def test_scale_is_configurable() -> None:
    env = gymnasium.make("catp/miniwob.click-test-v0", device_scale_factor=3.0)
    try:
        obs, info = env.reset(seed=0)
        assert obs["screenshot"].shape == (630, 480, 3)
        button = find(info, lambda e: e["tag"] == "button")
        obs, reward, terminated, _, info = env.step("click(%d, %d)" % center(button["bbox"]))
        assert reward == 1.0 and terminated
    finally:
        env.close()


def test_other_files_are_blocked() -> None:
    env = gymnasium.make("catp/miniwob.click-test-v0")
    try:
        env.reset(seed=0)
        unwrapped = env.unwrapped
        unwrapped._call(lambda: unwrapped._session.page.evaluate(
            "() => { const i = document.createElement('img'); i.src = 'file:///etc/hostname';"
            " document.body.appendChild(i); }"))
        obs, reward, terminated, truncated, info = env.step("scroll(0, 0)")
        assert "file:///etc/hostname" in info["blocked_requests"]
        assert "blocked request to file:///etc/hostname" in obs["last_action_error"]
    finally:
        env.close()


def test_check_env_miniwob() -> None:
    env = gymnasium.make("catp/miniwob.click-button-v0")
    try:
        check_env(env.unwrapped)
    finally:
        env.close()


# ------------------------------------------------------------------ BrowserGym's seeding rule
SEEDED_TASKS = ["click-button", "enter-text", "click-tab", "login-user"]


def browsergym_page_seed(seed: int) -> int:
    """What BrowserGym gives ``Math.seedrandom`` for seed ``seed``: its MiniWoB task holds
    ``self.random = np.random.RandomState(seed)`` and starts the page with
    ``Math.seedrandom(self.random.randint(0, 1000000))``."""
    return int(np.random.RandomState(seed).randint(0, 1000000))


def test_browsergym_rule_values() -> None:
    # numpy's legacy RandomState stream is frozen, so these numbers are BrowserGym's for good
    assert [browsergym_page_seed(s) for s in range(4)] == [985772, 128037, 875688, 71530]
    from envs.tasks.miniwob import page_seed

    assert [page_seed(s) for s in range(4)] == [985772, 128037, 875688, 71530]
    assert page_seed(7, "raw") == 7
    with pytest.raises(ValueError, match="seeding must be one of"):
        page_seed(0, "gym")


@pytest.fixture(scope="module")
def session() -> Iterator[Any]:
    """One browser for many task pages (what the env does on reset, without an env per task)."""
    from envs.browser import BrowserSession
    from envs.config import WebEnvConfig

    s = BrowserSession(WebEnvConfig(viewport=(160, 210), device_scale_factor=2.0))
    yield s
    s.close()


@pytest.mark.slow
def test_seed_s_is_browsergym_seed_s(session: Any) -> None:
    """Our seed s gives the task instance (utterance and page) of the page seeded by BrowserGym's
    rule for s; the old rule (``seeding="raw"``: ``Math.seedrandom(s)``) stays available and differs."""
    from envs.tasks.miniwob import MiniWobTask

    def instance(task: MiniWobTask, seed: int) -> tuple[str, str]:
        utterance = task.start(session, seed)
        return utterance, session.page.evaluate("() => document.getElementById('area').innerHTML")

    changed = 0
    for name in SEEDED_TASKS:
        default, raw = MiniWobTask(name), MiniWobTask(name, seeding="raw")
        for seed in (0, 1, 2):
            ours = instance(default, seed)
            assert ours[0] and ours == instance(raw, browsergym_page_seed(seed)), (name, seed)
        changed += ours != instance(raw, 2)
    assert changed >= len(SEEDED_TASKS) - 1  # the default really moved off the raw rule


def test_bad_seeding_is_refused() -> None:
    with pytest.raises(ValueError, match=r"seeding must be one of \['browsergym', 'raw'\], got 'numpy'"):
        gymnasium.make("catp/miniwob.click-test-v0", task_options={"seeding": "numpy"})
