"""A BrowserGym task behind our env interface, so that ``catp-agent eval`` (runner, resume, CIs,
HTML report, workers, Ray) runs on BrowserGym's own pages:

    catp-agent eval --tasks browsergym/miniwob.click-button --seeds 0-9 --methods none,catp

:class:`BrowserGymTaskEnv` wraps ``gymnasium.make("browsergym/...")`` made with the ``coord``
action set, the system Chromium and the MiniWoB++ pages of the ``miniwob`` package. It takes our
action strings and gives our observation (``screenshot``, ``instruction``, ``url``,
``last_action_error``, ``step``) and info (``success``, ``reward``, ``error``):

* an action string is parsed as our envs parse it; one that is not an action does not reach the
  page (the step counts, ``last_action_error`` says why), as in our envs;
* ``done()`` ends the episode (terminated; success only if BrowserGym already said so);
* success is BrowserGym's episode ending with a positive reward; ``max_steps`` (default 10, as
  our MiniWoB++ envs) truncates.

BrowserGym launches a fresh Chromium (and its chat window) at every ``reset()``.
"""

from __future__ import annotations

from typing import Any

import gymnasium
from gymnasium import spaces

from catp_agent.harness.browsergym.mapping import Pointer, keep_needed, policy_observation, to_coord
from catp_agent.harness.browsergym.support import DEFAULT_CHROMIUM, browsergym_env_kwargs, use_system_chromium
from envs.actions import ActionParseError, parse_action

__all__ = ["DEFAULT_MAX_STEPS", "BrowserGymTaskEnv", "make_browsergym_env"]

DEFAULT_MAX_STEPS = 10


class BrowserGymTaskEnv(gymnasium.Env):
    """One BrowserGym task with our observations, actions and info (see the module doc)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, task_id: str, *, max_steps: int | None = None, viewport: tuple[int, int] | None = None,
                 executable_path: str = DEFAULT_CHROMIUM) -> None:
        from catp_agent.harness.browsergym.agent import coord_action_set

        max_steps = DEFAULT_MAX_STEPS if max_steps is None else max_steps
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be an int >= 1, got {max_steps!r}")
        kwargs = browsergym_env_kwargs(task_id, viewport=viewport, executable_path=executable_path)
        use_system_chromium(executable_path)
        self.task_id, self.max_steps = task_id, max_steps
        self.action_space = spaces.Text(10_000, min_length=0)
        self._env = gymnasium.make(task_id, action_mapping=coord_action_set().to_python_code, **kwargs)
        self._pointer = Pointer()
        self._obs: dict[str, Any] = {}
        self._step = 0
        self._over = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        obs, _ = self._env.reset(seed=seed)
        self._obs = keep_needed(obs)
        self._pointer.reset()
        self._step = 0
        self._over = False
        ours = policy_observation(self._obs, 0)
        return ours, {"success": False, "reward": 0.0, "error": None, "instruction": ours["instruction"]}

    def step(self, action: str) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        if self._over:
            raise RuntimeError("the episode is over; call reset() first")
        self._step += 1
        reward, terminated, success, own_error = 0.0, False, False, ""
        try:
            parsed = parse_action(action)
        except ActionParseError as exc:
            parsed, own_error = None, str(exc)
        if parsed is not None:
            coord = to_coord(parsed, self._pointer, self._obs["screenshot"])
            if coord is None:  # done()
                terminated = True
            else:
                obs, reward, terminated, truncated_bg, info = self._env.step(coord)
                self._obs = keep_needed(obs)
                reward = float(reward)
                success = bool(terminated and reward > 0)
                terminated = bool(terminated or truncated_bg)
        truncated = not terminated and self._step >= self.max_steps
        self._over = terminated or truncated
        ours = policy_observation(self._obs, self._step, own_error)
        return ours, reward, terminated, truncated, {"success": success, "reward": reward, "error": None}

    def close(self) -> None:
        self._env.close()
        super().close()


def make_browsergym_env(task: str, *, max_steps: int | None = None,
                        viewport: tuple[int, int] | None = None) -> BrowserGymTaskEnv:
    """The env factory ``catp_agent.harness.evaluation.episode.make_env`` uses for ``browsergym/`` ids."""
    return BrowserGymTaskEnv(task, max_steps=max_steps, viewport=viewport)
