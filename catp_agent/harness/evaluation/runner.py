"""Run an evaluation grid, resumably, in one process or in parallel worker processes.

    from catp_agent.harness.evaluation import EvalConfig, parse_variants, run_eval
    cfg = EvalConfig(tasks=("catp/login-v0",), seeds=(0, 1, 2), variants=parse_variants("none,catp"),
                     ratios=(0.778,), policy="vlm", model="path/to/Qwen2-VL-2B-Instruct")
    report = run_eval(cfg, "runs/eval")        # rerun the same call to resume

Results go to ``<out>/episodes.jsonl`` (see :mod:`catp_agent.harness.evaluation.results`), one line per
episode, written only by this (the parent) process as each episode ends, while it holds the
folder's lock (a second run on the same folder is refused). Episodes whose key is already in the
file are skipped. With ``workers > 1`` episodes run in ``spawn``-ed processes,
each holding its own policy and one env (browser) per task it has seen (the last
``MAX_ENVS_PER_WORKER``), reused across episodes; the model is loaded once per process and
torch uses cpu_count // workers threads in each.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from catp_agent.harness.evaluation.episode import (
    EpisodeOutcome,
    PolicyBuilder,
    PolicyFactory,
    make_env,
    resolved_pruning,
    run_episode,
)
from catp_agent.harness.evaluation.grid import EvalConfig, Run
from catp_agent.harness.evaluation.plots import save_png
from catp_agent.harness.evaluation.results import ResultsFile, ResultsLock, write_config

__all__ = ["MAX_ENVS_PER_WORKER", "EvalReport", "run_eval"]

MAX_ENVS_PER_WORKER = 4
EnvFactory = Callable[..., Any]


@dataclass(frozen=True)
class EvalReport:
    """What a call to :func:`run_eval` did."""

    out_dir: str
    total: int
    skipped: int
    ran: int
    successes: int
    errors: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _EpisodePlayer:
    """Per-process state: envs by task (LRU, reused), the policy builder (model loaded once)."""

    def __init__(self, config: EvalConfig, model: Any = None, env_factory: EnvFactory | None = None,
                 policy_factory: PolicyFactory | None = None, save_screens: bool = False) -> None:
        self.config = config
        self.save_screens = save_screens
        self.env_factory = env_factory or make_env
        self.policies = PolicyBuilder(config.policy, model if model is not None else config.model,
                                      config.history, config.fidelity, policy_factory)
        # the vlm model named by a path (or None: the bundled one) is loaded at the first episode,
        # once per process, with the run's loading options (device, dtype, attn, dialect, pointer)
        self.load_first = (config.policy == "vlm" and policy_factory is None
                           and (self.policies.model is None or isinstance(self.policies.model, str)))
        self.envs: OrderedDict[str, Any] = OrderedDict()

    def env(self, task: str) -> Any:
        if task in self.envs:
            self.envs.move_to_end(task)
            return self.envs[task]
        while len(self.envs) >= MAX_ENVS_PER_WORKER:
            _, old = self.envs.popitem(last=False)
            old.close()
        env = self.env_factory(task, max_steps=self.config.max_steps, viewport=self.config.viewport)
        self.envs[task] = env
        return env

    def play(self, run: Run) -> EpisodeOutcome:
        cfg = self.config
        sample_step = cfg.sample_step if run.seed == cfg.seeds[0] else -1
        try:
            if self.load_first:
                self.policies.model = cfg.loading.load(self.policies.model)
                self.load_first = False
            env = self.env(run.task)
            policy = self.policies(env, run.pruning(cfg.pruning_overrides), run.seed)
        except Exception as exc:  # noqa: BLE001 - recorded as the episode's error
            first = str(exc).splitlines()[0] if str(exc) else ""
            return EpisodeOutcome({"success": False, "reward": 0.0, "steps": 0, "k_layer": None, "wall_s": 0.0,
                                   "error": f"setup failed: {type(exc).__name__}: {first}", "setup_error": True,
                                   "step_records": []})
        return run_episode(env, policy, run.seed, sample_step=sample_step, save_screens=self.save_screens)

    def close(self) -> None:
        while self.envs:
            _, env = self.envs.popitem()
            env.close()


# ------------------------------------------------------------------------------- worker processes
def _worker_main(config: EvalConfig, env_factory: EnvFactory | None, policy_factory: PolicyFactory | None,
                 threads: int, jobs: Any, results: Any, save_screens: bool = False) -> None:
    """A worker process: play runs from ``jobs`` until a None arrives; send outcomes to ``results``."""
    import torch

    torch.set_num_threads(threads)  # workers share the CPU cores instead of oversubscribing them
    player = _EpisodePlayer(config, None, env_factory, policy_factory, save_screens)
    try:
        for run in iter(jobs.get, None):
            results.put((run, player.play(run)))
    finally:
        player.close()


# ------------------------------------------------------------------------------------ the parent
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_")


def _record(run: Run, outcome: EpisodeOutcome, config: EvalConfig, out: Path) -> dict[str, Any]:
    record: dict[str, Any] = {**run.key_dict(), "label": run.label}
    record.update(outcome.record)
    record["pruning"] = resolved_pruning(run.pruning(config.pruning_overrides), outcome.record.get("k_layer"))
    record["sample"] = None
    if outcome.sample is not None:
        rel = Path("samples") / f"{_slug(run.task)}__{_slug(run.label)}__seed{run.seed}.png"
        save_png(outcome.sample.screenshot, out / rel)
        record["sample"] = {"step": outcome.sample.step, "screenshot": rel.as_posix(),
                            "kept_map": outcome.sample.kept_map}
    for rel, data in outcome.screens.items():  # named by their pixels: an existing file is the same screen
        if not (out / rel).exists():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(data)
    record["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return record


def run_eval(config: EvalConfig, out_dir: str | Path, *, model: Any = None, env_factory: EnvFactory | None = None,
             policy_factory: PolicyFactory | None = None, progress: bool = True,
             save_screens: bool = False, backend: str = "local", ray_address: str | None = None,
             episode_timeout: float = 600.0, ray_gpus_per_worker: float = 0.0) -> EvalReport:
    """Run every episode of ``config.runs()`` not yet in ``<out_dir>/episodes.jsonl``.

    Args:
        config: the grid and setup; written to ``<out_dir>/config.json``.
        out_dir: results folder; created if needed. Rerunning resumes.
        model: an already loaded model object for the ``vlm`` policy (in-process only);
            None uses ``config.model``.
        env_factory: ``(task, *, max_steps, viewport) -> env``; default :func:`make_env`.
        policy_factory: ``(name, *, env, pruning, seed, model, history, fidelity) -> policy``;
            default :func:`catp_agent.harness.evaluation.episode.build_policy`. With ``workers > 1`` both
            factories must be picklable (module-level functions).
        progress: show a tqdm bar.
        save_screens: store every step's screenshot under ``<out_dir>/steps/`` and name it in
            the step record (for ``catp-agent report``); recorded in ``config.json``.
        backend: ``"local"`` (this process, or ``workers`` spawned processes) or ``"ray"``:
            ``workers`` Ray actors, see :mod:`catp_agent.harness.evaluation.ray_backend`. The
            records are the same; only the driver (this process) writes them.
        ray_address, episode_timeout, ray_gpus_per_worker: the Ray backend's options
            (:class:`~catp_agent.harness.evaluation.ray_backend.RayOptions`); ignored by ``local``.

    Raises:
        ValueError: a model object together with ``workers > 1`` or the Ray backend, an unknown
            backend or bad Ray option, Ray not installed for ``backend="ray"``, or ``out_dir``
            holding results of another setup (see :func:`write_config`).
        ResultsLocked: another live process is writing ``out_dir`` (one writer per folder; the
            lock of a killed process is taken over, see :class:`ResultsLock`).
    """
    if model is not None and not isinstance(model, str) and config.workers > 1:
        raise ValueError("a loaded model object cannot be shared with worker processes; "
                         "pass model=None and set EvalConfig.model to a path, or use workers=1")
    ray_options = None
    if backend == "ray":  # validated and Ray imported before the results folder is touched
        from catp_agent.harness.evaluation.ray_backend import RayOptions, require_ray

        if model is not None and not isinstance(model, str):
            raise ValueError("a loaded model object cannot be sent to Ray workers; pass model=None and set "
                             "EvalConfig.model to a path")
        ray_options = RayOptions(ray_address, episode_timeout, ray_gpus_per_worker)
        require_ray()
    elif backend != "local":
        raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")
    with ResultsLock(out_dir):
        return _run_locked(config, Path(out_dir), model, env_factory, policy_factory, progress, save_screens,
                           ray_options)


def _run_locked(config: EvalConfig, out: Path, model: Any, env_factory: EnvFactory | None,
                policy_factory: PolicyFactory | None, progress: bool, save_screens: bool,
                ray_options: Any = None) -> EvalReport:
    """:func:`run_eval` while this process holds the folder's lock: repair the tail, resume."""
    from tqdm.auto import tqdm

    write_config(out, config, {"save_screens": save_screens,
                               **({"backend": "ray", "ray": ray_options.__dict__} if ray_options else {})})
    results = ResultsFile(out)
    results.repair_tail()  # a torn last line: a complete record keeps its place, a fragment goes
    done = results.finished(config.retry_errors)
    runs = config.runs()
    pending = [r for r in runs if r.key not in done]
    counts = {"ran": 0, "successes": 0, "errors": 0}
    bar = tqdm(total=len(pending), desc="eval", unit="ep", disable=not progress or not pending)

    def finish(run: Run, outcome: EpisodeOutcome) -> None:
        record = _record(run, outcome, config, out)
        results.append(record)
        counts["ran"] += 1
        counts["successes"] += int(bool(record["success"]))
        counts["errors"] += int(bool(record["error"]))
        bar.set_postfix(ok=f"{counts['successes']}/{counts['ran']}", err=counts["errors"], refresh=False)
        bar.update(1)

    try:
        if ray_options is not None:
            if pending:
                from catp_agent.harness.evaluation.ray_backend import run_on_ray

                run_on_ray(config, pending, env_factory, policy_factory, finish, save_screens, ray_options)
        elif config.workers == 1 or len(pending) <= 1:
            player = _EpisodePlayer(config, model, env_factory, policy_factory, save_screens)
            try:
                for run in pending:
                    bar.set_description(f"eval {run.task} {run.label} s{run.seed}", refresh=False)
                    finish(run, player.play(run))
            finally:
                player.close()
        else:
            _run_parallel(config, pending, env_factory, policy_factory, finish, save_screens)
    finally:
        bar.close()
    return EvalReport(str(out), len(runs), len(runs) - len(pending), counts["ran"], counts["successes"],
                      counts["errors"])


