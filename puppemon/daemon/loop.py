"""The daemon: a loop that fetches flows and runs, deploys, runs what is due, records and publishes.

It is assembled from parts that get what they need by argument (`_assemble`): a
Ledger (the one way to record) over a Recorder, a Deployer, a RunQueue whose run
threads call a RunExecutor, the trigger sources (sources.py), a RequestServer, a
Notifier that hears every recorded run, a StatusPublisher and, with `--listen`,
an HttpHook that talks to the daemon through `Control` methods only.

`run()` is the process's life (signals, `--once`, shutdown: daemon/lifecycle.py); `open()`, `cycle()`,
`fire()` and `close()` let a caller drive it one step at a time with its own clock.
"""
from __future__ import annotations

import logging
import os
import socket
from datetime import datetime, timezone
from typing import Callable

from puppemon import __version__
from puppemon.daemon.claims import FireClaims
from puppemon.daemon.cluster import slurm_check
from puppemon.daemon.control import Controls
from puppemon.daemon.deployer import Deployer
from puppemon.daemon.executor import RunExecutor
from puppemon.daemon.journal import StateDir
from puppemon.daemon.labels import Placement
from puppemon.daemon.ledger import Ledger
from puppemon.daemon.lifecycle import Lifecycle
from puppemon.daemon.live import LiveLogs
from puppemon.daemon.notify import Notifier
from puppemon.daemon.outbox import Outbox
from puppemon.daemon.failover import Failover, in_flight_entry
from puppemon.daemon.heap import Heap
from puppemon.daemon.peers import Peers
from puppemon.daemon.queue import Pending, RunQueue
from puppemon.daemon.recovery import adoption, recover_crashed
from puppemon.daemon.request_server import RequestServer
from puppemon.daemon.settings import Settings
from puppemon.daemon.source import Source, SourceContext
from puppemon.daemon.sources import SOURCES
from puppemon.daemon.upkeep import Upkeep
from puppemon.daemon.wakeup import Wakeup
from puppemon.daemon.watch import watch_check
from puppemon.errors import PuppemonError
from puppemon.formats import plural, utc_iso
from puppemon.gitstore import GitError, Store
from puppemon.history.recorder import Recorder, disk_words
from puppemon.history.status import StatusPublisher
from puppemon.run.container import ContainerBackend
from puppemon.run.environments import EnvStore
from puppemon.run.images import ImageStore
from puppemon.run.slurm import SlurmBackend

log = logging.getLogger("puppemon")

