"""The last holes in the guard (issue 24): dialog and pop-up storms, dropped envs, silent blocks.

A page that opens thousands of dialogs or dozens of pop-ups is a page, not a hang: the step
returns well within its limit, reports the counts, and the episode goes on. An env dropped
without ``close()`` ends its browser (checked in a fresh process, by counting its processes).
Attempts the routing layer cannot see (a preconnect to an outside host, a WebRTC peer
connection) are reported too. Nothing here contacts an address beyond 127.0.0.1: outside host
names resolve nowhere, and the env's proxy refuses them.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Iterator

import gymnasium
import pytest
from conftest import click_on as _click

import envs
from envs.page_guard import MAX_POPUPS_PER_STEP
from envs.tasks import PageTask, register_task

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8">
<script src="/episode/spec.js"></script><script src="/static/catp.js"></script></head>
<body><div id="buttons"></div><iframe id="frame" srcdoc="<p>frame</p>"></iframe>
<script>
const BUTTONS = {
  alerts: () => { for (let i = 0; i < 2000; i++) alert('storm ' + i); CATP.state.after_alerts = true; },
  confirms: () => { let yes = 0; for (let i = 0; i < 300; i++) yes += confirm('sure?') ? 1 : 0;
                    CATP.state.confirmed = yes; CATP.state.prompted = prompt('name?'); },
  frame_alerts: () => { const w = document.getElementById('frame').contentWindow;
                        for (let i = 0; i < 500; i++) w.alert('frame ' + i); },
  popups: () => { let got = 0; for (let i = 0; i < 50; i++) if (window.open('/tasks/storms/index.html?p=' + i)) got++;
                  CATP.state.popups_opened = got; },
  anchors: () => { for (let i = 0; i < 50; i++) { const a = document.createElement('a');
                   a.href = '/tasks/storms/index.html?a=' + i; a.target = '_blank'; document.body.appendChild(a); a.click(); } },
  restore: () => { delete window.alert; delete window.open; delete window.RTCPeerConnection;
                   CATP.state.natives = [typeof window.alert, typeof window.open, typeof window.RTCPeerConnection]; },
  own_open: () => { const f = document.createElement('iframe'); f.srcdoc = "<script>function open(what) { "
                    + "return 'own open(' + what + ')'; } parent.CATP.state.own = open('x');</scr" + "ipt>";
                    document.body.appendChild(f); },
  shared_worker: () => new SharedWorker(URL.createObjectURL(new Blob(
                       ["fetch('https://outside-host.example/shared').catch(() => 0)"]))),
  outside: () => { location.href = 'https://outside-nav.example/'; },
  rtc: () => { try { new RTCPeerConnection({iceServers: [{urls: 'stun:outside-host.invalid:3478'}]});
                     CATP.state.rtc = 'made'; } catch (e) { CATP.state.rtc = e.name; } },
  rtc_feature: () => { CATP.state.feature = typeof RTCPeerConnection === 'function'
                        && 'RTCPeerConnection' in window && typeof RTCPeerConnection.prototype.createOffer; },
  leave: () => { alert('bye'); location.href = '/tasks/storms/index.html?left=1'; },
  goal: () => { CATP.state.goal = true; },
};
for (const [name, run] of Object.entries(BUTTONS)) {
  const b = document.createElement('button'); b.id = name; b.textContent = name; b.onclick = run;
  document.getElementById('buttons').appendChild(b);
}
</script></body></html>
"""


