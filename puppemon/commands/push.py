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
         message: str | None = None, dry_run: bool = False, watch: bool = False,
         allow: tuple[str, ...] = ()) -> int:
    from puppemon.project.snapshot import deploy

    if watch:
        return watch_and_push(Path(directory), remote, branch, message, allow=allow)
    result = deploy(directory, remote, branch, message, dry_run, log=_say, allow=allow)
    if result.commit:
        from puppemon.commands.reading import forget

        forget(result.git_dir)   # `status` shows the flows tip: it reads it again
    if dry_run and not result.up_to_date:
        for line in listing(result):
            print(line)
    print(result.summary())
    return 0


def listing(result) -> list[str]:
    """One line per path a push would add, change or remove, with its size, then the snapshot's total."""
    from puppemon.formats import format_size, plural

    sizes = [format_size(c.size) for c in result.changes]
    width = max(map(len, sizes), default=0)
    lines = [f"{c.status:<8} {size:>{width}}  {c.path}" for c, size in zip(result.changes, sizes)]
    files, total = result.total
    return lines + [f"total: {plural(files, 'file')}, {format_size(total)} in the snapshot"]


QUIET = 1.0          # seconds without file events before pushing
MAX_BACKOFF = 60.0


class _Changes:
    """File events below a directory (our own writes into .git left out), with the time of the last one."""

    def __init__(self, directory: Path) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        self.changed = threading.Event()
        self.last = 0.0
        changes = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                paths = [event.src_path, getattr(event, "dest_path", "") or ""]
                # our own snapshots write into .git; reacting to them would loop forever
                if all(not p or "/.git/" in f"{p}/" for p in paths) or event.event_type in ("opened",
                                                                                            "closed_no_write"):
                    return
                changes.last = time.monotonic()
                changes.changed.set()

        self.observer = Observer()
        self.observer.schedule(Handler(), str(directory), recursive=True)
        self.observer.start()

    def wait_for_quiet(self, stop: threading.Event) -> bool:
        """True once files changed and then QUIET seconds passed without another change."""
        if not self.changed.wait(0.2):
            return False
        self.changed.clear()
        while time.monotonic() - self.last < QUIET and not stop.is_set():
            stop.wait(0.1)
        return True

    def close(self) -> None:
        self.observer.stop()
        self.observer.join(timeout=5)


def watch_and_push(directory: Path, remote: str | None, branch: str, message: str | None,
                   stop: threading.Event | None = None, allow: tuple[str, ...] = ()) -> int:
    """Push now, then again after each burst of changes; Ctrl-C (or `stop`) ends it with 0."""
    from puppemon.commands.reading import forget
    from puppemon.project.manifest import ManifestError
    from puppemon.project.root import find_root
    from puppemon.project.snapshot import deploy, snapshot_tree

    directory = find_root(directory)
    stop = stop or threading.Event()
    changes = _Changes(directory)
    _say(f"watching {directory} (Ctrl-C to stop)")
    pushed_tree: str | None = None
    backoff = 0.0
    pending = True  # push once at start
    try:
        while not stop.is_set():
            if not pending:
                pending = changes.wait_for_quiet(stop)
                continue
            try:
                if pushed_tree is not None and snapshot_tree(directory) == pushed_tree:
                    pending = False
                    continue
                result = deploy(directory, remote, branch, message, log=_say, allow=allow)
                if result.commit:
                    forget(result.git_dir)
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
        changes.close()
    _say("stopped watching")
    return 0
