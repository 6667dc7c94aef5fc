"""Labels: a daemon's `--labels` against a flow's `runs_on`; each daemon takes only the flows it has every
label of (fires, deploy runs, requests, the HTTP hook), notes the others in its deploy record, and a flow
no live daemon can take is flagged by `status` and logged at deploy."""
from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from puppemon.daemon.loop import Daemon
from puppemon.daemon.settings import Settings, build_settings
from puppemon.errors import PuppemonError
from puppemon.formats import utc_iso
from puppemon.project.manifest import ManifestError, parse
from tests.conftest import git, puppemon
from tests.daemon_helpers import (DaemonProcess, deploy_records, fsck, linear, manifest_project, remote_records,
                                  wait_until)
from tests.test_httpd import call
from tests.test_layouts import on_terminal
from tests.test_status import write_status

TOKEN = "labels-http-token"


# -- settings and the manifest ----------------------------------------------------------------

def test_labels_from_the_command_line_and_the_config_file(tmp_path):
    config = tmp_path / "daemon.yaml"
    config.write_text("remote: /srv/remote.git\nlabels: [gpu, eu]\n")
    assert build_settings({"config": str(config)}).labels == ("eu", "gpu")
    # the command line wins; repeatable and comma-separated, each label once
    assert build_settings({"config": str(config), "labels": ("ssd,eu", "eu")}).labels == ("eu", "ssd")
    assert build_settings({"remote": "/srv/r.git"}).labels == ()
    config.write_text("remote: /srv/remote.git\nlabels: gpu\n")
    assert build_settings({"config": str(config)}).labels == ("gpu",)
    config.write_text("remote: /srv/remote.git\nlabels: [GPU]\n")
    with pytest.raises(PuppemonError, match=r"daemon.yaml: labels: 'GPU' is not a valid label \(use lowercase"):
        build_settings({"config": str(config)})
    config.write_text("remote: /srv/remote.git\nlabels: [{gpu: 1}]\n")
    with pytest.raises(PuppemonError, match=r"labels: expected label names"):
        build_settings({"config": str(config)})


def test_a_bad_label_on_the_command_line_is_one_line_and_exit_1(tmp_path):
    proc = puppemon("daemon", "--remote", str(tmp_path / "r.git"), "--state", str(tmp_path / "s"),
                    "--labels", "gpu,big box", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "Error: --labels: 'big box' is not a valid label (use lowercase letters, digits, '-' and '_', "
        "starting with a letter or digit, e.g. --labels gpu,eu)"], proc.stderr


@pytest.mark.parametrize("flow, error", [
    ("    runs_on: [gpu, Big]\n", "puppemon.yaml:5:20: flows.a.runs_on[1]: 'Big' is not a valid label "
                                  "(use lowercase letters, digits, '-' and '_', as a daemon's --labels)"),
    ("    runs_on: {gpu: true}\n", "puppemon.yaml:5:14: flows.a.runs_on: expected a list, got a mapping"),
    ("    runs_on: [[gpu]]\n", "puppemon.yaml:5:15: flows.a.runs_on[0]: expected a string, got a list"),
    ("    run_on: [gpu]\n", "puppemon.yaml:5:5: flows.a.run_on: unknown key (did you mean 'runs_on'?)"),
])
def test_runs_on_errors_name_file_line_and_column(flow, error):
    with pytest.raises(ManifestError) as caught:
        parse(f"version: 1\nflows:\n  a:\n    command: x\n{flow}")
    assert caught.value.message == error


def test_runs_on_from_defaults_and_flows():
    manifest = parse("version: 1\ndefaults:\n  runs_on: [eu]\nflows:\n  a:\n    command: x\n    runs_on: gpu\n"
                     "  b:\n    command: x\n  c:\n    command: x\n    runs_on: []\n")
    assert {n: f.runs_on for n, f in manifest.flows.items()} == {"a": ("gpu",), "b": ("eu",), "c": ()}


