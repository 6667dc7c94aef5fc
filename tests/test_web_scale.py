"""The dashboard stays responsive with large runs: a 100 MB log and 10,000 output files open without
stalling `puppemon ui`, and a client that stops reading holds up no other."""
from __future__ import annotations

import os
import socket
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from tests.conftest import git, make_repo
from tests.web_helpers import UiProcess

pytestmark = pytest.mark.slow
LOG_SIZE = 100 * 1024 * 1024
OUTPUTS = 10_000


def _big_run(repo) -> dict:
    """Record one run with a 100 MB log and OUTPUTS outputs on the runs branch of `repo`, through the
    records API (the files and message a daemon would write)."""
    from puppemon.gitstore import FILE, Store
    from puppemon.history.records import RunContext, run_files, run_message, synthetic_record

    started = datetime(2026, 11, 25, 8, 30, tzinfo=timezone.utc)
    record = synthetic_record(RunContext("20261125T083000Z-abc123", "big", {"kind": "schedule"}), "succeeded",
                              None, started, started + timedelta(seconds=90))
    outputs = [SimpleNamespace(path=f"part-{i:05d}.txt", data=f"row {i}\n".encode(), executable=False)
               for i in range(OUTPUTS)]
    record["outputs"] = [{"path": o.path, "size": len(o.data), "sha256": ""} for o in outputs]
    line = b"0123456789 the same long line of output, again and again, to make a large log\n"
    log = line * (LOG_SIZE // len(line)) + b"the last line\n"
    store = Store(repo / ".git")
    files = run_files(record, log, outputs=outputs)
    tree = store.update_tree(None, {path: (store.blob(data), mode or FILE) for path, (data, mode) in files.items()})
    store.set_ref("refs/heads/runs", store.commit(tree, [], run_message(record)), None)
    return record


def _get(url: str) -> tuple[int, bytes, float]:
    start = time.monotonic()
    with urllib.request.urlopen(url, timeout=60) as answer:
        return answer.status, answer.read(), time.monotonic() - start


def test_a_huge_log_and_many_outputs_open_and_a_slow_client_holds_up_no_one(tmp_path):
    repo = make_repo(tmp_path / "project", {"README": "x"})
    record = _big_run(repo)
    assert git("ls-tree", "-r", "--name-only", "runs", cwd=repo).count("/outputs/") == OUTPUTS
    ui = UiProcess(repo, dict(os.environ), "--no-fetch")
    try:
        code, page, took = _get(f"{ui.url}runs/{record['id']}.html")
        assert code == 200 and took < 20, took
        text = page.decode()
        assert "the last line" in text and "The last 524288 characters of 100 MiB" in text
        assert text.count('class="output-name"') == 200 and "and 9800 more outputs" in text
        # one client asks for the whole log and reads none of it; another is served meanwhile
        slow = socket.create_connection(("127.0.0.1", int(ui.url.rsplit(":", 1)[1].strip("/"))))
        slow.sendall(f"GET /runs/{record['id']}/log.txt HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        half = socket.create_connection(("127.0.0.1", int(ui.url.rsplit(":", 1)[1].strip("/"))))
        half.sendall(b"GET / HT")    # a request that never ends
        code, page, took = _get(ui.url)
        assert code == 200 and b"big" in page and took < 10, took
        code, _, took = _get(f"{ui.url}api/runs/{record['id']}.json")
        assert code == 200 and took < 10, took
        slow.close()
        half.close()
    finally:
        ui.stop()


def test_offline_the_dashboard_shows_what_was_fetched(tmp_path):
    """A remote that cannot be reached: `puppemon ui` says so once and serves the clone's records."""
    repo = make_repo(tmp_path / "project", {"README": "x"})
    git("remote", "add", "origin", str(tmp_path / "gone.git"), cwd=repo)
    record = _small_run(repo)
    ui = UiProcess(repo, dict(os.environ))
    try:
        code, page, _took = _get(ui.url)
        assert code == 200 and f"{record['id']}.html" in page.decode()
    finally:
        ui.stop()
    assert "fetch from origin failed" in ui.log, ui.log


def test_a_remote_that_stays_unreachable_is_said_once(tmp_path, caplog):
    """The dashboard's fetcher warns when a fetch fails, not again while it fails the same way."""
    from puppemon.gitstore import Store
    from puppemon.web.server import Fetcher

    repo = make_repo(tmp_path / "project", {"README": "x"})
    fetcher = Fetcher(Store(repo / ".git"), str(tmp_path / "gone.git"))
    with caplog.at_level("WARNING", logger="puppemon"):
        for _ in range(3):
            fetcher.fetch()
    said = [r.getMessage() for r in caplog.records if "fetch from" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(f"fetch from {tmp_path / 'gone.git'} failed: "), said


def _small_run(repo) -> dict:
    from puppemon.gitstore import FILE, Store
    from puppemon.history.records import RunContext, run_files, run_message, synthetic_record

    started = datetime(2026, 11, 25, 8, 30, tzinfo=timezone.utc)
    record = synthetic_record(RunContext("20261125T083000Z-0ff11e", "small", {"kind": "schedule"}), "failed",
                              "exit 1", started, started + timedelta(seconds=1))
    store = Store(repo / ".git")
    files = run_files(record, b"offline\n")
    tree = store.update_tree(None, {p: (store.blob(d), m or FILE) for p, (d, m) in files.items()})
    store.set_ref("refs/heads/runs", store.commit(tree, [], run_message(record)), None)
    return record


def test_a_long_running_dashboard_keeps_a_bounded_number_of_run_pages(tmp_path):
    """Each finished run's page is kept made (up to 512 KiB of log each): at most RUN_PAGES of them."""
    from puppemon.gitstore import FILE, Store
    from puppemon.history.records import RunContext, run_files, synthetic_record
    from puppemon.web.details import RUN_PAGES, run_page
    from puppemon.web.reading import Sources

    repo = make_repo(tmp_path / "project", {"README": "x"})
    store = Store(repo / ".git")
    started = datetime(2026, 11, 25, 8, 30, tzinfo=timezone.utc)
    files, ids = {}, []
    for n in range(RUN_PAGES + 8):
        run_id = f"20261125T0830{n:02d}Z-{n:06x}"
        record = synthetic_record(RunContext(run_id, "many", {"kind": "schedule"}), "succeeded", None,
                                  started + timedelta(seconds=n), started + timedelta(seconds=n + 1))
        files.update(run_files(record, f"run {n}\n".encode()))
        ids.append(run_id)
    tree = store.update_tree(None, {p: (store.blob(d), m or FILE) for p, (d, m) in files.items()})
    store.set_ref("refs/heads/runs", store.commit(tree, [], "runs\n"), None)
    sources = Sources(store)
    for run_id in ids:
        assert run_page(sources, run_id)["run"]["id"] == run_id
    kept = [key[1] for key in sources.cache if key[0] == "run"]
    assert kept == ids[-RUN_PAGES:]          # the newest pages asked for, the oldest let go
    assert run_page(sources, ids[0])["run"]["id"] == ids[0]   # a page let go is made again


def test_the_deploys_page_finds_what_daemons_made_of_a_deploy_in_a_month_archive(tmp_path):
    """A deploy whose day rotated out of the runs tip still shows its daemons' outcomes."""
    from puppemon.gitstore import FILE, Store
    from puppemon.history.records import deploy_record
    from puppemon.history.status import FLOWS_TIP
    from puppemon.web.reading import Sources, deploys

    repo = make_repo(tmp_path / "project", {"README": "x"})
    store = Store(repo / ".git")
    manifest = store.update_tree(None, {"puppemon.yaml": (store.blob(b"version: 1\nflows: {}\n"), FILE)})
    flows = store.commit(manifest, [], "deploy\n")
    store.set_ref(FLOWS_TIP, flows, None)
    files, _message = deploy_record(flows, "", "d1", datetime(2026, 10, 3, 9, tzinfo=timezone.utc),
                                    {"status": "deployed", "flows": {}})
    archive = store.update_tree(None, {p: (store.blob(d), FILE) for p, d in files.items()})
    store.set_ref("refs/puppemon/archive/2026-10", store.commit(archive, [], "rotate 2026-10-03\n"), None)
    tip = store.update_tree(None, {"control/format.json": (store.blob(b'{"layout": 1}\n'), FILE)})
    store.set_ref("refs/heads/runs", store.commit(tip, [], "runs\n"), None)
    (shown,) = deploys(Sources(store))["deploys"]
    assert shown["commit"] == flows
    assert [(o["daemon"], o["status"]) for o in shown["outcomes"]] == [("d1", "deployed")]
