"""Following one run through git alone (`logs -f`, `trigger --wait`): its live tail while it runs
(history/live.py), then what its record's log holds beyond that, and its outcome.

Each poll is one fetch of the remote's runs branch and live refs. What was printed is
counted in bytes of the run's (redacted) output, the counter the live ref carries, so
nothing is printed twice; what left the tail between two polls is said on stderr.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Callable

from puppemon.formats import run_dir
from puppemon.gitstore import GitError, Store
from puppemon.history.live import Tail, fetch_live, read_tail
from puppemon.history.recorder import Recorder
from puppemon.history.records import find_record
from puppemon.history.requests import describe, exit_code
from puppemon.history.status import fetch_status, heartbeating

POLL = 1.0
LAST = 512   # bytes of what was shown kept, to find where it ends in the recorded log


def remainder(log: bytes, shown: int, last: bytes) -> bytes | None:
    """What the recorded `log` holds beyond the `shown` bytes of output (which ended with `last`);
    None when the log does not say (it was cut in the middle, or reads otherwise)."""
    if not shown:
        return log
    if len(log) >= shown and log[shown - len(last):shown] == last:
        return log[shown:]
    at = log.rfind(last) if last else -1
    return log[at + len(last):] if at >= 0 else None


class Follower:
    """Prints one run's output as it comes (`out`), and notes for a person (`say`, stderr)."""

    def __init__(self, store: Store, remote: str, out: Callable[[bytes], None], say: Callable[[str], None],
                 branch: str = "runs") -> None:
        self.store, self.remote, self.out, self.say = store, remote, out, say
        self.recorder = Recorder(store, remote=remote, branch=branch)
        self.shown = 0
        self.last = b""
        self.started = False     # a live tail of the run was seen
        self._failing = False

    def fetch(self) -> str | None:
        """Fetch the runs branch and the live refs in one round trip; the runs tip (the last one known
        when the remote cannot be reached: said once until it can again)."""
        try:
            fetch_live(self.store, self.remote, [f"+{self.recorder.ref}:{self.recorder.tracking}"])
            self._failing = False
        except GitError as exc:
            if not self._failing:
                self.say(f"warning: {exc.message}; retrying")
            self._failing = True
        return self.store.ref(self.recorder.tracking)

    def step(self, tip: str | None, run_id: str, flow: str | None = None) -> dict | None:
        """Print what is new of run `run_id`; its run.json once it is recorded (its log printed to the end)."""
        record = find_record(self.store, tip, run_id, flow)
        if record is not None:
            self._finish(record, self.store.read(tip, f"{run_dir(record['flow'], record['id'])}/log.txt") or b"")
            return record
        tail = read_tail(self.store, run_id)
        if tail is not None:
            self.started = True
            self.show(tail)
        return None

    def show(self, tail: Tail) -> None:
        if tail.total <= self.shown:
            return
        if tail.start > self.shown:
            self.say(f"[... {tail.start - self.shown} bytes of output not shown: they left the live tail "
                     "between two fetches ...]")
            data = tail.data
        else:
            data = tail.data[self.shown - tail.start:]
        self.out(data)
        self.shown = tail.total
        self.last = (self.last + data)[-LAST:]

    def _finish(self, record: dict, log: bytes) -> None:
        rest = remainder(log, self.shown, self.last)
        if rest is None:
            self.say(f"[... the recorded log goes on differently from what was shown: `puppemon logs "
                     f"{record['id']}` prints it ...]")
        elif rest:
            self.out(rest)

    def end(self, record: dict) -> int:
        """Say how the run ended; the exit code `trigger --wait` and `logs -f` end with."""
        self.say(describe(record) + (f": {record['error']}" if record.get("error")
                                     and record["status"] != "succeeded" else ""))
        return exit_code(record)

    def no_daemon(self) -> bool:
        """Whether no daemon has heartbeated on the remote lately (fetches its status refs)."""
        try:
            fetch_status(self.store, self.remote)
        except GitError:
            return False   # cannot tell: the fetch warning says what is wrong
        return not heartbeating(self.store, datetime.now(timezone.utc))


def sleep_until_next(started: float, deadline: float | None, clock: Callable[[], float] = time.monotonic) -> None:
    """Wait for the next poll, POLL seconds after the last one started (not after the deadline)."""
    until = started + POLL if deadline is None else min(started + POLL, deadline)
    time.sleep(max(0.0, until - clock()))
