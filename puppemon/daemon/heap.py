"""Giving the C heap's free memory back to the system, now and then.

Recording a run rewrites the trees of its day (libgit2, in the threads that record, serve
requests and publish), and the bigger the day, the bigger the blocks those trees take and free.
glibc keeps what was freed in each thread's arena for reuse, so a daemon's resident memory
climbed with the busiest day it had seen although what it held did not: 57.4 MiB after the
500th run of a day, 60.9 MiB after the 5,000th, and 57.1 MiB once `malloc_trim` had given the
free pages back (BENCHMARKS.md, figure 15). So the daemon trims after publishing, at most every
EVERY seconds. Only where the C library has malloc_trim (glibc); elsewhere it does nothing.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

EVERY = 30.0   # seconds between two trims, at least


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        import ctypes

        trim = ctypes.CDLL(None).malloc_trim
    except (ImportError, OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


class Heap:
    """`trim()` returns the C heap's free pages to the system, when EVERY seconds have passed."""

    def __init__(self, every: float = EVERY) -> None:
        self.every = every
        self._trim = _malloc_trim()
        self._last = float("-inf")
        self._lock = threading.Lock()
        self.trims = 0    # how many times it did

    @property
    def available(self) -> bool:
        return self._trim is not None

    def trim(self) -> bool:
        """Trim now if it is due; whether it did."""
        if self._trim is None:
            return False
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.every:
                return False
            self._last = now
        self._trim(0)
        self.trims += 1
        return True
