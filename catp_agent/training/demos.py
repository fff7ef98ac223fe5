"""Expert demonstrations for behaviour cloning: the bundled tasks' DOM oracles, run in Chromium.

One episode is one ``.npz`` file in the demo folder: the screenshots the agent saw (uint8,
(T, H, W, 3)) and a JSON record (task, seed, instruction, per-step action and the error shown
with that screen). Only successful episodes are kept, so every stored action was executed and
the sequence solved the task. Click coordinates are rounded to a multiple of ``round_to``
(default 10 px, half to even) before they are executed: the model then never has to guess a last digit, and
the rounded click is what actually solved the episode. The visible interactive elements of
every screen (text, role and box, from the environment's ``info["elements"]``) are stored with
it: grounding practice (:class:`catp_agent.training.data.GroundSet`) is made from them.

Collection resumes: an episode whose file exists is skipped, and each file is written to a
temporary name and renamed, so a crash never leaves a half-written demo.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Demo", "collect_demos", "demo_path", "load_demos", "round_action"]


@dataclass
class Demo:
    """One solved episode: ``frames[t]`` is the screen on which ``actions[t]`` was taken."""

    task: str
    seed: int
    instruction: str
    frames: np.ndarray  # (T, H, W, 3) uint8
    actions: list[str]
    errors: list[str]  # last_action_error shown with frames[t] ("" when none)
    elements: list[list[dict]] | None = None  # per frame: {"text", "role", "bbox": [x, y, w, h]}; None in old demos

    def __len__(self) -> int:
        return len(self.actions)


def round_action(action: str, round_to: int = 10) -> str:
    """``click(x, y)`` with x and y rounded to a multiple of ``round_to``; other actions as is.

    >>> round_action("click(295, 111)")
    'click(300, 110)'
    >>> round_action('type("a")')
    'type("a")'
    """
    if round_to < 1:
        raise ValueError(f"round_to must be >= 1 px, got {round_to}")
    from envs.actions import Action, format_action, parse_action

    parsed = parse_action(action)
    if parsed.name not in ("click", "double_click"):
        return action
    x, y = (int(round(float(v) / round_to)) * round_to for v in parsed.args)
    return format_action(Action(parsed.name, (x, y)))


def demo_path(root: Path, task: str, seed: int) -> Path:
    return Path(root) / task.replace("/", "_") / f"seed{seed:06d}.npz"


def _record_episode(env: Any, task: str, seed: int, round_to: int) -> Demo | None:
    obs, info = env.reset(seed=seed)
    frames, actions, errors, elements = [], [], [], []
    while True:
        action = env.unwrapped.oracle_action(obs, info)
        if action is None:
            return None
        action = round_action(action, round_to)
        frames.append(np.asarray(obs["screenshot"], dtype=np.uint8))
        actions.append(action)
        errors.append(str(obs.get("last_action_error", "")))
        elements.append([{"text": str(e.get("text", "")), "role": str(e.get("role", "")), "bbox": [int(v) for v in e["bbox"]]}
                         for e in info.get("elements", [])])
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    if not info.get("success"):
        return None
    return Demo(task, seed, str(obs["instruction"]), np.stack(frames), actions, errors, elements)


def _save(demo: Demo, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"task": demo.task, "seed": demo.seed, "instruction": demo.instruction,
            "actions": demo.actions, "errors": demo.errors, "elements": demo.elements}
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, frames=demo.frames, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    os.replace(tmp, path)


def load_demo(path: Path) -> Demo:
    with np.load(path) as data:
        meta = json.loads(bytes(data["meta"]).decode())
        return Demo(meta["task"], int(meta["seed"]), meta["instruction"], data["frames"], meta["actions"], meta["errors"],
                    meta.get("elements"))


def _worker(args: tuple[str, list[int], str, int, tuple[int, int] | None, Any]) -> tuple[str, int, int]:
    task, seeds, root, round_to, viewport, queue = args
    from catp_agent.evaluation.episode import make_env

    env = make_env(task, viewport=viewport)
    kept = failed = 0
    try:
        for seed in seeds:
            path = demo_path(Path(root), task, seed)
            if path.exists():
                kept += 1
            else:
                demo = _record_episode(env, task, seed, round_to)
                if demo is None:
                    failed += 1
                else:
                    _save(demo, path)
                    kept += 1
            if queue is not None:
                queue.put(1)
    finally:
        env.close()
    return task, kept, failed


def collect_demos(root: str | Path, tasks: Sequence[str], seeds: Iterable[int], *, round_to: int = 10,
                  viewport: tuple[int, int] | None = None, workers: int = 1, progress: bool = True) -> dict[str, dict[str, int]]:
    """Run the oracle on every (task, seed) not yet in ``root``; {task: {"kept", "failed"}}.

    ``workers`` processes, each with its own browser, split the work by task and seed range.
    """
    seeds = list(seeds)
    if not tasks or not seeds:
        raise ValueError(f"collect_demos needs tasks and seeds, got {len(tasks)} tasks and {len(seeds)} seeds")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    chunks = max(1, (workers + len(tasks) - 1) // len(tasks))
    jobs = [(t, seeds[i::chunks], str(root), round_to, viewport) for t in tasks for i in range(chunks)]
    total = len(tasks) * len(seeds)
    from tqdm import tqdm

    bar = tqdm(total=total, desc="demos", unit="ep", disable=not progress)
    report: dict[str, dict[str, int]] = {t: {"kept": 0, "failed": 0} for t in tasks}
    if workers == 1:
        for job in jobs:
            task, kept, failed = _worker((*job, None))
            bar.update(len(job[1]))
            report[task]["kept"] += kept
            report[task]["failed"] += failed
    else:
        ctx = mp.get_context("spawn")
        with ctx.Manager() as manager:
            queue = manager.Queue()
            with ctx.Pool(workers) as pool:
                pending = pool.map_async(_worker, [(*job, queue) for job in jobs])
                done = 0
                while done < total:
                    queue.get()
                    done += 1
                    bar.update(1)
                for task, kept, failed in pending.get():
                    report[task]["kept"] += kept
                    report[task]["failed"] += failed
    bar.close()
    return report


def load_demos(root: str | Path, tasks: Sequence[str] | None = None) -> list[Demo]:
    """Every demo under ``root`` (optionally only ``tasks``), in a fixed order (task, seed)."""
    root = Path(root)
    paths = sorted(root.glob("*/seed*.npz"))
    paths = [p for p in paths if not p.name.endswith(".tmp.npz")]
    demos = [load_demo(p) for p in paths]
    if tasks is not None:
        wanted = set(tasks)
        demos = [d for d in demos if d.task in wanted]
    return sorted(demos, key=lambda d: (d.task, d.seed))
