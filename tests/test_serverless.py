"""Serverless: the scheduled workflow of `init --github --serverless`, linted, and its own `run:` steps run
twice on a simulated runner against a smart-HTTP remote that demands the job's token, with a gap longer
than the flow's schedule between them: the missed fires follow `catchup` exactly."""
from __future__ import annotations

import re
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from puppemon.formats import parse_iso
from puppemon.project.serverless import GRANTS, GRANTS_PATH, WORKFLOW, WORKFLOW_PATH
from tests.conftest import git, make_repo, puppemon
from tests.daemon_helpers import of_flow, remote_records, result_of
from tests.test_github import HEADER_VALUE, INSTALL_ENV, TOKEN, Runner, _actionlint, load_yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "examples" / "github" / "puppemon-daemon.yml"
UTC = timezone.utc
EVERY = 2          # the flow's schedule, in seconds
GAP = 7            # between the two jobs: longer than the schedule, three or four fires missed

PROBE = '''\
import os
import subprocess

import puppemon


def main():
    """What a flow in the job can reach: not the job's token, not the remote; its secret, yes."""
    url = f"{os.environ['GITHUB_SERVER_URL']}/{os.environ['GITHUB_REPOSITORY']}.git"
    remote = subprocess.run(["git", "ls-remote", url], capture_output=True, cwd=os.environ["GITHUB_WORKSPACE"],
                            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    return {"token_seen": any("%s" in value for value in os.environ.values()),
            "remote_reachable": remote.returncode == 0,
            "secret": puppemon.secret("discord") == "https://hooks.example/abc"}
'''
GRANTED = "discord:\n  env: PUPPEMON_SECRET_DISCORD\n  flows: [probe]\n"


def test_example_workflow_is_the_template_byte_for_byte():
    assert TEMPLATE.read_bytes() == WORKFLOW.encode()


def test_the_workflow_runs_once_on_a_schedule_one_job_at_a_time():
    wf = load_yaml(TEMPLATE)
    assert set(wf["on"]) == {"schedule", "workflow_dispatch"} and wf["on"]["schedule"][0]["cron"]
    assert wf["concurrency"] == {"group": "puppemon-daemon", "cancel-in-progress": False}
    job = wf["jobs"]["daemon"]
    assert job["steps"][0]["with"] == {"persist-credentials": False}
    (step,) = [s for s in job["steps"] if s.get("name") == "Run what is due"]
    assert step["env"] == {"PUPPEMON_GIT_TOKEN": "${{ secrets.GITHUB_TOKEN }}"}
    assert "daemon --once" in step["run"] and '--state "$RUNNER_TEMP/puppemon"' in step["run"]


