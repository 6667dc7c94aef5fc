"""The daemon side of trigger kinds: event sources that hear when a flow is due and submit its run.

Each source serves the trigger kinds (project/triggers.py KINDS) registered to
it in SOURCES: the clock (APScheduler) fires cron and interval triggers and
catches up what a stopped daemon missed; the deploy source runs the flows that
ask for it whenever a new flows commit is deployed; the watch source (daemon/watch.py) runs the
files that land in watched directories; the chain source (daemon/chains.py) runs the flows
`after:` another when its runs end. Each fire carries its claim key
(daemon/claims.py), which decides which daemon runs it when several could. Runs asked
for by people come through the request server instead (daemon/request_server.py).

Adding a kind that the daemon must listen for: one Source class (here or in its
own module) and its line in SOURCES.
"""
from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from typing import Callable

from puppemon.daemon.chains import ChainSource
from puppemon.daemon.deployer import Deployment
from puppemon.daemon.queue import Pending
from puppemon.daemon.source import Source, SourceContext
from puppemon.daemon.watch import WatchSource
from puppemon.formats import fire_key, plural, utc_iso

log = logging.getLogger("puppemon")

CATCHUP_ALL_CAP = 20


class ClockSource(Source):
    """Cron and interval triggers, through an APScheduler BackgroundScheduler; fire times in fires.json."""

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.scheduler = None
        self.fires: dict[str, datetime] = ctx.state.last_fires()
        self.caught_up: Deployment | None = None    # without a scheduler (--once): what next times come from

    def start(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        self.scheduler = BackgroundScheduler(
            timezone=timezone.utc, executors={"default": EnqueueExecutor(self.fire)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None})
        self.scheduler.start()

    def fire(self, flow: str, scheduled: datetime) -> None:
        """A fire time came: note it and submit a run (in the scheduler's thread; never blocks long)."""
        self.fires[flow] = scheduled
        self.ctx.submit(Pending(flow, {"kind": "schedule"}, scheduled=scheduled, skippable=True,
                                fire=(scheduled, fire_key(scheduled))))
        self.ctx.state.save_fires(self.fires)  # after the run is on its way: the fsync is not on its path

    def reconcile(self, deployment: Deployment, summary: dict[str, dict]) -> None:
        """Add, change and remove scheduler jobs so they match the deploy's manifest."""
        from puppemon.project.triggers import describe, flow_trigger

        if self.scheduler is None:
            return
        existing = {job.id: job for job in self.scheduler.get_jobs()}
        for name, flow in deployment.manifest.flows.items():
            trigger, key = flow_trigger(flow), describe(flow)
            job = existing.pop(name, None)
            if trigger is None:
                if job is not None:
                    job.remove()
                summary[name]["next"] = None
                continue
            if job is None or job.name != key:
                if job is not None:
                    job.remove()
                job = self.scheduler.add_job(_no_op, trigger, id=name, name=key)
                log.info("scheduled %s: %s, next %s", name, key, utc_iso(job.next_run_time))
            summary[name]["next"] = utc_iso(job.next_run_time)
        for name, job in existing.items():
            job.remove()
            log.info("unscheduled %s (no longer in the manifest)", name)

    def deployed(self, deployment: Deployment) -> None:
        pass

    def catch_up(self, deployment: Deployment, once: bool) -> None:
        """Runs for fire times missed while no daemon was running, by each flow's catch-up policy."""
        from puppemon.project.triggers import fire_times

        if once:
            return self._catch_up_once(deployment)
        now = self.ctx.clock()
        self.caught_up = deployment
        for name, flow in deployment.manifest.flows.items():
            last = self.fires.get(name)
            if last is None or flow.catchup == "none":
                self.fires[name] = now  # a baseline: nothing before this daemon knew the flow is "missed"
                continue
            missed = fire_times(flow, last, now, CATCHUP_ALL_CAP + 1)
            if missed:
                self._submit_missed(name, flow, missed, len(missed) > CATCHUP_ALL_CAP, now)
            self.fires[name] = now
        self.ctx.state.save_fires(self.fires)

    def _catch_up_once(self, deployment: Deployment) -> None:
        """`--once`, whose state directory may be thrown away after each start (a scheduled CI job): fires
        count from each flow's last fire on the runs branch, or, for a flow that never fired, from the
        flows commit's time. A fire at most `misfire_grace` old is due now; older ones are missed and
        follow `catchup` (none: not run; latest: the newest; all: each, up to CATCHUP_ALL_CAP)."""
        from puppemon.history.baseline import newest_fires

        now = self.ctx.clock()
        self.caught_up = deployment
        flows = deployment.manifest.flows
        last = self.ctx.last_fires(sorted(flows))
        for name, flow in flows.items():
            since = last.get(name) or deployment.committed
            if since < now:
                fires, more = newest_fires(flow, since, now, CATCHUP_ALL_CAP)
                due = [t for t in fires[-1:] if (now - t).total_seconds() <= self.ctx.misfire_grace]
                missed = [t for t in fires if t not in due]
                if flow.catchup == "none":
                    if missed:
                        log.info("%s: %s%s not run (catchup: none)", name, plural(len(missed), "missed fire"),
                                 " and older ones" if more else "")
                    fires = due
                if fires:
                    self._submit_missed(name, flow, fires, more, now, due)
            self.fires[name] = now
        self.ctx.state.save_fires(self.fires)

    def _submit_missed(self, name: str, flow, missed: list[datetime], more: bool, now: datetime,
                       due: list[datetime] = ()) -> None:
        """Submit the runs `flow.catchup` picks of the fire times `missed` (earliest first; `more`: there
        were older ones too); a time in `due` is no catch-up but the fire due now."""
        if flow.catchup == "all":
            if more or len(missed) > CATCHUP_ALL_CAP:
                log.warning("%s missed more than %d fire times; catching up the last %d only",
                            name, CATCHUP_ALL_CAP, CATCHUP_ALL_CAP)
            chosen = missed[-CATCHUP_ALL_CAP:]
        else:
            chosen = missed[-1:]
        caught = [t for t in chosen if t not in due]
        if caught:
            log.info("%s: catching up %s (catchup: %s)", name, plural(len(caught), "missed run"), flow.catchup)
        for moment in chosen:
            kind = "schedule" if moment in due else "catchup"
            self.ctx.submit(Pending(name, {"kind": kind}, scheduled=moment, skippable=True,
                                    fire=(moment, fire_key(moment))))

    def upcoming(self) -> dict[str, str | None]:
        if self.scheduler is None:
            return self._unscheduled()
        return {job.id: utc_iso(job.next_run_time) if job.next_run_time else None
                for job in self.scheduler.get_jobs()}

    def _unscheduled(self) -> dict[str, str | None]:
        """Without a scheduler (--once): the fire time each flow is due next, counted from its last one
        (what the next `--once` start will catch up), so `status` can say when to start it again."""
        from datetime import timedelta

        from puppemon.project.triggers import fire_times

        if self.caught_up is None:
            return {}
        now, found = self.ctx.clock(), {}
        for name, flow in self.caught_up.manifest.flows.items():
            times = fire_times(flow, self.fires.get(name, now), now + timedelta(days=400), 1)
            if times:
                found[name] = utc_iso(times[0])
        return found

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)


