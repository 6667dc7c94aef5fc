"""A runs branch with many records, built fast.

The records are made by the records API (run.json, log, commit message, paths), so
they are what a daemon writes; only the writing goes through `git fast-import`,
which packs 100,000 commits in seconds where one commit at a time takes minutes.
The trees are the same as Recorder.add would make (tests/test_bench.py checks it).
"""
from __future__ import annotations

import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

from puppemon.history.records import RunContext, run_files, run_message, synthetic_record

START = datetime(2025, 1, 1, tzinfo=timezone.utc)
STEP = timedelta(minutes=5)      # one run every 5 minutes, over 10 flows
FLOWS = 10
LOG = b"hello\n"
AUTHOR = b"puppemon bench <puppemon@bench.invalid>"


def record(i: int, origin: datetime = START) -> dict:
    """The i-th trivial run (the first started at `origin`): a succeeded record of flow-<i % 10>."""
    started = origin + i * STEP
    run_id = started.strftime("%Y%m%dT%H%M%SZ") + f"-{i % 0xFFFFFF:06x}"
    ctx = RunContext(run_id, f"flow-{i % FLOWS}", {"kind": "schedule"}, scheduled=started,
                     flows_commit="0" * 40, daemon="bench")
    return synthetic_record(ctx, "succeeded", None, started, started + timedelta(seconds=1))


def files_and_message(i: int, origin: datetime = START) -> tuple[dict, str]:
    rec = record(i, origin)
    rec["status"] = "succeeded"
    rec["exit_code"] = 0
    return run_files(rec, LOG), run_message(rec)


def build(git_dir: Path, start: int, count: int, ref: str = "refs/heads/runs", origin: datetime = START) -> str:
    """Append records start..start+count-1 to `ref` of the bare repository `git_dir`; return the tip.
    Commits are dated when their run finished: a history that ends after today has commits dated
    after the ones a recorder adds now, which sends git's date-ordered walks down all of it."""
    proc = subprocess.Popen(["git", "--git-dir", str(git_dir), "fast-import", "--quiet",
                             "--done", "--date-format=raw"], stdin=subprocess.PIPE)
    out = proc.stdin
    parent = subprocess.run(["git", "--git-dir", str(git_dir), "rev-parse", "--verify", "-q", ref],
                            capture_output=True, text=True).stdout.strip()
    for n, i in enumerate(range(start, start + count)):
        files, message = files_and_message(i, origin)
        when = int((origin + i * STEP).timestamp()) + 1
        msg = message.encode()
        parts = [b"commit ", ref.encode(), b"\n",
                 b"author ", AUTHOR, b" %d +0000\n" % when,
                 b"committer ", AUTHOR, b" %d +0000\n" % when,
                 b"data %d\n" % len(msg), msg]
        if n == 0 and parent:
            parts.append(b"from " + parent.encode() + b"\n")
        for path, (data, mode) in files.items():
            parts += [b"M %o inline " % mode, path.encode(), b"\n", b"data %d\n" % len(data), data, b"\n"]
        parts.append(b"\n")
        out.write(b"".join(parts))
    out.write(b"done\n")
    out.close()
    if proc.wait() != 0:
        raise RuntimeError(f"git fast-import failed in {git_dir}")
    return subprocess.run(["git", "--git-dir", str(git_dir), "rev-parse", ref],
                          capture_output=True, text=True, check=True).stdout.strip()
