"""Hostile `flows` content: trees only git plumbing can make, manifests that break YAML or are huge.

Anyone who can push to the remote can write such a commit; the daemon refuses it with a
deploy record, writes nothing outside its deploy directory, and keeps the old deploy running.
"""
from __future__ import annotations

import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import git, puppemon
from tests.daemon_helpers import deploy, deploy_records, manifest_project, of_flow, remote_records
from tests.test_daemon_inprocess import T0, Clock, idle, running

MAX_BYTES = 1024 * 1024   # the limit the README documents
GOOD = 'version: 1\nflows:\n  tick:\n    command: ["true"]\n    every: 1h\n'
PWNED = "pwned-7c1e"   # the file a hostile tree tries to write outside the checkout


def hash_object(clone: Path, data: bytes, kind: str = "blob") -> str:
    """An object written as given, unchecked (`--literally`), as a hostile pusher would."""
    return subprocess.run(["git", "hash-object", "-w", "--literally", "-t", kind, "--stdin"], cwd=clone,
                          input=data, capture_output=True, check=True).stdout.decode().strip()


def tree(clone: Path, entries: list[tuple[str, bytes, str]], base: str | None = None) -> str:
    """A tree of (mode, raw name, oid) entries, and those of the tree `base`, in git's order but never checked."""
    entries = list(entries)
    if base is not None:
        for line in git("ls-tree", "-z", base, cwd=clone).split("\0")[:-1]:
            info, name = line.split("\t", 1)
            mode, _, oid = info.split()
            entries.append((mode.lstrip("0"), name.encode(), oid))
    entries.sort(key=lambda e: e[1] + (b"/" if e[0] == "40000" else b""))
    raw = b"".join(f"{mode} ".encode() + name + b"\0" + bytes.fromhex(oid) for mode, name, oid in entries)
    return hash_object(clone, raw, "tree")


def push_tree(clone: Path, tree_oid: str, message: str) -> str:
    """Commit `tree_oid` on top of the clone's flows and push it to the remote's flows branch."""
    parent = git("rev-parse", "flows", cwd=clone).strip()
    sha = git("commit-tree", tree_oid, "-p", parent, "-m", message, cwd=clone).strip()
    git("update-ref", "refs/heads/flows", sha, parent, cwd=clone)
    git("push", "--quiet", "origin", "flows", cwd=clone)
    return sha


def hostile_trees(clone: Path) -> list[tuple[str, str, str]]:
    """(label, tree, the deploy error expected) for each kind of hostile tree, each on top of the good one."""
    base = git("rev-parse", "flows^{tree}", cwd=clone).strip()
    pwned = hash_object(clone, b"written outside the checkout\n")
    inner = tree(clone, [("100644", PWNED.encode(), pwned)])
    deep = tree(clone, [("40000", b"..", tree(clone, [("40000", b"..", inner)]))])
    git_dir = tree(clone, [("100644", b"config", hash_object(clone, b"[core]\n\tfsmonitor = touch /tmp/x\n"))])
    cases = [
        ("slashes", [("100644", f"../../../{PWNED}".encode(), pwned)], f"'../../../{PWNED}' has a '/' in it"),
        ("dot-dot", [("40000", b"..", inner)], "'..' is not a file name"),
        ("dot-dot deeper", [("40000", b"lib", deep)], "'lib/..' is not a file name"),
        ("dot", [("40000", b".", inner)], "'.' is not a file name"),
        (".git", [("40000", b".git", git_dir)], "'.git' would be a .git directory"),
        (".GiT below", [("40000", b"lib", tree(clone, [("40000", b".GiT", git_dir)]))],
         "'lib/.GiT' would be a .git directory"),
        ("twice", [("100644", b"notes", pwned), ("100644", b"notes", pwned)], "'notes' is twice in its directory"),
    ]
    return [(label, tree(clone, entries, base), why) for label, entries, why in cases]


def manifest_tree(clone: Path, manifest: bytes) -> str:
    return tree(clone, [("100644", b"puppemon.yaml", hash_object(clone, manifest))])


