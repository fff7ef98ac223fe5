"""Observations of a page that navigates under them: retried, within a deadline.

A page may reload or navigate itself at any moment (a timer, a redirect, a reload loop). A
Playwright call that reads the page (a screenshot, the element list, the task's success
check) then fails with "Execution context was destroyed" or the like, although the browser is
alive and well: the document it was reading was replaced between two calls. That is a moment
to wait for and try again, not a dead browser. :func:`read_steadily` does so until a deadline;
a page that is still navigating then raises :class:`PageNavigating`, which the env reports in
``last_action_error`` while the episode goes on.
"""

from __future__ import annotations

import time
from typing import Any, Callable, TypeVar

__all__ = ["NAVIGATION_ERRORS", "PageNavigating", "is_navigation_error", "read_steadily"]

T = TypeVar("T")

NAVIGATION_ERRORS: tuple[str, ...] = (
    "Execution context was destroyed",
    "Cannot find context with specified id",
    "Frame was detached",
    "frame was detached",
    "frame got detached",
    "interrupted by another navigation",
    "Not attached to an active page",  # CDP, between a navigation's commit and its new document
    "Unable to capture screenshot",  # CDP Page.captureScreenshot while a new document has no frame yet
)
"""Parts of Playwright's error messages that mean "the document was replaced under the call"."""

_PAUSE_S = 0.25
"""Longest wait for the next document between two tries."""


class PageNavigating(RuntimeError):
    """The page kept navigating until the observation's deadline; the browser is alive."""


def is_navigation_error(exc: BaseException) -> bool:
    """Whether ``exc`` says that the page navigated during the call (not that it timed out or died)."""
    text = str(exc)
    return type(exc).__name__ != "TimeoutError" and any(part in text for part in NAVIGATION_ERRORS)


def read_steadily(page: Any, alive: Callable[[], bool], read: Callable[[], T], deadline: float) -> T:
    """``read()``, tried again while the page's own navigation interrupts it, until ``deadline``
    (a ``time.monotonic()`` value).

    Raises:
        PageNavigating: the page was still navigating at the deadline.
        playwright Error: any other failure, or any failure once ``alive()`` is false.
    """
    from playwright.sync_api import Error as PlaywrightError

    tries = 0
    started = time.monotonic()
    while True:
        try:
            return read()
        except PlaywrightError as exc:
            if not is_navigation_error(exc) or not alive():
                raise
            tries += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                first = str(exc).strip().splitlines()[0]
                raise PageNavigating(
                    f"the page kept navigating for {time.monotonic() - started:.1f} s ({tries} tries to "
                    f"observe it failed, the last with: {first}); this observation is incomplete"
                ) from exc
            try:  # the next document: wait until it can be read (or for a moment)
                page.wait_for_load_state("domcontentloaded", timeout=max(1.0, min(remaining, _PAUSE_S) * 1000))
            except PlaywrightError:  # still navigating, or the wait itself was interrupted
                pass
