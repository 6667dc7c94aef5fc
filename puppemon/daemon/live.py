"""What runs print while they run: kept in the journal as it comes (so a crash does not lose it),
and their tails published on `refs/puppemon/live/<daemon>` (history/live.py) for `logs -f`.

Each run's output goes through a Redactor (the run's secrets) first, so neither the spool
file nor the live ref ever holds a secret. A thread of its own publishes the tails, at
most every `interval` seconds and only when some output changed, so neither the daemon's
cycle nor the publishing of records waits for it. Its commits have no parent and live in
a scratch repository of their own (STATE/live.git), started afresh when no run is in
flight, so tails never pile up in the daemon's mirror.
"""
from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from puppemon.daemon.journal import StateDir
from puppemon.formats import utc_iso
from puppemon.gitstore import GitError, Store
from puppemon.history.live import LIVE_REFS, TAIL, Tail, tail_files
from puppemon.run.capture import Redactor, Spool

log = logging.getLogger("puppemon")

SYNC_EVERY = 5.0   # seconds between two flushes of a run's spool file to the disk, at most
FRESH_AFTER = 200  # publishes before the scratch repository is started afresh, even while runs go on


class RunOutput:
    """One run's output while it runs: redacted, spooled to the journal, its last TAIL bytes in memory."""

    def __init__(self, run_id: str, flow: str, started, secrets: dict, spool: Path, limit: int,
                 changed: Callable[[], None] = lambda: None) -> None:
        self.run_id, self.flow, self.started = run_id, flow, utc_iso(started)
        self.changed = changed
        self.redactor = Redactor(secrets)
        self.lock = threading.Lock()
        self.tail = bytearray()
        self.total = 0
        self.synced = time.monotonic()
        try:
            self.spool: Spool | None = Spool(spool, limit)
        except OSError as exc:
            log.warning("run %s: its output is not kept as it comes (%s): a crash would lose it", run_id, exc)
            self.spool = None

    def write(self, data: bytes) -> None:
        """What the run printed (the runner's on_output, in the thread that reads the run's output)."""
        chunk = self.redactor.feed(data)
        if not chunk:
            return
        with self.lock:
            self.total += len(chunk)
            self.tail += chunk
            if len(self.tail) > TAIL:
                del self.tail[:len(self.tail) - TAIL]
            if self.spool is not None:
                try:
                    self.spool.write(chunk)
                    if (now := time.monotonic()) >= self.synced + SYNC_EVERY:  # a power cut loses little
                        self.synced = now
                        self.spool.sync()
                except OSError as exc:  # a full disk: the run goes on, its record still gets the whole log
                    log.warning("run %s: its output is no longer kept as it comes: %s", self.run_id, exc)
                    self._close_spool()
        self.changed()

    def snapshot(self) -> Tail:
        with self.lock:
            return Tail(self.run_id, self.flow, self.started, self.total, bytes(self.tail))

    def close(self) -> None:
        with self.lock:
            self._close_spool()

    def _close_spool(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None


class LiveLogs:
    """The runs in flight's outputs (`open`, `close`) and the thread that publishes their tails."""

    def __init__(self, state: StateDir, remote: str, name: str, interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.state, self.remote, self.name, self.interval, self.clock = state, remote, name, interval, clock
        self.ref = LIVE_REFS + name
        self._runs: dict[str, RunOutput] = {}
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._published: dict[str, int] | None = {}   # run id -> total as last pushed; None: unknown
        self._last = float("-inf")
        self._store: Store | None = None
        self._count = 0

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    def open(self, run_id: str, flow: str, started, secrets: dict, limit: int) -> RunOutput:
        output = RunOutput(run_id, flow, started, secrets, self.state.spool_path(run_id), limit, self._changed.set)
        with self._lock:
            self._runs[run_id] = output
        return output

    def tail(self, run_id: str) -> Tail | None:
        """The tail of a run in flight (the HTTP hook serves it), or None."""
        with self._lock:
            output = self._runs.get(run_id)
        return output.snapshot() if output is not None else None

    def close(self, run_id: str) -> None:
        """The run ended: its tail is no longer published (its spool file goes with its journal entry)."""
        with self._lock:
            output = self._runs.pop(run_id, None)
        if output is not None:
            output.close()
        self._changed.set()

    def forget(self) -> None:
        """A crash may have left a live ref behind: the next publish replaces (or deletes) it."""
        self._published = None
        self._changed.set()

    # -- the publishing thread ---------------------------------------------------
    def start(self) -> None:
        if self.enabled:
            self._thread = threading.Thread(target=self._loop, name="live", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._closing.set()
        self._changed.set()
        if self._thread is not None:
            self._thread.join(60)
            self._thread = None
        if self._published is None or (self.enabled and self._published != {}):
            self.publish()  # nothing in flight any more, mostly: the ref goes (also one a crash left)

    def _loop(self) -> None:
        while not self._closing.is_set():
            wait = self._last + self.interval - self.clock()
            if wait > 0:
                self._closing.wait(wait)
                continue
            self._changed.wait(self.interval)
            if self._closing.is_set():
                return
            self._changed.clear()
            try:
                self.publish()
            except Exception:  # noqa: BLE001 - a live tail is a convenience: never stop the daemon for it
                log.exception("unexpected error while publishing live logs")

    def publish(self) -> bool:
        """Push the tails if they changed since the last push (an empty set deletes the ref); True if pushed."""
        with self._lock:
            tails = [run.snapshot() for run in self._runs.values()]
        state = {t.run_id: t.total for t in tails}
        if state == self._published:
            return False
        self._last = self.clock()
        try:
            if tails:
                self._push(tails)
            else:
                self._delete()
        except GitError as exc:
            log.debug("live logs not pushed: %s", exc.message)
            return False
        except OSError as exc:  # a full disk under the scratch repository
            log.warning("live logs not written: %s", exc)
            return False
        self._published = state
        return True

    def _push(self, tails: list[Tail]) -> None:
        if self._store is None or self._count >= FRESH_AFTER:
            self._fresh()
        store = self._store
        changes = {path: (store.blob(data), 0o100644) for path, data in tail_files(tails, self.name).items()}
        commit = store.commit(store.update_tree(None, changes), [], f"live logs of {self.name}\n")
        store.push(self.remote, [f"+{commit}:{self.ref}"], timeout=30)
        self._count += 1

    def _delete(self) -> None:
        try:
            Store.open_or_init_bare(self.state.path / "live.git").push(self.remote, [f":{self.ref}"], timeout=30)
        except GitError as exc:
            if "remote ref does not exist" not in exc.message:
                raise
        self._store = None  # nothing in flight: the next run starts a fresh scratch repository
        self._count = FRESH_AFTER

    def _fresh(self) -> None:
        path = self.state.path / "live.git"
        shutil.rmtree(path, ignore_errors=True)
        self._store = Store.open_or_init_bare(path)
        self._count = 0
