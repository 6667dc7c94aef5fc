"""Every `--json` shape docs/json.md documents, end to end: keys and types, through real processes."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from puppemon.formats import utc_iso
from tests.conftest import git, puppemon
from tests.test_runs_logs import HISTORY, make_record, seed
from tests.test_secrets import MANIFEST as SECRETS_MANIFEST, VALUES, write_secrets
from tests.test_status import write_status

RUN_KEYS = {"schema": int, "id": str, "flow": str, "status": str, "trigger": dict, "request": (str, type(None)),
            "params": dict, "flows_commit": str, "source_commit": str, "scheduled": (str, type(None)),
            "started": str, "finished": str, "duration": (int, float), "attempt": int, "attempts": list,
            "exit_code": (int, type(None)), "daemon": str, "host": str, "outputs": list,
            "outputs_note": (str, type(None)), "has_result": bool, "error": (str, type(None)),
            "environment": (dict, type(None))}


def has_shape(value: dict, shape: dict) -> None:
    """`value` has at least the keys of `shape`, each of its type."""
    for key, kind in shape.items():
        assert key in value, key
        assert isinstance(value[key], kind), (key, value[key])


@pytest.fixture
def history(project, bare_remote, tmp_path):
    result_run = make_record("report", 9, suffix="ff0009", has_result=True)
    seed(bare_remote, tmp_path, HISTORY)
    seed(bare_remote, tmp_path, [(result_run, "r\u00e9sum\u00e9 \xff\n".encode("latin-1"))], result={"rows": 3})
    return project


def test_runs_json_is_an_array_of_run_records(history):
    records = json.loads(puppemon("runs", "--json", cwd=history).stdout)
    assert isinstance(records, list) and len(records) == 6
    for record in records:
        has_shape(record, RUN_KEYS)


def test_logs_json_is_the_record_its_log_and_its_result(history):
    proc = puppemon("logs", "--json", "ff0009", cwd=history)
    assert proc.stderr == ""      # no header line: the record is in the object
    data = json.loads(proc.stdout)
    assert set(data) == {"run", "log", "result"}
    has_shape(data["run"], RUN_KEYS)
    assert data["run"]["id"] == "20261125T083900Z-ff0009"
    assert data["log"] == "r\ufffdsum\ufffd \ufffd\n"   # not UTF-8: each bad byte a replacement character
    assert data["result"] == {"rows": 3}
    plain = json.loads(puppemon("logs", "--json", "backup", cwd=history).stdout)
    assert (plain["log"], plain["result"], plain["run"]["error"]) == ("disk full\n", None, "exit code 3")


def test_status_json_shape(project, bare_remote):
    puppemon("push", cwd=project)
    tip = git("--git-dir", str(bare_remote), "rev-parse", "flows").strip()
    now = datetime.now(timezone.utc)
    write_status(bare_remote, "alpha", flows_commit=tip, heartbeat=utc_iso(now), poll=30.0, once=False,
                 labels=["eu"], flows={"hello": {"next": "2026-11-25T09:00:00.000Z"},
                                       "train": {"next": None, "runs_on": ["gpu"], "taken_here": False}})
    write_status(bare_remote, "gone-box", heartbeat=utc_iso(now - timedelta(hours=1)), poll=600.0, labels=["gpu"])
    data = json.loads(puppemon("status", "--json", cwd=project).stdout)
    assert set(data) == {"remote", "flows_tip", "daemons", "paused", "unplaced"}
    assert data["paused"] == {}
    assert data["unplaced"] == [{"flow": "train", "runs_on": ["gpu"]}]   # the gpu daemon is gone
    assert (data["remote"], data["flows_tip"]) == ("origin", tip)
    alpha, gone = data["daemons"]
    shape = {"name": str, "host": str, "pid": int, "version": str, "state": str, "heartbeat": str,
             "heartbeat_age": float, "stale": bool, "gone": bool, "gone_after": float, "ref": str,
             "flows_commit": (str, type(None)), "flows_tip": (str, type(None)), "up_to_date": bool,
             "flows": dict, "in_flight": list, "unpublished": int, "labels": list}
    has_shape(alpha, shape)
    has_shape(gone, shape)
    assert (alpha["gone"], alpha["gone_after"], alpha["ref"]) == (False, 300.0, "refs/puppemon/status/alpha")
    assert (gone["gone"], gone["gone_after"]) == (True, 1800.0)   # 3 heartbeats of a 10 min poll
    assert alpha["flows"]["hello"] == {"next": "2026-11-25T09:00:00.000Z", "last_run": None, "on": ["alpha"]}
    assert alpha["flows"]["train"] == {"next": None, "runs_on": ["gpu"], "taken_here": False, "last_run": None,
                                       "on": []}
    assert alpha["labels"] == ["eu"]


def test_validate_json_valid_and_invalid(tmp_path):
    (tmp_path / "puppemon.yaml").write_text(
        "version: 1\nflows:\n  nightly:\n    command: x\n    schedule: '0 3 * * *'\n    timezone: Asia/Taipei\n"
        "  backup:\n    command: y\n    every: 6h\n")
    data = json.loads(puppemon("validate", "--json", cwd=tmp_path).stdout)
    assert set(data) == {"manifest", "valid", "error", "flows", "chains", "hints"}
    assert (data["manifest"], data["valid"], data["error"], data["hints"]) == ("puppemon.yaml", True, None, [])
    assert data["chains"] == []
    nightly, backup = data["flows"]
    assert set(nightly) == {"name", "trigger", "kinds", "timezone", "next_run", "next_run_text"}
    assert (nightly["name"], nightly["trigger"], nightly["kinds"]) == ("nightly", "cron 0 3 * * * (Asia/Taipei)",
                                                                       ["cron"])
    moment = datetime.fromisoformat(nightly["next_run"].replace("Z", "+00:00"))
    assert moment.astimezone(timezone(timedelta(hours=8))).strftime("%H:%M") == "03:00"
    assert nightly["next_run_text"].endswith(" 03:00 CST")
    moment = datetime.fromisoformat(backup["next_run"].replace("Z", "+00:00"))
    assert (moment.hour % 6, moment.minute, backup["timezone"]) == (0, 0, "UTC")   # 6h steps from the epoch
    assert backup["next_run_text"] == moment.strftime("%Y-%m-%d %H:%M UTC")
    (tmp_path / "puppemon.yaml").write_text("version: 1\nflows:\n  backup:\n    command: x\n    every: often\n")
    proc = puppemon("validate", "--json", cwd=tmp_path, check=False)
    assert (proc.returncode, proc.stderr) == (1, "")
    assert json.loads(proc.stdout) == {
        "manifest": "puppemon.yaml", "valid": False, "flows": [], "chains": [], "hints": [],
        "error": "puppemon.yaml:5:12: flows.backup.every: 'often' is not a duration (use 30s, 10m, 2h, 1d)"}


def test_secrets_check_json(tmp_path):
    secrets = write_secrets(tmp_path / "secrets.yaml")
    manifest = tmp_path / "puppemon.yaml"
    manifest.write_text(SECRETS_MANIFEST)
    alone = puppemon("secrets", "check", "--json", "--secrets", str(secrets))
    assert json.loads(alone.stdout) == {
        "secrets": [{"name": "api-token", "granted_to": ["uses", "breaks", "refus*", "granted-only"]},
                    {"name": "db", "granted_to": ["*"]}], "flows": None, "not_granted": 0}
    proc = puppemon("secrets", "check", "--json", "--secrets", str(secrets), "--manifest", str(manifest), check=False)
    assert proc.returncode == 1
    data = json.loads(proc.stdout)
    assert data["not_granted"] == 1
    assert data["flows"] == [
        {"name": "breaks", "granted": ["api-token"], "not_granted": []},
        {"name": "granted-only", "granted": [], "not_granted": []},
        {"name": "refused", "granted": ["api-token", "db"], "not_granted": ["missing"]},
        {"name": "uses", "granted": ["api-token", "db"], "not_granted": []}]
    for value in VALUES:
        assert value not in alone.stdout + proc.stdout
