"""Hostile `runs` content: anyone who can push to the remote can write requests, claims and records.

The files are written with the real git binary into a clone of the remote's runs branch (as an
attacker would), then a real daemon serves the branch and the real CLI reads it.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from tests.conftest import git, make_repo, puppemon
from tests.daemon_helpers import DaemonProcess, fsck, remote_records, run_daemon_once, wait_until

MANIFEST = "version: 1\nflows:\n  hello:\n    command: echo hello\n"
DAY = datetime.now(timezone.utc).strftime("%Y%m%d")
DIR = f"requests/{DAY[:4]}/{DAY[4:6]}/{DAY[6:]}"


def rid(n: int) -> str:
    """A request id of today that sorts before any `puppemon trigger` writes now."""
    return f"{DAY}T000000Z-{n:06x}"


def request(n: int, **fields) -> bytes:
    body = {"schema": 1, "id": rid(n), "kind": "run", "flow": "hello", "by": "mallory", "time": "x", **fields}
    return json.dumps(body).encode()


def setup(tmp_path: Path, bare: Path) -> Path:
    repo = make_repo(tmp_path / "project", {"puppemon.yaml": MANIFEST})
    git("remote", "add", "origin", str(bare), cwd=repo)
    puppemon("push", cwd=repo)
    return repo


def push_raw(bare: Path, tmp_path: Path, files: dict[str, bytes], message: str = "mallory was here") -> None:
    """Commit `files` on the remote's runs branch with plain git, from a clone of it, and push."""
    clone = tmp_path / f"attacker-{len(list(tmp_path.glob('attacker-*')))}"
    # --no-local: a daemon may be pushing to `bare` meanwhile, and a local clone copies its object
    # files, one of which git may move into a pack under it ("failed to copy file")
    git("clone", "--quiet", "--no-local", "--branch", "runs", str(bare), str(clone))
    for path, data in files.items():
        (clone / path).parent.mkdir(parents=True, exist_ok=True)
        (clone / path).write_bytes(data)
    (clone / ".msg").write_text(message)
    git("add", "--", *files, cwd=clone)
    git("commit", "--quiet", "--cleanup=verbatim", "-F", ".msg", cwd=clone)
    git("push", "--quiet", "origin", "runs", cwd=clone)


def trigger(repo: Path) -> str:
    return puppemon("trigger", "hello", cwd=repo).stdout.strip()


def remote_json(bare: Path, path: str):
    return json.loads(git("--git-dir", str(bare), "show", f"runs:{path}"))


def refusals(bare: Path) -> list[str]:
    """The whole message of each refusal commit on the remote's runs branch."""
    out = git("--git-dir", str(bare), "log", "--format=%B%x00", "--grep=^refuse request", "runs")
    return [m.strip("\n") for m in out.split("\0")[:-1]]


def nested(n: int, depth: int) -> bytes:
    """Request `n` with a list `depth` deep beside its fields."""
    return request(n)[:-1] + b', "p": ' + b"[" * depth + b"]" * depth + b"}"


