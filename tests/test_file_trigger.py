"""`on_file:`: files landing in a watched server directory start runs (real daemons, real files, real inotify
and polling): once each after their settle time, written slowly or all at once, batched, across restarts
and daemons; where a server lets flows watch, and what a manifest may say."""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from puppemon.project.manifest import ManifestError, parse
from tests.conftest import git, puppemon
from tests.daemon_helpers import (DaemonProcess, deploy, deploy_records, fsck, manifest_project, remote_records,
                                  result_of, run_daemon_once, wait_until)

pytestmark = pytest.mark.slow

FLOW_PY = """\
import os
import puppemon


def main():
    files = puppemon.trigger()["files"]
    return {"files": files, "env": os.environ["PUPPEMON_TRIGGER_FILES"],
            "content": [open(f).read() for f in files]}
"""


def manifest(inbox: Path, settle: str = "0.5s", **extra) -> str:
    more = "".join(f", {k}: {json.dumps(v)}" for k, v in extra.items() if k != "catchup")
    text = ("version: 1\nflows:\n  ingest:\n    entrypoint: flow.py:main\n"
            f"    on_file: {{path: {inbox}, pattern: \"*.csv\", settle: {settle}{more}}}\n")
    return text + (f"    catchup: {extra['catchup']}\n" if "catchup" in extra else "")


@pytest.fixture
def inbox(tmp_path) -> Path:
    path = tmp_path / "srv" / "inbox"
    path.mkdir(parents=True)
    return path


def setup(tmp_path, bare_remote, inbox, **kw) -> Path:
    repo = manifest_project(tmp_path, str(bare_remote), manifest(inbox, **kw), {"flow.py": FLOW_PY})
    deploy(repo)
    return repo


def daemon(bare_remote, tmp_path, *args, name="d1", state="state") -> DaemonProcess:
    return DaemonProcess(str(bare_remote), tmp_path / state, "--watch-root", str(tmp_path / "srv"), *args,
                         name=name)


def ingests(bare_remote) -> list[dict]:
    return [r for r in remote_records(bare_remote) if r["flow"] == "ingest"]


def results(bare_remote) -> list[dict]:
    return sorted((result_of(bare_remote, r) for r in ingests(bare_remote)), key=lambda r: r["files"])


def watching(d: DaemonProcess) -> str:
    """The daemon's log once its watch began (and its deploy is in)."""
    wait_until(lambda: "watching " in d.log and ("deployed " in d.log or "resumed deploy" in d.log), 30,
               "the watch to begin", lambda: d.log)
    return d.log


