"""Per-flow Python environments end to end: real uv, real interpreters, real daemons, wheels made here, no network."""
from __future__ import annotations

import base64
import hashlib
import http.server
import os
import platform
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from puppemon.run.environments import MARKER, EnvStore, find_uv
from tests.conftest import git, puppemon
from tests.daemon_helpers import (DaemonProcess, deploy, deploy_records, fsck, log_of, manifest_project, of_flow,
                                  remote_records, result_of, run_daemon_once, wait_until)

pytestmark = pytest.mark.slow

PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
RETURNS_VERSION = "import tinypkg\n\n\ndef main():\n    return tinypkg.VERSION\n"


def make_wheel(directory: Path, name: str, version: str) -> Path:
    """A pure wheel of `name` whose module says its VERSION and whose console script `name` prints it."""
    info = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": f"VERSION = {version!r}\n\n\ndef main():\n    print({name!r}, VERSION)\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
             f"{info}/entry_points.txt": f"[console_scripts]\n{name} = {name}:main\n"}
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel


@pytest.fixture
def wheels(tmp_path, monkeypatch) -> Path:
    """tinypkg 1.0 and 2.0 in a wheel directory that uv (here and in every daemon started) uses offline."""
    directory = tmp_path / "wheels"
    directory.mkdir()
    for version in ("1.0", "2.0"):
        make_wheel(directory, "tinypkg", version)
    for key, value in {"UV_NO_INDEX": "1", "UV_FIND_LINKS": str(directory), "UV_PYTHON_DOWNLOADS": "never",
                       "UV_CACHE_DIR": str(tmp_path / "uv-cache"), "UV_NO_CONFIG": "1"}.items():
        monkeypatch.setenv(key, value)
    for key in ("UV_INDEX_URL", "UV_DEFAULT_INDEX", "UV_EXTRA_INDEX_URL", "UV_OFFLINE", "VIRTUAL_ENV"):
        monkeypatch.delenv(key, raising=False)
    return directory



def once(bare: Path, state: Path) -> None:
    proc = run_daemon_once(str(bare), state)
    assert proc.returncode == 0, proc.stderr


def envs(state: Path) -> dict[str, int]:
    """The environments built under STATE/envs (no hidden entries), by key: their directory's inode."""
    root = state / "envs"
    return {d.name: d.stat().st_ino for d in root.iterdir() if not d.name.startswith(".")} if root.is_dir() else {}


def leftovers(state: Path) -> list[str]:
    return sorted(p.name for p in (state / "envs").glob(".tmp-*"))


def refusals(bare: Path) -> list[dict]:
    return [d for d in deploy_records(bare) if d["status"] == "refused"]


def flows_tip(bare: Path) -> str:
    return git("--git-dir", str(bare), "rev-parse", "flows").strip()


SIDE_BY_SIDE = """\
version: 1
flows:
  old:
    entrypoint: flow.py:main
    python: {requirements: old.txt}
    run_on_deploy: true
  old-too:
    entrypoint: flow.py:main
    python: {requirements: old.txt}
    run_on_deploy: true
  new:
    entrypoint: flow.py:main
    python: {requirements: new.txt}
    run_on_deploy: true
"""


@pytest.mark.timeout(40)
def test_two_versions_of_one_package_side_by_side_and_what_the_records_say(tmp_path, bare_remote, wheels):
    repo = manifest_project(tmp_path, str(bare_remote), SIDE_BY_SIDE,
                            {"flow.py": RETURNS_VERSION, "old.txt": "tinypkg==1.0\n", "new.txt": "tinypkg==2.0\n"})
    deploy(repo)
    state = tmp_path / "state"
    once(bare_remote, state)
    records = remote_records(bare_remote)
    results = {r["flow"]: result_of(bare_remote, r) for r in records}
    assert results == {"old": "1.0", "old-too": "1.0", "new": "2.0"}
    assert {r["status"] for r in records} == {"succeeded"}
    built = envs(state)
    assert len(built) == 2  # old and old-too share one
    by_flow = {r["flow"]: r["environment"] for r in records}
    assert by_flow["old"] == by_flow["old-too"] != by_flow["new"]
    for env in by_flow.values():
        assert set(env) == {"key", "python"} and env["key"] in built
        assert env["python"] == platform.python_version()
    [record] = deploy_records(bare_remote)
    assert record["status"] == "deployed"
    assert record["environments"] == {
        by_flow["old"]["key"]: {"python": platform.python_version(), "packages": ["tinypkg==1.0"],
                                "flows": ["old", "old-too"]},
        by_flow["new"]["key"]: {"python": platform.python_version(), "packages": ["tinypkg==2.0"],
                                "flows": ["new"]}}
    assert leftovers(state) == []
    fsck(bare_remote)


