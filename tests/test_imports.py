"""What each command loads: the heavy libraries only where they are used. The decisions live in one
place each (ui.py: rich only for a terminal; project/triggers.py: APScheduler only for the daemon's
scheduler; gitstore/__init__.py: pygit2 only with Store); this checks them, in a real process.
How long commands take is bench/fig_cli.py's business, not a test's."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench import fig_cli
from tests.conftest import git, puppemon
from tests.test_runs_logs import HISTORY, seed
from tests.test_status import write_status

# Runs the CLI in-process, then writes the names of the modules it loaded to the file in argv[1].
PROBE = """\
import atexit, json, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
from puppemon.cli import main
sys.argv[0] = "puppemon"
main()
"""

MANIFEST = fig_cli.MANIFEST   # the project figure 1 times these commands in

EVERYWHERE = {"apscheduler", "asyncio", "watchdog", "jinja2"}
READS = EVERYWHERE | {"rich", "yaml"}       # runs, logs, status off a terminal


def loaded(tmp_path, *args, cwd, terminal: bool = False) -> set[str]:
    """Top-level packages `puppemon ARGS` loaded, its stdout a pipe (or a pseudo-terminal)."""
    out = tmp_path / "modules.json"
    argv = [sys.executable, "-c", PROBE, str(out), *args]
    if terminal:
        import pty

        master, slave = pty.openpty()
        proc = subprocess.run(argv, cwd=cwd, stdout=slave, stderr=subprocess.PIPE, timeout=120,
                              env=dict(os.environ, TERM="xterm-256color"))
        os.close(slave)
        os.close(master)
    else:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    return {name.split(".")[0] for name in json.loads(out.read_text())}


@pytest.fixture
def repo(project, bare_remote, tmp_path):
    (project / "puppemon.yaml").write_text(MANIFEST)
    git("commit", "--quiet", "-am", "three flows", cwd=project)
    puppemon("push", cwd=project)
    seed(bare_remote, tmp_path, HISTORY)
    tip = git("--git-dir", str(bare_remote), "rev-parse", "flows").strip()
    write_status(bare_remote, "box", flows_commit=tip)
    puppemon("status", cwd=project)             # fetches the runs branch and the status refs
    return project


@pytest.mark.parametrize("args, absent", [
    (["--help"], READS | {"pygit2"}),
    (["validate"], EVERYWHERE | {"rich", "pygit2"}),
    (["runs", "--no-fetch"], READS),
    (["runs", "--no-fetch", "-n", "2", "--json"], READS),
    (["logs", "--no-fetch", HISTORY[1][0]["id"]], READS),
    (["status", "--no-fetch"], READS),
    (["upcoming", "--no-fetch"], EVERYWHERE | {"rich"}),   # reads the deployed manifest: yaml
    (["upcoming", "--no-fetch", "--json"], EVERYWHERE | {"rich"}),
    (["push", "--dry-run"], EVERYWHERE | {"rich", "pygit2"}),
])
def test_commands_leave_heavy_libraries_unloaded(repo, tmp_path, args, absent):
    assert loaded(tmp_path, *args, cwd=repo) & absent == set()


def test_on_a_terminal_rich_draws_the_table(repo, tmp_path):
    """The control: the probe does see what a command loads."""
    assert "rich" in loaded(tmp_path, "runs", "--no-fetch", cwd=repo, terminal=True)
    assert "rich" in loaded(tmp_path, "validate", cwd=repo, terminal=True)


def test_the_daemon_side_still_builds_apscheduler_triggers(tmp_path):
    from puppemon.project.manifest import parse
    from puppemon.project.triggers import flow_trigger

    flow = parse(MANIFEST.encode(), "puppemon.yaml").flows["report"]
    assert type(flow_trigger(flow)).__module__.startswith("apscheduler.")
