"""The gymnasium environment: a task in a real Chromium, seen as screenshots, driven by text actions.

>>> import gymnasium, envs
>>> env = gymnasium.make("catp/login-v0")                      # doctest: +SKIP
>>> obs, info = env.reset(seed=0)                              # doctest: +SKIP
>>> obs, reward, terminated, truncated, info = env.step(env.unwrapped.oracle_action(obs, info))  # doctest: +SKIP

Observation (``spaces.Dict``): ``screenshot`` (H, W, 3) uint8 in screenshot pixels,
``instruction``, ``url``, ``last_action_error`` ("" when none) and ``step``.
``info``: ``elements`` (visible interactive elements, boxes in screenshot pixels),
``success``, ``task_id``, ``seed``, ``blocked_requests``, ``dialogs``, ``closed_popups``,
``downloads`` (each the episode's first 500), ``event_counts`` (all of them counted, with
``refused_popups`` and ``refused_history``),
``step``, and ``error`` when the browser died or hung. Reward is 1.0 on the step that succeeds.

Failure handling: ``step`` never raises. A step (or ``oracle_action``) that takes longer than
``step_timeout_ms`` ends the episode with an error, and the env kills that browser's processes
by pid (:class:`envs.worker.BrowserProcesses`). ``reset`` raises only for what no retry can fix
(Chromium missing, a broken task); when the page or the browser fails it returns a blank
observation with the reason in ``info["error"]`` and ``last_action_error``, the episode is over
at once, and the next ``reset`` starts afresh (so gymnasium's checker stays usable too).
``close()`` and garbage collection end every process the env started and remove its temp files.
"""

from __future__ import annotations

import string
import time
import unicodedata
import weakref
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.actions import ActionParseError, parse_action
from envs.browser import BrowserDied, BrowserSession
from envs.config import CHROMIUM_ARGS, DEFAULT_EXECUTABLE, WebEnvConfig
from envs.navigation import PageNavigating, read_steadily
from envs.server import TaskServer
from envs.tasks import make_task
from envs.tasks.base import Task, TaskStatus
from envs.worker import CallTimeout, PlaywrightThread

__all__ = ["CHARSET", "PageHung", "WebEnv"]

CHARSET = "".join(c for c in string.printable if c not in "\x0b\x0c")
"""Characters allowed in the observation's text fields (others become '?')."""
_CHARS = frozenset(CHARSET)
MAX_TEXT = 4096


def _clean(text: str | None, limit: int = MAX_TEXT) -> str:
    """Fold ``text`` into :data:`CHARSET` and at most ``limit`` characters."""
    text = unicodedata.normalize("NFKD", text or "")
    return "".join(c if c in _CHARS else "?" for c in text if not unicodedata.combining(c))[:limit]


_CLOSE_GRACE_S = 3.0
"""How long ``close()`` lets Playwright close the browser before it kills the processes."""
_FREE_AFTER_KILL_S = 0.5
"""How long a hung call may take to fail once its browser was killed, before the env gives up
its Playwright thread (busy draining a flood of events) and starts a new one at the next reset."""


_FORGET_S = 0.5
"""How long a call waits for Playwright to let go of its frames (see ``WebEnv._call``)."""
_OBSERVE_SHARE = 0.5
"""Observations interrupted by the page's own navigation are retried until this share of the
step's (or reset's) hard limit has passed since it began, leaving time to return before it."""


