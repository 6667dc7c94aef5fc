"""Which flows this daemon takes: its `--labels` against each flow's `runs_on` (history/placement.py).

A flow it cannot take is not run here, whatever asks for it (a fire, a catch-up, a
deploy, a request: `Daemon.submit` and the request server ask `takes`), its
environment is not built here, and the server-side checks of this daemon (an OS
user, ...) do not apply to it: the deploy record notes it (`taken_here: false` and
why) and the deploy goes on. A flow that neither this daemon nor any live daemon it
sees in the status refs can take is logged at WARNING at each deploy.
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Callable

from puppemon.formats import plural
from puppemon.gitstore import Store
from puppemon.history.placement import can_take

log = logging.getLogger("puppemon")


def needs(runs_on) -> str:
    """`needs labels gpu, eu`: what a flow asks of a daemon."""
    return f"needs labels {', '.join(runs_on)}"


class Placement:
    """This daemon's labels, and what they mean for the flows of a deploy."""

    def __init__(self, labels: tuple[str, ...], name: str, current: Callable, store: Store | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.labels, self.name, self.current = tuple(labels), name, current
        self.store, self.clock = store, clock

    @classmethod
    def of(cls, settings, current: Callable, store: Store, clock: Callable[[], datetime]) -> Placement:
        """The placement of the daemon with `settings` (daemon/settings.py)."""
        return cls(settings.labels, settings.name, current, store, clock)

    def can(self, flow) -> bool:
        """Whether this daemon may take `flow` (a manifest Flow)."""
        return can_take(self.labels, flow.runs_on)

    def takes(self, name: str, deployment=None) -> bool:
        """Whether this daemon takes flow `name` of `deployment` (default: the current one); a flow the
        deploy does not have is taken (whoever serves it records that it is not there)."""
        deployment = deployment if deployment is not None else self.current()
        flow = deployment.manifest.flows.get(name) if deployment is not None else None
        return flow is None or self.can(flow)

    def why_not(self, name: str) -> str | None:
        """Why this daemon does not take flow `name` of the current deploy (None when it does)."""
        deployment = self.current()
        flow = deployment.manifest.flows.get(name) if deployment is not None else None
        if flow is None or self.can(flow):
            return None
        has = f"this daemon ({self.name}) has {', '.join(self.labels)}" if self.labels else \
            f"this daemon ({self.name}) has none"
        return f"flow {name!r} {needs(flow.runs_on)}; {has}: another daemon with them takes it"

    def status_of(self, flow) -> dict:
        """What the status ref says of `flow` beyond its next fire time: its runs_on, and no next time
        when this daemon does not take it."""
        extra: dict = {"runs_on": list(flow.runs_on)} if flow.runs_on else {}
        return extra if self.can(flow) else {**extra, "next": None, "taken_here": False}

    def review(self, sha: str, manifest, summary: dict[str, dict], users) -> None:
        """At a deploy: note in `summary` (the deploy record's flows) each flow this daemon does not take,
        and the server-side checks that fail for those it does (never a reason to refuse the deploy);
        warn of the flows no daemon can take."""
        unserved = {}
        for name, flow in manifest.flows.items():
            if not self.can(flow):
                summary[name].update({"taken_here": False, "why": needs(flow.runs_on)})
                unserved[name] = flow
                continue
            note = users.refusal(name, flow.user)
            if note:  # a flow this daemon cannot serve as asked
                log.warning("deploy %s: %s", sha[:7], note)
                summary[name]["note"] = note
        if not unserved:
            return
        peers = self._peers()
        for name, flow in unserved.items():
            takers = sorted(peer for peer, labels in peers if can_take(labels, flow.runs_on))
            if takers:
                log.info("deploy %s: flow %s %s: left to %s", sha[:7], name, needs(flow.runs_on), ", ".join(takers))
            else:
                log.warning("deploy %s: flow %s %s: no daemon here has them (this daemon has %s; %s)", sha[:7],
                            name, needs(flow.runs_on), ", ".join(self.labels) or "none",
                            f"{plural(len(peers), 'other live daemon')} seen" if peers else "no other live daemon seen")

    def _peers(self) -> list[tuple[str, tuple[str, ...]]]:
        """(name, labels) of the other live daemons, from the status refs the cycle fetched with the flows
        tip (daemon/peers.py) just before this deploy."""
        if self.store is None or self.clock is None:
            return []
        from puppemon.history.status import heartbeating, labels_of

        return [(str(s.get("name")), labels_of(s)) for s in heartbeating(self.store, self.clock())
                if s.get("name") != self.name]
