"""The part of the env's guard that runs inside the page: dialogs, pop-up storms and WebRTC.

Some things a page does cost the env a round trip through Playwright each (a dialog waits for
Python to dismiss it; a pop-up becomes a Playwright page that Python then closes), so a page
that does them in a loop (2,000 ``alert()`` calls, 50 ``window.open()`` calls) used to run into
the step's hang limit. Others carry no request the routing layer could see (a WebRTC peer
connection). An init script, added to every document of the episode's context, handles them
in the page, where they cost next to nothing:

* ``alert``, ``confirm`` and ``prompt`` return at once as a dismissed dialog would
  (``undefined``, ``false``, ``null``) and are recorded;
* ``window.open`` works for the first :data:`MAX_POPUPS_PER_STEP` calls since the env last read
  the record (once per step); later calls return ``null``, as a pop-up blocker does, and are
  counted (the pop-ups that do open are closed by the env as before); clicks on links that
  open a new window (``target="_blank"``) count against the same cap, and past it they do
  nothing;
* ``RTCPeerConnection`` stays a function (so ``typeof RTCPeerConnection`` feature tests pass),
  but constructing one throws a ``NotAllowedError`` and is recorded with its ICE servers.

The wrappers take the natives' places as own properties of ``window`` with the natives'
attributes, so a page that declares a global ``function open()`` of its own still loads (a
bundled task does); a page can replace or delete them, but that does not bring the natives
back. Frames of the top document's origin report
into its record; other frames keep the natives, and their dialogs and pop-ups take the slower
path through Playwright's handlers (still dismissed, closed and reported). A page can still
reach the originals through a frame whose document the script does not run in, and it can
read (and so hide) its own record; neither lets anything out: dialogs stay dismissed, pop-ups
closed, and WebRTC stays off UDP by the launch flags.

The record lives in the page under a name that is random per browser session; the env reads
and empties it with :func:`take_js` after every action. A document being left hands what was
not read yet to the next document of its origin (through ``sessionStorage``), whose record
starts with it.
"""

from __future__ import annotations

import json
import secrets

__all__ = ["MAX_HISTORY_PER_STEP", "MAX_POPUPS_PER_STEP", "PageEvents", "guard_key", "guard_script", "take_js"]

MAX_POPUPS_PER_STEP = 20
"""``window.open`` calls allowed per step (between two reads of the record); later ones return null."""
MAX_HISTORY_PER_STEP = 100
"""``history.pushState`` / ``replaceState`` calls allowed per step; later ones do nothing."""

