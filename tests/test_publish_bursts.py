"""How many pushes the runs of a real daemon take: HTTP runs through 127.0.0.1, pushes counted in the
reflog of the bare remote's runs branch (one entry a push)."""
from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.conftest import git
from tests.daemon_helpers import fsck, linear
from tests.test_httpd import TOKEN, call
from tests.test_trigger import daemons, remote_files, setup_project, wait_until  # noqa: F401

QUICK = 'version: 1\nflows:\n  quick:\n    command: "true"\n    overlap: parallel\n'
SLOW = 'version: 1\nflows:\n  quick:\n    command: "sleep 0.5"\n'   # longer than a cycle of the daemon
BURST = 50
SPREAD = 0.03  # seconds between two requests of the burst
GAP = 0.25     # puppemon.daemon.outbox.GAP: at least this long between the starts of two publishes


def pushes(bare: Path) -> int:
    """Updates of the remote's runs branch so far."""
    log = bare / "logs" / "refs" / "heads" / "runs"
    return len(log.read_text().splitlines()) if log.exists() else 0


def serve(tmp_path, bare_remote, daemons, manifest: str = QUICK, *args: str):  # noqa: F811 - the fixture
    git("--git-dir", str(bare_remote), "config", "core.logAllRefUpdates", "always")
    setup_project(tmp_path, bare_remote, manifest)
    d = daemons(bare_remote, tmp_path / "state", "--listen", "127.0.0.1:0", "--poll", "1h", *args,
                env={"PUPPEMON_HTTP_TOKEN": TOKEN})
    port = d.port()
    wait_until(lambda: call(port, "GET", "/healthz", token=None)[1]["flows_commit"], 30, "a deploy", lambda: d.log)
    wait_until(lambda: pushes(bare_remote), 30, "the deploy record", lambda: d.log)
    return d, port


def run_files(bare: Path, flow: str = "quick") -> list[str]:
    return [p for p in remote_files(bare, f"runs/{flow}/") if p.endswith("/run.json")]


def test_a_run_started_at_once_publishes_its_request_with_its_record_in_one_push(tmp_path, bare_remote, daemons):  # noqa: F811
    d, port = serve(tmp_path, bare_remote, daemons, SLOW)
    before = pushes(bare_remote)
    status, body = call(port, "POST", "/flows/quick/runs", {"params": {}})
    assert status == 202, body
    wait_until(lambda: run_files(bare_remote), 30, "the record", lambda: d.log)
    assert d.stop() == 0
    rid = body["request_id"]
    request = f"requests/{rid[:4]}/{rid[4:6]}/{rid[6:8]}/{rid}"
    assert {f"{request}.json", f"{request}.claim.json"} <= set(remote_files(bare_remote, "requests/"))
    assert pushes(bare_remote) - before == 1, git("--git-dir", str(bare_remote), "log", "--format=%s", "runs")


def test_a_burst_of_http_runs_goes_out_in_few_pushes_and_every_record_arrives(tmp_path, bare_remote, daemons):  # noqa: F811
    d, port = serve(tmp_path, bare_remote, daemons)
    before = pushes(bare_remote)
    start = threading.Barrier(BURST)
    answers: list = [None] * BURST

    def client(i: int) -> None:
        start.wait()
        time.sleep(i * SPREAD)
        answers[i] = call(port, "POST", "/flows/quick/runs", {"params": {"i": i}})

    threads = [threading.Thread(target=client, args=(i,)) for i in range(BURST)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(a is not None and a[0] == 202 for a in answers), answers
    wait_until(lambda: len(run_files(bare_remote)) == BURST, 60, f"{BURST} records",
               lambda: f"{len(run_files(bare_remote))} recorded\n{d.log[-3000:]}", interval=0.05)
    took = time.monotonic() - began
    published = pushes(bare_remote) - before
    assert d.stop() == 0
    assert published <= BURST // 4, f"{BURST} runs took {published} pushes (2 a run without batching)"
    # publishes start at least GAP apart: the burst's records shared them, whatever the machine's speed
    assert published <= took / GAP + 2, f"{published} pushes in {took:.2f}s"
    requests = [p for p in remote_files(bare_remote, "requests/") if p.endswith(".claim.json")]
    assert len(requests) == BURST
    fsck(bare_remote)
    assert linear(bare_remote)


def test_a_run_that_waits_for_a_slot_has_its_request_published_before_it_starts(tmp_path, bare_remote, daemons):  # noqa: F811
    release = tmp_path / "release"
    manifest = (f'version: 1\nflows:\n  blocker:\n    command: ["sh", "-c", "while [ ! -e {release} ]; do sleep 0.02;'
                f' done"]\n  quick:\n    command: "true"\n')
    d, port = serve(tmp_path, bare_remote, daemons, manifest, "--max-parallel", "1")
    assert call(port, "POST", "/flows/blocker/runs", {"params": {}})[0] == 202
    status, body = call(port, "POST", "/flows/quick/runs", {"params": {}})
    assert status == 202
    rid = body["request_id"]
    request = f"requests/{rid[:4]}/{rid[4:6]}/{rid[6:8]}/{rid}.json"
    wait_until(lambda: request in remote_files(bare_remote, "requests/"), 10, "the queued run's request",
               lambda: d.log)
    assert run_files(bare_remote, "blocker") == [] and run_files(bare_remote) == []   # nothing ran yet
    release.touch()
    wait_until(lambda: run_files(bare_remote), 30, "the queued run's record", lambda: d.log)
    assert d.stop() == 0
