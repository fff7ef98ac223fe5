"""The env's two local servers on 127.0.0.1: the task pages, and a proxy that refuses everything.

:class:`TaskServer` serves task page folders. Each mounted folder appears under its own URL
prefix (``/tasks/<name>/``); the shared helper script lives under ``/static/``; files the env
sets per episode (the task's spec as ``/episode/spec.js``) live under ``/episode/``. The server
binds a free port, runs on a daemon thread, serves files only (no listings, no writes) and stops
with :meth:`TaskServer.stop`.

:class:`RefusingProxy` is where Chromium sends every connection that is not to the task server
(the env launches it with ``--proxy-server`` pointing here and only the task server's origin in
``--proxy-bypass-list``): preconnects, ``https`` and WebSocket tunnels, the browser's own
background requests. It connects nowhere: each request gets ``403`` and is recorded.
"""

from __future__ import annotations

import http.server
import mimetypes
import posixpath
import selectors
import socket
import threading
import time
import urllib.parse
from pathlib import Path

__all__ = ["STATIC_DIR", "RefusingProxy", "TaskServer"]

STATIC_DIR = Path(__file__).resolve().parent / "static"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: "_Server"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._serve(send_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(send_body=False)

    def _serve(self, send_body: bool) -> None:
        path = urllib.parse.urlsplit(self.path).path
        path = posixpath.normpath(urllib.parse.unquote(path))
        try:
            if path == "/favicon.ico":
                self.send_response(204)
                self.end_headers()
                return
            body = self.server.episode_files.get(path)
            name = path
            if body is None:
                target = self.server.resolve(path)
                if target is None:
                    self.send_error(404, f"not found: {path}")
                    return
                body, name = target.read_bytes(), target.name
            ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if send_body:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            return  # the browser gave up on the request (page left, request aborted)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return  # quiet: requests are not errors


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    mounts: dict[str, Path]
    episode_files: dict[str, bytes]

    def resolve(self, path: str) -> Path | None:
        """Map a URL path to a file inside a mounted folder, or None."""
        for prefix, root in self.mounts.items():
            if path.startswith(prefix):
                rel = path[len(prefix):]
                target = (root / rel).resolve()
                if (target == root or root in target.parents) and target.is_file():
                    return target
        return None


class TaskServer:
    """Serve folders under URL prefixes on ``http://127.0.0.1:<free port>/``.

    >>> server = TaskServer({"/static/": STATIC_DIR})
    >>> server.base_url.startswith("http://127.0.0.1:")
    True
    >>> server.stop()
    """

    def __init__(self, mounts: dict[str, Path]) -> None:
        for prefix, root in mounts.items():
            if not (prefix.startswith("/") and prefix.endswith("/")):
                raise ValueError(f"mount prefix must start and end with '/', got {prefix!r}")
            if not Path(root).is_dir():
                raise ValueError(f"mount folder {root} for {prefix!r} does not exist")
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.mounts = {p: Path(r).resolve() for p, r in mounts.items()}
        self._server.episode_files = {}
        self.port: int = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"catp-server-{self.port}", daemon=True
        )
        self._thread.start()

    @property
    def prefixes(self) -> tuple[str, ...]:
        """The mounted URL prefixes."""
        return tuple(self._server.mounts)

    def put_episode_file(self, name: str, body: bytes | str) -> str:
        """Serve ``body`` at ``/episode/<name>`` (replacing any previous one); return the path."""
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"episode file name must be a plain file name, got {name!r}")
        data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        path = f"/episode/{name}"
        self._server.episode_files[path] = data
        return path

    def allows(self, url: str) -> bool:
        """Whether ``url`` is on this server (same host and port) under a served prefix."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or parts.hostname != "127.0.0.1" or parts.port != self.port:
            return False
        path = posixpath.normpath(urllib.parse.unquote(parts.path or "/"))
        if path in self._server.episode_files or path == "/favicon.ico":
            return True
        return any(path.startswith(prefix) for prefix in self._server.mounts)

    def stop(self) -> None:
        """Stop serving and free the port. Idempotent."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()


