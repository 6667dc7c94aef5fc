"""`puppemon backfill FLOW --from DATE --to DATE`: one run per fire time of the flow's schedule in a range.

The fire times come from the deployed manifest (the remote's `flows` tip). Each is asked for through the
runs branch as a run request that carries its scheduled time (the run gets PUPPEMON_SCHEDULED_TIME), next
to the fire's claim, `claims/<yyyy>/<mm>/<dd>/<flow>/<fire-key>.json`: the path every daemon computes
alike for that fire (daemon/claims.py). A fire whose claim is on the branch already, or that a run record
names (`scheduled`), was asked for or ran: it is not asked for again. All the requests and claims go in
one commit, so when two backfills race, the first one pushed wins and the other is dropped whole.
"""
from __future__ import annotations

import json
import os
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from puppemon.errors import PuppemonError

CAP = 1000   # fire times one backfill asks for, at most
UTC = timezone.utc


def parse_moment(text: str, zone: ZoneInfo, option: str, end: bool = False) -> datetime:
    """`2026-11-01`, `2026-11-01T08:00`, `2026-11-01 08:00:00+08:00`: a time without an offset is in the
    flow's timezone; a date alone is its start (`--from`) or its end (`--to`: the whole day is in)."""
    try:
        if len(text) == 10:
            day = datetime.strptime(text, "%Y-%m-%d").date()
            moment = datetime.combine(day + timedelta(days=1) if end else day, time(), zone)
            return moment - timedelta(microseconds=1) if end else moment
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise PuppemonError(f"{option} {text!r}: not a date or time (use 2026-11-01, 2026-11-01T08:00 or "
                            "2026-11-01T08:00+08:00)") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)


def fire_times_in(flow, start: datetime, end: datetime) -> list[datetime]:
    """The flow's fire times in [start, end], at most CAP + 1 (one more tells that there are too many)."""
    from puppemon.project.triggers import fire_times

    return fire_times(flow, start - timedelta(microseconds=1), end, CAP + 1)


def main(flow: str, start: str, end: str, dry_run: bool = False, remote: str | None = None,
         directory: str = ".", as_json: bool = False) -> int:
    from puppemon.commands.reading import forget
    from puppemon.formats import FLOW_NAME_RE
    from puppemon.gitstore import Store
    from puppemon.history.recorder import Recorder, writer_lock
    from puppemon.history.requests import PATIENCE
    from puppemon.gitstore.transport import resolve_remote
    from puppemon.project.snapshot import user_at_host

    if not FLOW_NAME_RE.match(flow):
        raise PuppemonError(f"{flow!r} is not a flow name (lower-case letters, digits, '-' and '_')")
    store = Store.discover(directory)
    remote = resolve_remote(store, remote)
    spec = deployed_flow(store, remote, flow)
    zone, now = ZoneInfo(spec.timezone), datetime.now(UTC)
    first, last = parse_moment(start, zone, "--from"), parse_moment(end, zone, "--to", end=True)
    if last < first:
        raise PuppemonError(f"--to {end} is before --from {start}")
    if last > now:
        last = now   # what is still to come, the daemon runs on schedule
    fires = fire_times_in(spec, first, last)
    if len(fires) > CAP:
        raise PuppemonError(f"{flow}: more than {CAP} fire times from {start} to {end}; backfill at most {CAP} "
                            "at a time (narrow --from/--to, and run backfill once per part)")
    by = user_at_host()
    recorder = Recorder(store, remote=remote, branch="runs", author_name=by)
    with writer_lock(store, PATIENCE):
        tip = recorder.fetch()
        asked = already_asked(store, recorder.tracking, tip, flow, fires)
        todo = [t for t in fires if t not in asked]
        plan = requests_for(flow, todo, by, now)
        if todo and not dry_run:
            forget(store.git_dir)
            message = plan_message(flow, plan, by)
            recorder.add(plan_files(plan), message)
            recorder.sync(push=True, patience=PATIENCE)
            if message in recorder.dropped:
                raise PuppemonError("another backfill of these fire times reached the remote first; "
                                    "run this one again to see what it asked for")
    report(flow, remote, fires, asked, plan, dry_run, as_json, zone)
    return 0


def deployed_flow(store, remote: str, flow: str):
    """The flow as deployed on the remote; PuppemonError when there is none or it has no schedule."""
    from puppemon.commands.common import fetch_deployed
    from puppemon.formats import did_you_mean
    from puppemon.project.manifest import MANIFEST_NAME, ManifestError, parse

    tip, data = fetch_deployed(store, remote)
    if tip is None:
        raise PuppemonError(f"nothing is deployed on {remote} yet: run `puppemon push` first")
    try:
        flows = parse(data or b"", MANIFEST_NAME).flows
    except ManifestError as exc:
        raise PuppemonError(f"the deployed flows commit {tip[:7]} has no valid manifest: {exc.message}") from None
    if flow not in flows:
        close = did_you_mean(flow, flows)
        raise PuppemonError(f"no flow {flow!r} in the deployed flows (flows {tip[:7]} on {remote}: "
                            f"{', '.join(flows) or 'none'}); " + (close or "push it first"))
    spec = flows[flow]
    if not any(t.kind in ("cron", "interval") for t in spec.triggers):
        raise PuppemonError(f"flow {flow!r} has no schedule (schedule: or every:), so it has no fire times "
                            f"to backfill; `puppemon trigger {flow}` runs it once")
    return spec


