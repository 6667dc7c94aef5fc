"""The daemon's state directory: a lock, the in-flight journal, and last fire times.

Layout::

    STATE/daemon.lock          held (flock) while a daemon uses this directory
    STATE/mirror.git/          bare mirror of the remote
    STATE/deploys/<sha>/       checked-out deploys
    STATE/journal/<run>.json   one file per run in flight; left behind only by a crash
    STATE/fires.json           last scheduled fire time per flow (for catch-up)
"""
from __future__ import annotations

import fcntl
import json
import os
import signal
from datetime import datetime
from pathlib import Path
from typing import Any

from puppemon.errors import PuppemonError
from puppemon.records import parse_iso, utc_iso


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temp file, fsync and rename, so a crash leaves the old or the new file, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot), to tell a reused pid from ours."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    return stat.rsplit(")", 1)[1].split()[19]


class StateDir:
    """The daemon's state directory."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).expanduser().resolve()
        self.journal_dir = self.path / "journal"
        self.deploys_dir = self.path / "deploys"
        self.mirror_dir = self.path / "mirror.git"
        self._lock_fh = None

    def open(self) -> None:
        """Create the layout and take the lock; refuse when another daemon holds it."""
        try:
            for d in (self.path, self.journal_dir, self.deploys_dir):
                d.mkdir(parents=True, exist_ok=True)
            os.chmod(self.path, 0o700)
        except OSError as exc:
            raise PuppemonError(f"cannot use state directory {self.path}: {exc.strerror}; "
                                f"pass --state DIR with a directory you can write") from None
        fh = open(self.path / "daemon.lock", "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            fh.close()
            raise PuppemonError(f"another puppemon daemon (pid {holder}) is using {self.path}; "
                                f"stop it or pass a different --state") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._lock_fh = fh

    def close(self) -> None:
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    # -- journal ---------------------------------------------------------------
    def journal(self, run_id: str, entry: dict[str, Any]) -> None:
        write_atomic(self.journal_dir / f"{run_id}.json", json.dumps(entry).encode())

    def journal_pid(self, run_id: str, pid: int) -> None:
        path = self.journal_dir / f"{run_id}.json"
        entry = json.loads(path.read_text())
        entry.update(pid=pid, pid_start=process_start_time(pid))
        self.journal(run_id, entry)

    def unjournal(self, run_id: str) -> None:
        (self.journal_dir / f"{run_id}.json").unlink(missing_ok=True)

    def leftovers(self) -> list[dict[str, Any]]:
        """Journal entries of runs that were in flight when a previous daemon died."""
        entries = []
        for path in sorted(self.journal_dir.glob("*.json")):
            try:
                entries.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                path.unlink(missing_ok=True)  # a torn write from before the rename: nothing started
        return entries

    @staticmethod
    def kill_leftover(entry: dict[str, Any]) -> bool:
        """Kill the process group of a crashed run if it is still alive and really ours."""
        pid = entry.get("pid")
        if not pid or entry.get("pid_start") is None or process_start_time(pid) != entry["pid_start"]:
            return False
        try:
            os.killpg(pid, signal.SIGKILL)  # the run leads its own process group
        except (ProcessLookupError, PermissionError):
            return False
        return True

    # -- last fire times -------------------------------------------------------
    def last_fires(self) -> dict[str, datetime]:
        path = self.path / "fires.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return {flow: parse_iso(text) for flow, text in data.items() if text}

    def save_fires(self, fires: dict[str, datetime]) -> None:
        data = {flow: utc_iso(moment) for flow, moment in sorted(fires.items())}
        write_atomic(self.path / "fires.json", json.dumps(data, indent=1).encode())

    # -- the deployed flows commit ---------------------------------------------
    def deployed(self) -> str | None:
        try:
            return (self.path / "deployed").read_text().strip() or None
        except OSError:
            return None

    def set_deployed(self, sha: str) -> None:
        write_atomic(self.path / "deployed", sha.encode() + b"\n")