def _run_parallel(config: EvalConfig, pending: list[Run], env_factory: EnvFactory | None,
                  policy_factory: PolicyFactory | None, finish: Callable[[Run, EpisodeOutcome], None],
                  save_screens: bool = False) -> None:
    """Spawned workers pull runs from a queue; only this process writes results. On any
    interruption the workers are terminated (their episodes in flight are lost, as on a kill)."""
    context = multiprocessing.get_context("spawn")
    n = min(config.workers, len(pending))
    threads = max(1, (os.cpu_count() or 1) // n)
    jobs, results = context.Queue(), context.Queue()
    for run in pending:
        jobs.put(run)
    for _ in range(n):
        jobs.put(None)
    procs = [context.Process(target=_worker_main, name=f"catp-eval-worker-{i}", daemon=True,
                             args=(config, env_factory, policy_factory, threads, jobs, results, save_screens))
             for i in range(n)]
    for proc in procs:
        proc.start()
    try:
        remaining = len(pending)
        while remaining:
            try:
                run, outcome = results.get(timeout=1.0)
            except queue.Empty:
                if not any(proc.is_alive() for proc in procs):
                    codes = [proc.exitcode for proc in procs]
                    raise RuntimeError(f"all worker processes exited (exit codes {codes}) with {remaining} "
                                       "episodes left; rerun the same command to resume") from None
                continue
            finish(run, outcome)
            remaining -= 1
        for proc in procs:
            proc.join()
    except BaseException:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join(timeout=10)
        raise
