"""Registration, configuration and the local server: no browser needed."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import gymnasium
import pytest

import envs
from envs.config import WebEnvConfig
from envs.server import STATIC_DIR, TaskServer
from envs.tasks import BUNDLED_TASKS, make_task, miniwob_task_names

BUNDLED_KINDS = {"login", "menu", "tabs", "search", "form", "cart", "pagination", "settings"}


def test_import_is_cheap_and_isolated() -> None:
    code = (
        "import sys, envs, gymnasium\n"
        "env = gymnasium.make('catp/login-v0')\n"
        "bad = [m for m in ('torch', 'catp_agent', 'playwright') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "env.close()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_ids_are_registered() -> None:
    ids = envs.list_tasks()
    assert envs.ENV_ID_PREFIX == "catp/"
    assert BUNDLED_KINDS <= set(BUNDLED_TASKS)
    for name in BUNDLED_KINDS:
        assert f"catp/{name}-v0" in ids
        assert f"catp/{name}-v0" in gymnasium.registry
    assert all(i.startswith("catp/") for i in ids)
    names = miniwob_task_names()
    if names:  # the miniwob package is installed (pip install --no-deps miniwob==1.1.0)
        assert len(names) == 130
        assert "catp/miniwob.click-test-v0" in ids
        assert len(ids) == len(BUNDLED_TASKS) + 130
    assert gymnasium.registry["catp/login-v0"].entry_point == "envs.web_env:WebEnv"


def test_defaults_of_registered_ids() -> None:
    if not miniwob_task_names():
        pytest.skip("needs the miniwob package")
    bundled = gymnasium.registry["catp/login-v0"].kwargs
    assert bundled["viewport"] == (640, 480) and bundled["max_steps"] == 15
    mini = gymnasium.registry["catp/miniwob.click-test-v0"].kwargs
    assert mini["viewport"] == (160, 210) and mini["device_scale_factor"] == 2.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"viewport": (640,)}, "viewport"),
        ({"viewport": (5, 480)}, "viewport"),
        ({"device_scale_factor": 0.0}, "device_scale_factor"),
        ({"device_scale_factor": float("nan")}, "device_scale_factor"),
        ({"max_steps": 0}, "max_steps"),
        ({"action_timeout_ms": 10}, "action_timeout_ms"),
        ({"executable_path": ""}, "executable_path"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        WebEnvConfig(**kwargs)


def test_config_screenshot_shape() -> None:
    assert WebEnvConfig(viewport=(160, 210), device_scale_factor=2.0).screenshot_shape == (420, 320, 3)
    assert WebEnvConfig().screenshot_shape == (480, 640, 3)


def test_unknown_task_names_are_explained() -> None:
    with pytest.raises(KeyError, match="unknown task"):
        make_task("no-such-task")
    with pytest.raises(KeyError, match="no MiniWoB task"):
        make_task("miniwob.no-such-task")


def test_missing_browser_says_how_to_install(tmp_path: Path) -> None:
    env = gymnasium.make("catp/login-v0", executable_path=str(tmp_path / "nothing"))
    try:
        with pytest.raises(FileNotFoundError, match="apt-get install -y chromium"):
            env.reset(seed=0)
    finally:
        env.close()


def test_server_serves_mounts_only(tmp_path: Path) -> None:
    (tmp_path / "a.html").write_text("<p>hi</p>")
    (tmp_path.parent / "secret.txt").write_text("no")
    server = TaskServer({"/tasks/t/": tmp_path, "/static/": STATIC_DIR})
    try:
        base = server.base_url
        assert urllib.request.urlopen(f"{base}/tasks/t/a.html").read() == b"<p>hi</p>"
        server.put_episode_file("spec.js", "window.__CATP_SPEC__ = {};")
        assert b"__CATP_SPEC__" in urllib.request.urlopen(f"{base}/episode/spec.js").read()
        for bad in ("/tasks/t/../secret.txt", "/tasks/t/%2e%2e/secret.txt", "/other/a.html"):
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(base + bad)
        assert server.allows(f"{base}/tasks/t/a.html")
        assert server.allows(f"{base}/static/catp.js")
        assert not server.allows(f"{base}/tasks/other/a.html")
        assert not server.allows(f"http://127.0.0.1:{server.port + 1}/tasks/t/a.html")
        assert not server.allows(f"http://localhost:{server.port}/tasks/t/a.html")
        assert not server.allows("https://example.com/tasks/t/a.html")
    finally:
        server.stop()
        server.stop()
