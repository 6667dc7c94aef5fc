"""Failure notifications, received by a local HTTP server on 127.0.0.1."""
from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from puppemon.daemon.notify import message
from tests.test_trigger import daemons, records, run_once, setup_project, wait_until  # noqa: F401

API_KEY = "key-0a1b2c3d4e"

MANIFEST = """\
version: 1
defaults:
  notify: {webhook_secret: chat}
flows:
  broken:
    command: for i in $(seq 1 15); do echo line $i; done; echo "using $API_KEY"; exit 2
    secrets: [api-key]
  fine:
    command: echo ok
  picky:
    command: echo ok
    notify: {on: [succeeded], webhook_secret: chat}
  ungranted:
    command: exit 1
    notify: {on: [failed], webhook_secret: other-chat}
"""


class Receiver:
    """A webhook endpoint on 127.0.0.1 that keeps what it is sent."""

    def __init__(self, status: int = 204) -> None:
        self.posts: list[tuple[str, dict]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                data = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append((self.path, json.loads(data)))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/abc"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def secrets_file(tmp_path, url: str):
    path = tmp_path / "secrets.yaml"
    path.write_text(f"chat:\n  value: {url}\n  flows: ['*']\n"
                    f"other-chat:\n  value: {url}\n  flows: [nobody]\n"
                    f"api-key:\n  value: {API_KEY}\n  flows: [broken]\n")
    os.chmod(path, 0o600)
    return path


def test_failures_are_posted_to_the_webhook(tmp_path, bare_remote, receiver):
    repo = setup_project(tmp_path, bare_remote, MANIFEST)
    from tests.conftest import puppemon

    for flow in ("broken", "fine", "picky", "ungranted"):
        puppemon("trigger", flow, cwd=repo)
    daemon = run_once(bare_remote, tmp_path / "state", "--secrets", str(secrets_file(tmp_path, receiver.url)))
    assert daemon.returncode == 0, daemon.stderr
    wait_until(lambda: len(receiver.posts) == 2, 15, "two notifications", lambda: daemon.stderr)
    by_flow = {r["flow"]: r for r in records(bare_remote)}
    posts = sorted(receiver.posts, key=lambda p: p[1]["content"])
    broken, picky = by_flow["broken"], by_flow["picky"]
    lines = "\n".join(f"line {i}" for i in range(7, 16))
    assert posts[0] == ("/hooks/abc", {
        "content": f"puppemon: broken failed in {broken['duration']:.1f}s (run {broken['id']}, daemon d1)\n"
                   f"exited with code 2\n```\n{lines}\nusing ***\n```",
        "text": posts[0][1]["content"]})
    assert posts[1][1]["content"] == (f"puppemon: picky succeeded in {picky['duration']:.1f}s "
                                      f"(run {picky['id']}, daemon d1)\n```\nok\n```")
    assert f"broken: notification sent for run {broken['id']}" in daemon.stderr
    assert ("ungranted: no notification for run {}: flow 'ungranted' asks for secret 'other-chat', which the "
            "secrets file {} does not grant to it (add 'ungranted' to the secret's flows)").format(
                by_flow["ungranted"]["id"], tmp_path / "secrets.yaml") in daemon.stderr
    assert receiver.url not in daemon.stderr and API_KEY not in daemon.stderr


def test_a_failing_webhook_never_fails_the_run(tmp_path, bare_remote):
    broken = Receiver(status=500)
    try:
        repo = setup_project(tmp_path, bare_remote, MANIFEST)
        from tests.conftest import puppemon

        puppemon("trigger", "broken", cwd=repo)
        daemon = run_once(bare_remote, tmp_path / "state", "--secrets", str(secrets_file(tmp_path, broken.url)))
    finally:
        broken.close()
    assert daemon.returncode == 0
    [record] = records(bare_remote)
    assert record["status"] == "failed" and record["exit_code"] == 2
    assert f"broken: notification for run {record['id']} refused: HTTP 500" in daemon.stderr
    assert broken.url not in daemon.stderr


def test_message_is_short_and_redacted():
    record = {"flow": "f", "status": "timed_out", "duration": 61.0, "id": "20261125T083000Z-7f3a9c",
              "daemon": "d1", "error": "timed out after 1m"}
    body = message(record, b"x" * 5000 + b"\nsecret-value here\n", {"s": "secret-value"})
    assert body["text"] == body["content"]
    assert body["content"].startswith("puppemon: f timed_out in 1m 01s (run 20261125T083000Z-7f3a9c, daemon d1)\n"
                                      "timed out after 1m\n```\n")
    assert len(body["content"]) <= 1900 and body["content"].endswith("```")
    assert "secret-value" not in body["content"]
    assert message(record, b"", {})["content"] == (
        "puppemon: f timed_out in 1m 01s (run 20261125T083000Z-7f3a9c, daemon d1)\ntimed out after 1m")


@pytest.mark.slow
def test_a_run_found_crashed_at_start_up_is_notified(tmp_path, bare_remote, receiver, daemons):
    from tests.conftest import puppemon

    manifest = MANIFEST + "  hangs:\n    command: echo started; exec sleep 60\n"
    repo = setup_project(tmp_path, bare_remote, manifest)
    secrets = str(secrets_file(tmp_path, receiver.url))
    d = daemons(bare_remote, tmp_path / "state", "--secrets", secrets)
    puppemon("trigger", "hangs", cwd=repo)
    wait_until(lambda: "hangs: started run" in d.log, 30, "the run to start", lambda: d.log)
    d.kill()
    assert run_once(bare_remote, tmp_path / "state", "--secrets", secrets).returncode == 0
    [record] = records(bare_remote)
    assert record["status"] == "crashed"
    wait_until(lambda: receiver.posts, 15, "the notification")
    assert receiver.posts[0][1]["content"].startswith("puppemon: hangs crashed in ")
