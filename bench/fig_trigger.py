"""Figure 8: trigger → completed. Over HTTP: POST /flows/tick/runs to a daemon started
with --listen on 127.0.0.1, until the run's record is on the remote; against a bare
Python HTTP server that runs the same command before it answers. Over git: the wall
time of `puppemon trigger tick --wait` (request commit, the daemon's next fetch, the
run, its record, the follower's next poll), against the daemon's poll interval."""
from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bench.common import stop_daemon, Context, Row, median, puppemon_argv, run
from bench.fig_daemon import COMMAND, deploy_project
from bench.fig_idle import wait_for

HTTP_GOAL = 1.0
MANIFEST = """\
version: 1
flows:
  tick:
    command: ["date", "+%s.%N"]
"""


def poll(ctx: Context) -> float:
    return 1.0 if ctx.quick else 2.0


def rows(ctx: Context) -> list[str]:
    return ["trigger → completed over HTTP", "trigger → completed, puppemon trigger --wait"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def bare_http(repeat: int) -> list[float]:
    """POST to a plain ThreadingHTTPServer that runs the command and then answers."""
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            out = subprocess.run(COMMAND, capture_output=True, check=True).stdout
            body = json.dumps({"out": out.decode()}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/run"
    try:
        times = []
        for _ in range(repeat + 1):
            t0 = time.perf_counter()
            post(url, {})
            times.append(time.perf_counter() - t0)
        return times[1:]
    finally:
        server.shutdown()
        server.server_close()


def measure(ctx: Context) -> list[Row]:
    from puppemon.gitstore import Store
    from puppemon.formats import run_dir

    root = ctx.dir("trigger")
    remote = deploy_project(root, MANIFEST)
    project = root / "project"
    port = free_port()
    interval = poll(ctx)
    log = open(root / "daemon.log", "wb")
    daemon = subprocess.Popen([*puppemon_argv(), "daemon", "--remote", str(remote), "--state",
                               str(root / "state"), "--name", "trig", "--poll", f"{interval:g}",
                               "--listen", f"127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    repeat = 3 if ctx.quick else 9
    store = Store(remote)
    try:
        def ready() -> bool:
            if daemon.poll() is not None:
                raise RuntimeError(f"daemon exited {daemon.returncode}: {(root / 'daemon.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
                    return json.loads(resp.read()).get("flows_commit") is not None
            except OSError:
                return False
        wait_for(ready, 60, "the daemon's HTTP hook and first deploy")

        def recorded(run_id: str) -> bool:
            tip = store.ref("refs/heads/runs")
            return tip is not None and store.lookup(tip, f"{run_dir('tick', run_id)}/run.json") is not None

        http = []
        for k in range(repeat + 1):
            t0 = time.perf_counter()
            started = post(f"http://127.0.0.1:{port}/flows/tick/runs", {"params": {}})
            deadline = time.monotonic() + 30
            while not recorded(started["run_id"]):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"run {started['run_id']} not recorded on the remote within 30 s")
                time.sleep(0.005)
            if k:
                http.append(time.perf_counter() - t0)
            time.sleep(0.3)
        waits = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            run([*puppemon_argv(), "trigger", "tick", "--wait", "--timeout", "60"], cwd=project)
            waits.append(time.perf_counter() - t0)
    finally:
        stop_daemon(daemon, log)
    base = median(bare_http(repeat))
    value, wait = median(http), median(waits)
    label_http, label_wait = rows(ctx)
    return [
        Row(8, label_http, value, "s", base, "bare HTTP server running the command", f"≤ {HTTP_GOAL:g} s",
            value <= HTTP_GOAL, note="until the record is on the remote"),
        Row(8, label_wait, wait, "s", interval, "daemon poll interval", "≤ poll + 1 s",
            wait <= interval + 1.0, note=f"--poll {interval:g}; max {max(waits):.2f} s"),
    ]
