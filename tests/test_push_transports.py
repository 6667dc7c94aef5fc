"""`puppemon push` over every transport a user has: path, file://, ssh and smart HTTP."""
from __future__ import annotations

import base64
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import git, puppemon
from tests.test_push import oracle_tree


def flows_log(bare: Path) -> list[str]:
    return git("--git-dir", str(bare), "log", "--format=%H %P", "flows").splitlines()


def assert_deployed(bare: Path, project: Path) -> None:
    assert git("--git-dir", str(bare), "rev-parse", "flows^{tree}").strip() == oracle_tree(project)
    git("--git-dir", str(bare), "fsck", "--strict", "--no-progress")


def one_error_line(result) -> str:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


@dataclass
class Target:
    url: str
    bare: Path
    server: object = None  # the SmartHTTPServer, for HTTP targets
    secret: str = ""       # must never show in puppemon's output


@pytest.fixture(params=["path", "file", "ssh-env", "ssh-config", "http", "http-basic-helper",
                        "http-bearer-extraheader"])
def target(request, tmp_path) -> Target:
    kind = request.param
    if kind in ("path", "file"):
        bare = request.getfixturevalue("bare_remote")
        return Target(str(bare) if kind == "path" else f"file://{bare}", bare)
    if kind == "ssh-env":
        remote = request.getfixturevalue("ssh_remote")
        return Target(remote.url, remote.bare)
    if kind == "ssh-config":
        remote = request.getfixturevalue("ssh_alias_remote")
        return Target(remote.url, remote.bare)
    http_server = request.getfixturevalue("http_server")
    if kind == "http":
        server = http_server()
    elif kind == "http-basic-helper":
        server = http_server(auth=("basic", "alice", "s3cret-pw"))
        store = tmp_path / "git-credentials"
        store.write_text(f"http://alice:s3cret-pw@127.0.0.1:{server.port}\n")
        git("config", "--global", "credential.helper", f"store --file={store}")
    else:
        server = http_server(auth=("bearer", "tok-4242"))
        git("config", "--global", f"http.http://127.0.0.1:{server.port}/.extraHeader",
            "Authorization: Bearer tok-4242")
    bare = server.new_bare("remote.git")
    secret = {"http-basic-helper": "s3cret-pw", "http-bearer-extraheader": "tok-4242"}.get(kind, "")
    return Target(server.url_for(bare), bare, server, secret)


def test_push_edit_push_again_and_unchanged(target, project):
    (project / "job.sh").write_text("echo dirty edit\n")
    (project / "new file.txt").write_text("untracked, not ignored\n")

    first = puppemon("push", "--remote", target.url, "-C", str(project))
    assert first.stdout.startswith("pushed flows ") and f" to {target.url} (1 flow; " in first.stdout
    [tip] = flows_log(target.bare)
    assert first.stdout.split()[2] == tip.split()[0][:7]
    assert_deployed(target.bare, project)

    # The second push fetches the first over the same transport and builds on it.
    (project / "job.sh").write_text("echo second edit\n")
    puppemon("push", "--remote", target.url, "-C", str(project))
    log = flows_log(target.bare)
    assert len(log) == 2 and log[0].split()[1] == log[1].split()[0]
    assert_deployed(target.bare, project)

    again = puppemon("push", "--remote", target.url, "-C", str(project))
    assert again.stdout.startswith("flows already up to date")
    assert len(flows_log(target.bare)) == 2

    # The user's repository did not learn anything from the remote.
    assert git("for-each-ref", cwd=project).count("\n") == 1  # refs/heads/main only
    if target.secret:
        for output in (first, again):
            assert target.secret not in output.stdout + output.stderr
    if target.server is not None:
        pushes = [r for r in target.server.requests if r.path.endswith("/git-receive-pack")]
        assert pushes and all(r.authorized and r.status == 200 for r in pushes)
        assert target.server.errors == []


def test_http_basic_auth_really_asked_the_credential_helper(http_server, project, tmp_path):
    server = http_server(auth=("basic", "alice", "pw"))
    bare = server.new_bare("remote.git")
    store = tmp_path / "git-credentials"
    store.write_text(f"http://alice:pw@127.0.0.1:{server.port}\n")
    git("config", "--global", "credential.helper", f"store --file={store}")
    puppemon("push", "--remote", server.url_for(bare), "-C", str(project))
    # An anonymous try, the server's 401, then the helper's credentials.
    assert [server.requests[0].status, server.requests[0].authorized] == [401, False]
    assert any(r.authorized and r.path.endswith("/git-receive-pack") for r in server.requests)
    assert_deployed(bare, project)


