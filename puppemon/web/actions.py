"""A local `puppemon ui`'s actions: requests and control state written through git, as `trigger`,
`cancel` and `pause` write them (history/requests.py, history/control.py), as the clone's user."""
from __future__ import annotations

from datetime import datetime, timezone

from puppemon.errors import PuppemonError
from puppemon.formats import RUN_ID, is_flow_name


class GitActions:
    """Run, cancel and pause by writing to the remote's runs branch from the clone at `store`."""

    def __init__(self, store, remote: str, refresh=None) -> None:
        self.store, self.remote = store, remote
        self.refresh = refresh or (lambda: None)   # fetch at once after a change

    def _by(self) -> str:
        from puppemon.project.snapshot import user_at_host

        return user_at_host()

    def run(self, flow: str, params: dict) -> dict:
        from puppemon.history.requests import MAX_DEPTH, nesting, run_request, send

        if not is_flow_name(flow):
            raise PuppemonError(f"{flow!r} is not a flow name")
        if nesting(params) > MAX_DEPTH:
            raise PuppemonError(f"params nest deeper than {MAX_DEPTH} levels")
        body = run_request(flow, params, self._by(), datetime.now(timezone.utc))
        send(self.store, self.remote, body)
        self.refresh()
        return {"id": body["id"], "flow": flow, "params": params, "by": body["by"], "time": body["time"],
                "remote": self.remote}

    def _about_run(self, run_id: str, kind: str) -> dict:
        from puppemon.history.requests import cancel_request, send

        if not RUN_ID.match(run_id):
            raise PuppemonError(f"{run_id!r} is not a run id")
        body = cancel_request(run_id, self._by(), datetime.now(timezone.utc), kind=kind)
        send(self.store, self.remote, body)
        self.refresh()
        return {"action": kind, "run_id": run_id, "request": body["id"], "message": f"{kind} requested"}

    def cancel(self, run_id: str) -> dict:
        return self._about_run(run_id, "cancel")

    def pause_run(self, run_id: str) -> dict:
        return self._about_run(run_id, "pause")

    def _control(self, flow: str, pause: bool, reason: str | None) -> dict:
        from puppemon.history.control import flow_state, write

        if not is_flow_name(flow):
            raise PuppemonError(f"{flow!r} is not a flow name")
        by, now = self._by(), datetime.now(timezone.utc)

        def change(current: dict) -> list[dict]:
            state = current.get(flow)
            return [] if bool(state and state["paused"]) == pause else [flow_state(flow, pause, by, now, reason)]

        written = write(self.store, self.remote, change)
        self.refresh()
        verb = "pause" if pause else "resume"
        return {"action": verb, "written": written, "message": f"{verb}d {flow}" if written else "unchanged"}

    def pause(self, flow: str, reason: str | None) -> dict:
        return self._control(flow, True, reason)

    def resume(self, flow: str) -> dict:
        return self._control(flow, False, None)