# Each bad request (or claim), by file name, and the reason its refusal records.
BAD = {
    "0bad.json": (json.dumps({"schema": 1, "id": "0bad", "kind": "run", "flow": "hello"}).encode(),
                  "'0bad' is not a request id (e.g. 20261125T083000Z-7f3a9c)"),
    f"{rid(1)}.json": (request(1, flow="../../x"),
                       "flow '../../x' is not a flow name (lowercase letters, digits, - and _, at most 100)"),
    f"{rid(2)}.json": (request(2, flow=["hello"]),
                       "flow ['hello'] is not a flow name (lowercase letters, digits, - and _, at most 100)"),
    f"{rid(3)}.json": (request(3, flow="x\nPuppemon-Run: forged"),
                       "flow 'x\\nPuppemon-Run: forged' is not a flow name (lowercase letters, digits, - and _, "
                       "at most 100)"),
    f"{rid(4)}.json": (request(4, flow="a/b/c"),
                       "flow 'a/b/c' is not a flow name (lowercase letters, digits, - and _, at most 100)"),
    # 50k deep: over the size cap; 9k deep: under it, where json.loads itself raises RecursionError
    f"{rid(5)}.json": (nested(5, 50000), "the file is larger than 64 KiB"),
    f"{rid(6)}.json": (nested(6, 9000), "the request nests deeper than 32 levels"),
    f"{rid(7)}.json": (request(7, params=json.loads('{"a": ' * 33 + "1" + "}" * 33)),
                       "params nest deeper than 32 levels"),
    f"{rid(8)}.json": (b"\xff\xfe{}", "the request is not JSON ('utf-8' codec can't decode byte 0xff in "
                                      "position 0: invalid start byte)"),
    f"{rid(20)}.json": (b"{not json", "the request is not JSON (Expecting property name enclosed in double "
                                      "quotes: line 1 column 2 (char 1))"),
    f"{rid(9)}.json": (b"[1, 2]", "the request is not a JSON object"),
    f"{rid(10)}.json": (request(10, kind="rm -rf"), "kind 'rm -rf': expected run, cancel, pause or resume"),
    f"{rid(11)}.json": (request(11, kind="cancel", run_id="../../x"), "run_id '../../x' is not a run id"),
    f"{rid(12)}.json": (request(12, by={"name": "x"}), "`by` is not text"),
    f"{rid(13)}.json": (request(13, schema=99), "schema 99: this version reads schema 1"),
    f"{rid(14)}.json": (request(15), "its id '%s' is not its file name's" % rid(15)),
    f"{rid(16)}.json/x": (b"a directory", "'%s.json' is not a file" % rid(16)),
    # valid requests with a hostile claim
    f"{rid(17)}.claim.json": (b"[1]", "its claim is not a JSON object"),
    f"{rid(18)}.claim.json": (json.dumps({"daemon": "d1", "run_id": "nope", "flow": "hello"}).encode(),
                              "its claim's run_id 'nope' is not a run id"),
    f"{rid(19)}.claim.json": (json.dumps({"daemon": "d1", "run_id": rid(19), "flow": "a/b"}).encode(),
                              "its claim's flow 'a/b' is not a flow name"),
}
CLAIMED = {f"{rid(n)}.json": request(n) for n in (17, 18, 19)}


def test_bad_requests_are_refused_once_and_the_good_one_is_served_in_the_same_cycle(tmp_path, bare_remote):
    repo = setup(tmp_path, bare_remote)
    good = trigger(repo)  # written before the bad ones, sorted after them: today it waited behind them
    files = {f"{DIR}/{name}": data for name, (data, _) in BAD.items()}
    push_raw(bare_remote, tmp_path, {**files, **{f"{DIR}/{n}": d for n, d in CLAIMED.items()}})
    first = run_daemon_once(str(bare_remote), tmp_path / "state")  # --once: exactly one cycle
    assert first.returncode == 0, first.stderr
    [record] = remote_records(bare_remote)
    assert (record["request"], record["status"], record["flow"]) == (good, "succeeded", "hello")
    for name, (_, reason) in BAD.items():
        request_id = name.split("/")[0].removesuffix(".json").removesuffix(".claim")
        done = remote_json(bare_remote, f"{DIR}/{request_id}.done.json")
        assert (done["request"], done["outcome"], done["reason"], done["daemon"]) == (
            request_id, "refused", reason, "d1"), name
        assert f"refusing request '{request_id}' in {DIR}: " in first.stderr
    assert "Traceback" not in first.stderr
    assert len(refusals(bare_remote)) == len(BAD)
    for message in refusals(bare_remote):  # a subject and its trailers: nothing a request said adds a line
        subject, blank, *trailer_lines = message.split("\n")
        assert (blank, [t.split(": ")[0] for t in trailer_lines]) in (
            ("", ["Puppemon-Request", "Puppemon-Refused-By"]), ("", ["Puppemon-Refused-By"])), message
    trailer_ids = git("--git-dir", str(bare_remote), "log", "--format=%(trailers:key=Puppemon-Run,valueonly)", "runs")
    assert trailer_ids.split() == [record["id"]]
    # never read again: a restart, and a second daemon, refuse nothing more and serve nothing more
    for state, name in ((tmp_path / "state", "d1"), (tmp_path / "state2", "d2")):
        again = run_daemon_once(str(bare_remote), state, name=name)
        assert again.returncode == 0 and "refusing" not in again.stderr, again.stderr
    assert len(refusals(bare_remote)) == len(BAD) and len(remote_records(bare_remote)) == 1
    proc = puppemon("runs", cwd=repo)
    assert (proc.stderr, proc.stdout.count("\n")) == ("", 3)
    fsck(bare_remote)


