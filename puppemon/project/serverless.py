"""Serverless: a scheduled GitHub Actions job as the server (`puppemon init --github --serverless`).

The workflow runs `puppemon daemon --once` against the repository's own remote on a schedule: it fetches
`flows` and `runs`, runs what is due and what was missed since the last fire recorded on `runs` (each
flow's `catchup`, daemon/sources.py), records every run, pushes and exits. Its state directory is thrown
away with the job; everything the next job needs is on the remote. The job's token reaches puppemon's own
git calls only (`PUPPEMON_GIT_TOKEN`, gitstore/command.py `token_config`): the checkout keeps no
credentials, and runs never inherit PUPPEMON_* variables. Secrets come from the repository's Actions
secrets as `PUPPEMON_SECRET_*` variables, granted to flows by a committed grants file that names them
(`env:`) and holds no value (secrets.py reads it; project/safety.py lets `push` take it).
"""
from __future__ import annotations

import os
from pathlib import Path

from puppemon.errors import PuppemonError
from puppemon.project.github import EXAMPLE_SOURCE, render as _render_push

WORKFLOW_PATH = Path(".github") / "workflows" / "puppemon-daemon.yml"
GRANTS_PATH = Path(".puppemon") / "grants.yaml"

# Kept byte-identical to examples/github/puppemon-daemon.yml (a test compares them); `init --github
# --serverless` writes it with EXAMPLE_SOURCE replaced by where this puppemon comes from.
WORKFLOW = """\
# Run this repository's flows with no server: on a schedule, a job runs
# `puppemon daemon --once` against this repository's own remote. It fetches
# the `flows` branch (what `puppemon push` deployed) and the `runs` branch,
# runs what is due and what was missed since the last fire recorded on `runs`
# (each flow's `catchup`: none, latest or all), records every run on `runs`,
# and exits. Nothing is kept between jobs but what is on the remote.
#
# GitHub starts scheduled jobs late (minutes, under load an hour or more) and
# sometimes drops them. A late fire within PUPPEMON_MISFIRE_GRACE still runs
# as due; an older one is missed, and runs at the next job only when its
# flow says `catchup: latest` (one run) or `catchup: all` (each missed fire).
name: puppemon daemon

on:
  schedule:
    # How often the job looks for due flows (UTC; GitHub runs it every 5
    # minutes at the most often). Edit it: as often as your most frequent flow.
    - cron: "*/15 * * * *"
  workflow_dispatch:

# The job pushes run records to the `runs` branch with its own token.
permissions:
  contents: write

# One job at a time: a job that starts while another runs waits for it
# (never cancels it: its runs would be lost).
concurrency:
  group: puppemon-daemon
  cancel-in-progress: false

jobs:
  daemon:
    runs-on: ubuntu-latest
    timeout-minutes: 60
    env:
      # A fire at most this late counts as due now, not missed.
      PUPPEMON_MISFIRE_GRACE: 15m
    steps:
      # No credentials are left in the checkout's git config: the flows this
      # job runs cannot push with the job's token. Only the grants file is
      # read from the checkout; the flows come from the `flows` branch.
      - uses: actions/checkout@v6
        with:
          persist-credentials: false
      - uses: actions/setup-python@v6
        with:
          python-version: "3.12"
      # The puppemon this workflow was written with, pinned to its commit.
      - name: Install puppemon
        env:
          PUPPEMON_SOURCE: "git+https://github.com/OWNER/puppemon.git@COMMIT"
        run: python -m pip install "$PUPPEMON_SOURCE"
      # PUPPEMON_GIT_TOKEN reaches puppemon's own fetch and push only (never a
      # git config, never a run: runs do not inherit PUPPEMON_* variables).
      # Secrets: map each Actions secret a flow needs to PUPPEMON_SECRET_<NAME>
      # here, and grant it to flows in .puppemon/grants.yaml.
      - name: Run what is due
        env:
          PUPPEMON_GIT_TOKEN: ${{ secrets.GITHUB_TOKEN }}
          # PUPPEMON_SECRET_DISCORD: ${{ secrets.DISCORD_WEBHOOK }}
        run: >-
          puppemon daemon --once --name github-actions
          --remote "$GITHUB_SERVER_URL/$GITHUB_REPOSITORY.git"
          --state "$RUNNER_TEMP/puppemon"
          --misfire-grace "$PUPPEMON_MISFIRE_GRACE"
          --secrets .puppemon/grants.yaml
"""

GRANTS = """\
# Which flows get which secret, for the scheduled job (.github/workflows/puppemon-daemon.yml).
# Names and environment variables only, never a value: the values are the repository's Actions
# secrets, which the workflow maps to PUPPEMON_SECRET_* variables. For example:
#
# discord:
#   env: PUPPEMON_SECRET_DISCORD
#   flows: [daily-report, "backup-*"]
"""


def render(source: str) -> str:
    """The workflow, installing puppemon from `source` (a pip requirement)."""
    _render_push(source)   # the same check of `source`
    return WORKFLOW.replace(f'PUPPEMON_SOURCE: "{EXAMPLE_SOURCE}"', f'PUPPEMON_SOURCE: "{source}"')


def write(directory: str | os.PathLike, source: str = EXAMPLE_SOURCE) -> list[Path]:
    """Write the workflow, and the grants file when there is none; never overwrite the workflow."""
    root = Path(directory)
    path = root / WORKFLOW_PATH
    if path.exists() or path.is_symlink():
        raise PuppemonError(f"{path} already exists; not overwriting it (remove it first to get a fresh one)")
    text = render(source)
    written = []
    for target, content in ((path, text), (root / GRANTS_PATH, GRANTS)):
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(target, "x", encoding="utf-8", newline="\n") as fh:
                fh.write(content)
        except FileExistsError:
            if target == path:
                raise PuppemonError(f"{path} already exists; not overwriting it") from None
            continue   # a grants file of the project's own: kept as it is
        written.append(target)
    return written
