"""`puppemon ui`'s HTTP server: the dashboard's routes (web/app.py) over a clone, fetched in the
background every few seconds (the runs branch and its archives, the flows tip, the daemons' status and
live refs); what was fetched last is served when the remote cannot be reached."""
from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from puppemon.web.app import App, Response

log = logging.getLogger("puppemon")

MAX_BODY = 1024 * 1024


class Fetcher:
    """Brings the remote's refs here every `every` seconds (and at once when asked), in a thread."""

    def __init__(self, store, remote: str | None, every: float = 3.0) -> None:
        self.store, self.remote, self.every = store, remote, every
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.error: str | None = None
        self.thread = threading.Thread(target=self._loop, name="fetch", daemon=True)

    def fetch(self) -> None:
        from puppemon.gitstore import GitError
        from puppemon.history.live import fetch_live
        from puppemon.history.recorder import Recorder
        from puppemon.history.status import fetch_status

        if self.remote is None:
            return
        try:
            Recorder(self.store, remote=self.remote).sync(push=False)
            fetch_status(self.store, self.remote)
            fetch_live(self.store, self.remote)
            self.error = None
        except GitError as exc:
            if exc.message != self.error:
                log.warning("fetch from %s failed: %s (showing what was fetched before)", self.remote, exc.message)
            self.error = exc.message

    def _loop(self) -> None:
        while not self.stopping.is_set():
            self.fetch()
            self.wake.wait(self.every)
            self.wake.clear()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        self.thread.join(timeout=30)


def send(handler: BaseHTTPRequestHandler, response: Response) -> None:
    """Write `response` on `handler`'s connection."""
    handler.send_response(response.code)
    handler.send_header("Content-Type", response.content_type)
    handler.send_header("Content-Length", str(len(response.body)))
    handler.send_header("X-Content-Type-Options", "nosniff")
    handler.send_header("Referrer-Policy", "no-referrer")
    for key, value in response.headers.items():
        handler.send_header(key, value)
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(response.body)


class _Handler(BaseHTTPRequestHandler):
    app: App
    server_version = "puppemon"
    protocol_version = "HTTP/1.1"
    timeout = 30

    def log_message(self, fmt, *args) -> None:
        log.debug("ui %s %s", self.client_address[0], fmt % args)

    def _answer(self, make) -> None:
        try:
            response = make()
        except Exception:  # a bug answers 500, the server goes on
            log.exception("ui %s %s failed", self.command, self.path.split("?", 1)[0])
            response = Response(500, b"internal error (see the log of puppemon ui)\n", "text/plain")
        if response is None:
            response = self.app.missing(self.path.lstrip("/").split("?", 1)[0], f"No page at {self.path.split('?', 1)[0]}")
        send(self, response)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(lambda: self.app.get(self.path, self.headers))

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_POST(self) -> None:  # noqa: N802
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            return send(self, Response(413, b'{"error": "body too large"}\n', "application/json"))
        raw = self.rfile.read(length) if length else b""
        self._answer(lambda: self.app.post(self.path, self.headers, raw))


class UiServer(ThreadingHTTPServer):
    """Each request in a thread of its own: a slow client holds up no other."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, app: App, host: str, port: int) -> None:
        super().__init__((host, port), type("Handler", (_Handler,), {"app": app}))
