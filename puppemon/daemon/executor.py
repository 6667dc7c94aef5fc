"""One run in the daemon, from its slot to its record: journal, secrets, the runner, the record."""
from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Callable

from puppemon.daemon.journal import StateDir
from puppemon.daemon.ledger import Ledger
from puppemon.daemon.live import LiveLogs
from puppemon.daemon.queue import Active, Pending
from puppemon.daemon.settings import UserGrants
from puppemon.errors import PuppemonError
from puppemon.history.records import one_line
from puppemon.run.backend import Backend, Execution
from puppemon.run.environments import flow_api
from puppemon.run.users import OSUser, current_name, lookup
from puppemon.secrets import SecretStore, for_flow

log = logging.getLogger("puppemon")
NOTEWORTHY = ("failed", "timed_out", "crashed")   # logged at WARNING; the other outcomes at INFO


class RunExecutor:
    """Runs a Pending with the code of its deploy and records the outcome (called in the run's thread)."""

    def __init__(self, state: StateDir, ledger: Ledger, daemon: str, secrets: SecretStore | None,
                 kill_grace: float, clock: Callable[[], datetime], users: UserGrants | None = None,
                 max_pause: float | None = None, live: LiveLogs | None = None,
                 backends: dict[str, Backend] | None = None, envs_dir: Path | None = None) -> None:
        self.state, self.ledger, self.daemon, self.max_pause = state, ledger, daemon, max_pause
        self.secrets, self.kill_grace, self.clock = secrets, kill_grace, clock
        self.users = users or UserGrants({})
        self.live = live
        self.backends = backends or {}   # the container and slurm backends, with the server's settings
        self.envs_dir = envs_dir or state.envs_dir   # where the environments are (the flow API beside them)

    def __call__(self, p: Pending, active: Active) -> None:
        from puppemon.run.runner import execute, resume

        deployment = p.deployment
        flow = deployment.manifest.flows[p.flow]
        adopted = p.adopted
        ctx = adopted.context if adopted else p.context(self.daemon)
        active.started = started = adopted.started if adopted else self.clock()
        spec, ctx = self._spec(p, flow, ctx)
        if adopted is None:   # an adopted run's entry (and handle) is in the journal already
            self.state.journal(ctx, started, getattr(spec.backend, "name", spec.backend))
        log.info("%s: %s run %s (%s)", p.flow, "re-attached to" if adopted else "started", p.run_id,
                 p.trigger.get("kind"))
        try:
            spec.secrets = for_flow(self.secrets, flow.name, flow.secrets)
            spec.user = self._user(flow)
        except PuppemonError as exc:
            record = self.ledger.synthetic(ctx, "failed", exc.message, started, self.clock())
        else:
            active.pause.limit = self.max_pause
            output = self.live.open(p.run_id, p.flow, started, spec.secrets, spec.log_limit) if self.live else None
            steer = dict(cancel=active.cancel, pause=active.pause, on_start=lambda _n, ex: self._started(active, ex),
                         on_output=output.write if output else None)
            try:
                result = resume(spec, adopted.execution, started, **steer) \
                    if adopted else execute(spec, **steer)
            finally:
                if self.live:
                    self.live.close(p.run_id)
            record = self.ledger.run(ctx, result)
        # the Ledger drops the journal entry once the record is committed (a full disk can delay it)
        if record["status"] in NOTEWORTHY:   # at WARNING, with the reason: `journalctl -p warning` finds it
            log.warning("%s: %s in %.1fs (run %s): %s", p.flow, record["status"], record["duration"], p.run_id,
                        one_line(record.get("error") or f"exit code {record.get('exit_code')}", 300))
        else:
            log.info("%s: %s in %.1fs (run %s)", p.flow, record["status"], record["duration"], p.run_id)

    def _spec(self, p: Pending, flow, ctx):
        """The run's RunSpec (its backend, environment, image), and its context with its environment."""
        from puppemon.run.spec import RunSpec

        deployment = p.deployment
        spec = RunSpec(run_id=p.run_id, flow=flow, code_dir=deployment.directory, params=p.params,
                       flows_commit=deployment.sha, variables=deployment.manifest.variables,
                       grace=self.kill_grace, trigger=p.trigger, scheduled=p.scheduled,
                       trigger_data=p.trigger_data)
        environment = deployment.environments.get(flow.name)
        if environment is not None:  # built at deploy time (daemon/deployer.py)
            spec.environment, spec.flow_api = environment, flow_api(self.envs_dir)
            ctx = replace(ctx, environment=environment.record())
        if flow.container is not None:   # in the image the deploy pulled or built; none of the daemon's env
            spec.flow = replace(flow, container=replace(flow.container, image=deployment.images.get(flow.name),
                                                        build=None))
            spec.backend, spec.base_env = self.backends.get("container", "container"), {}
        elif flow.slurm is not None:
            spec.backend = self.backends.get("slurm", "slurm")
        return spec, ctx

    def _user(self, flow) -> OSUser | None:
        """The OS user `flow` runs as (None: the daemon's own); PuppemonError when the config does not allow it."""
        refusal = self.users.refusal(flow.name, flow.user)
        if refusal:
            raise PuppemonError(refusal)
        return lookup(flow.user) if flow.user and flow.user != current_name() else None

    def _started(self, active: Active, execution: Execution) -> None:
        active.execution = execution
        self.state.journal_handle(active.run_id, execution.handle())
