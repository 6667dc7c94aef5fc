"""Flows with `container:` run in a real podman container, through a real daemon, on a local image
(busybox-static imported from a tarball: no registry). The engine flags this machine needs are the
server's config (container_args), as a user's would be."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import git, proc_files, puppemon, wait_until
from tests.containers import IMAGE, containers_of, daemon_config, make_image, python, rootfs_tar
from tests.daemon_helpers import (DaemonProcess, deploy, deploy_records, frozen_count, fsck, log_of,
                                  manifest_project, of_flow, remote_records, result_of, run_daemon_once)

SECRET = "s3cr3t-c0ntainer-9f1e"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def image():
    make_image()
    return IMAGE


@pytest.fixture
def shared():
    """A host directory the flows mount (pytest's tmp dirs are fine for root containers; this one is short)."""
    path = Path(tempfile.mkdtemp(prefix="puppemon-ct-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def pushed(tmp_path: Path, bare: Path, manifest: str, files: dict | None = None) -> Path:
    """The project of `manifest`, pushed to `bare`'s flows branch."""
    repo = manifest_project(tmp_path, str(bare), manifest, files)
    puppemon("push", cwd=repo)
    return repo


def once(bare: Path, state: Path, config: Path) -> subprocess.CompletedProcess:
    """One `daemon --once` with `config`; it must exit 0."""
    proc = run_daemon_once(str(bare), state, "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    return proc


def secrets_file(tmp_path: Path, flows: str) -> Path:
    path = tmp_path / "secrets.yaml"
    path.write_text(f"tok:\n  value: {SECRET}\n  flows: [{flows}]\n")
    path.chmod(0o600)
    return path


def test_command_and_entrypoint_flows_run_in_the_container(tmp_path, bare_remote, image, shared):
    files = {"job.py": "import os, puppemon\n\ndef main(n=1, who='x'):\n"
             "    (puppemon.output_dir() / 'hello.txt').write_text(f'hello {who}')\n"
             "    print('cwd', os.getcwd(), 'secret', puppemon.secret('tok'))\n"
             "    return {'n': n * 2, 'who': who, 'in_container': os.path.exists('/run/.containerenv')}\n"}
    manifest = f"""\
version: 1
defaults:
  container: {{image: {image}, network: none, python: {python()}}}
flows:
  py:
    entrypoint: job.py:main
    params: {{n: 21, who: box}}
    secrets: [tok]
    run_on_deploy: true
  sh:
    command: 'echo "uid=$(id -u) cwd=$PWD out=$PUPPEMON_OUTPUT_DIR"; echo "$TOK"; ls /data; echo hi > "$PUPPEMON_OUTPUT_DIR/o.txt"; exit 3'
    secrets: [tok]
    run_on_deploy: true
    container: {{image: {image}, network: none, mounts: ["{shared}:/data:ro"], memory: 64m, cpus: 1}}
"""
    (shared / "inbox.csv").write_text("a,b\n")
    pushed(tmp_path, bare_remote, manifest, files)
    once(bare_remote, tmp_path / "state", daemon_config(tmp_path / "daemon.yaml", mount_roots=[str(shared)],
                                                        extra=f"secrets: {secrets_file(tmp_path, 'py, sh')}\n"))
    records = remote_records(bare_remote)
    py, sh = of_flow(records, "py")[0], of_flow(records, "sh")[0]
    assert py["status"] == "succeeded", (py, log_of(bare_remote, py))
    assert result_of(bare_remote, py) == {"n": 42, "who": "box", "in_container": True}
    assert log_of(bare_remote, py) == "cwd /puppemon/work secret ***\n"
    assert [o["path"] for o in py["outputs"]] == ["hello.txt"]
    assert (sh["status"], sh["exit_code"], sh["error"]) == ("failed", 3, "exited with code 3")
    assert log_of(bare_remote, sh) == "uid=0 cwd=/puppemon/work out=/puppemon/outputs\n***\ninbox.csv\n"
    assert [o["path"] for o in sh["outputs"]] == ["o.txt"]
    deployed = [r for r in deploy_records(bare_remote) if r["status"] == "deployed"][0]
    assert deployed["images"] == {"py": image, "sh": image}
    # the secret is in no git object, and no container is left behind
    objects = subprocess.run(["git", "--git-dir", str(bare_remote), "cat-file", "--batch-all-objects", "--batch"],
                             capture_output=True).stdout
    assert SECRET.encode() not in objects
    assert containers_of(py["id"]) == [] and containers_of(sh["id"]) == []
    fsck(bare_remote)


def test_the_secret_is_in_no_process_listing_while_the_container_runs(tmp_path, bare_remote, image, shared):
    started, done = shared / "started", shared / "done"
    (shared / "expected").write_text(SECRET)
    manifest = f"""\
version: 1
flows:
  holder:
    command: 'touch /data/started; while [ ! -e /data/done ]; do sleep 0.05; done; [ "$TOK" = "$(cat /data/expected)" ] && echo same'
    secrets: [tok]
    run_on_deploy: true
    timeout: 60s
    container: {{image: {image}, network: none, mounts: ["{shared}:/data:rw"]}}
"""
    repo = manifest_project(tmp_path, str(bare_remote), manifest)
    puppemon("push", cwd=repo)
    cfg = daemon_config(tmp_path / "daemon.yaml", mount_roots=[str(shared)],
                        extra=f"secrets: {secrets_file(tmp_path, 'holder')}\n")
    with DaemonProcess(str(bare_remote), tmp_path / "state", "--config", str(cfg)) as daemon:
        wait_until(started.exists, 60, "the container to start", lambda: daemon.log)
        listing = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
        cmdlines = b"".join(proc_files("cmdline"))
        assert SECRET not in listing and SECRET.encode() not in cmdlines
        assert any("puppemon-" in line and " run " in line for line in listing.splitlines())
        done.touch()
        wait_until(lambda: of_flow(remote_records(bare_remote), "holder"), 60, "the record", lambda: daemon.log)
        assert daemon.stop() == 0
    [record] = of_flow(remote_records(bare_remote), "holder")
    assert record["status"] == "succeeded" and log_of(bare_remote, record) == "same\n"


def deployed(bare: Path) -> list[dict]:
    return [r for r in deploy_records(bare) if r["status"] == "deployed"]


def test_timeouts_stop_term_trapping_and_term_ignoring_flows(tmp_path, bare_remote, image):
    manifest = f"""\
version: 1
defaults:
  container: {{image: {image}, network: none}}
  timeout: 1s
flows:
  traps:
    command: 'trap "echo got TERM; exit 0" TERM; echo up; while true; do sleep 0.1; done'
    run_on_deploy: true
  ignores:
    command: 'trap "" TERM; echo up; while true; do sleep 0.1; done'
    run_on_deploy: true
"""
    pushed(tmp_path, bare_remote, manifest)
    once(bare_remote, tmp_path / "state", daemon_config(tmp_path / "daemon.yaml"))
    records = remote_records(bare_remote)
    traps, ignores = of_flow(records, "traps")[0], of_flow(records, "ignores")[0]
    assert (traps["status"], traps["error"]) == ("timed_out", "timed out after 1.0s")
    assert log_of(bare_remote, traps) == "up\ngot TERM\n"
    # TERM ignored: the engine kills it after the kill grace (5s)
    assert ignores["status"] == "timed_out" and 5 <= ignores["duration"] < 30, ignores
    assert containers_of(traps["id"]) == [] and containers_of(ignores["id"]) == []


def test_a_flow_over_its_memory_is_killed_with_a_clear_error(tmp_path, bare_remote, image):
    manifest = f"""\
version: 1
flows:
  hog:
    command: 'x=$(head -c 200000000 /dev/zero | tr "\\\\0" a); echo never'
    run_on_deploy: true
    container: {{image: {image}, network: none, memory: 32m}}
"""
    pushed(tmp_path, bare_remote, manifest)
    once(bare_remote, tmp_path / "state", daemon_config(tmp_path / "daemon.yaml"))
    [hog] = of_flow(remote_records(bare_remote), "hog")
    assert (hog["status"], hog["exit_code"]) == ("failed", 137), hog
    assert "out of memory" in hog["error"] and "its container.memory of 32 MiB" in hog["error"], hog


def test_cancel_and_pause_resume_a_running_container(tmp_path, bare_remote, image, shared):
    manifest = f"""\
version: 1
flows:
  long:
    command: 'i=0; while true; do i=$((i+1)); echo $i > /data/count; sleep 0.1; done'
    container: {{image: {image}, network: none, mounts: ["{shared}:/data:rw"]}}
"""
    repo = manifest_project(tmp_path, str(bare_remote), manifest)
    puppemon("push", cwd=repo)
    cfg = daemon_config(tmp_path / "daemon.yaml", mount_roots=[str(shared)])
    count = shared / "count"
    with DaemonProcess(str(bare_remote), tmp_path / "state", "--config", str(cfg)) as daemon:
        wait_until(lambda: deployed(bare_remote), 60, "the deploy", lambda: daemon.log)
        run_id = puppemon("trigger", "long", cwd=repo).stdout.strip().split()[-1]
        wait_until(count.exists, 60, "the container to count", lambda: daemon.log)
        puppemon("pause", "--run", run_id, cwd=repo)
        wait_until(lambda: any("Paused" in c for c in containers_of(run_id)), 30, "the container paused",
                   lambda: daemon.log)
        frozen = frozen_count(count)   # frozen: it does not count on
        puppemon("resume", "--run", run_id, cwd=repo)
        wait_until(lambda: count.read_text() != frozen, 30, "the count to go on", lambda: daemon.log)
        puppemon("cancel", run_id, cwd=repo)
        wait_until(lambda: of_flow(remote_records(bare_remote), "long"), 60, "the record", lambda: daemon.log)
        assert daemon.stop() == 0
    [record] = of_flow(remote_records(bare_remote), "long")
    assert record["status"] == "cancelled", record
    log = log_of(bare_remote, record)
    assert "puppemon: paused" in log and "puppemon: resumed after" in log
    assert containers_of(run_id) == []


def test_kill_9_of_the_daemon_records_crashed_and_removes_the_container_at_restart(tmp_path, bare_remote, image,
                                                                                   shared):
    manifest = f"""\
version: 1
flows:
  long:
    command: 'touch /data/up; sleep 300'
    run_on_deploy: true
    container: {{image: {image}, network: none, mounts: ["{shared}:/data:rw"]}}
"""
    repo = manifest_project(tmp_path, str(bare_remote), manifest)
    puppemon("push", cwd=repo)
    cfg = daemon_config(tmp_path / "daemon.yaml", mount_roots=[str(shared)])
    state = tmp_path / "state"
    with DaemonProcess(str(bare_remote), state, "--config", str(cfg)) as daemon:
        wait_until((shared / "up").exists, 60, "the container to start", lambda: daemon.log)
        daemon.kill9()
    journal = [json.loads(p.read_text()) for p in (state / "journal").glob("*.json")]
    [entry] = [e for e in journal if e.get("flow") == "long"]
    run_id = entry["run_id"]
    assert [c.split()[0] for c in containers_of(run_id)] == [f"puppemon-{run_id}-1"]   # left running
    (repo / "puppemon.yaml").write_text(manifest.replace("    run_on_deploy: true\n", ""))
    puppemon("push", cwd=repo)
    proc = run_daemon_once(str(bare_remote), state, "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    [record] = of_flow(remote_records(bare_remote), "long")
    # what is left of it is stopped: its processes (they carry the run's id) and its container, by its label
    assert record["status"] == "crashed", record
    assert record["error"].startswith("the daemon stopped while this run was in flight; "), record
    assert containers_of(run_id) == []


def test_a_build_from_a_local_base_is_cached_and_a_failing_build_refuses_the_deploy(tmp_path, bare_remote, image):
    containerfile = f"FROM {image}\nCOPY greeting.txt /greeting.txt\nENV GREETING_FILE=/greeting.txt\n"
    files = {"box/Containerfile": containerfile, "box/greeting.txt": "built here\n"}
    manifest = """\
version: 1
flows:
  built:
    command: 'cat "$GREETING_FILE"'
    run_on_deploy: true
    container: {build: box/Containerfile, network: none}
"""
    repo = pushed(tmp_path, bare_remote, manifest, files)
    cfg, state = daemon_config(tmp_path / "daemon.yaml"), tmp_path / "state"
    once(bare_remote, state, cfg)
    [first] = of_flow(remote_records(bare_remote), "built")
    assert first["status"] == "succeeded" and log_of(bare_remote, first) == "built here\n"
    tag = [r for r in deploy_records(bare_remote) if r["status"] == "deployed"][0]["images"]["built"]
    assert tag.startswith("localhost/puppemon-build:")
    # a redeploy with the same context reuses the image: nothing is built again
    def created() -> str:
        return subprocess.run(["podman", "image", "inspect", "--format", "{{.Id}} {{.Created}}", tag],
                              capture_output=True, text=True, check=True).stdout
    before = created()
    deploy(repo, files={"README": "another commit\n"})
    proc = once(bare_remote, state, cfg)
    assert "runs in image " + tag in proc.stderr and created() == before
    # a build that fails refuses the deploy; the last good one keeps running
    deploy(repo, files={"box/Containerfile": f"FROM {image}\nCOPY missing.txt /x\n"})
    once(bare_remote, state, cfg)
    refused = [r for r in deploy_records(bare_remote) if r["status"] == "refused"]
    assert refused and refused[-1]["error"].startswith("flows.built.container.build: box/Containerfile could not "
                                                      "be built: "), refused
    assert created() == before   # the image of the last good deploy is kept
    subprocess.run(["podman", "rmi", "-f", tag], capture_output=True)


@pytest.mark.parametrize("container, config, error", [
    ("{image: localhost/puppemon-absent:1, pull: never}", "",
     "flows.job.container.image: localhost/puppemon-absent:1 is not on this server and pull: never"),
    ("{image: IMAGE, mounts: ['/etc:/host-etc']}", "",
     "flows.job.container.mounts: mounts /etc, which is outside the host paths this server lets flows mount"),
    ("{image: IMAGE}", "container_engine: /nonexistent/podman\n",
     "flows.job.container: container engine '/nonexistent/podman' is not installed on this server"),
])
def test_bad_container_input_refuses_the_deploy_and_keeps_the_last_good(tmp_path, bare_remote, image, container,
                                                                        config, error):
    good = f"version: 1\nflows:\n  job:\n    command: 'echo good'\n    container: {{image: {image}, network: none}}\n"
    repo, state = pushed(tmp_path, bare_remote, good), tmp_path / "state"
    once(bare_remote, state, daemon_config(tmp_path / "daemon.yaml"))
    deploy(repo, good.replace(f"{{image: {image}, network: none}}", container.replace("IMAGE", image)))
    proc = once(bare_remote, state, daemon_config(tmp_path / "daemon.yaml", extra=config))
    refused = [r for r in deploy_records(bare_remote) if r["status"] == "refused"]
    assert len(refused) == 1 and refused[0]["error"].startswith(error), refused
    assert "going on with" in proc.stderr   # the last good deploy


def test_bad_container_keys_are_manifest_errors_with_their_place(tmp_path):
    from tests.conftest import make_repo

    repo = make_repo(tmp_path / "p", {"puppemon.yaml": "version: 1\nflows:\n  job:\n    command: x\n"
                                                         "    container: {image: a, memory: lots}\n"})
    proc = puppemon("validate", cwd=repo, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "Error: puppemon.yaml:5:35: flows.job.container.memory: 'lots' is not an amount of memory "
        "(use a number with b, k, m or g: 512m, 2g)")


def test_the_second_sigterm_removes_running_containers_at_once(tmp_path, bare_remote, image, shared):
    manifest = f"""\
version: 1
flows:
  stubborn:
    command: 'trap "" TERM; touch /data/up; while true; do sleep 0.1; done'
    run_on_deploy: true
    container: {{image: {image}, network: none, mounts: ["{shared}:/data:rw"]}}
"""
    repo = manifest_project(tmp_path, str(bare_remote), manifest)
    puppemon("push", cwd=repo)
    cfg = daemon_config(tmp_path / "daemon.yaml", mount_roots=[str(shared)])
    with DaemonProcess(str(bare_remote), tmp_path / "state", "--config", str(cfg), "--grace", "60") as daemon:
        wait_until((shared / "up").exists, 60, "the container to start", lambda: daemon.log)
        daemon.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: "again kills" in daemon.log, 20, "the first stop", lambda: daemon.log)
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.stop(timeout=30) == 0, daemon.log
    [record] = of_flow(remote_records(bare_remote), "stubborn")
    assert record["status"] == "cancelled", record
    assert containers_of(record["id"]) == []


ROOTLESS_USER = "puppemon-rootless"
DEPENDENCIES = ("pygit2", "pygit2.libs", "apscheduler", "tzlocal", "yaml", "_yaml", "click", "rich", "markdown_it",
                "mdurl", "pygments", "watchdog", "cffi", "six.py")


def _as_user(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    home = f"/home/{ROOTLESS_USER}"
    return subprocess.run(["runuser", "-u", ROOTLESS_USER, "--", "env", "-i", f"HOME={home}", "PATH=/usr/bin:/bin",
                           f"USER={ROOTLESS_USER}", *argv], cwd="/", capture_output=True, text=True, **kwargs)


def _rootless_user() -> None:
    if os.geteuid() != 0:
        pytest.skip("rootless podman is tested as a throwaway user, which only root can create")
    if subprocess.run(["id", ROOTLESS_USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", ROOTLESS_USER], check=True, capture_output=True)
    for table in ("/etc/subuid", "/etc/subgid"):
        if not any(line.startswith(ROOTLESS_USER + ":") for line in Path(table).read_text().splitlines()):
            flag = "--add-subuids" if table.endswith("uid") else "--add-subgids"
            subprocess.run(["usermod", flag, "300000-365535", ROOTLESS_USER], check=True, capture_output=True)


def _runtime_for_user(root: Path) -> str:
    """This puppemon and its dependencies where the user can read them, and a Python 3 of the same minor version
    it can run; the interpreter's path."""
    import importlib.util
    import sys
    import sysconfig

    import puppemon as package

    site = Path(sysconfig.get_paths()["purelib"])
    shutil.copytree(Path(package.__file__).parent, root / "puppemon", ignore=shutil.ignore_patterns("__pycache__"))
    for name in DEPENDENCIES:
        spec = importlib.util.find_spec(name.removesuffix(".py")) if not name.endswith(".libs") else None
        source = site / name if spec is None else Path(spec.origin).parent if spec.submodule_search_locations \
            else Path(spec.origin)
        if source.is_dir():
            shutil.copytree(source, root / source.name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy2(source, root / source.name)
    for extra in site.glob("_cffi_backend*.so"):
        shutil.copy2(extra, root / extra.name)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (os.path.realpath(sys._base_executable), f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        if _as_user("test", "-x", candidate).returncode == 0:
            probe = _as_user(f"PYTHONPATH={root}", candidate, "-c", "import pygit2, apscheduler, yaml, puppemon.cli")
            if probe.returncode == 0:
                return candidate
    pytest.skip(f"no {version} that user {ROOTLESS_USER} can run puppemon's dependencies with")


def test_rootless_podman_when_the_daemon_runs_as_a_normal_user(tmp_path, bare_remote, image):
    _rootless_user()
    make_image(user_cmd=["runuser", "-u", ROOTLESS_USER, "--", "env", "-i", f"HOME=/home/{ROOTLESS_USER}",
                         "PATH=/usr/bin:/bin"])
    shared = Path(tempfile.mkdtemp(prefix="puppemon-rootless-"))
    try:
        shared.chmod(0o755)
        interpreter = _runtime_for_user(shared / "lib")
        manifest = f"""\
version: 1
flows:
  boxed:
    command: 'echo "inside as $(id -u) in $PWD"; echo made > "$PUPPEMON_OUTPUT_DIR/made.txt"'
    run_on_deploy: true
    container: {{image: {image}, network: none}}
"""
        repo = manifest_project(tmp_path, str(bare_remote), manifest)
        puppemon("push", cwd=repo)
        remote = shared / "remote.git"
        git("clone", "-q", "--bare", "--no-local", str(bare_remote), str(remote))
        cfg = daemon_config(shared / "daemon.yaml", with_python=False)
        subprocess.run(["chown", "-R", f"{ROOTLESS_USER}:", str(shared)], check=True)
        proc = _as_user(f"PYTHONPATH={shared / 'lib'}", interpreter, "-m", "puppemon", "daemon", "--once",
                        "--remote", str(remote), "--state", str(shared / "state"), "--name", "rootless",
                        "--config", str(cfg), timeout=180)
        assert proc.returncode == 0, proc.stderr
        [record] = of_flow(remote_records(remote), "boxed")
        assert record["status"] == "succeeded", (record["error"], log_of(remote, record))
        assert log_of(remote, record) == "inside as 0 in /puppemon/work\n"   # root in its user namespace only
        assert [o["path"] for o in record["outputs"]] == ["made.txt"]
        assert _as_user("podman", "image", "exists", image).returncode == 0   # the user's own image storage
    finally:
        subprocess.run(["rm", "-rf", str(shared)])


@pytest.fixture
def docker(tmp_path_factory):
    """A Docker daemon of the test's own (started and stopped by pid), and the environment that uses it."""
    from tests.containers import start_dockerd, stop_dockerd

    root = Path(tempfile.mkdtemp(prefix="puppemon-dockerd-"))
    try:
        proc, env = start_dockerd(root)
        try:
            make_image("docker", env=env)
            yield env
        finally:
            stop_dockerd(proc)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_docker_runs_command_entrypoint_and_built_flows_the_same_way(tmp_path, bare_remote, docker):
    """The same backend on docker: exit code, log, outputs, an entrypoint's result, a build from the local image."""
    files = {"job.py": "import os\n\ndef main(n=1):\n    return {'n': n + 1, 'cwd': os.getcwd()}\n",
             "box/Containerfile": f"FROM {IMAGE}\nCOPY note.txt /note.txt\n", "box/note.txt": "built by docker\n"}
    manifest = f"""\
version: 1
flows:
  sh:
    command: 'echo "in $PWD"; echo hi > "$PUPPEMON_OUTPUT_DIR/o.txt"; exit 3'
    run_on_deploy: true
    container: {{image: {IMAGE}, network: none}}
  py:
    entrypoint: job.py:main
    params: {{n: 41}}
    run_on_deploy: true
    container: {{image: {IMAGE}, network: none, python: {python()}}}
  built:
    command: cat /note.txt
    run_on_deploy: true
    container: {{build: box/Containerfile, network: none}}
"""
    repo = manifest_project(tmp_path, str(bare_remote), manifest, files)
    puppemon("push", cwd=repo)
    cfg = daemon_config(tmp_path / "daemon.yaml", extra="container_engine: docker\n", build_args=[])
    proc = puppemon("daemon", "--remote", str(bare_remote), "--state", str(tmp_path / "state"), "--name", "d1",
                    "--once", "--config", str(cfg), check=False, timeout=180, env=docker)
    assert proc.returncode == 0, proc.stderr
    records = remote_records(bare_remote)
    assert sorted(r["flow"] for r in records) == ["built", "py", "sh"], proc.stderr[-3000:]
    [sh], [py], [built] = (of_flow(records, name) for name in ("sh", "py", "built"))
    assert (sh["status"], sh["exit_code"]) == ("failed", 3) and log_of(bare_remote, sh) == "in /puppemon/work\n"
    assert [o["path"] for o in sh["outputs"]] == ["o.txt"]
    assert py["status"] == "succeeded", log_of(bare_remote, py)
    assert result_of(bare_remote, py) == {"n": 42, "cwd": "/puppemon/work"}
    assert built["status"] == "succeeded" and log_of(bare_remote, built) == "built by docker\n"
    assert all(containers_of(r["id"], "docker", docker) == [] for r in (sh, py, built))


def test_puppemon_run_runs_a_container_flow_in_its_image_here(tmp_path, image):
    """`puppemon run` of a container flow runs in the image, in the project itself, with this machine's engine
    settings from its daemon config."""
    from tests.conftest import make_repo

    manifest = f"""\
version: 1
flows:
  boxed:
    command: 'echo "in $PWD as $(id -u)"; ls; echo made > made-here.txt'
    container: {{image: {image}, network: none}}
"""
    repo = make_repo(tmp_path / "p", {"puppemon.yaml": manifest, "data.csv": "a\n"})
    config = tmp_path / "xdg" / "puppemon"
    config.mkdir(parents=True)
    daemon_config(config / "daemon.yaml", with_python=False)
    proc = puppemon("run", "boxed", cwd=repo, env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert proc.stdout == "in /puppemon/work as 0\ndata.csv\npuppemon.yaml\n", proc.stderr
    assert (repo / "made-here.txt").read_text() == "made\n"
    missing = manifest.replace(image, "localhost/puppemon-absent:1, pull: never")
    (repo / "puppemon.yaml").write_text(missing)
    proc = puppemon("run", "boxed", cwd=repo, env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")}, check=False)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1] == (
        "Error: container.image: localhost/puppemon-absent:1 is not on this server and pull: never (load it with "
        "`podman load` or `podman import`, or set pull: missing)")


def test_a_built_image_that_cannot_be_removed_yet_is_removed_by_a_later_collect(tmp_path, image):
    """`rmi` refuses an image a container still uses: its marker stays, and the next collect removes it."""
    from puppemon.run.engine import EngineConfig
    from puppemon.run.images import BUILT, ImageStore

    store = ImageStore(EngineConfig(engine="podman"), tmp_path / "images")
    tag = f"{BUILT}:test{os.getpid()}"
    marker = tmp_path / "images" / tag.rsplit(":", 1)[1]
    subprocess.run(["podman", "import", "-", tag], input=rootfs_tar(), capture_output=True, check=True)  # its own image
    store._note(tag)
    holder = subprocess.run(["podman", "create", "--name", f"puppemon-hold-{os.getpid()}", tag, "true"],
                            capture_output=True, text=True, check=True).stdout.strip()
    try:
        assert store.collect(set(), keep=0) == []           # in use: refused, and still noted
        assert marker.exists() and subprocess.run(["podman", "image", "exists", tag]).returncode == 0
        subprocess.run(["podman", "rm", "-f", holder], capture_output=True, check=True)
        assert store.collect(set(), keep=0) == [tag]
        assert not marker.exists() and subprocess.run(["podman", "image", "exists", tag]).returncode == 1
    finally:
        subprocess.run(["podman", "rm", "-f", holder], capture_output=True)
        subprocess.run(["podman", "rmi", "-f", tag], capture_output=True)


def test_a_mount_whose_symlink_now_points_outside_the_allowed_roots_is_refused_at_the_run(tmp_path, bare_remote,
                                                                                         image, shared):
    """The mount was checked at deploy through a symlink; pointed elsewhere since, the run refuses it."""
    (shared / "ok").mkdir()
    (shared / "ok" / "here.txt").write_text("allowed\n")
    outside = Path(tempfile.mkdtemp(prefix="puppemon-out-"))
    (outside / "here.txt").write_text("not for flows\n")
    link = shared / "link"
    link.symlink_to(shared / "ok")
    manifest = f"""\
version: 1
flows:
  peek:
    command: cat /data/here.txt
    container: {{image: {image}, network: none, mounts: ["{link}:/data:ro"]}}
"""
    repo = manifest_project(tmp_path, str(bare_remote), manifest)
    puppemon("push", cwd=repo)
    cfg = daemon_config(tmp_path / "daemon.yaml", mount_roots=[str(shared)])
    try:
        with DaemonProcess(str(bare_remote), tmp_path / "state", "--config", str(cfg)) as daemon:
            wait_until(lambda: deployed(bare_remote), 60, "the deploy", lambda: daemon.log)
            puppemon("trigger", "peek", "--wait", "--timeout", "60", cwd=repo)
            link.unlink()
            link.symlink_to(outside)
            puppemon("trigger", "peek", "--wait", "--timeout", "60", cwd=repo, check=False)
            assert daemon.stop() == 0
    finally:
        shutil.rmtree(outside, ignore_errors=True)
    first, second = sorted(of_flow(remote_records(bare_remote), "peek"), key=lambda r: r["id"])
    assert first["status"] == "succeeded" and log_of(bare_remote, first) == "allowed\n", first
    assert second["status"] == "failed", second
    assert second["error"].startswith(f"container.mounts: mounts {link}, which is outside the host paths"), second
    assert "not for flows" not in log_of(bare_remote, second)
