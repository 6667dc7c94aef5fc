"""What the daemon keeps from its runs and from other users: its own environment and memory, its
state directory, its secrets file."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path


from tests.conftest import git, puppemon, unavailable
from tests.daemon_helpers import (DaemonProcess, deploy, fsck, manifest_project, of_flow, remote_records,
                                  run_daemon_once, wait_until)

SECRET = "s3cret-in-the-daemons-environment"
CAP_SYS_PTRACE = 19

# Run by the daemon as the same OS user: try what a hostile flow would.
PROBE = f"""\
import os

def status(pid, key):
    with open(f"/proc/{{pid}}/status") as fh:
        return next(line for line in fh if line.startswith(key + ":")).split()[1]


daemon = os.getppid()
print(f"parent {{daemon}}, the same user: {{status(daemon, 'Uid') == str(os.getuid())}}")
print("ptrace capability:", bool(int(status("self", "CapEff"), 16) >> {CAP_SYS_PTRACE} & 1))
for name in ("environ", "mem"):
    try:
        with open(f"/proc/{{daemon}}/{{name}}", "rb") as fh:
            data = fh.read(1 << 20) if name == "environ" else b""
    except OSError as exc:
        print(name, "refused:", exc.strerror)
    else:
        print(name, "opened", "(the secret is in it)" if {SECRET!r}.encode() in data else "")
"""

MANIFEST = f"""\
version: 1
flows:
  probe:
    command: ["{sys.executable}", "probe.py"]
    run_on_deploy: true
"""


# What the daemon does as nobody: import itself, and start a run of this interpreter (some kernels let
# setpriv exec a path under a directory nobody may not enter, but not nobody's own child).
STARTS_AS_NOBODY = ("import subprocess, sys, pygit2, puppemon.daemon.loop;"
                    " subprocess.run([sys.executable, '-c', ''], check=True)")


def as_unprivileged_user() -> list[str]:
    """How to start a daemon as an unprivileged user: as root (whose CAP_SYS_PTRACE reads any process,
    and whose runs are root too), through setpriv as nobody; as anyone else, as it is. Where this
    interpreter lives under a directory nobody may not enter (/root is 0700), nobody keeps
    CAP_DAC_OVERRIDE to reach it: file permissions only, never ptrace."""
    if os.geteuid() != 0:
        return []
    base = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    for caps in ([], ["--inh-caps=-all,+dac_override", "--ambient-caps=+dac_override"]):
        probe = subprocess.run([*base, *caps, sys.executable, "-c", STARTS_AS_NOBODY], capture_output=True, text=True)
        if probe.returncode == 0:
            return [*base, *caps]
    unavailable(f"cannot start this interpreter as nobody (uid 65534): {probe.stderr.strip()[-200:]}")


class PrefixedDaemon(DaemonProcess):
    """A daemon started through `prefix` (setpriv), which execs it: its pid stays the daemon's."""

    def __init__(self, prefix: list[str], *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.prefix = prefix

    def start(self) -> PrefixedDaemon:
        self.log_fh = open(self.log_path, "wb")
        self.proc = subprocess.Popen([*self.prefix, sys.executable, "-m", "puppemon", "daemon", *self.args],
                                     stdout=self.log_fh, stderr=subprocess.STDOUT, env=self.env)
        return self


def test_a_run_cannot_read_the_daemons_environment_or_memory(tmp_path, scrubbed_env):
    prefix = as_unprivileged_user()
    # Everything the daemon uses lives where nobody may go (not under pytest's 0700 tmp of root's).
    base = Path(tempfile.mkdtemp(prefix="puppemon-nobody-")) if prefix else tmp_path
    try:
        remote, home = base / "remote.git", base / "home"
        git("init", "--bare", "--quiet", str(remote))
        repo = manifest_project(tmp_path, str(remote), MANIFEST, {"probe.py": PROBE})
        deploy(repo)
        secrets = base / "secrets.yaml"
        secrets.write_text("tok:\n  env: PUPPEMON_SECRET_TOK\n  flows: [other]\n")
        secrets.chmod(0o600)
        env = {"PUPPEMON_SECRET_TOK": SECRET}
        if prefix:  # the daemon runs as nobody: all it uses is nobody's
            with open(scrubbed_env / ".gitconfig", "a") as fh:
                fh.write("[safe]\n\tdirectory = *\n")  # so that this test (root) reads nobody's remote
            shutil.copytree(scrubbed_env, home)
            env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"),
                       XDG_DATA_HOME=str(home / ".local" / "share"))
            for path in (base, *base.rglob("*")):
                os.lchown(path, 65534, 65534)
        with PrefixedDaemon(prefix, str(remote), base / "state", "--secrets", str(secrets), env=env) as daemon:
            record = wait_until(lambda: of_flow(remote_records(remote), "probe"), timeout=30,
                                what="the probe's record", on_fail=lambda: daemon.log)[0]
            assert daemon.stop() == 0
        run = record["id"]
        log = git("--git-dir", str(remote), "show", f"runs:runs/probe/{run[:4]}/{run[4:6]}/{run[6:8]}/{run}/log.txt")
        assert log == (f"parent {daemon.proc.pid}, the same user: True\n"
                       "ptrace capability: False\n"
                       "environ refused: Permission denied\n"
                       "mem refused: Permission denied\n")
        fsck(remote)
    finally:
        if prefix:
            shutil.rmtree(base, ignore_errors=True)


def test_the_state_directory_is_the_daemons_alone_and_an_older_one_is_tightened(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), MANIFEST.replace('"probe.py"', '"-c", "pass"'))
    deploy(repo)
    state = tmp_path / "state"
    for older in (state, state / "journal", state / "deploys", state / "mirror.git"):  # as the umask made them
        older.mkdir(mode=0o755)
        older.chmod(0o755)
    (state / "fires.json").write_text("{}")
    (state / "fires.json").chmod(0o644)
    result = run_daemon_once(str(bare_remote), state)
    assert result.returncode == 0, result.stderr
    assert of_flow(remote_records(bare_remote), "probe", status="succeeded")
    modes = {str(path.relative_to(state)): stat.S_IMODE(path.lstat().st_mode)
             for path in state.iterdir() if not path.name.startswith(".")}
    assert modes == {"journal": 0o700, "deploys": 0o700, "mirror.git": 0o700,
                     "daemon.lock": 0o600, "fires.json": 0o600, "deployed": 0o600, "control.json": 0o600}
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    fresh = tmp_path / "fresh"
    assert run_daemon_once(str(bare_remote), fresh).returncode == 0
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in fresh.iterdir() if p.is_dir()} == {
        "journal": 0o700, "deploys": 0o700, "mirror.git": 0o700}


def test_a_secrets_file_owned_by_another_user_is_refused(tmp_path):
    if os.geteuid() != 0:
        unavailable("giving a file to another user needs root")
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text("tok:\n  value: abc\n  flows: ['*']\n")
    secrets.chmod(0o600)
    os.chown(secrets, 65534, 65534)
    import pwd

    other = pwd.getpwuid(65534).pw_name
    for args in (("daemon", "--remote", str(tmp_path / "none.git"), "--state", str(tmp_path / "state"), "--once",
                  "--secrets", str(secrets)), ("secrets", "check", "--secrets", str(secrets))):
        proc = puppemon(*args, check=False)
        assert (proc.returncode, proc.stderr) == (1, (
            f"Error: secrets file {secrets} is owned by {other}, not by root (the user puppemon runs as); "
            f"run chown root {secrets}\n"))
    os.chown(secrets, 0, 0)
    assert "tok" in puppemon("secrets", "check", "--secrets", str(secrets)).stdout
