"""One episode: an env, a policy, a seed -> a JSON-ready record with per-step token accounting.

This is the one place where envs and policies meet. ``envs`` and ``gymnasium`` are imported
inside :func:`make_env` only, so ``import catp_agent`` never pulls in Playwright.

What the loop reads from a policy besides ``reset()`` and ``act(obs, info) -> str``: after each
``act``, an optional ``policy.last_report``, a :class:`catp_agent.agent.StepReport`. Its
``to_dict()`` goes into the step record as is, except ``kept_map`` (the current screenshot's kept
tokens), which goes to the heatmap sample and the ``catp-agent run`` trace instead of every
step record. Its ``prompt_images`` (the kept tokens of every image of the prompt, ICDs and
query, and which screenshot each is) stays in the step record, for ``catp-agent report``.
Policies without a report (oracle, random) give the same keys, all null.

With ``save_screens`` each step record also gets ``screenshot``: ``{"path": "steps/<hash>.webp",
"width": w, "height": h}`` (the screenshot acted on, lossless WebP, named by its pixels so that
identical screens are stored once; width and height are the original pixels, which action
coordinates refer to); the encoded files travel in :attr:`EpisodeOutcome.screens` and the
runner writes them under the results folder.
"""

from __future__ import annotations

import hashlib
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from catp_agent.agent.report import StepReport
from catp_agent.methods import MethodConfig

__all__ = ["EpisodeOutcome", "PolicyBuilder", "Sample", "build_policy", "encode_screenshot", "make_env",
           "resolved_pruning", "run_episode"]

SCREEN_MAX_SIDE = 1280
"""Stored screenshots larger than this (either side, pixels) are downscaled to fit."""

PolicyFactory = Callable[..., Any]
StepCallback = Callable[[int, dict[str, Any], dict[str, Any], StepReport | None], None]


def make_env(task: str, *, max_steps: int | None = None, viewport: tuple[int, int] | None = None) -> Any:
    """``gymnasium.make(task)`` after importing ``envs`` (which registers the ``catp/...`` ids);
    a BrowserGym id (``browsergym/miniwob.click-button``) gives its task behind our env interface
    (:class:`catp_agent.harness.browsergym.env.BrowserGymTaskEnv`).

    ``max_steps`` and ``viewport`` override the task's defaults when given.
    """
    if task.startswith("browsergym/"):
        from catp_agent.harness.browsergym.env import make_browsergym_env

        return make_browsergym_env(task, max_steps=max_steps, viewport=viewport)
    import gymnasium

    import envs  # noqa: F401 - registers the catp/... ids

    if task not in gymnasium.registry:
        raise ValueError(f"unknown task {task!r}; `catp-agent tasks` lists the registered ids")
    kwargs: dict[str, Any] = {}
    if max_steps is not None:
        kwargs["max_steps"] = max_steps
    if viewport is not None:
        kwargs["viewport"] = tuple(viewport)
    return gymnasium.make(task, **kwargs)


def build_policy(name: str, *, env: Any, pruning: MethodConfig, seed: int, model: Any = None,
                 history: int = 3, fidelity: bool = True) -> Any:
    """The default policy factory: ``policies.make_policy`` with the arguments each policy takes."""
    from policies import make_policy

    if name == "vlm":
        return make_policy("vlm", model=model, pruning=pruning, history=history, fidelity=fidelity, seed=seed)
    return make_policy(name, env=env, seed=seed)



def resolved_pruning(pruning: MethodConfig, k_layer: int | None) -> dict[str, Any]:
    """The config as it ran: its dict, with ``k_layer`` set to the K the model used when the
    method has a K and the episode reached the model (the config itself may say None: "20 %")."""
    out = pruning.to_dict()
    if "k_layer" in out and k_layer is not None:
        out["k_layer"] = k_layer
    return out


class PolicyBuilder:
    """Builds a fresh policy per episode (seeded by the episode) while loading the model once.

    The first policy gets ``model`` as given (a path or None); if it exposes the loaded model as
    ``policy.agent`` or ``policy.model`` (an object, not a path), later policies get that object
    as ``model=`` instead of loading again.
    """

    SHARED_MODEL_ATTRS = ("agent", "model")

    def __init__(self, name: str, model: Any = None, history: int = 3, fidelity: bool = True,
                 factory: PolicyFactory | None = None) -> None:
        self.name, self.model, self.history, self.fidelity = name, model, history, fidelity
        self.factory = factory or build_policy

    def __call__(self, env: Any, pruning: MethodConfig, seed: int) -> Any:
        policy = self.factory(self.name, env=env, pruning=pruning, seed=seed, model=self.model,
                              history=self.history, fidelity=self.fidelity)
        if self.model is None or isinstance(self.model, str):
            for attr in self.SHARED_MODEL_ATTRS:
                loaded = getattr(policy, attr, None)
                if loaded is not None and not isinstance(loaded, str):
                    self.model = loaded
                    break
        return policy


@dataclass
class Sample:
    """The screenshot and kept tokens of one step, for a heatmap."""

    step: int
    screenshot: np.ndarray
    kept_map: dict[str, Any]


@dataclass
class EpisodeOutcome:
    """``record``: JSON-ready (success, reward, steps, wall_s, error, per-step list); ``sample``: or None.
    ``screens``: encoded screenshots by the relative path the step records name (``save_screens``)."""

    record: dict[str, Any]
    sample: Sample | None = None
    screens: dict[str, bytes] = field(default_factory=dict)