def test_validate_refuses_a_bad_runs_on_as_push_would(tmp_path):
    (tmp_path / "puppemon.yaml").write_text("version: 1\nflows:\n  a:\n    command: x\n    runs_on: [GPU]\n")
    proc = puppemon("validate", cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert "puppemon.yaml:5:15: flows.a.runs_on[0]: 'GPU' is not a valid label" in proc.stderr


# -- one daemon in-process: what it takes, what its deploy record says ---------------------------

IN_PROCESS = """\
version: 1
flows:
  plain:
    command: ["true"]
    every: 1h
  train:
    command: ["true"]
    every: 1h
    run_on_deploy: true
    runs_on: [gpu]
    user: someone-else
    python: {requirements: requirements.txt}
  orphan:
    command: ["true"]
    runs_on: [tpu, gpu]
"""


def remote_paths(bare: Path) -> list[str]:
    return git("--git-dir", str(bare), "ls-tree", "-r", "--name-only", "runs").split("\n")


def test_a_daemon_takes_only_the_flows_it_has_every_label_of(tmp_path, bare_remote, caplog):
    # train's environment could not be built and its OS user is not granted: neither matters to this daemon
    repo = manifest_project(tmp_path, str(bare_remote), IN_PROCESS,
                            {"requirements.txt": "no-such-package-for-puppemon-tests==0.0.0\n"})
    puppemon("push", cwd=repo)
    caplog.set_level(logging.INFO, "puppemon")
    settings = Settings(remote=str(bare_remote), state=tmp_path / "state", name="eu-box", grace=5, labels=("eu",))
    with Daemon(settings) as daemon:   # the real clock: requests are dated by it
        daemon.cycle(catch_up=True)
        assert daemon.deployer.current is not None
        assert not daemon.queue.busy()                  # train runs on deploy, but not here
        [record] = deploy_records(bare_remote)
        assert record["status"] == "deployed"
        assert record["flows"]["train"] == {"trigger": record["flows"]["train"]["trigger"], "taken_here": False,
                                            "why": "needs labels gpu"}
        assert record["flows"]["orphan"]["taken_here"] is False
        assert record["flows"]["orphan"]["why"] == "needs labels tpu, gpu"
        assert "taken_here" not in record["flows"]["plain"] and "environments" not in record
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("flow orphan needs labels tpu, gpu: no daemon here has them" in m for m in warned), warned
        assert any("flow train needs labels gpu: no daemon here has them" in m for m in warned), warned
        assert not any("someone-else" in m for m in warned), warned   # no server-side check of train here

        daemon.fire("train", datetime.now(timezone.utc))
        assert not daemon.queue.busy()
        status = daemon.status()
        assert status["labels"] == ["eu"]
        assert status["flows"]["train"] == {"next": None, "runs_on": ["gpu"], "taken_here": False}
        assert status["flows"]["plain"]["next"] is not None
        assert daemon.not_here("plain") is None
        assert daemon.not_here("train") == ("flow 'train' needs labels gpu; this daemon (eu-box) has eu: another "
                                            "daemon with them takes it")

        # requests: the one for train is left alone (not claimed, not refused); plain's is served
        train_id = puppemon("trigger", "train", cwd=repo).stdout.strip()
        plain_id = puppemon("trigger", "plain", cwd=repo).stdout.strip()
        for _ in range(2):   # claim, then start
            daemon.cycle()
        assert daemon.queue.wait_idle(30)
        daemon.publish()
        daemon.cycle()
    records = remote_records(bare_remote)
    assert [(r["flow"], r["id"]) for r in records] == [("plain", plain_id)]
    paths = remote_paths(bare_remote)
    assert any(p.endswith(f"{plain_id}.claim.json") for p in paths)
    assert [p for p in paths if train_id in p] == [next(p for p in paths if p.endswith(f"{train_id}.json"))]


# -- two daemon processes on one remote -------------------------------------------------------

TWO = """\
version: 1
flows:
  train:
    command: ["true"]
    every: 1s
    runs_on: [gpu]
  report:
    command: ["true"]
    every: 1s
    runs_on: [eu]
  gpu-job:
    command: ["true"]
    runs_on: [gpu]
  orphan:
    command: ["true"]
    every: 1s
    runs_on: [tpu]
"""


@pytest.mark.slow
def test_two_daemons_with_different_labels_each_run_only_their_flows(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), TWO)
    puppemon("push", cwd=repo)
    (tmp_path / "gpu.yaml").write_text("labels: [gpu]\n")   # one from its config file, one on the command line
    gpu = DaemonProcess(str(bare_remote), tmp_path / "s-gpu", "--config", str(tmp_path / "gpu.yaml"), name="gpu")
    eu = DaemonProcess(str(bare_remote), tmp_path / "s-eu", "--labels", "eu", "--listen", "127.0.0.1:0",
                       name="eu", env={"PUPPEMON_HTTP_TOKEN": TOKEN})
    logs = lambda: gpu.log + "\n----\n" + eu.log  # noqa: E731
    with gpu:
        # eu starts once gpu's status is on the remote: at its deploy it sees who takes train
        wait_until(lambda: git("--git-dir", str(bare_remote), "for-each-ref", "refs/puppemon/status/gpu"), 30,
                   "gpu's status ref", lambda: gpu.log)
        eu.start()
        try:
            hook = r"HTTP hook listening on http://127\.0\.0\.1:(\d+)"
            port = int(wait_until(lambda: re.search(hook, eu.log), 30, "the HTTP hook", logs).group(1))

            def count(flow):
                return sum(r["flow"] == flow for r in remote_records(bare_remote))

            wait_until(lambda: count("train") >= 2 and count("report") >= 2, 60, "runs of train and report", logs)
            rids = [puppemon("trigger", "gpu-job", cwd=repo).stdout.strip() for _ in range(3)]
            wait_until(lambda: {r["id"] for r in remote_records(bare_remote)} >= set(rids), 60, "the gpu-job runs",
                       logs)
            status, body = call(port, "POST", "/flows/gpu-job/runs", {"params": {}}, token=TOKEN)
            assert status == 421 and "flow 'gpu-job' needs labels gpu; this daemon (eu) has eu" in body["error"]
            assert call(port, "POST", "/flows/report/runs", {"params": {}}, token=TOKEN)[0] == 202
            shown = json.loads(puppemon("status", "--json", "--fetch", cwd=repo).stdout)
            text = puppemon("status", "--no-fetch", cwd=repo).stdout
            assert gpu.stop() == 0 and eu.stop() == 0
        finally:
            eu.__exit__()
    assert "flow train needs labels gpu: left to gpu" in eu.log
    assert "flow train needs labels gpu: no daemon here has them" not in eu.log
    records = remote_records(bare_remote)
    by_flow: dict[str, set] = {}
    for record in records:
        by_flow.setdefault(record["flow"], set()).add(record["daemon"])
    assert by_flow == {"train": {"gpu"}, "report": {"eu"}, "gpu-job": {"gpu"}}, by_flow
    for rid in rids:
        claim = json.loads(git("--git-dir", str(bare_remote), "show",
                               f"runs:requests/{rid[:4]}/{rid[4:6]}/{rid[6:8]}/{rid}.claim.json"))
        assert claim["daemon"] == "gpu"
    # the deploy is taken by both; each notes what it leaves to others
    deploys = {d["daemon"]: d for d in deploy_records(bare_remote)}
    assert {d["status"] for d in deploys.values()} == {"deployed"}
    assert deploys["eu"]["flows"]["train"]["taken_here"] is False
    assert deploys["gpu"]["flows"]["report"] == {**deploys["gpu"]["flows"]["report"], "taken_here": False,
                                                 "why": "needs labels eu"}
    for d in (gpu, eu):
        assert "flow orphan needs labels tpu: no daemon here has them" in d.log, d.log
    # status: who takes what, and the flow nobody can take
    assert shown["unplaced"] == [{"flow": "orphan", "runs_on": ["tpu"]}]
    daemons = {d["name"]: d for d in shown["daemons"]}
    assert daemons["gpu"]["labels"] == ["gpu"] and daemons["eu"]["labels"] == ["eu"]
    for d in daemons.values():
        assert d["flows"]["train"]["on"] == ["gpu"] and d["flows"]["report"]["on"] == ["eu"]
    assert "orphan: needs labels tpu: no live daemon has them" in text
    fsck(bare_remote)
    assert linear(bare_remote)


