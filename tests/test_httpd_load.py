"""The HTTP hook under load and hostile bodies, through a real daemon and real sockets on 127.0.0.1."""
from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter

from tests.conftest import git
from tests.test_httpd import TOKEN, call
from tests.test_trigger import daemons, remote_files, remote_json, setup_project, wait_until  # noqa: F401

QUICK = 'version: 1\nflows:\n  quick:\n    command: "true"\n    overlap: parallel\n'
CLIENTS = 200


def serve(tmp_path, bare_remote, daemons, *args: str):  # noqa: F811 - the fixture, passed on
    setup_project(tmp_path, bare_remote, QUICK)
    d = daemons(bare_remote, tmp_path / "state", "--listen", "127.0.0.1:0", "--poll", "1h", *args,
                env={"PUPPEMON_HTTP_TOKEN": TOKEN})
    port = d.port()
    wait_until(lambda: call(port, "GET", "/healthz", token=None)[1]["flows_commit"], 30, "a deploy", lambda: d.log)
    return d, port


def post_run(port: int, start: threading.Barrier, answers: list, index: int) -> None:
    """One client: a connection of its own, opened when all the others are ready too."""
    start.wait()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", "/flows/quick/runs", body=json.dumps({"params": {"i": index}}).encode(),
                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        resp = conn.getresponse()
        answers[index] = (resp.status, json.loads(resp.read()))
        conn.close()
    except OSError as exc:  # a reset connection: what a too short listen backlog gives
        answers[index] = (type(exc).__name__, str(exc))


def test_200_concurrent_runs_are_all_answered_and_each_recorded_once(tmp_path, bare_remote, daemons):  # noqa: F811
    d, port = serve(tmp_path, bare_remote, daemons, "--max-parallel", "8")
    answers: list = [None] * CLIENTS
    start = threading.Barrier(CLIENTS)
    clients = [threading.Thread(target=post_run, args=(port, start, answers, i)) for i in range(CLIENTS)]
    began = time.monotonic()
    for t in clients:
        t.start()
    for t in clients:
        t.join(90)
    answered = time.monotonic() - began
    failed = [a for a in answers if a is None or a[0] != 202]
    assert not failed, f"{len(failed)} of {CLIENTS} not accepted, e.g. {failed[:3]}"
    assert answered < 30, f"answering {CLIENTS} requests took {answered:.1f}s"
    run_ids = {body["run_id"]: i for i, (_, body) in enumerate(answers)}
    assert len(run_ids) == CLIENTS and len({body["request_id"] for _, body in answers}) == CLIENTS

    def recorded() -> list[str]:
        return [p for p in remote_files(bare_remote, "runs/quick/") if p.endswith("/run.json")]

    wait_until(lambda: len(recorded()) >= CLIENTS, 60, f"{CLIENTS} run records",
               lambda: f"{len(recorded())} recorded\n{d.log[-3000:]}", interval=0.5)
    paths = recorded()
    records = [remote_json(bare_remote, p) for p in paths]
    counts = Counter(r["id"] for r in records)
    assert counts == Counter(list(run_ids)), "each answered run recorded exactly once"
    assert all(r["status"] == "succeeded" and r["params"] == {"i": run_ids[r["id"]]} for r in records)
    assert d.stop() == 0
    git("--git-dir", str(bare_remote), "fsck", "--strict", "--no-dangling")


def test_a_deeply_nested_body_is_answered_400(tmp_path, bare_remote, daemons):  # noqa: F811
    d, port = serve(tmp_path, bare_remote, daemons)
    deep = b'{"params": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    assert call(port, "POST", "/flows/quick/runs", deep) == (400, {"error": "the body nests deeper than 32 levels"})
    params = {"a": 1}
    for _ in range(32):
        params = {"a": params}
    assert call(port, "POST", "/flows/quick/runs", {"params": params}) == (
        400, {"error": "params nest deeper than 32 levels"})
    status, body = call(port, "POST", "/flows/quick/runs", {"params": params["a"]})   # 32 levels: fine
    assert status == 202, body
    assert call(port, "GET", "/healthz", token=None)[0] == 200   # still serving
    assert "Traceback" not in d.log
