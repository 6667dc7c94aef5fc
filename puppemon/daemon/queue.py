"""The daemon's run queue: runs waiting for a slot, runs in flight, and the overlap policies.

`submit` queues a run of the current deploy (or records it skipped, by the flow's
`overlap:`), `dispatch` starts queued runs while slots are free, each in a thread
of its own that calls the executor, and `cancel` withdraws a queued run or stops
a running one. Every change goes through the lock; nothing outside reads the
deques directly.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Callable

from puppemon.formats import new_id, plural
from puppemon.history.records import RunContext
from puppemon.run.spec import PauseSwitch

if TYPE_CHECKING:
    from puppemon.daemon.deployer import Deployment

log = logging.getLogger("puppemon")


@dataclass
class Pending:
    """A run asked for and not started yet."""

    flow: str
    trigger: dict
    scheduled: datetime | None = None
    params: dict = field(default_factory=dict)
    request: str | None = None
    run_id: str | None = None
    deployment: Deployment | None = None  # set on submit: a run uses the deploy it was scheduled on
    skippable: bool = False               # `overlap: skip` drops it while the flow is busy (clock fires)
    fire: tuple[datetime, str] | None = None   # (the day it is filed under, its claim key): daemon/claims.py
    # claim files that also record what the run handles (watched files: watch/<flow>/...), path -> what each
    # says; such a fire is claimed even by a daemon alone, as its claims are the record kept across restarts
    claims: dict[str, dict] | None = None
    # when the event that asked for it happened (an upstream run's end): its claim is committed by a daemon
    # alone too, as the memory of the event across restarts and for daemons joining later (daemon/claims.py)
    event: datetime | None = None
    trigger_data: dict = field(default_factory=dict)   # given to the run, not recorded (run/spec.py)
    adopted: Adopted | None = None    # an attempt a previous daemon started that still runs (a Slurm job)

    def context(self, daemon: str) -> RunContext:
        deployment = self.deployment
        return RunContext(self.run_id, self.flow, self.trigger, self.scheduled, self.params,
                          deployment.sha if deployment else "", deployment.source_commit if deployment else "",
                          daemon, self.request)


@dataclass
class Adopted:
    """An attempt left running by a previous daemon that this one follows to its end (daemon/recovery.py)."""

    execution: object        # the backend's Execution, re-attached (its `area` and `attempt` say which)
    started: datetime        # when the run started, as the journal says
    context: RunContext      # what its record says, as the journal kept it


@dataclass
class Active:
    """A run in flight."""

    pending: Pending
    cancel: threading.Event = field(default_factory=threading.Event)
    pause: PauseSwitch = field(default_factory=PauseSwitch)   # its limit is the executor's (max_pause)
    started: datetime | None = None
    execution: object | None = None       # the backend's Execution of its current attempt
    thread: threading.Thread | None = None

    @property
    def run_id(self) -> str:
        return self.pending.run_id

    @property
    def flow(self) -> str:
        return self.pending.flow


def run_limit(flow) -> int | None:
    """How many runs of `flow` may be in flight at once: its `concurrency`, else 1 (None: `overlap: parallel`)."""
    concurrency = getattr(flow, "concurrency", None)
    return concurrency if concurrency else (None if flow.overlap == "parallel" else 1)


def busy_words(flow, elsewhere: bool = False) -> str:
    """Why a fire of `flow` is skipped while its runs fill its limit (`elsewhere`: some on other daemons)."""
    where = " on another daemon" if elsewhere else ""
    if getattr(flow, "concurrency", None):
        return f"{plural(flow.concurrency, 'run')} of it already in flight{where} (concurrency: {flow.concurrency})"
    return f"the previous run was still going{where} (overlap: skip)"


class RunQueue:
    """Pending and active runs; `execute(pending, active)` runs one to its record, in its own thread."""

    def __init__(self, current: Callable[[], Deployment | None], execute: Callable[[Pending, Active], None],
                 skip: Callable[[Pending, str], None], max_parallel: int, clock: Callable[[], datetime],
                 on_change: Callable[[], None] = lambda: None) -> None:
        self.current, self.execute, self.skip = current, execute, skip
        self.max_parallel, self.clock, self.on_change = max_parallel, clock, on_change
        self.lock = threading.RLock()
        self.pending: deque[Pending] = deque()
        self.active: dict[str, Active] = {}
        self.stopping = False

    # -- asking for runs ---------------------------------------------------------
    def submit(self, pending: Pending) -> str | None:
        """Queue a run of the current deploy, by its flow's overlap policy; its run id, or None
        when nothing is deployed, the flow is not in the deploy, or the daemon is stopping."""
        with self.lock:
            deployment = self.current()
            if self.stopping or deployment is None:
                return None
            flow = deployment.manifest.flows.get(pending.flow)
            if flow is None:
                log.warning("no flow %r in deploy %s; run not started", pending.flow, deployment.sha[:7])
                return None
            pending.run_id = pending.run_id or new_id(self.clock())
            pending.deployment = deployment
            limit = run_limit(flow)
            if pending.skippable and flow.overlap != "queue" and limit is not None and self.count(flow.name) >= limit:
                log.info("%s: skipped (%s)", pending.flow, busy_words(flow))
                self.skip(pending, busy_words(flow))
                self.on_change()
                return pending.run_id
            self.pending.append(pending)
        self.dispatch()
        return pending.run_id

    def cancel(self, run_id: str) -> tuple[str | None, Pending | None]:
        """Stop a run in flight or withdraw a queued one: (what was done, the withdrawn Pending)."""
        with self.lock:
            active = self.active.get(run_id)
            if active is not None:
                active.cancel.set()
                return "cancelled", None
            queued = next((p for p in self.pending if p.run_id == run_id), None)
            if queued is not None:
                self.pending.remove(queued)
                return "cancelled before it started", queued
        return None, None

    def pause(self, run_id: str, paused: bool) -> str | None:
        """Freeze a run in flight (`paused`) or let it go on: what was done, or None when it is not in
        flight here (a queued run has nothing to freeze yet)."""
        with self.lock:
            active = self.active.get(run_id)
            if active is None:
                return None
            was = active.pause.wanted
            active.pause.set(paused)
        if was == paused:
            return "already paused" if paused else "not paused"
        return "paused" if paused else "resumed"

    def adopt(self, pending: Pending) -> None:
        """Take in a run whose attempt is still running (`pending.adopted`): in flight at once, whatever the
        limits, as it was when its daemon died."""
        with self.lock:
            active = Active(pending, execution=pending.adopted.execution)
            self.active[pending.run_id] = active
            active.thread = threading.Thread(target=self._run, args=(active,), name=f"run-{pending.run_id}",
                                             daemon=True)
            active.thread.start()

    # -- running them ------------------------------------------------------------
    def dispatch(self) -> None:
        """Start queued runs while slots are free (queue policy: one run of a flow at a time)."""
        with self.lock:
            while self.pending and len(self.active) < self.max_parallel and not self.stopping:
                running = [a.flow for a in self.active.values()]
                pick = next((i for i, p in enumerate(self.pending)
                             if (limit := run_limit(p.deployment.manifest.flows[p.flow])) is None
                             or running.count(p.flow) < limit), None)
                if pick is None:
                    return
                p = self.pending[pick]
                del self.pending[pick]
                active = Active(p)
                self.active[p.run_id] = active
                active.thread = threading.Thread(target=self._run, args=(active,), name=f"run-{p.run_id}",
                                                 daemon=True)
                active.thread.start()

    def _run(self, active: Active) -> None:
        p = active.pending
        try:
            self.execute(p, active)
        except Exception:  # noqa: BLE001 - the journal entry stays: the next start records it crashed
            log.exception("%s: run %s could not be completed or recorded", p.flow, p.run_id)
        finally:
            with self.lock:
                self.active.pop(p.run_id, None)
            self.on_change()
            self.dispatch()

    # -- what is going on --------------------------------------------------------
    def busy(self) -> bool:
        with self.lock:
            return bool(self.active or self.pending)

    def count(self, flow: str) -> int:
        """How many runs of `flow` are in flight or waiting for a slot here."""
        with self.lock:
            return sum(a.flow == flow for a in self.active.values()) + sum(p.flow == flow for p in self.pending)

    def queued(self, run_id: str) -> bool:
        """Whether `run_id` waits for a slot (submitted, not started)."""
        with self.lock:
            return any(p.run_id == run_id for p in self.pending)

    def in_flight(self) -> list[Active]:
        with self.lock:
            return list(self.active.values())

    def deploys_in_use(self) -> set[str]:
        """The flows commits that queued or running runs use (their checkouts must stay)."""
        with self.lock:
            return ({a.pending.deployment.sha for a in self.active.values()}
                    | {p.deployment.sha for p in self.pending if p.deployment is not None})

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued or running; False when `timeout` passed first."""
        deadline = time.monotonic() + timeout
        while self.busy():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    # -- stopping ----------------------------------------------------------------
    def refuse_new(self) -> None:
        """Take no more runs, and start no queued one (a stop began: fires from now on are dropped)."""
        with self.lock:
            self.stopping = True

    def stop(self) -> int:
        """Take no more runs; drop the queued ones and return how many there were."""
        with self.lock:
            self.stopping = True
            dropped = len(self.pending)
            self.pending.clear()
        return dropped

    def cancel_all(self, tick: Callable[[], None] = lambda: None) -> None:
        """Cancel every run in flight (SIGTERM, grace, SIGKILL) and wait for their threads, calling `tick`
        every tenth of a second meanwhile (where a second SIGTERM kills them: daemon/lifecycle.py)."""
        for active in self.in_flight():
            active.cancel.set()
        for active in self.in_flight():
            while active.thread is not None and active.thread.is_alive():
                active.thread.join(0.1)
                tick()

    def kill_all(self) -> None:
        """Kill every run in flight now (a second SIGTERM); they are recorded cancelled."""
        for active in self.in_flight():
            active.cancel.set()
            if active.execution is not None:
                active.execution.kill()
