"""Deploys: validate a flows commit, check it out read-only into its own directory, swap it in.

A commit that fails validation is recorded as refused (once) and the previous
deploy keeps running. Runs in flight keep the Deployment they started with; old
checkouts are removed once no queued or running run uses them.
"""
from __future__ import annotations

import logging
import os
import shutil
import stat
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from puppemon.daemon.builds import Builds
from puppemon.daemon.journal import StateDir
from puppemon.daemon.ledger import Ledger
from puppemon.errors import PuppemonError
from puppemon.gitstore import GitError, Store, TooLarge
from puppemon.gitstore.worktree import FilterMissing, UnsafeTree, checkout
from puppemon.history.records import trailers
from puppemon.run.environments import EnvError, EnvStore
from puppemon.run.images import ImageStore

log = logging.getLogger("puppemon")

KEEP_DEPLOYS = 3
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class Refused(PuppemonError):
    """A server-side check refuses a deploy (a watched path outside the server's watch roots, ...)."""


@dataclass
class Deployment:
    sha: str
    directory: Path
    manifest: Any          # project.manifest.Manifest
    source_commit: str
    environments: dict = field(default_factory=dict)   # flow name -> run.environments.Environment
    images: dict = field(default_factory=dict)         # flow name -> the container image it runs in
    committed: datetime = EPOCH   # the flows commit's time: where its run-on-deploy claims are filed


