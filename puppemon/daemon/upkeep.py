"""The daemon's upkeep of the runs branch: retention (`--keep`) and rotation of closed days into archive refs.

Both are ordinary commits on the runs branch (history keeps everything); the archive refs they
change are pushed first (history/rotation.py). A remote that cannot be reached only delays them.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Callable

from puppemon.gitstore import GitError, Store
from puppemon.history.recorder import Recorder
from puppemon.history.retention import message, plan
from puppemon.history.rotation import prune_archives, rotate

log = logging.getLogger("puppemon")

RETENTION_EVERY = 3600.0   # seconds between two looks for records older than --keep
ROTATION_EVERY = 600.0     # seconds between two looks for closed days to rotate, within one UTC day
RETRY_AFTER = 60.0         # after the remote refused or could not be reached


class Upkeep:
    def __init__(self, store: Store, recorder: Recorder, clock: Callable[[], datetime], keep: float | None,
                 rotate_after: int) -> None:
        self.store, self.recorder, self.clock = store, recorder, clock
        self.keep, self.rotate_after = keep, rotate_after
        self._retained_at = self._rotated_at = float("-inf")
        self._rotated_day = None

    def cycle(self) -> None:
        """What is due of retention and rotation (call it when the remote was just reached)."""
        if self.keep:
            self.retain()
        self.rotate()

    def retain(self) -> None:
        """Once an hour, prune older days from the runs tip and the archives' tips; history keeps them."""
        now = time.monotonic()
        if now - self._retained_at < RETENTION_EVERY:
            return
        self._retained_at = now
        cutoff = self.clock() - timedelta(seconds=self.keep)
        try:
            archived = prune_archives(self.store, self.recorder.remote, cutoff)
        except GitError as exc:
            self._retained_at = now - RETENTION_EVERY + RETRY_AFTER
            log.warning("retention (--keep) waits: %s", exc.message)
            return
        pruned = plan(self.store, self.store.ref(self.recorder.ref), cutoff)
        if pruned.paths:
            self.recorder.add({path: None for path in pruned.paths}, message(pruned))
        where = [f"{pruned.summary()} from the runs tip"] if pruned.paths else []
        where += [f"{archived.summary()} from archive refs"] if archived.paths else []
        if where:
            log.info("pruned %s (--keep; still in history)", " and ".join(where))

    def rotate(self) -> None:
        """Every ROTATION_EVERY seconds and when a UTC day closes: rotate closed days out of the tip if
        it holds `rotate_after` entries of them."""
        now, today = time.monotonic(), self.clock().date()
        if now - self._rotated_at < ROTATION_EVERY and today == self._rotated_day:
            return
        self._rotated_at, self._rotated_day = now, today
        try:
            rotation = rotate(self.store, self.recorder, self.clock(), self.rotate_after)
        except GitError as exc:
            self._rotated_at = now - ROTATION_EVERY + RETRY_AFTER
            log.warning("rotation of the runs tip waits: %s", exc.message)
            return
        if rotation is not None:
            log.info("rotated %s out of the runs tip into archive refs", rotation.summary())
