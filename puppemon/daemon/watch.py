"""The daemon side of `on_file:` (project/filewatch.py): watch server directories, run each file once.

Where. A flow may watch only under the directories the server's config allows (`watch_roots:`,
`--watch-root`; none by default), compared after symlinks and `..` are resolved, and only a
directory that exists: otherwise the deploy is refused (`watch_check`, called by the deployer)
with an error naming the flow. Flows this daemon does not take (their `runs_on`) are not checked
nor watched here.

When. A watchdog Observer (inotify) hears files created, written, moved in; with `poll: true` a
PollingObserver looks instead (NFS and SMB mounts deliver no inotify events). A file seen goes
to the settle thread, which stats it until its size and mtime have stayed the same for the
flow's `settle`: an upload still being written keeps changing and does not fire. Then each
file is one run, or with `batch: true` the files wait for each other: once every file seen is
quiet (or one has waited STARVE settle times), they are one run.

Once. A file is identified by (flow, path, size, mtime_ns): its key is a hash of those, and its
claim `watch/<flow>/<key[:2]>/<key>.json` on the runs branch (never rotated) is both the claim
that decides which daemon runs it (daemon/claims.py: committed and pushed before the run, the
first push wins) and the record that it was handled, which a restart reads back. A file written
again (new size or mtime) is a new file. When a watch begins (a daemon starts, a deploy adds
it), the files already in the directory that no claim names are run by the flow's `catchup`:
none (only files that arrive from now on), latest (the newest of them), all (every one).
"""
from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from puppemon.daemon.deployer import Deployment, Refused
from puppemon.daemon.queue import Pending
from puppemon.daemon.source import Source, SourceContext
from puppemon.formats import is_within, plural

if TYPE_CHECKING:
    from puppemon.project.filewatch import OnFile

log = logging.getLogger("puppemon")

MAX_BATCH = 200          # files in one batched run at most (their paths travel in its environment)
ONCE_PATIENCE = 60.0     # --once: how long past its settle time a file still being written is waited for
Identity = tuple[int, int]   # (size, mtime_ns)


# --- where a flow may watch: the deploy's server-side check ------------------------------

def refusal(flow: str, path: str, roots: tuple[str, ...]) -> str | None:
    """Why this server does not let `flow` watch `path` (None when it does)."""
    real = os.path.realpath(path)
    shown = path if real == path else f"{path} (that is {real})"
    if not roots:
        return (f"flow {flow!r} watches {shown} (on_file), but this daemon allows no watched directories: "
                "add a directory above it to watch_roots: in the daemon's config file, or pass --watch-root DIR")
    if not any(is_within(real, root) for root in roots):
        return (f"flow {flow!r} watches {shown} (on_file), outside the directories this daemon may watch "
                f"({', '.join(roots)}): add it to watch_roots: in the daemon's config file, or --watch-root DIR")
    if not os.path.isdir(real):
        what = "is not a directory" if os.path.exists(real) else "does not exist on this server"
        return f"flow {flow!r} watches {shown} (on_file), which {what} (create it, or change on_file.path)"
    return None


def watch_check(roots: tuple[str, ...], takes: Callable) -> Callable:
    """The deployer's check of a manifest: Refused for the first flow this daemon takes that watches where it
    may not."""
    def check(manifest) -> None:
        for name, flow in manifest.flows.items():
            spec = flow.trigger("file")
            if spec is not None and takes(flow):
                problem = refusal(name, spec.path, roots)
                if problem:
                    raise Refused(problem)
    return check


# --- each file once --------------------------------------------------------------------

def file_key(flow: str, path: str, identity: Identity) -> str:
    """The claim key of a file: the same on every daemon that sees the same file."""
    size, mtime_ns = identity
    return hashlib.sha256(f"{flow}\0{path}\0{size}\0{mtime_ns}".encode()).hexdigest()[:32]


def handled_path(flow: str, key: str) -> str:
    """`watch/<flow>/<key[:2]>/<key>.json`: the claim (and record) of a watched file on the runs branch."""
    return f"watch/{flow}/{key[:2]}/{key}.json"


