"""A full disk under the daemon's state directory: runs that finish meanwhile keep their true record.

The state directory lives on a small tmpfs. As root a plain mount makes it; in a
container without CAP_SYS_ADMIN the daemon runs in a user + mount namespace of its
own (`unshare -Urm`) that mounts it, and the test reaches that filesystem through
/proc/<daemon pid>/root. A flow fills the filesystem and finishes; its record cannot
be written until the test frees the space, and then it must appear, as it was.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import git, unavailable
from tests.daemon_helpers import (DaemonProcess, deploy, deploy_records, fsck, linear, manifest_project, of_flow,
                                  remote_records, run_daemon_once, wait_until)

pytestmark = pytest.mark.slow

SIZE = "8m"

MANIFEST = """\
version: 1
variables:
  FILL: "{fill}"
flows:
  fill:
    command: head -c 64M /dev/zero > "$FILL/filler"; echo filled the disk; exit 0
    {when}
  hello:
    command: echo hello
    every: 1h
"""


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def _mount_mode(where: Path) -> str:
    """'plain' when this process may mount a tmpfs, 'unshare' when a user + mount namespace may; else skip."""
    plain = _run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(where)]) if shutil.which("mount") else None
    if plain is not None and plain.returncode == 0:
        return "plain"
    probe = (_run(["unshare", "-Urm", "sh", "-c", f'mount -t tmpfs -o size={SIZE} tmpfs "$0"', str(where)])
             if shutil.which("unshare") else None)
    if probe is not None and probe.returncode == 0:
        return "unshare"
    why = [f"mount: {plain.stderr.strip() if plain else 'not installed'}",
           f"unshare -Urm: {probe.stderr.strip() if probe else 'not installed'}"]
    unavailable("needs a small filesystem to fill, and neither a tmpfs mount (needs root or CAP_SYS_ADMIN) "
                "nor one in a user namespace is allowed here: " + "; ".join(why))


@pytest.fixture
def small_fs(tmp_path):
    """(mode, the mount point): an 8 MiB tmpfs, mounted here or by the daemon's own namespace."""
    where = tmp_path / "small"
    where.mkdir()
    mode = _mount_mode(where)
    yield mode, where
    if mode == "plain":
        _run(["umount", "-l", str(where)])


class SmallFsDaemon(DaemonProcess):
    """A daemon whose state directory is on the small filesystem (mounted in its own namespace if need be)."""

    def __init__(self, remote: str, mount: Path, mode: str, log_dir: Path) -> None:
        super().__init__(remote, mount / "state")
        self.mount, self.mode = mount, mode
        self.log_path = log_dir / "daemon.log"  # off the small filesystem: the log must survive it

    def start(self) -> SmallFsDaemon:
        cmd = [sys.executable, "-m", "puppemon", "daemon", *self.args]
        if self.mode == "unshare":
            cmd = ["unshare", "-Urm", "sh", "-c", f'mount -t tmpfs -o size={SIZE} tmpfs "$0" && exec "$@"',
                   str(self.mount), *cmd]  # unshare and sh exec: the pid is the daemon's
        self.log_fh = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log_fh, stderr=subprocess.STDOUT, env=self.env)
        return self

    def path(self, name: str) -> Path:
        """A path on the small filesystem, as this process can reach it."""
        if self.mode == "unshare":
            return Path(f"/proc/{self.proc.pid}/root{self.mount}") / name
        return self.mount / name


def test_a_run_finished_on_a_full_disk_is_recorded_with_its_status_once_space_returns(tmp_path, bare_remote,
                                                                                      small_fs):
    mode, mount = small_fs
    repo = manifest_project(tmp_path, str(bare_remote), MANIFEST.format(fill=mount, when="run_on_deploy: true"))
    deploy(repo)
    with SmallFsDaemon(str(bare_remote), mount, mode, tmp_path) as daemon:
        wait_until(lambda: "not recorded yet: no space left on device" in daemon.log, timeout=60,
                   what="the daemon saying the run's record waits for space", on_fail=lambda: daemon.log)
        filler = daemon.path("filler")
        # The daemon goes on while the disk is full (status, fetch, a new deploy), a line for each thing it
        # cannot write, and no traceback; the run's record waits.
        deploy(repo, MANIFEST.format(fill=mount, when="every: 1h"))
        v2 = git("--git-dir", str(bare_remote), "rev-parse", "flows").strip()
        said = daemon.log.count("no space left on device")
        wait_until(lambda: daemon.log.count("no space left on device") >= said + 3, timeout=30,
                   what="a few cycles on the full disk", on_fail=lambda: daemon.log)
        assert daemon.proc.poll() is None, daemon.log
        assert shutil.disk_usage(filler.parent).free < 64 * 1024
        assert of_flow(remote_records(bare_remote), "fill") == []
        filler.unlink()
        records = wait_until(lambda: of_flow(remote_records(bare_remote), "fill"), timeout=30,
                             what="the run's record once space returned", on_fail=lambda: daemon.log)
        assert [(r["status"], r["exit_code"]) for r in records] == [("succeeded", 0)]
        wait_until(lambda: [d for d in deploy_records(bare_remote) if d["flows_commit"] == v2], timeout=30,
                   what="the deploy pushed while the disk was full", on_fail=lambda: daemon.log)
        assert daemon.stop() == 0, daemon.log
    log = daemon.log
    assert "Traceback" not in log and "crashed" not in log, log
    assert f"fill: run {records[0]['id']} (succeeded) recorded after" in log, log
    assert [d["status"] for d in deploy_records(bare_remote)] == ["deployed", "deployed"]
    fsck(bare_remote)
    assert linear(bare_remote)


def test_a_waiting_record_kept_in_the_journal_is_recorded_at_the_next_start_not_crashed(tmp_path, bare_remote):
    """The daemon stopped (or died) while a record waited for space, after it was saved in the journal."""
    from datetime import datetime, timezone

    from puppemon.daemon.journal import StateDir
    from puppemon.formats import new_id
    from puppemon.history.records import RunContext, run_files, run_message, synthetic_record

    repo = manifest_project(tmp_path, str(bare_remote), MANIFEST.format(fill=tmp_path, when="every: 1h"))
    deploy(repo)
    state = StateDir(tmp_path / "state")
    state.open()
    now = datetime.now(timezone.utc)
    ctx = RunContext(new_id(now), "hello", {"kind": "schedule"}, now, daemon="d1")
    state.journal(ctx, now, "local")  # in flight when the daemon went; its record was kept meanwhile
    record = synthetic_record(ctx, "succeeded", None, now, now)
    assert state.save_record(ctx.run_id, run_files(record, b"hello\n"), run_message(record), record)
    state.close()
    result = run_daemon_once(str(bare_remote), tmp_path / "state")
    assert result.returncode == 0, result.stderr
    assert [(r["id"], r["status"]) for r in of_flow(remote_records(bare_remote), "hello")] == [
        (ctx.run_id, "succeeded")]
    assert sorted(p.name for p in (tmp_path / "state" / "journal").iterdir()) == []
    assert "crashed" not in result.stderr, result.stderr
    fsck(bare_remote)