def test_actionlint_the_daemon_workflow(tmp_path):
    actionlint = _actionlint()
    repo = tmp_path / "repo"
    (repo / ".github" / "workflows").mkdir(parents=True)
    (repo / WORKFLOW_PATH).write_text(WORKFLOW)
    git("init", "--quiet", str(repo))
    proc = subprocess.run([actionlint, "-no-color"], cwd=repo, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_init_github_serverless_writes_both_workflows_and_a_grants_file(tmp_path):
    project = tmp_path / "p"
    proc = puppemon("init", str(project), "--github", "--serverless", "--puppemon-source",
                    "git+https://example.com/x/puppemon.git@v1")
    assert "puppemon-daemon.yml (runs the flows on a schedule, no server needed)" in proc.stdout
    assert (project / GRANTS_PATH).read_text() == GRANTS
    text = (project / WORKFLOW_PATH).read_text()
    assert 'PUPPEMON_SOURCE: "git+https://example.com/x/puppemon.git@v1"' in text
    assert (project / ".github" / "workflows" / "puppemon-push.yml").is_file()
    again = puppemon("init", str(project), "--github", "--serverless", "--puppemon-source",
                     "git+https://example.com/x/puppemon.git@v1", check=False)
    assert again.returncode == 1
    assert again.stderr.startswith("Error: ") and "puppemon-daemon.yml already exists" in again.stderr
    alone = puppemon("init", str(tmp_path / "q"), "--serverless", check=False)
    assert alone.returncode == 1 and alone.stderr == ("Error: --serverless writes a GitHub Actions workflow: "
                                                      "pass --github --serverless\n")


def steps() -> tuple[dict, list[tuple[str, dict]]]:
    """The job's env and its `run:` steps with their env, in order, from the template."""
    job = load_yaml(TEMPLATE)["jobs"]["daemon"]
    return job["env"], [(s["run"], s.get("env", {})) for s in job["steps"] if "run" in s]


def run_job(runner: Runner, grace: str) -> tuple[datetime, datetime]:
    """One job: every `run:` step, in a workspace checked out with persist-credentials: false and the
    secrets the workflow maps; (when it started, when it ended)."""
    job_env, scripts = steps()
    runner.checkout("none")
    start = datetime.now(UTC)
    for script, env in scripts:
        # the secrets as the runner expands them; puppemon from this checkout, as in tests/test_github.py
        env = {**job_env, "PUPPEMON_MISFIRE_GRACE": grace, **env, **INSTALL_ENV,
               "PUPPEMON_GIT_TOKEN": TOKEN, "PUPPEMON_SECRET_DISCORD": "https://hooks.example/abc"}
        proc = runner.run_step(script, {k: str(v) for k, v in env.items()})
        assert proc.returncode == 0, f"step {script!r} failed:\n{proc.stdout}\n{proc.stderr}"
    return start, datetime.now(UTC)


def ticks(bare) -> list[dict]:
    return of_flow(remote_records(bare), "tick")


def follows(policy: str, fires: list[dict], since: datetime, start: datetime, end: datetime) -> None:
    """The fires a job ran follow `policy`, given the last fire before it (`since`) and when it ran."""
    scheduled = [parse_iso(r["scheduled"]) for r in fires]
    assert all(r["trigger"] == {"kind": "catchup"} for r in fires), fires
    if policy == "none":
        assert scheduled == []
        return
    assert scheduled, f"nothing caught up since {since}"
    newest = scheduled[-1]
    assert newest <= end and newest + timedelta(seconds=EVERY) > start - timedelta(seconds=0.5)
    if policy == "latest":
        assert len(scheduled) == 1
    else:   # every fire on the grid from the one after `since` to the newest, none twice
        first = since + timedelta(seconds=EVERY - since.timestamp() % EVERY)
        expected = [first + timedelta(seconds=EVERY * i) for i in range(len(scheduled))]
        assert scheduled == expected and scheduled[-1] == newest


@pytest.fixture
def github(http_server, tmp_path):
    server = http_server(("header", "Authorization", HEADER_VALUE))
    bare = server.new_bare("octo/project.git")
    return server, bare, server.url_for(bare)


@pytest.mark.parametrize("policy", ["none", "latest", "all"])
def test_the_workflow_steps_run_twice_and_missed_fires_follow_catchup(github, tmp_path, policy):
    server, bare, url = github
    manifest = (f"version: 1\nflows:\n  tick:\n    command: [\"true\"]\n    every: {EVERY}s\n"
                f"    catchup: {policy}\n    overlap: parallel\n"
                "  probe:\n    entrypoint: probe.py:main\n    run_on_deploy: true\n    secrets: [discord]\n")
    dev = make_repo(tmp_path / "dev", {"puppemon.yaml": manifest, "probe.py": PROBE % TOKEN,
                                       str(GRANTS_PATH): GRANTED})
    auth = ["-c", f"http.extraheader=AUTHORIZATION: {HEADER_VALUE}"]
    git(*auth, "push", "--quiet", url, "main", cwd=dev)
    git("remote", "add", "origin", url, cwd=dev)
    git("config", "http.extraheader", f"AUTHORIZATION: {HEADER_VALUE}", cwd=dev)
    pushed = puppemon("push", cwd=dev)   # the grants file names variables only: push takes it
    assert pushed.stdout.startswith("pushed flows "), pushed.stdout + pushed.stderr
    deployed = datetime.fromtimestamp(int(git("--git-dir", str(bare), "log", "-1", "--format=%ct", "flows")), UTC)
    sha = git("rev-parse", "HEAD", cwd=dev).strip()

    runner = Runner(tmp_path / "runner", url, sha)
    # the first job starts after at least one fire of the grid has passed since the deploy: one is missed
    first_fire = deployed + timedelta(seconds=EVERY - deployed.timestamp() % EVERY)
    time.sleep(max(0.0, (first_fire - datetime.now(UTC)).total_seconds() + 0.3))
    first = run_job(runner, "0s")
    ran = ticks(bare)
    follows(policy, ran, deployed, *first)
    since = parse_iso(ran[-1]["scheduled"]) if ran else deployed

    time.sleep(max(0.0, GAP - (datetime.now(UTC) - first[1]).total_seconds()))
    runner = Runner(tmp_path / "runner2", url, sha)   # a new runner: nothing kept but the remote
    second = run_job(runner, "0s")
    assert (second[0] - since).total_seconds() > EVERY
    follows(policy, ticks(bare)[len(ran):], since, *second)

    # The flow in the job: no token, no way to the remote; its secret, granted by the committed file.
    (probe,) = of_flow(remote_records(bare), "probe")   # run on deploy once: the second job resumed the deploy
    assert probe["status"] == "succeeded", probe
    assert result_of(bare, probe) == {"token_seen": False, "remote_reachable": False, "secret": True}
    assert TOKEN not in (runner.workspace / ".git" / "config").read_text()
    packs = [r for r in server.requests if r.path.endswith("-pack")]
    assert packs and all(r.authorized for r in packs)
    git("fsck", "--strict", cwd=bare)


def test_a_grants_file_of_names_is_no_secrets_file_to_push(tmp_path):
    """`push` refuses a secrets file holding values, but not the grants file of names."""
    from puppemon.project.safety import _holds_secrets

    assert _holds_secrets(str(GRANTS_PATH), GRANTED.encode()) is None
    assert _holds_secrets(str(GRANTS_PATH), b"discord:\n  value: x\n  flows: [probe]\n") is not None
    assert re.search(r"env: PUPPEMON_SECRET_", GRANTS)
