"""Run an evaluation's episodes on Ray actors (``run_eval(..., backend="ray")``, ``--backend ray``).

    from catp_agent.harness.evaluation import EvalConfig, parse_variants, run_eval
    cfg = EvalConfig(tasks=("catp/login-v0",), seeds=(0, 1), variants=parse_variants("none"),
                     policy="oracle", workers=2)
    run_eval(cfg, "runs/eval", backend="ray")                      # a local cluster for this run
    run_eval(cfg, "runs/eval", backend="ray", ray_address="HEAD:6379", episode_timeout=900)

Only the driver (the process that called :func:`~catp_agent.harness.evaluation.runner.run_eval`)
writes results, exactly as with local workers: the runner's ``finish`` callback appends each
record to ``episodes.jsonl`` (fsynced) under the folder's lock, and resuming is the runner's.

Each of the ``config.workers`` actors (:class:`EpisodeWorker`) imports ``envs`` in its
``__init__`` (so the ``catp/...`` gymnasium ids exist in that process, wherever it runs), loads
the VLM once (``vlm`` policy, default factory) with ``config.loading`` (``--device``,
``--dtype``, ``--attn``, ``--dialect``, ``--no-pointer``; ``cuda`` is the first GPU Ray gave the
actor), and keeps one env (browser) per task it has seen, like a local worker process. It asks Ray for 1 CPU and ``gpus_per_worker`` GPUs.

Faults, all handled by the driver, which never blocks longer than :data:`POLL_S` in Ray:

* an episode running past ``episode_timeout`` seconds: its actor is killed (``ray.kill``; Ray
  cannot force-cancel an actor task), the episode is recorded with an error
  ``"episode timed out after ... s"``, and a fresh actor takes the worker's place;
* an actor that dies mid-episode (a crash, an OOM kill, a lost node): the episode runs once more
  on a fresh actor; if that one dies too it is recorded with an error ``"worker died twice..."``;
* an actor that cannot start (its ``__init__`` raised: Chromium, the model, the project missing
  on a node) or is not up within ``start_timeout`` seconds (e.g. no node has the GPU asked
  for): :class:`RuntimeError`; nothing more is recorded, rerun to resume.

Timed-out and failed episodes are ordinary error records (``--retry-errors`` reruns them).
Importing this module does not import Ray; :func:`require_ray` does.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from catp_agent.harness.evaluation.episode import EpisodeOutcome
from catp_agent.harness.evaluation.grid import EvalConfig, Run

__all__ = ["BACKENDS", "INSTALL_HINT", "POLL_S", "EpisodeWorker", "RayOptions", "require_ray", "run_on_ray"]

BACKENDS = ("local", "ray")
INSTALL_HINT = "install it with: pip install 'catp-agent[ray]' (in this checkout: .venv/bin/pip install ray==2.60.0)"
POLL_S = 1.0
"""Longest single wait on Ray; the driver checks deadlines at least this often."""
CLOSE_S = 30.0
"""How long finished actors get to close their browsers before they are killed."""

Finish = Callable[[Run, EpisodeOutcome], None]


@dataclass(frozen=True)
class RayOptions:
    """How to run on Ray.

    Attributes:
        address: a running cluster (``HOST:PORT`` of its head, or ``"auto"``); None starts a
            local single-node cluster on 127.0.0.1 for the run and stops it at the end.
        episode_timeout: seconds an episode may take before its actor is killed.
        gpus_per_worker: GPUs each actor asks Ray for (fractions share a GPU); 0: none.
        start_timeout: seconds an actor may take to be placed and start (imports, browser
            libraries, the model load) before the run stops with an error.
    """

    address: str | None = None
    episode_timeout: float = 600.0
    gpus_per_worker: float = 0.0
    start_timeout: float = 600.0

    def __post_init__(self) -> None:
        if self.address is not None and (not isinstance(self.address, str) or not self.address.strip()):
            raise ValueError(f"ray address must be HOST:PORT, 'auto' or None (a local cluster), got {self.address!r}")
        if not _number(self.episode_timeout) or not 0 < self.episode_timeout <= 7 * 86400:
            raise ValueError("episode timeout must be a number of seconds in (0, 604800], "
                             f"got {self.episode_timeout!r}")
        if not _number(self.start_timeout) or not 0 < self.start_timeout <= 86400:
            raise ValueError(f"start timeout must be a number of seconds in (0, 86400], got {self.start_timeout!r}")
        if not _number(self.gpus_per_worker) or not 0 <= self.gpus_per_worker <= 64:
            raise ValueError(f"gpus per worker must be a number in [0, 64] (fractions share a GPU), "
                             f"got {self.gpus_per_worker!r}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def require_ray() -> Any:
    """The ``ray`` module, or a ValueError saying how to install it (the CLI exits 2 on it)."""
    try:
        import ray
    except ImportError:
        raise ValueError(f"--backend ray needs Ray, which is not installed; {INSTALL_HINT}") from None
    return ray


# ----------------------------------------------------------------------------------- the actor
class EpisodeWorker:
    """One Ray actor: its envs (browsers) and its policy builder; plays the runs it is given."""

    def __init__(self, config: EvalConfig, env_factory: Any, policy_factory: Any, save_screens: bool,
                 threads: int | None) -> None:
        import envs  # noqa: F401 - registers the catp/... gymnasium ids in this worker process

        from catp_agent.harness.evaluation.runner import _EpisodePlayer

        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        model = None
        if config.policy == "vlm" and policy_factory is None:  # one load per actor, before any episode,
            model = config.loading.load(config.model)         # on the GPUs Ray gave it (CUDA_VISIBLE_DEVICES)
        self.model = model
        self.player = _EpisodePlayer(config, model, env_factory, policy_factory, save_screens)

    def ready(self) -> dict[str, Any]:
        """Where this actor runs, which ``catp/`` env ids are registered in its process, and the
        device and dtype of the model it loaded (None: no model of its own)."""
        import gymnasium

        loaded = None if self.model is None else {"device": str(self.model.device), "dtype": str(self.model.dtype),
                                                  "pointer": self.model.pointer is not None}
        return {"pid": os.getpid(), "registered": sorted(t for t in gymnasium.registry if t.startswith("catp/")),
                "model": loaded}

    def play(self, run: Run) -> EpisodeOutcome:
        return self.player.play(run)

    def close(self) -> None:
        self.player.close()


def failed_outcome(error: str, wall_s: float) -> EpisodeOutcome:
    """An episode that produced no outcome of its own, with the keys :func:`run_episode` gives."""
    return EpisodeOutcome({"success": False, "reward": 0.0, "steps": 0, "k_layer": None, "wall_s": wall_s,
                           "error": error, "step_records": []})


# ---------------------------------------------------------------------------------- the driver
@dataclass
class _Slot:
    """A worker place: its actor, the pending ``ready`` or ``play`` call, and when that began."""

    actor: Any
    ref: Any
    since: float
    run: Run | None = None  # None while the actor starts


def run_on_ray(config: EvalConfig, pending: list[Run], env_factory: Any, policy_factory: Any, finish: Finish,
               save_screens: bool, options: RayOptions) -> None:
    """Play ``pending`` on ``min(config.workers, len(pending))`` actors; ``finish`` every episode
    here, in the driver, as its outcome arrives. Starts (and at the end stops) a local cluster
    unless Ray is already initialised in this process or ``options.address`` names one."""
    ray = require_ray()
    n = min(config.workers, len(pending))
    started = False
    if not ray.is_initialized():
        if options.address is None:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a private cluster reports nothing out
            ray.init(num_cpus=n, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=True)
        else:
            ray.init(address=options.address)
        started = True
    threads = max(1, (os.cpu_count() or 1) // n) if started and options.address is None else None
    actor_class = ray.remote(EpisodeWorker).options(num_cpus=1, num_gpus=options.gpus_per_worker,
                                                    max_restarts=0, max_task_retries=0)
    slots: list[_Slot] = []
    try:
        _drive(ray, lambda: actor_class.remote(config, env_factory, policy_factory, save_screens, threads),
               n, pending, finish, options.episode_timeout, options.start_timeout, slots)
    finally:
        _stop(ray, [s.actor for s in slots])
        if started:
            ray.shutdown()


def _drive(ray: Any, new_actor: Callable[[], Any], n: int, pending: list[Run], finish: Finish, timeout: float,
           start_timeout: float, slots: list[_Slot]) -> None:
    """The scheduling loop; ``slots`` is filled in place so the caller can stop the actors."""
    from ray.exceptions import RayActorError, RayTaskError

    queue: deque[Run] = deque(pending)
    deaths: dict[Any, int] = {}

    def start() -> _Slot:
        actor = new_actor()
        return _Slot(actor, actor.ready.remote(), time.monotonic())

    def replace(slot: _Slot) -> None:
        ray.kill(slot.actor, no_restart=True)
        fresh = start()
        slot.actor, slot.ref, slot.since, slot.run = fresh.actor, fresh.ref, fresh.since, None

    def give_work(slot: _Slot) -> None:
        if queue:
            slot.run = queue.popleft()
            slot.ref, slot.since = slot.actor.play.remote(slot.run), time.monotonic()
        else:
            slot.run, slot.ref = None, None

    slots.extend(start() for _ in range(n))
    while any(s.ref is not None for s in slots):
        by_ref = {s.ref: s for s in slots if s.ref is not None}
        now = time.monotonic()
        def limit(slot: _Slot) -> float:
            return start_timeout if slot.run is None else timeout

        wait_s = min(POLL_S, max(0.0, min(s.since + limit(s) - now for s in by_ref.values())))
        ready, _ = ray.wait(list(by_ref), num_returns=len(by_ref), timeout=wait_s)
        for ref in ready:
            slot = by_ref[ref]
            try:
                value = ray.get(ref, timeout=POLL_S)
            except RayTaskError as exc:  # play raised past run_episode (a BaseException, an unpicklable outcome)
                if slot.run is None:
                    raise RuntimeError(f"a Ray worker could not start: {_one_line(exc)}") from None
                finish(slot.run, failed_outcome(f"worker error: {_one_line(exc)}", time.monotonic() - slot.since))
                give_work(slot)
                continue
            except RayActorError as exc:
                if slot.run is None or exc.actor_init_failed:
                    raise RuntimeError(f"a Ray worker could not start: {_one_line(exc)}; "
                                       "finished episodes are kept, rerun to resume") from None
                run = slot.run
                deaths[run.key] = deaths.get(run.key, 0) + 1
                if deaths[run.key] >= 2:
                    finish(run, failed_outcome(f"worker died twice during this episode: {_one_line(exc)}",
                                               time.monotonic() - slot.since))
                else:
                    queue.appendleft(run)  # once more, on the fresh actor
                replace(slot)
                continue
            if slot.run is None:  # the actor is up
                give_work(slot)
                continue
            finish(slot.run, value)
            give_work(slot)
        now = time.monotonic()
        for slot in slots:
            if slot.ref is None or slot.ref in ready or now - slot.since <= limit(slot):
                continue
            if slot.run is None:
                raise RuntimeError(f"no Ray worker started within {start_timeout:g} s: does the cluster have the "
                                   "resources each asks for (1 CPU, --ray-gpus-per-worker GPUs)? "
                                   "Finished episodes are kept, rerun to resume")
            finish(slot.run, failed_outcome(f"episode timed out after {timeout:g} s (its worker was killed)",
                                            now - slot.since))
            replace(slot)


def _stop(ray: Any, actors: list[Any]) -> None:
    """Let live actors close their browsers (bounded wait), then kill them all."""
    closing = []
    for actor in actors:
        try:
            closing.append(actor.close.remote())
        except Exception:  # noqa: BLE001 - a dead actor cannot be asked; it is killed below
            pass
    if closing:
        ray.wait(closing, num_returns=len(closing), timeout=CLOSE_S)
    for actor in actors:
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"