ONE_FLOW = """\
version: 1
flows:
  job:
    entrypoint: flow.py:main
    python: {requirements: requirements.txt}
    run_on_deploy: true
"""


@pytest.mark.timeout(40)
def test_new_requirements_build_a_new_environment_and_unchanged_ones_build_nothing(tmp_path, bare_remote, wheels):
    repo = manifest_project(tmp_path, str(bare_remote), ONE_FLOW,
                            {"flow.py": RETURNS_VERSION, "requirements.txt": "tinypkg==1.0\n"})
    deploy(repo)
    state = tmp_path / "state"
    once(bare_remote, state)
    first = envs(state)
    assert len(first) == 1
    deploy(repo, files={"requirements.txt": "tinypkg==2.0\n"})
    once(bare_remote, state)
    second = envs(state)
    assert len(second) == 2 and set(first) < set(second) and second[next(iter(first))] == next(iter(first.values()))
    deploy(repo, files={"flow.py": RETURNS_VERSION + "# a comment changes the deploy, not the environment\n"})
    once(bare_remote, state)
    assert envs(state) == second  # same keys, same directories: nothing was rebuilt
    runs = sorted(of_flow(remote_records(bare_remote), "job"), key=lambda r: r["started"])  # ids share a second
    assert [result_of(bare_remote, r) for r in runs] == ["1.0", "2.0", "2.0"]
    assert runs[1]["environment"] == runs[2]["environment"] != runs[0]["environment"]
    assert [d["status"] for d in deploy_records(bare_remote)] == ["deployed"] * 3
    fsck(bare_remote)


@pytest.mark.timeout(40)
def test_an_unresolvable_requirement_refuses_the_deploy_and_the_last_good_one_keeps_running(
        tmp_path, bare_remote, wheels):
    manifest = ONE_FLOW.replace("run_on_deploy: true", "every: 1s")
    repo = manifest_project(tmp_path, str(bare_remote), manifest,
                            {"flow.py": RETURNS_VERSION, "requirements.txt": "tinypkg==1.0\n"})
    deploy(repo)
    good = flows_tip(bare_remote)
    state = tmp_path / "state"
    with DaemonProcess(str(bare_remote), state) as daemon:
        wait_until(lambda: of_flow(remote_records(bare_remote), "job", status="succeeded"),
                   what="a run of the good deploy", on_fail=lambda: daemon.log)
        deploy(repo, files={"requirements.txt": "tinypkg==9.9\n"})
        bad = flows_tip(bare_remote)
        [refused] = wait_until(lambda: refusals(bare_remote), what="the refusal", on_fail=lambda: daemon.log)
        ran = len(of_flow(remote_records(bare_remote), "job"))
        wait_until(lambda: len(of_flow(remote_records(bare_remote), "job", status="succeeded",
                                       flows_commit=good)) > ran,
                   what="a run of the last good deploy after the refusal", on_fail=lambda: daemon.log)
        assert daemon.stop() == 0
    assert refused["flows_commit"] == bad
    error = refused["error"]
    assert error.startswith("flows.job.python (requirements requirements.txt): uv could not build the "
                            "environment (requirements requirements.txt):\n"), error
    assert " ".join(error.split("\n", 1)[1].split()) == (  # uv's own lines (wrapped by uv)
        "error: No solution found when resolving dependencies cause: Because there is no version of tinypkg==9.9 "
        "and you require tinypkg==9.9, we can conclude that your requirements are unsatisfiable."), error
    assert not of_flow(remote_records(bare_remote), "job", flows_commit=bad)
    assert {r["status"] for r in of_flow(remote_records(bare_remote), "job")} == {"succeeded"}
    assert len(envs(state)) == 1 and leftovers(state) == []
    fsck(bare_remote)


