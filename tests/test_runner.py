"""The runner with real child processes: statuses, env, workdirs, timeouts, retries, log, outputs."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from puppemon.formats import new_id as new_run_id
from puppemon.project import manifest
from puppemon.run.runner import execute
from puppemon.run.spec import RunSpec
from puppemon.secrets import redact
from tests.conftest import unavailable, wait_until

PY = sys.executable


def make_flow(name: str = "job", **fields) -> manifest.Flow:
    """A Flow as the manifest parser builds it from these YAML fields."""
    return manifest.parse(yaml.safe_dump({"version": 1, "flows": {name: fields}})).flows[name]


def write_files(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture
def code(tmp_path) -> Path:
    return write_files(tmp_path / "code", {"README": "code dir\n"})


def run(code: Path, flow: manifest.Flow, params: dict | None = None, **spec_fields):
    callbacks = {k: spec_fields.pop(k) for k in ("on_output", "cancel") if k in spec_fields}
    if "on_spawn" in spec_fields:  # (attempt, pid of the local backend's process group leader)
        on_spawn = spec_fields.pop("on_spawn")
        callbacks["on_start"] = lambda n, execution: on_spawn(n, execution.pid)
    spec = RunSpec(run_id=new_run_id(), flow=flow, code_dir=code, params=params or {}, **spec_fields)
    return execute(spec, **callbacks)


def py(code: str) -> list[str]:
    """An exec-form command running a Python snippet."""
    return [PY, "-c", code]


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)   # raises once the runner has reaped it
    except ProcessLookupError:
        return False
    return True


# --- ids ---------------------------------------------------------------------

def test_run_id_is_utc_start_time_and_random_suffix():
    when = datetime(2026, 11, 25, 16, 30, tzinfo=timezone.utc)
    a, b = new_run_id(when), new_run_id(when)
    assert re.fullmatch(r"20261125T163000Z-[0-9a-f]{6}", a)
    assert a != b
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", new_run_id())


# --- commands ------------------------------------------------------------------

def test_shell_command_succeeds_with_stdout_and_stderr_interleaved(code):
    result = run(code, make_flow(command="echo one; echo two >&2; echo three"))
    assert (result.status, result.exit_code, result.error) == ("succeeded", 0, None)
    assert result.log == b"one\ntwo\nthree\n"
    assert [(a.number, a.status, a.exit_code) for a in result.attempts] == [(1, "succeeded", 0)]
    assert result.flow == "job" and result.has_result is False and result.outputs == []
    assert result.finished >= result.started and result.duration >= result.attempts[0].duration


def test_exit_code_fails_the_run(code):
    result = run(code, make_flow(command="echo bad; exit 3"))
    assert (result.status, result.exit_code, result.error) == ("failed", 3, "exited with code 3")


def test_exec_form_runs_without_a_shell(code):
    result = run(code, make_flow(command=["printf", "%s|", "a b", "$HOME", "*"]))
    assert result.log == b"a b|$HOME|*|"


def test_command_not_found(code):
    result = run(code, make_flow(command=["no-such-program-xyz", "arg"]))
    assert (result.status, result.exit_code) == ("failed", 127)
    assert result.error == "command not found: no-such-program-xyz"
    through_shell = run(code, make_flow(command="no-such-program-xyz"))
    assert (through_shell.status, through_shell.exit_code) == ("failed", 127)
    assert through_shell.error == "exited with code 127 (command not found)"


def test_script_with_a_missing_interpreter(code):
    (code / "job.sh").write_text("#!/no/such/interpreter\necho hi\n")
    (code / "job.sh").chmod(0o755)
    result = run(code, make_flow(command=["./job.sh"]))
    assert (result.status, result.exit_code) == ("failed", 127)
    assert result.error == "cannot execute ./job.sh: its interpreter (#! line) was not found"


def test_not_executable(code):
    (code / "job.sh").write_text("echo hi\n")
    result = run(code, make_flow(command=["./job.sh"]))
    assert (result.status, result.exit_code, result.error) == (
        "failed", 126, "permission denied: cannot execute ./job.sh")


def test_killed_by_a_signal(code):
    result = run(code, make_flow(command="kill -KILL $$"))
    assert (result.status, result.exit_code, result.error) == ("failed", 137, "killed by SIGKILL")


def test_missing_code_dir_is_a_failed_result_not_an_exception(tmp_path):
    result = run(tmp_path / "nope", make_flow(command="true"))
    assert (result.status, result.exit_code, result.attempts) == ("failed", None, [])
    assert result.error == f"code directory {tmp_path / 'nope'} does not exist"


# --- Python entrypoints ----------------------------------------------------------

def test_entrypoint_gets_merged_params_and_returns_a_result(tmp_path):
    code = write_files(tmp_path / "code", {
        "reports/daily.py": "from . import helpers\nimport sibling\n\n"
                            "def main(days, region, verbose=False):\n"
                            "    print('days', days, flush=True)\n"
                            "    return {'days': days, 'region': region, 'v': verbose,\n"
                            "            'h': helpers.NAME, 's': sibling.NAME}\n",
        "reports/helpers.py": "NAME = 'helpers'\n",
        "reports/sibling.py": "NAME = 'sibling'\n",
    })
    flow = make_flow(entrypoint="reports/daily.py:main", params={"days": 1, "region": "tw"})
    result = run(code, flow, {"days": 3, "verbose": True})
    assert result.status == "succeeded", result.log
    assert result.log == b"days 3\n"
    assert result.has_result
    assert result.result == {"days": 3, "region": "tw", "v": True, "h": "helpers", "s": "sibling"}
    assert result.params == {"days": 3, "region": "tw", "verbose": True}


def test_module_entrypoint_and_coroutine_function(tmp_path):
    code = write_files(tmp_path / "code", {
        "pkg/__init__.py": "",
        "pkg/jobs.py": "import asyncio\n\nasync def main(n):\n    await asyncio.sleep(0)\n    return [n, n]\n",
    })
    result = run(code, make_flow(entrypoint="pkg.jobs:main"), {"n": 2})
    assert (result.status, result.result, result.has_result) == ("succeeded", [2, 2], True)


def test_entrypoint_that_raises_fails_with_its_traceback(tmp_path):
    code = write_files(tmp_path / "code", {"job.py": "def main():\n    print('working')\n"
                                                    "    raise ValueError('boom')\n"})
    result = run(code, make_flow(entrypoint="job.py:main"))
    assert (result.status, result.exit_code, result.error) == ("failed", 1, "ValueError: boom")
    log = result.log.decode()
    assert log.startswith("working\nTraceback (most recent call last):\n")
    assert 'job.py", line 3, in main' in log and "puppemon/run/bootstrap.py" not in log
    assert log.endswith("ValueError: boom\n")
    assert result.has_result is False


@pytest.mark.parametrize("entry, message", [
    ("reports/daily.py:main", "no function 'main' in reports/daily.py"),
    ("reports/missing.py:main", "file reports/missing.py not found"),
    ("nosuchmodule:main", "no module named 'nosuchmodule'"),
])
def test_entrypoint_that_cannot_be_found_exits_2(tmp_path, entry, message):
    code = write_files(tmp_path / "code", {"reports/daily.py": "def other():\n    pass\n"})
    result = run(code, make_flow(entrypoint=entry))
    assert (result.status, result.exit_code) == ("failed", 2)
    assert result.error.startswith(f"entrypoint {entry}: {message}")
    assert result.log.decode() == f"puppemon: {result.error}\n"


def test_missing_dependency_of_the_entry_module_is_the_flows_failure(tmp_path):
    code = write_files(tmp_path / "code", {"jobs.py": "import no_such_dependency\n\ndef main():\n    pass\n"})
    result = run(code, make_flow(entrypoint="jobs:main"))
    assert (result.status, result.exit_code) == ("failed", 1)
    assert result.error == "ModuleNotFoundError: No module named 'no_such_dependency'"
    assert b'jobs.py", line 1, in <module>' in result.log


def test_entrypoint_result_must_be_json(tmp_path):
    code = write_files(tmp_path / "code", {"job.py": "def none():\n    return None\n\n"
                                                    "def aset():\n    return {1, 2}\n"})
    result = run(code, make_flow(entrypoint="job.py:none"))
    assert (result.status, result.has_result, result.result, result.log) == ("succeeded", False, None, b"")
    result = run(code, make_flow(entrypoint="job.py:aset"))
    assert (result.status, result.has_result) == ("succeeded", False)
    assert result.log == (b"puppemon: the return value of job.py:aset (set) is not JSON-serialisable; "
                          b"no result recorded\n")


# --- environment and directories ------------------------------------------------

DUMP = ("import json, os\n"
        "d = dict(os.environ, CWD=os.getcwd(), OUTPUTS=sorted(os.listdir(os.environ['PUPPEMON_OUTPUT_DIR'])),\n"
        "         TMP_EXISTS=os.path.isdir(os.environ['TMPDIR']), LINK=os.path.islink('link'))\n"
        "print(json.dumps(d))\n")


def test_child_env_is_exactly_base_env_plus_the_run_context(code):
    base = {"PATH": os.environ["PATH"], "HOME": "/home/someone", "LANG": "C.UTF-8",
            "PUPPEMON_HTTP_TOKEN": "t0ken", "PUPPEMON_GITHUB_SECRET": "gh", "PUPPEMON_STATE_DIR": "/x"}
    flow = make_flow(command=["env", "-0"], env={"FLOW_ENV": "1", "LANG": "fr_FR.UTF-8"}, params={"a": 1})
    secrets = {"discord-chat": "s3cret-url", "db": {"user": "u", "password": "hunter22"}}
    result = run(code, flow, {"b": "two"}, base_env=base, variables={"REGION": "tw"},
                 flows_commit="abc123", secrets=secrets)
    assert result.status == "succeeded", result.log
    env = dict(item.split("=", 1) for item in result.log.decode().split("\0") if item)
    assert env == {
        "PATH": os.environ["PATH"], "HOME": "/home/someone", "LANG": "fr_FR.UTF-8",
        "REGION": "tw", "FLOW_ENV": "1",
        "DISCORD_CHAT": "***", "DB": "***",   # the log is redacted, the delivered JSON text too
        "PUPPEMON_RUN_ID": result.run_id, "PUPPEMON_FLOW": "job",
        "PUPPEMON_PARAMS": '{"a": 1, "b": "two"}', "PUPPEMON_OUTPUT_DIR": env["PUPPEMON_OUTPUT_DIR"],
        "PUPPEMON_FLOWS_COMMIT": "abc123", "TMPDIR": env["TMPDIR"],
        "PUPPEMON_TRIGGER": '{"scheduled_time": null}',   # run() gives no trigger: nothing started it
    }


def test_per_run_directories_exist_during_the_run_and_are_removed_after(code):
    result = run(code, make_flow(command=py(DUMP)))
    seen = json.loads(result.log)
    assert seen["OUTPUTS"] == [] and seen["TMP_EXISTS"] is True and seen["LINK"] is False
    assert seen["TMPDIR"] != os.environ.get("TMPDIR")
    # a fresh copy by default
    assert Path(seen["CWD"]) != code and (Path(seen["CWD"]) / "README").exists() is False
    for path in (seen["CWD"], seen["TMPDIR"], seen["PUPPEMON_OUTPUT_DIR"]):
        assert not os.path.exists(path)


def test_secrets_reach_the_child_unredacted(code):
    flow = make_flow(command=py("import os, puppemon\n"
                                "ok = os.environ['API_KEY'] == 'k-123456' and puppemon.secret('db') == {'pw': 'pa55word'}\n"
                                "print('ok' if ok else 'mismatch')"))
    result = run(code, flow, secrets={"api-key": "k-123456", "db": {"pw": "pa55word"}})
    assert result.log == b"ok\n"


def test_fresh_workdir_is_a_copy_that_keeps_symlinks(code):
    (code / "link").symlink_to("README")
    flow = make_flow(command=py(DUMP + "open('left-behind', 'w').write('x')\n"))
    first = json.loads(run(code, flow).log)
    assert first["LINK"] is True
    assert not (code / "left-behind").exists()
    second = run(code, make_flow(command="ls"))
    assert b"left-behind" not in second.log and b"README" in second.log


def test_shared_workdir_runs_in_the_code_dir(code):
    result = run(code, make_flow(command="pwd; touch made-here", workdir="shared"))
    assert result.log.decode().strip() == str(code)
    assert (code / "made-here").exists()
    result = run(code, make_flow(command="pwd"), workdir="shared")   # the caller's override
    assert result.log.decode().strip() == str(code)


# --- timeouts, cancel, process groups -------------------------------------------

def test_timeout_kills_the_whole_group(code):
    pids = []
    flow = make_flow(command="sleep 1000 & sleep 1000 & echo started; wait", timeout=0.5)
    result = run(code, flow, on_spawn=lambda n, pid: pids.append((n, pid)))
    assert (result.status, result.exit_code, result.error) == ("timed_out", 124, "timed out after 0.5s")
    assert result.log == b"started\n"
    assert len(pids) == 1 and pids[0][0] == 1
    assert 0.5 <= result.duration < 3
    with pytest.raises(ProcessLookupError):
        os.killpg(pids[0][1], 0)


def test_timeout_sigkills_what_ignores_sigterm(code):
    pids = []
    flow = make_flow(command="trap '' TERM; (trap '' TERM; sleep 1000) & echo started; wait", timeout=0.3)
    result = run(code, flow, grace=0.3, on_spawn=lambda n, pid: pids.append(pid))
    assert (result.status, result.exit_code) == ("timed_out", 124)
    assert 0.6 <= result.duration < 3
    with pytest.raises(ProcessLookupError):
        os.killpg(pids[0], 0)


def test_background_processes_left_behind_are_stopped(code):
    pids = []
    result = run(code, make_flow(command="sleep 1000 & echo done"), on_spawn=lambda n, pid: pids.append(pid))
    assert (result.status, result.log) == ("succeeded", b"done\n")
    assert result.duration < 3
    with pytest.raises(ProcessLookupError):
        os.killpg(pids[0], 0)


def test_cancel_stops_the_run(code):
    cancel = threading.Event()
    pids = []

    def on_output(data):
        if b"ready" in data:
            cancel.set()

    result = run(code, make_flow(command="echo ready; sleep 1000"), cancel=cancel, on_output=on_output,
                 on_spawn=lambda n, pid: pids.append(pid))
    assert (result.status, result.exit_code, result.error) == ("cancelled", 130, "cancelled")
    assert not group_alive(pids[0])


def test_cancel_before_the_start_runs_nothing(code):
    cancel = threading.Event()
    cancel.set()
    spawned = []
    result = run(code, make_flow(command="echo should-not-run"), cancel=cancel,
                 on_spawn=lambda n, pid: spawned.append(pid))
    assert (result.status, result.exit_code, result.error) == ("cancelled", 130, "cancelled before it started")
    assert (spawned, result.attempts, result.log) == ([], [], b"")


def test_cancel_during_retry_delay_stops_at_once(code):
    cancel = threading.Event()
    spawned = []

    def cancel_once_the_first_attempt_ended():
        try:
            wait_until(lambda: spawned and not pid_alive(spawned[0]), 5, "the first attempt to end", interval=0.01)
        finally:
            cancel.set()

    canceller = threading.Thread(target=cancel_once_the_first_attempt_ended)
    canceller.start()
    flow = make_flow(command="echo attempt; exit 1", retries=3, retry_delay="1h")
    result = run(code, flow, cancel=cancel, on_spawn=lambda n, pid: spawned.append(pid))
    canceller.join()
    assert (result.status, result.exit_code) == ("cancelled", 130)
    assert result.error == "cancelled while waiting for attempt 2 of 4"
    assert [a.status for a in result.attempts] == ["failed"]
    assert result.duration < 3


def test_exception_in_a_callback_still_kills_the_flow(code):
    pids = []

    def on_output(data):
        raise RuntimeError("consumer broke")

    with pytest.raises(RuntimeError, match="consumer broke"):
        run(code, make_flow(command="echo hi; sleep 1000"), on_output=on_output,
            on_spawn=lambda n, pid: pids.append(pid))
    wait_until(lambda: not group_alive(pids[0]), 2, "the flow's process group to be gone")


# --- retries ---------------------------------------------------------------------

def test_retries_record_every_attempt_under_a_separator(code):
    spawned = []
    flow = make_flow(command="echo try; exit 2", retries=2, retry_delay=0.1)
    result = run(code, flow, on_spawn=lambda n, pid: spawned.append(n))
    assert (result.status, result.exit_code) == ("failed", 2)
    assert [(a.number, a.status, a.exit_code) for a in result.attempts] == [(1, "failed", 2), (2, "failed", 2),
                                                                          (3, "failed", 2)]
    assert spawned == [1, 2, 3]
    assert result.log == (b"try\n--- attempt 2 of 3 (after 0.1s delay) ---\n"
                          b"try\n--- attempt 3 of 3 (after 0.1s delay) ---\ntry\n")


def test_retry_that_succeeds_empties_the_output_dir_between_attempts(code):
    script = ("import os\n"
              "out = os.environ['PUPPEMON_OUTPUT_DIR']\n"
              "first = not os.path.exists('marker')\n"
              "open('marker', 'w').close()\n"
              "open(os.path.join(out, 'first.txt' if first else 'second.txt'), 'w').write('x')\n"
              "print(sorted(os.listdir(out)), end='')\n"
              "raise SystemExit(1 if first else 0)\n")
    result = run(code, make_flow(command=py(script), retries=1, retry_delay=0))
    assert (result.status, result.exit_code) == ("succeeded", 0)
    assert [a.status for a in result.attempts] == ["failed", "succeeded"]
    assert result.log == (b"['first.txt']\n--- attempt 2 of 2 (after 0.0s delay) ---\n['second.txt']")
    assert [o.path for o in result.outputs] == ["second.txt"]


def test_timed_out_attempts_are_retried(code):
    flow = make_flow(command="sleep 1000", timeout=0.2, retries=1, retry_delay=0)
    result = run(code, flow)
    assert [a.status for a in result.attempts] == ["timed_out", "timed_out"]
    assert (result.status, result.exit_code) == ("timed_out", 124)


# --- the log ---------------------------------------------------------------------

def test_log_keeps_head_and_tail_and_says_how_much_was_cut(code):
    # 10,000 numbered lines of 8 bytes each: "0000000\n" ...
    flow = make_flow(command=py("import sys\nfor i in range(10000): sys.stdout.write('%07d\\n' % i)"))
    live = []
    result = run(code, flow, log_limit=1000, on_output=live.append)
    assert b"".join(live) == b"".join(b"%07d\n" % i for i in range(10000))
    head, note, tail = result.log.partition(b"\n[... puppemon: 79000 bytes cut from the middle of this log ...]\n")
    assert note
    assert head == b"".join(b"%07d\n" % i for i in range(62)) + b"0000"       # 500 bytes
    assert tail == b"937\n" + b"".join(b"%07d\n" % i for i in range(9938, 10000))  # the last 500
    assert len(head) + len(tail) <= 1000


def test_log_under_the_limit_is_whole(code):
    result = run(code, make_flow(command="printf 'x%.0s' $(seq 100)"), log_limit=200)
    assert result.log == b"x" * 100


def test_printing_200_mb_keeps_runner_memory_flat(code, tmp_path):
    script = f"""
