"""Expert demonstrations for behaviour cloning: the bundled tasks' DOM oracles, run in Chromium.

One episode is one ``.npz`` file in the demo folder: the screenshots the agent saw (uint8,
(T, H, W, 3)) and a JSON record (task, seed, instruction, per-step action and the error shown
with that screen). Only successful episodes are kept, so every stored action was executed and
the sequence solved the task. Click coordinates are rounded to a multiple of ``round_to``
(default 10 px, half to even) before they are executed: the model then never has to guess a last digit, and
the rounded click is what actually solved the episode. The visible interactive elements of
every screen (text, role and box, from the environment's ``info["elements"]``) are stored with
it: grounding practice (:class:`catp_agent.harness.training.data.GroundSet`) is made from them.

Collection resumes: an episode whose file exists is skipped, and each file is written to a
temporary name and renamed, so a crash never leaves a half-written demo.

A demo may also carry ``labels``: the action to *train* on at each step, where it differs from
the action that was executed. DAgger rounds (:mod:`catp_agent.harness.training.dagger`) store the
model's executed actions (what the history shows at inference) and the oracle's action from the
same screen as the label. Demos without labels (every oracle demo) train on their actions.
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

__all__ = ["Demo", "collect_demos", "demo_path", "load_demo", "load_demos", "load_meta", "round_action", "visible_elements"]


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
    labels: list[str] | None = None  # per step: the action to train on (None: the executed ``actions``)

    def __post_init__(self) -> None:
        if self.labels is not None and len(self.labels) != len(self.actions):
            raise ValueError(f"a demo needs one label per action, got {len(self.labels)} labels for {len(self.actions)} actions")

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def targets(self) -> list[str]:
        """The action to train on at each step: ``labels`` when the demo has them, else ``actions``."""
        return self.actions if self.labels is None else self.labels


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


class _RoundedOracle:
    """The ``oracle`` policy with its clicks rounded by :func:`round_action` before the env
    executes them, so the rounded click is the one that solved the episode.

    ``last_elements`` holds the visible elements of the screen it last acted on (text, role,
    box), for the demo's ``elements``.
    """

    name = "oracle-rounded"

    def __init__(self, env: Any, round_to: int = 10) -> None:
        from policies import make_policy

        self.oracle = make_policy("oracle", env=env)
        self.round_to = round_to
        self.last_elements: list[dict] = []

    def reset(self) -> None:
        self.oracle.reset()
        self.last_elements = []

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> str:
        action = round_action(self.oracle.act(obs, info), self.round_to)
        self.last_elements = visible_elements(info)
        return action


def visible_elements(info: dict[str, Any]) -> list[dict]:
    """The screen's visible elements as demos store them: ``{"text", "role", "bbox": [x, y, w, h]}``."""
    return [{"text": str(e.get("text", "")), "role": str(e.get("role", "")),
             "bbox": [int(v) for v in e["bbox"]]} for e in info.get("elements", [])]


def _record_episode(env: Any, task: str, seed: int, round_to: int) -> tuple[Demo | None, str | None]:
    """(the demo, or None when the oracle did not solve the episode; the episode's error or None).

    The shared loop :func:`~catp_agent.harness.evaluation.episode.run_episode` plays it; an
    exception from the env or the oracle ends the episode and comes back as the error.
    """
    from catp_agent.harness.evaluation.episode import run_episode

    frames: list[np.ndarray] = []
    actions: list[str] = []
    errors: list[str] = []
    elements: list[list[dict]] = []
    seen = {"instruction": ""}
    policy = _RoundedOracle(env, round_to)

    def on_step(step: int, obs: dict[str, Any], record: dict[str, Any], report: Any) -> None:
        seen["instruction"] = str(obs["instruction"])
        frames.append(np.asarray(obs["screenshot"], dtype=np.uint8))
        actions.append(record["action"])
        errors.append(str(obs.get("last_action_error", "")))
        elements.append(policy.last_elements)

    outcome = run_episode(env, policy, seed, on_step=on_step).record
    if not outcome["success"]:
        return None, outcome["error"]
    return Demo(task, seed, seen["instruction"], np.stack(frames), actions, errors, elements), outcome["error"]