PROJECT = """\
version: 1
flows:
  locked:
    entrypoint: flow.py:main
    python: {project: tool}
    run_on_deploy: true
"""
PYPROJECT = '[project]\nname = "tool"\nversion = "0"\nrequires-python = ">=3.8"\ndependencies = ["tinypkg==%s"]\n'


@pytest.mark.timeout(40)
def test_a_locked_project_runs_and_a_stale_lock_is_refused_with_uvs_message(tmp_path, bare_remote, wheels):
    repo = manifest_project(tmp_path, str(bare_remote), PROJECT,
                            {"flow.py": RETURNS_VERSION, "tool/pyproject.toml": PYPROJECT % "2.0"})
    subprocess.run([find_uv(), "lock", "--quiet"], cwd=repo / "tool", check=True)  # the daemon's uv
    assert 'version = "2.0"' in (repo / "tool" / "uv.lock").read_text()
    deploy(repo)
    state = tmp_path / "state"
    once(bare_remote, state)
    [run] = of_flow(remote_records(bare_remote), "locked")
    assert result_of(bare_remote, run) == "2.0"
    assert [d["environments"][run["environment"]["key"]]["packages"] for d in deploy_records(bare_remote)] \
        == [["tinypkg==2.0"]]  # the project itself is not installed
    deploy(repo, files={"tool/pyproject.toml": PYPROJECT % "1.0"})  # and no `uv lock`
    once(bare_remote, state)
    [refused] = refusals(bare_remote)
    assert refused["error"].startswith("flows.locked.python (project tool): uv could not build the environment "
                                       "(project tool):\n"), refused["error"]
    assert " ".join(refused["error"].split("\n", 1)[1].split()) == (  # uv's own lines (wrapped by uv)
        "error: The lockfile at `uv.lock` needs to be updated, but `--locked` was provided. "
        "hint: To update the lockfile, run `uv lock`.")
    assert len(of_flow(remote_records(bare_remote), "locked")) == 1
    fsck(bare_remote)


SCRIPT = """\
# /// script
# requires-python = ">=3.8"
# dependencies = ["tinypkg==2.0"]
# ///
import tinypkg


def main():
    return tinypkg.VERSION
"""


@pytest.mark.timeout(40)
def test_a_pep_723_script_flow(tmp_path, bare_remote, wheels):
    manifest = "version: 1\nflows:\n  script:\n    entrypoint: jobs/script.py:main\n" \
               "    python: {script: true}\n    run_on_deploy: true\n"
    repo = manifest_project(tmp_path, str(bare_remote), manifest, {"jobs/script.py": SCRIPT})
    deploy(repo)
    state = tmp_path / "state"
    once(bare_remote, state)
    [run] = of_flow(remote_records(bare_remote), "script")
    assert run["status"] == "succeeded" and result_of(bare_remote, run) == "2.0"
    assert list(envs(state)) == [run["environment"]["key"]]
    fsck(bare_remote)


INSIDE = """\
import sys

import puppemon


def main(greeting="hi"):
    found = {}
    for name in ("yaml", "pygit2", "click", "tinypkg"):
        try:
            __import__(name)
            found[name] = True
        except ImportError:
            found[name] = False
    return {"params": puppemon.params(), "greeting": greeting, "found": found, "executable": sys.executable,
            "prefix": sys.prefix, "api": puppemon.__file__}
"""
INSIDE_MANIFEST = """\
version: 1
flows:
  entry:
    entrypoint: inside.py:main
    python: {requirements: requirements.txt}
    params: {greeting: hello}
    run_on_deploy: true
  cmd:
    command: >-
      tinypkg && command -v tinypkg | sed "s|$VIRTUAL_ENV|VENV|" &&
      python -c "import puppemon; print(puppemon.params())" &&
      { python -c "import yaml" 2>/dev/null && echo yaml importable || echo no yaml; }
    python: {requirements: requirements.txt}
    params: {n: 1}
    run_on_deploy: true
"""