_SCRIPT = """(() => {
  const KEY = __KEY__, CAP = __CAP__, MAX = __MAX__, HISTORY_CAP = __HISTORY_CAP__;
  let rec = null;
  if (window === window.top) {
    const log = [];
    let counts = {}, opens = 0, refused = 0, moves = 0, refusedHistory = 0;
    rec = Object.freeze({
      note(kind, detail) {
        counts[kind] = (counts[kind] || 0) + 1;
        if (log.length >= MAX) return;
        let text = '';
        try { text = String(detail); } catch (e) { text = '?'; }
        log.push([kind, text.slice(0, 300)]);
      },
      open() { if (opens < CAP) { opens++; return true; } refused++; return false; },
      history() { if (moves < HISTORY_CAP) { moves++; return true; } refusedHistory++; return false; },
      take() {
        const out = {log: log.splice(0, log.length), counts: counts, refused: refused, refusedHistory: refusedHistory};
        counts = {}; refused = 0; opens = 0; moves = 0; refusedHistory = 0;
        return out;
      },
    });
    Object.defineProperty(window, KEY, {value: rec, enumerable: false, writable: false, configurable: false});
    try {  // what the document before this one recorded but the env had not read yet
      const left = JSON.parse(sessionStorage.getItem(KEY) || 'null');
      sessionStorage.removeItem(KEY);
      if (left) {
        log.push(...left.log.slice(0, MAX));
        counts = left.counts;
        refused = left.refused;
        refusedHistory = left.refusedHistory || 0;
      }
    } catch (e) {}
    window.addEventListener('pagehide', () => {
      const out = rec.take();
      if (!out.log.length && !out.refused && !out.refusedHistory) return;
      try { sessionStorage.setItem(KEY, JSON.stringify(out)); } catch (e) {}
    });
  } else {
    try { rec = window.top[KEY] || null; } catch (e) { rec = null; }
  }
  // No text caret in screenshots (it blinks, so it would make them differ from run to run);
  // set once per document, instead of Playwright's style pass over the DOM per screenshot.
  const hideCaret = () => {
    const style = document.createElement('style');
    style.textContent = '*, *::before, *::after { caret-color: transparent !important; }';
    (document.head || document.documentElement).appendChild(style);
  };
  if (document.documentElement) hideCaret(); else document.addEventListener('readystatechange', hideCaret, {once: true});
  if (!rec) return;  // a frame of another origin: Playwright's handlers deal with it
  // The wrappers take the natives' places with the natives' attributes (writable, configurable),
  // so that a page declaring its own global "function open()" still loads; the page can
  // replace or delete them, but has no way back to the natives.
  const fix = (name, value) => {
    const native = Object.getOwnPropertyDescriptor(window, name) || {enumerable: true};
    Object.defineProperty(window, name, {value: value, enumerable: !!native.enumerable, writable: true, configurable: true});
  };
  const dialog = (type, answer) => function (message) {
    rec.note('dialog', type + ': ' + (message === undefined ? '' : message));
    return answer;
  };
  fix('alert', dialog('alert', undefined));
  fix('confirm', dialog('confirm', false));
  fix('prompt', dialog('prompt', null));
  const open = window.open;
  fix('open', function (...args) {
    if (!rec.open()) return null;
    return open.apply(window, args);
  });
  // Links that open a new window (target="_blank" and the like) count against the same cap.
  window.addEventListener('click', (event) => {
    const link = event.target && event.target.closest ? event.target.closest('a[href][target], area[href][target]') : null;
    if (!link || ['', '_self', '_parent', '_top'].includes(link.target.toLowerCase())) return;
    if (!rec.open()) event.preventDefault();
  }, true);
  // Downloads are refused here, before Chromium starts one: a download it starts streams into a
  // temporary file even when the protocol (Browser.setDownloadBehavior "deny") refuses it.
  const isDownload = (link) => link.hasAttribute('download') || /^(blob|data):/i.test(link.getAttribute('href') || '');
  window.addEventListener('click', (event) => {
    const link = event.target && event.target.closest ? event.target.closest('a[href], area[href]') : null;
    if (!link || !isDownload(link)) return;
    event.preventDefault();
    rec.note('download', link.href);
  }, true);
  const click = HTMLElement.prototype.click;
  for (const Link of [HTMLAnchorElement, HTMLAreaElement]) {  // a detached link's click() reaches no listener
    Object.defineProperty(Link.prototype, 'click', {value: function () {
      if (!this.isConnected && this.hasAttribute('href') && isDownload(this)) { rec.note('download', this.href); return; }
      return click.call(this);
    }, writable: true, configurable: true});
  }
  // History floods: each pushState is a navigation event for the env, and Chromium's own
  // throttle logs a console warning per call past it; a step allows HISTORY_CAP of them.
  for (const name of ['pushState', 'replaceState']) {
    const native = History.prototype[name];
    Object.defineProperty(History.prototype, name, {value: function (...args) {
      if (!rec.history()) return undefined;
      return native.apply(this, args);
    }, writable: true, configurable: true});
  }
  for (const name of ['RTCPeerConnection', 'webkitRTCPeerConnection']) {
    const Native = window[name];
    if (typeof Native !== 'function') continue;
    const Refused = function RTCPeerConnection(config) {
      const urls = [];
      try {
        for (const server of (config && config.iceServers) || []) urls.push(...[].concat(server.urls || server.url || []));
      } catch (e) {}
      rec.note('webrtc', urls.join(' '));
      throw new DOMException('WebRTC peer connections are refused in this environment', 'NotAllowedError');
    };
    Object.setPrototypeOf(Refused, Native);
    Refused.prototype = Native.prototype;
    try { Object.defineProperty(Native.prototype, 'constructor', {value: Refused, writable: true, configurable: true}); } catch (e) {}
    fix(name, Refused);
  }
})();
"""


def guard_key() -> str:
    """A fresh name for the page's record (random, so a page cannot count on it)."""
    return f"__catp_guard_{secrets.token_hex(8)}"


def guard_script(key: str, max_events: int) -> str:
    """The init script, recording under ``key`` at most ``max_events`` entries between reads."""
    return (_SCRIPT.replace("__KEY__", json.dumps(key)).replace("__CAP__", str(MAX_POPUPS_PER_STEP))
            .replace("__MAX__", str(int(max_events))).replace("__HISTORY_CAP__", str(MAX_HISTORY_PER_STEP)))


def take_js(key: str) -> str:
    """A page function that returns the record (``{log, counts, refused}``) and empties it, or
    null when the document has none (a page the script did not run in)."""
    return f"() => {{ const rec = window[{json.dumps(key)}]; return rec ? rec.take() : null; }}"


class PageEvents:
    """What the page recorded between two reads: ``dialogs`` ("alert: text") and ``webrtc``
    (the ICE server URLs of each refused peer connection, space separated) and ``downloads``
    (URLs of refused downloads), the first entries of each; ``dialog_count``, ``webrtc_count``
    and ``download_count``, all of them; ``refused_popups`` (``window.open`` calls refused) and
    ``refused_history`` (``history.pushState``/``replaceState`` calls refused)."""

    def __init__(self, raw: object) -> None:
        raw = raw if isinstance(raw, dict) else {}
        log = raw.get("log") if isinstance(raw.get("log"), list) else []
        counts = raw.get("counts") if isinstance(raw.get("counts"), dict) else {}
        entries = [(str(e[0]), str(e[1])[:300]) for e in log if isinstance(e, list) and len(e) == 2]
        self.dialogs = [detail for kind, detail in entries if kind == "dialog"]
        self.webrtc = [detail for kind, detail in entries if kind == "webrtc"]
        self.downloads = [detail for kind, detail in entries if kind == "download"]
        self.dialog_count = max(_count(counts.get("dialog")), len(self.dialogs))
        self.webrtc_count = max(_count(counts.get("webrtc")), len(self.webrtc))
        self.download_count = max(_count(counts.get("download")), len(self.downloads))
        self.refused_history = _count(raw.get("refusedHistory"))
        self.refused_popups = _count(raw.get("refused"))


def _count(value: object) -> int:
    return int(value) if isinstance(value, (int, float)) and 0 <= value < 2**31 else 0