def identity_of(path: str) -> Identity | None:
    """(size, mtime_ns) of a regular file, None when it is gone or is not one."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not os.path.isfile(path):
        return None
    return st.st_size, st.st_mtime_ns


STARVE = 5   # a batch waits for busy files at most this many settle times after its first file settled


@dataclass
class Watch:
    """One flow's watch: what it waits to settle, and what it ran (or left alone) already."""

    flow: str
    spec: OnFile
    seen: dict[str, tuple[Identity | None, float]] = field(default_factory=dict)   # path -> (identity, since)
    done: dict[str, Identity] = field(default_factory=dict)     # path -> the identity run or left alone
    observer: object | None = None

    def matches(self, path: str) -> bool:
        directory, name = os.path.split(path)
        return directory == self.spec.path and fnmatch.fnmatchcase(name, self.spec.pattern)

    def present(self) -> dict[str, Identity]:
        """The matching files in the directory now."""
        try:
            names = os.listdir(self.spec.path)
        except OSError as exc:
            log.warning("%s: cannot list %s: %s", self.flow, self.spec.path, exc.strerror)
            return {}
        found = {}
        for name in names:
            path = os.path.join(self.spec.path, name)
            if fnmatch.fnmatchcase(name, self.spec.pattern) and (ident := identity_of(path)) is not None:
                found[path] = ident
        return found


def _handler(on_event: Callable):
    from watchdog.events import FileSystemEventHandler

    class Handler(FileSystemEventHandler):
        def dispatch(self, event) -> None:
            if event.is_directory or event.event_type in ("opened", "closed_no_write"):
                return
            if event.event_type == "moved":
                on_event(os.fsdecode(event.src_path), True)
                on_event(os.fsdecode(event.dest_path), False)
            else:
                on_event(os.fsdecode(event.src_path), event.event_type == "deleted")

    return Handler()