@pytest.mark.timeout(40)
def test_console_scripts_on_path_and_the_flow_api_without_puppemons_dependencies(tmp_path, bare_remote, wheels):
    repo = manifest_project(tmp_path, str(bare_remote), INSIDE_MANIFEST,
                            {"inside.py": INSIDE, "requirements.txt": "tinypkg==1.0\n"})
    deploy(repo)
    state = tmp_path / "state"
    once(bare_remote, state)
    records = remote_records(bare_remote)
    [entry], [cmd] = of_flow(records, "entry"), of_flow(records, "cmd")
    [key] = envs(state)
    env_dir = state / "envs" / key
    got = result_of(bare_remote, entry)
    assert got["params"] == {"greeting": "hello"} and got["greeting"] == "hello"
    assert got["found"] == {"yaml": False, "pygit2": False, "click": False, "tinypkg": True}
    assert Path(got["prefix"]) == env_dir and Path(got["executable"]).parent == env_dir / "bin"
    assert Path(got["api"]).parent.parent.parent == state / "envs"  # the flow API's own directory
    assert cmd["status"] == "succeeded", log_of(bare_remote, cmd)
    assert log_of(bare_remote, cmd) == "tinypkg 1.0\nVENV/bin/tinypkg\n{'n': 1}\nno yaml\n"
    assert entry["environment"] == cmd["environment"] == {"key": key, "python": platform.python_version()}
    fsck(bare_remote)


class HeldWheels:
    """A find-links page on 127.0.0.1 that holds every answer until `release()`: a build that waits."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.asked, self.answer = directory, threading.Event(), threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self):  # noqa: N802 - the stdlib's names
                self.do_GET(body=False)

            def do_GET(self, body=True):  # noqa: N802
                outer.asked.set()
                outer.answer.wait(60)
                name = self.path.strip("/")
                if not name:
                    links = "".join(f'<a href="{w.name}">{w.name}</a>\n' for w in sorted(directory.glob("*.whl")))
                    data, kind = f"<html><body>\n{links}</body></html>\n".encode(), "text/html"
                elif (directory / name).is_file() and "/" not in name:
                    data, kind = (directory / name).read_bytes(), "application/octet-stream"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda *_: None  # a client (uv) killed while held: nothing to report
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def release(self) -> None:
        self.answer.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


def uv_processes_in(path: Path) -> list[int]:
    """Pids of live processes whose command line names `path` (a uv building there)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if entry.isdigit() and str(path) in cmdline:
            found.append(int(entry))
    return found


@pytest.mark.timeout(45)
def test_kill_9_during_a_build_then_a_restart_builds_it_cleanly(tmp_path, bare_remote, wheels, monkeypatch):
    server = HeldWheels(wheels)
    monkeypatch.setenv("UV_FIND_LINKS", server.url)
    try:
        repo = manifest_project(tmp_path, str(bare_remote), ONE_FLOW,
                                {"flow.py": RETURNS_VERSION, "requirements.txt": "tinypkg==2.0\n"})
        deploy(repo)
        state = tmp_path / "state"
        daemon = DaemonProcess(str(bare_remote), state).start()
        try:
            wait_until(server.asked.is_set, what="uv asking the wheel server", on_fail=lambda: daemon.log)
            [half] = leftovers(state)
        finally:
            daemon.kill9()
        # its uv dies with it (it would otherwise go on writing into a directory the next start removes)
        wait_until(lambda: not uv_processes_in(state / "envs" / half), timeout=5,
                   what="the killed daemon's uv to end")
        assert envs(state) == {} and not (state / "envs" / half / MARKER).exists()
        server.release()
        restarted = run_daemon_once(str(bare_remote), state)
        assert restarted.returncode == 0, restarted.stderr
        [run] = of_flow(remote_records(bare_remote), "job") or pytest.fail(restarted.stderr)
        assert run["status"] == "succeeded" and result_of(bare_remote, run) == "2.0"
        [key] = envs(state)
        assert run["environment"]["key"] == key and (state / "envs" / key / MARKER).is_file()
        assert leftovers(state) == []  # the dead build's directory was removed, never used
        [record] = deploy_records(bare_remote)
        assert record["status"] == "deployed" and record["environments"][key]["packages"] == ["tinypkg==2.0"]
    finally:
        server.close()
    fsck(bare_remote)


