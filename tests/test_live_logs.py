"""Live logs through git: the daemon's live ref, `logs -f`, `trigger --wait` streaming, a crashed run's
partial log. Real daemons, a real bare remote, the HTTP hook off."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import git, puppemon
from tests.daemon_helpers import DaemonProcess, remote_records, wait_until
from tests.test_secrets import write_secrets
from tests.test_trigger import setup_project

SECRET = "hunter2-live-s3cret"
MANIFEST = """\
version: 1
flows:
  ticks:
    command: for i in 1 2 3 4 5; do echo line $i; sleep 1; done
  chatty:
    command: ["sh", "-c", "echo token=$TOKEN; head -c 200000 /dev/zero | tr '\\\\0' x; echo; echo token=$TOKEN; exec sleep 60"]
    secrets: [token]
  slowfail:
    command: echo one; sleep 8; echo two; exit 3
  crashy:
    command: echo before 1; echo before 2; echo "secret $TOKEN"; exec sleep 60
    secrets: [token]
"""
SECRETS = f"token:\n  value: {SECRET}\n  flows: ['*']\n"


def live_refs(bare: Path) -> dict[str, str]:
    out = git("--git-dir", str(bare), "for-each-ref", "--format=%(refname) %(objectname)", "refs/puppemon/live/")
    return dict(line.split() for line in out.splitlines())


def record_of(bare: Path, run_id: str) -> dict | None:
    return next((r for r in remote_records(bare) if r["id"] == run_id), None)


def claimed_run(bare: Path, request_id: str) -> str | None:
    path = f"requests/{request_id[:4]}/{request_id[4:6]}/{request_id[6:8]}/{request_id}.claim.json"
    proc = subprocess.run(["git", "--git-dir", str(bare), "show", f"runs:{path}"], capture_output=True, text=True)
    return json.loads(proc.stdout)["run_id"] if proc.returncode == 0 else None


class Reader:
    """Collects a subprocess's stdout lines in a thread, with the time each arrived."""

    def __init__(self, stream) -> None:
        self.lines: list[tuple[float, str]] = []
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append((time.monotonic(), line))

    def text(self) -> list[str]:
        return [line for _, line in self.lines]


@pytest.fixture
def live_project(tmp_path, bare_remote):
    repo = setup_project(tmp_path, bare_remote, MANIFEST)
    secrets = write_secrets(tmp_path / "secrets.yaml", SECRETS)
    started: list[DaemonProcess] = []

    def start(*args: str) -> DaemonProcess:
        d = DaemonProcess(str(bare_remote), tmp_path / "state", "--secrets", str(secrets), *args).start()
        started.append(d)
        return d

    yield repo, start
    for d in started:
        d.__exit__()