def test_push_to_named_remote_over_ssh_config_alias(ssh_alias_remote, project):
    git("remote", "add", "deploy", ssh_alias_remote.url, cwd=project)
    result = puppemon("push", "--remote", "deploy", cwd=project)
    assert " to deploy (" in result.stdout
    assert_deployed(ssh_alias_remote.bare, project)
    # Transport by URL: no remote-tracking ref appears in the user's repository.
    assert "refs/remotes/" not in git("for-each-ref", cwd=project)


def test_push_from_a_ci_checkout_with_its_extraheader(http_server, project):
    """What actions/checkout leaves behind: origin over HTTP, a per-URL AUTHORIZATION extraheader."""
    value = "basic " + base64.b64encode(b"x-access-token:ghs_0123456789").decode()
    server = http_server(auth=("header", "AUTHORIZATION", value))
    bare = server.new_bare("owner/repo.git")
    git("remote", "set-url", "origin", server.url_for(bare), cwd=project)
    git("config", "--local", f"http.http://127.0.0.1:{server.port}/.extraheader", f"AUTHORIZATION: {value}",
        cwd=project)
    git("checkout", "--quiet", "--detach", cwd=project)

    result = puppemon("push", cwd=project)
    assert " to origin (" in result.stdout
    assert_deployed(bare, project)
    assert server.requests and all(r.authorized for r in server.requests)
    assert "ghs_0123456789" not in result.stdout + result.stderr


def test_wrong_http_password_is_one_clear_line(http_server, project, tmp_path):
    server = http_server(auth=("basic", "alice", "right"))
    bare = server.new_bare("remote.git")
    store = tmp_path / "git-credentials"
    store.write_text(f"http://alice:wrong@127.0.0.1:{server.port}\n")
    git("config", "--global", "credential.helper", f"store --file={store}")

    result = puppemon("push", "--remote", server.url_for(bare), "-C", str(project), check=False)
    line = one_error_line(result)
    assert "Authentication failed" in line and server.url_for(bare) in line
    assert "wrong" not in line
    assert git("--git-dir", str(bare), "for-each-ref") == ""
    assert not server.authorized_requests()


def test_missing_http_credentials_is_one_clear_line(http_server, project):
    server = http_server(auth=("bearer", "tok"))
    bare = server.new_bare("remote.git")
    result = puppemon("push", "--remote", server.url_for(bare), "-C", str(project), check=False)
    line = one_error_line(result)
    assert "could not read Username" in line or "Authentication failed" in line
    assert git("--git-dir", str(bare), "for-each-ref") == ""


def _break_ssh(ssh_remote, tmp_path, monkeypatch, what: str) -> None:
    """Point GIT_SSH_COMMAND at a key the server does not know, or at an empty known_hosts."""
    server = ssh_remote.server
    if what == "key":
        stranger = tmp_path / "stranger_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
        command = server.ssh_command.replace(str(server.client_key), str(stranger))
    else:
        empty = tmp_path / "empty_known_hosts"
        empty.write_text("")
        command = server.ssh_command.replace(str(server.known_hosts), str(empty))
    monkeypatch.setenv("GIT_SSH_COMMAND", command)


@pytest.mark.parametrize("what", ["key", "host-key"])
def test_ssh_failure_is_one_clear_line(ssh_remote, project, tmp_path, monkeypatch, what):
    _break_ssh(ssh_remote, tmp_path, monkeypatch, what)
    result = puppemon("push", "--remote", ssh_remote.url, "-C", str(project), check=False)
    line = one_error_line(result)
    assert line.startswith(f"Error: could not fetch from {ssh_remote.url}: ")
    assert git("--git-dir", str(ssh_remote.bare), "for-each-ref") == ""


@pytest.mark.parametrize("what, cause", [("key", "Permission denied (publickey)"),
                                         ("host-key", "Host key verification failed")])
def test_ssh_failure_names_the_cause(ssh_remote, project, tmp_path, monkeypatch, what, cause):
    _break_ssh(ssh_remote, tmp_path, monkeypatch, what)
    result = puppemon("push", "--remote", ssh_remote.url, "-C", str(project), check=False)
    assert cause in one_error_line(result)


def test_unknown_http_repository_is_one_clear_line(http_remote, project):
    url = http_remote.url_for(http_remote.bare).replace("remote.git", "nope.git")
    result = puppemon("push", "--remote", url, "-C", str(project), check=False)
    line = one_error_line(result)
    assert url in line
