"""Configuration of a :class:`envs.web_env.WebEnv`: a frozen, validated dataclass."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["BROWSER_SERVICE_DOMAINS", "CHROMIUM_ARGS", "CONTAINMENT_ARGS", "DEFAULT_EXECUTABLE", "JS_HEAP_CAP_MB",
           "RESERVED_FLAGS",
           "WebEnvConfig", "is_browser_service"]

DEFAULT_EXECUTABLE = "/usr/bin/chromium"

JS_HEAP_CAP_MB = 1024
"""Cap on each renderer's JavaScript heap (V8's old space), in MiB: a page that allocates past
it crashes its renderer, which ends the episode with a clear error; the next reset starts a
fresh context in the same browser. (ArrayBuffers live outside this heap.)"""

CHROMIUM_ARGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--dns-prefetch-disable",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    f"--js-flags=--max-old-space-size={JS_HEAP_CAP_MB}",
)
"""Launch flags measured to work on the development machines (see platform notes). The
``--dns-prefetch-disable`` and ``--host-resolver-rules`` flags keep Chromium from resolving any
host name (defence in depth: every connection already goes through the env's refusing proxy,
see :data:`CONTAINMENT_ARGS`); ``--js-flags`` caps each page's JavaScript heap
(:data:`JS_HEAP_CAP_MB`)."""

CONTAINMENT_ARGS: tuple[str, ...] = (
    "--webrtc-ip-handling-policy=disable_non_proxied_udp",
)
"""Flags added to every launch after ``chromium_args``, with ``--proxy-server`` (the env's
refusing proxy on 127.0.0.1) and ``--proxy-bypass-list`` (``<-loopback>`` plus the env's own
task server only). WebRTC may not send UDP around the proxy (measured with Chromium 156: the
often-quoted ``--force-webrtc-ip-handling-policy`` does not stop STUN packets; this flag does)."""

BROWSER_SERVICE_DOMAINS: tuple[str, ...] = ("google.com", "googleapis.com", "gvt1.com", "gvt2.com", "gstatic.com")
"""Domains of the hosts Chromium 156 contacts on its own, with the flags above: update checks and
downloads (``update.googleapis.com``, ``redirector.gvt1.com``), sign-in (``accounts.google.com``)
and autofill hints (``content-autofill.googleapis.com``), seen at the refusing proxy in every
episode. The proxy refuses them like everything else, but they are not the page's doing, so
its refusals of these domains (and their subdomains) are not reported in the page's steps. What
the page itself requests from them passes Playwright's routing and is reported there."""


def is_browser_service(host: str) -> bool:
    """Whether ``host`` is in :data:`BROWSER_SERVICE_DOMAINS` or below one of them."""
    host = host.lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in BROWSER_SERVICE_DOMAINS)


RESERVED_FLAGS: tuple[str, ...] = (
    "--proxy-server", "--proxy-bypass-list", "--proxy-pac-url", "--proxy-auto-detect",
    "--no-proxy-server", "--webrtc-ip-handling-policy", "--force-webrtc-ip-handling-policy",
    "--remote-debugging-port", "--remote-debugging-pipe", "--remote-debugging-address",
    "--user-data-dir",
)
"""Flags ``chromium_args`` may not set: the env sets them itself to keep traffic contained."""


