"""The daemon's state directory: a lock, the in-flight journal, and last fire times.

Layout::

    STATE/daemon.lock          held (flock) while a daemon uses this directory
    STATE/mirror.git/          bare mirror of the remote
    STATE/deploys/<sha>/       checked-out deploys
    STATE/journal/<run>.json   one file per run in flight; left behind only by a crash
    STATE/journal/<run>.log    what that run printed so far, redacted and bounded (run/capture.py Spool)
    STATE/journal/<key>.record a record the runs branch could not take yet (a full disk)
    STATE/fires.json           last scheduled fire time per flow (for catch-up)
    STATE/deployed             the flows commit deployed last

A journal entry holds the run's context (what its record will say) and what its
backend needs to find its processes again after a crash (`backend`, `handle`).

The directory and the ones the daemon keeps in it are 0700, the files it writes
0600: secrets reach the deploys (a flow's own files) and the journal (params);
a state directory made by an older version is tightened when it is opened.
"""
from __future__ import annotations

import base64
import fcntl
import json
import logging
import os
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from puppemon.errors import PuppemonError
from puppemon.formats import parse_iso, utc_iso
from puppemon.history.recorder import disk_words
from puppemon.history.records import RunContext

log = logging.getLogger("puppemon")


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temp file, fsync and rename, so a crash leaves the old or the new file, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass
class Leftover:
    """A run that was in flight when a daemon died."""

    context: RunContext
    started: datetime | None
    backend: str
    handle: dict


