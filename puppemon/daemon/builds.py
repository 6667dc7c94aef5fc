"""A deploy's Python environments, built in a thread of their own: while they build, the loop goes on
(fetching, serving requests, publishing) and the current deploy keeps running."""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable

from puppemon.formats import plural
from puppemon.run.environments import EnvError, EnvStore, request_for

log = logging.getLogger("puppemon")


def build_all(envs: EnvStore, manifest, directory: Path, cached_only: bool = False,
              takes: Callable[..., bool] = lambda _flow: True) -> dict | None:
    """{flow name: Environment} for every flow that declares `python:` and that this daemon `takes`, built
    where not cached yet (with `cached_only`: None as soon as one is not); EnvError naming the flow when
    one cannot be built."""
    from puppemon.project.entrypoints import directory_reader

    built = {}
    for flow in manifest.flows.values():
        if flow.python is None or not takes(flow):
            continue
        try:
            request = request_for(flow, directory, directory_reader(directory))
            env = envs.cached(request) if cached_only else envs.ensure(request)
        except (EnvError, ValueError) as exc:
            raise EnvError(f"flows.{flow.name}.python ({flow.python.describe()}): "
                           f"{getattr(exc, 'message', exc)}") from None
        if env is None:
            return None
        built[flow.name] = env
    return built


def _ready(sha: str, built: dict) -> dict:
    for name, env in sorted(built.items()):
        log.info("deploy %s: %s runs in environment %s (Python %s, %s)", sha[:7], name, env.key[:12], env.python,
                 plural(len(env.packages), "package"))
    return built


class Builds:
    """The builds of deploys not swapped in yet, one thread per deploy; `wake` is called when one ends.
    Only the flows `takes` says this daemon takes (its labels) have their environments built here."""

    def __init__(self, envs: EnvStore, wake: Callable[[], None], takes: Callable[..., bool] = lambda _f: True) -> None:
        self.envs, self.wake, self.takes = envs, wake, takes
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        self._done: dict[str, dict | EnvError] = {}

    def result(self, sha: str, manifest, directory: Path, wait: bool = False) -> dict | None:
        """The environments of deploy `sha` once built (EnvError when one cannot be), None while they build."""
        if not any(flow.python is not None and self.takes(flow) for flow in manifest.flows.values()):
            return {}
        with self._lock:
            if sha in self._done:
                self._threads.pop(sha, None)
                outcome = self._done.pop(sha)
                if isinstance(outcome, EnvError):
                    raise outcome
                return _ready(sha, outcome)
            thread = self._threads.get(sha)
            ready = build_all(self.envs, manifest, directory, True, self.takes) if thread is None else None
            if ready is not None:
                return _ready(sha, ready)  # all built already (a redeploy, the same dependencies): no thread
            if thread is None:
                thread = self._threads[sha] = threading.Thread(target=self._build, args=(sha, manifest, directory),
                                                               name=f"build-{sha[:7]}", daemon=True)
                log.info("deploy %s: preparing its Python environments; the current deploy goes on meanwhile",
                         sha[:7])
                thread.start()
        if not wait:
            return None
        thread.join()
        return self.result(sha, manifest, directory)

    def _build(self, sha: str, manifest, directory: Path) -> None:
        try:
            outcome: dict | EnvError = build_all(self.envs, manifest, directory, takes=self.takes)
        except EnvError as exc:
            outcome = exc
        except Exception as exc:  # noqa: BLE001 - a build's surprise refuses its deploy, never kills the daemon
            log.exception("deploy %s: building its environments failed", sha[:7])
            outcome = EnvError(f"building the environments failed: {exc}")
        with self._lock:
            self._done[sha] = outcome
        self.wake()