def test_a_running_daemon_refuses_a_bad_request_once_and_serves_the_next(tmp_path, bare_remote):
    repo = setup(tmp_path, bare_remote)
    with DaemonProcess(str(bare_remote), tmp_path / "state") as daemon:
        wait_until(lambda: git("--git-dir", str(bare_remote), "rev-parse", "-q", "--verify", "runs", check=False),
                   30, "the deploy record", lambda: daemon.log)
        push_raw(bare_remote, tmp_path, {f"{DIR}/{rid(1)}.json": request(1, flow="x\nPuppemon-Run: forged")})
        wait_until(lambda: refusals(bare_remote), 30, "the refusal", lambda: daemon.log)
        good = trigger(repo)
        wait_until(lambda: [r for r in remote_records(bare_remote) if r["request"] == good], 30,
                   "the good request's run", lambda: daemon.log)
        assert daemon.stop() == 0
    assert daemon.log.count("refusing request") == 1, daemon.log
    assert "unexpected error" not in daemon.log and "Traceback" not in daemon.log
    assert len(refusals(bare_remote)) == 1
    fsck(bare_remote)


def test_a_newline_in_by_cannot_add_a_trailer(tmp_path, bare_remote):
    repo = setup(tmp_path, bare_remote)
    trigger(repo)  # the runs branch exists
    push_raw(bare_remote, tmp_path, {f"{DIR}/{rid(1)}.json": request(1, by="x\nPuppemon-Run: forged\r\u2028y")})
    assert run_daemon_once(str(bare_remote), tmp_path / "state").returncode == 0
    [record] = [r for r in remote_records(bare_remote) if r["request"] == rid(1)]
    assert record["trigger"] == {"kind": "request", "by": "x Puppemon-Run: forged  y"}
    message = git("--git-dir", str(bare_remote), "log", "--format=%B", "-1", "--grep", f"Puppemon-Request: {rid(1)}",
                  "--grep", "^hello: ", "--all-match", "runs")
    assert message == (f"hello: succeeded in {message.split(' in ')[1].split(' ')[0]} "
                       "(request by x Puppemon-Run: forged  y)\n\n"
                       f"Puppemon-Run: {record['id']}\nPuppemon-Flow: hello\nPuppemon-Status: succeeded\n"
                       f"Puppemon-Request: {rid(1)}\n\n")
    ids = git("--git-dir", str(bare_remote), "log", "--format=%(trailers:key=Puppemon-Run,valueonly)", "runs").split()
    assert "forged" not in ids and record["id"] in ids
    table = puppemon("runs", cwd=repo).stdout
    assert table.count("\n") == 4 and "request by x Puppemon-Run: forged  y" in table  # one line a run
    fsck(bare_remote)


