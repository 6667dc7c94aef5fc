"""`puppemon push`: deploy the working directory to the flows branch."""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from puppemon.errors import PuppemonError


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(directory: str = ".", remote: str | None = None, branch: str = "flows",
         message: str | None = None, dry_run: bool = False, watch: bool = False) -> int:
    from puppemon.snapshot import deploy

    if watch:
        return watch_and_push(Path(directory), remote, branch, message)
    result = deploy(directory, remote, branch, message, dry_run, log=_say)
    print(result.summary())
    return 0


QUIET = 1.0          # seconds without file events before pushing
MAX_BACKOFF = 60.0


def watch_and_push(directory: Path, remote: str | None, branch: str, message: str | None,
                   stop: threading.Event | None = None) -> int:
    """Push now, then again after each burst of changes; Ctrl-C (or `stop`) ends it with 0."""
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer

    from puppemon.manifest import ManifestError
    from puppemon.snapshot import deploy, snapshot_tree

    directory = directory.resolve()
    stop = stop or threading.Event()
    changed = threading.Event()
    last_event = [0.0]

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event) -> None:
            paths = [event.src_path, getattr(event, "dest_path", "") or ""]
            # our own snapshots write into .git; reacting to them would loop forever
            if all(not p or "/.git/" in f"{p}/" for p in paths) or event.event_type in ("opened", "closed_no_write"):
                return
            last_event[0] = time.monotonic()
            changed.set()

    observer = Observer()
    observer.schedule(Handler(), str(directory), recursive=True)
    observer.start()
    _say(f"watching {directory} (Ctrl-C to stop)")
    pushed_tree: str | None = None
    backoff = 0.0
    pending = True  # push once at start
    try:
        while not stop.is_set():
            if not pending:
                if not changed.wait(0.2):
                    continue
                changed.clear()
                while time.monotonic() - last_event[0] < QUIET and not stop.is_set():
                    stop.wait(0.1)
                pending = True
            try:
                if pushed_tree is not None and snapshot_tree(directory) == pushed_tree:
                    pending = False
                    continue
                result = deploy(directory, remote, branch, message, log=_say)
                pushed_tree = result.tree
                print(result.summary(), flush=True)
                pending, backoff = False, 0.0
            except ManifestError as exc:
                _say(f"Error: {exc.message} (not pushed; waiting for the next change)")
                pushed_tree, pending = None, False
            except PuppemonError as exc:
                backoff = min(MAX_BACKOFF, backoff * 2 or 1.0)
                _say(f"Error: {exc.message} (retrying in {backoff:g}s; still watching)")
                if stop.wait(backoff):
                    break
    except KeyboardInterrupt:
        pass
    finally:
        observer.stop()
        observer.join(timeout=5)
    _say("stopped watching")
    return 0
