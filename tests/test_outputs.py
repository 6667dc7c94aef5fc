"""A run's output files: redacted like the log, never followed through a symlink, capped file by file,
and only names git can record; end to end through a real daemon, its mirror and the remote."""
from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from puppemon.run.workspace import collect_outputs
from tests.conftest import git, make_repo, puppemon
from tests.daemon_helpers import fsck, remote_records
from tests.test_runner import make_flow, py, run, write_files

TOKEN = "tok-out-5e4d3c2b1a"
PASSWORD = "pw-out-9z8y7x6w"
DB = {"host": "db.internal", "password": PASSWORD}
SECRETS = {"tok": TOKEN, "db": DB}
VALUES = [TOKEN, PASSWORD, json.dumps(DB)]
MAX_DEPTH = 100   # directories below the output dir that are walked (the README's limit)

# What a flow granted `tok` and `db` leaves in its output dir, written from Python so the
# bytes are exact; run both by the runner (fast) and by a daemon (end to end).
WRITE_OUTPUTS = """\
import json, os
out = os.environ["PUPPEMON_OUTPUT_DIR"]
def write(name, data):
    os.makedirs(os.path.dirname(os.path.join(out, name)), exist_ok=True)
    with open(os.path.join(out, name), "wb") as fh:
        fh.write(data)
tok, db = TOKEN, DB
write("report.txt", f"token={tok}\\npassword={db['password']}\\ndb={json.dumps(db)}\\n".encode())
write("blob.bin", b"\\x00\\x01" + tok.encode() + b"\\xff")
write("plain.bin", b"\\x00\\xff no secret in here")
write(f"{tok}.txt", b"the name is the secret")
write(f"dir-{db['password']}/f.txt", b"in a directory named with a secret")
os.symlink(f"/nowhere/{tok}", os.path.join(out, "link"))
"""
PLAIN = b"\x00\xff no secret in here"
REPORT = b"token=***\npassword=***\ndb=***\n"
NOTE = ("skipped blob.bin (binary, with a secret value in it: only text files are redacted), "
        "dir-*** (a secret value in its name), link (symlink to /nowhere/***), ***.txt (a secret value in its name)")


@pytest.fixture
def code(tmp_path) -> Path:
    return write_files(tmp_path / "code", {"README": "code dir\n"})


def flow_script(tok: str, db: str) -> str:
    return WRITE_OUTPUTS.replace("tok, db = TOKEN, DB", f"tok, db = {tok}, {db}")


def test_text_outputs_are_redacted_and_binary_ones_with_a_secret_are_left_out(code):
    script = flow_script(repr(TOKEN), repr(DB))
    result = run(code, make_flow(command=py(script)), secrets=SECRETS)
    assert result.status == "succeeded", result.log
    assert [(o.path, o.size, o.sha256, o.data) for o in result.outputs] == [
        ("plain.bin", len(PLAIN), hashlib.sha256(PLAIN).hexdigest(), PLAIN),
        ("report.txt", len(REPORT), hashlib.sha256(REPORT).hexdigest(), REPORT)]
    assert result.outputs_note == NOTE
    plain = run(code, make_flow(command=py(script)))  # without secrets, every file is kept as written
    assert {o.path: o.data for o in plain.outputs}[f"{TOKEN}.txt"] == b"the name is the secret"
    assert {o.path: o.data for o in plain.outputs}["blob.bin"] == b"\x00\x01" + TOKEN.encode() + b"\xff"


def test_a_short_secret_that_redaction_lengthens_still_keeps_the_cap(code):
    script = "cd \"$PUPPEMON_OUTPUT_DIR\" && printf 'a-x-x' > a && printf 'bbbbb' > b"
    result = run(code, make_flow(command=script), secrets={"s": "x"}, outputs_limit=8)
    assert [(o.path, o.data) for o in result.outputs] == [("b", b"bbbbb")]
    assert result.outputs_note == "1 file (9 bytes) not recorded: outputs are capped at 8 bytes per run (a)"


def test_one_file_over_the_cap_leaves_out_only_that_file(code):
    script = ("cd \"$PUPPEMON_OUTPUT_DIR\" && head -c 60 /dev/zero > a && head -c 30 /dev/zero > b"
              " && head -c 60 /dev/zero > c && mkdir d && head -c 5 /dev/zero > d/e && head -c 5 /dev/zero > f")
    result = run(code, make_flow(command=script), outputs_limit=100)
    assert [(o.path, o.size) for o in result.outputs] == [("a", 60), ("b", 30), ("d/e", 5), ("f", 5)]
    assert result.outputs_note == "1 file (60 bytes) not recorded: outputs are capped at 100 bytes per run (c)"


def test_the_cap_goes_in_path_order_whatever_the_nesting(code):
    # "a.txt" sorts before "a/b" ('.' < '/'): the cap must see them in that order.
    script = "cd \"$PUPPEMON_OUTPUT_DIR\" && mkdir a && head -c 6 /dev/zero > a/b && head -c 6 /dev/zero > a.txt"
    result = run(code, make_flow(command=script), outputs_limit=10)
    assert [o.path for o in result.outputs] == ["a.txt"]
    assert result.outputs_note == "1 file (6 bytes) not recorded: outputs are capped at 10 bytes per run (a/b)"


