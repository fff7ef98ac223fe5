"""The same MiniWoB++ tasks and seeds in our env and in BrowserGym's, with the same scripted
policy, in one run: success, reset time and step time (docs/benchmarks_envs.md).

The policy (:class:`catp_agent.harness.browsergym.scripted.LabelClickPolicy`) clicks the centre
of the element whose text is the instruction's quoted label (the first button when nothing is
quoted), read from each env's own element boxes (ours: ``info["elements"]``; BrowserGym: its
AXTree and ``extra_element_properties``), and says ``done()`` when it finds none. Tasks it fits:
click-button and click-test (not click-link: BrowserGym's AXTree gives MiniWoB's
link spans no box). Episodes alternate, seed by seed, between the two envs, so
that drift in the machine's load hits both alike. Seed s is the same task instance in both.

* ours: ``catp/miniwob.<task>-v0``, its defaults (160x210 CSS px at scale 2: 320x420 screens),
  one browser for the whole run, a fresh context per episode;
* BrowserGym: ``browsergym/miniwob.<task>``, its defaults (332x214 at scale 1.5: 498x321
  screens), a new Chromium (and its chat window) at every reset, the ``coord`` action set. Its
  MiniWoB++ tasks slow every action down on purpose (Playwright ``slow_mo`` 100 ms) and wait
  0.5 s before each observation; ``--browsergym-delays off`` (the default) sets both to 0 so that
  the two envs' machinery is compared, ``on`` keeps them.

Needs BrowserGym (the [browsergym] extra) and the MiniWoB++ pages. CI's compat environment has
both (``bash scripts/ci_compat.sh`` makes .venv-compat):

    .venv-compat/bin/python scripts/bench_browsergym.py --tasks click-button,click-test --seeds 0-9
    .venv-compat/bin/python scripts/bench_browsergym.py --seeds 0-4 --browsergym-delays on --json bench.json
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import statistics
import sys
import time
from typing import Any

import gymnasium

from catp_agent.harness.browsergym import coord_action_set, use_system_chromium
from catp_agent.harness.browsergym.mapping import Pointer, to_coord
from catp_agent.harness.browsergym.scripted import LabelClickPolicy, browsergym_elements
from catp_agent.harness.browsergym.support import DEFAULT_CHROMIUM, browsergym_env_kwargs
from catp_agent.harness.evaluation.grid import parse_seeds
from envs.actions import parse_action

MAX_STEPS = 3


def _ours(task: str) -> Any:
    import envs  # noqa: F401 - registers catp/miniwob.*

    return gymnasium.make(f"catp/miniwob.{task}-v0")


def _browsergym(task: str, delays: bool) -> Any:
    task_id = f"browsergym/miniwob.{task}"
    kwargs = browsergym_env_kwargs(task_id, executable_path=DEFAULT_CHROMIUM)
    if not delays:
        kwargs.update(slow_mo=0, pre_observation_delay=0.0)
    return gymnasium.make(task_id, action_mapping=coord_action_set().to_python_code, **kwargs)


def _episode_ours(env: Any, seed: int, policy: LabelClickPolicy) -> dict[str, Any]:
    t0 = time.perf_counter()
    obs, info = env.reset(seed=seed)
    reset_s, steps = time.perf_counter() - t0, []
    for _ in range(MAX_STEPS):
        action = policy.act(obs, info)
        if action == "done()":
            break
        t0 = time.perf_counter()
        obs, _, terminated, truncated, info = env.step(action)
        steps.append(time.perf_counter() - t0)
        if terminated or truncated:
            break
    return {"success": bool(info.get("success")), "reset_s": reset_s, "step_s": steps,
            "screen": list(obs["screenshot"].shape[1::-1])}


def _episode_browsergym(env: Any, seed: int, policy: LabelClickPolicy) -> dict[str, Any]:
    t0 = time.perf_counter()
    obs, _ = env.reset(seed=seed)
    reset_s, steps, success, pointer = time.perf_counter() - t0, [], False, Pointer()
    for _ in range(MAX_STEPS):
        action = policy.choose(obs["goal_object"][0]["text"], browsergym_elements(obs))
        coord = to_coord(parse_action(action), pointer, obs["screenshot"])
        if coord is None:
            break
        t0 = time.perf_counter()
        obs, reward, terminated, truncated, _ = env.step(coord)
        steps.append(time.perf_counter() - t0)
        if terminated or truncated:
            success = bool(terminated and reward > 0)
            break
    return {"success": success, "reset_s": reset_s, "step_s": steps, "screen": list(obs["screenshot"].shape[1::-1])}


def _row(env_name: str, task: str, episodes: list[dict[str, Any]]) -> dict[str, Any]:
    steps = [s for e in episodes for s in e["step_s"]]
    return {"env": env_name, "task": task, "episodes": len(episodes),
            "solved": sum(e["success"] for e in episodes),
            "screen": "x".join(map(str, episodes[0]["screen"])),
            "reset_ms_median": 1e3 * statistics.median(e["reset_s"] for e in episodes),
            "step_ms_median": 1e3 * statistics.median(steps) if steps else None, "steps": len(steps)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="click-button,click-test", help="MiniWoB++ task names (default: %(default)s)")
    parser.add_argument("--seeds", default="0-9", help="episode seeds, e.g. 0-9 (default: %(default)s)")
    parser.add_argument("--browsergym-delays", choices=("off", "on"), default="off",
                        help="BrowserGym's slow_mo (100 ms) and pre-observation delay (0.5 s): off or its defaults")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the rows and every episode as JSON")
    args = parser.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    use_system_chromium(DEFAULT_CHROMIUM)
    policy = LabelClickPolicy()
    rows, raw = [], {}
    for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        ours, theirs = _ours(task), _browsergym(task, args.browsergym_delays == "on")
        try:
            _episode_ours(ours, seeds[0], policy)  # the first reset launches our browser: not timed
            runs: dict[str, list[dict[str, Any]]] = {"ours": [], "browsergym": []}
            for seed in seeds:
                runs["ours"].append(_episode_ours(ours, seed, policy))
                runs["browsergym"].append(_episode_browsergym(theirs, seed, policy))
        finally:
            ours.close()
            theirs.close()
        rows += [_row(name, task, episodes) for name, episodes in runs.items()]
        raw[task] = runs
    meta = {"python": platform.python_version(), "playwright": importlib.metadata.version("playwright"),
            "browsergym_core": importlib.metadata.version("browsergym-core"), "seeds": list(seeds),
            "browsergym_delays": args.browsergym_delays, "argv": sys.argv[1:]}
    print(f"playwright {meta['playwright']}, browsergym-core {meta['browsergym_core']}, seeds {args.seeds}, "
          f"BrowserGym delays {args.browsergym_delays}\n")
    print("| task | env | screenshot | solved | reset median ms | step median ms |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        step = "-" if r["step_ms_median"] is None else f"{r['step_ms_median']:.0f}"
        print(f"| {r['task']} | {r['env']} | {r['screen']} | {r['solved']}/{r['episodes']} | "
              f"{r['reset_ms_median']:.0f} | {step} |")
    for task in raw:
        ours_row, bg_row = (next(r for r in rows if r["task"] == task and r["env"] == e) for e in ("ours", "browsergym"))
        ratio = (f"{ours_row['step_ms_median'] / bg_row['step_ms_median']:.2f}x"
                 if ours_row["step_ms_median"] and bg_row["step_ms_median"] else "-")
        print(f"\n{task}: ours / BrowserGym: reset {ours_row['reset_ms_median'] / bg_row['reset_ms_median']:.2f}x, "
              f"step {ratio}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows, "episodes": raw}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
