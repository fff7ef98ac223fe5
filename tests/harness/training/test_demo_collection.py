"""Demo collection survives a bad episode and never waits forever on a failed worker (real Chromium)."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest

from catp_agent.harness.evaluation.episode import make_env
from catp_agent.harness.training.demos import collect_demos, demo_path, load_demos, round_action

FLAKY = "catp-test/flaky-login-v0"
BAD_SEED = 10001


class _CrashesOnOneSeed(gymnasium.Wrapper):
    """The real login task, except that resetting to BAD_SEED closes the browser and raises,
    as a crashed browser would: an env that was used again after that would fail every episode."""

    def reset(self, *, seed=None, options=None):
        if seed == BAD_SEED:
            self.env.close()
            raise RuntimeError("browser crashed (simulated)")
        return self.env.reset(seed=seed, options=options)


def _flaky_env(**kwargs):
    return _CrashesOnOneSeed(make_env("catp/login-v0", **kwargs))


@pytest.fixture(scope="module", autouse=True)
def flaky_id():
    gymnasium.register(FLAKY, entry_point=_flaky_env)  # this process only: spawned workers do not know it
    yield
    del gymnasium.registry[FLAKY]


@pytest.mark.browser
def test_an_episode_that_raises_is_counted_and_the_next_gets_a_fresh_browser(tmp_path):
    seeds = [10000, BAD_SEED, 10002]
    report = collect_demos(tmp_path, [FLAKY], seeds, workers=1, progress=False)
    assert report[FLAKY]["kept"] == 2 and report[FLAKY]["failed"] == 1
    assert report[FLAKY]["errors"] == [f"{FLAKY} seed {BAD_SEED}: RuntimeError: browser crashed (simulated)"]
    assert [demo_path(tmp_path, FLAKY, s).exists() for s in seeds] == [True, False, True]
    assert [d.seed for d in load_demos(tmp_path)] == [10000, 10002]


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_a_failing_worker_process_stops_the_collection_instead_of_hanging(tmp_path):
    """Spawned workers cannot make FLAKY (it is registered only here): every worker raises, and
    collect_demos must say so, not wait for progress that never comes."""
    with pytest.raises(RuntimeError, match="worker failed: ValueError: unknown task 'catp-test/flaky-login-v0'"):
        collect_demos(tmp_path, [FLAKY], [10000, 10002], workers=2, progress=False)


def test_unknown_tasks_are_refused_before_any_browser_starts(tmp_path):
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['catp/nope-v0'\]"):
        collect_demos(tmp_path, ["catp/login-v0", "catp/nope-v0"], [10000], workers=2, progress=False)


@pytest.mark.browser
@pytest.mark.timeout(300)
@pytest.mark.slow
def test_worker_processes_split_a_task_and_a_second_call_resumes(tmp_path):
    seeds = [10000, 10001, 10002]
    first = collect_demos(tmp_path, ["catp/login-v0"], seeds, workers=2, progress=False)
    assert first == {"catp/login-v0": {"kept": 3, "failed": 0, "errors": []}}
    stamps = [demo_path(tmp_path, "catp/login-v0", s).stat().st_mtime_ns for s in seeds]
    again = collect_demos(tmp_path, ["catp/login-v0"], seeds, workers=2, progress=False)
    assert again == first
    assert [demo_path(tmp_path, "catp/login-v0", s).stat().st_mtime_ns for s in seeds] == stamps  # nothing re-recorded


@pytest.mark.browser
def test_a_demo_stores_the_rounded_actions_that_solved_it(tmp_path):
    """Clicks are rounded before they run: replaying the stored actions in a fresh env solves the
    episode again, and every frame comes with the error and the elements shown on it."""
    report = collect_demos(tmp_path, ["catp/login-v0"], [10003], workers=1, progress=False)
    assert report == {"catp/login-v0": {"kept": 1, "failed": 0, "errors": []}}
    (demo,) = load_demos(tmp_path)
    assert demo.frames.shape[0] == len(demo.actions) == len(demo.errors) == len(demo.elements) == 5
    assert demo.frames.dtype == np.uint8 and demo.errors == [""] * 5
    assert all(round_action(a) == a for a in demo.actions) and demo.actions[0].startswith("click(")
    assert any(e["role"] == "textbox" and len(e["bbox"]) == 4 for e in demo.elements[0])
    env = make_env("catp/login-v0")
    try:
        obs, info = env.reset(seed=10003)
        assert obs["instruction"] == demo.instruction
        assert np.array_equal(obs["screenshot"], demo.frames[0])
        for action in demo.actions:
            obs, reward, terminated, truncated, info = env.step(action)
        assert terminated and info["success"]
    finally:
        env.close()