# -- status and upcoming layouts --------------------------------------------------------------

def test_status_shows_who_takes_each_flow_at_120_and_drops_it_first(project, bare_remote):
    puppemon("push", cwd=project)
    tip = git("--git-dir", str(bare_remote), "rev-parse", "flows").strip()
    now = utc_iso(datetime.now(timezone.utc))
    write_status(bare_remote, "gpu-box", flows_commit=tip, heartbeat=now, labels=["gpu"],
                 flows={"hello": {"next": "2026-11-25T09:00:00.000Z"},
                        "train": {"next": "2026-11-25T10:00:00.000Z", "runs_on": ["gpu"]},
                        "orphan": {"next": None, "runs_on": ["tpu"], "taken_here": False}})
    write_status(bare_remote, "box", flows_commit=tip, heartbeat=now,
                 flows={"hello": {"next": "2026-11-25T09:00:00.000Z"},
                        "train": {"next": None, "runs_on": ["gpu"], "taken_here": False},
                        "orphan": {"next": None, "runs_on": ["tpu"], "taken_here": False}})
    puppemon("status", "--fetch", cwd=project)
    wide = re.sub(r"heartbeat \d+ s ago", "heartbeat N s ago", on_terminal("status", "--no-fetch", cwd=project,
                                                                           columns=120))
    # no run has an id yet: the empty id column keeps its gap before `on`
    assert wide.replace(tip[:7], "<tip>") == """\
box: running, heartbeat N s ago
  on server, pid 4242, puppemon 0.1.0
  deployed <tip>: up to date
  flow     next                      last run      on
  hello    2026-11-25 09:00:00 UTC   -             box, gpu-box
  orphan   not here                  -             none
  train    not here                  -             gpu-box
  no runs in flight

gpu-box: running, heartbeat N s ago
  on server, pid 4242, puppemon 0.1.0
  deployed <tip>: up to date
  labels gpu
  flow     next                      last run      on
  hello    2026-11-25 09:00:00 UTC   -             box, gpu-box
  orphan   not here                  -             none
  train    2026-11-25 10:00:00 UTC   -             gpu-box
  no runs in flight

orphan: needs labels tpu: no live daemon has them
"""
    narrow = on_terminal("status", "--no-fetch", cwd=project, columns=60).splitlines()   # `on` goes first
    assert narrow[3:7] == ["  flow     next                      last run", "  hello    2026-11-25 09:00:00 UTC   -",
                           "  orphan   not here                  -", "  train    not here                  -"]
    assert max(map(len, narrow)) <= 60


