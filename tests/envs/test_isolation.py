"""Every episode starts clean (issue 30): whatever a page stored in one episode is unreadable in
the next, and in another env.

Each test writes every kind of state a page can keep (cookies, local and session storage,
IndexedDB, the Cache API, a service worker, ``window.name``, history entries, a permission the
context granted), reads it back in the same episode (so the probe itself works), then resets
and reads it again from the new episode's page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import gymnasium
import pytest
from conftest import register_probe_page


pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8">
<script src="/episode/spec.js"></script><script src="/static/catp.js"></script></head>
<body><p>state probe</p><script>
window.writeAll = async () => {
  document.cookie = 'catp_cookie=1; max-age=3600; path=/';
  localStorage.setItem('catp', '1');
  sessionStorage.setItem('catp', '1');
  window.name = 'catp-window-name';
  history.pushState({n: 1}, '', '?pushed=1');
  history.pushState({n: 2}, '', '?pushed=2');
  await new Promise((ok, fail) => {
    const open = indexedDB.open('catp-db', 1);
    open.onupgradeneeded = () => open.result.createObjectStore('s');
    open.onsuccess = () => { const tx = open.result.transaction('s', 'readwrite');
      tx.objectStore('s').put('1', 'k'); tx.oncomplete = () => { open.result.close(); ok(); }; tx.onerror = fail; };
    open.onerror = fail;
  });
  const cache = await caches.open('catp-cache');
  await cache.put('/catp-cached', new Response('1'));
  let worker = 'refused';
  try { await navigator.serviceWorker.register('/tasks/isolation/sw.js'); worker = 'registered'; } catch (e) {}
  return worker;
};
window.readAll = async () => {
  const dbs = (await indexedDB.databases()).map(d => d.name);
  const geo = (await navigator.permissions.query({name: 'geolocation'})).state;
  const workers = navigator.serviceWorker ? (await navigator.serviceWorker.getRegistrations()).length : 0;
  return {cookie: document.cookie.includes('catp_cookie'), local: localStorage.getItem('catp'),
          session: sessionStorage.getItem('catp'), idb: dbs.includes('catp-db'),
          cache: await caches.has('catp-cache'), name: window.name, history: history.length,
          geolocation: geo, workers: workers};
};
</script></body></html>
"""
CLEAN = {"cookie": False, "local": None, "session": None, "idb": False, "cache": False, "name": "",
         "geolocation": "prompt", "workers": 0}


@pytest.fixture(scope="module")
def task_id(restored_registries: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder: Path = tmp_path_factory.mktemp("isolation")
    (folder / "index.html").write_text(PAGE, encoding="utf-8")
    (folder / "sw.js").write_text("self.addEventListener('fetch', () => {});", encoding="utf-8")

    yield register_probe_page("isolation", folder, max_steps=5)


def _page(env: gymnasium.Env, script: str) -> Any:
    unwrapped = env.unwrapped
    return unwrapped._call(lambda: unwrapped._session.page.evaluate(script))


def _write_everything(env: gymnasium.Env) -> dict[str, Any]:
    """Write every kind of state in the current episode; return what the page reads back."""
    unwrapped = env.unwrapped
    unwrapped._call(lambda: unwrapped._session._context.grant_permissions(["geolocation"]))
    assert _page(env, "() => writeAll()") in ("refused", "registered")
    return _page(env, "() => readAll()")


def test_nothing_an_episode_stored_is_readable_in_the_next(task_id: str) -> None:
    with gymnasium.make(task_id) as env:
        env.reset(seed=0)
        clean_history = _page(env, "() => history.length")
        written = _write_everything(env)
        # The probe works: in the same episode everything is there.
        assert written["cookie"] and written["local"] == "1" and written["session"] == "1"
        assert written["idb"] and written["cache"] and written["name"] == "catp-window-name"
        assert written["history"] == clean_history + 2 and written["geolocation"] == "granted"
        for seed in (0, 1):  # the same seed, and another one
            obs, info = env.reset(seed=seed)
            assert "error" not in info, info.get("error")
            after = _page(env, "() => readAll()")
            assert after == {**CLEAN, "history": clean_history}, after


def test_a_second_env_sees_nothing_of_the_first(task_id: str) -> None:
    with gymnasium.make(task_id) as first, gymnasium.make(task_id) as second:
        first.reset(seed=0)
        second.reset(seed=0)
        clean_history = _page(second, "() => history.length")
        assert _write_everything(first)["local"] == "1"
        assert _page(second, "() => readAll()") == {**CLEAN, "history": clean_history}
        second.reset(seed=0)
        assert _page(second, "() => readAll()") == {**CLEAN, "history": clean_history}