class DeploySource(Source):
    """`run_on_deploy: true`: a run whenever a new flows commit is deployed (not when a restart resumes one)."""

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx

    def deployed(self, deployment: Deployment) -> None:
        for flow in deployment.manifest.flows.values():
            if flow.trigger("deploy") is not None:
                # one claim per flows commit, filed under the day it was committed (the same on every daemon)
                self.ctx.submit(Pending(flow.name, {"kind": "deploy", "by": deployment.sha[:7]},
                                        fire=(deployment.committed, f"deploy-{deployment.sha}")))


# The registry: trigger kind -> the source that serves it (one instance per class).
SOURCES: dict[str, type] = {
    "cron": ClockSource,
    "interval": ClockSource,
    "deploy": DeploySource,
    "file": WatchSource,
    "after": ChainSource,
}


def _no_op() -> None:
    """Jobs carry no callable of their own: EnqueueExecutor routes them to ClockSource.fire."""


def EnqueueExecutor(fire: Callable[[str, datetime], None]):  # noqa: N802 - builds a class lazily
    """An APScheduler executor that hands each due job straight to `fire` with its scheduled time.

    APScheduler 3 does not pass the scheduled time to a job; this executor gets it
    (for `run.json` and lateness) and avoids a thread hop: `fire` only enqueues.
    """
    from apscheduler.executors.base import BaseExecutor

    class Executor(BaseExecutor):
        def _do_submit_job(self, job, run_times):
            try:
                fire(job.id, run_times[-1])
            except BaseException:
                self._run_job_error(job.id, *sys.exc_info()[1:])
            else:
                self._run_job_success(job.id, [])

    return Executor()