class Deployer:
    """Holds the current Deployment and makes new ones."""

    def __init__(self, store: Store, state: StateDir, ledger: Ledger, remote: str,
                 envs: EnvStore | None = None, wake: Callable[[], None] = lambda: None,
                 takes: Callable[[Any], bool] = lambda _flow: True, images: ImageStore | None = None,
                 check: Callable[[Any], None] = lambda _manifest: None) -> None:
        from puppemon.run.engine import EngineConfig

        self.store, self.state, self.ledger, self.remote = store, state, ledger, remote
        self.envs = envs or EnvStore(state.envs_dir)
        self.images = images or ImageStore(EngineConfig(), state.images_dir)
        self.builds = Builds(self.envs, wake, takes, self.images)   # only the flows this daemon takes (its labels)
        self.check = check   # server-side checks of a manifest: Refused refuses the deploy
        self.current: Deployment | None = None
        self.refused: set[str] = set()
        self.env_keys: dict[str, set[str]] = {}   # deploy sha -> the environments it runs in

    def is_new(self, sha: str | None) -> bool:
        """Whether `sha` is a flows commit still to deploy (not the current one, not refused)."""
        return bool(sha) and (self.current is None or sha != self.current.sha) and sha not in self.refused

    def last_good(self, tip: str | None) -> str | None:
        """Started on a flows tip that is refused: the deploy that ran before the restart, to go on with as
        a daemon that kept running would (its commit is in the mirror); None when there is none."""
        last = self.state.deployed()
        if not last or last == tip or not self.is_new(last):
            return None
        try:
            self.store.get_commit(last)
        except (KeyError, ValueError):
            return None
        return last

    def deploy(self, sha: str, wait: bool = False) -> Deployment | None:
        """Validate and check out `sha` and make it current; None (and a refusal record) when it cannot run,
        None too while its environments build (in a thread: call again; `wait` waits for them).

        A GitError (a checkout that failed, say an LFS server that did not answer) is
        raised instead, and the next fetch tries again."""
        from puppemon.project.entrypoints import check_manifest, tree_reader
        from puppemon.project.manifest import MANIFEST_NAME, MAX_BYTES, ManifestError, check_size, parse

        commit = self.store.get_commit(sha)
        source = trailers(commit.message).get("Puppemon-Source-Commit", "")
        try:
            try:
                data = self.store.read(sha, MANIFEST_NAME, MAX_BYTES)
            except TooLarge as exc:
                check_size(exc.size, MANIFEST_NAME)
            if data is None:
                raise ManifestError(f"{MANIFEST_NAME}: not found at the root of the flows commit")
            manifest = parse(data, MANIFEST_NAME)
            check_manifest(manifest, tree_reader(self.store, sha), MANIFEST_NAME, "the flows commit")
            self.check(manifest)
            directory = self._check_out(sha)
            prepared = self.builds.result(sha, manifest, directory, wait)
            if prepared is None:
                return None  # building: the current deploy goes on meanwhile
        except (ManifestError, FilterMissing, UnsafeTree, EnvError, Refused) as exc:
            self.refused.add(sha)
            log.error("deploy %s refused: %s", sha[:7], exc.message)
            self.ledger.deploy(sha, source, {"status": "refused", "error": exc.message})
            return None
        environments, images = prepared
        self.current = Deployment(sha, directory, manifest, source, environments, images,
                                  datetime.fromtimestamp(commit.time, timezone.utc))
        self.env_keys[sha] = {env.key for env in environments.values()} | set(images.values())
        return self.current

    def of(self, sha: str) -> Deployment | None:
        """The deploy of flows commit `sha`, for a run that goes on from before a restart: the current one, else
        one read from the mirror over its checkout (no environments: the run has its own already); None when
        the mirror does not have it or its manifest does not parse."""
        from puppemon.project.manifest import MANIFEST_NAME, parse

        if self.current is not None and self.current.sha == sha:
            return self.current
        try:
            commit, data = self.store.get_commit(sha), self.store.read(sha, MANIFEST_NAME)
            manifest = parse(data, MANIFEST_NAME) if data is not None else None
        except (PuppemonError, KeyError, ValueError):
            return None
        if manifest is None:
            return None
        return Deployment(sha, self.state.deploys_dir / sha, manifest,
                          trailers(commit.message).get("Puppemon-Source-Commit", ""),
                          committed=datetime.fromtimestamp(commit.time, timezone.utc))

    def environments_record(self, deployment: Deployment) -> dict:
        """For the deploy record: each environment once, with its resolved packages and the flows in it; the
        image each container flow runs in."""
        found: dict[str, dict] = {}
        for name, env in sorted(deployment.environments.items()):
            entry = found.setdefault(env.key, {"python": env.python, "packages": list(env.packages), "flows": []})
            entry["flows"].append(name)
        images = dict(sorted(deployment.images.items()))
        return {**({"environments": found} if found else {}), **({"images": images} if images else {})}

    def _check_out(self, sha: str) -> Path:
        """The read-only checkout of `sha`, made once (a restart on the same commit reuses it)."""
        directory = self.state.deploys_dir / sha
        if directory.exists():
            return directory
        tmp = self.state.deploys_dir / f".{sha}.tmp"
        if tmp.exists():  # left by a crash or a failed checkout
            set_writable(tmp, True)
            shutil.rmtree(tmp)
        try:
            checkout(self.store, sha, tmp, remote=self.remote)
        except GitError:
            shutil.rmtree(tmp, ignore_errors=True)  # nothing half checked out stays behind
            raise
        set_writable(tmp, False)  # `workdir: shared` runs in here: no run may change the deploy
        os.replace(tmp, directory)
        return directory

    def flow_for(self, record: dict):
        """The flow as deployed for a recorded run (a run found crashed at start-up has no current deploy)."""
        from puppemon.errors import PuppemonError
        from puppemon.project.manifest import MANIFEST_NAME, parse

        deployment = self.current
        if deployment is not None and deployment.sha == record.get("flows_commit"):
            return deployment.manifest.flows.get(record["flow"])
        try:
            data = self.store.read(record["flows_commit"], MANIFEST_NAME)
            return parse(data, MANIFEST_NAME).flows.get(record["flow"]) if data is not None else None
        except (PuppemonError, KeyError, ValueError):
            return deployment.manifest.flows.get(record["flow"]) if deployment else None

    def prune(self, in_use: set[str]) -> None:
        """Remove all but the newest KEEP_DEPLOYS checkouts that no run uses."""
        keep = in_use | ({self.current.sha} if self.current else set())
        dirs = sorted((d for d in self.state.deploys_dir.iterdir() if not d.name.startswith(".")),
                      key=lambda d: d.stat().st_mtime, reverse=True)
        for d in dirs[KEEP_DEPLOYS:]:
            if d.name not in keep:
                set_writable(d, True)
                shutil.rmtree(d, ignore_errors=True)
        envs = set().union(*(self.env_keys.get(sha, set()) for sha in keep))
        for key in self.envs.collect(envs):
            log.info("removed environment %s (no deploy or run uses it)", key[:12])
        for tag in self.images.collect(envs):
            log.info("removed image %s (no deploy or run uses it)", tag)


def set_writable(root: Path, writable: bool) -> None:
    """Add or remove every write bit below `root` (symlinks untouched)."""
    for directory, dirs, files in os.walk(root):
        for path in [directory, *(os.path.join(directory, n) for n in (*dirs, *files))]:
            if os.path.islink(path):
                continue
            mode = stat.S_IMODE(os.lstat(path).st_mode)
            os.chmod(path, (mode | stat.S_IWUSR) if writable else (mode & ~0o222))
