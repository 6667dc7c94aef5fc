"""A deploy's container images: checked, pulled or built before the deploy is swapped in.

`image:` must be on the server, or be pulled as its `pull:` says (`always` pulls at
every deploy; runs themselves never pull). `build:` is built from the
Containerfile's directory and tagged `localhost/puppemon-build:<hash of the
context>`, so a redeploy with the same context reuses it. Builds use only what
the engine has (`FROM` a local image works offline). What this daemon built is
noted in its state directory (a marker per tag, touched when used) and removed
once no kept deploy uses it, but the few most recently used, as environments are.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from puppemon.run.engine import Engine, EngineConfig, EngineError

BUILT = "localhost/puppemon-build"
BUILD_LABEL = "io.puppemon.build"
KEEP_UNUSED = 3
PULL_TIMEOUT = 600.0
NOT_CONTEXT = (".git", ".puppemon")   # what decides no image (context_hash): a worktree's .git may be a file


def context_hash(directory: Path, containerfile: str) -> str:
    """A hash of what decides a built image: the Containerfile's name and every file of its directory, but
    git's and puppemon's own (`.git`, `.puppemon`: a commit or a `puppemon run`'s outputs change no image)."""
    context = (directory / containerfile).parent
    digest = hashlib.sha256(containerfile.rsplit("/", 1)[-1].encode() + b"\0")
    for root, dirs, files in os.walk(context):
        dirs[:] = sorted(d for d in dirs if d not in NOT_CONTEXT)
        for name in sorted(f for f in files if f not in NOT_CONTEXT):
            path = Path(root, name)
            rel = path.relative_to(context).as_posix()
            if path.is_symlink():
                body = b"l" + os.readlink(path).encode()
            else:
                body = (b"x" if os.access(path, os.X_OK) else b"f") + path.read_bytes()
            digest.update(rel.encode() + b"\0" + hashlib.sha256(body).digest())
    return digest.hexdigest()[:24]


class ImageStore:
    """The images the deploys of this daemon run in; the built ones are noted under `root`."""

    def __init__(self, config: EngineConfig, root: Path, build_timeout: float = 600.0) -> None:
        self.config, self.root, self.build_timeout = config, Path(root), build_timeout
        self._engine: Engine | None = None

    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self.config.find()
        return self._engine

    def prepare(self, flow, directory: Path) -> str:
        """The image `flow` runs in, present on this server; EngineError (naming the key) when it cannot be."""
        spec = flow.container
        for mount in spec.mounts:
            refusal = self.config.mount_refusal(mount.host)
            if refusal:
                raise EngineError(f"container.mounts: {refusal}")
            if not os.path.exists(mount.host):
                raise EngineError(f"container.mounts: {mount.host} does not exist on this server (create it, "
                                  "or remove the mount)")
        engine = self.engine()
        if spec.build:
            return self._build(engine, directory, spec.build)
        present = engine.has_image(spec.image)
        if spec.pull == "always" or (spec.pull == "missing" and not present):
            proc = engine.call("pull", "--quiet", spec.image, check=False, timeout=PULL_TIMEOUT)
            if proc.returncode != 0:
                from puppemon.run.engine import last_line

                raise EngineError(f"container.image: {spec.image} could not be pulled: "
                                  f"{last_line(proc.stderr)}")
        elif not present:
            raise EngineError(f"container.image: {spec.image} is not on this server and pull: never (load it "
                              f"with `{engine.kind} load` or `{engine.kind} import`, or set pull: missing)")
        return spec.image

    def _build(self, engine: Engine, directory: Path, containerfile: str) -> str:
        tag = f"{BUILT}:{context_hash(directory, containerfile)}"
        if not engine.has_image(tag):
            context = (directory / containerfile).parent
            proc = engine.call("build", *self.config.build_args, "--label", f"{BUILD_LABEL}=1", "-t", tag,
                               "-f", str(directory / containerfile), str(context), check=False,
                               timeout=self.build_timeout)
            if proc.returncode != 0:
                from puppemon.run.engine import last_line

                raise EngineError(f"container.build: {containerfile} could not be built: "
                                  f"{last_line(proc.stderr or proc.stdout)}")
        self._note(tag)
        return tag

    def _note(self, tag: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        marker = self.root / tag.rsplit(":", 1)[1]
        marker.touch()
        os.utime(marker)

    def collect(self, in_use: set[str], keep: int = KEEP_UNUSED) -> list[str]:
        """Remove the images this daemon built that no kept deploy uses, but the `keep` most recently used."""
        if not self.root.is_dir():
            return []
        used = {tag.rsplit(":", 1)[1] for tag in in_use if tag.startswith(BUILT + ":")}
        unused = sorted((m for m in self.root.iterdir() if m.name not in used),
                        key=lambda m: m.stat().st_mtime, reverse=True)
        removed = []
        for marker in unused[keep:]:
            tag = f"{BUILT}:{marker.name}"
            try:
                engine = self.engine()
                if engine.call("rmi", tag, check=False).returncode != 0 and engine.has_image(tag):
                    continue   # still there (a container of it was left, say): the next collect tries again
            except EngineError:
                return removed   # no engine any more: nothing to remove now
            marker.unlink(missing_ok=True)
            removed.append(tag)
        return removed