def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Daemon(Lifecycle):
    """A daemon over one remote; `run()` returns the process's exit code."""

    def __init__(self, settings: Settings, clock: Callable[[], datetime] = utcnow, listener=None) -> None:
        self.s, self.clock, self.state = settings, clock, StateDir(settings.state)
        self.listener = listener     # optional: its .recorded(record) hears each run recorded
        self.wake = Wakeup()     # what the loop sleeps on: woken by other threads and by signals
        self.stopping = self.forced = False
        self._signals: list[tuple[int, bool]] = []   # (signal, stopping already) for the main thread
        self._killed = False                          # after a second signal (lifecycle.py)
        self.started, self.failures = clock(), 0
        self.told_empty = False     # "nothing is deployed yet" was logged
        self.secrets = settings.load_secrets()
        self.http = None
        if settings.listen:  # bound now: a bad --listen fails before anything else starts
            from puppemon.daemon.httpd import HttpHook

            self.http = HttpHook(self, settings.listen, *settings.http_credentials())

    # -- assembly --------------------------------------------------------------
    def open(self) -> Daemon:
        """Take the state directory, assemble the parts and record runs a crash left in flight."""
        self.state.open()
        try:
            self._assemble()
            self.others.refuse_same_name()  # before anything is written: one live daemon per name
            self._recover_crashed()
        except BaseException:
            self.state.close()
            raise
        return self

    def _assemble(self) -> None:
        s = self.s
        self.store = Store.open_or_init_bare(self.state.mirror_dir)
        self.recorder = Recorder(self.store, remote=s.remote, branch=s.branch_runs,
                                 author_name=f"puppemon {s.name}")
        self.ledger = Ledger(self.recorder, s.name, self.clock, self._on_recorded, self.state)
        self.placement = Placement.of(s, lambda: self.deployer.current, self.store, self.clock)
        checks = (watch_check(s.watch_roots, self.placement.can), slurm_check(s.slurm, self.placement.can))
        envs_dir = s.slurm.envs_dir or self.state.envs_dir   # Slurm: on the directory the compute nodes see
        self.deployer = Deployer(self.store, self.state, self.ledger, s.remote,
                                 EnvStore(envs_dir, s.build_timeout), self.wake.set, self.placement.can,
                                 ImageStore(s.containers, self.state.images_dir, s.build_timeout),
                                 lambda manifest: [check(manifest) for check in checks])
        self.notifier = Notifier(self.secrets, self.deployer.flow_for)
        self.outbox = Outbox(self.publish, self.push_status)  # a run's end publishes soon, with no cycle
        self.heap = Heap()   # what building a busy day's trees freed goes back to the system (daemon/heap.py)
        self.live = LiveLogs(self.state, s.remote, s.name, s.live_interval)
        self.backends = {"container": ContainerBackend(s.containers), "slurm": SlurmBackend(s.slurm)}
        executor = RunExecutor(self.state, self.ledger, s.name, self.secrets, s.kill_grace, self.clock, s.users,
                               s.max_pause, self.live, self.backends, envs_dir)
        self.controls = Controls(self.store, self.state, self.clock)
        skip = lambda pending, why: self.ledger.synthetic(pending.context(s.name), "skipped", why)  # noqa: E731
        self.queue = RunQueue(lambda: self.deployer.current, executor, skip, s.max_parallel, self.clock,
                              on_change=self.outbox.soon)
        context = SourceContext(self.submit, self.state, self.clock, store=self.store,
                                runs_tip=lambda: self.store.ref(self.recorder.ref), ready=lambda: self.peers.ready,
                                takes=self.placement.can, last_fires=self._last_fires,
                                misfire_grace=s.misfire_grace)
        by_class: dict[type, Source] = {}
        for cls in SOURCES.values():
            by_class.setdefault(cls, cls(context))
        self.sources: list[Source] = list(by_class.values())
        self.clock_source = by_class[SOURCES["cron"]]
        self.requests = RequestServer(self.store, (self.recorder.ref, self.recorder.tracking), self.ledger,
                                      self.queue, lambda: self.deployer.current, s.name, self.clock,
                                      self.publish, self.outbox.soon, self.controls.paused, self.placement.takes)
        self.status_publisher = StatusPublisher(self.store, s.remote, s.name, heartbeat=s.heartbeat)
        self.others = Failover(self.store, self.recorder, self.ledger, s.remote, s.name, s.branch_flows,
                               s.heartbeat, self.clock, self.request_stop)  # one daemon per name, layout, failover
        self.peers = Peers(self.store, s.remote, s.branch_flows, s.name, self.started, self.clock,
                           lambda: self.status_publisher.publish(self.status(), early=True))
        self.claims = FireClaims(self.peers, self.recorder, self.ledger, self.store, self.queue, s.name, self.clock)
        self.upkeep = Upkeep(self.store, self.recorder, self.clock, s.keep, s.rotate_after)

    def _deployed_before(self, deployment) -> bool:
        """--once with a new state directory (a CI job): whether an earlier start deployed it already."""
        from puppemon.history.baseline import was_deployed

        if not self.s.once or self.state.deployed() is not None:
            return False
        return was_deployed(self.store, self.recorder.ref, deployment.sha, self.s.name, deployment.committed)

    def _last_fires(self, flows: list[str]) -> dict:
        """Each flow's last fire on the runs branch as last fetched (--once counts missed fires from it)."""
        from puppemon.history.baseline import last_fires

        return last_fires(self.store, self.recorder.ref, flows)

    def close(self) -> int:
        """Stop (as after SIGTERM: runs get the grace period), publish, and release the state directory."""
        try:
            return self._shutdown()
        finally:
            self.state.close()

    def __enter__(self) -> Daemon:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- one cycle -----------------------------------------------------------
    def cycle(self, catch_up: bool = False, once: bool = False) -> None:
        """Fetch, deploy what is new, run what is due, serve requests, publish records and status."""
        try:
            tip = self.peers.fetch()  # the flows tip, and every daemon's status
            self.recorder.sync(push=False)
            self.failures = 0
        except GitError as exc:
            self.failures += 1
            log.warning("cannot fetch from %s: %s", self.s.remote, exc.message)
            tip = self.deployer.current.sha if self.deployer.current else None
        if not self.others.cycle(not self.failures, tip):  # the layout, failover (daemon/failover.py)
            return  # a layout of the runs branch this version does not know: stopping
        if not self.peers.ready and not self.failures:  # before the first fire (daemon/peers.py)
            self.peers.introduce()
        if tip is None and self.deployer.current is None and not self.failures and not self.told_empty:
            self.told_empty = True  # said once: a daemon may be set up before the first push
            log.log(logging.WARNING if once else logging.INFO, "nothing is deployed on %s yet (it has no %s "
                    "branch): run `puppemon push` in your project; %s", self.s.remote, self.s.branch_flows,
                    "nothing to run" if once else "waiting for a deploy")
        resumed = self.controls.refresh(self.store.ref(self.recorder.ref))  # paused flows, before anything runs
        self.claims.cycle()  # claimed runs waiting for the flow's runs on other daemons
        if self.deployer.is_new(tip):
            self.deploy(tip, wait=once)
        if self.deployer.current is None and (last := self.deployer.last_good(tip)):
            log.info("the flows tip %s is not ready (refused, or still building): going on with %s, deployed "
                     "before", (tip or "")[:7], last[:7])
            self.deploy(last)
        if self.deployer.current is not None and catch_up:
            for source in self.sources:
                source.catch_up(self.deployer.current, once)
        if self.deployer.current is not None:
            for source in self.sources:
                source.cycle()  # what the runs tip shows is due (after: runs other daemons recorded)
        for pending in resumed:  # `resume --catch-up`: one run for the fires missed while paused
            self.submit(pending)
        try:
            self.requests.cycle()
        except PuppemonError as exc:
            log.warning("%s", exc.message)
        if self.failures == 0:
            self.upkeep.cycle()  # retention (--keep) and rotation of closed days into archive refs
        self.ledger.retry()  # records a full disk kept from the runs branch
        self.outbox.flush()

    def deploy(self, sha: str, wait: bool = False) -> None:
        """Swap in `sha` (or record why not), follow its schedule, and run what runs on a deploy."""
        from puppemon.project.triggers import describe

        starting = self.deployer.current is None
        resumed = starting and self.state.deployed() == sha
        previous = self.deployer.current
        try:
            deployment = self.deployer.deploy(sha, wait)
        except GitError as exc:
            log.warning("deploy %s: %s; trying again at the next fetch", sha[:7], exc.message)
            return
        except OSError as exc:  # its checkout, on a full disk
            log.warning("deploy %s: cannot check it out: %s; trying again at the next fetch", sha[:7],
                        disk_words(exc))
            return
        if deployment is None:
            return
        resumed = resumed or (starting and self._deployed_before(deployment))
        summary = {name: {"trigger": describe(flow)} for name, flow in deployment.manifest.flows.items()}
        self.placement.review(sha, deployment.manifest, summary, self.s.users)  # labels, OS users: noted only
        for source in self.sources:
            source.reconcile(deployment, summary)
        self.deployer.prune(self.queue.deploys_in_use())
        count = plural(len(deployment.manifest.flows), "flow")
        if resumed:
            log.info("resumed deploy %s (%s)", sha[:7], count)
            return
        self.state.set_deployed(sha)
        log.info("deployed %s (%s)%s", sha[:7], count, f", replacing {previous.sha[:7]}" if previous else "")
        self.ledger.deploy(sha, deployment.source_commit, {"status": "deployed", "flows": summary,
                                                           **self.deployer.environments_record(deployment)})
        for source in self.sources:
            source.deployed(deployment)

    def fire(self, flow: str, scheduled: datetime) -> None:
        """A clock trigger's fire time came (what APScheduler calls; callers may call it too)."""
        self.clock_source.fire(flow, scheduled)

    def submit(self, pending: Pending) -> str | None:
        """Queue a run of the current deploy (what every trigger source calls); its run id, or None
        (also when its flow is paused, or needs labels this daemon has not)."""
        if not self.placement.takes(pending.flow) or self.controls.hold(pending):
            return None
        return self.queue.submit(pending) if pending.fire is None else self.claims.submit(pending)

    # -- records -------------------------------------------------------------
    def _on_recorded(self, record: dict, log_bytes: bytes) -> None:
        self.notifier(record, log_bytes)
        self.requests.recorded(record["id"])
        for source in self.sources:
            source.recorded(record)  # after: a downstream flow starts now
        if self.listener is not None:
            self.listener.recorded(record)

    def _recover_crashed(self) -> None:
        """Record as crashed each run a previous daemon left in flight, and stop what is left of it."""
        if self.state.leftovers():
            self.live.forget()  # their live tails may still be on the remote
        recover_crashed(self.state, self.ledger, self.store, self.recorder.ref, self.secrets, self.clock,
                        self.backend_for, self._adopt)

    def backend_for(self, name: str):
        """The run backend called `name`, with this server's settings."""
        from puppemon.run import backends

        return self.backends.get(name) or backends.get(name)

    def _adopt(self, left) -> bool:
        """Follow on a run whose attempt outlived the previous daemon (a Slurm job); False: it is recorded crashed."""
        try:
            pending = adoption(left, self.backend_for(left.backend), self.deployer.of(left.context.flows_commit),
                               self.s.kill_grace)
        except PuppemonError as exc:   # (the backend is not known here, its scheduler does not answer)
            log.warning("%s: run %s cannot be followed again: %s", left.context.flow, left.context.run_id,
                        exc.message)
            return False
        if pending is not None:
            log.info("%s: run %s still runs (%s): following it again", pending.flow, pending.run_id, left.backend)
            self.queue.adopt(pending)
        return pending is not None

    def publish(self) -> None:
        count = self.recorder.unpublished()
        if count and self.others.publish():
            log.info("published %s to %s", plural(count, "record"), self.s.remote)
        self.heap.trim()

    # -- status --------------------------------------------------------------
    def status(self) -> dict:
        """The live state written to refs/puppemon/status/<name>."""
        current = self.deployer.current
        upcoming: dict[str, str | None] = {}
        for source in self.sources:
            upcoming.update(source.upcoming())
        paused = self.controls.summary()
        flows = {name: {"next": upcoming.get(name), **({"paused": paused[name]} if name in paused else {}),
                        **self.placement.status_of(flow)}
                 for name, flow in current.manifest.flows.items()} if current else {}
        return {
            "schema": 1, "name": self.s.name, "host": socket.gethostname(), "pid": os.getpid(),
            "version": __version__, "started": utc_iso(self.started), "heartbeat": utc_iso(self.clock()),
            "state": "stopped" if self.stopping else "running",
            "poll": self.s.poll, "once": self.s.once, "heartbeat_every": self.s.heartbeat,  # for gone_after()
            "labels": list(self.s.labels), "peers": self.peers.advertised(),
            "flows_commit": current.sha if current else None,
            "flows": flows,
            "in_flight": [in_flight_entry(a) for a in self.queue.in_flight()],  # what failover reads
            "unpublished": self.recorder.unpublished(),
        }

    def push_status(self, final: bool = False) -> None:
        self.peers.pushed(self.status_publisher.publish(self.status(), final))

    # -- what the HTTP hook may ask (httpd.Control) ----------------------------
    @property
    def flows_branch(self) -> str:
        return self.s.branch_flows

    def health(self) -> dict:
        current = self.deployer.current
        return {"name": self.s.name, "flows_commit": current.sha if current else None,
                "in_flight": len(self.queue.in_flight()), "state": "stopping" if self.stopping else "running"}

    def deployed_flows(self) -> tuple[str, list[str]] | None:
        current = self.deployer.current
        return (current.sha, list(current.manifest.flows)) if current else None

    def paused(self, flow: str) -> dict | None:
        return self.controls.paused(flow)

    def run_now(self, flow: str, params: dict, client: str) -> dict[str, str] | None:
        return self.requests.serve_http(flow, params, client)

    def not_here(self, flow: str) -> str | None:
        return self.placement.why_not(flow)

    def live_tail(self, run_id: str):
        return self.live.tail(run_id)

    def dashboard(self):
        """What the dashboard's pages read here: this daemon's mirror, its runs, its live tails."""
        from puppemon.web.reading import Sources

        return Sources(self.store, runs_ref=self.recorder.ref, live=self.live_tail)

    def dashboard_actions(self, hook):
        """The dashboard's actions, done by this daemon (daemon/dashboard.py)."""
        from puppemon.daemon.dashboard import DaemonActions

        return DaemonActions(hook, self)

    def fetch_now(self) -> None:
        self.wake.set()
