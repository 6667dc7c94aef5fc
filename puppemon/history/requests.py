"""Run, cancel and pause/resume requests on the runs branch, as clients write and read them (`trigger`, `cancel`).

Layout, next to each other under the request's date::

    requests/<yyyy>/<mm>/<dd>/<id>.json        the request (kind run or cancel, who, when)
    requests/<yyyy>/<mm>/<dd>/<id>.claim.json  run requests: the daemon that took it and its run id
    requests/<yyyy>/<mm>/<dd>/<id>.done.json   cancel, pause and resume requests: which daemon acted, and how

The daemon's side (claiming, serving, cancelling) is puppemon/daemon/request_server.py.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from puppemon.errors import PuppemonError
from puppemon.formats import RUN_ID, format_duration, is_flow_name, new_id, request_base, show, utc_iso
from puppemon.history.records import dump_json, one_line

SCHEMA = 1
DAYS = 7   # requests older than this are not served (nor read, so a cycle's cost does not grow)
PATIENCE = 60.0  # seconds `trigger` and `cancel` keep trying when other writers keep moving the runs branch


def run_request(flow: str, params: dict, by: str, now: datetime, request_id: str | None = None) -> dict:
    return {"schema": SCHEMA, "id": request_id or new_id(now), "kind": "run", "flow": flow,
            "params": params, "by": by, "time": utc_iso(now)}


def cancel_request(run_id: str, by: str, now: datetime, kind: str = "cancel") -> dict:
    """A request about a run in flight: cancel it, or (`kind` pause, resume) freeze it or let it go on."""
    return {"schema": SCHEMA, "id": new_id(now), "kind": kind, "run_id": run_id,
            "by": by, "time": utc_iso(now)}


def request_message(body: dict) -> str:
    what = f"run {body['flow']}" if body["kind"] == "run" else f"{body['kind']} {body['run_id']}"
    return (f"request: {one_line(what, 140)} (by {one_line(body['by'], 100)})\n\nPuppemon-Request: {body['id']}\n"
            f"Puppemon-Request-Kind: {body['kind']}\n")


def request_files(body: dict) -> dict[str, bytes]:
    return {f"{request_base(body['id'])}.json": dump_json(body)}


def send(store, remote: str, body: dict, branch: str = "runs", patience: float = PATIENCE) -> None:
    """Commit a request on the local runs branch of `store` and push it to `remote`.

    Writers of one checkout take turns (writer_lock); a push that loses a race with other
    writers is tried again, with jitter, for `patience` seconds. When it still fails, the
    remote is asked whether the request went out anyway (with another writer's push): only
    a request that is not there is an error. A remote in a layout this version does not know
    (history/layout.py) gets nothing: the request is taken back and LayoutError raised."""
    from puppemon.gitstore import GitError
    from puppemon.history.recorder import Recorder, writer_lock

    from puppemon.history.layout import LayoutError

    recorder = Recorder(store, remote=remote, branch=branch, author_name=body["by"])
    path = f"{request_base(body['id'])}.json"
    with writer_lock(store, patience):
        commit = recorder.add(request_files(body), request_message(body))
        try:
            recorder.sync(push=True, patience=patience)
        except LayoutError:
            recorder.withdraw(commit)  # refused: it must not go out later either
            raise
        except GitError as exc:
            if _on_remote(store, recorder, path):
                return
            raise PuppemonError(f"{exc.message}\nthe request {body['id']} is committed on the local "
                                f"{branch} branch and will go out with the next trigger or cancel") from None


def _on_remote(store, recorder, path: str) -> bool:
    """Whether the remote's runs branch holds `path` (False when it cannot be asked)."""
    from puppemon.gitstore import GitError

    try:
        tip = recorder.fetch()
    except GitError:
        return False
    return bool(tip) and store.lookup(tip, path) is not None


def read_claim(store, tip: str | None, request_id: str) -> dict | None:
    """The claim of a request at `tip`; None when there is none, or none that reads as a claim (anyone
    who can push may write one: the daemons ignore it too)."""
    data = store.read(tip, f"{request_base(request_id)}.claim.json") if tip else None
    if data is None:
        return None
    try:
        return check_claim(data, request_id)
    except BadRequest:
        return None


def recent_dirs(now: datetime, days: int = DAYS) -> list[str]:
    """Date directories under requests/ to look at: tomorrow (clock skew) back to `days` ago."""
    now = now.astimezone(timezone.utc)
    return [f"requests/{d:%Y}/{d:%m}/{d:%d}" for d in (now - timedelta(days=i) for i in range(-1, days))]


def exit_code(record: dict) -> int:
    """The exit code `trigger --wait` ends with for a recorded run."""
    status = record.get("status")
    if status == "succeeded":
        return 0
    if status == "timed_out":
        return 124
    if status == "cancelled":
        return 130
    code = record.get("exit_code")
    return code if isinstance(code, int) and 0 < code < 256 else 1


def describe(record: dict) -> str:
    return f"run {record['id']} ({record['flow']}): {record['status']} in {format_duration(record['duration'])}"


# -- checking what was read from the remote (anyone who can push can write it) ------------------

MAX_SIZE = 64 * 1024   # bytes of one request or claim file
MAX_DEPTH = 32         # nesting of a request's params
RUN_KINDS = ("cancel", "pause", "resume")   # requests about a run in flight, by its run_id


class BadRequest(ValueError):
    """A request or claim file that cannot be served; its message says why, on one line."""


def nesting(value) -> int:
    """How deep lists and objects nest in `value`, counted without recursion and up to MAX_DEPTH + 1
    (for the HTTP hook and `trigger --params-json` too)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                break
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _object(data: bytes, what: str) -> dict:
    if len(data) > MAX_SIZE:
        raise BadRequest(f"{what} is larger than {MAX_SIZE // 1024} KiB")
    try:
        body = json.loads(data.decode("utf-8"))  # JSON on the branch is UTF-8, whatever its first bytes say
    except RecursionError:
        raise BadRequest(f"{what} nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # not JSON, or not UTF-8
        raise BadRequest(f"{what} is not JSON ({str(exc).splitlines()[0][:80]})") from None
    if not isinstance(body, dict):
        raise BadRequest(f"{what} is not a JSON object")
    return body


def check_request(data: bytes, request_id: str) -> dict:
    """The request read from the file `<request_id>.json`, checked before anything uses a value of it;
    BadRequest says why it cannot be served."""
    body = _object(data, "the request")
    if body.get("schema") != SCHEMA:
        raise BadRequest(f"schema {show(body.get('schema'))}: this version reads schema {SCHEMA}")
    if body.get("id") != request_id:
        raise BadRequest(f"its id {show(body.get('id'))} is not its file name's")
    if not RUN_ID.match(request_id):
        raise BadRequest(f"{show(request_id)} is not a request id (e.g. 20261125T083000Z-7f3a9c)")
    if body.get("by") is not None and not isinstance(body["by"], str):
        raise BadRequest("`by` is not text")
    if body.get("kind") == "run":
        if not is_flow_name(body.get("flow")):
            raise BadRequest(f"flow {show(body.get('flow'))} is not a flow name "
                             "(lowercase letters, digits, - and _, at most 100)")
        params = body.get("params", {})
        if not isinstance(params, dict):
            raise BadRequest("params are not a JSON object")
        if nesting(params) > MAX_DEPTH:
            raise BadRequest(f"params nest deeper than {MAX_DEPTH} levels")
        if body.get("scheduled") is not None and not _is_utc_time(body["scheduled"]):
            raise BadRequest(f"scheduled {show(body['scheduled'])} is not a time (e.g. 2026-11-25T08:30:00.000Z)")
    elif body.get("kind") in RUN_KINDS:
        if not (isinstance(body.get("run_id"), str) and RUN_ID.match(body["run_id"])):
            raise BadRequest(f"run_id {show(body.get('run_id'))} is not a run id")
    else:
        raise BadRequest(f"kind {show(body.get('kind'))}: expected run, cancel, pause or resume")
    return body


def _is_utc_time(value) -> bool:
    """A request's `scheduled` (`puppemon backfill`): an ISO 8601 time with an offset."""
    try:
        return isinstance(value, str) and len(value) < 40 and datetime.fromisoformat(
            value.replace("Z", "+00:00")).tzinfo is not None
    except ValueError:
        return False


def check_claim(data: bytes, request_id: str) -> dict:
    """A claim read from `<request_id>.claim.json`, checked; BadRequest says why it is not one."""
    claim = _object(data, "its claim")
    if not (isinstance(claim.get("daemon"), str) and claim["daemon"]):
        raise BadRequest("its claim names no daemon")
    if not (isinstance(claim.get("run_id"), str) and RUN_ID.match(claim["run_id"])):
        raise BadRequest(f"its claim's run_id {show(claim.get('run_id'))} is not a run id")
    if claim.get("flow") is not None and not is_flow_name(claim["flow"]):
        raise BadRequest(f"its claim's flow {show(claim.get('flow'))} is not a flow name")
    if claim.get("request", request_id) != request_id:
        raise BadRequest(f"its claim is for request {show(claim.get('request'))}")
    return claim