ESCAPE_MANIFEST = 'version: 1\nflows:\n  tick:\n    command: "{}"\n    every: 1h\n'
ESCAPES = [
    ("\\U00200000", ("puppemon.yaml:4:15: invalid YAML: the escape \\U00200000 is not a Unicode character "
                     "(the largest is \\U0010FFFF)")),
    ("\\UFFFFFFFF", ("puppemon.yaml:4:15: invalid YAML: the escape \\UFFFFFFFF is not a Unicode character "
                     "(the largest is \\U0010FFFF)")),
    ("\\uD800", ("puppemon.yaml:4:14: invalid YAML: U+D800 is half of a UTF-16 surrogate pair, not a character "
                 "(write the character itself, or \\U and its code point)")),
]
BIG = (GOOD + "# " + "x" * MAX_BYTES + "\n").encode()
BIG_ERROR = (f"puppemon.yaml: {len(BIG)} bytes, more than the 1048576 (1 MiB) a manifest may hold "
             "(keep data in files of the project and read them from the flow)")


def test_hostile_flows_commits_are_refused_recorded_and_the_old_deploy_keeps_running(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), GOOD)
    deploy(repo)
    good = git("--git-dir", str(bare_remote), "rev-parse", "flows").strip()
    clone = tmp_path / "clone"
    git("clone", "--quiet", "--branch", "flows", str(bare_remote), str(clone))
    cases = [(label, t, (f"refusing to check out {{sha}}: the entry {why} (a tree `git add` cannot make; "
                         "push the project again with `puppemon push`)")) for label, t, why in hostile_trees(clone)]
    cases += [(f"escape {text}", manifest_tree(clone, ESCAPE_MANIFEST.format(text).encode()), error)
              for text, error in ESCAPES]
    cases += [("1 MiB and more", manifest_tree(clone, BIG), BIG_ERROR)]
    state = tmp_path / "state"
    expected = {}
    with running(bare_remote, state, Clock()) as daemon:
        daemon.cycle()
        assert daemon.deployer.current.sha == good
        for label, tree_oid, error in cases:
            sha = push_tree(clone, tree_oid, label)
            started = time.monotonic()
            daemon.cycle()
            assert time.monotonic() - started < 10, f"{label}: the cycle took {time.monotonic() - started:.1f}s"
            assert daemon.deployer.current.sha == good, label
            expected[sha] = error.format(sha=sha[:7])
        daemon.fire("tick", T0 + timedelta(hours=1))
        idle(daemon)
    refused = {d["flows_commit"]: d["error"] for d in deploy_records(bare_remote) if d["status"] == "refused"}
    assert refused == expected
    (run,) = of_flow(remote_records(bare_remote), "tick")
    assert (run["status"], run["flows_commit"]) == ("succeeded", good)
    # nothing was written outside the deploy directory, and no half checkout is left in it
    assert [p.name for p in (state / "deploys").iterdir()] == [good]
    assert not [p for p in tmp_path.rglob(f"*{PWNED}*")] and not list(tmp_path.parent.glob(f"*{PWNED}*"))
    assert not (state / "deploys" / good / ".git").exists()
    # the crafted trees are the remote's only flaw: the runs branch on its own passes `git fsck --strict`
    runs_only = tmp_path / "runs-only.git"
    git("init", "--bare", "--quiet", str(runs_only))
    git("--git-dir", str(runs_only), "fetch", "--quiet", str(bare_remote), "runs:runs")
    git("--git-dir", str(runs_only), "fsck", "--strict", "--no-dangling")


@pytest.mark.parametrize("escape, error", ESCAPES)
def test_an_escape_that_is_no_character_is_an_error_at_its_place(tmp_path, bare_remote, escape, error):
    repo = manifest_project(tmp_path, str(bare_remote), ESCAPE_MANIFEST.format(escape))
    for command in ("validate", "push"):
        result = puppemon(command, cwd=repo, check=False)
        assert (result.returncode, result.stdout, result.stderr) == (1, "", f"Error: {error}\n"), command
    assert git("--git-dir", str(bare_remote), "for-each-ref") == ""


def test_a_manifest_over_1_mib_is_refused_before_it_is_read(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), GOOD)
    (repo / "puppemon.yaml").write_bytes(BIG)
    for command in ("validate", "push"):
        result = puppemon(command, cwd=repo, check=False)
        assert (result.returncode, result.stderr) == (1, f"Error: {BIG_ERROR}\n"), command
    assert git("--git-dir", str(bare_remote), "for-each-ref") == ""
    (repo / "puppemon.yaml").write_bytes(GOOD.encode() + b"# " + b"x" * (MAX_BYTES - len(GOOD) - 3) + b"\n")
    assert (repo / "puppemon.yaml").stat().st_size == MAX_BYTES
    assert puppemon("validate", cwd=repo).stdout.startswith("puppemon.yaml is valid: 1 flow\n")
