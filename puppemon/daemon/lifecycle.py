"""The daemon process's life, mixed into daemon/loop.py's Daemon: `run()` (signals, `--once` or the loop
until a stop signal), and the shutdown (grace for the runs in flight, record everything, publish).
The attributes it uses are the Daemon's, made by its `_assemble`."""
from __future__ import annotations

import logging
import os
import signal
import threading
import time

from puppemon.formats import plural

log = logging.getLogger("puppemon")


class Lifecycle:
    def run(self) -> int:
        import puppemon.run.runner  # noqa: F401 - now, not on the scheduler thread at the first fire
        from puppemon.run.processes import become_undumpable

        become_undumpable()  # a run of our own user cannot read our environ (its secrets) nor our memory
        self.open()
        try:
            self._install_signals()
            if self.http is not None:
                self.http.start()
            self.live.start()
            return self._once() if self.s.once else self._forever()
        finally:
            self.state.close()

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, lambda *_: self.wake.set())

    def _on_stop_signal(self, signum, _frame) -> None:
        # A handler interrupts the main thread wherever it is, even inside a lock it holds or a log line it
        # writes: it takes no lock but the queue's (reentrant), and logs nothing; `_heed` does the rest.
        self._signals.append((signum, self.stopping))
        if self.stopping:
            self.forced = True  # a second signal: no more grace
        self.request_stop()

    def request_stop(self) -> None:
        """Stop as a first SIGTERM would (for callers that embed the daemon; from any thread)."""
        self.stopping = True
        if hasattr(self, "queue"):  # assembled: a fire between now and the shutdown starts nothing
            self.queue.refuse_new()
        self.wake.set()   # a Wakeup (daemon/wakeup.py): safe in a signal handler

    def _heed(self) -> None:
        """In the main thread: say which signals came, and kill the runs in flight after a second one."""
        while self._signals:
            signum, again = self._signals.pop(0)
            name = signal.Signals(signum).name
            if not again:
                log.info("%s: stopping; runs in flight get up to %gs to finish (%s again kills them now)",
                         name, self.s.grace, "Ctrl-C" if signum == signal.SIGINT else name)
            elif not self._killed:
                log.warning("%s again: killing the runs in flight", name)
        if self.forced and not self._killed and hasattr(self, "queue"):
            self._killed = True
            self.queue.kill_all()

    def _forever(self) -> int:
        self.claims.start()
        for source in self.sources:
            source.start()
        self.outbox.start()
        log.info("daemon %s started (pid %d), remote %s, state %s%s", self.s.name, os.getpid(),
                 self.s.remote, self.state.path, f", config {self.s.config_file}" if self.s.config_file else "")
        first, stop_at = True, None
        while not self.stopping:
            try:
                self.cycle(catch_up=first)
            except Exception:  # noqa: BLE001 - a service left running for months logs and goes on
                self.failures += 1
                log.exception("unexpected error in the daemon's cycle; retrying")
            if first and self.s.stop_after is not None:
                stop_at = time.monotonic() + self.s.stop_after
            first = False
            wait = self._next_wait()
            if stop_at is not None:
                wait = max(0.0, min(wait, stop_at - time.monotonic()))
            self.wake.wait(wait)
            self.wake.clear()
            self._heed()
            if stop_at is not None and time.monotonic() >= stop_at:
                self.request_stop()
        return self._shutdown()

    def _next_wait(self) -> float:
        if self.failures:
            return min(self.s.poll, 2.0 * 2 ** min(self.failures, 5))
        return self.s.poll

    def _once(self) -> int:
        self.cycle(catch_up=True, once=True)
        while self.queue.busy() and not self.stopping:
            self.wake.wait(0.2)
            self.wake.clear()
        self._heed()
        code = self._shutdown()
        if code == 0 and (self.failures or self.recorder.unpublished() or self.ledger.waiting()):
            return 1  # the remote was not reached, or records are still waiting to go out
        return code

    def _shutdown(self) -> int:
        self.stopping = True  # also after --once, so the last status says "stopped"
        self._heed()
        if self.http is not None:
            try:
                self.http.stop()
            except Exception:  # noqa: BLE001 - the hook must not keep runs from being recorded
                log.exception("error while stopping the HTTP hook")
        for source in self.sources:
            source.close()
        self.claims.close()
        dropped = self.queue.stop()
        if dropped:
            log.info("stopping: %s not started", plural(dropped, "queued run"))
        deadline = time.monotonic() + self.s.grace
        if self.queue.busy():
            log.info("stopping: waiting up to %gs for %s", self.s.grace,
                     plural(len(self.queue.in_flight()), "run"))
        while self.queue.busy() and time.monotonic() < deadline and not self.forced:
            time.sleep(0.05)
            self._heed()
        self.queue.cancel_all(tick=self._heed)
        self.live.stop()
        self.outbox.close()
        self.ledger.retry()
        if self.ledger.waiting():
            log.warning("stopping with %s not written (see above): the next start tries again",
                        plural(self.ledger.waiting(), "record"))
        self.publish()
        self.push_status(final=True)
        log.info("daemon %s stopped", self.s.name)
        return 1 if self.others.refused else 0
