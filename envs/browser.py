"""One Chromium, driven through sync Playwright: episodes, guards, actions and screenshots.

A :class:`BrowserSession` owns one Playwright instance and one browser, reused across
episodes; each episode gets a fresh context and page (nothing an earlier one stored is
readable). Its methods must run on the thread of the env's :class:`envs.worker.PlaywrightThread`, except
:meth:`BrowserSession.kill` and :meth:`BrowserSession.release`, which work from any thread and
on a browser that no longer answers.

Containment has two layers:

* **Below the page** (what holds): Chromium is launched with ``--proxy-server`` set to a
  :class:`envs.server.RefusingProxy` of its own and ``--proxy-bypass-list`` set to
  ``<-loopback>`` plus the env's task server, so every connection Chromium opens to anything
  else (preconnects, ``https`` and WebSocket tunnels, its background requests) ends at a proxy
  that answers 403; WebRTC may not send UDP around the proxy, and host names do not resolve
  (:data:`envs.config.CONTAINMENT_ARGS`, :data:`envs.config.CHROMIUM_ARGS`).
* **Reporting**: what the page attempts is recorded (:class:`envs.events.EpisodeEvents`),
  whether Playwright's routing refused it (requests, navigations, pop-ups' loads), the proxy
  did (WebSockets, preconnects: its refusals are attributed to the step that saw them),
  Chromium refused it itself (``file://`` from a web page, top-level ``data:``), the page
  guard did (WebRTC peer connections, ``window.open`` past the cap, :mod:`envs.page_guard`)
  or it happened without traffic (the page navigating itself to ``about:``, ``blob:`` or
  ``data:`` documents, pop-ups).
"""

from __future__ import annotations

import base64
import inspect
import io
import os
import re
import shutil
import urllib.parse
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from envs.actions import PRIMITIVES, Action
from envs.config import CONTAINMENT_ARGS, WebEnvConfig
from envs.elements import (ELEMENTS_JS, FOCUS_JS, GRID_BUDGET_MS, GRID_STEP, INTERACTIVE_SELECTOR, LOCATE_JS,
                           MAX_ELEMENTS, MAX_VISITS, SCROLL_JS, SETTLE_JS, normalise_elements)
from envs.events import MAX_EVENTS, EpisodeEvents
from envs.page_guard import PageEvents, guard_key, guard_script, take_js
from envs.server import RefusingProxy
from envs.worker import BrowserProcesses

__all__ = ["BrowserDied", "BrowserSession", "INSTALL_HINT", "MAX_EVENTS", "artifacts_option"]

INSTALL_HINT = "apt-get update && apt-get install -y chromium"

# Chromium's own refusals, which never reach the network layer (so not Playwright's routing).
_REFUSED_RE = re.compile(r"^Not allowed to (?:load local resource|navigate top frame to \w+ URL): (\S+)")
_EMPTY_FRAMES = ("about:blank", "about:srcdoc")  # every frame's first document; nothing loads


def artifacts_option(launch: Callable[..., Any], folder: Path) -> dict[str, str]:
    """``{"artifacts_dir": folder}`` where this Playwright's ``launch`` takes that option, else ``{}``.

    Playwright's Python API has ``artifacts_dir`` since after 1.44 (which BrowserGym pins). Without
    it the driver makes its artifacts folder (``playwright-artifacts-*``: downloads, traces, videos;
    our envs refuse downloads and record neither) in the system temp folder instead of the env's
    own, so :meth:`BrowserSession.release` cannot remove it; Playwright removes it when the browser
    closes, but one killed together with its driver can leave that folder behind.
    """
    return {"artifacts_dir": str(folder)} if "artifacts_dir" in inspect.signature(launch).parameters else {}


class BrowserDied(RuntimeError):
    """The browser process (or the episode's page) is gone; the episode cannot go on."""


