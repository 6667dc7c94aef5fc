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

from puppemon.formats import reason, run_dir
from puppemon.gitstore import GitError, Store
from puppemon.history.live import Tail, fetch_live, read_tail
from puppemon.history.recorder import Recorder
from puppemon.history.records import find_record
from puppemon.history.requests import describe, exit_code
from puppemon.history.status import fetch_status, heartbeating

POLL = 1.0
HTTP_POLL = 0.2  # seconds between two reads of the HTTP hook, when one is given
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
                 branch: str = "runs", http: tuple[str, str | None] | None = None) -> None:
        self.store, self.remote, self.out, self.say = store, remote, out, say
        self.http = http   # (the daemon's HTTP hook URL, its token): the tail from there between fetches
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
        why = reason(record["status"], record.get("error"))
        self.say(describe(record) + (f": {why}" if why else ""))
        return exit_code(record)

    def no_daemon(self) -> bool:
        """Whether no daemon has heartbeated on the remote lately (fetches its status refs)."""
        try:
            fetch_status(self.store, self.remote)
        except GitError:
            return False   # cannot tell: the fetch warning says what is wrong
        return not heartbeating(self.store, datetime.now(timezone.utc))

    def between_polls(self, run_id: str | None, polled: float) -> None:
        """Until the next fetch: the run's tail from the HTTP hook every HTTP_POLL s, when one is given."""
        if self.http is None or run_id is None:
            return sleep_until_next(polled, None)
        until = polled + POLL
        while (now := time.monotonic()) < until:
            try:
                tail = http_tail(*self.http, run_id, self.shown)
            except (OSError, ValueError) as exc:
                self.say(f"warning: cannot read the HTTP hook {self.http[0]} ({exc}): following through git only")
                self.http = None
                return sleep_until_next(polled, None)
            if tail is not None:
                self.started = True
                self.show(tail)
            time.sleep(max(0.0, min(now + HTTP_POLL, until) - time.monotonic()))
        return None


def http_tail(url: str, token: str | None, run_id: str, since: int) -> Tail | None:
    """The tail of `run_id` from a daemon's HTTP hook, from byte `since` on; None when it is not in flight
    there. OSError (ValueError: an answer that is not one) when the hook cannot be read."""
    import base64
    import json
    import urllib.error
    import urllib.request

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"{url.rstrip('/')}/runs/{run_id}/live?since={since}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            body = json.loads(resp.read(4 * 1024**2))
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise OSError(f"HTTP {exc.code}") from None
    data = base64.b64decode(body["log_base64"])
    return Tail(run_id, str(body["flow"]), body.get("started"), max(int(body["total"]), len(data)), data)


def sleep_until_next(started: float, deadline: float | None, clock: Callable[[], float] = time.monotonic) -> None:
    """Wait for the next poll, POLL seconds after the last one started (not after the deadline)."""
    until = started + POLL if deadline is None else min(started + POLL, deadline)
    time.sleep(max(0.0, until - clock()))
