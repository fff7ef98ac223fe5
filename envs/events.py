"""What the env reports about a page's attempts: one episode's event logs, and each step's messages.

Four logs (blocked requests, dismissed dialogs, closed pop-ups, refused downloads) keep at most
:data:`MAX_EVENTS` entries per episode each, and every event is counted, listed or not, with
the ``window.open`` calls the page guard refused (:mod:`envs.page_guard`). A step's
``last_action_error`` gets one message per blocked request, and a summary with a count for
dialogs and pop-ups when there are more than :data:`LISTED_PER_STEP` (a storm of 2,000 dialogs
is one message, not 2,000).
"""

from __future__ import annotations

import urllib.parse

from envs.config import is_browser_service
from envs.page_guard import MAX_HISTORY_PER_STEP, MAX_POPUPS_PER_STEP, PageEvents

__all__ = ["LISTED_PER_STEP", "MAX_EVENTS", "EpisodeEvents"]

MAX_EVENTS = 500
"""Each event log (blocked requests, dialogs, pop-ups) keeps at most this many entries per
episode; later ones are counted (a page may fire requests in a loop)."""
LISTED_PER_STEP = 3
"""Dialogs or pop-ups of one step named one by one in ``last_action_error``; more are summarised."""

_COUNTED = ("blocked_requests", "dialogs", "closed_popups", "downloads", "refused_popups", "refused_history")