def moment(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_files_fire_once_each_after_the_settle_time(tmp_path, bare_remote, inbox):
    setup(tmp_path, bare_remote, inbox, settle="0.5s", catchup="none")
    with daemon(bare_remote, tmp_path) as d:
        watching(d)
        (inbox / "a.csv").write_text("alpha\n")
        (inbox / "b.csv").write_text("beta\n")
        (inbox / "c.txt").write_text("not a csv\n")
        wait_until(lambda: len(ingests(bare_remote)) >= 2, 20, "two runs", lambda: d.log)
        time.sleep(1.5)   # three settle times more: nothing else fires
        assert d.stop() == 0
    records = ingests(bare_remote)
    assert len(records) == 2 and {r["status"] for r in records} == {"succeeded"}
    assert results(bare_remote) == [
        {"files": [str(inbox / "a.csv")], "env": json.dumps([str(inbox / "a.csv")]), "content": ["alpha\n"]},
        {"files": [str(inbox / "b.csv")], "env": json.dumps([str(inbox / "b.csv")]), "content": ["beta\n"]}]
    for record in records:
        (path,) = record["trigger"]["files"]
        assert record["trigger"]["kind"] == "file" and record["params"] == {}
        assert moment(record["started"]) >= os.stat(path).st_mtime + 0.5 - 0.01   # not before it settled
    handled = [p for p in git("--git-dir", str(bare_remote), "ls-tree", "-r", "--name-only", "runs").split()
               if p.startswith("watch/ingest/")]
    assert len(handled) == 2
    claim = json.loads(git("--git-dir", str(bare_remote), "show", f"runs:{handled[0]}"))
    assert claim["file"] in {str(inbox / "a.csv"), str(inbox / "b.csv")} and claim["daemon"] == "d1"
    assert claim["run_id"] in {r["id"] for r in records}
    fsck(bare_remote)


def test_a_file_written_slowly_in_chunks_fires_once_when_complete(tmp_path, bare_remote, inbox):
    setup(tmp_path, bare_remote, inbox, settle="0.8s")
    chunks = [f"line {i}\n" for i in range(12)]
    with daemon(bare_remote, tmp_path) as d:
        watching(d)
        with open(inbox / "slow.csv", "w") as fh:
            for chunk in chunks:    # 12 chunks over ~2.2 s, each well within the settle time of the last
                fh.write(chunk)
                fh.flush()
                time.sleep(0.2)
        done = os.stat(inbox / "slow.csv").st_mtime
        wait_until(lambda: ingests(bare_remote), 20, "the run", lambda: d.log)
        time.sleep(1.6)
        assert d.stop() == 0
    (record,) = ingests(bare_remote)
    assert results(bare_remote)[0]["content"] == ["".join(chunks)]
    assert moment(record["started"]) >= done + 0.8 - 0.01


def test_batch_mode_gives_one_run_with_the_files_that_settled_together(tmp_path, bare_remote, inbox):
    setup(tmp_path, bare_remote, inbox, settle="0.6s", batch=True)
    with daemon(bare_remote, tmp_path) as d:
        watching(d)
        for name in ("b.csv", "a.csv", "c.csv"):
            (inbox / name).write_text(name)
        wait_until(lambda: ingests(bare_remote), 20, "the run", lambda: d.log)
        time.sleep(1.2)
        assert d.stop() == 0
    assert [r["content"] for r in results(bare_remote)] == [["a.csv", "b.csv", "c.csv"]]
    assert results(bare_remote)[0]["files"] == [str(inbox / n) for n in ("a.csv", "b.csv", "c.csv")]


@pytest.mark.parametrize("catchup", ["all", "none", "latest"])
def test_a_restart_runs_no_file_again_and_files_that_came_meanwhile_follow_catchup(tmp_path, bare_remote, inbox,
                                                                                  catchup):
    setup(tmp_path, bare_remote, inbox, settle="0.3s", catchup=catchup)
    with daemon(bare_remote, tmp_path) as d:
        watching(d)
        (inbox / "a.csv").write_text("before")
        wait_until(lambda: ingests(bare_remote), 20, "the first run", lambda: d.log)
        assert d.stop() == 0
    (inbox / "b.csv").write_text("while down")
    (inbox / "c.csv").write_text("while down, newest")
    os.utime(inbox / "b.csv", ns=(time.time_ns() - 10**9, time.time_ns() - 10**9))
    expected = {"all": ["a.csv", "b.csv", "c.csv"], "none": ["a.csv", "d.csv"], "latest": ["a.csv", "c.csv", "d.csv"]}
    with daemon(bare_remote, tmp_path) as d:
        watching(d)
        if catchup == "all":
            wait_until(lambda: len(ingests(bare_remote)) >= 3, 20, "the files of the gap", lambda: d.log)
        else:
            if catchup == "latest":
                wait_until(lambda: len(ingests(bare_remote)) >= 2, 20, "the newest file", lambda: d.log)
            (inbox / "d.csv").write_text("after the start")   # the watch goes on
            wait_until(lambda: any(r["files"] == [str(inbox / "d.csv")] for r in results(bare_remote)), 20,
                       "d.csv", lambda: d.log)
        time.sleep(1.0)
        assert d.stop() == 0
    ran = Counter(os.path.basename(f) for r in results(bare_remote) for f in r["files"])
    assert sorted(ran) == expected[catchup] and set(ran.values()) == {1}


def test_two_daemons_watching_one_directory_run_each_file_once(tmp_path, bare_remote, inbox):
    setup(tmp_path, bare_remote, inbox, settle="0.4s", catchup="none")
    with daemon(bare_remote, tmp_path, name="d1", state="s1") as d1, \
            daemon(bare_remote, tmp_path, name="d2", state="s2") as d2:
        watching(d1), watching(d2)
        names = [f"f{i}.csv" for i in range(6)]
        for name in names:
            (inbox / name).write_text(name)
        wait_until(lambda: len(ingests(bare_remote)) >= 6, 30, "six runs", lambda: d1.log + d2.log)
        time.sleep(1.5)
        assert d1.stop() == 0 and d2.stop() == 0
    ran = Counter(os.path.basename(f) for r in results(bare_remote) for f in r["files"])
    assert ran == Counter(names)
    fsck(bare_remote)


def test_polling_mode_on_a_directory(tmp_path, bare_remote, inbox):
    setup(tmp_path, bare_remote, inbox, settle="0.4s", poll=True, catchup="none")
    with daemon(bare_remote, tmp_path) as d:
        assert "(polling)" in watching(d)
        (inbox / "p.csv").write_text("polled")
        wait_until(lambda: ingests(bare_remote), 20, "the run", lambda: d.log)
        assert d.stop() == 0
    assert [r["content"] for r in results(bare_remote)] == [["polled"]]


def test_once_runs_the_files_found_at_start_after_they_settle(tmp_path, bare_remote, inbox):
    setup(tmp_path, bare_remote, inbox, settle="0.3s", catchup="all")
    (inbox / "a.csv").write_text("one")
    proc = run_daemon_once(str(bare_remote), tmp_path / "state", "--watch-root", str(tmp_path / "srv"))
    assert proc.returncode == 0, proc.stderr
    proc = run_daemon_once(str(bare_remote), tmp_path / "state", "--watch-root", str(tmp_path / "srv"))
    assert proc.returncode == 0, proc.stderr
    assert [r["content"] for r in results(bare_remote)] == [["one"]]


@pytest.mark.parametrize("where, error", [
    ("outside", "flow 'ingest' watches {path} (on_file), outside the directories this daemon may watch ({root}): "
                "add it to watch_roots: in the daemon's config file, or --watch-root DIR"),
    ("missing", "flow 'ingest' watches {path} (on_file), which does not exist on this server (create it, or "
                "change on_file.path)"),
    ("escaping", "flow 'ingest' watches {path} (on_file), outside the directories this daemon may watch "
                 "({root}): add it to watch_roots: in the daemon's config file, or --watch-root DIR"),
], ids=["outside", "missing", "escaping"])
def test_a_watch_the_server_does_not_allow_refuses_the_deploy(tmp_path, bare_remote, inbox, where, error):
    repo = setup(tmp_path, bare_remote, inbox, settle="0.3s", catchup="none")
    good = git("--git-dir", str(bare_remote), "rev-parse", "flows").strip()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "srv" / "link").symlink_to(tmp_path / "elsewhere")
    path = {"outside": tmp_path / "elsewhere", "missing": tmp_path / "srv" / "nope",
            "escaping": tmp_path / "srv" / "link"}[where]
    with daemon(bare_remote, tmp_path) as d:
        watching(d)
        deploy(repo, manifest(path, settle="0.3s"))
        bad = git("--git-dir", str(bare_remote), "rev-parse", "flows").strip()
        refused = wait_until(lambda: [r for r in deploy_records(bare_remote) if r.get("status") == "refused"], 20,
                             "the refusal", lambda: d.log)
        (inbox / "still.csv").write_text("the last good deploy goes on")
        wait_until(lambda: ingests(bare_remote), 20, "a run of the good deploy", lambda: d.log)
        assert d.stop() == 0
    shown = str(path) if where != "escaping" else f"{path} (that is {tmp_path / 'elsewhere'})"
    assert refused[0]["error"] == error.format(path=shown, root=tmp_path / "srv")
    assert refused[0]["flows_commit"] == bad
    assert [r["flows_commit"] for r in ingests(bare_remote)] == [good]


