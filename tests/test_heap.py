"""The daemon gives the C heap's free memory back to the system (daemon/heap.py): blocks a thread
took and freed, the way building a busy day's trees does, stop counting in its resident memory."""
from __future__ import annotations

import json
import subprocess
import sys

# Runs in a process of its own, so its memory is the probe's alone.
PROBE = """\
import json, threading
from puppemon.daemon.heap import Heap

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

kept = []
def churn():
    blocks = [bytearray(2048) for _ in range(25_000)]   # ~50 MiB of malloc'd blocks in this thread's arena
    kept.extend(blocks[::200])      # a few stay: the arena cannot shrink from its top alone
threading.Thread(target=churn).start()
while threading.active_count() > 1:
    pass
heap = Heap()
before = rss()
first = heap.trim()
after = rss()
again = heap.trim()                 # within EVERY seconds of the first: not again
print(json.dumps({"available": heap.available, "first": first, "again": again, "before": before,
                  "after": after, "trims": heap.trims}))
"""


def test_freed_blocks_of_a_thread_leave_the_resident_memory_and_trims_are_spaced():
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["available"], "glibc's malloc_trim was not found"
    assert (got["first"], got["again"], got["trims"]) == (True, False, 1)
    assert got["before"] - got["after"] > 20 * 2**20, got     # most of the ~50 MiB freed goes back
