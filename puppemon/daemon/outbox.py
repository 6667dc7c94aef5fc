"""Publishing what the daemon recorded soon after it is committed, a burst of it in one push.

Each push pays the remote's connectivity check, which walks the whole tree of the
runs tip, so records that finish close together go out together: the first record
after a quiet spell is published at once, and records that come while one publish
is under way, or within GAP seconds of its start, go out with the next one. No record
waits longer than GAP after the publish before it (records are committed locally
first, so a stop in between only delays them: SIGTERM publishes everything, and the
next start publishes what a kill -9 left).

The daemon's cycle publishes through `flush` too, so the status and the records are
never pushed by two threads at once.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

log = logging.getLogger("puppemon")

GAP = 0.25  # seconds between the starts of two publishes, at least


class Outbox:
    """A thread that publishes soon after `soon()` is called (started by `start`, stopped by `close`)."""

    def __init__(self, publish: Callable[[], None], status: Callable[[], None], gap: float = GAP) -> None:
        self.publish, self.status, self.gap = publish, status, gap
        self._due = threading.Event()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._last = float("-inf")
        self._thread: threading.Thread | None = None

    def soon(self) -> None:
        """Something was committed that the remote should have: publish it within `gap` seconds."""
        self._due.set()

    def flush(self) -> None:
        """Publish the records, then the status, now (in the caller's thread)."""
        with self._lock:
            self._last = time.monotonic()
            self.publish()
            self.status()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="publish", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread (what it has not published, the caller's last publish takes)."""
        self._closing.set()
        self._due.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while True:
            self._due.wait()
            if self._closing.wait(max(0.0, self._last + self.gap - time.monotonic())):
                return
            self._due.clear()
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the next soon() or the daemon's cycle tries again
                log.exception("unexpected error while publishing; the next cycle tries again")
