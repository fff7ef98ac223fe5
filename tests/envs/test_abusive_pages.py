"""Bounded work on abusive pages (issue 30): each case ends within the step and reset limits,
with a clear message, and the env is usable afterwards.

Downloads never reach the disk (the bytes the browser's processes write during a storm are
counted from /proc), a page that reloads itself in a loop is an observation to retry rather than
a browser failure, a history flood is capped, a 20 MB text node and 50,000 buttons at load fit
in the limits, and a page past the JavaScript heap cap crashes only its own episode.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Iterator

import gymnasium
import pytest
from conftest import click_on

import envs
from envs.page_guard import MAX_HISTORY_PER_STEP
from envs.tasks import PageTask, register_task

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8">
<script src="/episode/spec.js"></script><script src="/static/catp.js"></script></head>
<body><div id="buttons"></div><div id="load"></div><script>
if (sessionStorage.getItem('loop')) setTimeout(() => location.reload(), 20);
const MB = 1024 * 1024;
const BUTTONS = {
  downloads: () => { const blob = new Blob([new Uint8Array(5 * MB)], {type: 'application/octet-stream'});
    for (let i = 0; i < 200; i++) { const a = document.createElement('a'); a.href = URL.createObjectURL(blob);
      a.download = 'f' + i + '.bin'; a.click(); } },
  download_link: () => { const a = document.createElement('a'); a.id = 'dl'; a.textContent = 'file';
    a.href = URL.createObjectURL(new Blob(['x'])); a.download = 'x.txt'; document.body.prepend(a); a.click(); },
  reload_loop: () => { sessionStorage.setItem('loop', '1'); location.reload(); },
  reload_once: () => setTimeout(() => location.reload(), 0),
  history: () => { for (let i = 0; i < 100000; i++) history.pushState({i: i}, '', '?h=' + i);
                   CATP.state.history_done = history.length; },
  allocate: () => { const keep = []; for (;;) keep.push(new Array(1e6).fill(1.5)); },
  goal: () => { CATP.state.goal = true; },
};
for (const [name, run] of Object.entries(BUTTONS)) {
  const b = document.createElement('button'); b.id = name; b.textContent = name; b.onclick = run;
  document.getElementById('buttons').appendChild(b);
}
const load = CATP.spec.load;
if (load === 'buttons') document.getElementById('load').innerHTML = '<button>b</button>'.repeat(50000);
if (load === 'text') { const p = document.createElement('button'); p.id = 'big';
  p.appendChild(document.createTextNode('word '.repeat(4 * MB))); document.getElementById('load').appendChild(p); }
</script></body></html>
"""


