"""A deploy's Python environments and container images, made in a thread of their own: while they build,
the loop goes on (fetching, serving requests, publishing) and the current deploy keeps running."""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable

from puppemon.formats import plural
from puppemon.run.engine import EngineError
from puppemon.run.environments import EnvError, EnvStore, request_for
from puppemon.run.images import ImageStore

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


def prepare_images(images: ImageStore, manifest, directory: Path,
                   takes: Callable[..., bool] = lambda _flow: True) -> dict[str, str]:
    """{flow name: image} for every container flow this daemon `takes`, each present on this server (pulled
    or built as its `container:` says); EnvError naming the flow when one cannot be."""
    found = {}
    for flow in manifest.flows.values():
        if flow.container is None or not takes(flow):
            continue
        try:
            found[flow.name] = images.prepare(flow, directory)
        except EngineError as exc:
            raise EnvError(f"flows.{flow.name}.{exc.message}" if exc.message.startswith("container.")
                           else f"flows.{flow.name}.container: {exc.message}") from None
    return found


def _needs_thread(manifest, takes) -> tuple[bool, bool]:
    flows = [f for f in manifest.flows.values() if takes(f)]
    return any(f.python is not None for f in flows), any(f.container is not None for f in flows)


def _ready(sha: str, built: tuple[dict, dict]) -> tuple[dict, dict]:
    for name, env in sorted(built[0].items()):
        log.info("deploy %s: %s runs in environment %s (Python %s, %s)", sha[:7], name, env.key[:12], env.python,
                 plural(len(env.packages), "package"))
    for name, image in sorted(built[1].items()):
        log.info("deploy %s: %s runs in image %s", sha[:7], name, image)
    return built


class Builds:
    """The builds of deploys not swapped in yet, one thread per deploy; `wake` is called when one ends.
    Only the flows `takes` says this daemon takes (its labels) have their environments and images made here."""

    def __init__(self, envs: EnvStore, wake: Callable[[], None], takes: Callable[..., bool] = lambda _f: True,
                 images: ImageStore | None = None) -> None:
        self.envs, self.wake, self.takes, self.images = envs, wake, takes, images
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        self._done: dict[str, tuple[dict, dict] | EnvError] = {}

    def result(self, sha: str, manifest, directory: Path, wait: bool = False) -> tuple[dict, dict] | None:
        """(environments, images) of deploy `sha` once made (EnvError when one cannot be), None while they
        are being made."""
        pythons, containers = _needs_thread(manifest, self.takes)
        if not pythons and not containers:
            return {}, {}
        with self._lock:
            if sha in self._done:
                self._threads.pop(sha, None)
                outcome = self._done.pop(sha)
                if isinstance(outcome, EnvError):
                    raise outcome
                return _ready(sha, outcome)
            thread = self._threads.get(sha)
            ready = build_all(self.envs, manifest, directory, True, self.takes) \
                if thread is None and not containers else None
            if ready is not None:
                return _ready(sha, (ready, {}))  # all built already (a redeploy, the same dependencies): no thread
            if thread is None:
                thread = self._threads[sha] = threading.Thread(target=self._build, args=(sha, manifest, directory),
                                                               name=f"build-{sha[:7]}", daemon=True)
                log.info("deploy %s: preparing its %s; the current deploy goes on meanwhile", sha[:7],
                         " and ".join(w for w, n in (("Python environments", pythons), ("images", containers)) if n))
                thread.start()
        if not wait:
            return None
        thread.join()
        return self.result(sha, manifest, directory)

    def _build(self, sha: str, manifest, directory: Path) -> None:
        try:
            outcome: tuple[dict, dict] | EnvError = (
                build_all(self.envs, manifest, directory, takes=self.takes),
                prepare_images(self.images, manifest, directory, self.takes) if self.images else {})
        except EnvError as exc:
            outcome = exc
        except Exception as exc:  # noqa: BLE001 - a build's surprise refuses its deploy, never kills the daemon
            log.exception("deploy %s: building its environments failed", sha[:7])
            outcome = EnvError(f"building the environments failed: {exc}")
        with self._lock:
            self._done[sha] = outcome
        self.wake()