_REFUSAL = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class RefusingProxy:
    """An HTTP proxy on ``127.0.0.1:<free port>`` that forwards nothing.

    Every connection is answered ``403 Forbidden`` once its request line has arrived (or closed
    after ``idle_s`` when nothing comes, as with Chromium's preconnects), and closed. One daemon
    thread serves all connections with a selector, so a storm of requests costs no threads.

    Attributes:
        refused: ``"METHOD target"`` of each refused request, in order (``"CONNECT example.com:443"``,
            ``"GET http://127.0.0.1:9/x"``), the first ``max_records``; :meth:`take` hands out
            the ones refused since its last call.
        connections: connections accepted so far (all of them refused).

    >>> proxy = RefusingProxy()
    >>> proxy.url.startswith("http://127.0.0.1:")
    True
    >>> proxy.stop()
    """

    def __init__(self, idle_s: float = 2.0, max_records: int = 1000) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.refused: list[str] = []
        self.connections = 0
        self._fresh: list[str] = []  # refused since the last take(), at most max_records
        self._fresh_lock = threading.Lock()
        self._idle_s = idle_s
        self._max_records = max_records
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"catp-proxy-{self.port}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._listener, selectors.EVENT_READ, None)
        pending: dict[socket.socket, tuple[float, bytes]] = {}
        try:
            while not self._stopping.is_set():
                for key, _ in selector.select(timeout=0.2):
                    if key.fileobj is self._listener:
                        self._accept(selector, pending)
                    else:
                        self._read(key.fileobj, selector, pending)  # type: ignore[arg-type]
                now = time.monotonic()
                for conn in [c for c, (t, _) in pending.items() if now - t > self._idle_s]:
                    self._finish(conn, selector, pending, answer=False)
        finally:
            for conn in list(pending):
                self._finish(conn, selector, pending, answer=False)
            selector.close()

    def _accept(self, selector: selectors.BaseSelector, pending: dict[socket.socket, tuple[float, bytes]]) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:  # the client gave up already, or the listener is closing
            return
        conn.setblocking(False)
        self.connections += 1
        pending[conn] = (time.monotonic(), b"")
        selector.register(conn, selectors.EVENT_READ, None)

    def _read(self, conn: socket.socket, selector: selectors.BaseSelector,
              pending: dict[socket.socket, tuple[float, bytes]]) -> None:
        try:
            chunk = conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        started, data = pending[conn]
        data = (data + chunk)[:8192]
        if chunk and b"\n" not in data and len(data) < 8192:
            pending[conn] = (started, data)
            return
        line = data.split(b"\n", 1)[0].decode("latin-1").strip()
        if line:
            method, _, rest = line.partition(" ")
            entry = f"{method} {rest.rsplit(' ', 1)[0]}"[:300]
            if len(self.refused) < self._max_records:
                self.refused.append(entry)
            with self._fresh_lock:
                if len(self._fresh) < self._max_records:
                    self._fresh.append(entry)
        self._finish(conn, selector, pending, answer=bool(chunk))

    def take(self) -> list[str]:
        """The requests refused since the last call (``"METHOD target"``), oldest first; any
        thread may call it. At most ``max_records`` are kept between calls."""
        with self._fresh_lock:
            fresh, self._fresh = self._fresh, []
        return fresh

    @staticmethod
    def _finish(conn: socket.socket, selector: selectors.BaseSelector,
                pending: dict[socket.socket, tuple[float, bytes]], answer: bool) -> None:
        pending.pop(conn, None)
        selector.unregister(conn)
        if answer:
            try:
                conn.send(_REFUSAL)
            except OSError:  # the client left already
                pass
        conn.close()

    def stop(self) -> None:
        """Stop answering and free the port. Idempotent."""
        self._stopping.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(1.0)
        self._listener.close()