def already_asked(store, ref: str, tip: str | None, flow: str, fires: list[datetime]) -> dict[datetime, str]:
    """{fire: what asked for it} of the fires a claim on the branch (or its archive) or a run record names."""
    from puppemon.formats import archive_ref, claim_path, fire_key, parse_iso
    from puppemon.history.records import RunStore

    found: dict[datetime, str] = {}
    if tip is None or not fires:
        return found
    for moment in fires:
        path = claim_path(flow, moment, fire_key(moment))
        for where in (tip, store.ref(archive_ref(f"{moment.astimezone(UTC):%Y/%m}"))):
            data = store.read(where, path, 64 * 1024) if where else None
            if data is not None:
                found[moment] = _claimer(data)
                break
    wanted = {t.astimezone(UTC): t for t in fires}
    for record in RunStore(store, ref).list(flow, since=fires[0]):
        moment = parse_iso(record.get("scheduled")) if isinstance(record.get("scheduled"), str) else None
        if moment is not None and moment in wanted:
            found.setdefault(wanted[moment], f"run {record['id']}")
    return found


def _claimer(data: bytes) -> str:
    try:
        body = json.loads(data)
        if body.get("request"):
            return f"request {body['request']}"
        return f"claimed by {body['daemon']}"
    except (ValueError, KeyError, TypeError, AttributeError):
        return "claimed"


def requests_for(flow: str, fires: list[datetime], by: str, now: datetime) -> list[tuple[datetime, dict]]:
    """(fire, its run request) for each fire: ids in fire order (the daemon serves requests by id)."""
    from puppemon.formats import utc_compact, utc_iso
    from puppemon.history.requests import run_request

    base = int.from_bytes(os.urandom(3), "big") % (0xFFFFFF - CAP)
    plan = []
    for i, moment in enumerate(fires):
        body = run_request(flow, {}, by, now, f"{utc_compact(now)}-{base + i:06x}")
        body["scheduled"] = utc_iso(moment)
        plan.append((moment, body))
    return plan


def plan_files(plan: list[tuple[datetime, dict]]) -> dict[str, bytes]:
    from puppemon.formats import claim_path, fire_key
    from puppemon.history.records import dump_json
    from puppemon.history.requests import SCHEMA, request_files

    files: dict[str, bytes] = {}
    for moment, body in plan:
        files.update(request_files(body))
        claim = {"schema": SCHEMA, "fire": fire_key(moment), "flow": body["flow"], "scheduled": body["scheduled"],
                 "daemon": "backfill", "run_id": body["id"], "request": body["id"], "by": body["by"],
                 "time": body["time"]}
        files[claim_path(body["flow"], moment, fire_key(moment))] = dump_json(claim)
    return files


def plan_message(flow: str, plan: list, by: str) -> str:
    from puppemon.history.records import one_line

    return (f"backfill {flow}: {len(plan)} run{'s' if len(plan) != 1 else ''} "
            f"({plan[0][1]['scheduled']} to {plan[-1][1]['scheduled']}, by {one_line(by, 100)})\n\n"
            f"Puppemon-Flow: {flow}\nPuppemon-Claim: backfill\n")


def report(flow: str, remote: str, fires: list[datetime], asked: dict, plan: list, dry_run: bool,
           as_json: bool, zone: ZoneInfo) -> None:
    from puppemon.formats import plural, utc_iso

    ids = {moment: body["id"] for moment, body in plan}
    if as_json:
        rows = [{"scheduled": utc_iso(t), "request": None if dry_run else ids.get(t),   # a dry run writes none
                 "state": "already" if t in asked else "would ask" if dry_run else "asked",
                 **({"by": asked[t]} if t in asked else {})} for t in fires]
        print(json.dumps({"flow": flow, "remote": remote, "dry_run": dry_run, "fires": rows}, indent=2))
        return
    if not fires:
        print(f"{flow}: no fire times in that range")
        return
    print(f"{flow}: {plural(len(fires), 'fire time')} from {_local(fires[0], zone)} to {_local(fires[-1], zone)}")
    for t in fires:
        what = f"already asked for ({asked[t]})" if t in asked else "would ask" if dry_run else f"request {ids[t]}"
        print(f"  {_local(t, zone)}  {what}")
    new = len(fires) - len(asked)
    if dry_run:
        print(f"dry run: would ask for {plural(new, 'run')}; nothing written")
    else:
        print(f"asked for {plural(new, 'run')} on {remote}" + (f"; {len(asked)} already asked for" if asked else ""))


def _local(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")
