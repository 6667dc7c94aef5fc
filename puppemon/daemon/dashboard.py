"""The actions of a daemon's dashboard (`--listen`, web/app.py), done here, in-process: a run started
through the HTTP hook's checks, a cancel or a freeze of a run in flight here, a flow's pause or resume
committed on the runs branch like any record (every daemon reads it from there)."""
from __future__ import annotations

from puppemon.errors import PuppemonError
from puppemon.history.control import flow_state, message, path, read_states
from puppemon.history.records import dump_json


class DaemonActions:
    """web.app.Actions for the daemon `daemon` (daemon/loop.py), whose hook checks a run as
    `POST /flows/<name>/runs` does."""

    def __init__(self, hook, daemon) -> None:
        self.hook, self.daemon = hook, daemon
        self.by = f"dashboard on {daemon.s.name}"

    def run(self, flow: str, params: dict) -> dict:
        code, answer = self.hook.run_flow(flow, {"params": params}, "dashboard")
        if code != 202:
            raise PuppemonError(answer.get("error", f"refused ({code})"))
        return answer

    def cancel(self, run_id: str) -> dict:
        outcome, withdrawn = self.daemon.queue.cancel(run_id)
        if withdrawn is not None:
            self.daemon.ledger.synthetic(withdrawn.context(self.daemon.s.name), "cancelled",
                                         f"withdrawn before it started (by {self.by})")
            self.daemon.outbox.soon()
        if outcome is None:
            raise PuppemonError(f"run {run_id} is not queued or in flight on this daemon: `puppemon cancel "
                                f"{run_id}` asks every daemon")
        return {"action": "cancel", "run_id": run_id, "message": outcome}

    def pause_run(self, run_id: str) -> dict:
        outcome = self.daemon.queue.pause(run_id, True)
        if outcome is None:
            raise PuppemonError(f"run {run_id} is not in flight on this daemon")
        return {"action": "pause", "run_id": run_id, "message": outcome}

    def _control(self, flow: str, paused: bool, reason: str | None) -> dict:
        daemon = self.daemon
        current = read_states(daemon.store, daemon.store.ref(daemon.recorder.ref)).get(flow)
        if bool(current and current["paused"]) == paused:
            return {"action": "pause" if paused else "resume", "written": [], "message": "unchanged"}
        state = flow_state(flow, paused, self.by, daemon.clock(), reason)
        daemon.ledger.add({path(flow): dump_json(state)}, message([state]))
        for pending in daemon.controls.refresh(daemon.store.ref(daemon.recorder.ref)):   # held here at once
            daemon.submit(pending)   # (a catch-up another resume asked for since the cycle's read)
        daemon.outbox.soon()
        return {"action": "pause" if paused else "resume", "written": [state],
                "message": f"{'paused' if paused else 'resumed'} {flow}"}

    def pause(self, flow: str, reason: str | None) -> dict:
        return self._control(flow, True, reason)

    def resume(self, flow: str) -> dict:
        return self._control(flow, False, None)
