"""The element list looks only at what reaches the viewport (issue 30), and still finds what
is visible there: checked against a brute-force reference that tests every element of the page.

The page has the cases a walk that skips off-screen subtrees could miss: a long flat list (entered
by binary search), a button in a zero-height wrapper, a fixed-position button whose container
has scrolled out of view, and a button that comes after more on-screen elements than the walk
may visit (the last two are found by the elementFromPoint grid).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import gymnasium
import pytest
from conftest import register_probe_page

from envs.elements import MAX_VISITS

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

DUST = MAX_VISITS + 1000
PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8">
<script src="/episode/spec.js"></script><script src="/static/catp.js"></script>
<style>body { margin: 0; } #list button { display: block; height: 20px; width: 200px; }</style></head>
<body><div id="zero" style="height: 0"><button id="in-zero">in a zero-height box</button></div>
<div id="top" style="height: 100px"><button id="fixed" style="position: fixed; right: 10px; bottom: 10px;
  width: 120px; height: 40px">fixed</button></div>
<div id="list"></div><div id="dust" style="line-height: 0"></div><script>
const list = document.getElementById('list');
list.innerHTML = Array.from({length: 3000}, (_, i) => '<button id="b' + i + '">item ' + i + '</button>').join('');
document.getElementById('dust').innerHTML = '<i style="display: inline-block; width: 1px; height: 1px"></i>'
  .repeat(__DUST__) + '<button id="last" style="width: 200px; height: 200px">last</button>';
</script></body></html>
""".replace("__DUST__", str(DUST))

REFERENCE = """() => Array.from(document.querySelectorAll('button')).filter((el) => {
  const r = el.getBoundingClientRect(), W = innerWidth, H = innerHeight;
  const x0 = Math.max(0, r.left), y0 = Math.max(0, r.top), x1 = Math.min(W, r.right), y1 = Math.min(H, r.bottom);
  if (x1 - x0 < 1 || y1 - y0 < 1) return false;
  const hit = document.elementFromPoint((x0 + x1) / 2, (y0 + y1) / 2);
  return !!hit && (hit === el || el.contains(hit));
}).map((el) => el.id)"""


@pytest.fixture(scope="module")
def env(restored_registries: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[gymnasium.Env]:
    folder: Path = tmp_path_factory.mktemp("walk")
    (folder / "index.html").write_text(PAGE, encoding="utf-8")

    with gymnasium.make(register_probe_page("walk", folder)) as env:
        yield env


def _listed_and_visible(env: gymnasium.Env, info: dict[str, Any]) -> tuple[set[str], set[str]]:
    unwrapped = env.unwrapped
    visible = unwrapped._call(lambda: unwrapped._session.page.evaluate(REFERENCE))
    return {e["id"] for e in info["elements"] if e["tag"] == "button"}, set(visible)


def test_the_walk_lists_every_visible_button_and_no_other(env: gymnasium.Env) -> None:
    obs, info = env.reset(seed=0)
    listed, visible = _listed_and_visible(env, info)
    assert {"in-zero", "fixed", "b0"} <= visible and listed == visible
    # Deep in the flat list: its container and the fixed button's container are far above.
    obs, reward, terminated, truncated, info = env.step("scroll(0, 30000)")
    listed, visible = _listed_and_visible(env, info)
    assert "fixed" in visible and any(i.startswith("b") for i in visible) and listed == visible
    # The end of the page: a button after more on-screen elements than the walk may visit.
    obs, reward, terminated, truncated, info = env.step("scroll(0, 100000)")
    listed, visible = _listed_and_visible(env, info)
    assert "last" in visible and listed == visible
