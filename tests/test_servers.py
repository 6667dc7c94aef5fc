"""The test remotes themselves, proven with plain git: ssh and smart HTTP on 127.0.0.1."""
from __future__ import annotations

import base64
import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import git, make_repo


def commit(repo: Path, name: str, content: str | bytes) -> str:
    f = repo / name
    f.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        f.write_bytes(content)
    else:
        f.write_text(content)
    git("add", name, cwd=repo)
    git("commit", "--quiet", "-m", f"add {name}", cwd=repo)
    return git("rev-parse", "HEAD", cwd=repo).strip()


def git_fails(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60)
    assert proc.returncode != 0, f"git {' '.join(args)} unexpectedly succeeded: {proc.stdout}"
    return proc


def ref(bare: Path, name: str) -> str:
    return git("--git-dir", str(bare), "rev-parse", "--verify", "--quiet", name, check=False).strip()


def round_trip(tmp_path: Path, url: str, bare: Path, *, config: tuple[str, ...] = ()) -> None:
    """Push a commit to `url`, clone it back, push from the clone, fetch it into the first repo."""
    opts = [a for kv in config for a in ("-c", kv)]
    first = make_repo(tmp_path / "first", {"README": "hello\n"})
    git(*opts, "push", "--quiet", url, "main", cwd=first)
    assert ref(bare, "refs/heads/main") == git("rev-parse", "HEAD", cwd=first).strip()

    git(*opts, "clone", "--quiet", url, str(tmp_path / "second"))
    second = tmp_path / "second"
    assert (second / "README").read_text() == "hello\n"
    head = commit(second, "more.txt", "more\n")
    if config:  # the clone keeps no -c options; the remaining pushes set them again
        git(*opts, "push", "--quiet", "origin", "main", cwd=second)
    else:
        git("push", "--quiet", "origin", "main", cwd=second)

    git(*opts, "fetch", "--quiet", url, "main", cwd=first)
    assert git("rev-parse", "FETCH_HEAD", cwd=first).strip() == head
    assert ref(bare, "refs/heads/main") == head
    git("--git-dir", str(bare), "fsck", "--strict", "--no-progress")


# ----------------------------------------------------------------------------- ssh


def test_ssh_round_trip_with_git_ssh_command(ssh_remote, tmp_path):
    assert os.environ["GIT_SSH_COMMAND"] == ssh_remote.server.ssh_command
    assert ssh_remote.url.startswith(f"ssh://127.0.0.1:{ssh_remote.server.port}/")
    round_trip(tmp_path, ssh_remote.url, ssh_remote.bare)
    assert "Accepted publickey" in ssh_remote.server.log_text()


def test_ssh_round_trip_through_ssh_config_alias(ssh_alias_remote, tmp_path):
    assert not any(k.startswith("GIT_SSH") for k in os.environ)
    assert ssh_alias_remote.url == f"ssh://puppemon-test{ssh_alias_remote.bare.resolve()}"
    round_trip(tmp_path, ssh_alias_remote.url, ssh_alias_remote.bare)


def test_ssh_scp_style_alias_url(ssh_alias_remote, tmp_path):
    repo = make_repo(tmp_path / "repo", {"a": "a\n"})
    git("push", "--quiet", f"puppemon-test:{ssh_alias_remote.bare}", "main", cwd=repo)
    assert ref(ssh_alias_remote.bare, "main") == git("rev-parse", "HEAD", cwd=repo).strip()


def test_ssh_refuses_a_key_it_does_not_know(ssh_remote, tmp_path, monkeypatch):
    stranger = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    command = ssh_remote.server.ssh_command.replace(str(ssh_remote.server.client_key), str(stranger))
    monkeypatch.setenv("GIT_SSH_COMMAND", command)
    proc = git_fails("ls-remote", ssh_remote.url)
    assert "Permission denied (publickey)" in proc.stderr


def test_ssh_checks_the_host_key(ssh_remote, tmp_path, monkeypatch):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    command = ssh_remote.server.ssh_command.replace(str(ssh_remote.server.known_hosts), str(empty))
    monkeypatch.setenv("GIT_SSH_COMMAND", command)
    proc = git_fails("ls-remote", ssh_remote.url)
    assert "Host key verification failed" in proc.stderr


def test_ssh_new_bare_repos_share_the_server(ssh_remote, tmp_path):
    other = ssh_remote.new_bare("other.git")
    repo = make_repo(tmp_path / "repo", {"a": "a\n"})
    git("push", "--quiet", ssh_remote.url_for(other), "main", cwd=repo)
    assert ref(other, "main") and not ref(ssh_remote.bare, "main")


# ---------------------------------------------------------------------- smart HTTP


def test_http_round_trip_without_auth(http_remote, tmp_path):
    assert http_remote.url == f"http://127.0.0.1:{http_remote.server.port}/remote.git"
    round_trip(tmp_path, http_remote.url, http_remote.bare)
    methods = {(r.method, r.path.rsplit("/", 1)[-1]) for r in http_remote.server.requests}
    assert ("POST", "git-receive-pack") in methods and ("POST", "git-upload-pack") in methods
    assert all(r.status == 200 for r in http_remote.server.requests)
    assert http_remote.server.errors == []