@pytest.fixture(scope="module")
def task_id(restored_registries: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder: Path = tmp_path_factory.mktemp("abusive")
    (folder / "index.html").write_text(PAGE, encoding="utf-8")

    class AbusiveTask(PageTask):
        name = "abusive"
        pages_dir = folder

        def __init__(self, load: str = "") -> None:
            super().__init__()
            self.load, self.seed = load, 0

        def start(self, session: Any, seed: int) -> str:
            self.seed = seed
            return super().start(session, seed)

        def generate(self, rng: random.Random) -> dict[str, Any]:
            return {"load": self.load if self.seed == 0 else ""}  # seed 0: the huge page; others: a plain one

        def instruction(self, spec: dict[str, Any]) -> str:
            return "Click goal."

        def is_success(self, state: dict[str, Any], spec: dict[str, Any]) -> bool:
            return bool(state.get("goal"))

    register_task(AbusiveTask)
    yield envs.register_env("abusive", max_steps=40)


@pytest.fixture(scope="module")
def env(task_id: str) -> Iterator[gymnasium.Env]:
    env = gymnasium.make(task_id)
    yield env
    env.close()


def _within_step(env: gymnasium.Env, action: str) -> tuple[dict[str, Any], bool, dict[str, Any]]:
    start = time.monotonic()
    obs, reward, terminated, truncated, info = env.step(action)
    assert time.monotonic() - start < env.unwrapped.config.step_timeout_ms / 1000
    return obs, terminated, info


def _goal_still_works(env: gymnasium.Env, seed: int = 0) -> None:
    obs, info = env.reset(seed=seed)
    assert "error" not in info, info.get("error")
    obs, reward, terminated, truncated, info = env.step(click_on(info, "goal"))
    assert reward == 1.0 and terminated


def _bytes_written(pids: set[int]) -> int:
    """What these processes wrote so far (``wchar``: files, pipes and sockets alike, so an upper
    bound on what reached the disk)."""
    total = 0
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/io").read_text().splitlines()
        except OSError:  # gone
            continue
        total += sum(int(line.split()[1]) for line in lines if line.startswith("wchar:"))
    return total


def test_a_download_storm_writes_nothing_and_is_reported(env: gymnasium.Env) -> None:
    obs, info = env.reset(seed=0)
    processes = env.unwrapped._session.processes
    pids = processes.browser_pids()
    before = _bytes_written(pids)
    obs, terminated, info = _within_step(env, click_on(info, "downloads"))
    time.sleep(0.5)  # anything Chromium would stream lands meanwhile
    written = _bytes_written(pids) - before
    assert written < 10 * 2**20, f"the browser wrote {written} bytes during 200 x 5 MB downloads"
    assert not terminated and info["event_counts"]["downloads"] == 200
    assert "refused 200 downloads (first: blob:http://127.0.0.1:" in obs["last_action_error"]
    assert not [p for p in processes.root.rglob("*") if p.is_file() and p.stat().st_size > 0]
    obs, terminated, info = _within_step(env, click_on(info, "download_link"))
    assert info["downloads"][-1].startswith("blob:") and "refused download of blob:" in obs["last_action_error"]
    _goal_still_works(env)


def test_a_page_that_reloads_itself_is_observed_not_a_browser_failure(env: gymnasium.Env) -> None:
    obs, info = env.reset(seed=0)
    obs, terminated, info = _within_step(env, click_on(info, "reload_once"))
    assert not terminated and "error" not in info, info.get("error")
    obs, terminated, info = _within_step(env, click_on(info, "reload_loop"))
    for _ in range(4):  # a reload every 20 ms: every observation races a navigation
        assert not terminated and "error" not in info, info.get("error")
        assert "browser failure" not in obs["last_action_error"]
        obs, terminated, info = _within_step(env, "scroll(0, 10)")
    assert not terminated and "error" not in info, info.get("error")
    _goal_still_works(env)  # the next episode's fresh context has no loop flag


def test_a_history_flood_is_capped_per_step(env: gymnasium.Env) -> None:
    obs, info = env.reset(seed=0)
    obs, terminated, info = _within_step(env, click_on(info, "history"))
    refused = 100_000 - MAX_HISTORY_PER_STEP
    assert not terminated and info["event_counts"]["refused_history"] == refused
    assert f"refused {refused} history.pushState/replaceState call(s)" in obs["last_action_error"]
    _goal_still_works(env)


@pytest.mark.parametrize("load", ["buttons", "text"])
def test_a_huge_page_at_load_ends_within_the_limits(task_id: str, load: str) -> None:
    """50,000 buttons, or a button holding a 20 MB text node, built as the page loads (seed 0).
    The reset ends within its limit, either with the page (then a step ends within its limit
    too) or with the limit's message; the env then serves a plain page (seed 1)."""
    with gymnasium.make(task_id, task_options={"load": load}) as env:
        config = env.unwrapped.config
        start = time.monotonic()
        obs, info = env.reset(seed=0)
        assert time.monotonic() - start < config.reset_timeout_ms / 1000 + 3
        if "error" in info:  # Chromium's own layout of the page ran past a limit (an overloaded machine)
            assert (f"the page did not answer within {config.reset_timeout_ms / 1000:g} s" in info["error"]
                    or f"Timeout {config.navigation_timeout_ms}ms exceeded" in info["error"]), info["error"]
        else:
            assert 0 < len(info["elements"]) <= 1000
            if load == "text":
                big = next(e for e in info["elements"] if e.get("id") == "big")
                assert big["text"].startswith("word word") and len(big["text"]) <= 100
            obs, terminated, info = _within_step(env, "scroll(0, 2000)")
            assert not terminated and "error" not in info, info.get("error")
        _goal_still_works(env, seed=1)


def test_a_page_past_the_heap_cap_crashes_only_its_episode(task_id: str) -> None:
    args = tuple(a for a in envs.config.CHROMIUM_ARGS if not a.startswith("--js-flags"))
    with gymnasium.make(task_id, chromium_args=args + ("--js-flags=--max-old-space-size=128",)) as env:
        obs, info = env.reset(seed=0)
        pid = env.unwrapped._session.processes.browser
        obs, reward, terminated, truncated, info = env.step(click_on(info, "allocate"))
        assert terminated and "the page crashed" in info["error"], info.get("error")
        _goal_still_works(env)
        assert env.unwrapped._session.processes.browser == pid  # the same browser, a fresh context
