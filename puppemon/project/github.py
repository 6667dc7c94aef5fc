"""The GitHub Actions workflow that deploys a project with `puppemon push` on every merge.

It installs the very puppemon that wrote it, pinned to its commit (`git+URL@COMMIT`,
from pip's record of where it came from or the git clone it was installed from), so
a job never installs another version than the one the project was set up with.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from puppemon.errors import PuppemonError

WORKFLOW_PATH = Path(".github") / "workflows" / "puppemon-push.yml"
EXAMPLE_SOURCE = "git+https://github.com/OWNER/puppemon.git@COMMIT"
YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}   # not strings to YAML 1.1

# Kept byte-identical to examples/github/puppemon-push.yml (a test compares them); `init --github`
# writes it with EXAMPLE_SOURCE replaced by where this puppemon comes from.
WORKFLOW = """\
# Deploy this repository's flows with `puppemon push` whenever the default
# branch moves: every merge becomes a new commit on the `flows` branch, which
# the puppemon daemon on your server fetches and runs.
name: puppemon push

on:
  push:
    branches: [main]  # your default branch
  workflow_dispatch:

# `puppemon push` writes the `flows` branch with the job's own token.
permissions:
  contents: write

# One deploy at a time; a newer merge replaces one still waiting, so the last
# merge is what ends up deployed. (Overlapping pushes would be safe too:
# `puppemon push` rebuilds on the new `flows` tip instead of forcing.)
concurrency:
  group: puppemon-push
  cancel-in-progress: false

jobs:
  push:
    runs-on: ubuntu-latest
    timeout-minutes: 10
    steps:
      # A shallow checkout (fetch-depth: 1, the default) is enough: a deploy is
      # a snapshot of this tree, and `flows` is an orphan branch (no history
      # shared with this one) whose tip `puppemon push` fetches by itself.
      # checkout keeps the job's token in the repository's git config (v6+: in
      # a file that config includes); `puppemon push` runs git, which uses it.
      - uses: actions/checkout@v6
        with:
          fetch-depth: 1
      - uses: actions/setup-python@v6
        with:
          python-version: "3.12"
      # The puppemon this workflow was written with, pinned to its commit: a new
      # puppemon reaches this job only when you change the line below.
      - name: Install puppemon
        env:
          PUPPEMON_SOURCE: "git+https://github.com/OWNER/puppemon.git@COMMIT"
        run: python -m pip install "$PUPPEMON_SOURCE"
      - name: Push the flows branch
        run: puppemon push
