"""The GitHub Actions workflow that deploys a project with `puppemon push` on every merge."""
from __future__ import annotations

import os
from pathlib import Path

from puppemon.errors import PuppemonError

WORKFLOW_PATH = Path(".github") / "workflows" / "puppemon-push.yml"

# Kept byte-identical to examples/github/puppemon-push.yml (a test compares them).
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
      - name: Install puppemon
        run: python -m pip install puppemon
      - name: Push the flows branch
        run: puppemon push
"""


def write_workflow(directory: str | os.PathLike) -> Path:
    """Write the deploy workflow into `directory`'s .github/workflows; never overwrite one."""
    path = Path(directory) / WORKFLOW_PATH
    if path.exists() or path.is_symlink():
        raise PuppemonError(f"{path} already exists; not overwriting it (remove it first to get "
                            f"a fresh one)")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "x", encoding="utf-8", newline="\n") as fh:
            fh.write(WORKFLOW)
    except FileExistsError:
        raise PuppemonError(f"{path} already exists; not overwriting it") from None
    return path
