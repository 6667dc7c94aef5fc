"""Safe deploys: `push --dry-run` lists what would change; push warns about what is probably a mistake
and refuses what looks like secrets, writing nothing, unless --allow names the file."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import MINIMAL_MANIFEST, git, puppemon

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH PRIVATE KEY-----\n"
SECRETS_WITH_VALUES = "discord:\n  value: https://discord.com/api/webhooks/1/x\n  flows: [report]\n"
SECRETS_FROM_ENV = "discord:\n  env: PUPPEMON_SECRET_DISCORD\n  flows: [report]\n"


def flows_branch(bare) -> str:
    return git("--git-dir", str(bare), "branch", "--list", "flows")


def test_dry_run_lists_every_path_with_its_size_and_writes_nothing(project, bare_remote):
    puppemon("push", cwd=project)
    before = git("--git-dir", str(bare_remote), "rev-parse", "flows")
    (project / "flows").mkdir()
    (project / "flows" / "new.py").write_text("x" * 2000)
    (project / "puppemon.yaml").write_text(MINIMAL_MANIFEST + "# edited\n")
    (project / "job.sh").unlink()
    (project / "other.sh").write_text("echo other\n")
    result = puppemon("push", "--dry-run", cwd=project)
    assert result.stdout.splitlines() == [
        "added       2 KiB  flows/new.py",
        "removed   8 bytes  job.sh",
        "added    11 bytes  other.sh",
        "changed  74 bytes  puppemon.yaml",
        "total: 3 files, 2 KiB in the snapshot",
        "dry run: would push flows to origin (1 flow; 1 file changed, 2 added, 1 removed)",
    ]
    assert git("--git-dir", str(bare_remote), "rev-parse", "flows") == before


def test_warnings_name_the_gitignore_line_and_the_push_goes_on(project, bare_remote):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(project / ".venv")], check=True)
    (project / "data").mkdir()
    with open(project / "data" / "big.bin", "wb") as fh:
        fh.truncate(11 * 1024**2)
    result = puppemon("push", cwd=project)
    venv_files = [os.path.join(d, n) for d, dirs, files in os.walk(project / ".venv") for n in files + dirs
                  if not os.path.isdir(os.path.join(d, n)) or os.path.islink(os.path.join(d, n))]
    venv_size = sum(os.lstat(p).st_size for p in venv_files)   # a symlink's blob is its target
    from puppemon.formats import format_size

    assert result.stderr == (
        f"warning: .venv/ is a Python virtual environment ({len(venv_files)} files, {format_size(venv_size)}); "
        "to leave it out, add `/.venv/` to .gitignore\n"
        "warning: data/big.bin is 11 MiB (over 10 MiB); to leave it out, add `/data/big.bin` to .gitignore\n")
    assert result.stdout.startswith("pushed flows ")
    assert flows_branch(bare_remote)


def test_a_snapshot_over_50_mib_is_warned_about(project, bare_remote):
    (project / "assets").mkdir()
    for n in range(6):                       # each under the per-file limit, 54 MiB together
        with open(project / "assets" / f"part{n}.bin", "wb") as fh:
            fh.truncate(9 * 1024**2)
    result = puppemon("push", cwd=project)
    assert result.stderr == ("warning: the snapshot is 54 MiB in 8 files (over 50 MiB); list it with "
                             "`puppemon push --dry-run`; the biggest part is assets/: add `/assets/` to "
                             ".gitignore to leave it out\n")
    assert result.stdout.startswith("pushed flows ")


@pytest.mark.parametrize("name, content, why", [
    ("secrets.yaml", SECRETS_WITH_VALUES, "looks like a puppemon secrets file holding values"),
    ("deploy/id_ed25519", KEY, "holds a private key"),
    (".env", "# local settings\nAPI_KEY=sk-123\nDEBUG=\nexport TOKEN='abc'\nEMPTY=\"\"\n", "sets values (API_KEY, TOKEN)"),
    ("config/.env.production", "DB_URL=postgres://u:p@db/x # the real one\n", "sets values (DB_URL)"),
])
def test_what_looks_like_secrets_is_refused_and_nothing_written(project, bare_remote, name, content, why):
    path = project / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    result = puppemon("push", cwd=project, check=False)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (f"Error: refusing to push: {name} {why}. Secret values belong on the server "
                             f"(puppemon daemon --secrets). Leave it out with the .gitignore line `/{name}`, "
                             f"or pass --allow PATH to deploy a file knowingly\n")
    assert flows_branch(bare_remote) == ""
    dry = puppemon("push", "--dry-run", cwd=project, check=False)
    assert (dry.returncode, dry.stderr) == (1, result.stderr)


@pytest.mark.parametrize("name, content", [
    ("secrets.yaml", SECRETS_FROM_ENV),                    # grants naming env variables hold no values
    ("config.yaml", "server:\n  value: 3\n"),               # no flows: not a secrets file
    (".env", "API_KEY=\n# TOKEN=abc\nDEBUG=''\n"),           # names without values
    (".env.example", "API_KEY=put-yours-here\n"),           # an example is meant to be shared
    ("docs/keys.md", "Keys start with -----BEGIN PUBLIC KEY-----\n"),
])
def test_lookalikes_without_values_are_deployed(project, bare_remote, name, content):
    path = project / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    result = puppemon("push", cwd=project)
    assert result.stderr == ""
    assert git("--git-dir", str(bare_remote), "show", f"flows:{name}") == content


def test_allow_deploys_one_file_knowingly_and_it_is_not_asked_about_again(project, bare_remote):
    (project / "deploy").mkdir()
    (project / "deploy" / "id_ed25519").write_text(KEY)
    (project / ".env").write_text("API_KEY=x\n")
    refused = puppemon("push", "--allow", "deploy/id_ed25519", cwd=project, check=False)
    assert refused.returncode == 1 and ".env sets values (API_KEY)" in refused.stderr
    assert "id_ed25519" not in refused.stderr
    puppemon("push", "--allow", "deploy/id_ed25519", "--allow", ".env", cwd=project)
    assert git("--git-dir", str(bare_remote), "show", "flows:deploy/id_ed25519") == KEY
    # only what a push adds or changes is read: the deployed files are not refused again
    (project / "job.sh").write_text("echo changed\n")
    assert puppemon("push", cwd=project).stderr == ""


def test_allow_of_a_path_not_in_the_snapshot_is_an_error(project, bare_remote):
    result = puppemon("push", "--allow", "nope/.env", cwd=project, check=False)
    assert (result.returncode, result.stderr) == (
        1, "Error: --allow nope/.env: no such file in the snapshot (give its path from the project directory, "
           "as `puppemon push --dry-run` lists it)\n")
    assert flows_branch(bare_remote) == ""


def test_files_over_1_mib_are_not_read(project, bare_remote):
    """The documented limit: a big file is not scanned for keys (keys and .env files are small)."""
    (project / "dump.txt").write_text("x" * (1024**2) + "\n" + KEY)
    result = puppemon("push", cwd=project)
    assert result.stderr == "" and result.stdout.startswith("pushed flows ")
