"""What the daemon's main loop sleeps on between cycles: woken by any thread, and by a signal handler.

A signal handler runs in the main thread wherever it was interrupted, even inside a
lock it holds. `threading.Event.set` takes the lock of the Event's condition, so a
handler that calls it while the main thread is inside that Event's `wait` or `clear`
waits for itself for ever (a daemon that no longer stops on SIGTERM). A Wakeup takes
no lock: `set` writes a byte to a non-blocking pipe, `wait` polls it.
"""
from __future__ import annotations

import os
import select
import time
import weakref


class Wakeup:
    """The subset of threading.Event the loop uses (set, wait, clear), safe to `set` in a signal handler."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._flag = False
        # closed with the last reference to it (a thread that can still call `set` keeps it alive)
        weakref.finalize(self, _close, self._read, self._write)

    def set(self) -> None:
        self._flag = True
        try:
            os.write(self._write, b"\0")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already

    def is_set(self) -> bool:
        return self._flag

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until `set` (or `timeout` seconds); True when it was set."""
        deadline = None if timeout is None else time.monotonic() + timeout
        poller = select.poll()   # not select(): no limit on the descriptor's number; one per call: threads
        poller.register(self._read, select.POLLIN)
        while not self._flag:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            poller.poll(None if left is None else int(left * 1000) + 1)
            if not self._flag:
                self._drain()   # a byte of a `set` that a `clear` came after: not a wake-up
        return self._flag

    def clear(self) -> None:
        self._flag = False   # before draining: a `set` in between leaves the flag up
        self._drain()

    def _drain(self) -> None:
        try:
            while os.read(self._read, 4096):
                pass
        except BlockingIOError:
            pass


def _close(*fds: int) -> None:
    for fd in fds:
        os.close(fd)
