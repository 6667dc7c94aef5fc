"""Run and cancel requests on the runs branch, as clients write and read them (`trigger`, `cancel`).

Layout, next to each other under the request's date::

    requests/<yyyy>/<mm>/<dd>/<id>.json        the request (kind run or cancel, who, when)
    requests/<yyyy>/<mm>/<dd>/<id>.claim.json  run requests: the daemon that took it and its run id
    requests/<yyyy>/<mm>/<dd>/<id>.done.json   cancel requests: which daemon acted, and how

The daemon's side (claiming, serving, cancelling) is puppemon/daemon/request_server.py.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from puppemon.errors import PuppemonError
from puppemon.formats import format_duration, new_id, request_base, utc_iso
from puppemon.history.records import dump_json

SCHEMA = 1
DAYS = 7   # requests older than this are not served (nor read, so a cycle's cost does not grow)


def run_request(flow: str, params: dict, by: str, now: datetime, request_id: str | None = None) -> dict:
    return {"schema": SCHEMA, "id": request_id or new_id(now), "kind": "run", "flow": flow,
            "params": params, "by": by, "time": utc_iso(now)}


def cancel_request(run_id: str, by: str, now: datetime) -> dict:
    return {"schema": SCHEMA, "id": new_id(now), "kind": "cancel", "run_id": run_id,
            "by": by, "time": utc_iso(now)}


def request_message(body: dict) -> str:
    what = f"run {body['flow']}" if body["kind"] == "run" else f"cancel {body['run_id']}"
    return (f"request: {what} (by {body['by']})\n\nPuppemon-Request: {body['id']}\n"
            f"Puppemon-Request-Kind: {body['kind']}\n")


def request_files(body: dict) -> dict[str, bytes]:
    return {f"{request_base(body['id'])}.json": dump_json(body)}


def send(store, remote: str, body: dict, branch: str = "runs") -> None:
    """Commit a request on the local runs branch of `store` and push it to `remote`."""
    from puppemon.gitstore import GitError
    from puppemon.history.recorder import Recorder

    recorder = Recorder(store, remote=remote, branch=branch, author_name=body["by"])
    recorder.add(request_files(body), request_message(body))
    try:
        recorder.sync(push=True)
    except GitError as exc:
        raise PuppemonError(f"{exc.message}\nthe request {body['id']} is committed on the local "
                            f"{branch} branch and will go out with the next trigger or cancel") from None


def read_claim(store, tip: str | None, request_id: str) -> dict | None:
    data = store.read(tip, f"{request_base(request_id)}.claim.json") if tip else None
    return json.loads(data) if data is not None else None


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