class PageHung(RuntimeError):
    """The page or the browser did not answer within the env's time limit; its browser was killed."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _shutdown(worker: PlaywrightThread | None, session: BrowserSession | None,
              server: TaskServer | None, graceful: bool = True) -> None:
    """End the browser, the Playwright thread and the server; leave no process or temp file.

    Safe from any thread and from a finalizer; it takes at most a few seconds even when the
    browser is hung or frozen, because a call still running on the thread (a hung step) or a
    close that overruns :data:`_CLOSE_GRACE_S` has the browser killed by pid first.
    """
    if session is not None:
        if graceful and worker is not None and worker.alive:
            if worker.busy_for is not None:  # a call is running: do not queue behind it
                session.kill()
            try:
                worker.call(session.close, timeout=_CLOSE_GRACE_S)
            except Exception:  # noqa: BLE001 - hung or broken: release() below kills what is left
                session.kill()
        session.release()
    if worker is not None:
        worker.stop(timeout=1.0 if graceful else 0.0)
    if server is not None:
        server.stop()


class WebEnv(gym.Env[dict, str]):
    """A web task in the system Chromium. Make it with ``gymnasium.make("catp/<task>-v0")``.

    Args:
        task: task name, e.g. ``"login"`` or ``"miniwob.click-test"``.
        viewport, device_scale_factor, max_steps, executable_path, headless,
        action_timeout_ms, navigation_timeout_ms, step_timeout_ms, reset_timeout_ms,
        max_type_chars, chromium_args: see :class:`WebEnvConfig`.
        render_mode: None or ``"rgb_array"`` (the last screenshot).
        task_options: keyword arguments for the task (e.g. ``{"time_limit_ms": 60000}``).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(
        self,
        task: str,
        *,
        viewport: tuple[int, int] = (640, 480),
        device_scale_factor: float = 1.0,
        max_steps: int = 15,
        executable_path: str = DEFAULT_EXECUTABLE,
        headless: bool = True,
        action_timeout_ms: int = 5_000,
        navigation_timeout_ms: int = 15_000,
        step_timeout_ms: int = 8_000,
        reset_timeout_ms: int = 20_000,
        max_type_chars: int = 500,
        chromium_args: tuple[str, ...] = CHROMIUM_ARGS,
        render_mode: str | None = None,
        task_options: dict[str, Any] | None = None,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.config = WebEnvConfig(
            viewport=tuple(viewport),  # type: ignore[arg-type]
            device_scale_factor=device_scale_factor,
            max_steps=max_steps,
            executable_path=executable_path,
            headless=headless,
            action_timeout_ms=action_timeout_ms,
            navigation_timeout_ms=navigation_timeout_ms,
            step_timeout_ms=step_timeout_ms,
            reset_timeout_ms=reset_timeout_ms,
            max_type_chars=max_type_chars,
            chromium_args=tuple(chromium_args),
            task_options=tuple((task_options or {}).items()),
        )
        self.task_name = task
        self.task: Task = make_task(task, **dict(self.config.task_options))
        self.render_mode = render_mode
        h, w, _ = self.config.screenshot_shape
        self.observation_space = spaces.Dict({
            "screenshot": spaces.Box(0, 255, (h, w, 3), np.uint8),
            "instruction": spaces.Text(MAX_TEXT, min_length=0, charset=CHARSET),
            "url": spaces.Text(MAX_TEXT, min_length=0, charset=CHARSET),
            "last_action_error": spaces.Text(MAX_TEXT, min_length=0, charset=CHARSET),
            "step": spaces.Discrete(self.config.max_steps + 1),
        })
        self.action_space = spaces.Text(1024, min_length=0, charset=CHARSET)
        self._worker: PlaywrightThread | None = None
        self._session: BrowserSession | None = None
        self._server: TaskServer | None = None
        self._finalizer: weakref.finalize | None = None
        self._seed = 0
        self._step = 0
        self._instruction = ""
        self._active = False
        self._last_obs: dict[str, Any] | None = None
        self._end_reason = "the episode is over"
        self._seen_events: dict[str, int] = {}

    # ------------------------------------------------------------------ plumbing
    @property
    def task_id(self) -> str:
        """The registered env id (``catp/<task>-v0``)."""
        return self.spec.id if self.spec is not None else f"catp/{self.task_name}-v0"

    def _ensure_started(self) -> None:
        if self._worker is not None and self._worker.alive and self._session is not None:
            return
        if self._server is None:
            mounts = self.task.mounts()
            self._server = TaskServer(mounts) if mounts else None
            self.task.bind(self._server)
        self._worker = PlaywrightThread(name=f"catp-playwright-{self.task_name}")
        self._session = BrowserSession(self.config, self._server.base_url if self._server else None)
        if self._finalizer is not None:
            self._finalizer.detach()
        # The finalizer holds the parts, never the env, so an env dropped without close() is
        # collected and its browser ended (at interpreter exit too).
        self._finalizer = weakref.finalize(self, _shutdown, self._worker, self._session, self._server)

    def _abandon_browser(self) -> None:
        """Give up the Playwright thread and its browser (processes killed, files removed);
        the next reset starts new ones."""
        worker, session = self._worker, self._session
        self._worker = self._session = None
        _shutdown(worker, session, None, graceful=False)

    def _call(self, fn: Any, *args: Any, limit_ms: int | None = None) -> Any:
        """Run ``fn(*args)`` on the Playwright thread within ``limit_ms`` (default: the step limit).

        Raises:
            PageHung: the call overran; the browser was killed and the thread is free again
                (or was given up, when even that did not free it).
        """
        assert self._worker is not None and self._session is not None
        limit_ms = self.config.step_timeout_ms if limit_ms is None else limit_ms
        worker, session = self._worker, self._session
        try:
            return worker.call(fn, *args, timeout=limit_ms / 1000)
        except CallTimeout:
            self._recover_from_hang()
            raise PageHung(
                f"the page did not answer within {limit_ms / 1000:g} s (a busy script or a frozen "
                "browser); the env killed that browser and ended the episode"
            ) from None
        finally:
            # Playwright keeps its last call's caller frames (ours, holding this env) until its
            # next call: make one from a frame that does not hold the env, so that the thread
            # and the browser never keep a dropped env alive (a dead browser's page answers at
            # once with an error, which is enough).
            if worker.alive and worker.busy_for is None:
                try:
                    worker.call(session.forget_last_call, timeout=_FORGET_S)
                except CallTimeout:  # a thread busy with a flood of events: it runs after it
                    pass

    def _recover_from_hang(self) -> None:
        worker, session = self._worker, self._session
        if worker is None or session is None:  # close() ran meanwhile (from another thread)
            return
        session.kill()
        try:
            worker.call(lambda: None, timeout=_FREE_AFTER_KILL_S)  # the stuck call fails once its browser is gone
        except CallTimeout:
            self._abandon_browser()

    # ------------------------------------------------------------- observation
    def _observe(self, error: str, deadline: float) -> tuple[dict[str, Any], list[dict[str, Any]], TaskStatus]:
        """Runs on the Playwright thread: screenshot, URL, elements and the task's verdict.

        Each read is retried while the page's own navigation interrupts it, until ``deadline``
        (``time.monotonic()``); a page still navigating then gives the previous screenshot, no
        elements and no success, with the reason added to ``last_action_error``.
        """
        session = self._session
        assert session is not None

        def steady(read: Any) -> Any:
            return read_steadily(session.page, lambda: session.alive, read, deadline)

        try:
            screenshot = steady(session.screenshot)
            elements = steady(lambda: session.elements(self.task.extra_selector))
            status = steady(lambda: self.task.status(session))
        except PageNavigating as exc:
            screenshot, elements = self._copy_last_obs()["screenshot"], []
            status = TaskStatus(success=False, done=False, reward=0.0)
            error = "; ".join(m for m in [error, str(exc)] if m)
        obs = {
            "screenshot": screenshot,
            "instruction": _clean(self._instruction),
            "url": _clean(session.url()),
            "last_action_error": _clean(error),
            "step": self._step,
        }
        return obs, elements, status

    def _info(self, elements: list[dict[str, Any]], status: TaskStatus | None,
              error: str | None = None) -> dict[str, Any]:
        session = self._session
        info: dict[str, Any] = {
            "elements": elements,
            "success": bool(status.success) if status else False,
            "task_id": self.task_id,
            "seed": self._seed,
            "step": self._step,
            "blocked_requests": list(session.events.blocked_requests) if session else [],
            "dialogs": list(session.events.dialogs) if session else [],
            "closed_popups": list(session.events.closed_popups) if session else [],
            "downloads": list(session.events.downloads) if session else [],
            "event_counts": dict(session.events.counts) if session else {},
        }
        if status is not None:
            info.update(status.extra)
        if error:
            info["error"] = error
        return info

    # -------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Start an episode. The same ``seed`` gives the same task and first observation.

        When the page or the browser fails (a page that hangs or does not load within the
        limits, a browser that dies twice), the returned ``info["error"]`` and the observation's
        ``last_action_error`` say why, the episode is already over, and the env stays usable.

        Raises:
            FileNotFoundError: Chromium is not installed.
            Exception: whatever the task itself raises for a bad seed or option.
        """
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        super().reset(seed=seed)
        self._seed = int(seed) if seed is not None else int(self.np_random.integers(0, 2**31 - 1))
        self._step = 0
        self._active = False
        self._last_obs = None
        self._instruction = ""
        error = ""
        for _attempt in range(2):
            self._ensure_started()
            try:
                obs, elements, status = self._call(self._reset_in_thread, limit_ms=self.config.reset_timeout_ms)
                error = ""
                break
            except PageHung as exc:  # the browser was killed already
                error = str(exc)
                break
            except (PlaywrightError, BrowserDied) as exc:  # e.g. the browser died between episodes
                error = f"browser failure: {_first_line(exc)}"
                if self._session is not None:
                    self._session.kill()  # the next launch starts a fresh browser
                if isinstance(exc, PlaywrightTimeout):  # the page did not load in time: no retry
                    break
        if error:
            self._end_reason = f"the episode could not start: {error}"
            obs = self._copy_last_obs()
            obs["last_action_error"] = _clean(self._end_reason)
            return obs, self._info([], None, error=self._end_reason)
        self._active = True
        self._last_obs = obs
        return obs, self._info(elements, status)

    def _reset_in_thread(self) -> tuple[dict[str, Any], list[dict[str, Any]], TaskStatus]:
        assert self._session is not None
        deadline = time.monotonic() + _OBSERVE_SHARE * self.config.reset_timeout_ms / 1000
        self._instruction = self.task.start(self._session, self._seed)
        self._session.collect_events()
        self._seen_events = self._session.events.mark()
        return self._observe("", deadline)

    def step(self, action: str) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """Apply one action string. Bad actions set ``last_action_error``; they never raise.

        A step that overruns ``step_timeout_ms`` (the page does not answer) or loses its browser
        ends the episode with ``info["error"]``.
        """
        if not self._active or self._last_obs is None:
            obs = self._copy_last_obs()
            obs["last_action_error"] = _clean(f"{self._end_reason}; call reset() to start a new one")
            return obs, 0.0, True, False, self._info([], None, error=obs["last_action_error"])
        self._step += 1
        try:
            obs, elements, status, ended = self._call(self._step_in_thread, action)
        except Exception as exc:  # noqa: BLE001 - browser death or hang must not escape
            from playwright.sync_api import TimeoutError as PlaywrightTimeout

            if isinstance(exc, PlaywrightTimeout):  # e.g. no screenshot from a page flooding itself
                self._recover_from_hang()
                message = (f"the page did not answer ({_first_line(exc)}); the env killed that browser "
                           "and ended the episode")
            else:
                message = str(exc) if isinstance(exc, PageHung) else f"browser failure: {_first_line(exc)}"
            self._end_reason = f"the episode ended: {message}"
            obs = self._copy_last_obs()
            obs["step"] = min(self._step, self.config.max_steps)
            obs["last_action_error"] = _clean(message)
            self._active = False
            return obs, 0.0, True, False, self._info([], None, error=message)
        terminated = ended or status.done
        truncated = not terminated and self._step >= self.config.max_steps
        self._active = not (terminated or truncated)
        self._last_obs = obs
        return obs, float(status.reward), terminated, truncated, self._info(elements, status)

    def _copy_last_obs(self) -> dict[str, Any]:
        """A fresh copy of the last observation (or a blank one before any reset)."""
        if self._last_obs is None:
            h, w, _ = self.config.screenshot_shape
            return {"screenshot": np.zeros((h, w, 3), np.uint8), "instruction": "", "url": "",
                    "last_action_error": "", "step": 0}
        obs = dict(self._last_obs)
        obs["screenshot"] = obs["screenshot"].copy()
        return obs

    def _step_in_thread(self, text: str) -> tuple[dict[str, Any], list[dict[str, Any]], TaskStatus, bool]:
        from playwright.sync_api import Error as PlaywrightError

        session = self._session
        assert session is not None
        deadline = time.monotonic() + _OBSERVE_SHARE * self.config.step_timeout_ms / 1000
        ended, error = False, ""
        try:
            action = parse_action(text)
        except ActionParseError as exc:
            action, error = None, str(exc)
        if action is not None:
            try:
                error = session.perform(action)
                ended = action.ends_episode
            except (PlaywrightError, ValueError, ArithmeticError) as exc:  # a refusal, not a death
                if not session.alive:
                    raise BrowserDied(f"{session.death()} (during {action})") from exc
                detail = str(exc).strip().splitlines()[0] if isinstance(exc, PlaywrightError) and str(exc).strip() \
                    else _first_line(exc)
                error = f"{action.name} failed: {detail}"
        # Report what happened since the last observation (the action, timers, scripts).
        session.collect_events()
        events = session.events.messages_since(self._seen_events)
        error = "; ".join([m for m in [error, *events] if m])
        if not session.alive:
            raise BrowserDied(session.death())
        self._seen_events = session.events.mark()
        obs, elements, status = self._observe(error, deadline)
        obs["step"] = min(self._step, self.config.max_steps)
        return obs, elements, status, ended

    # ----------------------------------------------------------------- extras
    def oracle_action(self, obs: dict[str, Any] | None = None, info: dict[str, Any] | None = None
                      ) -> str | None:
        """The next action that solves the task from the live page, or None.

        None when the task has no oracle, the episode is over, or the page cannot be read.
        ``obs`` and ``info`` are accepted for a policy's convenience; the DOM is the truth.
        """
        if not self._active or self._session is None:
            return None
        try:
            return self._call(self.task.oracle, self._session)
        except PageHung as exc:  # the browser was killed: the episode cannot go on
            self._active = False
            self._end_reason = f"the episode ended: {exc}"
            return None
        except Exception:  # noqa: BLE001 - an oracle never breaks the caller
            return None

    @property
    def instruction(self) -> str:
        """The current episode's instruction."""
        return self._instruction

    def render(self) -> np.ndarray | None:
        """The last screenshot when ``render_mode="rgb_array"``, else None."""
        if self.render_mode == "rgb_array" and self._last_obs is not None:
            return self._last_obs["screenshot"]
        return None

    def close(self) -> None:
        """Close the browser, stop the server and the Playwright thread. Idempotent."""
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        elif self._server is not None:
            self._server.stop()
        self._worker = self._session = None
        self._server = None
        self._active = False
        super().close()