@pytest.mark.timeout(45)
def test_garbage_collection_keeps_what_is_in_use_and_the_most_recent(tmp_path, bare_remote, wheels):
    names = [f"f{i}" for i in range(5)]
    manifest = "version: 1\nflows:\n" + "".join(
        f"  {n}:\n    command: tinypkg\n    python: {{requirements: {n}.txt}}\n" for n in names)
    files = {f"{n}.txt": f"tinypkg=={1 + i % 2}.0\n# {n}\n" for i, n in enumerate(names)}  # five different keys
    repo = manifest_project(tmp_path, str(bare_remote), manifest, files)
    deploy(repo)
    state = tmp_path / "state"
    once(bare_remote, state)
    [first] = deploy_records(bare_remote)
    key_of = {flows[0]: key for key, flows in ((k, e["flows"]) for k, e in first["environments"].items())}
    assert set(envs(state)) == set(key_of.values()) and len(key_of) == 5
    deploy(repo, "version: 1\nflows:\n  f4:\n    command: tinypkg\n    python: {requirements: f4.txt}\n"
                 "    run_on_deploy: true\n")
    once(bare_remote, state)
    # f0..f3 are unused now: the three used last are kept, the oldest (f0, built first) removed; f4 is in use
    assert set(envs(state)) == {key_of[n] for n in ("f1", "f2", "f3", "f4")}
    [run] = of_flow(remote_records(bare_remote), "f4")
    assert run["status"] == "succeeded" and log_of(bare_remote, run) == "tinypkg 1.0\n"
    store = EnvStore(state / "envs")
    # most recently used first: f4 (just run), f3, f1
    assert store.collect({key_of["f2"]}, keep=0) == [key_of["f4"], key_of["f3"], key_of["f1"]]
    assert set(envs(state)) == {key_of["f2"]}  # the one in use stays, whatever `keep` says
    assert store.collect({key_of["f2"]}, keep=0) == [] and store.get(key_of["f2"]) is not None
    fsck(bare_remote)


def version_manifest(version: str) -> str:
    return f'version: 1\nflows:\n  pinned:\n    entrypoint: flow.py:main\n    python: {{version: "{version}"}}\n' \
           "    run_on_deploy: true\n"


@pytest.mark.timeout(40)
def test_a_python_version_present_runs_and_one_absent_is_refused_naming_what_is_installed(
        tmp_path, bare_remote, wheels):
    flow = "import platform, sys\n\n\ndef main():\n    return [platform.python_version(), sys.prefix]\n"
    repo = manifest_project(tmp_path, str(bare_remote), version_manifest(PYTHON), {"flow.py": flow})
    deploy(repo)
    state = tmp_path / "state"
    once(bare_remote, state)
    [run] = of_flow(remote_records(bare_remote), "pinned")
    [key] = envs(state)
    version, prefix = result_of(bare_remote, run)
    assert version.startswith(PYTHON + ".") and Path(prefix) == state / "envs" / key
    assert run["environment"] == {"key": key, "python": version}
    deploy(repo, version_manifest("3.7"))
    once(bare_remote, state)
    [refused] = refusals(bare_remote)
    assert refused["error"].startswith("flows.pinned.python (interpreter only, Python 3.7): no Python 3.7 on this "
                                       "server, and uv may not fetch one (installed: "), refused["error"]
    assert platform.python_version() in refused["error"].split("(installed: ")[1].split(")")[0]
    assert len(of_flow(remote_records(bare_remote), "pinned")) == 1
    fsck(bare_remote)


