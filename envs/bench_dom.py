"""Step cost against page size: one step on pages of 1k to 200k DOM nodes, as ratios to the
smallest page, measured in one run (issue 30).

Each page is a feed of cards (an ``article`` with a heading, a link, a paragraph, two buttons
and a text field: 10 elements a card) laid out as one long flat list, the hardest case for a
walk that skips what lies outside the viewport: every card is a sibling of every other. The
step is ``scroll(0, 300)`` then ``scroll(0, -300)`` alternately (action, settle, screenshot,
element list, success check). One env per size, all open at once, stepped in turn, so that a
change in the machine's load touches every size alike.

Run it with ``python -m envs bench-dom`` (``--json`` for machine-readable output).
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from envs.tasks import PageTask, register_task

__all__ = ["DEFAULT_SIZES", "DomSizeTask", "bench_dom", "format_dom_table"]

DEFAULT_SIZES = (1_000, 10_000, 50_000, 100_000, 200_000)

PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8">
<script src="/episode/spec.js"></script><script src="/static/catp.js"></script>
<style>article { border: 1px solid #ccc; margin: 4px; padding: 4px; } h3 { margin: 0; font-size: 14px; }
p { margin: 2px 0; font-size: 12px; }</style></head>
<body><main id="feed"></main><script>
const cards = Math.max(1, Math.round((CATP.spec.nodes - 6) / 10));
const feed = document.getElementById('feed');
const html = [];
for (let i = 0; i < cards; i++) {
  html.push('<article><header><h3>Card ' + i + '</h3><a href="#c' + i + '">open ' + i + '</a></header>'
    + '<p>Some text of card ' + i + ' <span>with a span</span></p><div>'
    + '<button id="like' + i + '">Like</button><button>Share</button><input placeholder="reply ' + i + '"></div></article>');
}
feed.innerHTML = html.join('');
CATP.state.nodes = document.getElementsByTagName('*').length;
</script></body></html>
"""


class DomSizeTask(PageTask):
    """A page of about ``nodes`` elements (``task_options={"nodes": n}``); nothing to solve."""

    name = "dom-size"
    env_defaults = {"viewport": (640, 480), "max_steps": 10_000}

    def __init__(self, nodes: int = 1_000) -> None:
        super().__init__()
        if not isinstance(nodes, int) or not 16 <= nodes <= 2_000_000:
            raise ValueError(f"nodes must be an int in [16, 2000000], got {nodes!r}")
        self.nodes = nodes
        folder = Path(tempfile.mkdtemp(prefix="catp-dom-size-"))
        (folder / "index.html").write_text(PAGE, encoding="utf-8")
        self.pages_dir = folder

    def generate(self, rng: random.Random) -> dict[str, Any]:
        return {"nodes": self.nodes}

    def instruction(self, spec: dict[str, Any]) -> str:
        return "Nothing to do: this page measures step cost."

    def is_success(self, state: dict[str, Any], spec: dict[str, Any]) -> bool:
        return False


def bench_dom(sizes: tuple[int, ...] = DEFAULT_SIZES, steps: int = 20, rounds: int = 3) -> dict[str, Any]:
    """Median step and reset milliseconds per page size, and their ratios to the first size.

    ``rounds`` times, every env takes ``steps`` steps in turn (and one reset each round).
    """
    from envs.web_env import WebEnv

    register_task(DomSizeTask)
    load_before = os.getloadavg()
    # Generous reset limits: building a page of 200k nodes alone takes seconds; steps keep theirs.
    made = [WebEnv("dom-size", max_steps=steps * rounds + 10, task_options={"nodes": n},
                   reset_timeout_ms=120_000, navigation_timeout_ms=110_000) for n in sizes]
    step_ms: dict[int, list[float]] = {n: [] for n in sizes}
    reset_ms: dict[int, list[float]] = {n: [] for n in sizes}
    real_nodes: dict[int, int] = {}
    failed: dict[int, list[str]] = {n: [] for n in sizes}  # steps that ended their episode (the old code's fate)
    try:
        for env, n in zip(made, sizes):
            env.reset(seed=0)  # launches Chromium; not timed
        for _ in range(rounds):
            for env, n in zip(made, sizes):
                t = time.perf_counter()
                obs, info = env.reset(seed=0)
                reset_ms[n].append((time.perf_counter() - t) * 1000)
                if "error" in info:
                    raise RuntimeError(f"reset failed on the page of {n} nodes: {info['error']}")
                real_nodes[n] = env._call(lambda e=env: e._session.page.evaluate("() => CATP.state.nodes"))
                for i in range(steps):
                    t = time.perf_counter()
                    obs, reward, terminated, truncated, info = env.step(f"scroll(0, {300 if i % 2 == 0 else -300})")
                    step_ms[n].append((time.perf_counter() - t) * 1000)
                    if terminated or truncated:  # e.g. a step past its limit: counted, and the page reloaded
                        failed[n].append(str(info.get("error", "truncated")))
                        env.reset(seed=0)
    finally:
        for env in made:
            env.close()
    base_step = statistics.median(step_ms[sizes[0]])
    base_reset = statistics.median(reset_ms[sizes[0]])
    rows = []
    for n in sizes:
        step, reset = statistics.median(step_ms[n]), statistics.median(reset_ms[n])  # failed steps included
        rows.append({"nodes": n, "dom_nodes": real_nodes.get(n), "step_median_ms": round(step, 1),
                     "step_ratio": round(step / base_step, 2), "reset_median_ms": round(reset, 1),
                     "reset_ratio": round(reset / base_reset, 2), "failed_steps": len(failed[n]),
                     "first_failure": failed[n][0] if failed[n] else None})
    machine = {"python": platform.python_version(), "cpus": os.cpu_count(),
               "load_average_before": [round(v, 2) for v in load_before],
               "load_average_after": [round(v, 2) for v in os.getloadavg()]}
    return {"steps": steps, "rounds": rounds, "machine": machine, "results": rows}


def format_dom_table(report: dict[str, Any]) -> str:
    """A Markdown table of :func:`bench_dom`'s results."""
    lines = ["| nodes (asked / in the DOM) | step median ms | step / smallest | reset median ms | reset / smallest "
             "| steps that ended the episode |", "|---|---|---|---|---|---|"]
    for r in report["results"]:
        lines.append(f"| {r['nodes']:,} / {r['dom_nodes']:,} | {r['step_median_ms']} | {r['step_ratio']}x | "
                     f"{r['reset_median_ms']} | {r['reset_ratio']}x | {r['failed_steps']} |")
    m = report["machine"]
    lines.append(f"\n{report['rounds']} rounds x {report['steps']} steps per size; {m['cpus']} CPUs; load average "
                 f"(1/5/15 min) {m['load_average_before']} before, {m['load_average_after']} after")
    return "\n".join(lines)
