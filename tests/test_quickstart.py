"""`puppemon quickstart` end to end, and the systemd example under examples/systemd."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from puppemon.daemon.settings import build_settings, load_config
from tests.conftest import git, puppemon, unavailable, wait_until

SYSTEMD = Path(__file__).resolve().parent.parent / "examples" / "systemd"


@pytest.mark.slow
def test_quickstart_runs_the_demo_and_records_it(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = puppemon("quickstart", "demo", "--for", "6s", cwd=elsewhere, timeout=120)
    demo = elsewhere / "demo"
    remote = demo / "remote.git"
    out = proc.stdout.splitlines()
    assert out[0] == f"created {demo} (a git repository whose origin is {remote})"
    assert out[1].startswith("pushed flows ") and out[1].endswith(
        " to origin (2 flows; 0 files changed, 3 added, 0 removed)")
    assert out[2] == "running the daemon for 6s (Ctrl-C stops it sooner)..."
    # the daemon's events went to stderr
    assert "deployed " in proc.stderr and "disk-usage: started run " in proc.stderr
    assert "daemon quickstart stopped" in proc.stderr

    # what it printed at the end is the remote's history, then the next steps
    log = git("--git-dir", str(remote), "log", "--oneline", "runs")
    assert f"git log --oneline runs ({remote}):\n{log}\nnext:\n" in proc.stdout
    assert f"  cd {demo}\n  puppemon runs " in proc.stdout
    subjects = git("--git-dir", str(remote), "log", "--format=%s", "runs").splitlines()
    assert subjects[-1] == "layout 1 of the runs branch"   # control/format.json, written once (history/layout.py)
    assert subjects[-2].startswith("deploy ") and subjects[-2].endswith(": deployed (2 flows)")
    assert any(s.startswith("disk-usage: succeeded in ") and s.endswith("(deploy)") for s in subjects)
    assert any(s.startswith("hello: succeeded in ") and s.endswith("(schedule)") for s in subjects)
    git("--git-dir", str(remote), "fsck", "--strict", "--no-dangling")

    # the remote and the state stay out of the demo's git status and of the deploy
    assert git("status", "--porcelain", cwd=demo) == ""
    assert (demo / ".puppemon-state").is_dir()
    deployed = git("--git-dir", str(remote), "ls-tree", "--name-only", "flows").split()
    assert deployed == [".gitignore", "hello.py", "puppemon.yaml"]

    # the next steps work
    runs = json.loads(puppemon("runs", "--json", cwd=demo).stdout)
    hello = next(r for r in runs if r["flow"] == "hello")
    assert hello["status"] == "succeeded" and hello["outputs"][0]["path"] == "greeting.txt"
    assert json.loads(puppemon("logs", "hello", "--result", cwd=demo).stdout)["greeted"] == "world"
    assert puppemon("logs", "hello", cwd=demo).stdout.startswith("hello, world! it is ")
    status = json.loads(puppemon("status", "--json", cwd=demo).stdout)
    assert [(d["name"], d["state"], d["up_to_date"]) for d in status["daemons"]] == [
        ("quickstart", "stopped", True)]


def test_quickstart_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("mine\n")
    proc = puppemon("quickstart", "taken", cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert proc.stderr == (f"Error: {tmp_path / 'taken'} already exists and is not empty; pick another "
                           "directory (`puppemon quickstart DIR`)\n")
    assert proc.stdout == ""
    assert sorted(p.name for p in (tmp_path / "taken").iterdir()) == ["file"]


def test_quickstart_refuses_a_bad_duration(tmp_path):
    proc = puppemon("quickstart", "x", "--for", "soon", cwd=tmp_path, check=False)
    assert proc.stderr == "Error: --for 'soon': not a duration (use 30, 30s, 10m, 2h)\n"
    assert not (tmp_path / "x").exists()


def test_the_demo_manifest_is_valid(tmp_path):
    from puppemon.commands.quickstart import MANIFEST
    from puppemon.project.manifest import parse

    flows = parse(MANIFEST).flows
    assert flows["hello"].entrypoint == "hello.py:main"
    assert flows["disk-usage"].trigger("deploy") is not None


# --- examples/systemd -------------------------------------------------------------

def test_systemd_example_config_loads():
    path = SYSTEMD / "daemon.yaml"
    config = load_config(str(path))
    assert set(config) == {"remote", "state", "name", "poll", "max_parallel", "grace", "secrets", "listen",
                           "token_file", "keep"}
    settings = build_settings({"config": str(path)})
    assert (settings.remote, str(settings.state), settings.name) == (
        "git@git.example.com:me/automations.git", "/var/lib/puppemon/daemon", "server1")
    assert (settings.poll, settings.max_parallel, settings.grace, settings.keep) == (60.0, 4, 30.0, 90 * 86400.0)
    assert (settings.listen, settings.secrets_file) == ("127.0.0.1:8765", "/etc/puppemon/secrets.yaml")


def test_systemd_unit_stops_gracefully_within_its_timeout():
    unit = (SYSTEMD / "puppemon-daemon.service").read_text()
    settings = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert settings["ExecStart"] == "/opt/puppemon/bin/puppemon daemon --config /etc/puppemon/daemon.yaml"
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert (settings["KillSignal"], settings["KillMode"], settings["Restart"]) == ("SIGTERM", "mixed", "on-failure")
    grace = build_settings({"config": str(SYSTEMD / "daemon.yaml")}).grace
    assert float(settings["TimeoutStopSec"].removesuffix("s")) > grace
    assert settings["NoNewPrivileges"] == "yes" and settings["StateDirectory"] == "puppemon"


def test_systemd_unit_verifies(tmp_path):
    if shutil.which("systemd-analyze") is None:
        unavailable("systemd-analyze is not installed (`apt install systemd`)")
    unit = tmp_path / "puppemon-daemon.service"
    # verify checks that ExecStart's program exists: this machine's puppemon stands in for /opt/puppemon's
    installed = Path(sys.executable).parent / "puppemon"
    assert installed.is_file()
    unit.write_text((SYSTEMD / "puppemon-daemon.service").read_text().replace("/opt/puppemon/bin/puppemon",
                                                                              str(installed)))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "puppemon-daemon.service" not in proc.stderr, proc.stderr


@pytest.mark.slow
def test_ctrl_c_stops_the_demo_cleanly(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "puppemon", "quickstart", "demo", "--for", "5m"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    remote = tmp_path / "demo" / "remote.git"
    # wait until the run_on_deploy flow is on the remote, then press Ctrl-C
    wait_until(lambda: proc.poll() is not None or "disk-usage:" in git("--git-dir", str(remote), "log",
                                                                        "--format=%s", "runs", check=False),
               60, "the run_on_deploy flow on the remote")
    assert proc.poll() is None, proc.communicate()
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "daemon quickstart stopped" in err
    assert f"git log --oneline runs ({remote}):\n" in out and "disk-usage: succeeded" in out
