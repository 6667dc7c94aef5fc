"""What a daemon does at start for the runs a previous daemon left in flight (its journal says which):
stop what is left of each, record it `crashed` with the output it had written, forget it; or, where
the run's backend outlives its daemon (a Slurm job), follow it on to its true end (`adoption`)."""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Callable

from puppemon.daemon.journal import Leftover, StateDir
from puppemon.daemon.queue import Adopted, Pending
from puppemon.daemon.ledger import Ledger
from puppemon.errors import PuppemonError
from puppemon.gitstore import Store
from puppemon.history.records import is_recorded
from puppemon.run.workspace import remove_areas

log = logging.getLogger("puppemon")


def recover_crashed(state: StateDir, ledger: Ledger, store: Store, ref: str, secrets,
                    clock: Callable[[], datetime], backend_for: Callable | None = None,
                    adopt: Callable[[Leftover], bool] = lambda _left: False) -> None:
    """Record as crashed each run left in flight (unless its record is committed or waiting already, or
    `adopt` takes it on), and stop what is left of it (the backend that ran it knows how, from the journal's
    handle; `backend_for(name)`, by default the registry's)."""
    from puppemon.run import backends

    for left in state.leftovers():
        ctx = left.context
        if ledger.waiting(ctx.run_id):
            continue  # it finished: its true record, kept in the journal (a full disk), goes out
        recorded = is_recorded(store, store.ref(ref), ctx.run_id, ctx.flow)   # on the tip, or rotated out
        if left.handle and not recorded and adopt(left):
            continue  # it goes on (a Slurm job): followed again, recorded when it ends
        try:
            killed = (backend_for or backends.get)(left.backend).recover(left.handle) if left.handle else None
        except PuppemonError as exc:
            killed = None
            log.warning("%s: run %s: %s", ctx.flow, ctx.run_id, exc.message)
        remove_areas(ctx.run_id)  # its copy of the code, TMPDIR and outputs, in the temp directory
        if not recorded:
            error = "the daemon stopped while this run was in flight" + (f"; {killed}" if killed else "")
            # which secrets the run had is not known any more: every one this daemon holds
            output = state.captured(ctx.run_id, secrets.everything() if secrets else {})
            ledger.synthetic(ctx, "crashed", error, left.started or clock(), clock(), output)
            log.warning("%s: run %s recorded as crashed: %s", ctx.flow, ctx.run_id, error)
        if not ledger.waiting(ctx.run_id):
            state.unjournal(ctx.run_id)


def adoption(left: Leftover, backend, deployment, grace: float) -> Pending | None:
    """The run to follow on for `left`, when its backend re-attaches to what it left running (`reattach`, a
    Slurm job) and its deploy is known; None when it cannot (it is then recorded crashed)."""
    reattach = getattr(backend, "reattach", None)
    ctx = left.context
    if reattach is None or deployment is None or ctx.flow not in deployment.manifest.flows:
        return None
    execution = reattach(left.handle, grace)
    if execution is None:
        return None
    return Pending(ctx.flow, ctx.trigger, ctx.scheduled, ctx.params, ctx.request, ctx.run_id, deployment,
                   adopted=Adopted(execution, left.started or datetime.now(timezone.utc), ctx))