@pytest.mark.timeout(40)
def test_system_and_no_python_key_run_in_the_daemons_interpreter(tmp_path, bare_remote, wheels):
    flow = "import sys\n\n\ndef main():\n    return sys.executable\n"
    manifest = "version: 1\nflows:\n  plain:\n    entrypoint: flow.py:main\n    run_on_deploy: true\n" \
               "  system:\n    entrypoint: flow.py:main\n    python: system\n    run_on_deploy: true\n"
    repo = manifest_project(tmp_path, str(bare_remote), manifest, {"flow.py": flow})
    deploy(repo)
    state = tmp_path / "state"
    once(bare_remote, state)
    records = remote_records(bare_remote)
    assert {r["flow"]: result_of(bare_remote, r) for r in records} == {"plain": sys.executable,
                                                                       "system": sys.executable}
    assert [r["environment"] for r in records] == [None, None]
    assert not (state / "envs").exists()
    [record] = deploy_records(bare_remote)
    assert "environments" not in record
    fsck(bare_remote)


@pytest.mark.timeout(30)
def test_a_python_file_missing_from_the_project_is_a_manifest_error(tmp_path, bare_remote):
    manifest = "version: 1\nflows:\n  job:\n    command: tinypkg\n    python: {requirements: reqs/missing.txt}\n"
    repo = manifest_project(tmp_path, str(bare_remote), manifest)
    expected = "Error: puppemon.yaml:5:13: flows.job.python: reqs/missing.txt is not in the project\n"
    validate = puppemon("validate", cwd=repo, check=False)
    assert (validate.returncode, validate.stderr) == (1, expected)
    push = puppemon("push", cwd=repo, check=False)
    assert (push.returncode, push.stderr) == (1, expected)
    assert git("--git-dir", str(bare_remote), "for-each-ref") == ""


def deploys(bare: Path) -> list[dict]:
    """The deploy records on the remote (none before its runs branch exists)."""
    return deploy_records(bare) if git("--git-dir", str(bare), "branch", "--list", "runs").strip() else []


@pytest.mark.timeout(45)
def test_the_loop_goes_on_while_a_deploy_builds_and_the_new_deploy_comes_in_when_built(
        tmp_path, bare_remote, wheels, monkeypatch):
    server = HeldWheels(wheels)
    monkeypatch.setenv("UV_FIND_LINKS", server.url)
    tick = "version: 1\nflows:\n  tick:\n    command: echo tick\n"
    try:
        repo = manifest_project(tmp_path, str(bare_remote), tick)
        deploy(repo)
        first = flows_tip(bare_remote)
        with DaemonProcess(str(bare_remote), tmp_path / "state") as daemon:
            wait_until(lambda: deploys(bare_remote), what="the first deploy", on_fail=lambda: daemon.log)
            deploy(repo, tick + "  job:\n    entrypoint: flow.py:main\n    python: {requirements: requirements.txt}\n",
                   {"flow.py": RETURNS_VERSION, "requirements.txt": "tinypkg==2.0\n"})
            wait_until(server.asked.is_set, what="uv asking the held wheel server", on_fail=lambda: daemon.log)
            # while uv waits, the daemon serves a request with the deploy it has
            puppemon("trigger", "tick", cwd=repo)
            [ticked] = wait_until(lambda: of_flow(remote_records(bare_remote), "tick"), timeout=20,
                                  what="the request served during the build", on_fail=lambda: daemon.log)
            assert ticked["status"] == "succeeded" and ticked["flows_commit"] == first
            assert not server.answer.is_set() and len(deploys(bare_remote)) == 1
            server.release()
            wait_until(lambda: len(deploys(bare_remote)) == 2, timeout=30, what="the new deploy",
                       on_fail=lambda: daemon.log)
            puppemon("trigger", "job", cwd=repo)
            [job] = wait_until(lambda: of_flow(remote_records(bare_remote), "job"), timeout=20,
                               what="a run of the new flow", on_fail=lambda: daemon.log)
            assert job["status"] == "succeeded" and result_of(bare_remote, job) == "2.0"
            assert daemon.stop() == 0
    finally:
        server.close()
    fsck(bare_remote)


