"""Figure 2: `puppemon push` after a one-file edit on a large project, against git plumbing.

The baseline is the same work with git alone, `git push` included: fetch the remote's tip, snapshot
the working tree on a copy of the index (`add -A`, `write-tree`), `commit-tree` on the tip, and
`git push` to the same bare remote, by the same remote name."""
from __future__ import annotations

import os
from pathlib import Path

from bench.common import Context, Row, git, interleaved, median, puppemon_argv, run

GOAL = {"edit": 1.3, "same": 1.5}    # issue 19 asks 1.3x of a push that writes a commit

MANIFEST = """\
version: 1
flows:
  hello:
    command: echo hello
    every: 1h
"""

# The same work as `puppemon push`, with git alone: fetch the remote tip, snapshot the
# working tree on a private copy of the index, commit on top of the tip, push.
PLUMBING = r"""#!/bin/sh
set -e
remote="$1"; ref="$2"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git fetch --quiet --no-tags --no-write-fetch-head "$remote" "+$ref:refs/bench/tip"
parent=$(git rev-parse --verify -q refs/bench/tip)
cp .git/index "$tmp/index"
GIT_INDEX_FILE="$tmp/index" git add -A
tree=$(GIT_INDEX_FILE="$tmp/index" git write-tree)
if [ "$tree" = "$(git rev-parse "$parent^{tree}")" ]; then
  echo "up to date"; exit 0
fi
commit=$(echo "deploy" | git commit-tree "$tree" -p "$parent")
git push --quiet "$remote" "$commit:$ref"
"""


def sizes(ctx: Context) -> tuple[int, int]:
    return (500, 150) if ctx.quick else (10_000, 3_000)


def rows(ctx: Context) -> list[str]:
    files, _ = sizes(ctx)
    return [f"push, one-file edit ({files:,} files)", f"push, no change ({files:,} files)"]


def make_project(root: Path, files: int, ignored: int) -> Path:
    """A committed project: `files` tracked files in nested directories, `ignored` ignored ones."""
    project = root / "project"
    git("init", "--quiet", str(project))
    (project / "puppemon.yaml").write_text(MANIFEST)
    (project / ".gitignore").write_text("node_modules/\n*.log\n")
    for i in range(files - 2):
        d = project / "src" / f"pkg{i // 1000:02d}" / f"mod{i // 50:03d}"
        if i % 50 == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"file{i:05d}.py").write_text(f"# module {i}\nVALUE = {i}\n" + "x = 1\n" * (i % 40))
    for i in range(ignored):
        d = project / "node_modules" / f"dep{i // 100:03d}"
        if i % 100 == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"index{i}.js").write_text(f"module.exports = {i};\n")
    git("add", "-A", cwd=project)
    git("commit", "--quiet", "-m", "initial", cwd=project)
    return project


def measure(ctx: Context) -> list[Row]:
    files, ignored = sizes(ctx)
    root = ctx.dir("push")
    remote = root / "remote.git"
    git("init", "--bare", "--quiet", str(remote))
    project = make_project(root, files, ignored)
    script = root / "plumbing.sh"
    script.write_text(PLUMBING)
    os.chmod(script, 0o755)
    git("remote", "add", "origin", str(remote), cwd=project)  # as a user has it: `puppemon push`
    cli = puppemon_argv()
    run([*cli, "push"], cwd=project)
    # the baseline builds on a tip as well: start it where the first deploy is
    git("--git-dir", str(remote), "update-ref", "refs/heads/baseline", "refs/heads/flows")
    edited = project / "src" / "pkg00" / "mod000" / "file00000.py"
    counter = [0]

    def edit() -> None:
        counter[0] += 1
        edited.write_text(f"# module 0, edit {counter[0]}\nVALUE = {counter[0]}\n")

    def push() -> None:
        edit()
        out = run([*cli, "push"], cwd=project).stdout.decode()
        assert out.startswith("pushed"), out

    def plumbing() -> None:
        edit()
        run([str(script), "origin", "refs/heads/baseline"], cwd=project)

    repeat = 5 if ctx.quick else 9
    times = interleaved({"push": push, "plumbing": plumbing}, repeat=repeat)
    # no change: both see the tree they pushed last and stop before committing
    edit()
    run([*cli, "push"], cwd=project)
    run([str(script), "origin", "refs/heads/baseline"], cwd=project)

    def push_same() -> None:
        out = run([*cli, "push"], cwd=project).stdout.decode()
        assert "up to date" in out, out

    def plumbing_same() -> None:
        out = run([str(script), "origin", "refs/heads/baseline"], cwd=project).stdout.decode()
        assert "up to date" in out, out

    same = interleaved({"push": push_same, "plumbing": plumbing_same}, repeat=repeat)
    label_edit, label_same = rows(ctx)
    base_labels = {"edit": "git plumbing script, `git push` included", "same": "git plumbing script"}
    out = []
    for key, label, t in (("edit", label_edit, times), ("same", label_same, same)):
        value, base = median(t["push"]), median(t["plumbing"])
        out.append(Row(2, label, value, "s", base, base_labels[key], f"≤ {GOAL[key]:g}×", value / base <= GOAL[key],
                       note=f"+{ignored:,} ignored files"))
    ctx.cache["push_project"] = (project, remote)
    return out
