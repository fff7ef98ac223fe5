"""Every bundled task: the oracle solves it, wrong play does not, seeds are reproducible."""

from __future__ import annotations

from typing import Any, Iterator

import gymnasium
import numpy as np
import pytest

import envs  # noqa: F401 - registers the ids
from envs.tasks import BUNDLED_TASKS

pytestmark = pytest.mark.browser

SEEDS = range(5)


@pytest.fixture(scope="module", params=BUNDLED_TASKS)
def env(request: pytest.FixtureRequest) -> Iterator[gymnasium.Env]:
    env = gymnasium.make(f"catp/{request.param}-v0")
    yield env
    env.close()


def run_oracle(env: gymnasium.Env, seed: int) -> tuple[dict[str, Any], list[str], float]:
    obs, info = env.reset(seed=seed)
    actions: list[str] = []
    total = 0.0
    for _ in range(env.unwrapped.config.max_steps):
        action = env.unwrapped.oracle_action(obs, info)
        if action is None:
            break
        actions.append(action)
        obs, reward, terminated, truncated, info = env.step(action)
        total += reward
        assert obs["last_action_error"] == "", (action, obs["last_action_error"])
        if terminated or truncated:
            break
    return info, actions, total


def test_oracle_solves_every_seed(env: gymnasium.Env) -> None:
    lengths = []
    for seed in SEEDS:
        info, actions, total = run_oracle(env, seed)
        assert info["success"], (env.unwrapped.task_id, seed, actions)
        assert total == 1.0
        assert env.unwrapped.oracle_action() is None  # the episode is over
        lengths.append(len(actions))
    assert 2 <= min(lengths) and max(lengths) <= 8, lengths


def test_wrong_play_does_not_succeed(env: gymnasium.Env) -> None:
    obs, info = env.reset(seed=11)
    h, w, _ = obs["screenshot"].shape
    total = 0.0
    for action in ["click(1, 1)", f"click({w - 2}, {h - 2})", 'type("wrong")', 'press("Enter")', "done()"]:
        obs, reward, terminated, truncated, info = env.step(action)
        total += reward
        if terminated:
            break
    assert terminated and not info["success"] and total == 0.0
    # After the episode ended, a further step does not raise and still reports the end.
    obs, reward, terminated, _, info = env.step("click(1, 1)")
    assert terminated and reward == 0.0 and "reset" in obs["last_action_error"]


def test_done_after_one_correct_step_fails(env: gymnasium.Env) -> None:
    for seed in range(12, 30):  # a seed whose solution needs more than one action
        obs, info = env.reset(seed=seed)
        obs, reward, terminated, truncated, info = env.step(env.unwrapped.oracle_action(obs, info))
        if not terminated:
            break
    else:
        pytest.fail("every seed was solved in one action")
    obs, reward, terminated, truncated, info = env.step("done()")
    assert terminated and not truncated and not info["success"] and reward == 0.0


def test_same_seed_same_first_observation(env: gymnasium.Env) -> None:
    a, info_a = env.reset(seed=3)
    b, info_b = env.reset(seed=3)
    assert a["instruction"] == b["instruction"]
    np.testing.assert_array_equal(a["screenshot"], b["screenshot"])
    assert info_a["elements"] == info_b["elements"]
    assert {env.reset(seed=s)[0]["instruction"] for s in range(4, 8)} - {a["instruction"]}


def test_observation_and_info_shape(env: gymnasium.Env) -> None:
    obs, info = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    assert set(obs) == {"screenshot", "instruction", "url", "last_action_error", "step"}
    assert obs["screenshot"].shape == (480, 640, 3) and obs["step"] == 0
    assert obs["url"].startswith("http://127.0.0.1:")
    assert info["task_id"] == env.unwrapped.task_id and info["seed"] == 1
    assert info["blocked_requests"] == [] and info["success"] is False
    assert info["elements"], "a task page shows something to act on"
    for el in info["elements"]:
        assert {"tag", "text", "role", "bbox"} <= set(el)
        x, y, w, h = el["bbox"]
        assert 0 <= x < 640 and 0 <= y < 480 and w > 0 and h > 0
