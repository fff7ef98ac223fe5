"""DAgger-style relabelling: the trained model drives, the task's oracle says what was right.

Behaviour cloning on the oracle's own (perfect) episodes never shows the model a screen it
reached by its own mistake, so one wrong step leads to screens unlike any it was trained on and
the errors compound. A DAgger round fixes the data instead of the recipe: the model plays
training seeds, and at every screen it reaches the task's oracle (which acts correctly from any
reachable state, ``tests/envs/test_oracle_recovery.py``) is asked, *before* the model acts, for
the right action from that same screen. Each episode is stored as a :class:`Demo` whose
``actions`` are the ones executed (the model's: that is what the history shows at inference)
and whose ``labels`` are the oracle's actions (clicks rounded by :func:`round_action`, as in
the oracle demos): training on it (``catp-agent train --extra-demos DIR``) teaches the model
to recover from its own states.

With ``beta`` > 0 each step executes the oracle's action instead, with that probability (seeded
per episode), so that the round also reaches states further along the task.

Every episode is kept, solved or not (the labels are what matter), except those that end in an
error (a browser or page failure; the next call retries them) and those with no step. A screen
on which the oracle has no action (a wrong result, order or submission is final on some pages)
has no label: the episode ends there (``done()`` is executed) and that screen is not stored.

The files have the layout of :func:`collect_demos` (``demo_path``; written to a temporary name
and renamed; an existing file is skipped, so a call resumes). Their JSON record also holds a
``dagger`` entry: the model folder, ``beta``, whether the episode succeeded, the model's own
action at every step (executed or not), which steps executed the oracle's action, and whether
the oracle ran out of actions; the report is rebuilt from it for episodes already on disk.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from catp_agent.harness.training.demos import (MAX_ERRORS_KEPT, Demo, _close_quietly, _save, run_jobs,
                                               demo_path, load_meta, round_action, visible_elements)

__all__ = ["EVAL_SEEDS_BELOW", "REPORT_FILE", "check_dagger_args", "collect_dagger"]

EVAL_SEEDS_BELOW = 1000
"""Evaluation uses the seeds below this (as :data:`catp_agent.harness.training.train.EVAL_SEEDS_BELOW`):
a DAgger round never plays them."""
REPORT_FILE = "dagger_report.json"
"""Written into the output folder by :func:`collect_dagger`: its report."""

_STATS = ("episodes", "new", "skipped", "successes", "steps", "agree", "oracle_steps", "no_label", "empty", "failed")


def check_dagger_args(tasks: Sequence[str], seeds: Sequence[int], *, beta: float = 0.0, max_steps: int | None = None,
                      workers: int = 1, history: int = 3) -> None:
    """ValueError naming the first bad value: no tasks or seeds, an unknown task, a seed below
    :data:`EVAL_SEEDS_BELOW`, ``beta`` outside [0, 1], ``max_steps`` or ``workers`` below 1,
    ``history`` below 0."""
    if not tasks or not seeds:
        raise ValueError(f"a DAgger round needs tasks and seeds, got {len(tasks)} tasks and {len(seeds)} seeds")
    low = [s for s in seeds if s < EVAL_SEEDS_BELOW]
    if low:
        raise ValueError(f"seed {low[0]} is an evaluation seed (below {EVAL_SEEDS_BELOW}); a DAgger round trains on "
                         f"what it plays, so use training seeds, e.g. 10000-10049")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta (the chance a step executes the oracle's action) must be in [0, 1], got {beta}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1 (or None for the task's own limit), got {max_steps}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if history < 0:
        raise ValueError(f"history must be >= 0, got {history}")
    from catp_agent.harness.validate import check_tasks

    check_tasks(tasks)


class _DaggerDriver:
    """The policy the episode loop plays: asks the oracle for the label, lets the model act.

    After each ``act``: ``label`` (the oracle's rounded action, None when it had none),
    ``model_action`` (what the model proposed), ``by_oracle`` (the oracle's action was executed)
    and ``elements`` (the screen's visible elements, as demos store them).
    """

    name = "dagger"

    def __init__(self, env: Any, model: Any, beta: float, rng: np.random.Generator, round_to: int = 10) -> None:
        self.env, self.model, self.beta, self.rng, self.round_to = env, model, beta, rng, round_to
        self.label: str | None = None
        self.model_action = ""
        self.by_oracle = False
        self.elements: list[dict] = []

    def reset(self) -> None:
        self.model.reset()
        self.label, self.model_action, self.by_oracle, self.elements = None, "", False, []

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> str:
        from envs.actions import done

        self.elements = visible_elements(info)
        raw = self.env.unwrapped.oracle_action(obs, info)  # before the model acts: the same screen
        if raw is None:  # no right action from here: the episode ends, this screen gets no label
            self.label, self.model_action, self.by_oracle = None, "", False
            return done()
        self.label = round_action(raw, self.round_to)
        self.model_action = self.model.act(obs, info)
        self.by_oracle = self.beta > 0 and float(self.rng.random()) < self.beta
        if self.by_oracle:
            self.model.window.act(self.label)  # the model's history shows what was executed
            return self.label
        return self.model_action


def _episode_rng(seed: int, task: str, episode_seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(task.encode()), episode_seed])


def _play(env: Any, driver: _DaggerDriver, task: str, seed: int) -> tuple[Demo | None, dict, str | None]:
    """(the demo, or None when no step was stored; its ``dagger`` record; the episode's error or None)."""
    from catp_agent.harness.evaluation.episode import run_episode

    frames: list[np.ndarray] = []
    actions: list[str] = []
    labels: list[str] = []
    errors: list[str] = []
    elements: list[list[dict]] = []
    model_actions: list[str] = []
    oracle_steps: list[bool] = []
    seen = {"instruction": "", "no_label": False}

    def on_step(step: int, obs: dict[str, Any], record: dict[str, Any], report: Any) -> None:
        seen["instruction"] = str(obs["instruction"])
        if driver.label is None:
            seen["no_label"] = True
            return
        frames.append(np.asarray(obs["screenshot"], dtype=np.uint8))
        actions.append(record["action"])
        labels.append(driver.label)
        errors.append(str(obs.get("last_action_error", "")))
        elements.append(driver.elements)
        model_actions.append(driver.model_action)
        oracle_steps.append(driver.by_oracle)

    outcome = run_episode(env, driver, seed, on_step=on_step).record
    record = {"model": str(getattr(driver.model.agent, "source", "")), "beta": driver.beta,
              "success": bool(outcome["success"]), "model_actions": model_actions, "oracle_steps": oracle_steps,
              "no_label": seen["no_label"]}
    if not frames:
        return None, record, outcome["error"]
    demo = Demo(task, seed, seen["instruction"], np.stack(frames), actions, errors, elements, labels)
    return demo, record, outcome["error"]


_MODELS: dict[tuple[str, int], Any] = {}
"""Per process: the loaded model policy by (model folder, history), so each worker loads it once."""


def _model_policy(model: Any, history: int) -> Any:
    from policies.vlm import UNPRUNED, VLMPolicy

    if not isinstance(model, (str, Path)):  # a loaded AgentModel (in-process)
        return VLMPolicy(model, pruning=UNPRUNED, history=history)
    key = (str(model), history)
    if key not in _MODELS:
        _MODELS[key] = VLMPolicy(str(model), pruning=UNPRUNED, history=history)
    return _MODELS[key]


def _new_stats() -> dict[str, Any]:
    return {**{k: 0 for k in _STATS}, "errors": []}


def same_effect(action: str, label: str, elements: Sequence[dict] | None = None) -> bool:
    """Whether ``action`` does what ``label`` does on a screen with these ``elements`` (as demos
    store them): a click (or double click) inside the smallest element holding the label's click,
    the same typed text, the same key, scroll or ``done()``. Text that does not parse never
    agrees; a label's click on no stored element agrees only with the same point."""
    from catp_agent.harness.training.data import click_and_box
    from envs.actions import ActionParseError, parse_action

    try:
        mine, right = parse_action(action), parse_action(label)
    except ActionParseError:
        return False
    if mine.name != right.name:
        return False
    (point, _), (_, box) = click_and_box(action, elements), click_and_box(label, elements)
    if point is None or box is None:  # not a click, or a click on no stored element
        return mine == right
    bx, by, bw, bh = box
    return bx <= point[0] <= bx + bw and by <= point[1] <= by + bh


def _count(stats: dict[str, Any], meta: dict) -> None:
    """Add one stored episode (its JSON record) to ``stats``."""
    record = meta.get("dagger", {})
    labels = meta.get("labels") or meta["actions"]
    screens = meta.get("elements") or [None] * len(labels)
    stats["episodes"] += 1
    stats["successes"] += int(bool(record.get("success")))
    stats["steps"] += len(labels)
    stats["agree"] += sum(1 for m, label, elements in zip(record.get("model_actions", []), labels, screens)
                          if same_effect(m, label, elements))
    stats["oracle_steps"] += sum(1 for o in record.get("oracle_steps", []) if o)
    stats["no_label"] += int(bool(record.get("no_label")))


def _worker(args: tuple) -> tuple[str, dict[str, Any]]:
    """Play ``seeds`` of ``task`` with the model; (task, stats). Mirrors demos._worker: an episode
    that ends in an error is not stored, its error is kept and the next episode gets a fresh browser."""
    task, seeds, root, model, history, max_steps, beta, seed, threads, queue = args
    if threads:
        import torch

        torch.set_num_threads(threads)  # worker processes share the CPU cores
    from catp_agent.harness.evaluation.episode import make_env

    policy = None  # loaded at the first episode to play (a resumed call may have none)
    stats = _new_stats()
    env = None
    try:
        for episode_seed in seeds:
            path = demo_path(Path(root), task, episode_seed)
            if path.exists():
                stats["skipped"] += 1
                _count(stats, load_meta(path))
            else:
                if policy is None:
                    policy = _model_policy(model, history)
                if env is None:
                    env = make_env(task, max_steps=max_steps)
                driver = _DaggerDriver(env, policy, beta, _episode_rng(seed, task, episode_seed))
                demo, record, error = _play(env, driver, task, episode_seed)
                if error is not None:
                    if len(stats["errors"]) < MAX_ERRORS_KEPT:
                        stats["errors"].append(f"{task} seed {episode_seed}: {error}".strip()[:500])
                    _close_quietly(env)
                    env = None
                if error is not None:
                    stats["failed"] += 1
                elif demo is None:
                    stats["empty"] += 1
                else:
                    _save(demo, path, {"dagger": record})
                    stats["new"] += 1
                    _count(stats, {"actions": demo.actions, "labels": demo.labels, "elements": demo.elements,
                                   "dagger": record})
            if queue is not None:
                queue.put(1)
    finally:
        if env is not None:
            _close_quietly(env)
    return task, stats


def collect_dagger(model: Any, out_dir: str | Path, tasks: Sequence[str], seeds: Iterable[int], *, history: int = 3,
                   max_steps: int | None = None, beta: float = 0.0, workers: int = 1, progress: bool = True,
                   seed: int = 0) -> dict[str, Any]:
    """One DAgger round (see the module doc): the model plays every (task, seed) not yet in
    ``out_dir``, each step labelled with the oracle's action; returns the report (also written
    to ``out_dir/dagger_report.json``).

    Args:
        model: a model folder (loaded once per worker with :class:`policies.vlm.VLMPolicy`,
            unpruned), or with ``workers=1`` an already loaded ``AgentModel``.
        tasks, seeds: the episodes; seeds must be >= :data:`EVAL_SEEDS_BELOW`.
        history: the model's history window (as it was trained).
        max_steps: steps per episode (None: the task's own limit).
        beta: the chance that a step executes the oracle's action instead of the model's.
        workers: processes, each with its own browser and model, splitting tasks and seeds.
        seed: seeds the per-episode ``beta`` draws (with the task and the episode's seed).

    The report: ``{"tasks": {task: stats}, "total": stats}``; stats: ``episodes`` stored (now or
    before), ``new`` (stored by this call), ``skipped`` (already there), ``successes`` (stored
    episodes that ended solved), ``steps`` (stored steps), ``agree`` (steps where the model's
    action had the label's effect, :func:`same_effect`), ``oracle_steps`` (steps that executed the oracle's action,
    ``beta``), ``no_label`` (episodes ended because the oracle had no action), ``empty``
    (episodes not stored because no step was: the oracle had no action on the first screen),
    ``failed`` (episodes not stored because they ended in an error; the next call retries them)
    and the first few ``errors``.
    """
    seeds = list(seeds)
    tasks = list(tasks)
    check_dagger_args(tasks, seeds, beta=beta, max_steps=max_steps, workers=workers, history=history)
    if workers > 1 and not isinstance(model, (str, Path)):
        raise ValueError("workers > 1 load the model in each process: pass the model folder, not a loaded model")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chunks = max(1, (workers + len(tasks) - 1) // len(tasks))
    if workers > 1:
        import os

        threads = max(1, (os.cpu_count() or 1) // workers)
        jobs = [(t, seeds[i::chunks], str(out_dir), str(model), history, max_steps, beta, seed, threads)
                for t in tasks for i in range(chunks)]
    else:
        jobs = [(t, seeds, str(out_dir), model, history, max_steps, beta, seed, 0) for t in tasks]
    from tqdm import tqdm

    bar = tqdm(total=len(tasks) * len(seeds), desc="dagger", unit="ep", disable=not progress)
    per_task: dict[str, dict[str, Any]] = {t: _new_stats() for t in tasks}

    def add(result: tuple[str, dict[str, Any]]) -> None:
        task, stats = result
        for key, value in stats.items():
            per_task[task][key] += value

    run_jobs(jobs, workers, bar, add, worker=_worker)
    total = _new_stats()
    for stats in per_task.values():
        for key, value in stats.items():
            total[key] += value
    report = {"model": str(model if isinstance(model, (str, Path)) else getattr(model, "source", "")), "beta": beta,
              "seed": seed, "max_steps": max_steps, "history": history, "tasks": per_task, "total": total}
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2))
    return report