def victim(tmp_path: Path) -> Path:
    """A directory outside the run, with a subdirectory whose mode must survive."""
    place = tmp_path / "victim"
    (place / "sub").mkdir(parents=True)
    (place / "stolen.txt").write_text("not the run's\n")
    os.chmod(place / "sub", 0o755)
    return place


def test_an_output_dir_replaced_by_a_symlink_is_not_followed(code, tmp_path):
    place = victim(tmp_path)
    script = f"rm -r \"$PUPPEMON_OUTPUT_DIR\" && ln -s {place} \"$PUPPEMON_OUTPUT_DIR\""
    result = run(code, make_flow(command=script))
    assert result.status == "succeeded", result.log
    assert result.outputs == []
    assert result.outputs_note == f"the output directory was replaced by a symlink to {place}: nothing in it was recorded"
    assert sorted(p.name for p in place.iterdir()) == ["stolen.txt", "sub"]


def test_a_retry_after_the_output_dir_became_a_symlink_gets_a_fresh_dir_and_the_target_is_untouched(code, tmp_path):
    place = victim(tmp_path)
    script = (f"if [ -e {tmp_path}/once ]; then echo second > \"$PUPPEMON_OUTPUT_DIR/ok\"; else touch {tmp_path}/once"
              f" && rm -r \"$PUPPEMON_OUTPUT_DIR\" && ln -s {place} \"$PUPPEMON_OUTPUT_DIR\" && exit 1; fi")
    result = run(code, make_flow(command=script, retries=1, retry_delay=0))
    assert (result.status, result.error) == ("succeeded", None)
    assert [(o.path, o.data) for o in result.outputs] == [("ok", b"second\n")]
    assert stat.S_IMODE(os.stat(place / "sub").st_mode) == 0o755   # not chmod-ed through the link
    assert (place / "stolen.txt").read_text() == "not the run's\n"


def test_a_run_area_swapped_for_a_symlink_is_not_followed_either(tmp_path):
    # A flow run as another user owns its area (the output dir's parent) and may rename it away.
    place = tmp_path / "elsewhere"
    (place / "outputs").mkdir(parents=True)
    (place / "outputs" / "stolen.txt").write_text("not the run's\n")
    os.symlink(place, tmp_path / "area")
    assert collect_outputs(tmp_path / "area" / "outputs", 1000) == (
        [], f"the output directory's parent was replaced by a symlink to {place}: nothing in it was recorded")


SWAPPER = """\
import os, sys
os.chdir(sys.argv[1])
print("ready", flush=True)
while True:   # sub: a directory, then a symlink to the victim, then a directory again ...
    os.rename("sub", "real"); os.rename("link", "sub"); os.rename("sub", "link"); os.rename("real", "sub")
"""


@pytest.mark.slow
def test_a_directory_swapped_for_a_symlink_while_walked_is_never_followed(tmp_path):
    place = victim(tmp_path)
    out = tmp_path / "area" / "outputs"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "mine.txt").write_text("mine\n")
    os.symlink(place, out / "link")
    swapper = subprocess.Popen([sys.executable, "-c", SWAPPER, str(out)], stdout=subprocess.PIPE, text=True)
    seen: dict[str, int] = {}
    errors: list[str] = []
    try:
        assert swapper.stdout.readline() == "ready\n"
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            try:
                outputs, _ = collect_outputs(out, 10_000)
            except OSError as exc:   # an entry gone between the scan and its use is noted, never raised
                errors.append(str(exc))
                continue
            for o in outputs:
                seen[o.path] = seen.get(o.path, 0) + 1
    finally:
        swapper.kill()
        swapper.wait(10)
    assert "sub/stolen.txt" not in seen and "link/stolen.txt" not in seen, seen
    assert errors == [], f"{len(errors)} errors, the first: {errors[0]}"
    assert seen.get("sub/mine.txt", 0) > 10, seen    # the race was run: the real directory was walked too


def test_names_git_cannot_record_are_skipped_and_deep_trees_are_cut(code):
    deep = "/".join(["d"] * (MAX_DEPTH + 1))
    script = ("import os; out = os.environ['PUPPEMON_OUTPUT_DIR']; os.chdir(out)\n"
              "for d in ('.GIT', '.git', 'git~1', '.g\\u200cit', 'x/.Git.'): os.makedirs(d); open(d + '/config', 'w').write('x')\n"
              "open('.gitmodules', 'w').write('[submodule \"a\"]\\n\\tpath = a\\n\\turl = --upload-pack=x\\n')\n"
              "open(os.fsencode('caf') + b'\\xe9', 'w').write('latin-1 name')\n"
              f"os.makedirs({deep!r}); open({deep!r} + '/f', 'w').write('deep')\n"
              "open('.gitignore', 'w').write('kept')\n")
    result = run(code, make_flow(command=py(script)))
    assert result.status == "succeeded", result.log
    assert [o.path for o in result.outputs] == [".gitignore"]
    assert result.outputs_note == (
        "skipped .GIT (a name git does not record), .git (a name git does not record), "
        ".gitmodules (a name git does not record), .g\u200cit (a name git does not record), "
        "caf\\xe9 (a name that is not UTF-8), " + "d/" * MAX_DEPTH + f"d (more than {MAX_DEPTH} directories deep), "
        "git~1 (a name git does not record), x/.Git. (a name git does not record)")


