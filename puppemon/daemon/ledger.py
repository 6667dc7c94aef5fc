"""The daemon's one way of recording: every run record it writes goes through a Ledger and
reaches `on_recorded(record, log)` (notifications), whatever became of the run.

A record that cannot be committed (the state directory's disk is full) is not lost: it
waits in memory, is saved in the journal as soon as a write there succeeds, and
`retry()` (each cycle) commits it once space returns, with the run's true status. A run's
journal entry goes only when its record is committed, so a crash meanwhile still shows.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Mapping

from puppemon.daemon.journal import StateDir
from puppemon.errors import PuppemonError
from puppemon.formats import plural
from puppemon.history.recorder import Recorder, disk_words
from puppemon.history.records import (
    RunContext,
    deploy_record,
    run_files,
    run_message,
    run_record,
    synthetic_record,
)

log = logging.getLogger("puppemon")


@dataclass
class Waiting:
    """A record not committed yet: what it writes, and who hears of it once it is."""

    key: str                 # the run id, or `deploy-<sha>`: its name in the journal
    what: str                # for log lines: "hello: run <id> (succeeded)"
    files: Mapping
    message: str
    record: dict | None = None
    tries: int = 1
    saved: bool = False      # in the journal, so a restart still has it


class Ledger:
    def __init__(self, recorder: Recorder, daemon: str, clock: Callable[[], datetime],
                 on_recorded: Callable[[dict, bytes], None], state: StateDir | None = None) -> None:
        self.recorder, self.daemon, self.clock, self.on_recorded = recorder, daemon, clock, on_recorded
        self.state = state
        self._lock = threading.Lock()
        self._waiting: dict[str, Waiting] = {}
        for key, files, message, record in (state.saved_records() if state else []):
            what = f"{record['flow']}: run {key} ({record['status']})" if record else key
            self._waiting[key] = Waiting(key, what, files, message, record, saved=True)

    def run(self, ctx: RunContext, result) -> dict:
        """Record a run that ran (a run.spec.RunResult); return its run.json."""
        record = run_record(result, ctx)
        files = run_files(record, result.log, result.result, result.has_result, result.outputs)
        self._commit(Waiting(ctx.run_id, f"{ctx.flow}: run {ctx.run_id} ({record['status']})", files,
                             run_message(record), record))
        return record

    def synthetic(self, ctx: RunContext, status: str, error: str, started: datetime | None = None,
                  finished: datetime | None = None, output: bytes = b"") -> dict:
        """Record a run that never ran to its end (skipped, refused, crashed, cancelled unstarted);
        `output`: what it printed before that (a crashed run's, kept in the journal)."""
        record = synthetic_record(ctx, status, error, started or self.clock(), finished)
        if output and not output.endswith(b"\n"):
            output += b"\n"
        files = run_files(record, output + f"puppemon: {error}\n".encode())
        self._commit(Waiting(ctx.run_id, f"{ctx.flow}: run {ctx.run_id} ({status})", files,
                             run_message(record), record))
        return record

    def deploy(self, sha: str, source: str, outcome: dict) -> None:
        """Record what this daemon made of a flows commit (deployed, with its schedule, or refused)."""
        files, message = deploy_record(sha, source, self.daemon, self.clock(), outcome)
        self._commit(Waiting(f"deploy-{sha}", f"deploy {sha[:7]} ({outcome['status']})", files, message))

    def add(self, files: Mapping, message: str) -> str:
        """Commit any other record (a claim, a cancel's outcome); PuppemonError when it cannot be
        written (its caller tries again: a request stays unclaimed)."""
        return self.recorder.add(files, message)

    # -- records waiting for the disk ------------------------------------------
    def waiting(self, key: str | None = None) -> int:
        """How many records wait to be committed (of run `key`, when given)."""
        with self._lock:
            return int(key in self._waiting) if key is not None else len(self._waiting)

    def retry(self) -> None:
        """Commit the records that could not be written before (each cycle); save the rest in the journal."""
        with self._lock:
            waiting = list(self._waiting.values())
        for item in waiting:
            if not self._write(item):
                break  # still no room: the others wait for the next cycle too
            log.info("%s recorded after %s (it waited for the disk)", item.what, plural(item.tries, "attempt"))
        for item in waiting:
            if self.waiting(item.key) and not item.saved and self.state is not None:
                item.saved = self.state.save_record(item.key, item.files, item.message, item.record)

    def _commit(self, item: Waiting) -> None:
        with self._lock:
            earlier = self._waiting.pop(item.key, None)  # a run recorded twice (crashed, then its true end)
        if earlier is not None:
            log.info("%s replaces %s, which was waiting", item.what, earlier.what)
        try:
            self.recorder.add(item.files, item.message)
        except (PuppemonError, OSError) as exc:
            reason = exc.message if isinstance(exc, PuppemonError) else disk_words(exc)
            item.saved = self.state is not None and self.state.save_record(item.key, item.files, item.message,
                                                                            item.record)
            with self._lock:
                self._waiting[item.key] = item
            where = "in memory and in the journal" if item.saved else "in memory until the journal has room"
            log.warning("%s not recorded yet: %s; kept %s, tried again each cycle", item.what,
                        reason.split(": ", 1)[-1] if "cannot write to" in reason else reason, where)
            return
        self._done(item)

    def _write(self, item: Waiting) -> bool:
        try:
            self.recorder.add(item.files, item.message)
        except (PuppemonError, OSError):
            item.tries += 1
            return False
        with self._lock:
            self._waiting.pop(item.key, None)
        self._done(item)
        return True

    def _done(self, item: Waiting) -> None:
        if self.state is not None:
            self.state.drop_record(item.key)
            if item.record is not None:
                self.state.unjournal(item.key)  # the record is safe: the run's journal entry can go
        if item.record is not None:
            log_path = next((p for p in item.files if p.endswith("/log.txt")), None)
            data = item.files.get(log_path, b"") if log_path else b""
            self.on_recorded(item.record, data if isinstance(data, bytes) else data[0])
