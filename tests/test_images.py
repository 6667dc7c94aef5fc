"""What decides a built image's tag (run/images.py `context_hash`), on real files: no engine needed."""
from __future__ import annotations

import subprocess

from puppemon.run.images import context_hash


def test_a_commit_or_a_runs_outputs_change_no_image_and_a_file_of_the_context_does(tmp_path):
    project = tmp_path / "project"
    (project / "box").mkdir(parents=True)
    (project / "Containerfile").write_text("FROM localhost/base\nCOPY box /box\n")
    (project / "box" / "tool.sh").write_text("echo one\n")
    before = context_hash(project, "Containerfile")
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    subprocess.run(["git", "-C", str(project), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@example.com",
                    "commit", "-qm", "x"], check=True)
    (project / ".puppemon" / "outputs" / "20261201T000000Z-abc123").mkdir(parents=True)
    (project / ".puppemon" / "outputs" / "20261201T000000Z-abc123" / "out.txt").write_text("a run's output\n")
    assert context_hash(project, "Containerfile") == before       # .git and .puppemon decide nothing
    (project / "box" / "tool.sh").write_text("echo two\n")
    assert context_hash(project, "Containerfile") != before       # a file the build can COPY does