def _save(demo: Demo, path: Path, extra: dict | None = None) -> None:
    """Write ``demo`` to ``path`` (atomically); ``extra`` adds keys to its JSON record (``load_demo``
    ignores them; e.g. a DAgger episode's outcome)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"task": demo.task, "seed": demo.seed, "instruction": demo.instruction,
            "actions": demo.actions, "errors": demo.errors, "elements": demo.elements}
    if demo.labels is not None:
        meta["labels"] = demo.labels
    meta.update(extra or {})
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, frames=demo.frames, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    os.replace(tmp, path)


def load_demo(path: Path) -> Demo:
    with np.load(path) as data:
        meta = json.loads(bytes(data["meta"]).decode())
        return Demo(meta["task"], int(meta["seed"]), meta["instruction"], data["frames"], meta["actions"], meta["errors"],
                    meta.get("elements"), meta.get("labels"))


def load_meta(path: Path) -> dict:
    """The JSON record of the demo at ``path``, without reading its frames."""
    with np.load(path) as data:
        return json.loads(bytes(data["meta"]).decode())


def _worker(args: tuple[str, list[int], str, int, tuple[int, int] | None, Any]) -> tuple[str, int, int, list[str]]:
    """Record ``seeds`` of ``task``; (task, kept, failed, errors). An episode that ends in an
    error (it raised, or the env reported a browser that died or a page that timed out) counts as
    failed, its error is kept (the first few), and the next episode gets a fresh browser."""
    task, seeds, root, round_to, viewport, queue = args
    from catp_agent.harness.evaluation.episode import make_env

    env = None
    kept = failed = 0
    errors: list[str] = []
    try:
        for seed in seeds:
            path = demo_path(Path(root), task, seed)
            if path.exists():
                kept += 1
            else:
                if env is None:
                    env = make_env(task, viewport=viewport)
                demo, error = _record_episode(env, task, seed, round_to)
                if error is not None:  # one bad episode must not end the collection
                    if len(errors) < MAX_ERRORS_KEPT:
                        errors.append(f"{task} seed {seed}: {error}".strip()[:500])
                    _close_quietly(env)
                    env = None
                if demo is None:
                    failed += 1
                else:
                    _save(demo, path)
                    kept += 1
            if queue is not None:
                queue.put(1)
    finally:
        if env is not None:
            _close_quietly(env)
    return task, kept, failed, errors


MAX_ERRORS_KEPT = 3
"""Per worker: how many episode errors the collection report repeats."""


def _close_quietly(env: Any) -> None:
    try:
        env.close()
    except Exception:  # noqa: BLE001 - the browser may already be gone
        pass


def collect_demos(root: str | Path, tasks: Sequence[str], seeds: Iterable[int], *, round_to: int = 10,
                  viewport: tuple[int, int] | None = None, workers: int = 1, progress: bool = True) -> dict[str, dict]:
    """Run the oracle on every (task, seed) not yet in ``root``; {task: {"kept", "failed", "errors"}}.

    ``workers`` processes, each with its own browser, split the work by task and seed range.
    Episodes the oracle did not solve and episodes that raised count as failed; "errors" repeats
    the first few exceptions. A worker process that dies stops the collection with a RuntimeError
    (what was saved stays: the next call resumes).
    """
    seeds = list(seeds)
    if not tasks or not seeds:
        raise ValueError(f"collect_demos needs tasks and seeds, got {len(tasks)} tasks and {len(seeds)} seeds")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    import gymnasium

    import envs  # noqa: F401 - registers the catp/... ids

    unknown = [t for t in tasks if t not in gymnasium.registry]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; `catp-agent tasks` lists the registered ids")
    chunks = max(1, (workers + len(tasks) - 1) // len(tasks))
    jobs = [(t, seeds[i::chunks], str(root), round_to, viewport) for t in tasks for i in range(chunks)]
    total = len(tasks) * len(seeds)
    from tqdm import tqdm

    bar = tqdm(total=total, desc="demos", unit="ep", disable=not progress)
    report: dict[str, dict] = {t: {"kept": 0, "failed": 0, "errors": []} for t in tasks}

    def add(result: tuple[str, int, int, list[str]]) -> None:
        task, kept, failed, errors = result
        report[task]["kept"] += kept
        report[task]["failed"] += failed
        report[task]["errors"] += errors

    run_jobs(jobs, workers, bar, add)
    return report


def run_jobs(jobs: list[tuple], workers: int, bar: Any, add: Any, worker: Any = None) -> None:
    """Run ``worker`` (default :func:`_worker`) on every job, in this process when ``workers`` is 1,
    else in :func:`_collect_in_processes`; ``add`` gets each result; ``bar`` is closed at the end."""
    worker = worker or _worker
    try:
        if workers == 1:
            for job in jobs:
                add(worker((*job, None)))
                bar.update(len(job[1]))
        else:
            _collect_in_processes(jobs, workers, bar, add, worker=worker)
    finally:
        bar.close()


def _collect_in_processes(jobs: list[tuple], workers: int, bar: Any, add: Any, worker: Any = None) -> None:
    """Run ``worker((*job, progress_queue))`` (default :func:`_worker`) for every job in ``workers``
    spawned processes; ``add`` gets each result."""
    from concurrent.futures import ProcessPoolExecutor

    worker = worker or _worker
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        progress = manager.Queue()
        pending = {pool.submit(worker, (*job, progress)) for job in jobs}
        try:
            _wait_for_workers(pending, progress, bar, add)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)  # chunks not started yet are dropped; running ones finish
            raise


def _wait_for_workers(pending: set, progress: Any, bar: Any, add: Any) -> None:
    """Tick ``bar`` per episode until every future is done; a failed worker raises as soon as the progress queue goes quiet."""
    import queue as queue_mod
    from concurrent.futures.process import BrokenProcessPool

    while pending:
        try:
            progress.get(timeout=0.5)
            bar.update(1)
            continue
        except queue_mod.Empty:
            pass
        for future in [f for f in pending if f.done()]:
            pending.discard(future)
            try:
                add(future.result())
            except BrokenProcessPool as exc:
                raise RuntimeError("a demo-collection worker process died (out of memory or killed?); the demos "
                                   "saved so far are kept and the next run resumes from them") from exc
            except Exception as exc:
                raise RuntimeError(f"a demo-collection worker failed: {type(exc).__name__}: {exc}; the demos saved "
                                   "so far are kept and the next run resumes from them") from exc
    while True:  # the last few progress ticks
        try:
            progress.get_nowait()
            bar.update(1)
        except queue_mod.Empty:
            break


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
