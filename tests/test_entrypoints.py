"""Entrypoints are checked by reading them (ast, never importing): in validate, push and the daemon;
-p names get a did-you-mean; and every command finds the project from a subdirectory of it."""
from __future__ import annotations

import pytest

from tests.conftest import git, make_repo, puppemon
from tests.daemon_helpers import deploy_records, remote_records, run_daemon_once

MANIFEST = """\
version: 1
flows:
  report:
    entrypoint: reports/daily.py:main
    params: {days: 1}
"""
DAILY = """\
import os

open(os.environ.get("IMPORTED_MARK", "/dev/null"), "w").write("imported")   # never at validate time


def main(days, region="tw", *, verbose=False):
    print("days", days, region)
    return days


def helper():
    pass
"""


@pytest.fixture
def reports(tmp_path, bare_remote):
    repo = make_repo(tmp_path / "project", {"puppemon.yaml": MANIFEST, "reports/daily.py": DAILY})
    git("remote", "add", "origin", str(bare_remote), cwd=repo)
    return repo


@pytest.mark.parametrize("manifest_edit, daily, error", [
    ("reports/daily.py:main", None, None),
    ("reports/dayly.py:main", None,
     "puppemon.yaml:4:17: flows.report.entrypoint: reports/dayly.py is not in {where}"),
    ("reports/daily.py:mian", None,
     "puppemon.yaml:4:17: flows.report.entrypoint: reports/daily.py has no function 'mian' (did you mean 'main'?)"),
    ("reports/daily.py:main", "def main(:\n",
     "puppemon.yaml:4:17: flows.report.entrypoint: reports/daily.py:1:10: Python cannot parse it "
     "(invalid syntax)"),
    ("reports/daily.py:main", "def main(day):\n    pass\n",
     "puppemon.yaml:5:14: flows.report.params.days: main() in reports/daily.py takes no parameter 'days' "
     "(did you mean 'day'?)"),
    ("reports/daily.py:main", "def main(**kwargs):\n    pass\n", None),
    ("reports.daily:main", None, None),                     # a module path, found in the project
    ("installed.pkg:main", None, None),                     # not in the project: maybe installed; left to the run
])
def test_validate_checks_the_entrypoint_without_importing_it(reports, tmp_path, manifest_edit, daily, error):
    (reports / "puppemon.yaml").write_text(MANIFEST.replace("reports/daily.py:main", manifest_edit))
    if daily is not None:
        (reports / "reports" / "daily.py").write_text(daily)
    mark = tmp_path / "imported"
    proc = puppemon("validate", cwd=reports, check=False, env={"IMPORTED_MARK": str(mark)})
    assert not mark.exists()
    if error is None:
        assert proc.returncode == 0, proc.stderr
    else:
        assert (proc.returncode, proc.stderr) == (1, f"Error: {error.format(where='the project directory')}\n")


def test_push_reads_the_entrypoint_from_the_snapshot(reports, bare_remote):
    """An entrypoint file that .gitignore leaves out is not deployed: push says so, writes nothing."""
    (reports / ".gitignore").write_text("reports/\n")
    git("rm", "--quiet", "-r", "--cached", "reports", cwd=reports)
    proc = puppemon("push", cwd=reports, check=False)
    assert (proc.returncode, proc.stderr) == (
        1, "Error: puppemon.yaml:4:17: flows.report.entrypoint: reports/daily.py is not in the snapshot "
           "(is it ignored by .gitignore?)\n")
    assert git("--git-dir", str(bare_remote), "branch", "--list", "flows") == ""


def test_the_daemon_refuses_a_deploy_whose_entrypoint_cannot_work(reports, bare_remote, tmp_path):
    puppemon("push", cwd=reports)
    good = git("--git-dir", str(bare_remote), "rev-parse", "flows").strip()
    # a commit push would have refused, made by hand on the flows branch
    clone = tmp_path / "clone"
    git("clone", "--quiet", "--branch", "flows", str(bare_remote), str(clone))
    (clone / "reports" / "daily.py").write_text("def run():\n    pass\n")
    git("commit", "--quiet", "-am", "renamed main", cwd=clone)
    git("push", "--quiet", "origin", "flows", cwd=clone)
    bad = git("rev-parse", "HEAD", cwd=clone).strip()
    result = run_daemon_once(str(bare_remote), tmp_path / "state")
    assert result.returncode == 0, result.stderr
    (refusal,) = [d for d in deploy_records(bare_remote) if d["flows_commit"] == bad]
    assert refusal["error"] == ("puppemon.yaml:4:17: flows.report.entrypoint: reports/daily.py has no function "
                                "'main' (it defines run)")
    assert good != bad and remote_records(bare_remote) == []


def test_run_and_trigger_suggest_the_param_meant(reports, bare_remote):
    proc = puppemon("run", "report", "-p", "dayz=2", cwd=reports, check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        1, "", "Error: -p dayz: main() in reports/daily.py takes no parameter 'dayz' (did you mean 'days'?)\n")
    assert puppemon("run", "report", "-p", "days=2", "-p", "verbose=true", cwd=reports).stdout == "days 2 tw\n"
    puppemon("push", cwd=reports)
    proc = puppemon("trigger", "report", "-p", "regoin=eu", cwd=reports, check=False)
    assert (proc.returncode, proc.stderr) == (
        1, "Error: -p regoin: main() in reports/daily.py takes no parameter 'regoin' (did you mean 'region'?)\n")
    assert git("--git-dir", str(bare_remote), "branch", "--list", "runs") == ""   # no request was written


def test_commands_find_the_project_from_a_subdirectory(reports, bare_remote):
    deep = reports / "reports"
    assert puppemon("validate", cwd=deep).stdout.startswith("puppemon.yaml is valid: 1 flow\n")
    assert puppemon("run", "report", cwd=deep).stdout == "days 1 tw\n"
    pushed = puppemon("push", cwd=deep)
    assert pushed.stdout.startswith("pushed flows ")
    tree = git("--git-dir", str(bare_remote), "ls-tree", "--name-only", "flows")
    assert tree.split() == ["puppemon.yaml", "reports"]          # the project root, not the subdirectory
    assert puppemon("push", "--dry-run", "-C", str(deep), cwd=reports.parent).stdout.startswith("flows already")


def test_a_directory_outside_any_project_still_says_how_to_start(tmp_path):
    git("init", "--quiet", str(tmp_path / "repo"))
    (tmp_path / "repo" / "sub").mkdir()
    proc = puppemon("validate", cwd=tmp_path / "repo" / "sub", check=False)
    assert proc.stderr == "Error: no puppemon.yaml in .; run `puppemon init` to create one\n"