class BrowserSession:
    """The browser side of one env. Not thread-safe: call it from the Playwright thread only."""

    def __init__(self, config: WebEnvConfig, server_origin: str | None = None) -> None:
        """``server_origin`` (``http://127.0.0.1:<port>``) is the env's task server, the only
        place Chromium may connect to; None when the task has no server (MiniWoB's ``file://``)."""
        self.config = config
        self.server_origin = server_origin
        self._pw: Any = None
        self._browser: Any = None
        self._context: Any = None
        self._cdp: Any = None  # the episode page's CDP session (screenshots)
        self.page: Any = None
        self._allow: Callable[[str], bool] = lambda url: True
        self._disconnected = False
        self._page_crashed = False
        self._mouse = (config.viewport[0] / 2, config.viewport[1] / 2)
        self.processes = BrowserProcesses()
        self.proxy: RefusingProxy | None = None
        self.events = EpisodeEvents()
        self._guard_key = guard_key()
        self._released = False

    # ----------------------------------------------------------------- lifecycle
    @property
    def alive(self) -> bool:
        """Whether the browser is connected and the episode's page has not crashed."""
        return (
            self._browser is not None
            and not self._disconnected
            and not self._page_crashed
            and self._browser.is_connected()
        )

    def death(self) -> str:
        """Why the episode cannot go on: the page's renderer crashed, or the browser is gone."""
        if self._page_crashed and not self._disconnected:
            return ("the page crashed (its renderer ended: out of memory, e.g. past the JavaScript heap "
                    "cap set by --js-flags=--max-old-space-size, or killed); the next reset() starts afresh")
        return "the browser is not running"

    def launch(self) -> None:
        """Start Playwright and Chromium if they are not running (relaunch after a death)."""
        if self._browser is not None and not self._disconnected and self._browser.is_connected():
            return
        if self._released:
            raise RuntimeError("this browser session was released; the env starts a new one at reset()")
        self._drop_browser()
        self.processes.kill_browser()  # what a dead or killed browser left (crash handlers)
        self.processes.remove_stale_profiles()
        path = self.config.executable_path
        if not (os.path.isfile(path) or shutil.which(path)):
            raise FileNotFoundError(
                f"Chromium was not found at {path!r}. Install it with `{INSTALL_HINT}` "
                "or pass executable_path=... to the env (never `playwright install`)."
            )
        if self.proxy is None:
            self.proxy = RefusingProxy()
        if self._pw is None:
            from playwright.sync_api import sync_playwright

            self._pw = sync_playwright().start()
        self._browser = self._pw.chromium.launch(
            executable_path=path,
            headless=self.config.headless,
            args=[*self.config.chromium_args, *self.containment_args()],
            env=self.processes.launch_env(),
            timeout=self.config.reset_timeout_ms,
            **artifacts_option(self._pw.chromium.launch, self.processes.artifacts_dir),
        )
        self._disconnected = False
        self._browser.on("disconnected", self._on_disconnected)
        self.processes.record_browser(self._ask_browser_pid())

    def containment_args(self) -> list[str]:
        """The flags that send every connection but those to the task server to the proxy."""
        assert self.proxy is not None
        bypass = "<-loopback>" + (f";{self.server_origin}" if self.server_origin else "")
        return [f"--proxy-server={self.proxy.url}", f"--proxy-bypass-list={bypass}", *CONTAINMENT_ARGS]

    def _on_disconnected(self, *_: Any) -> None:
        self._disconnected = True

    def _drop_browser(self) -> None:
        for obj in (self._context, self._browser):
            if obj is not None:
                try:
                    obj.close()
                except Exception:  # noqa: BLE001 - it may be dead already; nothing to recover
                    pass
        self._context = self.page = self._browser = self._cdp = None

    def close(self) -> None:
        """Close the browser and stop Playwright, then :meth:`release`. Idempotent."""
        self._drop_browser()
        if self._pw is not None:
            try:
                self._pw.stop()
            except Exception:  # noqa: BLE001 - the driver may be gone already
                pass
            self._pw = None
        self.release()

    def kill(self) -> int:
        """Kill this session's browser processes by pid; return how many. Any thread may call
        it, and it works on a browser that does not answer (a busy renderer, a SIGSTOP): a
        Playwright call waiting on that browser then fails within a fraction of a second."""
        self._disconnected = True
        return self.processes.kill_browser()

    def release(self) -> None:
        """Leave nothing behind: kill what is left of the browsers and the Playwright driver,
        stop the proxy and remove the temp and profile folders. Any thread; idempotent. The
        session cannot launch again afterwards."""
        self._released = self._disconnected = True
        self.processes.kill_browser()
        self.processes.kill_driver()
        if self.proxy is not None:
            self.proxy.stop()
        self.processes.remove_files()

    def forget_last_call(self) -> None:
        """Make one Playwright call that touches only the driver (not the page).

        Playwright keeps the caller frames of its latest call (its task holds them) until the
        next call runs its event loop. Those frames hold whoever called, e.g. the env; called
        from a frame that holds only this session, this releases them.
        """
        if self._pw is None or self.page is None:
            return
        try:
            self.page.wait_for_timeout(0)
        except Exception:  # noqa: BLE001 - a closed page or a dead browser: the loop ran anyway
            pass

    # ------------------------------------------------------------------ episodes
    def new_episode(self, allow: Callable[[str], bool]) -> Any:
        """Start an episode guarded by ``allow`` in a fresh browser context; return its page.

        The browser process is reused, but every episode gets a new context (Chromium's
        incognito-like profile): nothing a page stored in an earlier episode (cookies, web
        storage, IndexedDB, the Cache API, service workers, ``window.name``, history,
        permissions, the HTTP cache) is readable in this one. The old context is closed first.
        """
        self.launch()
        self._allow = allow
        self.events = EpisodeEvents()
        if self.proxy is not None:
            self.proxy.take()  # refusals before this episode (the browser's start) are not its
        vw, vh = self.config.viewport
        self._mouse = (vw / 2, vh / 2)
        self._open_context()
        return self.page

    def _open_context(self) -> None:
        if self._context is not None:
            try:
                self._context.close()
            except Exception:  # noqa: BLE001 - a broken context is replaced below anyway
                pass
        self._page_crashed = False
        vw, vh = self.config.viewport
        ctx = self._browser.new_context(
            viewport={"width": vw, "height": vh},
            device_scale_factor=self.config.device_scale_factor,
            service_workers="block",
            accept_downloads=False,
        )
        ctx.set_default_timeout(self.config.action_timeout_ms)
        ctx.set_default_navigation_timeout(self.config.navigation_timeout_ms)
        ctx.add_init_script(guard_script(self._guard_key, MAX_EVENTS))
        ctx.route("**/*", self._route)
        page = ctx.new_page()
        page.on("dialog", self._on_dialog)
        page.on("crash", self._on_crash)
        page.on("websocket", self._on_websocket)
        page.on("console", self._on_console)
        page.on("framenavigated", self._on_frame_navigated)
        page.on("download", self._on_download)
        ctx.on("page", self._on_popup)
        self._context, self.page = ctx, page
        self._cdp = ctx.new_cdp_session(page)

    def _allowed(self, url: str) -> bool:
        try:
            return bool(self._allow(url))
        except ValueError:  # a URL the rule cannot read (e.g. a port out of range) is refused
            return False

    def _block(self, url: str, note: str) -> None:
        self.events.block(url, note)

    def _route(self, route: Any) -> None:
        request = route.request
        url = request.url
        try:
            if self._allowed(url):
                route.continue_()
                return
            self._block(url, "blocked request to")
            if request.is_navigation_request():
                # A 204 answer leaves the current document in place (no error page).
                route.fulfill(status=204, body="")
            else:
                route.abort("blockedbyclient")
        except Exception:  # noqa: BLE001 - the page or context is closing; nothing left to route
            pass

    def _on_websocket(self, websocket: Any) -> None:
        # No task uses WebSockets: every one ends at the refusing proxy (even to the task
        # server, whose bypass rule is for http:// only). Reported here, when it is created.
        self._block(websocket.url, "blocked WebSocket to")

    def _on_console(self, message: Any) -> None:
        if message.type == "error" and (match := _REFUSED_RE.match(message.text)):
            self._block(match.group(1), "blocked request to")

    def _on_frame_navigated(self, frame: Any) -> None:
        # Navigations to documents that need no request (about:, blob:, data:) pass Playwright's
        # routing; they carry no traffic, but the page has left the task: report it.
        url = frame.url
        if self._allowed(url):
            return
        if frame.parent_frame is None:
            self._block(url, "the page navigated away from the task to")
        elif url not in _EMPTY_FRAMES and urllib.parse.urlsplit(url).scheme not in ("http", "https", "file"):
            self._block(url, "a frame navigated to")

    def _on_dialog(self, dialog: Any) -> None:
        # Dialogs of documents the page guard does not cover (another origin's frames, beforeunload).
        self.events.dialog(f"{dialog.type}: {dialog.message}")
        try:
            dialog.dismiss()
        except Exception:  # noqa: BLE001 - the dialog may have closed itself
            pass

    def _on_download(self, download: Any) -> None:
        # One the page guard did not stop (a response with Content-Disposition, a frame):
        # Chromium refuses it (Playwright sets Browser.setDownloadBehavior "deny" on the context).
        self.events.download(download.url)

    def _on_crash(self, *_: Any) -> None:
        self._page_crashed = True

    def _on_popup(self, popup: Any) -> None:
        if popup is self.page:
            return
        self.events.popup(popup.url)
        try:
            popup.close()
        except Exception:  # noqa: BLE001 - it may be closing already
            pass

    def goto(self, url: str) -> None:
        """Load ``url`` in the episode's page and wait for its load event."""
        self.page.goto(url, wait_until="load")

    # ------------------------------------------------------------------- actions
    def perform(self, action: Action) -> str:
        """Carry out one action; return an error message ("" when it worked).

        Dispatches by name to the handler ``_act_<name>`` of the primitive (see
        :data:`envs.actions.PRIMITIVES`); every primitive has one (checked at import).

        Raises:
            BrowserDied: if the browser is gone.
            playwright Error: for other failures (the env turns them into a message).
        """
        if not self.alive:
            raise BrowserDied(self.death())
        return getattr(self, f"_act_{action.name}")(*action.args)

    def _act_click(self, x: float, y: float) -> str:
        return self._click("click", x, y)

    def _act_double_click(self, x: float, y: float) -> str:
        return self._click("double_click", x, y)

    def _click(self, name: str, x: float, y: float) -> str:
        x, y = float(x), float(y)
        h, w, _ = self.config.screenshot_shape
        if not (0 <= x < w and 0 <= y < h):
            return f"{name}({x:g}, {y:g}) is outside the screenshot ({w}x{h} pixels)"
        dsf = self.config.device_scale_factor
        cx, cy = x / dsf, y / dsf
        self._mouse = (cx, cy)
        if name == "click":
            self.page.mouse.click(cx, cy)
        else:
            self.page.mouse.dblclick(cx, cy)
        self.settle()
        return ""

    def _act_type(self, text: str) -> str:
        if len(text) > self.config.max_type_chars:
            return f"type: text is {len(text)} characters long; the limit is {self.config.max_type_chars}"
        if not self.page.evaluate(FOCUS_JS):
            return "type: no element has focus; click a text field first"
        self.page.keyboard.type(text)
        self.settle()
        return ""

    def _act_press(self, key: str) -> str:
        self.page.keyboard.press(key)
        self.settle()
        return ""

    def _act_scroll(self, dx: float, dy: float) -> str:
        dsf = self.config.device_scale_factor
        self.page.evaluate(SCROLL_JS, [self._mouse[0], self._mouse[1], float(dx) / dsf, float(dy) / dsf])
        self.settle()
        return ""

    def _act_done(self) -> str:
        return ""  # the env ends the episode (Action.ends_episode)

    def settle(self) -> None:
        """Let a frame render and any navigation the action started finish loading (at most
        ``action_timeout_ms``, and at most 25 % of ``step_timeout_ms``, so that a page that
        never finishes loading, e.g. one reloading itself, leaves the step time to observe it)."""
        try:
            self.page.evaluate(SETTLE_JS)
        except Exception:  # noqa: BLE001 - a navigation replaced the document: wait for it
            if not self.alive:
                raise
            wait_ms = min(self.config.action_timeout_ms, 0.25 * self.config.step_timeout_ms)
            self.page.wait_for_load_state("load", timeout=wait_ms)

    def collect_events(self) -> None:
        """Add what the page guard and the proxy recorded since the last collection to
        :attr:`events` (a page that cannot be read now has its record sent on when it is left)."""
        from playwright.sync_api import Error as PlaywrightError

        if self.page is not None and self.alive:
            try:
                self.events.add_page_events(PageEvents(self.page.evaluate(take_js(self._guard_key))))
            except PlaywrightError:  # navigating, or closed: nothing to read in this document
                pass
        if self.proxy is not None:
            self.events.add_proxy_refusals(self.proxy.take())

    # -------------------------------------------------------------- observation
    def screenshot(self) -> np.ndarray:
        """The viewport as an RGB uint8 array of shape ``config.screenshot_shape``."""
        # Straight from the compositor (CDP Page.captureScreenshot): Playwright's page.screenshot
        # hides the caret with a style it adds to and removes from every document around each
        # shot (two style passes over the whole DOM, 1-2 s at 100k nodes) and waits on scripts
        # in the page, which a page reloading itself every 20 ms never lets finish. The page
        # guard hides the caret once per document instead.
        png = base64.b64decode(self._cdp.send("Page.captureScreenshot", {"format": "png"})["data"])
        image = Image.open(io.BytesIO(png)).convert("RGB")
        array = np.asarray(image, dtype=np.uint8)
        h, w, _ = self.config.screenshot_shape
        if array.shape[:2] != (h, w):  # rounding of fractional scale factors
            fixed = np.zeros((h, w, 3), dtype=np.uint8)
            hh, ww = min(h, array.shape[0]), min(w, array.shape[1])
            fixed[:hh, :ww] = array[:hh, :ww]
            array = fixed
        return array

    def elements(self, extra_selector: str | None = None, max_text: int = 100) -> list[dict[str, Any]]:
        """Visible interactive elements (see :mod:`envs.elements`)."""
        raw = self.page.evaluate(
            ELEMENTS_JS,
            [INTERACTIVE_SELECTOR, self.config.device_scale_factor, extra_selector or "", max_text, MAX_ELEMENTS,
             MAX_VISITS, GRID_STEP, GRID_BUDGET_MS],
        )
        return normalise_elements(raw)

    def locate(self, selector: str) -> dict[str, Any] | None:
        """Centre of the first element matching ``selector`` in screenshot pixels, or a scroll hint."""
        return self.page.evaluate(LOCATE_JS, [selector, self.config.device_scale_factor])

    def browser_pid(self) -> int | None:
        """Process id of the browser (from Chromium itself), or None if it is not running."""
        if not self.alive:
            return None
        return self._ask_browser_pid()

    def _ask_browser_pid(self) -> int:
        cdp = self._browser.new_browser_cdp_session()
        try:
            procs = cdp.send("SystemInfo.getProcessInfo")["processInfo"]
        finally:
            cdp.detach()
        pid = next((int(p["id"]) for p in procs if p.get("type") == "browser"), None)
        if pid is None:
            raise BrowserDied("Chromium did not name its browser process")
        return pid

    def url(self) -> str:
        """The page's current URL ("" when there is no page)."""
        return self.page.url if self.page is not None else ""


_unhandled = sorted(set(PRIMITIVES) - {n[len("_act_"):] for n in vars(BrowserSession) if n.startswith("_act_")})
if _unhandled:  # a primitive was added to envs.actions without its handler here
    raise TypeError(f"BrowserSession has no handler _act_<name> for the primitive(s) {_unhandled}")
