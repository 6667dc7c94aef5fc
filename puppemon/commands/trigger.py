"""`puppemon trigger FLOW`: ask the daemon for a run through a request on the runs branch."""
from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from typing import Callable, Iterable

from puppemon.errors import PuppemonError


class WaitTimeout(PuppemonError):
    exit_code = 2


def main(flow: str, pairs: Iterable[str] = (), params_json: str | None = None, remote: str | None = None,
         wait: bool = False, timeout: str | None = None, directory: str = ".", as_json: bool = False) -> int:
    """Write the request, print its id (the run's); with `wait`, follow the run and exit with its exit code.
    `as_json` prints {"id", "flow", "params", "by", "time", "remote"} instead of the id."""
    from puppemon.commands.common import parse_params
    from puppemon.commands.reading import forget
    from puppemon.formats import FLOW_NAME_RE, option_seconds
    from puppemon.gitstore import Store
    from puppemon.history.requests import run_request, send
    from puppemon.gitstore.transport import resolve_remote
    from puppemon.project.snapshot import user_at_host

    if not FLOW_NAME_RE.match(flow):
        raise PuppemonError(f"{flow!r} is not a flow name (lower-case letters, digits, '-' and '_')")
    if as_json and wait:
        raise PuppemonError("--json cannot be combined with --wait; trigger --json, then `puppemon logs ID`")
    limit = option_seconds(timeout, "--timeout") if timeout is not None else None
    params = parse_params(pairs, params_json)
    store = Store.discover(directory)
    remote = resolve_remote(store, remote)
    check_deployed(store, remote, flow, params)
    body = run_request(flow, params, user_at_host(), datetime.now(timezone.utc))
    forget(store.git_dir)   # the next `runs` or `logs` here fetches what this request leads to
    send(store, remote, body)
    if as_json:
        import json

        shown = {k: body[k] for k in ("id", "flow", "params", "by", "time")}
        print(json.dumps({**shown, "remote": remote}, indent=2, ensure_ascii=False), flush=True)
        return 0
    print(body["id"], flush=True)
    if not wait:
        return 0
    return follow(store, remote, body["id"], limit)


def check_deployed(store, remote: str, flow: str, params: dict | None = None, branch: str = "flows") -> None:
    """Refuse a request that no daemon could serve: nothing deployed, no such flow in the deploy, or
    a param its function does not take."""
    from puppemon.commands.common import fetch_deployed
    from puppemon.project.entrypoints import check_request, tree_reader
    from puppemon.project.manifest import MANIFEST_NAME, ManifestError, parse

    tip, data = fetch_deployed(store, remote, branch)   # the objects stay: the deployed code is read below
    if tip is None:
        raise PuppemonError(f"nothing is deployed on {remote} yet: run `puppemon push` first")
    try:
        flows = parse(data or b"", MANIFEST_NAME).flows
    except ManifestError:
        return  # a deploy the daemon refuses: let it record why
    check_request(flows, flow, params or {}, tree_reader(store, tip), tip, f"{branch} {tip[:7]} on {remote}")


def follow(store, remote: str, request_id: str, limit: float | None, branch: str = "runs",
           clock: Callable[[], float] = time.monotonic, say: Callable[[str], None] | None = None) -> int:
    """Follow the run `request_id` asks for, its output as it comes, to its record; its exit code.

    Ctrl-C stops following only (the request stays queued, the run goes on): exit 130."""
    from puppemon.commands.common import write_bytes
    from puppemon.history.follow import Follower, sleep_until_next

    say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
    follower = Follower(store, remote, write_bytes, say, branch)
    deadline = None if limit is None else clock() + limit
    waiting = _Waiting(request_id, clock() + NO_DAEMON_AFTER)
    say(f"waiting for a daemon to take request {request_id} ...")
    try:
        while True:
            polled = clock()
            tip = follower.fetch()
            if waiting.run_id is None:
                waiting.look(follower, tip, clock(), say)
            if waiting.run_id is not None and (record := follower.step(tip, waiting.run_id, waiting.flow)):
                return follower.end(record)
            if deadline is not None and clock() >= deadline:
                state = (f"run {waiting.run_id} has not finished" if waiting.run_id
                         else "no daemon has taken it yet")
                raise WaitTimeout(f"timed out after {limit:g}s waiting for request {request_id} ({state}); "
                                  f"it stays on the runs branch and will still be served")
            sleep_until_next(polled, deadline, clock)
    except KeyboardInterrupt:
        if waiting.run_id is None:
            say(f"stopped waiting: request {request_id} stays queued; `puppemon cancel {request_id}` withdraws it")
        else:
            say(f"stopped following: run {waiting.run_id} goes on; `puppemon cancel {waiting.run_id}` stops it")
        return 130


NO_DAEMON_AFTER = 3.0   # seconds without a claim before the daemons' heartbeats are looked at
NO_DAEMON_AGAIN = 30.0  # and again this often while none has said it is there


class _Waiting:
    """A request not claimed yet: its claim, looked for at each poll, and whether a daemon is there."""

    def __init__(self, request_id: str, check_at: float) -> None:
        self.request_id, self.check_at = request_id, check_at
        self.run_id: str | None = None
        self.flow: str | None = None
        self.said = False

    def look(self, follower, tip: str | None, now: float, say: Callable[[str], None]) -> None:
        from puppemon.history.requests import read_claim

        claim = read_claim(follower.store, tip, self.request_id)
        if claim is not None:
            self.run_id, self.flow = claim["run_id"], claim.get("flow")
            say(f"run {self.run_id} on {claim.get('daemon')}")
        elif not self.said and now >= self.check_at:
            self.check_at = now + NO_DAEMON_AGAIN
            if follower.no_daemon():
                self.said = True
                say(f"no daemon has sent a heartbeat to {follower.remote} lately: the request waits until "
                    "one starts (`puppemon status` shows the daemons)")
