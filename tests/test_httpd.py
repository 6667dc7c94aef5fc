"""The HTTP hook through a real daemon process and real requests to 127.0.0.1."""
from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import re

import pytest

from tests.conftest import git, puppemon
from tests.test_trigger import (daemons, records, records_for, remote_files, remote_json,  # noqa: F401
                                setup_project, wait_until)

TOKEN = "s3cret-http-token"
GH_SECRET = "gh-hook-secret"


def call(port: int, method: str, path: str, body: bytes | dict | None = None, token: str | None = TOKEN,
         headers: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    hdrs = dict(headers or {})
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    conn.request(method, path, body=data, headers=hdrs)
    resp = conn.getresponse()
    payload = resp.read()
    conn.close()
    return resp.status, json.loads(payload)


def signed(payload: dict, secret: str = GH_SECRET) -> tuple[bytes, str]:
    raw = json.dumps(payload).encode()
    return raw, "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


@pytest.fixture
def served(tmp_path, bare_remote, daemons):  # noqa: F811 - the fixture
    """A pushed project and a daemon with the HTTP hook; fetches only when told (poll 1h)."""
    repo = setup_project(tmp_path, bare_remote)
    d = daemons(bare_remote, tmp_path / "state", "--listen", "127.0.0.1:0", "--poll", "1h",
                env={"PUPPEMON_HTTP_TOKEN": TOKEN, "PUPPEMON_GITHUB_SECRET": GH_SECRET})
    port = d.port()
    wait_until(lambda: call(port, "GET", "/healthz", token=None)[1]["flows_commit"], 30, "a deploy",
               lambda: d.log)
    return repo, d, port


def test_run_a_flow_over_http(served, bare_remote):
    repo, d, port = served
    flows = git("--git-dir", str(bare_remote), "rev-parse", "flows").strip()
    assert call(port, "GET", "/healthz", token=None) == (200, {"name": "d1", "flows_commit": flows,
                                                               "in_flight": 0, "state": "running"})
    assert call(port, "POST", "/flows/hello/runs", {"params": {}}, token=None) == (
        401, {"error": "missing or wrong bearer token"})
    assert call(port, "POST", "/flows/hello/runs", {"params": {}}, token="wrong")[0] == 401
    assert call(port, "POST", "/flows/nosuch/runs", {"params": {}}) == (
        404, {"error": f"no flow 'nosuch' in the deployed flows commit {flows[:7]}"})
    assert call(port, "GET", "/fetch") == (405, {"error": "/fetch accepts POST only"})
    assert call(port, "POST", "/nowhere") == (404, {"error": "no such endpoint /nowhere"})
    assert call(port, "POST", "/flows/hello/runs", b"[1]") == (400, {"error": "the body must be a JSON object"})
    big = b'{"params": {"x": "' + b"a" * (1024 * 1024) + b'"}}'
    assert call(port, "POST", "/flows/hello/runs", big) == (413, {"error": "body larger than 1048576 bytes"})

    status, body = call(port, "POST", "/flows/hello/runs", {"params": {"n": 7}})
    assert status == 202 and set(body) == {"id", "run_id", "request_id"}
    rid = body["id"]
    assert body["run_id"] == body["request_id"] == rid  # one id: the request's is its run's
    [record] = wait_until(lambda: records_for(bare_remote, rid), 30, "the run", lambda: d.log)
    assert (record["id"], record["params"], record["trigger"]) == (
        body["run_id"], {"n": 7}, {"kind": "http", "by": "127.0.0.1"})
    base = f"requests/{rid[:4]}/{rid[4:6]}/{rid[6:8]}/{rid}"
    request = remote_json(bare_remote, f"{base}.json")
    assert (request["kind"], request["flow"], request["params"], request["by"]) == (
        "run", "hello", {"n": 7}, "http 127.0.0.1")
    assert remote_json(bare_remote, f"{base}.claim.json")["run_id"] == body["run_id"]
    # a request from `trigger` is fetched at once on POST /fetch; the HTTP request is not run again
    puppemon("trigger", "hello", cwd=repo)
    for _ in range(3):
        assert call(port, "POST", "/fetch") == (202, {"fetch": True})
    wait_until(lambda: len(records(bare_remote)) == 2, 30, "the triggered run", lambda: d.log)
    assert len(records_for(bare_remote, rid)) == 1
    assert d.stop() == 0
    assert "HTTP hook listening" in d.log and TOKEN not in d.log


def test_github_webhook(served, bare_remote):
    repo, d, port = served
    raw, sig = signed({"zen": "Keep it simple."})
    assert call(port, "POST", "/github", raw, token=None,
                headers={"X-GitHub-Event": "ping", "X-Hub-Signature-256": sig}) == (200, {"ok": True})
    bad_raw, bad_sig = signed({"ref": "refs/heads/flows"}, secret="not-the-secret")
    assert call(port, "POST", "/github", bad_raw, token=None,
                headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": bad_sig}) == (
        401, {"error": "bad X-Hub-Signature-256"})
    assert call(port, "POST", "/github", bad_raw, token=None, headers={"X-GitHub-Event": "push"})[0] == 401
    raw, sig = signed({"ref": "refs/heads/main"})
    assert call(port, "POST", "/github", raw, token=None,
                headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": sig}) == (
        200, {"ignored": "push to refs/heads/main, not refs/heads/flows"})
    # a new deploy is picked up only because of the webhook (the daemon polls hourly)
    (repo / "puppemon.yaml").write_text((repo / "puppemon.yaml").read_text().replace("exit 3", "exit 4"))
    puppemon("push", cwd=repo)
    new = git("--git-dir", str(bare_remote), "rev-parse", "flows").strip()
    raw, sig = signed({"ref": "refs/heads/flows", "after": new})
    assert call(port, "POST", "/github", raw, token=None,
                headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": sig}) == (202, {"fetch": True})
    wait_until(lambda: call(port, "GET", "/healthz", token=None)[1]["flows_commit"] == new, 30,
               "the new deploy", lambda: d.log)
    assert d.stop() == 0


def test_refuses_a_public_address_without_a_token(tmp_path):
    proc = puppemon("daemon", "--remote", str(tmp_path / "r.git"), "--state", str(tmp_path / "s"),
                    "--listen", "0.0.0.0:0", check=False)
    assert proc.returncode == 1
    assert proc.stderr == ("Error: --listen 0.0.0.0:0: refusing to listen on a non-loopback address without "
                           "a token; set PUPPEMON_HTTP_TOKEN or pass --token-file FILE\n")
    bad = puppemon("daemon", "--remote", "x", "--state", str(tmp_path / "s"), "--listen", "nope", check=False)
    assert bad.stderr == "Error: --listen 'nope': expected HOST:PORT, e.g. 127.0.0.1:8765\n"


def test_token_file_and_clean_shutdown(tmp_path, bare_remote, daemons):  # noqa: F811 - the fixture
    setup_project(tmp_path, bare_remote)
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file\n")
    d = daemons(bare_remote, tmp_path / "state", "--listen", "127.0.0.1:0", "--token-file", str(token_file))
    port = d.port()
    wait_until(lambda: call(port, "GET", "/healthz", token=None)[1]["flows_commit"], 30, "a deploy")
    assert call(port, "POST", "/fetch", token="from-a-file") == (202, {"fetch": True})
    assert call(port, "POST", "/fetch", token=TOKEN)[0] == 401
    assert d.stop() == 0
    with pytest.raises(ConnectionRefusedError):
        call(port, "GET", "/healthz")
    assert re.search(r"daemon d1 stopped", d.log)