"""


def render(source: str, branch: str = "main") -> str:
    """The workflow, installing puppemon from `source` (a pip requirement), deploying on pushes to `branch`."""
    if not source or any(c in source for c in "\"\n\\"):
        raise PuppemonError(f"--puppemon-source {source!r}: give a pip requirement such as "
                            f"git+https://github.com/you/puppemon.git@v0.1.0")
    text = WORKFLOW.replace(f'PUPPEMON_SOURCE: "{EXAMPLE_SOURCE}"', f'PUPPEMON_SOURCE: "{source}"')
    if branch != "main":
        # plain when YAML reads it as that string; else quoted (a branch may be `1.0`, `on`, or hold * and ,)
        plain = re.fullmatch(r"[A-Za-z][A-Za-z0-9._/-]*", branch) and branch.lower() not in YAML_WORDS
        shown = branch if plain else json.dumps(branch)
        text = text.replace("branches: [main]  # your default branch",
                            f"branches: [{shown}]  # the repository's default branch")
    return text


def default_branch(directory: str | os.PathLike, remote: str = "origin") -> str:
    """The repository's default branch: the remote's HEAD as last fetched, else as the remote says now,
    else the branch checked out, else main."""
    from puppemon.gitstore import GitError
    from puppemon.gitstore.command import run_git

    def git(*args: str) -> str | None:
        try:
            proc = run_git(["-C", str(directory), *args], check=False, timeout=20)
        except GitError:  # no git, or a remote that does not answer
            return None
        return proc.stdout.decode("utf-8", "replace").strip() if proc.returncode == 0 else None

    known = git("symbolic-ref", "--quiet", f"refs/remotes/{remote}/HEAD")
    if known and known.startswith(f"refs/remotes/{remote}/"):
        return known.removeprefix(f"refs/remotes/{remote}/")
    if git("remote", "get-url", remote):
        for line in (git("ls-remote", "--symref", remote, "HEAD") or "").splitlines():
            target, _, name = line.partition("\t")
            if name == "HEAD" and target.startswith("ref: refs/heads/"):
                return target.removeprefix("ref: refs/heads/")
    current = git("symbolic-ref", "--quiet", "--short", "HEAD")
    return current or "main"


def installed_source(package_dir: str | os.PathLike | None = None) -> str | None:
    """A pip requirement for the puppemon running now, pinned to its commit; None when it cannot be told
    (installed from a directory that is no pushed git clone)."""
    here = Path(__file__).resolve()
    direct = _direct_url(here)
    vcs = direct.get("vcs_info") or {}
    if vcs.get("vcs") == "git" and vcs.get("commit_id") and https_url(direct.get("url", "")):
        return f"git+{https_url(direct['url'])}@{vcs['commit_id']}"
    places = [package_dir] if package_dir else [here.parents[2]]   # the source tree of an editable install
    url = direct.get("url", "")
    if url.startswith("file://"):
        places.append(url[len("file://"):])
    for place in places:
        found = clone_source(place)
        if found:
            return found
    return None


def _direct_url(here: Path) -> dict:
    """pip's record of where the installed puppemon came from, if it is the code running now."""
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution("puppemon")
        direct = json.loads(dist.read_text("direct_url.json") or "null") or {}
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return {}
    url = direct.get("url", "")
    if (direct.get("dir_info") or {}).get("editable") and url.startswith("file://"):
        ours = here.is_relative_to(Path(url[len("file://"):]).resolve())
    else:
        ours = Path(dist.locate_file("puppemon/project/github.py")).resolve() == here
    return direct if ours else {}


def clone_source(directory: str | os.PathLike) -> str | None:
    """`git+URL@COMMIT` of the git clone at `directory`, when its HEAD is on a branch of its origin."""
    from puppemon.gitstore.command import run_git

    def git(*args: str) -> str | None:
        proc = run_git(["-C", str(directory), *args], check=False)
        return proc.stdout.decode().strip() if proc.returncode == 0 else None

    url = https_url(git("remote", "get-url", "origin") or "")
    head = git("rev-parse", "--verify", "HEAD")
    if not (url and head and git("branch", "--remotes", "--contains", head)):
        return None  # no origin a runner can reach, or a commit it does not have
    return f"git+{url}@{head}"


def https_url(url: str) -> str | None:
    """The https form of a git remote URL (a runner has no ssh key), or None for a local one."""
    url = url.strip()
    scp = re.fullmatch(r"(?:[^@/]+@)?([^:/]+):(?!//)(.+)", url)
    if scp:
        return f"https://{scp.group(1)}/{scp.group(2)}"
    match = re.fullmatch(r"(?:ssh|git\+ssh|https?|git)://(?:[^@/]+@)?([^/:]+)(?::\d+)?/(.+)", url)
    return f"https://{match.group(1)}/{match.group(2)}" if match else None


def write_workflow(directory: str | os.PathLike, source: str = EXAMPLE_SOURCE, branch: str = "main") -> Path:
    """Write the deploy workflow into `directory`'s .github/workflows; never overwrite one."""
    path = Path(directory) / WORKFLOW_PATH
    if path.exists() or path.is_symlink():
        raise PuppemonError(f"{path} already exists; not overwriting it (remove it first to get "
                            f"a fresh one)")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "x", encoding="utf-8", newline="\n") as fh:
            fh.write(render(source, branch))
    except FileExistsError:
        raise PuppemonError(f"{path} already exists; not overwriting it") from None
    return path