@dataclass(frozen=True)
class WebEnvConfig:
    """Everything that shapes a web environment, besides the task itself.

    Attributes:
        viewport: (width, height) of the page in CSS pixels.
        device_scale_factor: screenshot pixels per CSS pixel; the screenshot is
            ``(round(height * dsf), round(width * dsf), 3)``.
        max_steps: steps before the episode is truncated.
        executable_path: the Chromium binary (never downloaded by Playwright).
        headless: run without a window.
        action_timeout_ms: limit for one browser action (click, key, screenshot, the wait for a
            page load an action started); a slow action is an action error, the episode goes on.
        navigation_timeout_ms: limit for the page load that starts an episode.
        step_timeout_ms: hard limit for one ``step`` (and for ``oracle_action``): a page that does
            not answer in time (a busy script, a frozen browser) ends the episode with an error,
            and the env kills that browser's processes; the step returns in about this time
            plus a fraction of a second.
        reset_timeout_ms: the same hard limit for ``reset`` (launch, page load, first observation).
        max_type_chars: longest text one ``type(...)`` action may type.
        chromium_args: command-line flags for Chromium.
        task_options: keyword arguments passed to the task's constructor.
    """

    viewport: tuple[int, int] = (640, 480)
    device_scale_factor: float = 1.0
    max_steps: int = 15
    executable_path: str = DEFAULT_EXECUTABLE
    headless: bool = True
    action_timeout_ms: int = 5_000
    navigation_timeout_ms: int = 15_000
    step_timeout_ms: int = 8_000
    reset_timeout_ms: int = 20_000
    max_type_chars: int = 500
    chromium_args: tuple[str, ...] = CHROMIUM_ARGS
    task_options: tuple[tuple[str, object], ...] = field(default=())

    def __post_init__(self) -> None:
        vp = self.viewport
        if (
            not isinstance(vp, (tuple, list))
            or len(vp) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in vp)
        ):
            raise ValueError(f"viewport must be (width, height) as two ints, got {vp!r}")
        if not (16 <= vp[0] <= 4096 and 16 <= vp[1] <= 4096):
            raise ValueError(f"viewport sides must be in [16, 4096] CSS pixels, got {tuple(vp)}")
        object.__setattr__(self, "viewport", (int(vp[0]), int(vp[1])))
        dsf = self.device_scale_factor
        if not isinstance(dsf, (int, float)) or isinstance(dsf, bool) or not math.isfinite(dsf):
            raise ValueError(f"device_scale_factor must be a finite number, got {dsf!r}")
        if not 0.25 <= dsf <= 8.0:
            raise ValueError(f"device_scale_factor must be in [0.25, 8], got {dsf}")
        object.__setattr__(self, "device_scale_factor", float(dsf))
        if not isinstance(self.max_steps, int) or isinstance(self.max_steps, bool) or self.max_steps < 1:
            raise ValueError(f"max_steps must be a positive int, got {self.max_steps!r}")
        for name in ("action_timeout_ms", "navigation_timeout_ms", "step_timeout_ms", "reset_timeout_ms"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 100 <= value <= 600_000:
                raise ValueError(f"{name} must be an int in [100, 600000] ms, got {value!r}")
        if self.action_timeout_ms >= self.step_timeout_ms:
            raise ValueError(f"action_timeout_ms ({self.action_timeout_ms}) must be below step_timeout_ms "
                             f"({self.step_timeout_ms}), so that a slow action is reported before the "
                             "step's hard limit stops the browser; raise step_timeout_ms as well")
        if self.navigation_timeout_ms >= self.reset_timeout_ms:
            raise ValueError(f"navigation_timeout_ms ({self.navigation_timeout_ms}) must be below "
                             f"reset_timeout_ms ({self.reset_timeout_ms}); raise reset_timeout_ms as well")
        if not isinstance(self.max_type_chars, int) or isinstance(self.max_type_chars, bool) or self.max_type_chars < 1:
            raise ValueError(f"max_type_chars must be a positive int, got {self.max_type_chars!r}")
        if not isinstance(self.headless, bool):
            raise ValueError(f"headless must be True or False, got {self.headless!r}")
        if not isinstance(self.executable_path, str) or not self.executable_path:
            raise ValueError(f"executable_path must be a non-empty path, got {self.executable_path!r}")
        args = self.chromium_args
        if isinstance(args, str) or not all(isinstance(a, str) and a.startswith("--") for a in args):
            raise ValueError(f"chromium_args must be a sequence of '--flag' strings, got {args!r}")
        for arg in args:
            if arg.split("=", 1)[0] in RESERVED_FLAGS:
                raise ValueError(f"chromium_args may not contain {arg!r}: the env sets "
                                 f"{arg.split('=', 1)[0]} itself to keep traffic contained")
        object.__setattr__(self, "chromium_args", tuple(args))
        object.__setattr__(self, "task_options", tuple(sorted(dict(self.task_options).items())))

    @property
    def screenshot_shape(self) -> tuple[int, int, int]:
        """(height, width, 3) of the screenshot in device pixels."""
        w, h = self.viewport
        return (round(h * self.device_scale_factor), round(w * self.device_scale_factor), 3)