@pytest.mark.slow
def test_logs_follow_prints_lines_while_the_run_goes_then_its_status(live_project, bare_remote):
    repo, start = live_project
    daemon = start("--live-interval", "1")
    rid = puppemon("trigger", "ticks", cwd=repo).stdout.strip()
    follower = subprocess.Popen([sys.executable, "-m", "puppemon", "logs", "-f", rid], cwd=repo,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = Reader(follower.stdout)
    wait_until(lambda: out.lines, 30, "a first line from logs -f", lambda: daemon.log)
    run_id = claimed_run(bare_remote, rid)
    assert record_of(bare_remote, run_id) is None   # the run was still going when its first line showed
    assert follower.wait(30) == 0
    err = follower.stderr.read()
    out.thread.join(5)
    assert out.text() == [f"line {i}\n" for i in range(1, 6)]
    record = record_of(bare_remote, run_id)
    assert err.splitlines()[-1] == f"run {run_id} (ticks): succeeded in {record['duration']:.1f}s"
    # lines came as the run printed them, not all at its end
    assert out.lines[-1][0] - out.lines[0][0] > 2
    # a finished run: -f prints its log and its status, and exits with its code
    again = puppemon("logs", "-f", "ticks", cwd=repo)
    assert again.stdout == "".join(f"line {i}\n" for i in range(1, 6))
    assert again.stderr.splitlines()[-1] == err.splitlines()[-1]
    wait_until(lambda: not live_refs(bare_remote), 15, "the live ref to go once nothing runs")
    assert daemon.stop() == 0


@pytest.mark.slow
def test_logs_follow_of_a_queued_request_waits_for_its_run(live_project, bare_remote):
    repo, start = live_project
    rid = puppemon("trigger", "ticks", cwd=repo).stdout.strip()
    follower = subprocess.Popen([sys.executable, "-m", "puppemon", "logs", "-f", rid], cwd=repo,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert follower.stderr.readline() == (f"no output of run {rid} yet (it has not started, or its daemon "
                                          "publishes no live logs): waiting ...\n")
    daemon = start("--live-interval", "1")   # only now is there a daemon to take the request
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    assert out == "".join(f"line {i}\n" for i in range(1, 6))
    run_id = claimed_run(bare_remote, rid)
    assert err.splitlines()[-1].startswith(f"run {run_id} (ticks): succeeded in ")
    assert daemon.stop() == 0


@pytest.mark.slow
def test_logs_follow_over_the_http_hook(live_project, bare_remote):
    import re
    import urllib.error
    import urllib.request

    repo, start = live_project
    token = {"PUPPEMON_HTTP_TOKEN": "live-token-1"}
    daemon = DaemonProcess(str(bare_remote), bare_remote.parent / "state", "--no-live", "--listen", "127.0.0.1:0",
                           env=token).start()
    try:
        port = wait_until(lambda: re.search(r"HTTP hook listening on http://127\.0\.0\.1:(\d+)", daemon.log), 15,
                          "the HTTP hook", lambda: daemon.log).group(1)
        url = f"http://127.0.0.1:{port}"
        rid = puppemon("trigger", "ticks", cwd=repo).stdout.strip()
        follower = subprocess.Popen([sys.executable, "-m", "puppemon", "logs", "-f", "--http", url, rid], cwd=repo,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env={**os.environ, **token})
        out = Reader(follower.stdout)
        wait_until(lambda: out.lines, 30, "a first line over HTTP", lambda: daemon.log)
        run_id = claimed_run(bare_remote, rid)
        assert record_of(bare_remote, run_id) is None and not live_refs(bare_remote)  # it came over HTTP
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/runs/{run_id}/live", timeout=10)
        assert refused.value.code == 401
        assert follower.wait(30) == 0
        out.thread.join(5)
        assert out.text() == [f"line {i}\n" for i in range(1, 6)]
        asked = urllib.request.Request(f"{url}/runs/{run_id}/live", headers={"Authorization": "Bearer live-token-1"})
        with pytest.raises(urllib.error.HTTPError) as ended:
            urllib.request.urlopen(asked, timeout=10)
        assert ended.value.code == 404
        assert daemon.stop() == 0
    finally:
        daemon.__exit__()


@pytest.mark.slow
def test_the_live_ref_is_one_bounded_redacted_commit(live_project, bare_remote, tmp_path):
    repo, start = live_project
    daemon = start("--live-interval", "1")
    rid = puppemon("trigger", "chatty", cwd=repo).stdout.strip()
    run_id = wait_until(lambda: claimed_run(bare_remote, rid), 30, "the claim", lambda: daemon.log)

    def tail_with_the_end() -> dict | None:
        ref = live_refs(bare_remote).get("refs/puppemon/live/d1")
        if not ref:
            return None
        meta = json.loads(git("--git-dir", str(bare_remote), "show", f"{ref}:{run_id}.json"))
        return meta if meta["total"] == len(b"token=***\n" + b"x" * 200000 + b"\ntoken=***\n") else None

    meta = wait_until(tail_with_the_end, 30, "the live tail of the whole output", lambda: daemon.log)
    ref = "refs/puppemon/live/d1"
    assert git("--git-dir", str(bare_remote), "rev-list", "--parents", ref).split() == [
        live_refs(bare_remote)[ref]]                  # one commit, no parent
    assert sorted(git("--git-dir", str(bare_remote), "ls-tree", "--name-only", ref).split()) == [
        f"{run_id}.json", f"{run_id}.log"]
    log = subprocess.run(["git", "--git-dir", str(bare_remote), "show", f"{ref}:{run_id}.log"],
                         capture_output=True).stdout
    assert len(log) == 64 * 1024 and log.endswith(b"x\ntoken=***\n")
    assert (meta["flow"], meta["daemon"], meta["start"]) == ("chatty", "d1", meta["total"] - len(log))
    assert meta["total"] == len(b"token=***\n" + b"x" * 200000 + b"\ntoken=***\n")
    spool = tmp_path / "state" / "journal" / f"{run_id}.log"
    assert spool.exists() and SECRET.encode() not in spool.read_bytes()
    everything = subprocess.run(["git", "--git-dir", str(bare_remote), "cat-file", "--batch-all-objects",
                                 "--batch"], capture_output=True).stdout
    assert SECRET.encode() not in everything
    # Ctrl-C stops following, not the run
    follower = subprocess.Popen([sys.executable, "-m", "puppemon", "logs", "-f", run_id], cwd=repo,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = follower.stdout.read(len(b"xxxx"))
    assert first == b"xxxx"   # the tail starts in the middle of the x's (what was before it is said on stderr)
    os.kill(follower.pid, signal.SIGINT)
    assert follower.wait(20) == 130
    err = follower.stderr.read().decode()
    assert err.splitlines()[-1] == f"stopped following run {run_id}; it goes on (`puppemon cancel {run_id}` stops it)"
    assert "bytes of output not shown" in err and "Traceback" not in err
    puppemon("cancel", run_id, cwd=repo)
    wait_until(lambda: record_of(bare_remote, run_id), 30, "the cancelled record", lambda: daemon.log)
    wait_until(lambda: not live_refs(bare_remote), 15, "the live ref to go", lambda: daemon.log)
    assert not spool.exists()
    assert daemon.stop() == 0


@pytest.mark.slow
def test_no_live_publishes_no_live_ref(live_project, bare_remote):
    repo, start = live_project
    daemon = start("--no-live")
    rid = puppemon("trigger", "ticks", cwd=repo).stdout.strip()
    seen = []

    def recorded() -> bool:
        seen.append(live_refs(bare_remote))
        run_id = claimed_run(bare_remote, rid)
        return bool(run_id and record_of(bare_remote, run_id))

    wait_until(recorded, 30, "the run's record", lambda: daemon.log, interval=0.2)
    assert len(seen) > 10 and not any(seen)
    assert daemon.stop() == 0


@pytest.mark.slow
def test_logs_follow_of_a_flow_whose_daemon_publishes_no_live_logs(live_project, bare_remote):
    repo, start = live_project
    daemon = start("--no-live")
    rid = puppemon("trigger", "slowfail", cwd=repo).stdout.strip()

    def in_flight() -> bool:
        proc = subprocess.run(["git", "--git-dir", str(bare_remote), "show", "refs/puppemon/status/d1:status.json"],
                              capture_output=True, text=True)
        return proc.returncode == 0 and bool(json.loads(proc.stdout)["in_flight"])

    wait_until(in_flight, 30, "the run in the daemon's status", lambda: daemon.log, interval=0.2)
    proc = puppemon("logs", "-f", "slowfail", cwd=repo, check=False)
    run_id = claimed_run(bare_remote, rid)
    record = record_of(bare_remote, run_id)
    assert (proc.returncode, proc.stdout) == (3, "one\ntwo\n")   # the whole log, from the record
    assert proc.stderr.splitlines() == [
        f"no output of run {run_id} yet (it has not started, or its daemon publishes no live logs): waiting ...",
        f"run {run_id} (slowfail): failed in {record['duration']:.1f}s: exited with code 3"]
    assert daemon.stop() == 0


@pytest.mark.slow
def test_a_crashed_run_keeps_what_it_printed(live_project, bare_remote, tmp_path):
    repo, start = live_project
    daemon = start()
    rid = puppemon("trigger", "crashy", cwd=repo).stdout.strip()
    run_id = wait_until(lambda: claimed_run(bare_remote, rid), 30, "the claim", lambda: daemon.log)
    spool = tmp_path / "state" / "journal" / f"{run_id}.log"
    wait_until(lambda: spool.exists() and b"secret ***" in spool.read_bytes(), 30, "the output in the journal",
               lambda: daemon.log)
    daemon.kill9()
    again = start()
    record = wait_until(lambda: record_of(bare_remote, run_id), 30, "the crashed record", lambda: again.log)
    assert record["status"] == "crashed"
    log = git("--git-dir", str(bare_remote), "show",
              f"runs:runs/crashy/{run_id[:4]}/{run_id[4:6]}/{run_id[6:8]}/{run_id}/log.txt")
    assert log.startswith("before 1\nbefore 2\nsecret ***\npuppemon: the daemon stopped while this run was in flight")
    assert SECRET not in log
    assert not spool.exists()
    assert again.stop() == 0


@pytest.mark.slow
def test_trigger_wait_streams_the_log(live_project, bare_remote):
    repo, start = live_project
    daemon = start("--live-interval", "1")
    proc = subprocess.Popen([sys.executable, "-m", "puppemon", "trigger", "ticks", "--wait"], cwd=repo,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rid = proc.stdout.readline().strip()
    out = Reader(proc.stdout)
    wait_until(lambda: out.lines, 30, "a first line of the run", lambda: daemon.log)
    run_id = claimed_run(bare_remote, rid)
    assert record_of(bare_remote, run_id) is None
    assert proc.wait(30) == 0
    out.thread.join(5)
    assert out.text() == [f"line {i}\n" for i in range(1, 6)]
    assert proc.stderr.read().splitlines()[:2] == [f"waiting for a daemon to take request {rid} ...",
                                                   f"run {run_id} on d1"]
    assert daemon.stop() == 0


def test_trigger_wait_says_when_no_daemon_is_there_and_ctrl_c_leaves_the_request(tmp_path, bare_remote):
    repo = setup_project(tmp_path, bare_remote, MANIFEST)
    proc = subprocess.Popen([sys.executable, "-m", "puppemon", "trigger", "ticks", "--wait"], cwd=repo,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rid = proc.stdout.readline().strip()
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
    reader.start()
    wait_until(lambda: len(err) >= 2, 20, "the no-daemon note", lambda: "".join(err))
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(20) == 130
    reader.join(5)
    assert err == [f"waiting for a daemon to take request {rid} ...\n",
                   "no daemon has sent a heartbeat to origin lately: the request waits until one starts "
                   "(`puppemon status` shows the daemons)\n",
                   f"stopped waiting: request {rid} stays queued; `puppemon cancel {rid}` withdraws it\n"]


# -- the pieces, against oracles: `redact` of the whole stream, Log.render ---------------------------

def test_a_redacted_stream_is_the_redaction_of_the_whole():
    import random

    from puppemon.run.capture import Redactor
    from puppemon.secrets import redact

    rng = random.Random(14)
    for _ in range(2000):
        secrets = {"a": rng.choice(["sec", "secX", "ab", "a", "aab", "abab"]),
                   "b": {"k": rng.choice(["XYsX", "baba", "Xsec"])}}
        pieces = [bytes(rng.choice(b"ab\nsecXY") for _ in range(rng.randint(0, 12)))
                  for _ in range(rng.randint(0, 20))]
        redactor = Redactor(secrets)
        stream = b"".join(redactor.feed(p) for p in pieces)
        assert stream + redact(redactor.pending, secrets) == redact(b"".join(pieces), secrets)
        # held back only what may be a secret's start: a line that ends with a newline shows whole
        assert b"\n" not in redactor.pending
    assert Redactor({"t": "hunter2"}).feed(b"a hunter2 line\n") == b"a *** line\n"


@pytest.mark.parametrize("limit", [0, 1, 10, 64, 1000])
def test_a_spool_read_after_a_crash_renders_as_the_log_would(tmp_path, limit):
    import random

    from puppemon.run.capture import Log, Spool, read_spool

    rng = random.Random(limit)
    for trial in range(50):
        pieces = [rng.randbytes(rng.randint(0, 40)) for _ in range(rng.randint(0, 30))]
        log, spool = Log(limit, None), Spool(tmp_path / f"{trial}.log", limit)
        for piece in pieces:
            log.write(piece)
            spool.write(piece)
        spool.close()   # as a kill -9 leaves it: nothing flushed but what was written
        assert read_spool(tmp_path / f"{trial}.log").render({}) == log.render({})
    assert read_spool(tmp_path / "missing.log") is None


def test_live_interval_from_the_command_line_and_the_config(tmp_path):
    from puppemon.daemon.settings import build_settings
    from puppemon.errors import PuppemonError

    base = {"remote": "r", "state": str(tmp_path)}
    assert build_settings(base).live_interval == 5.0
    assert build_settings({**base, "live_interval": "2s"}).live_interval == 2.0
    assert build_settings({**base, "no_live": True}).live_interval == 0.0
    config = tmp_path / "daemon.yaml"
    config.write_text("remote: r\nlive_interval: 0\n")
    assert build_settings({"config": str(config)}).live_interval == 0.0
    with pytest.raises(PuppemonError) as bad:
        build_settings({**base, "live_interval": "0.2"})
    assert bad.value.message == "--live-interval '0.2': at least 1s (or 0, or --no-live, for none)"
