"""What a deploy runs is what `git checkout` of that flows commit writes on the server: line endings,
working-tree encodings, ident, filter drivers (git-lfs), or a refusal that names what is missing."""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path


from tests.conftest import git, make_repo, puppemon, unavailable
from tests.daemon_helpers import deploy_records, manifest_project, remote_records, run_daemon_once

RUN_IT = """\
version: 1
flows:
  show:
    command: ["sh", "-c", "sha256sum data.bin || true; od -c crlf.txt | head -2"]
    run_on_deploy: true
"""


def listing(root: Path) -> dict[str, tuple]:
    """Every entry below `root` but `.git`: (kind, executable, bytes or link target)."""
    found = {}
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        for name in [*dirs, *files]:
            path = Path(directory, name)
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[rel] = ("link", False, os.readlink(path))
            elif path.is_dir():
                found[rel] = ("dir", False, None)
            else:
                found[rel] = ("file", bool(path.stat().st_mode & stat.S_IXUSR), path.read_bytes())
    return found


def oracle(bare: Path, dest: Path) -> dict[str, tuple]:
    """`git checkout` of the remote's flows tip, on this machine."""
    git("clone", "--quiet", "--branch", "flows", str(bare), str(dest))
    return listing(dest)


def deployed(state: Path, bare: Path) -> Path:
    sha = git("--git-dir", str(bare), "rev-parse", "flows").strip()
    return state / "deploys" / sha


def test_checkout_conversions_equal_git_checkout(tmp_path, bare_remote):
    files = {
        ".gitattributes": ("crlf.txt eol=crlf\n*.utf16 text working-tree-encoding=UTF-16LE eol=lf\n"
                           "version.c ident\nauto.txt text=auto eol=crlf\n"),
        "crlf.txt": "one\r\ntwo\r\n",
        "auto.txt": "auto\nline endings\n",
        "version.c": "/* $Id$ */\nint main(void) { return 0; }\n",
        "plain.txt": "unchanged\n",
        "sub/dir/deep.txt": "deep\n",
    }
    repo = manifest_project(tmp_path, str(bare_remote), RUN_IT, files)
    (repo / "greeting.utf16").write_bytes("grüße\n".encode("utf-16-le"))
    (repo / "run.sh").write_text("#!/bin/sh\necho run\n")
    (repo / "run.sh").chmod(0o755)
    os.symlink("plain.txt", repo / "link")
    sub_src = make_repo(tmp_path / "subsrc", {"s.txt": "sub\n"})
    git("-c", "protocol.file.allow=always", "submodule", "add", "--quiet", str(sub_src), "vendor/sub", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "--quiet", "-m", "attributes", cwd=repo)
    puppemon("push", cwd=repo)
    # the flows branch holds git's normalised blobs: LF, UTF-8, a collapsed $Id$
    assert git("--git-dir", str(bare_remote), "show", "flows:crlf.txt") == "one\ntwo\n"
    state = tmp_path / "state"
    result = run_daemon_once(str(bare_remote), state)
    assert result.returncode == 0, result.stderr
    expected = oracle(bare_remote, tmp_path / "oracle")
    got = listing(deployed(state, bare_remote))
    assert got == expected
    assert got["crlf.txt"][2] == b"one\r\ntwo\r\n"
    assert got["greeting.utf16"][2] == "grüße\n".encode("utf-16-le")
    blob = git("--git-dir", str(bare_remote), "rev-parse", "flows:version.c").strip()
    assert got["version.c"][2].startswith(f"/* $Id: {blob} $ */".encode())
    (record,) = remote_records(bare_remote)
    log = git("--git-dir", str(bare_remote), "show",
              f"runs:runs/show/{record['id'][:4]}/{record['id'][4:6]}/{record['id'][6:8]}/{record['id']}/log.txt")
    assert "\\r  \\n" in log   # the run itself read CRLF


def pointer(data: bytes) -> str:
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\n"
            f"size {len(data)}\n")


def test_a_deploy_needing_a_filter_the_server_lacks_is_refused(tmp_path, bare_remote):
    """LFS pointers pushed by a machine with git-lfs, to a server without it: refused, never run on pointers."""
    files = {".gitattributes": "*.bin filter=lfs diff=lfs merge=lfs -text\n",
             "data.bin": pointer(b"\0" * 1000), "model/weights.bin": pointer(b"\1" * 10)}
    repo = manifest_project(tmp_path, str(bare_remote), RUN_IT, files)  # committed as they are: no filter here
    puppemon("push", cwd=repo)
    sha = git("--git-dir", str(bare_remote), "rev-parse", "flows").strip()
    state = tmp_path / "state"
    result = run_daemon_once(str(bare_remote), state)
    error = ("2 files need the git filter driver 'lfs', which this server does not have (data.bin, "
             "model/weights.bin); install git-lfs on this server and run `git lfs install`")
    (refusal,) = deploy_records(bare_remote)
    assert (refusal["status"], refusal["flows_commit"], refusal["error"]) == ("refused", sha, error)
    assert f"deploy {sha[:7]} refused: {error}" in result.stderr
    assert remote_records(bare_remote) == []                     # nothing ran on pointer files
    assert not (state / "deploys" / sha).exists()


def test_git_lfs_files_round_trip_through_a_bare_remote(tmp_path, bare_remote):
    if shutil.which("git-lfs") is None:
        unavailable("git-lfs is not installed (`apt install git-lfs`)")
    git("lfs", "install", "--skip-repo")                       # filter.lfs.* in this (test) HOME's config
    data = os.urandom(4096)
    repo = manifest_project(tmp_path, str(bare_remote), RUN_IT, {})
    git("lfs", "install", "--local", cwd=repo)                  # its pre-push hook uploads the objects
    git("lfs", "track", "*.bin", cwd=repo)
    (repo / "data.bin").write_bytes(data)
    (repo / "crlf.txt").write_text("x\n")
    puppemon("push", cwd=repo)
    assert git("--git-dir", str(bare_remote), "show", "flows:data.bin") == pointer(data)
    assert list((bare_remote / "lfs" / "objects").rglob(hashlib.sha256(data).hexdigest()))
    state = tmp_path / "state"
    result = run_daemon_once(str(bare_remote), state)
    assert result.returncode == 0, result.stderr
    got = listing(deployed(state, bare_remote))
    assert got["data.bin"][2] == data
    assert got == oracle(bare_remote, tmp_path / "oracle")
    (record,) = remote_records(bare_remote)
    assert record["status"] == "succeeded"
    log = git("--git-dir", str(bare_remote), "show",
              f"runs:runs/show/{record['id'][:4]}/{record['id'][4:6]}/{record['id'][6:8]}/{record['id']}/log.txt")
    assert log.startswith(f"{hashlib.sha256(data).hexdigest()}  data.bin\n")