class WatchSource(Source):
    """`on_file:` flows: their observers, the settle thread, and the runs of the files that settled."""

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.watches: dict[str, Watch] = {}
        self.lock = threading.Lock()        # over the watches and what they hold
        self.wake = threading.Event()
        self.started = self.closing = False
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.started = True
        self.thread = threading.Thread(target=self._settle_loop, name="watch", daemon=True)
        self.thread.start()
        with self.lock:
            for watch in self.watches.values():
                self._observe(watch)

    # -- following the deploy ----------------------------------------------------
    def reconcile(self, deployment: Deployment, summary: dict[str, dict]) -> None:
        """Begin, change and end watches so they match the deploy's on_file flows this daemon takes."""
        wanted = {name: flow for name, flow in deployment.manifest.flows.items()
                  if flow.trigger("file") is not None and self.ctx.takes(flow)}
        ended = []
        with self.lock:
            for name in [n for n in self.watches if n not in wanted]:
                ended.append(self.watches.pop(name))
                log.info("stopped watching for %s (no longer in the manifest)", name)
            for name, flow in wanted.items():
                spec, old = flow.trigger("file"), self.watches.get(name)
                summary[name]["watch"] = "polling" if spec.poll else "inotify"
                if old is not None and old.spec == spec:
                    continue
                watch = Watch(name, spec)
                if old is not None:
                    ended.append(old)
                if old is not None and (old.spec.path, old.spec.pattern) == (spec.path, spec.pattern):
                    watch.seen, watch.done = old.seen, old.done   # the same files: nothing begins anew
                else:
                    self._begin(watch, flow.catchup)
                self.watches[name] = watch
                if self.started:
                    self._observe(watch)
        for watch in ended:   # outside the lock: an observer's thread may be waiting for it in _saw
            self._end(watch)
        self.wake.set()

    def _begin(self, watch: Watch, catchup: str) -> None:
        """The files already there when a watch begins: those no claim names are run by `catchup`."""
        present = watch.present()
        tip = self.ctx.runs_tip()
        unhandled = {p: i for p, i in present.items() if not self._handled(tip, watch.flow, p, i)}
        chosen = {"all": list(unhandled), "latest": sorted(unhandled, key=lambda p: unhandled[p][1])[-1:],
                  "none": []}[catchup]
        watch.done.update({p: i for p, i in present.items() if p not in chosen})
        now = time.monotonic()
        watch.seen.update({p: (None, now) for p in chosen})
        log.info("watching %s for %s (%s)%s", os.path.join(watch.spec.path, watch.spec.pattern), watch.flow,
                 "polling" if watch.spec.poll else "inotify",
                 f": {plural(len(chosen), 'file')} already there to run (catchup: {catchup})" if chosen else "")

    def _observe(self, watch: Watch) -> None:
        """Start the watch's observer (inotify, or polling with poll: true or when inotify cannot watch)."""
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        interval = min(1.0, max(0.1, watch.spec.settle / 2))
        for polling in ([True] if watch.spec.poll else [False, True]):
            observer = PollingObserver(timeout=interval) if polling else Observer(timeout=interval)
            try:
                observer.schedule(_handler(lambda path, gone, w=watch: self._saw(w, path, gone)),
                                  watch.spec.path, recursive=False)
                observer.start()
            except OSError as exc:
                log.warning("%s: cannot watch %s with %s (%s)%s", watch.flow, watch.spec.path,
                            "polling" if polling else "inotify", exc.strerror or exc,
                            "" if polling else "; polling it instead")
                continue
            watch.observer = observer
            return

    def _end(self, watch: Watch) -> None:
        observer, watch.observer = watch.observer, None
        if observer is not None:
            observer.stop()
            observer.join(5)

    def _saw(self, watch: Watch, path: str, gone: bool) -> None:
        """An event of the observer's thread: note the file, the settle thread looks at it."""
        if not watch.matches(path):
            return
        with self.lock:
            if gone:
                watch.seen.pop(path, None)
                watch.done.pop(path, None)
                return
            watch.seen[path] = (None, time.monotonic())   # changed: its settle time starts again
        self.wake.set()

    # -- settling ----------------------------------------------------------------
    def _settle_loop(self) -> None:
        while not self.closing:
            try:
                wait = self.settle_once()
            except Exception:  # noqa: BLE001 - a watch left running for months logs and goes on
                log.exception("unexpected error while watching files")
                wait = 1.0
            self.wake.wait(wait)
            self.wake.clear()

    def settle_once(self) -> float:
        """Stat the files waiting to settle, run those that did; how long until it is worth looking again.
        With `batch:` the files wait for each other: none goes until every file seen is quiet (or one has
        been waiting STARVE settle times, so a steady stream still runs)."""
        now, ready, wait = time.monotonic(), [], 5.0
        with self.lock:
            for watch in self.watches.values():
                settle, states = watch.spec.settle, {}
                for path, (before, since) in list(watch.seen.items()):
                    ident = identity_of(path)
                    if ident is None:
                        del watch.seen[path]
                        continue
                    if ident != before:
                        watch.seen[path] = (ident, since := now)
                    states[path] = (ident, since)
                settled = {p: i for p, (i, since) in states.items() if now - since >= settle}
                if watch.spec.batch and len(settled) < len(states) and \
                        not any(now - states[p][1] >= STARVE * settle for p in settled):
                    settled = {}
                files = []
                for path, ident in settled.items():
                    del watch.seen[path]
                    if watch.done.get(path) != ident:
                        watch.done[path] = ident
                        files.append((path, ident))
                for path, (_, since) in states.items():
                    if path not in settled:
                        wait = min(wait, max(0.02, since + settle - now))
                if watch.seen:
                    wait = min(wait, max(0.05, settle / 4))
                if files:
                    ready.append((watch, files))
        for watch, files in ready:
            self._run(watch, sorted(files))
        return max(0.02, wait)

    def _handled(self, tip: str | None, flow: str, path: str, ident: Identity) -> bool:
        store = self.ctx.store
        return bool(tip) and store.lookup(tip, handled_path(flow, file_key(flow, path, ident))) is not None

    def _run(self, watch: Watch, files: list[tuple[str, Identity]]) -> None:
        """Ask for the runs of files that settled: one each, or one per batch; none for a file handled already."""
        tip = self.ctx.runs_tip()
        fresh = [(p, i) for p, i in files if not self._handled(tip, watch.flow, p, i)]
        if not fresh:
            return
        size = MAX_BATCH if watch.spec.batch else 1
        for start in range(0, len(fresh), size):
            group = fresh[start:start + size]
            keys = [file_key(watch.flow, p, i) for p, i in group]
            claims = {handled_path(watch.flow, k): {"file": p, "size": i[0], "mtime_ns": i[1]}
                      for k, (p, i) in zip(keys, group)}
            log.info("%s: %s settled in %s", watch.flow, ", ".join(os.path.basename(p) for p, _ in group),
                     watch.spec.path)
            self.ctx.submit(Pending(watch.flow, {"kind": "file", "files": [p for p, _ in group]},
                                    fire=(self.ctx.clock(), keys[0]), claims=claims))

    # -- the rest of a source ------------------------------------------------------
    def catch_up(self, deployment: Deployment, once: bool) -> None:
        """With --once (no settle thread): wait, here, for the files found at start to settle, and run them."""
        if not once:
            return
        with self.lock:
            settle = max((w.spec.settle for w in self.watches.values() if w.seen), default=None)
        if settle is None:
            return
        deadline = time.monotonic() + settle + ONCE_PATIENCE
        while time.monotonic() < deadline:
            wait = self.settle_once()
            with self.lock:
                if not any(w.seen for w in self.watches.values()):
                    return
            time.sleep(wait)
        log.warning("files still being written after %gs were left for the next start", ONCE_PATIENCE)

    def close(self) -> None:
        self.closing = True
        self.wake.set()
        with self.lock:
            watches = list(self.watches.values())
        for watch in watches:
            self._end(watch)
        if self.thread is not None:
            self.thread.join(5)
            self.thread = None
