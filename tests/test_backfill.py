"""`puppemon backfill`: one run per fire time in a range, each with its scheduled time, asked for once."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from tests.conftest import git, puppemon
from tests.daemon_helpers import deploy, fsck, manifest_project, of_flow, remote_records, result_of, run_daemon_once

UTC = timezone.utc
DAY = (datetime.now(UTC) - timedelta(days=10)).date()   # three days well in the past
DAYS = [DAY + timedelta(days=i) for i in range(3)]
MANIFEST = """\
version: 1
flows:
  daily:
    entrypoint: flow.py:main
    schedule: "0 8 * * *"
    catchup: none
  adhoc:
    command: ["true"]
"""
FLOW = "import os\n\n\ndef main():\n    return os.environ['PUPPEMON_SCHEDULED_TIME']\n"


def runs_tip(remote) -> str:
    return git("--git-dir", str(remote), "for-each-ref", "--format=%(objectname)", "refs/heads/runs").strip()


def test_backfill_asks_once_per_fire_time_and_runs_get_their_scheduled_time(tmp_path, bare_remote):
    project = manifest_project(tmp_path, str(bare_remote), MANIFEST, {"flow.py": FLOW})
    deploy(project)
    expected = [f"{d:%Y-%m-%d}T08:00:00.000Z" for d in DAYS]
    span = ("--from", f"{DAYS[0]}", "--to", f"{DAYS[-1]}")

    dry = puppemon("backfill", "daily", *span, "--dry-run", cwd=project)
    assert dry.stdout.splitlines() == [
        f"daily: 3 fire times from {DAYS[0]} 08:00:00 UTC to {DAYS[-1]} 08:00:00 UTC",
        *(f"  {d} 08:00:00 UTC  would ask" for d in DAYS),
        "dry run: would ask for 3 runs; nothing written"]
    dry_json = json.loads(puppemon("backfill", "daily", *span, "--dry-run", "--json", cwd=project).stdout)
    assert dry_json["dry_run"] is True and [(f["state"], f["request"]) for f in dry_json["fires"]] == \
        [("would ask", None)] * 3                 # no id of a request that is never written
    assert runs_tip(bare_remote) == ""            # nothing written

    asked = puppemon("backfill", "daily", *span, cwd=project)
    assert asked.stdout.splitlines()[-1] == "asked for 3 runs on origin", asked.stdout
    again = puppemon("backfill", "daily", *span, "--json", cwd=project)
    shown = json.loads(again.stdout)
    assert [f["scheduled"] for f in shown["fires"]] == expected
    assert {f["state"] for f in shown["fires"]} == {"already"} and shown["dry_run"] is False
    assert all(f["by"].startswith("request ") for f in shown["fires"])

    proc = run_daemon_once(str(bare_remote), tmp_path / "state")
    assert proc.returncode == 0, proc.stderr
    runs = [r for r in of_flow(remote_records(bare_remote), "daily") if r["trigger"]["kind"] == "backfill"]
    assert [r["scheduled"] for r in runs] == expected
    assert [result_of(bare_remote, r) for r in runs] == expected      # PUPPEMON_SCHEDULED_TIME
    assert all(r["status"] == "succeeded" for r in runs)

    # Over the same range (and one day more), after the runs: only the new day is asked for.
    wider = puppemon("backfill", "daily", "--from", f"{DAYS[0]}", "--to", f"{DAYS[-1] + timedelta(days=1)}",
                     cwd=project)
    lines = wider.stdout.splitlines()
    assert lines[-1] == "asked for 1 run on origin; 3 already asked for", wider.stdout
    assert sum("already asked for (request " in line for line in lines) == 3
    proc = run_daemon_once(str(bare_remote), tmp_path / "state")
    assert proc.returncode == 0, proc.stderr
    runs = [r for r in of_flow(remote_records(bare_remote), "daily") if r["trigger"]["kind"] == "backfill"]
    assert [r["scheduled"] for r in runs] == [*expected, f"{DAYS[-1] + timedelta(days=1):%Y-%m-%d}T08:00:00.000Z"]
    fsck(bare_remote)


def test_backfill_refuses_a_huge_range_and_a_flow_with_no_schedule(tmp_path, bare_remote):
    project = manifest_project(tmp_path, str(bare_remote), MANIFEST, {"flow.py": FLOW})
    deploy(project)
    huge = puppemon("backfill", "daily", "--from", "2020-01-01", "--to", f"{DAY}", cwd=project, check=False)
    assert huge.returncode == 1
    assert huge.stderr == (f"Error: daily: more than 1000 fire times from 2020-01-01 to {DAY}; backfill at most "
                           "1000 at a time (narrow --from/--to, and run backfill once per part)\n")
    none = puppemon("backfill", "adhoc", "--from", f"{DAY}", "--to", f"{DAY}", cwd=project, check=False)
    assert none.returncode == 1
    assert none.stderr == ("Error: flow 'adhoc' has no schedule (schedule: or every:), so it has no fire times to "
                           "backfill; `puppemon trigger adhoc` runs it once\n")
    bad = puppemon("backfill", "daily", "--from", "yesterday", "--to", f"{DAY}", cwd=project, check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("Error: --from 'yesterday': not a date or time")
    assert runs_tip(bare_remote) == ""