# --- end to end: a real daemon, its mirror, the remote ---------------------------------------------

MANIFEST = """\
version: 1
flows:
  writes:
    entrypoint: job.py:main
    secrets: [tok, db]
    run_on_deploy: true
"""
JOB = "import puppemon\n\ndef main():\n" + "".join(
    f"    {line}\n" for line in flow_script('puppemon.secret("tok")', 'puppemon.secret("db")').splitlines())


def all_objects(git_dir: Path) -> bytes:
    """Every object of a repository, reachable or not, as `git cat-file --batch` prints them."""
    return subprocess.run(["git", "--git-dir", str(git_dir), "cat-file", "--batch-all-objects", "--batch"],
                          capture_output=True, check=True, timeout=60).stdout


@pytest.mark.slow
def test_outputs_of_a_daemon_run_never_put_a_secret_on_the_remote_or_in_the_mirror(tmp_path, bare_remote):
    repo = make_repo(tmp_path / "project", {"puppemon.yaml": MANIFEST, "job.py": JOB})
    git("remote", "add", "origin", str(bare_remote), cwd=repo)
    puppemon("push", cwd=repo)
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(f"tok:\n  value: {TOKEN}\n  flows: [writes]\n"
                       f"db:\n  value: {{host: db.internal, password: {PASSWORD}}}\n  flows: [writes]\n")
    os.chmod(secrets, 0o600)
    state = tmp_path / "state"
    daemon = puppemon("daemon", "--remote", str(bare_remote), "--state", str(state), "--once",
                      "--secrets", str(secrets), check=False, timeout=120)
    assert daemon.returncode == 0, daemon.stderr
    records = {r["flow"]: r for r in remote_records(bare_remote)}
    assert {f: r["status"] for f, r in records.items()} == {"writes": "succeeded"}
    remote, mirror = all_objects(bare_remote), all_objects(state / "mirror.git")
    haystacks = {"remote objects": remote, "mirror objects": mirror,
                 "daemon output": (daemon.stdout + daemon.stderr).encode()}
    for path in state.rglob("*"):
        if path.is_file() and not path.is_symlink():
            haystacks[str(path)] = path.read_bytes()
    for where, data in haystacks.items():
        for value in VALUES:
            assert value.encode() not in data, f"{value} found in {where}"
    writes = records["writes"]
    assert writes["outputs"] == [
        {"path": "plain.bin", "size": len(PLAIN), "sha256": hashlib.sha256(PLAIN).hexdigest()},
        {"path": "report.txt", "size": len(REPORT), "sha256": hashlib.sha256(REPORT).hexdigest()}]
    assert writes["outputs_note"] == NOTE
    base = f"runs:runs/writes/{writes['id'][:4]}/{writes['id'][4:6]}/{writes['id'][6:8]}/{writes['id']}/outputs"
    assert git("--git-dir", str(bare_remote), "show", f"{base}/report.txt").encode() == REPORT
    assert REPORT in remote and REPORT in mirror     # the scan above read the objects it should
    fsck(bare_remote)


HOSTILE = "version: 1\nflows:\n  hostile:\n    entrypoint: job.py:main\n    run_on_deploy: true\n"
HOSTILE_JOB = """\
import os

def main():
    os.chdir(os.environ["PUPPEMON_OUTPUT_DIR"])
    for name in (".GIT", ".g\\u200cit"):   # refused by libgit2; accepted by it, refused by fsck --strict
        os.mkdir(name)
        open(name + "/config", "w").write("x")
    open("ok.txt", "w").write("ok")
"""


@pytest.mark.slow
def test_a_run_whose_outputs_git_cannot_hold_is_recorded_without_them(tmp_path, bare_remote):
    repo = make_repo(tmp_path / "project", {"puppemon.yaml": HOSTILE, "job.py": HOSTILE_JOB})
    git("remote", "add", "origin", str(bare_remote), cwd=repo)
    puppemon("push", cwd=repo)
    daemon = puppemon("daemon", "--remote", str(bare_remote), "--state", str(tmp_path / "state"), "--once",
                      check=False, timeout=120)
    assert daemon.returncode == 0, daemon.stderr
    [record] = remote_records(bare_remote)
    assert (record["status"], [o["path"] for o in record["outputs"]], record["outputs_note"]) == (
        "succeeded", ["ok.txt"], "skipped .GIT (a name git does not record), .g\u200cit (a name git does not record)")
    fsck(bare_remote)
