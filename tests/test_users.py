"""Flows that run as other OS users, granted by the daemon's config (`users:`), never by the manifest alone."""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.conftest import git, puppemon, unavailable
from tests.daemon_helpers import deploy_records, fsck, manifest_project, of_flow, remote_records, run_daemon_once

VALUE = "tok-7d41c0ffee"


@pytest.fixture(autouse=True)
def as_root():
    if os.geteuid() != 0:
        unavailable("running flows as other OS users needs a daemon started as root")


@pytest.fixture
def shared():
    """A directory every user can reach (pytest's tmp dirs are closed to others)."""
    path = Path(tempfile.mkdtemp(prefix="puppemon-users-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def config(tmp_path: Path, shared: Path, users: str) -> Path:
    secrets = shared / "secrets.yaml"  # reachable by everyone: only its own mode keeps it closed
    secrets.write_text(f"tok:\n  value: {VALUE}\n  flows: [holder]\n")
    secrets.chmod(0o600)
    path = tmp_path / "daemon.yaml"
    path.write_text(f"secrets: {secrets}\nmax_parallel: 4\nusers:\n{users}")
    return path


def manifest(shared: Path) -> str:
    up, done = shared / "holder-up", shared / "nobody-done"
    grep = f"grep -l {VALUE} /proc/[0-9]*/environ 2>/dev/null | wc -l"
    return f"""\
version: 1
flows:
  holder:
    command: 'echo "root sees $({grep})"; touch {up}; while [ ! -e {done} ]; do sleep 0.05; done'
    secrets: [tok]
    run_on_deploy: true
    timeout: 30s
  as-nobody:
    user: nobody
    command: >-
      while [ ! -e {up} ]; do sleep 0.05; done;
      id -un > "$PUPPEMON_OUTPUT_DIR/who"; echo "home=$HOME";
      touch in-workdir "$TMPDIR/in-tmp" && echo wrote;
      cat {shared / "secrets.yaml"} > /dev/null 2>&1 && echo secrets-open || echo secrets-closed;
      echo "nobody sees $({grep})"; touch {done}
    run_on_deploy: true
    timeout: 30s
  stranger:
    user: nobody
    command: id -un
    run_on_deploy: true
"""


def test_a_granted_flow_runs_as_its_user_and_cannot_read_other_runs_or_the_secrets(tmp_path, bare_remote, shared):
    cfg = config(tmp_path, shared, '  nobody: [as-nobody, "other-*"]\n')
    repo = manifest_project(tmp_path, str(bare_remote), manifest(shared))
    puppemon("push", cwd=repo)
    proc = run_daemon_once(str(bare_remote), tmp_path / "state", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    records = remote_records(bare_remote)

    nobody = of_flow(records, "as-nobody")[0]
    assert nobody["status"] == "succeeded", nobody
    run_path = f"runs/as-nobody/{nobody['id'][:4]}/{nobody['id'][4:6]}/{nobody['id'][6:8]}/{nobody['id']}"
    assert git("--git-dir", str(bare_remote), "show", f"runs:{run_path}/outputs/who") == "nobody\n"
    log = git("--git-dir", str(bare_remote), "show", f"runs:{run_path}/log.txt")
    assert "home=/nonexistent" in log and "wrote" in log
    assert "secrets-closed" in log and "nobody sees 0" in log
    holder = of_flow(records, "holder")[0]
    holder_log = git("--git-dir", str(bare_remote), "show",
                     f"runs:runs/holder/{holder['id'][:4]}/{holder['id'][4:6]}/{holder['id'][6:8]}/"
                     f"{holder['id']}/log.txt")
    assert holder["status"] == "succeeded"
    assert re.search(r"root sees [1-9]", holder_log), holder_log  # the same look finds it as root

    stranger = of_flow(records, "stranger")[0]
    assert stranger["status"] == "failed"
    assert stranger["error"] == (f"flow 'stranger' asks to run as user 'nobody', which {cfg} does not grant to "
                                 "it (add 'stranger' under users: nobody: there)")
    [deployed] = [d for d in deploy_records(bare_remote) if d["status"] == "deployed"]
    assert deployed["flows"]["stranger"]["note"] == stranger["error"]
    assert "note" not in deployed["flows"]["as-nobody"]
    fsck(bare_remote)


def test_an_entrypoint_flow_as_a_user_who_cannot_read_puppemon_is_told_why(tmp_path, bare_remote, shared):
    import sys

    import puppemon as package
    from puppemon.run.users import blocked, lookup

    nobody = lookup("nobody")
    stops = [blocked(nobody, sys.executable, True), blocked(nobody, os.path.dirname(package.__file__))]
    cfg = config(tmp_path, shared, "  nobody: [py-nobody]\n")
    repo = manifest_project(tmp_path, str(bare_remote), "version: 1\nflows:\n  py-nobody:\n    user: nobody\n"
                            "    entrypoint: job.py:main\n    run_on_deploy: true\n",
                            {"job.py": "import os\ndef main():\n    return os.getuid()\n"})
    puppemon("push", cwd=repo)
    proc = run_daemon_once(str(bare_remote), tmp_path / "state", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    [record] = of_flow(remote_records(bare_remote), "py-nobody")
    if any(stops):  # the usual install under /root: closed to other users, and said so before anything runs
        assert record["status"] == "failed"
        assert record["error"].startswith("user 'nobody' cannot ")
        assert "install puppemon where that user can read it" in record["error"]
    else:
        assert record["status"] == "succeeded", record
        run_path = f"runs/py-nobody/{record['id'][:4]}/{record['id'][4:6]}/{record['id'][6:8]}/{record['id']}"
        result = json.loads(git("--git-dir", str(bare_remote), "show", f"runs:{run_path}/result.json"))
        assert result == nobody.uid


def test_users_in_the_config_must_be_a_mapping_of_lists(tmp_path, bare_remote):
    cfg = tmp_path / "daemon.yaml"
    cfg.write_text("users: [nobody]\n")
    proc = puppemon("daemon", "--remote", str(bare_remote), "--once", "--config", str(cfg), check=False)
    assert proc.returncode == 1
    assert proc.stderr == (f"Error: {cfg}: users: expected a mapping of OS user names to lists of flows "
                           "(users: {backup: [backup, \"backup-*\"]})\n")


def test_what_a_flow_run_as_another_user_leaves_running_is_stopped_without_ptrace(tmp_path, bare_remote, shared):
    # Root in a container has no CAP_SYS_PTRACE and may not open another user's /proc/<pid>/environ,
    # where a run's processes carry its id: the daemon asks grep, as that user, instead.
    import subprocess
    import sys

    from tests.test_escaped import alive, escape_with_setsid, kill_leftovers, read_pid

    cfg = config(tmp_path, shared, "  nobody: [leaves]\n")
    pid_file = shared / "left.pid"
    repo = manifest_project(tmp_path, str(bare_remote), "version: 1\nflows:\n  leaves:\n    user: nobody\n"
                            f"    command: \"{escape_with_setsid(pid_file)}; echo started\"\n"
                            "    run_on_deploy: true\n")
    puppemon("push", cwd=repo)
    left = None
    try:
        proc = subprocess.run(["setpriv", "--bounding-set", "-sys_ptrace", sys.executable, "-m", "puppemon",
                               "daemon", "--remote", str(bare_remote), "--state", str(tmp_path / "state"),
                               "--name", "d1", "--once", "--config", str(cfg)],
                              capture_output=True, text=True, timeout=60)
        left = read_pid(pid_file)
        assert proc.returncode == 0, proc.stderr
        assert not alive(left)
        [record] = of_flow(remote_records(bare_remote), "leaves")
        assert (record["status"], record["escaped"]) == ("succeeded", 1)
        fsck(bare_remote)
    finally:
        if left:
            kill_leftovers(left)