class StateDir:
    """The daemon's state directory."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).expanduser().resolve()
        self.journal_dir = self.path / "journal"
        self.deploys_dir = self.path / "deploys"
        self.mirror_dir = self.path / "mirror.git"
        self.envs_dir = self.path / "envs"        # Python environments (run/environments.py)
        self.images_dir = self.path / "images"    # markers of the container images built here (run/images.py)
        self._lock_fh = None

    def open(self) -> None:
        """Create the layout and take the lock; refuse when another daemon holds it."""
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            for d in (self.path, self.journal_dir, self.deploys_dir, self.mirror_dir):
                d.mkdir(mode=0o700, exist_ok=True)
                os.chmod(d, 0o700)  # also one an older version made with the umask's mode
        except OSError as exc:
            raise PuppemonError(f"cannot use state directory {self.path}: {exc.strerror}; "
                                f"pass --state DIR with a directory you can write") from None
        fh = open(os.open(self.path / "daemon.lock", os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600), "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            fh.close()
            raise PuppemonError(f"another puppemon daemon (pid {holder}) is using {self.path}; "
                                f"stop it or pass a different --state") from None
        os.fchmod(fh.fileno(), 0o600)
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
    def _try_write(self, path: Path, data: bytes, what: str) -> bool:
        """write_atomic, or (a full disk) one log line saying what was not written and why."""
        try:
            write_atomic(path, data)
            return True
        except OSError as exc:
            path.with_name(f".{path.name}.tmp").unlink(missing_ok=True)
            log.warning("%s not written to %s: %s", what, path.parent, disk_words(exc))
            return False

    def journal(self, ctx: RunContext, started: datetime, backend: str) -> None:
        """Note a run that is starting; it stays noted until `unjournal` (a crash leaves it).

        A full disk does not stop the run: it is only not noted (a crash then goes unrecorded)."""
        entry = {**asdict(ctx), "scheduled": utc_iso(ctx.scheduled), "started": utc_iso(started),
                 "backend": backend, "handle": None}
        self._try_write(self.journal_dir / f"{ctx.run_id}.json", json.dumps(entry).encode(),
                        f"the journal entry of run {ctx.run_id}")

    def journal_handle(self, run_id: str, handle: dict) -> None:
        """Add what the backend needs to stop the run's processes after a crash."""
        path = self.journal_dir / f"{run_id}.json"
        try:
            entry = json.loads(path.read_text())
        except OSError:
            return  # not noted at its start (the disk was full)
        entry["handle"] = handle
        self._try_write(path, json.dumps(entry).encode(), f"the journal entry of run {run_id}")

    def unjournal(self, run_id: str) -> None:
        (self.journal_dir / f"{run_id}.json").unlink(missing_ok=True)
        self.spool_path(run_id).unlink(missing_ok=True)

    def spool_path(self, run_id: str) -> Path:
        """Where a run's output is kept as it comes, so a crash does not lose it."""
        return self.journal_dir / f"{run_id}.log"

    def captured(self, run_id: str, secrets: dict) -> bytes:
        """What a run a crash left behind had printed (as its log would keep it, redacted with `secrets`)."""
        from puppemon.run.capture import read_spool

        kept = read_spool(self.spool_path(run_id))
        return kept.render(secrets) if kept is not None and kept.total else b""

    def leftovers(self) -> list[Leftover]:
        """The runs that were in flight when a previous daemon died."""
        found = []
        for path in sorted(self.journal_dir.glob("*.json")):
            try:
                entry = json.loads(path.read_text())
                found.append(_leftover(entry))
            except (OSError, ValueError, KeyError, TypeError):
                path.unlink(missing_ok=True)  # a torn write from before the rename: nothing started
        return found

    # -- records waiting for the disk (daemon/ledger.py) -------------------------
    def save_record(self, key: str, files: dict, message: str, record: dict | None) -> bool:
        """Keep a record the runs branch could not take yet; False when there is no room here either."""
        encoded = {path: None if value is None else
                   [base64.b64encode(value if isinstance(value, bytes) else value[0]).decode(),
                    None if isinstance(value, bytes) else value[1]]
                   for path, value in files.items()}
        data = json.dumps({"key": key, "message": message, "record": record, "files": encoded}).encode()
        return self._try_write(self.journal_dir / f"{key}.record", data, f"the waiting record {key}")

    def saved_records(self) -> list[tuple[str, dict, str, dict | None]]:
        """(key, files, message, run.json or None) of each record kept by `save_record`, oldest first."""
        found = []
        for path in sorted(self.journal_dir.glob("*.record")):
            try:
                data = json.loads(path.read_bytes())
                files = {p: None if v is None else (base64.b64decode(v[0]) if v[1] is None
                                                    else (base64.b64decode(v[0]), v[1]))
                         for p, v in data["files"].items()}
                found.append((data["key"], files, data["message"], data.get("record")))
            except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
                log.warning("unreadable waiting record %s left as it is: %s", path, exc)
        return found

    def drop_record(self, key: str) -> None:
        (self.journal_dir / f"{key}.record").unlink(missing_ok=True)

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
        self._try_write(self.path / "fires.json", json.dumps(data, indent=1).encode(), "the last fire times")

    # -- the deployed flows commit ---------------------------------------------
    def deployed(self) -> str | None:
        try:
            return (self.path / "deployed").read_text().strip() or None
        except OSError:
            return None

    def set_deployed(self, sha: str) -> None:
        self._try_write(self.path / "deployed", sha.encode() + b"\n", "the deployed flows commit")


def _leftover(entry: dict[str, Any]) -> Leftover:
    ctx = RunContext(run_id=entry["run_id"], flow=entry["flow"], trigger=entry.get("trigger") or {},
                     scheduled=parse_iso(entry.get("scheduled")), params=entry.get("params") or {},
                     flows_commit=entry.get("flows_commit") or "", source_commit=entry.get("source_commit") or "",
                     daemon=entry.get("daemon") or "", request=entry.get("request"))
    handle = entry.get("handle")
    if handle is None and "pid" in entry:  # written before runs had backends: a local process group
        handle = {"pid": entry["pid"], "pid_start": entry.get("pid_start")}
    return Leftover(ctx, parse_iso(entry.get("started")), entry.get("backend") or "local", handle or {})
