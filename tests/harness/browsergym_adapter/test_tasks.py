"""BrowserGym's MiniWoB++ click-button through the adapter, in the system Chromium: seed parity
with our env, a scripted policy in our action format solving it, unparsable output, and the
bundled model acting under CATP."""

from __future__ import annotations

import gymnasium
import pytest

pytest.importorskip("browsergym.core", reason="needs BrowserGym: pip install -e '.[browsergym]'")

from catp_agent.harness.browsergym import CatpAgentArgs, CatpBrowserGymAgent  # noqa: E402
from catp_agent.harness.browsergym.mapping import NOOP  # noqa: E402
from catp_agent.harness.browsergym.scripted import LabelClickPolicy, browsergym_elements  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.compat]


def _buttons(elements: list[dict]) -> list[str]:
    return [e["text"] for e in elements if e.get("role") == "button"]


def test_seed_s_is_the_same_task_instance_in_our_env_and_browsergyms(click_button) -> None:
    import envs  # noqa: F401 - registers catp/miniwob.*

    ours = gymnasium.make("catp/miniwob.click-button-v0")
    seen = []
    try:
        for seed in (0, 7):
            our_obs, our_info = ours.reset(seed=seed)
            bg_obs, _ = click_button.reset(seed=seed)
            assert bg_obs["goal_object"][0]["text"] == our_obs["instruction"], seed
            assert _buttons(browsergym_elements(bg_obs)) == _buttons(our_info["elements"]), seed
            seen.append((our_obs["instruction"], _buttons(our_info["elements"])))
    finally:
        ours.close()
    assert seen[0] != seen[1]  # two seeds, two task instances: the comparison is not of constants


def test_a_scripted_policy_in_our_format_solves_it_through_the_adapter(click_button, scripted) -> None:
    policy = scripted
    agent = CatpBrowserGymAgent(policy)
    for seed in (1, 2):
        obs, _ = click_button.reset(seed=seed)
        agent.reset()
        policy.next_action = LabelClickPolicy().choose(obs["goal_object"][0]["text"], browsergym_elements(obs))
        assert policy.next_action.startswith("click(")
        action, info = agent.get_action(agent.obs_preprocessor(obs))
        assert action.startswith("mouse_click(") and info.stats["parse_error"] == 0
        assert policy.seen[-1]["instruction"] == obs["goal_object"][0]["text"]
        obs, reward, terminated, _, _ = click_button.step(action)
        assert (reward, terminated, obs["last_action_error"]) == (1.0, True, ""), seed


def test_unparsable_output_becomes_noop_and_the_error_reaches_the_next_step(click_button, scripted) -> None:
    policy = scripted
    agent = CatpBrowserGymAgent(policy)
    obs, _ = click_button.reset(seed=3)
    policy.next_action = "I would click the no button"
    action, info = agent.get_action(agent.obs_preprocessor(obs))
    assert action == NOOP and info.stats["parse_error"] == 1 and "not an action" in info.extra_info["parse_error"]
    obs, reward, terminated, _, _ = click_button.step(action)
    assert (reward, terminated, obs["last_action_error"]) == (0.0, False, "")
    policy.next_action = "done()"
    action, info = agent.get_action(agent.obs_preprocessor(obs))
    assert "could not read" in policy.seen[-1]["last_action_error"]  # the parse error, one step later
    assert action is None and info.stats["parse_error"] == 0  # done() ends BrowserGym's episode


def test_the_bundled_model_acts_two_steps_under_catp_keeping_fewer_tokens(click_button) -> None:
    agent = CatpAgentArgs(method="catp", ratio=0.778, device="cpu").make_agent()
    obs, _ = click_button.reset(seed=0)
    stats = []
    for _ in range(2):
        action, info = agent.get_action(agent.obs_preprocessor(obs))
        stats.append(info.stats)
        if action is not None:
            obs, _, terminated, _, _ = click_button.step(action)
            if terminated:
                obs, _ = click_button.reset(seed=1)  # the second step still needs a page
    for s in stats:
        assert 0 < s["kept_final"] < s["image_tokens_in"], s
        assert s["prefill_s"] > 0 and s["selection_s"] > 0 and s["decode_s"] >= 0
    assert stats[1]["image_tokens_in"] > stats[0]["image_tokens_in"]  # the history window holds step 0's screen
