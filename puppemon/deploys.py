"""The daemon's deploys: validate, check out read-only, swap in, reconcile the scheduler, catch up."""
from __future__ import annotations

import logging
import os
import shutil
import socket
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from puppemon.records import dated_path, dump_json, trailers, utc_iso

log = logging.getLogger("puppemon")

CATCHUP_ALL_CAP = 20
KEEP_DEPLOYS = 3


@dataclass
class Deployment:
    sha: str
    directory: Path
    manifest: Any
    source_commit: str


@dataclass
class Pending:
    flow: str
    trigger: dict
    scheduled: datetime | None = None
    params: dict = field(default_factory=dict)
    request: str | None = None
    run_id: str | None = None
    deployment: Deployment | None = None  # set on submit: a run uses the deploy it was scheduled on



class DeployMixin:
    """The deploy half of Daemon (puppemon/daemon.py): it uses the daemon's store, state,
    recorder, scheduler, current deployment and submit()."""

    def deploy(self, sha: str) -> None:
        """Validate, check out, swap in and schedule `sha`; a restart on the same sha only reschedules."""
        from puppemon.manifest import MANIFEST_NAME, ManifestError, parse

        resumed = self.current is None and self.state.deployed() == sha

        commit = self.store.get_commit(sha)
        source = trailers(commit.message).get("Puppemon-Source-Commit", "")
        try:
            data = self.store.read(sha, MANIFEST_NAME)
            if data is None:
                raise ManifestError(f"{MANIFEST_NAME}: not found at the root of the flows commit")
            manifest = parse(data, MANIFEST_NAME)
        except ManifestError as exc:
            self.refused.add(sha)
            log.error("deploy %s refused: %s", sha[:7], exc.message)
            self._record_deploy(sha, source, {"status": "refused", "error": exc.message})
            return
        directory = self.state.deploys_dir / sha
        if not directory.exists():
            tmp = self.state.deploys_dir / f".{sha}.tmp"
            if tmp.exists():  # left by a crash mid-checkout
                set_writable(tmp, True)
                shutil.rmtree(tmp)
            self.store.checkout(sha, tmp)
            set_writable(tmp, False)  # `workdir: shared` runs in here: no run may change the deploy
            os.replace(tmp, directory)
        previous = self.current
        deployment = Deployment(sha, directory, manifest, source)
        with self.lock:
            self.current = deployment  # runs in flight keep the Deployment they started with
        scheduled = self._reconcile(manifest)
        self._prune_deploys()
        if resumed:
            log.info("resumed deploy %s (%d flows)", sha[:7], len(manifest.flows))
            return
        self.state.set_deployed(sha)
        log.info("deployed %s (%d flows)%s", sha[:7], len(manifest.flows),
                 f", replacing {previous.sha[:7]}" if previous else "")
        self._record_deploy(sha, source, {"status": "deployed", "flows": scheduled})
        for flow in manifest.flows.values():
            if flow.run_on_deploy:
                self.submit(Pending(flow.name, {"kind": "deploy", "by": sha[:7]}))

    def _record_deploy(self, sha: str, source: str, outcome: dict) -> None:
        now = self.clock()
        body = {"schema": 1, "flows_commit": sha, "source_commit": source, "daemon": self.s.name,
                "host": socket.gethostname(), "time": utc_iso(now), **outcome}
        path = dated_path("deploys", now, f"{sha}-{self.s.name}.json")  # one per daemon: never collide
        subject = (f"deploy {sha[:7]}: {outcome['status']}"
                   + (f" ({len(outcome.get('flows', {}))} flows)" if outcome["status"] == "deployed" else ""))
        self.recorder.add({path: dump_json(body)}, f"{subject}\n\nPuppemon-Deploy: {sha}\n"
                                                    f"Puppemon-Deploy-Status: {outcome['status']}\n")

    def _reconcile(self, manifest) -> dict[str, dict]:
        """Add, change and remove scheduler jobs so they match `manifest`."""
        from puppemon.schedule import describe, flow_trigger

        summary = {}
        if self.scheduler is None:
            return {name: {"trigger": describe(f)} for name, f in manifest.flows.items()}
        existing = {job.id: job for job in self.scheduler.get_jobs()}
        for name, flow in manifest.flows.items():
            trigger = flow_trigger(flow)
            key = describe(flow)
            job = existing.pop(name, None)
            if trigger is None:
                if job is not None:
                    job.remove()
                summary[name] = {"trigger": key, "next": None}
                continue
            if job is None or job.name != key:
                if job is not None:
                    job.remove()
                job = self.scheduler.add_job(_no_op, trigger, id=name, name=key)
                log.info("scheduled %s: %s, next %s", name, key, utc_iso(job.next_run_time))
            summary[name] = {"trigger": key, "next": utc_iso(job.next_run_time)}
        for name, job in existing.items():
            job.remove()
            log.info("unscheduled %s (no longer in the manifest)", name)
        return summary

    def _prune_deploys(self) -> None:
        with self.lock:
            in_use = ({a.deployment.sha for a in self.active.values()} | {self.current.sha}
                      | {p.deployment.sha for p in self.pending if p.deployment is not None})
        dirs = sorted((d for d in self.state.deploys_dir.iterdir() if not d.name.startswith(".")),
                      key=lambda d: d.stat().st_mtime, reverse=True)
        for d in dirs[KEEP_DEPLOYS:]:
            if d.name not in in_use:
                set_writable(d, True)
                shutil.rmtree(d, ignore_errors=True)

    # -- scheduling ----------------------------------------------------------
    def _fire(self, flow_name: str, scheduled: datetime) -> None:
        """A fire time came: note it and enqueue a run (called in the scheduler's thread; never blocks)."""
        self.fires[flow_name] = scheduled
        self.submit(Pending(flow_name, {"kind": "schedule"}, scheduled=scheduled))
        self.state.save_fires(self.fires)  # after the run is on its way: the fsync is not on its path

    def catch_up(self, once: bool = False) -> None:
        """Runs for fire times missed while no daemon was running, by each flow's catch-up policy."""
        from puppemon.schedule import fire_times

        now = self.clock()
        for name, flow in self.current.manifest.flows.items():
            last = self.fires.get(name)
            if last is None:
                self.fires[name] = now  # a baseline: nothing before this daemon knew the flow is "missed"
                continue
            policy = flow.catchup
            if policy == "none" and not once:
                self.fires[name] = now
                continue
            missed = fire_times(flow, last, now, CATCHUP_ALL_CAP + 1)
            if not missed:
                continue
            if policy == "all":
                if len(missed) > CATCHUP_ALL_CAP:
                    log.warning("%s missed more than %d fire times; catching up the last %d only",
                                name, CATCHUP_ALL_CAP, CATCHUP_ALL_CAP)
                chosen = missed[-CATCHUP_ALL_CAP:]
            else:
                chosen = missed[-1:]
            log.info("%s: catching up %d missed run%s (catchup: %s)", name, len(chosen),
                     "s" if len(chosen) != 1 else "", policy)
            for moment in chosen:
                self.submit(Pending(name, {"kind": "catchup" if not once else "schedule"}, scheduled=moment))
            self.fires[name] = now
        self.state.save_fires(self.fires)


def set_writable(root: Path, writable: bool) -> None:
    """Add or remove every write bit below `root` (symlinks untouched)."""
    import stat

    for directory, dirs, files in os.walk(root):
        for path in [directory, *(os.path.join(directory, n) for n in (*dirs, *files))]:
            if os.path.islink(path):
                continue
            mode = stat.S_IMODE(os.lstat(path).st_mode)
            os.chmod(path, (mode | stat.S_IWUSR) if writable else (mode & ~0o222))


def _no_op() -> None:
    """Jobs carry no callable of their own: EnqueueExecutor routes them to Daemon._fire."""


def EnqueueExecutor(fire: Callable[[str, datetime], None]):  # noqa: N802 - builds a class lazily
    """An APScheduler executor that hands each due job straight to `fire` with its scheduled time.

    APScheduler 3 does not pass the scheduled time to a job; this executor gets it
    (for `run.json` and lateness) and avoids a thread hop: `fire` only enqueues.
    """
    import sys

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