def test_runs_and_logs_skip_and_count_what_they_cannot_read(tmp_path, bare_remote):
    """History as older daemons (or anyone) could have left it: forged trailers, a flow `a/b/c`, records that
    do not parse, text that is rich markup."""
    repo = setup(tmp_path, bare_remote)
    good = trigger(repo)
    assert run_daemon_once(str(bare_remote), tmp_path / "state").returncode == 0
    [real] = remote_records(bare_remote)
    day = f"{DAY[:4]}/{DAY[4:6]}/{DAY[6:]}"

    def run_id(n: int, second: int = 59) -> str:
        return f"{DAY}T2359{second:02d}Z-{n:06x}"

    def commit(path: str, data: bytes, run: str, flow: str) -> None:
        push_raw(bare_remote, tmp_path, {path: data},
                 f"{flow}: failed in 0.0s (request by x)\n\nPuppemon-Run: {run}\nPuppemon-Flow: {flow}\n")

    markup = {**real, "id": run_id(3, 58), "trigger": {"kind": "request", "by": "[/] [bold]x"}}
    commit(f"runs/hello/{day}/{run_id(3, 58)}/run.json", json.dumps(markup).encode(), run_id(3, 58), "hello")
    commit(f"runs/hello/{day}/{run_id(3, 58)}/log.txt", b"marked up\n", run_id(3, 58), "hello")
    commit("forged.txt", b"", "forged", "hello")  # what a newline in a flow made `runs` fail on
    commit(f"runs/a/b/c/{day}/{run_id(1)}/run.json", json.dumps({**real, "id": run_id(1), "flow": "a/b/c"}).encode(),
           run_id(1), "a/b/c")
    commit(f"runs/hello/{day}/{run_id(2)}/run.json", b"not json", run_id(2), "hello")
    commit(f"runs/hello/{day}/{run_id(4)}/run.json", b"[1]", run_id(4), "hello")
    commit(f"runs/hello/{day}/{run_id(5)}/run.json", json.dumps({**real, "id": run_id(5), "duration": "slow"}).encode(),
           run_id(5), "hello")

    proc = puppemon("runs", cwd=repo)  # runs are read from the tree: a forged trailer alone is no record
    assert proc.stderr == "warning: 4 records on runs could not be read (skipped)\n"
    assert [line.split()[0] for line in proc.stdout.splitlines()[2:]] == [run_id(3, 58), real["id"]]
    assert "request by [/] [bold]x" in proc.stdout
    proc = puppemon("runs", "hello", "--json", cwd=repo, check=False)
    assert [r["id"] for r in json.loads(proc.stdout)] == [run_id(3, 58), real["id"]]
    assert proc.stderr == "warning: 3 records on runs could not be read (skipped)\n"
    proc = puppemon("runs", "a", cwd=repo)
    assert (proc.stdout, proc.stderr) == ("no runs match\n", "warning: 1 record on runs could not be read (skipped)\n")
    assert puppemon("runs", "a/b/c", cwd=repo, check=False).stderr == (
        "Error: 'a/b/c' is not a flow name (lowercase letters, digits, - and _)\n")
    proc = puppemon("logs", "hello", cwd=repo)
    assert proc.stdout == "marked up\n"
    assert proc.stderr.startswith("warning: 3 records on runs could not be read (skipped)\n"
                                  f"hello {run_id(3, 58)} succeeded (request by [/] [bold]x) started ")
    assert puppemon("logs", real["id"], cwd=repo).stdout == "hello\n"
    proc = puppemon("logs", run_id(2), cwd=repo, check=False)
    assert (proc.returncode, proc.stderr) == (1, (
        f"Error: the record of run {run_id(2)} (runs/hello/{day}/{run_id(2)}/run.json) cannot be read: it is not "
        "a run.json this version of puppemon understands\n"))
    assert good == real["request"]


def test_trailers_come_from_the_last_paragraph_first_one_wins():
    from puppemon.history.records import trailers

    forged = ("x\nPuppemon-Run: forged: failed in 0.0s (request by x)\n\n"
              "Puppemon-Run: 20261125T083000Z-7f3a9c\nPuppemon-Flow: x\nPuppemon-Run: forged\n")
    assert trailers(forged) == {"Puppemon-Run": "20261125T083000Z-7f3a9c", "Puppemon-Flow": "x"}
    assert trailers("Puppemon-Run: 20261125T083000Z-7f3a9c\n") == {}


def test_run_ids_are_ascii_and_end_at_the_end():
    from puppemon.formats import RUN_ID

    assert RUN_ID.match("20261125T083000Z-7f3a9c")
    for bad in ("20261125T083000Z-7f3a9c\n", "٢٠٢٦1125T083000Z-7f3a9c", "20261125T083000Z-" + "a" * 33):
        assert not RUN_ID.match(bad), bad