def test_http_speaks_protocol_v2(http_remote, tmp_path):
    repo = make_repo(tmp_path / "repo", {"a": "a\n"})
    git("push", "--quiet", http_remote.url, "main", cwd=repo)
    git("-c", "protocol.version=2", "ls-remote", http_remote.url)
    assert any(r.git_protocol == "version=2" for r in http_remote.server.requests)


def test_http_basic_auth_through_a_credential_helper(http_server, tmp_path):
    server = http_server(auth=("basic", "alice", "s3cret"))
    bare = server.new_bare("remote.git")
    store = tmp_path / "credentials"
    store.write_text(f"http://alice:s3cret@127.0.0.1:{server.port}\n")
    git("config", "--global", "credential.helper", f"store --file={store}")

    round_trip(tmp_path, server.url_for(bare), bare)
    # git asked without credentials first, was told 401, then used the helper's.
    assert server.requests[0].status == 401 and not server.requests[0].authorized
    pushes = [r for r in server.requests if r.path.endswith("/git-receive-pack")]
    assert pushes and all(r.authorized for r in pushes)
    assert server.errors == []


def test_http_bearer_through_extraheader(http_server, tmp_path):
    server = http_server(auth=("bearer", "tok-123"))
    bare = server.new_bare("remote.git")
    round_trip(tmp_path, server.url_for(bare), bare, config=("http.extraHeader=Authorization: Bearer tok-123",))
    assert server.requests and all(r.authorized for r in server.requests)


def test_http_header_auth_like_actions_checkout(http_server, tmp_path):
    """actions/checkout stores `AUTHORIZATION: basic base64(x-access-token:TOKEN)` as a per-URL extraheader."""
    value = "basic " + base64.b64encode(b"x-access-token:ghs_abc").decode()
    server = http_server(auth=("header", "AUTHORIZATION", value))
    bare = server.new_bare("remote.git")
    repo = make_repo(tmp_path / "repo", {"a": "a\n"})
    git("config", "--local", f"http.http://127.0.0.1:{server.port}/.extraheader", f"AUTHORIZATION: {value}",
        cwd=repo)
    git("remote", "add", "origin", server.url_for(bare), cwd=repo)
    git("push", "--quiet", "origin", "main", cwd=repo)
    assert ref(bare, "main") == git("rev-parse", "HEAD", cwd=repo).strip()
    assert server.requests and all(r.authorized for r in server.requests)


@pytest.mark.parametrize("auth", [("basic", "alice", "s3cret"), ("bearer", "tok-123"),
                                  ("header", "X-Token", "abc")], ids=lambda a: a[0])
def test_http_refuses_requests_without_credentials(http_server, tmp_path, auth):
    server = http_server(auth=auth)
    bare = server.new_bare("remote.git")
    repo = make_repo(tmp_path / "repo", {"a": "a\n"})
    proc = git_fails("push", server.url_for(bare), "main", cwd=repo, env={"GIT_TERMINAL_PROMPT": "0"})
    assert "could not read Username" in proc.stderr or "Authentication failed" in proc.stderr, proc.stderr
    assert server.requests and all(r.status == 401 and not r.authorized for r in server.requests)
    assert ref(bare, "main") == ""


def test_http_refuses_wrong_credentials(http_server, tmp_path):
    server = http_server(auth=("basic", "alice", "s3cret"))
    bare = server.new_bare("remote.git")
    url = server.url_for(bare).replace("http://", "http://alice:wrong@")
    proc = git_fails("ls-remote", url)
    assert "Authentication failed" in proc.stderr
    assert not server.authorized_requests()


def test_http_chunked_push_of_several_megabytes(http_remote, tmp_path):
    blob = os.urandom(4 * 1024 * 1024)  # incompressible, so the pack is bigger than http.postBuffer
    repo = make_repo(tmp_path / "repo", {"a": "a\n"})
    commit(repo, "big.bin", blob)
    git("push", "--quiet", http_remote.url, "main", cwd=repo)

    chunked = [r for r in http_remote.server.requests if r.chunked]
    assert chunked and chunked[-1].path.endswith("/git-receive-pack")
    assert chunked[-1].body_bytes > 4 * 1024 * 1024
    git("--git-dir", str(http_remote.bare), "fsck", "--strict", "--no-progress")
    git("clone", "--quiet", http_remote.url, str(tmp_path / "clone"))
    got = (tmp_path / "clone" / "big.bin").read_bytes()
    assert hashlib.sha256(got).digest() == hashlib.sha256(blob).digest()
    assert http_remote.server.errors == []


def test_http_servers_are_independent(http_server, tmp_path):
    one, two = http_server(), http_server(auth=("bearer", "t"))
    assert one.port != two.port and one.root != two.root
    bare = one.new_bare("x.git")
    assert git("ls-remote", one.url_for(bare)) == ""
