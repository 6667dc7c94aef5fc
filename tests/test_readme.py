"""The README's commands work as written: each shell block runs, in order, in a sandbox."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from puppemon.project.manifest import parse

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```$", README, flags=re.S | re.M)


def test_the_two_commands_open_the_readme_and_ci_runs_the_test_command():
    main_job, tests = blocks("sh")[:2]
    assert README.index(main_job) < README.index("## A five-minute tour")
    # the main job: installing is what a new user does; `puppemon quickstart` itself
    # runs end to end in tests/test_quickstart.py
    assert main_job == "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/puppemon quickstart\n"
    ci = (ROOT / ".ci" / "run").read_text().rstrip().splitlines()
    assert ci[-1] + "\n" == tests


def test_manifest_example_is_valid():
    (example,) = [b for b in blocks("yaml") if b.startswith("version: 1")]
    manifest = parse(example)
    assert list(manifest.flows) == ["daily-report", "backup", "rebuild-index"]
    assert manifest.flows["daily-report"].timezone == "Asia/Taipei"


@pytest.mark.slow
def test_every_shell_block_after_the_first_two_runs(tmp_path):
    script = "set -euo pipefail\n" + "\n".join(blocks("sh")[2:])
    # `puppemon` on PATH, as the README asks (source .venv/bin/activate): the one running these tests
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    out = proc.stdout
    # the tour's claims, checked against what really happened
    assert "puppemon.yaml is valid" in out
    assert re.search(r"^pushed flows [0-9a-f]{7} to origin", out, re.M)
    assert re.search(r"hello: succeeded in [0-9.]+s \(request by ", out)  # git log --oneline runs
    assert "Puppemon-Status" not in out and "Traceback" not in proc.stderr
    assert "runs/hello/" in out  # git ls-tree of the runs branch
    remote = tmp_path / "hello-remote.git"
    subprocess.run(["git", "--git-dir", str(remote), "fsck", "--strict"], check=True, capture_output=True)