def encode_screenshot(pixels: np.ndarray) -> tuple[str, bytes]:
    """(``steps/<hash>.<ext>``, the encoded image) of an (H, W, 3) uint8 screenshot: lossless
    WebP (PNG where Pillow lacks WebP), downscaled to :data:`SCREEN_MAX_SIDE` if larger. The
    name hashes the pixels, so equal screens get one file."""
    from PIL import Image, features

    array = np.ascontiguousarray(np.asarray(pixels, dtype=np.uint8))
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"screenshot must be (H, W, 3) uint8, got shape {array.shape}")
    digest = hashlib.sha1(array.tobytes() + repr(array.shape).encode()).hexdigest()[:20]
    image = Image.fromarray(array)
    if max(image.size) > SCREEN_MAX_SIDE:
        image.thumbnail((SCREEN_MAX_SIDE, SCREEN_MAX_SIDE))
    buf = io.BytesIO()
    if features.check("webp"):
        image.save(buf, "WEBP", lossless=True, quality=50, method=4)
        ext = "webp"
    else:
        image.save(buf, "PNG")
        ext = "png"
    return f"steps/{digest}.{ext}", buf.getvalue()


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # torch / numpy 0-d
        return _jsonable(value.item())
    return value if value is None or isinstance(value, str) else str(value)


def _error_text(exc: BaseException) -> str:
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first}"


def _step_fields(report: StepReport | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(the report's fields for a step record, JSON-ready, without ``action`` and ``kept_map``;
    the ``kept_map`` dict or None). No report gives the same keys, all None."""
    fields = report.to_dict() if report is not None else StepReport.null_dict()
    kept_map = fields.pop("kept_map")
    del fields["action"]  # the step record's action is the one the env received
    return _jsonable(fields), kept_map


def run_episode(env: Any, policy: Any, seed: int, *, sample_step: int = -1,
                on_step: StepCallback | None = None, save_screens: bool = False) -> EpisodeOutcome:
    """Play one episode to its end (terminated or truncated) and account for every step.

    Args:
        env: a gymnasium env with the ``envs`` observation and info.
        policy: ``reset()``, ``act(obs, info) -> str``, optionally ``last_report`` (a StepReport).
        seed: passed to ``env.reset(seed=seed)``.
        sample_step: keep this step's screenshot and ``kept_map`` (the last step if the episode
            is shorter); -1 keeps nothing. Only policies that report a ``kept_map`` give a sample.
        on_step: called after each step with (step index, observation acted on, step record,
            the policy's ``last_report`` or None), e.g. to print a log or write a trace.
        save_screens: encode each step's screenshot into the outcome's ``screens`` and name it
            in the step record's ``screenshot`` (see the module doc).

    The record's ``k_layer`` is the decoder layer K the policy's pruning used (from the step
    reports; None for methods without K and for policies without reports).

    An exception from the env or the policy ends the episode: it is recorded as ``error``
    (type and first line), never raised, so that one bad episode does not stop a grid.
    """
    start = time.perf_counter()
    steps: list[dict[str, Any]] = []
    reward, success, error = 0.0, False, None
    sample: Sample | None = None
    screens: dict[str, bytes] = {}
    try:
        obs, info = env.reset(seed=seed)
        policy.reset()
        # an env that could not start the episode (a hung or dead page) says so in info["error"]
        # and the episode is over before any step: the policy is not asked to act on a blank screen
        if info.get("error"):
            error = str(info["error"])
        done = bool(info.get("error"))
        while not done:
            t0 = time.perf_counter()
            action = policy.act(obs, info)
            act_s = time.perf_counter() - t0
            report = getattr(policy, "last_report", None)
            report = report if isinstance(report, StepReport) else None
            t0 = time.perf_counter()
            next_obs, r, terminated, truncated, info = env.step(action)
            env_s = time.perf_counter() - t0
            record: dict[str, Any] = {"step": len(steps), "action": str(action), "reward": float(r),
                                      "act_s": act_s, "env_s": env_s,
                                      "action_error": next_obs.get("last_action_error") or None}
            fields, kept_map = _step_fields(report)
            record.update(fields)
            if save_screens:
                path, data = encode_screenshot(obs["screenshot"])
                screens[path] = data
                height, width = np.asarray(obs["screenshot"]).shape[:2]
                record["screenshot"] = {"path": path, "width": int(width), "height": int(height)}
            if kept_map and sample_step >= 0 and (sample is None or sample.step < sample_step):
                sample = Sample(len(steps), np.asarray(obs["screenshot"]).copy(), _jsonable(kept_map))
            steps.append(record)
            if on_step is not None:
                on_step(record["step"], obs, record, report)
            reward += float(r)
            success = bool(info.get("success", False))
            if info.get("error"):
                error = str(info["error"])
            obs, done = next_obs, bool(terminated or truncated)
    except Exception as exc:  # noqa: BLE001 - one broken episode is recorded, the grid goes on
        error = _error_text(exc)
    k_layer = next((s["k_layer"] for s in steps if s["k_layer"] is not None), None)
    result = {"success": success, "reward": reward, "steps": len(steps), "k_layer": k_layer,
              "wall_s": time.perf_counter() - start, "error": error, "step_records": steps}
    return EpisodeOutcome(result, sample, screens)
