"""The daemon: fetch flows and runs, deploy, schedule with APScheduler, run, record, publish.

One main thread loops over fetch / deploy / publish / status; APScheduler fires
jobs that only enqueue a run; each run executes in its own thread (the child is
a process of its own, see runner.py) and hands its record to the recorder.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from puppemon import __version__
from puppemon.errors import PuppemonError
from puppemon.gitstore import GitError, Store
from puppemon.deploys import Deployment, DeployMixin, EnqueueExecutor, Pending  # noqa: F401 - Pending is public here
from puppemon.journal import StateDir
from puppemon.records import (dump_json, run_dir, run_files, run_message, run_record,
                              synthetic_record, utc_iso)
from puppemon.recorder import Recorder

log = logging.getLogger("puppemon")

HEARTBEAT = 60.0
RETENTION_EVERY = 3600.0
STATUS_MIN_INTERVAL = 5.0


@dataclass
class Settings:
    remote: str
    state: Path
    name: str = field(default_factory=lambda: socket.gethostname() or "puppemon")
    poll: float = 60.0
    max_parallel: int = 4
    grace: float = 30.0
    branch_flows: str = "flows"
    branch_runs: str = "runs"
    once: bool = False
    secrets: Any = None          # a SecretStore (secrets.py), or None
    kill_grace: float = 5.0      # SIGTERM -> SIGKILL for a cancelled or timed-out run
    keep: float | None = None    # retention: prune records older than this many seconds from the runs tip


@dataclass
class Active:
    run_id: str
    flow: str
    deployment: Deployment
    cancel: threading.Event
    thread: threading.Thread | None = None
    started: datetime | None = None
    pid: int | None = None       # leader of the run's process group, once spawned


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Daemon(DeployMixin):
    """A running daemon; `run()` returns the exit code."""

    def __init__(self, settings: Settings, clock: Callable[[], datetime] = utcnow) -> None:
        self.s = settings
        self.clock = clock
        self.state = StateDir(settings.state)
        self.store: Store | None = None
        self.recorder: Recorder | None = None
        self.current: Deployment | None = None
        self.refused: set[str] = set()
        self.scheduler = None
        self.lock = threading.RLock()
        self.pending: deque[Pending] = deque()
        self.active: dict[str, Active] = {}
        self.wake = threading.Event()
        self.stopping = False
        self.forced = False
        self.started = utcnow()
        self.fires: dict[str, datetime] = {}
        self.failures = 0
        self._status_pushed: tuple[float, str] = (0.0, "")
        self._retained_at = float("-inf")
        self.hooks: list[Callable[[Daemon], None]] = []  # extra work each cycle (requests, HTTP)
        self.closers: list[Callable[[], None]] = []  # called first thing on shutdown (the HTTP hook)

    # -- life cycle ----------------------------------------------------------
    def run(self) -> int:
        import puppemon.runner  # noqa: F401 - now, not on the scheduler thread at the first fire
        self.state.open()
        try:
            self.store = Store.open_or_init_bare(self.state.mirror_dir)
            self.recorder = Recorder(self.store, remote=self.s.remote, branch=self.s.branch_runs,
                                     author_name=f"puppemon {self.s.name}")
            self.fires = self.state.last_fires()
            self._install_signals()
            self._recover_crashed()
            if self.s.once:
                return self._once()
            return self._forever()
        finally:
            self.state.close()

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, lambda *_: self.wake.set())

    def _on_stop_signal(self, signum, _frame) -> None:
        if self.stopping:
            # a second signal: no more grace, kill every run's process group now
            self.forced = True
            for active in list(self.active.values()):
                active.cancel.set()
                if active.pid:
                    try:
                        os.killpg(active.pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
        self.stopping = True
        self.wake.set()

    def request_stop(self) -> None:
        """Stop as a first SIGTERM would (for callers that embed the daemon)."""
        self._on_stop_signal(signal.SIGTERM, None)

    def _forever(self) -> int:
        from apscheduler.schedulers.background import BackgroundScheduler

        self.scheduler = BackgroundScheduler(
            timezone=timezone.utc, executors={"default": EnqueueExecutor(self._fire)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None})
        self.scheduler.start()
        log.info("daemon %s started (pid %d), remote %s, state %s", self.s.name, os.getpid(),
                 self.s.remote, self.state.path)
        first = True
        while not self.stopping:
            try:
                self.cycle(catch_up=first)
            except Exception:  # noqa: BLE001 - a service left running for months logs and goes on
                self.failures += 1
                log.exception("unexpected error in the daemon's cycle; retrying")
            first = False
            self.wake.wait(self._next_wait())
            self.wake.clear()
        return self._shutdown()

    def _next_wait(self) -> float:
        if self.failures:
            return min(self.s.poll, 2.0 * 2 ** min(self.failures, 5))
        return self.s.poll

    def _once(self) -> int:
        self.cycle(catch_up=True, once=True)
        while True:
            with self.lock:
                busy = bool(self.active or self.pending)
            if not busy or self.stopping:
                break
            self.wake.wait(0.2)
            self.wake.clear()
        code = self._shutdown()
        if code == 0 and (self.failures or self.recorder.unpublished()):
            return 1  # the remote was not reached, or records are still waiting to go out
        return code

    def _shutdown(self) -> int:
        self.stopping = True  # also after --once, so the last status says "stopped"
        for close in self.closers:
            try:
                close()
            except Exception:  # noqa: BLE001 - a closer must not keep runs from being recorded
                log.exception("error while stopping")
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        with self.lock:
            dropped = len(self.pending)
            self.pending.clear()
        if dropped:
            log.info("stopping: %d queued runs not started", dropped)
        deadline = time.monotonic() + self.s.grace
        if self.active:
            log.info("stopping: waiting up to %gs for %d runs", self.s.grace, len(self.active))
        while self.active and time.monotonic() < deadline and not self.forced:
            time.sleep(0.05)
        for active in list(self.active.values()):
            active.cancel.set()
        for active in list(self.active.values()):
            if active.thread is not None:
                active.thread.join()
        self.publish()
        self.push_status(final=True)
        log.info("daemon %s stopped", self.s.name)
        return 0

    # -- one cycle -----------------------------------------------------------
    def cycle(self, catch_up: bool = False, once: bool = False) -> None:
        """Fetch, deploy what is new, run what is due, publish records and status."""
        try:
            tip = self.store.fetch_optional(self.s.remote, f"refs/heads/{self.s.branch_flows}",
                                            f"refs/puppemon/remote/{self.s.branch_flows}")
            self.recorder.sync(push=False)
            self.failures = 0
        except GitError as exc:
            self.failures += 1
            log.warning("cannot fetch from %s: %s", self.s.remote, exc.message)
            tip = self.current.sha if self.current else None
        new_deploy = bool(tip and (self.current is None or tip != self.current.sha) and tip not in self.refused)
        if new_deploy:
            self.deploy(tip)
        if self.current is not None and catch_up:
            self.catch_up(once)
        for hook in self.hooks:
            try:
                hook(self)
            except PuppemonError as exc:
                log.warning("%s", exc.message)
        if self.s.keep and self.failures == 0:
            self.retain()
        self.publish()
        self.push_status()

    def retain(self) -> None:
        """Retention (--keep): once an hour, prune older days from the runs tip; history keeps them."""
        from puppemon.retention import message, plan

        now = time.monotonic()
        if now - self._retained_at < RETENTION_EVERY:
            return
        self._retained_at = now
        pruned = plan(self.store, self.store.ref(self.recorder.ref),
                      self.clock() - timedelta(seconds=self.s.keep))
        if pruned.paths:
            self.recorder.add({path: None for path in pruned.paths}, message(pruned))
            log.info("pruned %s from the runs tip (--keep; still in history)", pruned.summary())

    def submit(self, pending: Pending) -> str | None:
        """Queue a run of the current deploy, by its flow's overlap policy; return its run id."""
        from puppemon.runner import new_run_id

        with self.lock:
            deployment = self.current
            if self.stopping or deployment is None:
                return None
            flow = deployment.manifest.flows.get(pending.flow)
            if flow is None:
                log.warning("no flow %r in deploy %s; run not started", pending.flow, deployment.sha[:7])
                return None
            pending.run_id = pending.run_id or new_run_id(self.clock())
            pending.deployment = deployment
            busy = any(a.flow == flow.name for a in self.active.values()) or any(
                p.flow == flow.name for p in self.pending)
            if busy and flow.overlap == "skip" and pending.trigger.get("kind") in ("schedule", "catchup"):
                self._record_skipped(pending, deployment)
                return pending.run_id
            self.pending.append(pending)
        self._dispatch()
        return pending.run_id

    def _record_skipped(self, pending: Pending, deployment: Deployment) -> None:
        now = self.clock()
        log.info("%s: skipped (the previous run is still going; overlap: skip)", pending.flow)
        record = synthetic_record(pending.run_id, pending.flow, "skipped", trigger=pending.trigger,
                                  error="the previous run was still going (overlap: skip)", started=now,
                                  scheduled=pending.scheduled, flows_commit=deployment.sha,
                                  source_commit=deployment.source_commit, daemon=self.s.name)
        self.recorder.add(run_files(record), run_message(record))
        self.wake.set()

    def _dispatch(self) -> None:
        """Start queued runs while slots are free (queue policy: one run of a flow at a time)."""
        with self.lock:
            while self.pending and len(self.active) < self.s.max_parallel and not self.stopping:
                running = {a.flow for a in self.active.values()}
                pick = None
                for index, p in enumerate(self.pending):
                    flow = p.deployment.manifest.flows[p.flow]
                    if flow.overlap == "parallel" or p.flow not in running:
                        pick = index
                        break
                if pick is None:
                    return
                p = self.pending[pick]
                del self.pending[pick]
                active = Active(p.run_id, p.flow, p.deployment, threading.Event())
                self.active[p.run_id] = active
                active.thread = threading.Thread(target=self._run, args=(p, active),
                                                 name=f"run-{p.run_id}", daemon=True)
                active.thread.start()

    # -- one run -------------------------------------------------------------
    def _run(self, p: Pending, active: Active) -> None:
        try:
            self._run_and_record(p, active)
        except Exception:  # noqa: BLE001 - the journal entry stays: the next start records it crashed
            log.exception("%s: run %s could not be completed or recorded", p.flow, p.run_id)
            with self.lock:
                self.active.pop(p.run_id, None)
            self.wake.set()
            self._dispatch()

    def _run_and_record(self, p: Pending, active: Active) -> None:
        from puppemon.runner import RunSpec, execute

        deployment = active.deployment
        flow = deployment.manifest.flows[p.flow]
        started = self.clock()
        active.started = started
        self.state.journal(p.run_id, {"run_id": p.run_id, "flow": p.flow, "trigger": p.trigger,
                                      "scheduled": utc_iso(p.scheduled), "started": utc_iso(started),
                                      "params": p.params, "flows_commit": deployment.sha,
                                      "source_commit": deployment.source_commit, "request": p.request,
                                      "pid": None, "pid_start": None})
        log.info("%s: started run %s (%s)", p.flow, p.run_id, p.trigger.get("kind"))
        try:
            secrets = self.secrets_for(flow)
        except PuppemonError as exc:
            self._finish_refused(p, active, exc.message)
            return
        spec = RunSpec(run_id=p.run_id, flow=flow, code_dir=deployment.directory, params=p.params,
                       flows_commit=deployment.sha, variables=deployment.manifest.variables,
                       secrets=secrets, grace=self.s.kill_grace)
        result = execute(spec, cancel=active.cancel,
                         on_spawn=lambda _n, pid: self._spawned(active, pid))
        record = run_record(result, trigger=p.trigger, flows_commit=deployment.sha,
                            source_commit=deployment.source_commit, scheduled=p.scheduled,
                            daemon=self.s.name, request=p.request)
        self.recorder.add(run_files(record, result.log, result.result, result.has_result, result.outputs),
                          run_message(record))
        self.after_run(record, result.log)
        self._finish(p, active, record)

    def _spawned(self, active: Active, pid: int) -> None:
        active.pid = pid
        self.state.journal_pid(active.run_id, pid)

    def _finish_refused(self, p: Pending, active: Active, error: str) -> None:
        deployment = active.deployment
        record = synthetic_record(p.run_id, p.flow, "failed", trigger=p.trigger, error=error,
                                  started=active.started, finished=self.clock(), scheduled=p.scheduled,
                                  params=p.params, flows_commit=deployment.sha,
                                  source_commit=deployment.source_commit, daemon=self.s.name, request=p.request)
        self.recorder.add(run_files(record, f"puppemon: {error}\n".encode()), run_message(record))
        self.after_run(record, b"")
        self._finish(p, active, record)

    def _finish(self, p: Pending, active: Active, record: dict) -> None:
        self.state.unjournal(p.run_id)
        log.info("%s: %s in %.1fs (run %s)", p.flow, record["status"], record["duration"], p.run_id)
        with self.lock:
            self.active.pop(p.run_id, None)
        self.wake.set()
        self._dispatch()

    def secrets_for(self, flow) -> dict:
        """The secret values this flow asked for and the server grants (PuppemonError otherwise)."""
        if not flow.secrets:
            return {}
        if self.s.secrets is None:
            raise PuppemonError(f"flow {flow.name!r} asks for secret{'s' if len(flow.secrets) > 1 else ''} "
                                f"{', '.join(flow.secrets)} but this daemon has no secrets file "
                                f"(start it with --secrets FILE)")
        return self.s.secrets.for_flow(flow.name, flow.secrets)

    def after_run(self, record: dict, log_bytes: bytes) -> None:
        """Called after each run is recorded (notifications hook in here)."""

    # -- crash recovery ------------------------------------------------------
    def _recover_crashed(self) -> None:
        tip = self.store.ref(self.recorder.ref)
        for entry in self.state.leftovers():
            run_id, flow = entry["run_id"], entry["flow"]
            killed = self.state.kill_leftover(entry)
            already = tip is not None and self.store.lookup(tip, f"{run_dir(flow, run_id)}/run.json")
            if not already:
                from puppemon.records import parse_iso

                error = ("the daemon stopped while this run was in flight"
                         + (f"; its leftover processes (group {entry['pid']}) were killed" if killed else ""))
                record = synthetic_record(run_id, flow, "crashed", trigger=entry.get("trigger") or {},
                                          error=error, started=parse_iso(entry.get("started")) or self.clock(),
                                          finished=self.clock(), scheduled=parse_iso(entry.get("scheduled")),
                                          params=entry.get("params"), flows_commit=entry.get("flows_commit", ""),
                                          source_commit=entry.get("source_commit", ""), daemon=self.s.name,
                                          request=entry.get("request"))
                self.recorder.add(run_files(record, f"puppemon: {error}\n".encode()), run_message(record))
                self.after_run(record, b"")
                tip = self.store.ref(self.recorder.ref)
                log.warning("%s: run %s recorded as crashed", flow, run_id)
            self.state.unjournal(run_id)

    # -- publishing ------------------------------------------------------------
    def publish(self) -> None:
        if self.recorder.unpublished() == 0:
            return
        count = self.recorder.unpublished()
        if self.recorder.publish():
            log.info("published %d record%s to %s", count, "s" if count != 1 else "", self.s.remote)
    
    def status(self) -> dict:
        """The live state written to refs/puppemon/status/<name>."""
        flows = {}
        if self.current is not None:
            for name in self.current.manifest.flows:
                job = self.scheduler.get_job(name) if self.scheduler else None
                flows[name] = {"next": utc_iso(job.next_run_time) if job and job.next_run_time else None}
        return {
            "schema": 1, "name": self.s.name, "host": socket.gethostname(), "pid": os.getpid(),
            "version": __version__, "started": utc_iso(self.started), "heartbeat": utc_iso(utcnow()),
            "state": "stopped" if self.stopping else "running",
            "flows_commit": self.current.sha if self.current else None,
            "flows": flows,
            "in_flight": [{"run_id": a.run_id, "flow": a.flow, "started": utc_iso(a.started)}
                          for a in list(self.active.values())],
            "unpublished": self.recorder.unpublished(),
        }

    def push_status(self, final: bool = False) -> None:
        status = self.status()
        key = json.dumps({k: v for k, v in status.items() if k != "heartbeat"}, sort_keys=True)
        last_time, last_key = self._status_pushed
        now = time.monotonic()
        due = final or (key != last_key and now - last_time >= STATUS_MIN_INTERVAL) or now - last_time >= HEARTBEAT
        if not due and not (key != last_key and last_time == 0.0):
            return
        ref = f"refs/puppemon/status/{self.s.name}"
        tree = self.store.update_tree(None, {"status.json": (self.store.blob(dump_json(status)), 0o100644)})
        commit = self.store.commit(tree, [], f"status of {self.s.name}\n")
        try:
            self.store.push(self.s.remote, [f"+{commit}:{ref}"], timeout=30)
            self._status_pushed = (now, key)
        except GitError as exc:
            log.debug("status not pushed: %s", exc.message)
