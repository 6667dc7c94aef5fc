"""What the daemon's loop sleeps on (daemon/wakeup.py), and a daemon woken by a storm of signals."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from puppemon.daemon.wakeup import Wakeup
from tests.daemon_helpers import DaemonProcess, manifest_project, remote_records, wait_until
from tests.conftest import git, puppemon


def test_a_wakeup_sleeps_until_set_and_remembers_a_set_until_cleared():
    wake = Wakeup()
    began = time.monotonic()
    assert wake.wait(0.2) is False and time.monotonic() - began >= 0.19
    timer = threading.Timer(0.1, wake.set)
    timer.start()
    began = time.monotonic()
    assert wake.wait(10) is True and time.monotonic() - began < 5
    assert wake.wait(0) is True          # still set: nothing cleared it
    wake.clear()
    assert wake.is_set() is False and wake.wait(0.05) is False
    for _ in range(100_000):             # far more than the pipe holds: `set` never blocks
        wake.set()
    wake.clear()
    assert wake.wait(0.05) is False      # and one clear drains them all
    os.write(wake._write, b"\0")         # what a `set` racing a `clear` leaves: the byte after the flag's reset
    began = time.monotonic()
    assert wake.wait(0.2) is False and time.monotonic() - began >= 0.19   # no wake-up, no early return


SCRIPT = """
import os, signal, sys, threading
from puppemon.daemon.wakeup import Wakeup
wake, seen = Wakeup(), []
def handler(signum, frame):
    seen.append(signum)
    wake.set()
signal.signal(signal.SIGUSR1, handler)
def sender():
    for _ in range(int(sys.argv[1])):
        os.kill(os.getpid(), signal.SIGUSR1)
    os.kill(os.getpid(), signal.SIGUSR2)
signal.signal(signal.SIGUSR2, lambda *_: (print(len(seen)), sys.stdout.flush(), os._exit(0)))
threading.Thread(target=sender, daemon=True).start()
while True:
    wake.wait(0.001)
    wake.clear()
"""


def test_signal_handlers_that_set_a_wakeup_never_stop_the_thread_that_sleeps_on_it():
    proc = subprocess.run([sys.executable, "-c", SCRIPT, "200000"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) > 10   # handlers ran (signals that come together are delivered once)


@pytest.mark.slow
def test_a_daemon_woken_by_a_storm_of_signals_still_stops_on_one_sigterm(tmp_path):
    remote = tmp_path / "remote.git"
    git("init", "--bare", "-q", str(remote))
    repo = manifest_project(tmp_path, str(remote), "version: 1\nflows:\n  nap:\n    command: sleep 3; echo rested\n")
    puppemon("push", cwd=repo)
    with DaemonProcess(str(remote), tmp_path / "state", "--poll", "0.05") as daemon:
        wait_until(lambda: "deployed" in daemon.log, 30, "the deploy", lambda: daemon.log)
        puppemon("trigger", "nap", cwd=repo)
        wait_until(lambda: "nap: started run" in daemon.log, 30, "the run to start", lambda: daemon.log)
        storm_over = threading.Event()

        def storm() -> None:   # SIGHUP: "fetch now", a wake-up from a signal handler each time
            while not storm_over.is_set():
                os.kill(daemon.proc.pid, signal.SIGHUP)
                time.sleep(0.0005)

        hammer = threading.Thread(target=storm, daemon=True)
        hammer.start()
        time.sleep(1)
        daemon.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        storm_over.set()
        hammer.join(5)
        # (one more SIGHUP only wakes it; a daemon still there in 30 s fails with its threads' stacks)
        assert daemon.stop(signal.SIGHUP, timeout=30) == 0   # the run in flight finished within its grace
    assert daemon.log.count("SIGTERM: stopping; runs in flight get up to 30s to finish") == 1
    assert [r["status"] for r in remote_records(remote)] == ["succeeded"]