def test_no_watch_roots_refuses_every_watch_but_not_of_flows_another_daemon_takes(tmp_path, bare_remote, inbox):
    repo = setup(tmp_path, bare_remote, inbox)
    proc = run_daemon_once(str(bare_remote), tmp_path / "state")
    (record,) = deploy_records(bare_remote)
    assert record["status"] == "refused"
    assert record["error"] == (f"flow 'ingest' watches {inbox} (on_file), but this daemon allows no watched "
                               "directories: add a directory above it to watch_roots: in the daemon's config "
                               "file, or pass --watch-root DIR")
    deploy(repo, manifest(inbox) + "    runs_on: [gpu]\n")
    proc = run_daemon_once(str(bare_remote), tmp_path / "state")
    assert proc.returncode == 0, proc.stderr
    assert sorted(r["status"] for r in deploy_records(bare_remote)) == ["deployed", "refused"]


def test_watch_roots_in_the_config_file_resolve_against_it(tmp_path, bare_remote, inbox):
    setup(tmp_path, bare_remote, inbox, catchup="all")
    (inbox / "a.csv").write_text("from the config")
    config = tmp_path / "srv" / "daemon.yaml"
    config.write_text(f"remote: {bare_remote}\nstate: ../state\nname: d1\nwatch_roots: [inbox]\n")
    proc = puppemon("daemon", "--once", "--config", str(config), check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [r["content"] for r in results(bare_remote)] == [["from the config"]]
    config.write_text(f"remote: {bare_remote}\nwatch_roots: [3]\n")
    proc = puppemon("daemon", "--once", "--config", str(config), check=False)
    assert (proc.returncode, proc.stderr) == (1, f"Error: {config}: watch_roots: expected directory paths "
                                                 "(watch_roots: [/srv/inbox]), got 3\n")


@pytest.mark.parametrize("on_file, error", [
    ('{path: /srv/in, pattern: "[ab"}', "6:39: flows.ingest.on_file.pattern: '[ab' is not a glob: '[' at position "
                                        "1 is not closed by ']' (write [[] for a literal '[')"),
    ('{path: /srv/in, pattern: "in/*.csv"}', "6:39: flows.ingest.on_file.pattern: 'in/*.csv' is not a glob: a "
                                             "pattern matches file names, not paths: it cannot hold '/' (put the "
                                             "directory in path:)"),
    ('{path: /srv/in, pattern: ""}', "6:39: flows.ingest.on_file.pattern: '' is not a glob: the pattern is empty "
                                     "(use a glob such as \"*.csv\")"),
    ('{path: srv/in, pattern: "*"}', "6:21: flows.ingest.on_file.path: 'srv/in' is not an absolute path (give the "
                                     "server directory to watch, e.g. /srv/inbox)"),
    ('{pattern: "*"}', "6:14: flows.ingest.on_file: path is missing (name the server directory to watch, e.g. "
                       "path: /srv/inbox)"),
    ('{path: /srv/in}', "6:14: flows.ingest.on_file: pattern is missing (the file names to run for, e.g. "
                        "pattern: \"*.csv\")"),
    ('{path: /srv/in, pattern: "*", settle: 0}', "6:52: flows.ingest.on_file.settle: 0 is too short (use more "
                                                 "than 0s)"),
    ('{path: /srv/in, pattern: "*", batched: true}', "6:44: flows.ingest.on_file.batched: unknown key (did you "
                                                     "mean 'batch'?)"),
])
def test_a_bad_on_file_is_a_manifest_error_with_its_place(tmp_path, on_file, error):
    text = f"version: 1\n\nflows:\n  ingest:\n    command: [\"true\"]\n    on_file: {on_file}\n"
    with pytest.raises(ManifestError) as caught:
        parse(text)
    assert caught.value.message == f"puppemon.yaml:{error}"
    repo = manifest_project(tmp_path, str(tmp_path / "none.git"), text)
    proc = puppemon("validate", cwd=repo, check=False)
    assert (proc.returncode, proc.stderr.strip()) == (1, f"Error: puppemon.yaml:{error}")


def test_good_globs_and_how_validate_shows_the_trigger(tmp_path):
    for pattern in ("*.csv", "report-[0-9][0-9].txt", "[]]x", "[!.]*", "[[]literal", "exact.csv"):
        text = f"version: 1\nflows:\n  ingest:\n    command: [\"true\"]\n    on_file: {{path: /srv/in/, pattern: " \
               f"\"{pattern}\", batch: true, poll: true}}\n"
        (trigger,) = parse(text).flows["ingest"].triggers
        assert (trigger.path, trigger.pattern, trigger.settle, trigger.batch, trigger.poll) == \
            ("/srv/in", pattern, 2.0, True, True)
        assert trigger.describe() == f"on file /srv/in/{pattern} (settle 2s, batch, poll)"