@pytest.fixture(scope="module")
def task_id(restored_registries: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("storms")
    (folder / "index.html").write_text(PAGE, encoding="utf-8")

    class StormTask(PageTask):
        name = "storms"
        pages_dir = folder

        def generate(self, rng: random.Random) -> dict[str, Any]:
            return {}

        def instruction(self, spec: dict[str, Any]) -> str:
            return "Click goal."

        def is_success(self, state: dict[str, Any], spec: dict[str, Any]) -> bool:
            return bool(state.get("goal"))

    register_task(StormTask)
    yield envs.register_env("storms", max_steps=50)


@pytest.fixture(scope="module")
def env(task_id: str) -> Iterator[gymnasium.Env]:
    env = gymnasium.make(task_id)
    yield env
    env.close()


def _state(env: gymnasium.Env) -> dict[str, Any]:
    unwrapped = env.unwrapped
    return unwrapped._call(lambda: unwrapped._session.page.evaluate("() => CATP.state"))


def _goal_still_works(env: gymnasium.Env, info: dict[str, Any]) -> None:
    obs, reward, terminated, truncated, info = env.step(_click(info, "goal"))
    assert reward == 1.0 and terminated and "error" not in info


# ------------------------------------------------------------------------------------ storms
def _storm(env: gymnasium.Env, button: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Reset, click ``button``; the step must end within its limit with the episode going on
    (storms used to run into the hang guard, which ended the episode)."""
    obs, info = env.reset(seed=0)
    start = time.monotonic()
    obs, reward, terminated, truncated, info = env.step(_click(info, button))
    assert time.monotonic() - start < env.unwrapped.config.step_timeout_ms / 1000
    assert not terminated and "error" not in info, info.get("error")
    return obs, info


def test_a_dialog_storm_is_dismissed_in_the_page_and_counted(env: gymnasium.Env) -> None:
    obs, info = _storm(env, "alerts")
    assert info["event_counts"]["dialogs"] == 2000 and len(info["dialogs"]) == 500
    assert info["dialogs"][:2] == ["alert: storm 0", "alert: storm 1"]
    assert "dismissed 2000 dialogs (first: alert: storm 0)" in obs["last_action_error"]
    assert _state(env)["after_alerts"] is True  # the loop ran to its end
    obs, reward, terminated, truncated, info = env.step(_click(info, "confirms"))
    assert "dismissed 301 dialogs" in obs["last_action_error"]
    state = _state(env)
    assert state["confirmed"] == 0 and state["prompted"] is None  # answered as dismissed ones are
    _goal_still_works(env, info)


def test_dialogs_of_a_same_origin_frame_are_dismissed_in_the_page(env: gymnasium.Env) -> None:
    obs, info = _storm(env, "frame_alerts")
    assert info["event_counts"]["dialogs"] == 500
    assert "dismissed 500 dialogs (first: alert: frame 0)" in obs["last_action_error"]


def test_a_dialog_before_the_page_leaves_is_still_reported(env: gymnasium.Env) -> None:
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(_click(info, "leave"))
    if "bye" not in obs["last_action_error"]:  # the left document's record may land a moment later
        obs, reward, terminated, truncated, info = env.step("scroll(0, 0)")
    assert info["dialogs"] == ["alert: bye"] and "dismissed dialog (alert: bye)" in obs["last_action_error"]


def test_a_popup_storm_is_capped_closed_and_counted(env: gymnasium.Env) -> None:
    obs, info = _storm(env, "popups")
    assert _state(env)["popups_opened"] == MAX_POPUPS_PER_STEP
    refused = 50 - MAX_POPUPS_PER_STEP
    assert f"refused {refused} window.open call(s) or new-window link(s): more than {MAX_POPUPS_PER_STEP}" in obs["last_action_error"]
    if info["event_counts"]["closed_popups"] < MAX_POPUPS_PER_STEP:  # the last ones may close a moment later
        obs, reward, terminated, truncated, info = env.step("scroll(0, 0)")
    counts = info["event_counts"]
    assert counts["refused_popups"] == refused and counts["closed_popups"] == MAX_POPUPS_PER_STEP
    unwrapped = env.unwrapped
    assert unwrapped._call(lambda: len(unwrapped._session._context.pages)) == 1  # only the task's page
    # The cap is per step: the next step may open pop-ups again.
    obs, reward, terminated, truncated, info = env.step(_click(info, "popups"))
    assert info["event_counts"]["refused_popups"] == 2 * refused
    _goal_still_works(env, info)


def test_a_storm_of_new_window_links_is_capped_too(env: gymnasium.Env) -> None:
    obs, info = _storm(env, "anchors")
    refused = 50 - MAX_POPUPS_PER_STEP
    assert f"refused {refused} window.open call(s)" in obs["last_action_error"]
    assert info["event_counts"]["refused_popups"] == refused
    _goal_still_works(env, info)


def test_deleting_the_wrappers_does_not_bring_the_natives_back(env: gymnasium.Env) -> None:
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(_click(info, "restore"))
    assert _state(env)["natives"] == ["undefined", "undefined", "undefined"]
    obs, reward, terminated, truncated, info = env.step(_click(info, "popups"))  # throws at once
    assert info["event_counts"]["closed_popups"] == 0 and not terminated


def test_a_page_with_its_own_global_open_function_still_loads(env: gymnasium.Env) -> None:
    """A global ``function open()`` replaces the wrapper (the bundled search task has one)."""
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(_click(info, "own_open"))
    if _state(env).get("own") is None:  # the frame's script may run a moment later
        obs, reward, terminated, truncated, info = env.step("scroll(0, 0)")
    assert _state(env)["own"] == "own open(x)" and info["event_counts"]["closed_popups"] == 0


# ------------------------------------------------------------------------- silent attempts
def test_a_tunnel_only_the_proxy_sees_is_reported(env: gymnasium.Env) -> None:
    """A shared worker's requests pass no Playwright routing (measured with Chromium 156); its
    tunnel ends at the proxy, which is now reported in the step that saw it."""
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(_click(info, "shared_worker"))
    errors = [obs["last_action_error"]]
    for _ in range(10):  # the proxy sees the tunnel a moment after the click
        if "CONNECT outside-host.example:443" in info["blocked_requests"]:
            break
        time.sleep(0.2)
        obs, reward, terminated, truncated, info = env.step("scroll(0, 0)")
        errors.append(obs["last_action_error"])
    assert "CONNECT outside-host.example:443" in info["blocked_requests"]
    assert "the proxy refused CONNECT outside-host.example:443" in " ".join(errors)
    assert not any("google" in u for u in info["blocked_requests"])  # the browser's own requests


def test_an_attempt_seen_by_routing_and_the_proxy_is_listed_once(env: gymnasium.Env) -> None:
    """Chromium preconnects to a navigation's host before routing refuses the navigation."""
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(_click(info, "outside"))
    for _ in range(3):
        time.sleep(0.2)
        obs, reward, terminated, truncated, info = env.step("scroll(0, 0)")
    proxy = env.unwrapped._session.proxy
    assert info["blocked_requests"] == ["https://outside-nav.example/"], info["blocked_requests"]
    assert "CONNECT outside-nav.example:443" in proxy.refused  # the proxy did see it


def test_webrtc_is_refused_and_reported_but_feature_tests_pass(env: gymnasium.Env) -> None:
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(_click(info, "rtc_feature"))
    assert _state(env)["feature"] == "function" and obs["last_action_error"] == ""
    obs, reward, terminated, truncated, info = env.step(_click(info, "rtc"))
    assert _state(env)["rtc"] == "NotAllowedError"
    assert "RTCPeerConnection(stun:outside-host.invalid:3478)" in info["blocked_requests"]
    assert "refused RTCPeerConnection(stun:outside-host.invalid:3478)" in obs["last_action_error"]
    _goal_still_works(env, info)


def test_only_the_browsers_own_domains_go_unreported() -> None:
    from envs.config import is_browser_service

    assert is_browser_service("update.googleapis.com") and is_browser_service("Accounts.Google.com")
    assert not is_browser_service("evilgoogle.com") and not is_browser_service("google.com.outside.example")


# ------------------------------------------------------------------------------ dropped envs
DROP = """
import gc, os, sys, time
import gymnasium, envs

def ours():
    table = {}
    for name in os.listdir('/proc'):
        try:
            data = open(f'/proc/{name}/stat', 'rb').read()
        except OSError:
            continue
        fields = data[data.rfind(b')') + 2:].split()
        if name.isdigit() and fields[0] not in (b'Z', b'X'):
            table[int(name)] = int(fields[1])
    found, todo = set(), [os.getpid()]
    while todo:
        parent = todo.pop()
        kids = [p for p, ppid in table.items() if ppid == parent]
        found.update(kids)
        todo.extend(kids)
    return found

env = gymnasium.make(sys.argv[1])
env.reset(seed=0)
if sys.argv[2] == 'step':
    env.step('scroll(0, 10)')
running = len(ours())
del env
gc.collect()
deadline = time.monotonic() + 5
while ours() and time.monotonic() < deadline:
    time.sleep(0.1)
print(running, len(ours()))
"""


@pytest.mark.parametrize("last", ["reset", "step"])
def test_a_dropped_env_ends_its_browser(last: str) -> None:
    """In a fresh process: ``gymnasium.make``, ``reset`` (and a step), then ``del env`` and
    ``gc.collect()`` without ``close()``; no Chromium or driver process may be left."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(DROP), "catp/login-v0", last],
                          cwd=root, capture_output=True, text=True, timeout=90,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr[-2000:]
    running, left = map(int, done.stdout.split())
    assert running >= 3 and left == 0, (running, left)
