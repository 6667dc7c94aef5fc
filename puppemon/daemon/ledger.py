"""The daemon's one way of recording: every run record it writes goes through a Ledger and
reaches `on_recorded(record, log)` (notifications), whatever became of the run."""
from __future__ import annotations

from datetime import datetime
from typing import Callable, Mapping

from puppemon.history.recorder import Recorder
from puppemon.history.records import (RunContext, deploy_record, record_synthetic, run_files, run_message,
                                      run_record)


class Ledger:
    def __init__(self, recorder: Recorder, daemon: str, clock: Callable[[], datetime],
                 on_recorded: Callable[[dict, bytes], None]) -> None:
        self.recorder, self.daemon, self.clock, self.on_recorded = recorder, daemon, clock, on_recorded

    def run(self, ctx: RunContext, result) -> dict:
        """Record a run that ran (a run.spec.RunResult); return its run.json."""
        record = run_record(result, ctx)
        self.recorder.add(run_files(record, result.log, result.result, result.has_result, result.outputs),
                          run_message(record))
        self.on_recorded(record, result.log)
        return record

    def synthetic(self, ctx: RunContext, status: str, error: str, started: datetime | None = None,
                  finished: datetime | None = None) -> dict:
        """Record a run that never ran to its end (skipped, refused, crashed, cancelled unstarted)."""
        record = record_synthetic(self.recorder, ctx, status, error, started or self.clock(), finished)
        self.on_recorded(record, b"")  # its log is the error, which a notification shows already
        return record

    def deploy(self, sha: str, source: str, outcome: dict) -> None:
        """Record what this daemon made of a flows commit (deployed, with its schedule, or refused)."""
        files, message = deploy_record(sha, source, self.daemon, self.clock(), outcome)
        self.recorder.add(files, message)

    def add(self, files: Mapping, message: str) -> str:
        """Commit any other record (a claim, a cancel's outcome)."""
        return self.recorder.add(files, message)
