"""The daemon's optional HTTP hook: health, run a flow, fetch now, GitHub push webhooks.

Off unless `--listen HOST:PORT`. Routes:

    GET  /healthz                 no auth: name, deployed commit, runs in flight
    POST /flows/<name>/runs       Bearer token; body {"params": {...}} -> 202 {"id", "run_id", "request_id"} (one id)
    POST /fetch                   Bearer token; fetch and deploy now -> 202
    POST /github                  X-Hub-Signature-256 (HMAC-SHA256, PUPPEMON_GITHUB_SECRET)
    GET  /runs/<id>/live?since=N  Bearer token; a run in flight's redacted output tail (`logs -f --http`)
                                  -> 200 {"run_id", "flow", "started", "total", "log_base64"}: its bytes
                                  from `since` (or where the tail starts) to `total`

With no token configured (only allowed on a loopback address) the Bearer routes are open.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from puppemon.errors import PuppemonError
from puppemon.formats import is_loopback
from puppemon.history.control import describe as describe_control
from puppemon.history.requests import MAX_DEPTH, nesting

log = logging.getLogger("puppemon")

MAX_BODY = 1024 * 1024
DRAIN_LIMIT = 16 * MAX_BODY
BACKLOG = 1024      # connections waiting to be accepted (Python's default of 5 resets a burst of them)
MAX_HANDLERS = 32   # requests handled at once; more wait in the backlog
FLOW_RUNS = re.compile(r"^/flows/([^/]+)/runs$")
RUN_LIVE = re.compile(r"^/runs/([^/]+)/live$")


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` (or `[v6]:PORT`, or `PORT` for 127.0.0.1) -> (host, port)."""
    text = str(text).strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise PuppemonError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8765")
    return host, int(port)


class Control(Protocol):
    """What the hook may ask of the daemon (daemon/loop.py implements it)."""

    flows_branch: str

    def health(self) -> dict:
        """name, flows_commit, in_flight, state."""

    def deployed_flows(self) -> tuple[str, list[str]] | None:
        """(the deployed flows commit, its flow names), or None when nothing is deployed."""

    def paused(self, flow: str) -> dict | None:
        """The control state of `flow` when it is paused (`puppemon pause`), else None."""

    def run_now(self, flow: str, params: dict, client: str) -> dict[str, str] | None:
        """Start a run (recorded as a claimed request); {id, run_id, request_id} (the same id), or None when
        stopping."""

    def not_here(self, flow: str) -> str | None:
        """Why this daemon does not take `flow` (its runs_on asks for labels it has not), or None."""

    def live_tail(self, run_id: str):
        """The live tail (history.live.Tail) of a run in flight here, or None."""

    def fetch_now(self) -> None:
        """Fetch and deploy at the next moment."""

    def dashboard(self):
        """The dashboard's sources (web.reading.Sources) over this daemon's repository."""

    def dashboard_actions(self, hook: HttpHook):
        """The dashboard's actions (web.app.Actions), done by this daemon."""


