"""`puppemon init [DIR]`: scaffold puppemon.yaml and an example flow, never overwriting a file."""
from __future__ import annotations

import os
import shlex
from pathlib import Path

from puppemon.errors import PuppemonError
from puppemon.project.manifest import MANIFEST_NAME

MANIFEST = """\
# puppemon.yaml: which flows puppemon runs, and when.
#
# version      always 1
# defaults     settings every flow inherits unless it sets its own:
#              timezone, timeout, retries, retry_delay, overlap, catchup, env, notify, workdir
# variables    plain-text values every flow gets as environment variables
# flows        one entry per flow; the name (lowercase, digits, - and _) becomes a path
#   entrypoint    path/to/file.py:function (called with params as keyword arguments),
#                 or instead: command, a list (run as is) or a string (run by /bin/sh)
#   schedule      cron, 5 fields: minute hour day-of-month month day-of-week (or a list)
#   every         an interval instead of, or as well as, cron: 30s, 10m, 2h, 1d
#   timezone      IANA name for the schedule; UTC unless set
#   params        default parameters; `puppemon trigger FLOW -p key=value` overrides them
#   timeout, retries, retry_delay        e.g. 30m, 2, 30s
#   overlap       skip | queue | parallel: when the previous run is still going
#   catchup       none | latest | all: runs missed while the daemon was down
#   secrets       names; the values live only on the server
#   env           extra environment variables
#   run_on_deploy true to also run whenever a new version is pushed
#
# Check it with `puppemon validate`, deploy it with `puppemon push`.
version: 1
defaults:
  timezone: UTC
  timeout: 10m
flows:
  hello:
    entrypoint: flows/hello.py:main
    schedule: "0 8 * * *"
    params:
      name: world
"""

HELLO = '''\
"""An example flow: puppemon calls main() with the flow's params as keyword arguments."""


def main(name="world"):
    greeting = f"Hello, {name}!"
    print(greeting)
    # A JSON-serialisable return value is recorded as the run's result.
    return {"greeting": greeting}
'''

FILES = {MANIFEST_NAME: MANIFEST, "flows/hello.py": HELLO}


def _shown(directory: str, name: str) -> str:
    return name if os.path.normpath(directory) == "." else os.path.join(directory, name)


def scaffold(directory: str) -> list[str]:
    """Write the starter files into `directory`; refuse, writing nothing, if any exists."""
    root = Path(directory)
    for name in FILES:
        if (root / name).exists() or (root / name).is_symlink():
            raise PuppemonError(f"{_shown(directory, name)} already exists; puppemon init never "
                                "overwrites files (remove it or run init in another directory)")
    written = []
    try:
        for name, content in FILES.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "x", encoding="utf-8") as fh:     # "x": never clobber, even in a race
                fh.write(content)
            written.append(name)
    except FileExistsError as exc:
        raise PuppemonError(f"{_shown(directory, Path(exc.filename).relative_to(root).as_posix())} "
                            "already exists; puppemon init never overwrites files") from None
    except OSError as exc:
        raise PuppemonError(f"cannot write {exc.filename}: {exc.strerror}") from None
    return written


def main(directory: str = ".", github: bool = False, puppemon_source: str | None = None,
         serverless: bool = False) -> int:
    """Scaffold puppemon.yaml and an example flow (never overwrites); with `github`, the deploy workflow too
    (only the workflow, in a project that has its puppemon.yaml already); with `serverless` as well, the
    scheduled workflow that runs the flows on GitHub Actions (the deploy workflow then only if it is missing)."""
    from puppemon.project import serverless as scheduled
    from puppemon.project.github import WORKFLOW_PATH, default_branch, installed_source, render, write_workflow

    if serverless and not github:
        raise PuppemonError("--serverless writes a GitHub Actions workflow: pass --github --serverless")
    workflow = Path(directory) / WORKFLOW_PATH
    existing = github and (Path(directory) / MANIFEST_NAME).is_file()
    source = branch = None
    daemon_workflow = Path(directory) / scheduled.WORKFLOW_PATH
    push_workflow = not (serverless and (workflow.exists() or workflow.is_symlink()))
    if serverless and (daemon_workflow.exists() or daemon_workflow.is_symlink()):
        raise PuppemonError(f"{_shown(directory, scheduled.WORKFLOW_PATH.as_posix())} already exists; puppemon "
                            "init never overwrites files (remove it or run init in another directory)")
    if github:  # checked first, so a refusal writes nothing at all
        if push_workflow and (workflow.exists() or workflow.is_symlink()):
            raise PuppemonError(f"{_shown(directory, WORKFLOW_PATH.as_posix())} already exists; puppemon init "
                                "never overwrites files (remove it or run init in another directory)")
        source = puppemon_source or installed_source()
        if source is None:
            raise PuppemonError("cannot tell which repository this puppemon comes from (it was not installed "
                                "from a git clone whose commit is on its origin), so the workflow could not "
                                "install it; pass --puppemon-source git+https://HOST/YOU/puppemon.git@COMMIT")
        branch = default_branch(directory) if Path(directory).is_dir() else "main"
        render(source, branch)
    for name in [] if existing else scaffold(directory):
        print(f"wrote {_shown(directory, name)}")
    if github and push_workflow:
        write_workflow(directory, source, branch)
        print(f"wrote {_shown(directory, WORKFLOW_PATH.as_posix())} (deploys on every push to {branch})")
    for path in scheduled.write(directory, source) if serverless else []:
        what = ("runs the flows on a schedule, no server needed" if path.name.endswith(".yml")
                else "grants Actions secrets to flows: names only, no values")
        print(f"wrote {_shown(directory, path.relative_to(directory).as_posix())} ({what})")
    where = "" if os.path.normpath(directory) == "." else " " + shlex.quote(directory)
    push = "" if not where else " -C" + where
    if existing:
        print(f"next: commit the workflow and push it to GitHub; {MANIFEST_NAME} was there already, untouched")
    else:
        print(f"next: run `puppemon validate{where}`, then `puppemon push{push}` to deploy")
    return 0
