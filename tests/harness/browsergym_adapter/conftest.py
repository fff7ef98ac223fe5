"""BrowserGym's MiniWoB++ tasks in the system Chromium, offline (pages of the ``miniwob``
package). Every test here needs browsergym (``pip install -e ".[browsergym]"``; CI's compat stage
has it) and skips cleanly where it is absent."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
TASK = "browsergym/miniwob.click-button"


@pytest.fixture(scope="session")
def chromium() -> str:
    """The system Chromium's path; the test skips without it."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"needs Chromium at {CHROMIUM} (apt-get install -y chromium)")
    return CHROMIUM


@pytest.fixture(scope="module")
def click_button(chromium: str) -> Iterator[Any]:
    """BrowserGym's own click-button env (raw observations), made with the ``coord`` action set."""
    import gymnasium

    from catp_agent.harness.browsergym import coord_action_set, use_system_chromium
    from catp_agent.harness.browsergym.support import browsergym_env_kwargs

    use_system_chromium(chromium)
    env = gymnasium.make(TASK, action_mapping=coord_action_set().to_python_code,
                         **browsergym_env_kwargs(TASK, executable_path=chromium))
    try:
        yield env
    finally:
        env.close()


class Scripted:
    """A policy that says what the test tells it to (``next_action``) and remembers what it saw."""

    name = "scripted"

    def __init__(self) -> None:
        self.next_action = "done()"
        self.seen: list[dict[str, Any]] = []

    def reset(self) -> None:
        self.seen.clear()

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> str:
        self.seen.append(obs)
        return self.next_action


@pytest.fixture
def scripted() -> Scripted:
    """A fresh :class:`Scripted` policy."""
    return Scripted()
