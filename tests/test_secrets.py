"""Secrets: the server's file, per-flow grants, delivery, redaction everywhere; variables."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from puppemon.errors import PuppemonError
from puppemon.secrets import Secret, SecretStore
from tests.conftest import git, make_repo, puppemon
from tests.test_trigger import records, run_once, setup_project

TOKEN = "tok-9f8e7d6c5b4a"
PASSWORD = "hunter2-db-pass"
HTTP_TOKEN = "http-token-3a2b1c"
GITHUB_SECRET = "gh-secret-4d5e6f"
VALUES = [TOKEN, PASSWORD, HTTP_TOKEN, GITHUB_SECRET]

SECRETS = f"""\
api-token:
  value: {TOKEN}
  flows: [uses, breaks, "refus*", granted-only]
db:
  value: {{host: db.internal, password: {PASSWORD}}}
  flows: ["*"]
"""

MANIFEST = """\
version: 1
variables:
  REGION: tw
flows:
  uses:
    entrypoint: job.py:main
    secrets: [api-token, db]
  breaks:
    entrypoint: job.py:breaks
    secrets: [api-token]
  granted-only:
    entrypoint: job.py:peek
  refused:
    command: echo should not run
    secrets: [api-token, db, missing]
"""

JOB = f"""\
import json, os
import puppemon

def main():
    token = puppemon.secret("api-token")
    db = puppemon.secret("db")
    print("token", token, "env", os.environ["API_TOKEN"])
    print("db", db["password"], json.loads(os.environ["DB"])["host"])
    print("region", puppemon.variable("REGION"), os.environ["REGION"])
    print("inherited", sorted(k for k in os.environ if k in ("PUPPEMON_HTTP_TOKEN", "PUPPEMON_GITHUB_SECRET")))
    return {{"token": token, "password": db["password"], "region": puppemon.variable("REGION")}}

def breaks():
    raise RuntimeError("bad token " + puppemon.secret("api-token"))

def peek():
    print("has token:", "API_TOKEN" in os.environ)
"""


def write_secrets(path: Path, text: str = SECRETS, mode: int = 0o600) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_daemon_refuses_a_secrets_file_others_can_read(tmp_path, mode):
    secrets = write_secrets(tmp_path / "secrets.yaml", mode=mode)
    proc = puppemon("daemon", "--remote", str(tmp_path / "none.git"), "--state", str(tmp_path / "state"),
                    "--once", "--secrets", str(secrets), check=False)
    assert proc.returncode == 1
    assert proc.stderr == (f"Error: secrets file {secrets} is readable by others (mode {mode:04o}); "
                           f"run chmod 600 {secrets}\n")


@pytest.mark.parametrize("text, message", [
    ("a:\n  value: x\n  flows: [f\n", "{f}:4:1: not valid YAML (expected ',' or ']', but got '<stream end>')"),
    ("a:\n  value: x\n", "{f}:2:3: a: flows is missing"),
    ("a:\n  value: x\n  flow: [f]\n", "{f}:3:3: a: unknown key 'flow' (allowed: env, flows, value)"),
    ("a:\n  flows: [f]\n", "{f}:2:3: a: give exactly one of value (the secret itself) or env (the daemon's "
                           "environment variable that holds it)"),
    ("a:\n  env: DISCORD\n  flows: [f]\n", "{f}:2:8: a.env: 'DISCORD' must be an environment variable named "
     "PUPPEMON_SECRET_* (runs never inherit those; any other name would reach every flow)"),
    ("a:\n  env: PUPPEMON_SECRET_UNSET\n  flows: [f]\n",
     "{f}:2:8: a.env: PUPPEMON_SECRET_UNSET is not set in the daemon's environment"),
    ("a:\n  value: ''\n  flows: [f]\n", "{f}:2:10: a.value: expected a non-empty string or mapping"),
    ("a:\n  value: x\n  flows: {f: 1}\n", "{f}:3:10: a.flows: expected a list of flow names or globs"),
    ("- a\n", "{f}:1:1: expected a mapping of secret names to {{value: ..., flows: [...]}}"),
    ("a b:\n  value: x\n  flows: [f]\n", "{f}:1:1: 'a b' is not a secret name (letters, digits, '.', '-', '_')"),
])
def test_malformed_secrets_file_is_refused_with_file_line_col(tmp_path, text, message):
    secrets = write_secrets(tmp_path / "secrets.yaml", text)
    proc = puppemon("secrets", "check", "--secrets", str(secrets), check=False)
    assert proc.returncode == 1
    assert proc.stderr == "Error: " + message.format(f=secrets) + "\n"


def test_a_secret_from_the_daemons_environment_reaches_only_its_flow(tmp_path, bare_remote, monkeypatch):
    manifest = """\
version: 1
flows:
  asks:
    command: ["sh", "-c", "echo got=$TOKEN; env | grep -c PUPPEMON_SECRET_ || true"]
    secrets: [token]
    run_on_deploy: true
  other:
    command: ["sh", "-c", "env | grep -c s3cr3t-from-env || true"]
    run_on_deploy: true
