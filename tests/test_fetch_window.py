"""A read moments after a fetch of the same remote reuses it, unless this repository wrote to the
remote since, the run asked for is not there, or --fetch / PUPPEMON_FETCH_WINDOW says otherwise."""
from __future__ import annotations

import json

from tests.conftest import git, puppemon, wait_until
from tests.test_runs_logs import HISTORY, make_record, seed


def ids(repo, *args, env=None) -> list[str]:
    return [r["id"] for r in json.loads(puppemon("runs", "--json", *args, cwd=repo, env=env).stdout)]


def test_a_read_right_after_a_fetch_reuses_it_and_fetch_forces_one(project, bare_remote, tmp_path):
    seed(bare_remote, tmp_path, HISTORY[:1])
    first = HISTORY[0][0]["id"]
    assert ids(project) == [first]
    newer = make_record("hello", 9, suffix="ee0009")
    seed(bare_remote, tmp_path, [(newer, b"later\n")])          # a daemon publishes, unseen from here
    assert ids(project) == [first]                               # within the window: no fetch
    assert ids(project, "--fetch") == [newer["id"], first]
    assert git("rev-parse", "runs", cwd=project) == git("--git-dir", str(bare_remote), "rev-parse", "runs")
    latest = make_record("hello", 10, suffix="ff0010")
    seed(bare_remote, tmp_path, [(latest, b"")])
    assert ids(project, env={"PUPPEMON_FETCH_WINDOW": "0"})[0] == latest["id"]


def test_the_window_ends(project, bare_remote, tmp_path):
    seed(bare_remote, tmp_path, HISTORY[:1])
    short = {"PUPPEMON_FETCH_WINDOW": "0.5"}
    ids(project, env=short)
    newer = make_record("hello", 9, suffix="ee0009")
    seed(bare_remote, tmp_path, [(newer, b"later\n")])
    wait_until(lambda: ids(project, env=short)[0] == newer["id"], timeout=20, what="a fetch after the window")


def test_logs_of_a_run_not_fetched_yet_fetches_after_all(project, bare_remote, tmp_path):
    seed(bare_remote, tmp_path, HISTORY[:1])
    ids(project)
    newer = make_record("hello", 9, suffix="ee0009")
    seed(bare_remote, tmp_path, [(newer, b"later\n")])
    proc = puppemon("logs", newer["id"], cwd=project)
    assert proc.stdout == "later\n" and proc.stderr.startswith(f"hello {newer['id']} succeeded")
    missing = puppemon("logs", "20261125T235959Z-000000", cwd=project, check=False)
    assert (missing.returncode, missing.stderr) == (1, "Error: no run with id '20261125T235959Z-000000'; "
                                                       "list runs with `puppemon runs`\n")


def test_a_write_from_here_makes_the_next_read_fetch(project, bare_remote, tmp_path):
    puppemon("push", cwd=project)
    seed(bare_remote, tmp_path, HISTORY[:1])
    ids(project)
    newer = make_record("hello", 9, suffix="ee0009")
    seed(bare_remote, tmp_path, [(newer, b"later\n")])
    puppemon("trigger", "hello", cwd=project)                    # a request commit, pushed from here
    assert ids(project)[0] == newer["id"]


def test_status_reuses_only_a_status_fetch(project, bare_remote, tmp_path):
    """`runs` fetches the runs branch alone: a `status` right after it still fetches the status refs."""
    puppemon("push", cwd=project)
    seed(bare_remote, tmp_path, HISTORY[:1])
    ids(project)
    from tests.test_status import write_status

    write_status(bare_remote, "alpha")
    assert [d["name"] for d in json.loads(puppemon("status", "--json", cwd=project).stdout)["daemons"]] == ["alpha"]


def test_a_bad_window_is_one_line(project):
    proc = puppemon("runs", cwd=project, env={"PUPPEMON_FETCH_WINDOW": "soon"}, check=False)
    assert (proc.returncode, proc.stderr) == (
        1, "Error: PUPPEMON_FETCH_WINDOW='soon': expected a number of seconds (0 always fetches)\n")