class _Server(ThreadingHTTPServer):
    """At most MAX_HANDLERS handler threads: while they are all busy, new connections wait in the backlog."""

    request_queue_size = BACKLOG
    daemon_threads = True

    def __init__(self, address, handler) -> None:
        self.slots = threading.BoundedSemaphore(MAX_HANDLERS)
        self.closing = False
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        while not self.slots.acquire(timeout=0.2):
            if self.closing:  # stop() is waiting: do not hold it up for a slot
                self.shutdown_request(request)
                return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class HttpHook:
    """A ThreadingHTTPServer in a daemon thread, serving one daemon."""

    def __init__(self, control: Control, listen: str, token: str | None = None,
                 github_secret: str | None = None) -> None:
        host, port = parse_listen(listen)
        if not token and not is_loopback(host):
            raise PuppemonError(f"--listen {listen}: refusing to listen on a non-loopback address without "
                                f"a token; set PUPPEMON_HTTP_TOKEN or pass --token-file FILE")
        self.control = control
        self.token, self.github_secret = token, github_secret
        try:
            self.server = _Server((host, port), type("Handler", (_Handler,), {"hook": self}))
        except OSError as exc:
            raise PuppemonError(f"--listen {listen}: cannot listen there ({exc.strerror})") from None
        self.thread: threading.Thread | None = None
        self.loopback = is_loopback(host)
        self._web = None
        self._web_lock = threading.Lock()

    def web(self):
        """The dashboard's routes (web/app.py), built on first use: pages readable without the token on a
        loopback address, every action (and on any other address, every page) with it."""
        with self._web_lock:
            if self._web is None:
                from puppemon.web.app import Access, App

                # without a token, only requests naming a loopback host (not a rebound name) are served
                access = Access(local=False, token=self.token, pages_need_token=not self.loopback,
                                loopback_only=self.loopback and not self.token)
                self._web = App(self.control.dashboard(), access, self.control.dashboard_actions(self))
            return self._web

    @property
    def address(self) -> tuple[str, int]:
        return self.server.server_address[:2]

    def start(self) -> None:
        self.thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)
        self.thread.start()
        log.info("HTTP hook listening on http://%s:%d", *self.address)

    def stop(self) -> None:
        if self.thread is not None:
            self.server.closing = True
            self.server.shutdown()
            self.thread.join()
            self.thread = None
        self.server.server_close()

    # -- routes ----------------------------------------------------------------
    def healthz(self) -> tuple[int, dict]:
        return 200, self.control.health()

    def run_flow(self, name: str, body: dict, client: str) -> tuple[int, dict]:
        params = body.get("params", {})
        if not isinstance(params, dict):
            return 400, {"error": "params must be a JSON object"}
        if nesting(params) > MAX_DEPTH:
            return 400, {"error": f"params nest deeper than {MAX_DEPTH} levels"}
        deployed = self.control.deployed_flows()
        if deployed is None:
            return 503, {"error": "nothing is deployed yet"}
        sha, flows = deployed
        if name not in flows:
            return 404, {"error": f"no flow {name!r} in the deployed flows commit {sha[:7]}"}
        elsewhere = self.control.not_here(name)
        if elsewhere is not None:  # 421 Misdirected Request: nothing is queued, nor recorded
            return 421, {"error": f"{elsewhere} (`puppemon trigger {name}` asks every daemon)"}
        paused = self.control.paused(name)
        if paused is not None:  # as a disabled workflow refuses a dispatch: nothing is queued, nor recorded
            return 409, {"error": f"flow {name!r} is {describe_control(paused)}: `puppemon resume {name}` first"}
        started = self.control.run_now(name, params, client)
        if started is None:
            return 503, {"error": "the daemon is stopping"}
        return 202, started

    def live(self, run_id: str, query: str) -> tuple[int, dict]:
        import base64
        from urllib.parse import parse_qs

        tail = self.control.live_tail(run_id)
        if tail is None:
            return 404, {"error": f"run {run_id} is not in flight on this daemon"}
        since = (parse_qs(query).get("since") or ["0"])[0]
        skip = max(0, int(since) - tail.start) if since.isdigit() else 0
        return 200, {"run_id": tail.run_id, "flow": tail.flow, "started": tail.started, "total": tail.total,
                     "log_base64": base64.b64encode(tail.data[skip:]).decode()}

    def github(self, event: str, raw: bytes, signature: str) -> tuple[int, dict]:
        if not self.github_secret:
            return 401, {"error": "no GitHub webhook secret configured (PUPPEMON_GITHUB_SECRET)"}
        expected = "sha256=" + hmac.new(self.github_secret.encode(), raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            return 401, {"error": "bad X-Hub-Signature-256"}
        if event == "ping":
            return 200, {"ok": True}
        if event != "push":
            return 200, {"ignored": f"event {event!r}"}
        try:
            ref = json.loads(raw).get("ref")
        except (ValueError, AttributeError):
            return 400, {"error": "the push payload is not a JSON object"}
        wanted = f"refs/heads/{self.control.flows_branch}"
        if ref != wanted:
            return 200, {"ignored": f"push to {ref}, not {wanted}"}
        self.control.fetch_now()
        return 202, {"fetch": True}


class _Handler(BaseHTTPRequestHandler):
    """One request; `hook` (the HttpHook) is set on a subclass made per server."""

    hook: HttpHook
    server_version = "puppemon"
    timeout = 30  # a client that stops sending does not hold a thread forever
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args) -> None:
        log.debug("http %s %s", self.client_address[0], fmt % args)

    def _send(self, code: int, body: dict) -> None:
        data = (json.dumps(body) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.close_connection = True  # a refused request may leave its body unread
        if code == 405:
            path = self.path.split("?", 1)[0]
            self.send_header("Allow", "GET" if path == "/healthz" or RUN_LIVE.match(path) else "POST")
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            left = length if length <= DRAIN_LIMIT else 0
            while left > 0:  # read and drop it, so the client sees the 413, not a reset connection
                left -= len(self.rfile.read(min(left, 65536)) or b"x" * left)
            self._send(413 if length > MAX_BODY else 400,
                       {"error": f"body larger than {MAX_BODY} bytes" if length > MAX_BODY
                        else "bad Content-Length"})
            return None
        return self.rfile.read(length) if length else b""

    def _authorized(self) -> bool:
        if not self.hook.token:
            return True
        given = self.headers.get("Authorization", "")
        ok = hmac.compare_digest(given.encode(), f"Bearer {self.hook.token}".encode())
        if not ok:
            self._send(401, {"error": "missing or wrong bearer token"})
        return ok

    def _route(self, method: str) -> None:
        path, _, query = self.path.partition("?")
        known = path in ("/healthz", "/fetch", "/github") or FLOW_RUNS.match(path) or RUN_LIVE.match(path)
        if not known:
            return self._dashboard(method)
        allowed = "GET" if path == "/healthz" or RUN_LIVE.match(path) else "POST"
        if method != allowed:
            return self._send(405, {"error": f"{path} accepts {allowed} only"})
        if path == "/healthz":
            return self._send(*self.hook.healthz())
        if path == "/github":
            raw = self._body()
            if raw is not None:
                self._send(*self.hook.github(self.headers.get("X-GitHub-Event", ""), raw,
                                             self.headers.get("X-Hub-Signature-256", "")))
            return None
        if not self._authorized():
            return None
        raw = self._body()
        if raw is None:
            return None
        if path == "/fetch":
            self.hook.control.fetch_now()
            return self._send(202, {"fetch": True})
        if RUN_LIVE.match(path):
            return self._send(*self.hook.live(RUN_LIVE.match(path).group(1), query))
        try:
            body = json.loads(raw) if raw.strip() else {}
        except RecursionError:  # json's scanner recurses once per level: a 50k-deep body gets here
            return self._send(400, {"error": f"the body nests deeper than {MAX_DEPTH} levels"})
        except ValueError:
            return self._send(400, {"error": "the body is not JSON"})
        if not isinstance(body, dict):
            return self._send(400, {"error": "the body must be a JSON object"})
        return self._send(*self.hook.run_flow(FLOW_RUNS.match(path).group(1), body, self.client_address[0]))

    def _dashboard(self, method: str) -> None:
        """The dashboard's pages and actions (web/app.py), or a 404."""
        from puppemon.web.server import send

        response = None
        if method == "GET":
            response = self.hook.web().get(self.path, self.headers)
        elif method == "POST":
            raw = self._body()
            if raw is None:
                return None
            response = self.hook.web().post(self.path, self.headers, raw)
        if response is None:
            return self._send(404, {"error": f"no such endpoint {self.path.partition('?')[0]}"})
        self.close_connection = True
        return send(self, response)

    def _serve(self, method: str) -> None:
        try:
            self._route(method)
        except Exception:  # a bug must still answer, not drop the connection
            log.exception("http %s %s failed", method, self.path.split("?", 1)[0])
            self._send(500, {"error": "internal error (the daemon's log has the details)"})

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._serve("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._serve("DELETE")