"""
    repo = make_repo(tmp_path / "p", {"puppemon.yaml": manifest})
    git("remote", "add", "origin", str(bare_remote), cwd=repo)
    puppemon("push", cwd=repo)
    secrets = write_secrets(tmp_path / "secrets.yaml", "token:\n  env: PUPPEMON_SECRET_TOKEN\n  flows: [asks]\n")
    proc = puppemon("daemon", "--remote", str(bare_remote), "--state", str(tmp_path / "state"), "--once",
                    "--secrets", str(secrets), env={"PUPPEMON_SECRET_TOKEN": "s3cr3t-from-env"}, check=False)
    assert proc.returncode == 0, proc.stderr
    logs = {p.split("/")[1]: git("--git-dir", str(bare_remote), "show", f"runs:{p}")
            for p in git("--git-dir", str(bare_remote), "ls-tree", "-r", "--name-only", "runs").split()
            if p.endswith("log.txt")}
    assert logs == {"asks": "got=***\n0\n", "other": "0\n"}


def test_grant_matrix():
    store = SecretStore({"tok": Secret("tok", "v1", ("a", "b-*")), "map": Secret("map", {"k": "v2"}, ("*",))},
                        "/etc/s.yaml")
    assert store.for_flow("a", ["tok", "map"]) == {"tok": "v1", "map": {"k": "v2"}}   # asked + granted
    assert store.for_flow("b-x", ["tok"]) == {"tok": "v1"}                          # granted by a glob
    assert store.for_flow("a", []) == {}                                            # granted, not asked
    with pytest.raises(PuppemonError) as refused:                                   # asked, not granted
        store.for_flow("c", ["map", "tok"])
    assert refused.value.message == ("flow 'c' asks for secret 'tok', which the secrets file /etc/s.yaml "
                                     "does not grant to it (add 'c' to the secret's flows)")
    with pytest.raises(PuppemonError) as missing:
        store.for_flow("a", ["nope"])
    assert missing.value.message == "flow 'a' asks for secret 'nope', which is not in the secrets file /etc/s.yaml"
    assert store.granted("a") == ["map", "tok"] and store.granted("c") == ["map"]


def test_secrets_check_shows_names_never_values(tmp_path):
    secrets = write_secrets(tmp_path / "secrets.yaml")
    manifest = tmp_path / "puppemon.yaml"
    manifest.write_text(MANIFEST)
    plain = puppemon("secrets", "check", "--secrets", str(secrets))
    assert plain.stdout == ("secret     granted to\n"
                            "api-token  uses, breaks, refus*, granted-only\n"
                            "db         *\n")
    proc = puppemon("secrets", "check", "--secrets", str(secrets), "--manifest", str(manifest), check=False)
    assert proc.returncode == 1
    assert proc.stdout == ("flow          granted        not granted\n"
                           "breaks        api-token      -\n"
                           "granted-only  -              -\n"
                           "refused       api-token, db  missing\n"
                           "uses          api-token, db  -\n"
                           "1 secret request not granted\n")
    for value in VALUES:
        assert value not in plain.stdout + proc.stdout


@pytest.mark.slow
def test_secrets_reach_only_granted_flows_and_never_leave_the_run(tmp_path, bare_remote):
    repo = setup_project(tmp_path, bare_remote, MANIFEST, {"job.py": JOB})
    secrets = write_secrets(tmp_path / "secrets.yaml")
    state = tmp_path / "state"
    for flow in ("uses", "breaks", "granted-only", "refused"):
        puppemon("trigger", flow, cwd=repo)
    env = {"PUPPEMON_HTTP_TOKEN": HTTP_TOKEN, "PUPPEMON_GITHUB_SECRET": GITHUB_SECRET}
    daemon = run_once(bare_remote, state, "--secrets", str(secrets), "--listen", "127.0.0.1:0", env=env)
    by_flow = {r["flow"]: r for r in records(bare_remote)}
    assert {f: r["status"] for f, r in by_flow.items()} == {
        "uses": "succeeded", "breaks": "failed", "granted-only": "succeeded", "refused": "failed"}
    show = lambda r, name: subprocess.run(  # noqa: E731
        ["git", "--git-dir", str(bare_remote), "show", f"runs:runs/{r['flow']}/{r['id'][:4]}/{r['id'][4:6]}/"
         f"{r['id'][6:8]}/{r['id']}/{name}"], capture_output=True, text=True, check=True).stdout
    assert show(by_flow["uses"], "log.txt") == ("token *** env ***\ndb *** ***\nregion tw tw\n"
                                                "inherited []\n")
    assert json.loads(show(by_flow["uses"], "result.json")) == {"token": "***", "password": "***",
                                                                "region": "tw"}
    assert "RuntimeError: bad token ***" in by_flow["breaks"]["error"]
    assert show(by_flow["granted-only"], "log.txt") == "has token: False\n"
    assert by_flow["refused"]["error"] == (
        f"flow 'refused' asks for secret 'missing', which is not in the secrets file {secrets}")
    assert show(by_flow["refused"], "log.txt") == f"puppemon: {by_flow['refused']['error']}\n"
    assert by_flow["refused"]["attempts"] == []

    # No secret value anywhere: every object of the remote, every file of the state
    # dir (but the secrets file), the daemon's own log.
    objects = subprocess.run(["git", "--git-dir", str(bare_remote), "cat-file", "--batch-all-objects",
                              "--batch"], capture_output=True, check=True).stdout
    assert objects.count(b"tree ") > 5
    haystacks = {"remote objects": objects, "daemon log": (daemon.stdout + daemon.stderr).encode()}
    for path in state.rglob("*"):
        if path.is_file() and not path.is_symlink():
            haystacks[str(path)] = path.read_bytes()
    assert len(haystacks) > 10
    for where, data in haystacks.items():
        for value in VALUES:
            assert value.encode() not in data, f"{value} found in {where}"