class EpisodeEvents:
    """The event logs of one episode. Not thread-safe: the Playwright thread owns it.

    Attributes:
        blocked_requests: URLs (or the proxy's ``"CONNECT host:port"``) refused, first 500.
        dialogs: ``"alert: text"`` of dialogs dismissed, first 500.
        closed_popups: URLs of pop-ups closed, first 500.
        downloads: URLs of downloads refused (in the page, or by the browser), first 500.
        counts: every event counted, listed or not: ``blocked_requests``, ``dialogs``,
            ``closed_popups``, ``downloads``, ``refused_popups`` (``window.open`` calls refused
            in the page) and ``refused_history`` (``history.pushState``/``replaceState`` calls
            past the per-step cap).
    """

    def __init__(self) -> None:
        self.blocked_requests: list[str] = []
        self.dialogs: list[str] = []
        self.closed_popups: list[str] = []
        self.downloads: list[str] = []
        self.counts: dict[str, int] = dict.fromkeys(_COUNTED, 0)
        self._notes: list[str] = []  # one per listed blocked request
        self._dropped = 0
        self._recent_from = (0, 0)  # where the blocked requests of the last two collections start

    def _record(self, name: str, entry: str) -> bool:
        self.counts[name] += 1
        log: list[str] = getattr(self, name)
        if len(log) >= MAX_EVENTS:
            self._dropped += 1
            return False
        log.append(entry)
        return True

    def block(self, url: str, note: str) -> None:
        """A refused request: ``note`` says how (``"blocked request to"``)."""
        if self._record("blocked_requests", url[:2000]):
            self._notes.append(f"{note} {url[:200]}")

    def dialog(self, text: str) -> None:
        """A dismissed dialog, ``"type: message"``."""
        self._record("dialogs", text[:200])

    def popup(self, url: str) -> None:
        """A pop-up closed."""
        self._record("closed_popups", url[:2000])

    def download(self, url: str) -> None:
        """A refused download."""
        self._record("downloads", url[:2000])

    def unlisted(self, name: str, count: int) -> None:
        """``count`` more events of log ``name`` that the page counted but did not list."""
        if count > 0:
            self.counts[name] += count
            self._dropped += count

    def refuse_popups(self, count: int) -> None:
        """``count`` ``window.open`` calls refused in the page."""
        self.counts["refused_popups"] += count

    def add_page_events(self, found: PageEvents) -> None:
        """Add what the page guard recorded (dialogs, refused WebRTC connections and pop-ups)."""
        for text in found.dialogs:
            self.dialog(text)
        for urls in found.webrtc:
            self.block(f"RTCPeerConnection({urls})", "refused")
        self.unlisted("dialogs", found.dialog_count - len(found.dialogs))
        for url in found.downloads:
            self.download(url)
        self.unlisted("blocked_requests", found.webrtc_count - len(found.webrtc))
        self.unlisted("downloads", found.download_count - len(found.downloads))
        self.refuse_popups(found.refused_popups)
        self.counts["refused_history"] += found.refused_history

    def add_proxy_refusals(self, lines: list[str]) -> None:
        """Add the refusing proxy's refusals (``"CONNECT host:443"``, ``"GET http://..."``) since
        the last call, except those of the browser's own services
        (:func:`envs.config.is_browser_service`) and those to an endpoint already blocked in
        this or the last call's window: Chromium preconnects to a navigation's host, and tunnels
        a WebSocket, that routing or the WebSocket event reported already (one attempt, once)."""
        recent = self.blocked_requests[self._recent_from[0]:]
        self._recent_from = (self._recent_from[1], len(self.blocked_requests))
        seen = {_endpoint(url) for url in recent}
        for line in lines:
            endpoint = _endpoint(line)
            if not is_browser_service(endpoint[0]) and endpoint not in seen:
                self.block(line, "the proxy refused")

    def mark(self) -> dict[str, int]:
        """Where the logs stand now (pass to :meth:`messages_since`)."""
        return {**self.counts, "notes": len(self._notes), "dropped": self._dropped,
                "dialog_list": len(self.dialogs), "popup_list": len(self.closed_popups),
                "download_list": len(self.downloads)}

    def messages_since(self, mark: dict[str, int]) -> list[str]:
        """Messages for the events after ``mark``, for ``last_action_error``."""
        msgs = list(self._notes[mark["notes"]:])
        msgs += _summary("dismissed dialog", "dismissed {n} dialogs", self.dialogs[mark["dialog_list"]:],
                         self.counts["dialogs"] - mark["dialogs"], "({})")
        msgs += _summary("closed pop-up", "closed {n} pop-ups", self.closed_popups[mark["popup_list"]:],
                         self.counts["closed_popups"] - mark["closed_popups"], "{}")
        msgs += _summary("refused download of", "refused {n} downloads", self.downloads[mark["download_list"]:],
                         self.counts["downloads"] - mark["downloads"], "{}")
        refused = self.counts["refused_popups"] - mark["refused_popups"]
        if refused:
            msgs.append(f"refused {refused} window.open call(s) or new-window link(s): more than "
                        f"{MAX_POPUPS_PER_STEP} pop-ups in one step")
        history = self.counts["refused_history"] - mark["refused_history"]
        if history:
            msgs.append(f"refused {history} history.pushState/replaceState call(s): more than "
                        f"{MAX_HISTORY_PER_STEP} in one step")
        if self._dropped > mark["dropped"]:
            msgs.append(f"{self._dropped - mark['dropped']} more events not listed "
                        f"(each log keeps {MAX_EVENTS} per episode)")
        return msgs


def _summary(one: str, many: str, listed: list[str], count: int, shown: str) -> list[str]:
    if count <= 0:
        return []
    if count <= LISTED_PER_STEP and len(listed) == count:
        return [f"{one} {shown.format(entry[:200])}" for entry in listed]
    first = f" (first: {listed[0][:200]})" if listed else ""
    return [many.format(n=count) + first]


_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def _endpoint(target: str) -> tuple[str, int]:
    """(host, port) of a URL, or of a proxy refusal (``"CONNECT host:443"``, ``"POST http://host/x"``)."""
    method, _, rest = target.partition(" ")
    if method == "CONNECT":
        host, _, port = rest.rpartition(":")
        return host.strip("[]").lower(), int(port) if port.isdigit() else 443
    try:
        parts = urllib.parse.urlsplit(rest if rest and method.isupper() else target)
        return (parts.hostname or "", parts.port or _DEFAULT_PORTS.get(parts.scheme, 0))
    except ValueError:  # a port out of range
        return ("", 0)
