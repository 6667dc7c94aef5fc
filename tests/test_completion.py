"""Shell completion through click's own protocol, in a real process: flow names from the working tree's
puppemon.yaml, run ids from the local runs branch, never a traceback, no fetch."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import puppemon
from tests.test_runs_logs import HISTORY, seed


def complete(cwd, *words: str, env: dict | None = None) -> tuple[list[str], str]:
    """(what bash would offer for the last of `words`, stderr), asked as the script `bash_source` prints does."""
    line = ["puppemon", *words]
    asked = {"_PUPPEMON_COMPLETE": "bash_complete", "COMP_WORDS": " ".join(line), "COMP_CWORD": str(len(line) - 1)}
    proc = subprocess.run([sys.executable, "-m", "puppemon"], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **asked, **(env or {})}, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return [item.split(",", 1)[1] for item in proc.stdout.splitlines() if item], proc.stderr


def test_flow_names_from_the_working_tree(project):
    (project / "puppemon.yaml").write_text(
        "version: 1\nflows:\n  hello:\n    command: x\n  backup:\n    command: y\n  backfill:\n    command: z\n")
    assert complete(project, "run", "") == (["backfill", "backup", "hello"], "")
    assert complete(project, "trigger", "back") == (["backfill", "backup"], "")
    assert complete(project, "env", "h") == (["hello"], "")
    assert complete(project, "runs", "ba") == (["backfill", "backup"], "")
    # from a directory inside the project, and for a manifest that does not validate
    (project / "sub").mkdir()
    (project / "puppemon.yaml").write_text("version: 1\nflows:\n  hello:\n    every: soon\n")
    assert complete(project / "sub", "run", "") == (["hello"], "")


def test_run_ids_from_the_local_runs_branch_without_fetching(history_project):
    project, bare_remote = history_project
    ids = [rec["id"] for rec, _ in reversed(HISTORY)]
    assert complete(project, "cancel", "") == (ids, "")
    assert complete(project, "cancel", "20261125T0833") == (["20261125T083300Z-cc0002"], "")
    # logs takes an id or a flow: both are offered
    assert complete(project, "logs", "") == (["hello", *ids], "")
    # the newest that match, however old: not the newest that are then filtered
    from puppemon.gitstore import Store
    from puppemon.history.records import RunStore

    runs = RunStore(Store.discover(project))
    assert runs.recent_ids(1) == [ids[0]]
    assert runs.recent_ids(1, "20261125T0831") == ["20261125T083100Z-0b0b0b"]
    # no fetch: a run the remote has and this repository does not yet is not offered
    seed(bare_remote, project.parent, [(dict(HISTORY[0][0], id="20261126T000000Z-123456"), b"")])
    assert complete(project, "cancel", "20261126") == ([], "")


def test_nothing_to_complete_is_quiet(tmp_path):
    for words in (("run", ""), ("cancel", ""), ("logs", "2026")):
        assert complete(tmp_path, *words) == ([], "")         # no repository, no manifest
    (tmp_path / "puppemon.yaml").write_text("flows: [not, a, mapping\n")
    assert complete(tmp_path, "run", "") == ([], "")


def test_completion_reads_the_local_repository_only(history_project, tmp_path):
    """A tab press never waits for the network: no fetch, no other git process but local reads."""
    project, _ = history_project
    trace = tmp_path / "trace.json"
    offered, _ = complete(project, "logs", "2026", env={"GIT_TRACE2_EVENT": str(trace)})
    assert offered   # it did complete (the ids of the history)
    started = [json.loads(line) for line in trace.read_text().splitlines()] if trace.exists() else []
    argvs = [event["argv"] for event in started if event.get("event") == "start"]
    assert not [argv for argv in argvs if {"fetch", "ls-remote", "upload-pack", "push"} & set(argv)], argvs


def test_the_scripts_to_source(tmp_path):
    for shell, marker in (("bash", "complete -o nosort -F _puppemon_completion puppemon"),
                          ("zsh", "compdef _puppemon_completion puppemon"), ("fish", "complete --no-files")):
        proc = subprocess.run([sys.executable, "-m", "puppemon"], capture_output=True, text=True, cwd=tmp_path,
                              env={**os.environ, "_PUPPEMON_COMPLETE": f"{shell}_source"})
        assert marker in proc.stdout, (shell, proc.stdout)



@pytest.fixture
def history_project(project, bare_remote, tmp_path):
    seed(bare_remote, tmp_path, HISTORY)
    puppemon("runs", cwd=project)   # fetched once, as a user would have
    return project, bare_remote
