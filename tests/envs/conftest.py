"""Shared helpers for the envs tests: skip browser tests when Chromium is missing, and undo the
registrations of tasks a test module defines."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.path.exists(CHROMIUM):
        return
    skip = pytest.mark.skip(reason=f"needs Chromium at {CHROMIUM} (apt-get install -y chromium)")
    for item in items:
        if "browser" in item.keywords and str(item.fspath).startswith(os.path.dirname(__file__)):
            item.add_marker(skip)


def center(bbox: tuple[int, int, int, int]) -> tuple[int, int]:
    """Centre of an (x, y, w, h) box in screenshot pixels."""
    x, y, w, h = bbox
    return x + w // 2, y + h // 2


def click_on(info: dict[str, Any], element_id: str) -> str:
    """The action that clicks the centre of the element with this id in ``info["elements"]``."""
    el = next(e for e in info["elements"] if e.get("id") == element_id)
    return "click(%d, %d)" % center(el["bbox"])


@pytest.fixture(scope="module")
def restored_registries() -> Iterator[None]:
    """Snapshot the task registry, envs' list of ids and gymnasium's registry, and restore them
    after the module, so that tests which register a task leave the counts others check as they
    were. envs has no unregister: its list is restored in place."""
    import gymnasium

    import envs
    from envs.tasks import TASKS

    tasks, ids, gym_ids = dict(TASKS), envs.list_tasks(), set(gymnasium.registry)
    try:
        yield
    finally:
        TASKS.clear()
        TASKS.update(tasks)
        envs._REGISTERED[:] = ids  # noqa: SLF001 - undo register_env
        for env_id in set(gymnasium.registry) - gym_ids:
            del gymnasium.registry[env_id]


def register_probe_page(name: str, folder: Path, max_steps: int = 10) -> str:
    """Register a task with nothing to solve, serving the pages in ``folder``; return its env id.
    For tests that probe what a page can do, not an agent's success. Use with
    :func:`restored_registries`."""
    import random

    import envs
    from envs.tasks import PageTask, register_task

    class ProbeTask(PageTask):
        pages_dir = folder

        def generate(self, rng: random.Random) -> dict[str, Any]:
            return {}

        def instruction(self, spec: dict[str, Any]) -> str:
            return "Nothing to do."

        def is_success(self, state: dict[str, Any], spec: dict[str, Any]) -> bool:
            return False

    ProbeTask.name = name
    register_task(ProbeTask)
    return envs.register_env(name, max_steps=max_steps)
