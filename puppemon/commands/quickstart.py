"""`puppemon quickstart`: a demo project, a local remote, a push, and the daemon running it."""
from __future__ import annotations

import shlex
from pathlib import Path

from puppemon.errors import PuppemonError

MANIFEST = """\
version: 1
flows:
  hello:
    # A Python function, called every 5 seconds with `params` as keyword arguments.
    entrypoint: hello.py:main
    every: 5s
    params: {name: world}
  disk-usage:
    # Any program; this one also runs whenever a new flows commit is deployed.
    command: "df -h . | tail -n 1"
    run_on_deploy: true
"""

HELLO = '''\
"""A demo flow: its output is logged, its return value is the run's result."""
import datetime

import puppemon


def main(name="world"):
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    print(f"hello, {name}! it is {now}")
    # Files left in the output directory are recorded with the run.
    (puppemon.output_dir() / "greeting.txt").write_text(f"hello, {name}\\n")
    return {"greeted": name, "at": now}
'''

GITIGNORE = """\
# the demo's remote and the daemon's state live here too, outside what is deployed
/remote.git/
/.puppemon-state/
__pycache__/
"""


def _git(*args: str, cwd: Path | None = None) -> str:
    from puppemon.gitstore.command import run_git

    return run_git(list(args), cwd=cwd).stdout.decode()


def create(directory: Path) -> Path:
    """Write the demo project and its bare remote; return the remote's path."""
    from puppemon.gitstore.command import GitError, run_git

    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise PuppemonError(f"{directory} already exists and is not empty; pick another directory "
                            f"(`puppemon quickstart DIR`)")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "puppemon.yaml").write_text(MANIFEST)
    (directory / "hello.py").write_text(HELLO)
    (directory / ".gitignore").write_text(GITIGNORE)
    remote = directory / "remote.git"
    _git("init", "--quiet", str(directory))
    _git("init", "--quiet", "--bare", str(remote))
    _git("remote", "add", "origin", str(remote), cwd=directory)
    _git("add", "--all", cwd=directory)
    # A fresh machine may have no git identity yet; the demo commit should not fail for it.
    known = run_git(["var", "GIT_AUTHOR_IDENT"], cwd=directory, check=False).returncode == 0
    ident = [] if known else ["-c", "user.name=puppemon demo", "-c", "user.email=demo@localhost"]
    try:
        _git(*ident, "commit", "--quiet", "--no-verify", "-m", "puppemon demo", cwd=directory)
    except GitError:
        pass  # pushing works from an unborn branch too: the snapshot is of the working tree
    return remote


def main(directory: str = "puppemon-demo", duration: str = "30s") -> int:
    """Create the demo, push it, run the daemon for `duration`, then show the run history."""
    from puppemon.daemon.loop import Daemon
    from puppemon.daemon.settings import Settings
    from puppemon.formats import option_seconds
    from puppemon.gitstore.command import run_git
    from puppemon.project.snapshot import deploy
    from puppemon.ui import setup_logging

    seconds = option_seconds(duration, "--for")
    root = Path(directory).expanduser().resolve()
    remote = create(root)
    print(f"created {root} (a git repository whose origin is {remote})")
    print(deploy(root, remote="origin").summary())
    print(f"running the daemon for {seconds:g}s (Ctrl-C stops it sooner)...", flush=True)

    setup_logging()
    state = root / ".puppemon-state"
    # `stop_after` counts from the end of the first cycle (deployed, run_on_deploy flows
    # started), so a slow start does not eat into the time the schedule gets.
    settings = Settings(remote=str(remote), state=state, name="quickstart", poll=5.0, grace=10.0,
                        stop_after=seconds)
    code = Daemon(settings).run()  # in the main thread: SIGINT/SIGTERM stop it cleanly

    history = run_git(["--git-dir", str(remote), "log", "--oneline", "runs"], check=False)
    print(f"\ngit log --oneline runs ({remote}):")
    print(history.stdout.decode().rstrip() or "(no runs recorded)")
    print("\nnext:\n"
          f"  cd {shlex.quote(str(root))}\n"
          "  puppemon runs            # the run history (plain git: git log runs)\n"
          "  puppemon logs hello      # the log of hello's latest run\n"
          "  puppemon status          # what the daemon last reported\n"
          "  # edit hello.py, `puppemon push`, and run the daemon again:\n"
          f"  puppemon daemon --remote {shlex.quote(str(remote))} --state {shlex.quote(str(state))}")
    return code