def test_upcoming_shows_who_takes_each_flow_and_drops_it_first(project, bare_remote, capsys, monkeypatch):
    from puppemon.commands import upcoming

    (project / "puppemon.yaml").write_text("version: 1\nflows:\n  train:\n    command: x\n    every: 6h\n"
                                           "    runs_on: [gpu]\n  hello:\n    command: x\n    schedule: '0 9 * * *'\n")
    git("commit", "-qam", "labels", cwd=project)
    puppemon("push", cwd=project)
    tip = git("--git-dir", str(bare_remote), "rev-parse", "flows").strip()
    now = datetime(2026, 11, 25, 8, 40, tzinfo=timezone.utc)
    beat = utc_iso(now - timedelta(seconds=10))
    write_status(bare_remote, "gpu-box", flows_commit=tip, heartbeat=beat, labels=["gpu"],
                 flows={"train": {"next": "2026-11-25T12:00:00.000Z", "runs_on": ["gpu"]}})
    write_status(bare_remote, "box", flows_commit=tip, heartbeat=beat, labels=[])
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.setenv("COLUMNS", "120")
    assert upcoming.main(directory=str(project), now=now, fetch=True) == 0
    assert capsys.readouterr().out == """\
NEXT                   LEFT      FLOW    TRIGGER                FLOW TIME       ON
────────────────────────────────────────────────────────────────────────────────────────────
2026-11-25 09:00 UTC   20m 00s   hello   cron 0 9 * * * (UTC)   Wed 09:00 UTC   box, gpu-box
2026-11-25 12:00 UTC   3h 20m    train   every 6h               Wed 12:00 UTC   gpu-box
"""
    monkeypatch.setenv("COLUMNS", "80")   # ON is the first to go
    assert upcoming.main(directory=str(project), now=now, fetch=False) == 0
    assert capsys.readouterr().out.splitlines()[0].split() == ["NEXT", "LEFT", "FLOW", "TRIGGER", "FLOW", "TIME"]
    assert upcoming.main(directory=str(project), now=now, fetch=False, as_json=True) == 0
    flows = {f["flow"]: f for f in json.loads(capsys.readouterr().out)["flows"]}
    assert (flows["train"]["runs_on"], flows["train"]["on"]) == (["gpu"], ["gpu-box"])
    assert (flows["hello"]["runs_on"], flows["hello"]["on"]) == ([], ["box", "gpu-box"])
