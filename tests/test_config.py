"""The daemon's config file: found at --config, else in the user's config directory, else /etc/puppemon;
paths in it are relative to the file, so the daemon means the same from any working directory."""
from __future__ import annotations

import os
from pathlib import Path

from puppemon.daemon.settings import build_settings, find_config
from tests.conftest import git, puppemon
from tests.daemon_helpers import manifest_project, remote_records

MANIFEST = """\
version: 1
flows:
  hello:
    command: ["sh", "-c", "echo token=$TOKEN"]
    secrets: [token]
    run_on_deploy: true
"""


def write_config(directory: Path, remote: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "daemon.yaml").write_text(f"remote: {remote}\nstate: state\nname: configured\nsecrets: secrets.yaml\n")
    (directory / "secrets.yaml").write_text("token:\n  value: s3cret-value\n  flows: [hello]\n")
    os.chmod(directory / "secrets.yaml", 0o600)
    return directory / "daemon.yaml"


def test_the_user_config_is_found_and_its_paths_are_relative_to_it(tmp_path, bare_remote, scrubbed_env):
    repo = manifest_project(tmp_path, str(bare_remote), MANIFEST)
    puppemon("push", cwd=repo)
    config_dir = scrubbed_env / ".config" / "puppemon"
    # a remote on this machine, written relative to the config file's directory
    config = write_config(config_dir, os.path.relpath(bare_remote, config_dir))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = puppemon("daemon", "--once", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    (record,) = remote_records(bare_remote)
    assert (record["status"], record["daemon"]) == ("succeeded", "configured")
    assert (config_dir / "state" / "mirror.git").is_dir() and not (elsewhere / "state").exists()
    log = git("--git-dir", str(bare_remote), "show", f"runs:runs/hello/{record['id'][:4]}/{record['id'][4:6]}/"
              f"{record['id'][6:8]}/{record['id']}/log.txt")
    assert log == "token=***\n"
    assert build_settings({}).config_file == str(config)


def test_config_given_from_another_directory_reads_its_own_secrets(tmp_path, bare_remote):
    """`--config hello/daemon.yaml` run from the parent directory: secrets.yaml is the one next to it."""
    repo = manifest_project(tmp_path, str(bare_remote), MANIFEST)
    puppemon("push", cwd=repo)
    write_config(tmp_path / "hello", str(bare_remote))
    result = puppemon("daemon", "--config", "hello/daemon.yaml", "--once", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [r["status"] for r in remote_records(bare_remote)] == ["succeeded"]
    assert (tmp_path / "hello" / "state").is_dir()


def test_lookup_order_and_what_stays_as_written(tmp_path):
    user, system = tmp_path / "user", tmp_path / "etc"
    for directory in (user, system):
        directory.mkdir()
        (directory / "daemon.yaml").write_text("remote: git@example.com:me/auto.git\nstate: /var/lib/p\n")
    assert find_config("given.yaml", [user, system]) == "given.yaml"
    assert find_config(None, [user, system]) == str(user / "daemon.yaml")
    (user / "daemon.yaml").unlink()
    assert find_config(None, [user, system]) == str(system / "daemon.yaml")
    (system / "daemon.yaml").unlink()
    assert find_config(None, [user, system]) is None
    (user / "daemon.yaml").write_text("remote: ssh://h/x.git\nstate: ~/state\ntoken_file: tok\nlisten: 127.0.0.1:1\n")
    settings = build_settings({"config": str(user / "daemon.yaml")})
    assert settings.remote == "ssh://h/x.git"                          # URLs and scp-like remotes stay
    assert settings.state == Path(os.path.expanduser("~/state"))
    assert settings.token_file == str(user / "tok")


def test_no_remote_anywhere_says_where_it_looked(tmp_path, scrubbed_env):
    proc = puppemon("daemon", "--once", cwd=tmp_path, check=False)
    assert (proc.returncode, proc.stderr) == (
        1, f"Error: no remote: pass --remote URL, or set `remote:` in "
           f"{scrubbed_env / '.config' / 'puppemon' / 'daemon.yaml'}, or a --config file\n")
