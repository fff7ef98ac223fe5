"""A thread that owns one sync Playwright instance and runs calls on it.

Sync Playwright refuses to start inside a running asyncio loop (Jupyter, an async
server) and allows only one instance per thread. Each env therefore gives its
Playwright a private thread: every browser call is sent there and the caller waits
for the result. This costs tens of microseconds per call, lets several envs live in
one process, and works from inside an event loop.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable, TypeVar

__all__ = ["PlaywrightThread"]

T = TypeVar("T")
_STOP = object()


class PlaywrightThread:
    """Run callables on a dedicated daemon thread, one at a time, in submission order."""

    def __init__(self, name: str = "catp-playwright") -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._closed = False
        self._thread.start()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            fn, args, kwargs, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller unchanged
                future.set_exception(exc)

    def call(self, fn: Callable[..., T], *args: Any, timeout: float | None = None, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the thread and return its result (or raise its error).

        Raises:
            RuntimeError: if the thread was stopped.
            TimeoutError: if ``timeout`` seconds pass first (the call keeps running).
        """
        if self._closed:
            raise RuntimeError("the Playwright thread was stopped; create a new env")
        if threading.current_thread() is self._thread:
            return fn(*args, **kwargs)
        future: Future[T] = Future()
        self._queue.put((fn, args, kwargs, future))
        return future.result(timeout=timeout)

    @property
    def alive(self) -> bool:
        """Whether the thread still accepts calls."""
        return not self._closed and self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread after pending calls finish. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