@pytest.mark.timeout(40)
def test_puppemon_run_and_env_build_the_same_environment_here_as_the_daemon(tmp_path, bare_remote, wheels):
    repo = manifest_project(tmp_path, str(bare_remote), ONE_FLOW,
                            {"flow.py": RETURNS_VERSION, "requirements.txt": "tinypkg==2.0\n"})
    ran = puppemon("run", "job", cwd=repo)
    assert ran.stderr.splitlines()[-1] == 'result: "2.0"'
    shown = puppemon("env", "job", cwd=repo).stdout.splitlines()
    cache = Path(os.environ["XDG_CACHE_HOME"]) / "puppemon" / "envs"
    key = shown[1].split()[1].rstrip(",")
    assert shown == ["job: requirements requirements.txt", f"  environment {key}, Python {platform.python_version()}",
                     f"  {cache / key}", "  tinypkg==2.0"]
    before = (cache / key).stat().st_ino
    puppemon("env", "job", "--rebuild", cwd=repo)
    assert (cache / key).stat().st_ino != before  # built again, in place of the old one
    deploy(repo)
    once(bare_remote, tmp_path / "state")
    [record] = of_flow(remote_records(bare_remote), "job")
    assert record["environment"]["key"] == key  # what decides it is the same here and on the daemon
    assert puppemon("env", "job", "-C", str(repo)).stdout.splitlines()[1] == shown[1]


def test_validate_hints_at_dependency_files_no_flow_uses(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), "version: 1\nflows:\n  job:\n    command: 'true'\n",
                            {"requirements.txt": "requests\n", "pyproject.toml": "[project]\nname = 'x'\n"})
    out = puppemon("validate", cwd=repo).stdout.splitlines()
    assert out[-2:] == [
        "hint: requirements.txt is not used by any flow; flows run with the daemon's Python unless they say "
        "`python: {requirements: requirements.txt}`",
        "hint: pyproject.toml is not used by any flow; with a uv.lock, `python: {project: .}` installs it for a flow"]
    system = puppemon("env", "job", cwd=repo).stdout
    assert system == f"job: python: system (runs with {sys.executable}, nothing to build)\n"


@pytest.mark.timeout(40)
def test_a_build_over_the_time_limit_is_stopped_and_refuses_the_deploy(tmp_path, bare_remote, wheels, monkeypatch):
    server = HeldWheels(wheels)  # never answers while the daemon waits
    monkeypatch.setenv("UV_FIND_LINKS", server.url)
    try:
        repo = manifest_project(tmp_path, str(bare_remote), ONE_FLOW,
                                {"flow.py": RETURNS_VERSION, "requirements.txt": "tinypkg==2.0\n"})
        deploy(repo)
        proc = run_daemon_once(str(bare_remote), tmp_path / "state", "--build-timeout", "2s")
    finally:
        server.close()
    assert proc.returncode == 0, proc.stderr
    [refused] = refusals(bare_remote)
    assert refused["error"] == ("flows.job.python (requirements requirements.txt): building the environment "
                                "(requirements requirements.txt) took longer than 2.0s: stopped")
    assert leftovers(tmp_path / "state") == [] and envs(tmp_path / "state") == {}
    fsck(bare_remote)


def test_a_lock_made_against_another_index_than_the_servers_is_refused_saying_so(monkeypatch):
    from puppemon.run.environments import EnvError, check_lock_index

    lock = b'[[package]]\nname = "tinypkg"\nsource = { registry = "https://pypi.org/simple" }\n'
    monkeypatch.setenv("UV_INDEX_URL", "https://mirror.example/simple/")
    with pytest.raises(EnvError) as info:
        check_lock_index({"uv.lock": lock})
    assert info.value.message == (
        "uv.lock was made against https://pypi.org/simple, but this server's index is "
        "https://mirror.example/simple: a frozen install downloads from the URLs in the lock, so lock it again "
        "against that index (uv lock --default-index https://mirror.example/simple) and push")
    monkeypatch.setenv("UV_INDEX_URL", "https://pypi.org/simple")
    check_lock_index({"uv.lock": lock})  # the same index: nothing to say
    monkeypatch.delenv("UV_INDEX_URL")
    check_lock_index({"uv.lock": lock})  # no index of the server's: uv's defaults