import hashlib
import json
from pathlib import Path
from puppemon.project import manifest
from puppemon.formats import new_id as new_run_id
from puppemon.run.runner import execute
from puppemon.run.spec import RunSpec

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

def flow(command):
    return manifest.parse("version: 1\\nflows:\\n  big:\\n    command: " + json.dumps(command)).flows["big"]

code = Path({str(code)!r})
execute(RunSpec(new_run_id(), flow("echo warm-up"), code, {{}}))
before = hwm()
result = execute(RunSpec(new_run_id(), flow("head -c 209715200 /dev/zero | tr '\\\\0' x; echo; echo END"), code, {{}}))
print(json.dumps({{"before": before, "after": hwm(), "log": len(result.log), "status": result.status,
                  "tail": result.log[-4:].decode(), "cut": result.log.count(b"bytes cut from the middle")}}))
"""
    if not Path("/proc/self/status").exists():
        unavailable("needs /proc")
    proc = subprocess.run([PY, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout)
    print(figures)
    assert figures["status"] == "succeeded" and figures["tail"] == "END\n" and figures["cut"] == 1
    assert figures["log"] <= 5 * 1024**2 + 100
    # 200 MB went through; the runner's peak may grow by a few copies of the 5 MiB log only.
    assert figures["after"] - figures["before"] < 20 * 1024**2


# --- redaction --------------------------------------------------------------------

def test_redact_replaces_every_secret_value():
    secrets = {"token": "tok-abc", "db": {"user": "bob", "password": "pa55word", "nested": ["longleaf"]}}
    assert redact("a tok-abc b pa55word c longleaf bob", secrets) == "a *** b *** c *** bob"
    assert redact(b"tok-abctok-abc", secrets) == b"******"
    assert redact(b'{"user": "bob", "password": "pa55word", "nested": ["longleaf"]}', secrets) == b"***"
    assert redact("nothing", {}) == "nothing"
    # the longer secret wins where one contains the other
    assert redact("supersecret", {"a": "secret", "b": "supersecret"}) == "***"


def test_secrets_are_redacted_from_log_result_and_error(tmp_path):
    code = write_files(tmp_path / "code", {
        "job.py": "import puppemon\n\ndef main(fail=False):\n"
                  "    key = puppemon.secret('api')\n    print('key is', key)\n"
                  "    if fail:\n        raise RuntimeError('bad key ' + key)\n"
                  "    return {'key': key, key: 'as a key', 'n': 1}\n"})
    flow = make_flow(entrypoint="job.py:main")
    secrets = {"api": "k-SECRET-9"}
    result = run(code, flow, secrets=secrets)
    assert result.log == b"key is ***\n"
    assert result.result == {"key": "***", "***": "as a key", "n": 1}
    failed = run(code, flow, {"fail": True}, secrets=secrets)
    assert failed.error == "RuntimeError: bad key ***"
    assert b"k-SECRET-9" not in failed.log and failed.log.endswith(b"RuntimeError: bad key ***\n")


def test_secret_cut_by_the_head_tail_boundary_does_not_leak(code):
    secret = "QJKVWZXQJKVWZX"   # letters that never occur in the filler or the truncation note
    # head keeps 50 bytes: the secret straddles byte 50; the tail keeps the last 50: it straddles that cut too
    text = "." * 43 + secret + "." * 500 + secret + "." * 44
    flow = make_flow(command=["printf", "%s", text])
    result = run(code, flow, log_limit=100, secrets={"s": secret})
    assert b"bytes cut from the middle of this log" in result.log
    assert not re.search(rb"[A-Z]", result.log), result.log
    whole = run(code, flow, log_limit=10_000, secrets={"s": secret})
    assert whole.log == ("." * 43 + "***" + "." * 500 + "***" + "." * 44).encode()


# --- outputs ------------------------------------------------------------------------

def test_outputs_are_regular_files_sorted_with_hashes(code, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("not yours")
    script = (f"cd \"$PUPPEMON_OUTPUT_DIR\" && mkdir -p sub/deeper && printf b > b.txt && printf a > a.txt"
              f" && printf '#!/bin/sh\\n' > sub/run.sh && chmod +x sub/run.sh && printf z > sub/deeper/z"
              f" && ln -s {outside} escape && ln -s {tmp_path} escape-dir && mkfifo pipe")
    result = run(code, make_flow(command=script))
    assert result.status == "succeeded", result.log
    assert [(o.path, o.size, o.data, o.executable) for o in result.outputs] == [
        ("a.txt", 1, b"a", False), ("b.txt", 1, b"b", False),
        ("sub/deeper/z", 1, b"z", False), ("sub/run.sh", 10, b"#!/bin/sh\n", True)]
    assert result.outputs[0].sha256 == hashlib.sha256(b"a").hexdigest()
    assert result.outputs_note == (f"skipped escape (symlink to {outside}), escape-dir (symlink to {tmp_path}), "
                                   f"pipe (not a regular file)")


def test_default_outputs_cap_is_20_mib(code):
    script = ("cd \"$PUPPEMON_OUTPUT_DIR\" && head -c 15728640 /dev/zero > a && head -c 6291456 /dev/zero > b"
              " && mkfifo " + " ".join(f"p{i:02d}" for i in range(12)))
    result = run(code, make_flow(command=script))
    assert [(o.path, o.size) for o in result.outputs] == [("a", 15 * 1024**2)]
    assert result.outputs_note == (
        "1 file (6 MiB) not recorded: outputs are capped at 20 MiB per run (b); skipped "
        + ", ".join(f"p{i:02d} (not a regular file)" for i in range(10)) + " and 2 more")


@pytest.mark.parametrize("name, status", [("result.json.error", "failed"), ("result.json", "succeeded")])
def test_a_result_or_error_file_swapped_for_a_symlink_is_not_followed(code, tmp_path, name, status):
    # A flow run as another user owns its area; the daemon, reading as root, must not fetch a file for it.
    private = tmp_path / "private.txt"
    private.write_text('"private to the daemon"\n')
    area = '"$(dirname "$PUPPEMON_OUTPUT_DIR")"'
    result = run(code, make_flow(command=f"ln -sf {private} {area}/{name}; "
                                         f"{'exit 1' if status == 'failed' else 'true'}"))
    assert result.status == status
    assert "private" not in (result.error or "") and result.result is None
    assert f"puppemon: could not read the result: {name} is a symlink (not followed)" in result.log.decode()
