"""Flows with `slurm:` run as jobs of a real single-node Slurm cluster (munged, slurmctld, slurmd on
127.0.0.1, started by the tests), through a real daemon: exit codes, params, outputs and results,
timeouts, cancel, pause, live logs, and a daemon killed with -9 while its jobs run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import proc_files, puppemon, wait_until
from tests.daemon_helpers import (DaemonProcess, deploy_records, frozen_count, fsck, log_of, manifest_project,
                                  of_flow, remote_records, result_of)
from tests.slurm import MIN_JOB_AGE, start_cluster, stop_cluster

SECRET = "s3cr3t-slurm-4b7c"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    started = start_cluster()
    yield started
    stop_cluster(started)


@pytest.fixture
def shared(tmp_path):
    path = tmp_path / "shared"
    path.mkdir()
    return path


def config(tmp_path: Path, shared: Path | None, extra: str = "") -> Path:
    path = tmp_path / "daemon.yaml"
    path.write_text((f"slurm_shared_dir: {shared}\n" if shared else "") + extra)
    return path


def secrets_file(tmp_path: Path, flows: str) -> str:
    path = tmp_path / "secrets.yaml"
    path.write_text(f"tok:\n  value: {SECRET}\n  flows: [{flows}]\n")
    path.chmod(0o600)
    return f"secrets: {path}\n"


def daemon(tmp_path: Path, bare: Path, cluster, cfg: Path, name: str = "d1") -> DaemonProcess:
    return DaemonProcess(str(bare), tmp_path / "state", "--config", str(cfg), name=name, env=cluster.env)


def records_of(bare: Path, flow: str, count: int = 1):
    return lambda: (found := of_flow(remote_records(bare), flow)) and len(found) >= count and found


def job_of(log: str) -> str:
    return log.split("puppemon: submitted as Slurm job ", 1)[1].split()[0]


def test_succeeded_and_failed_jobs_with_exit_codes_params_outputs_results_and_the_secret_kept_out(
        tmp_path, bare_remote, cluster, shared):
    files = {"job.py": "import os, puppemon\n\ndef main(n=1, who='x'):\n"
             "    (puppemon.output_dir() / 'hello.txt').write_text(f'hello {who}')\n"
             "    print('job', os.environ['SLURM_JOB_ID'], 'secret', puppemon.secret('tok'))\n"
             "    return {'n': n * 2, 'who': who, 'cwd': os.getcwd()}\n"}
    manifest = """\
version: 1
defaults:
  slurm: {}
flows:
  py:
    entrypoint: job.py:main
    params: {n: 21, who: cluster}
    secrets: [tok]
    run_on_deploy: true
  sh:
    command: 'echo "partition=$SLURM_JOB_PARTITION cpus=$SLURM_CPUS_PER_TASK mem=$SLURM_MEM_PER_NODE tok=$TOK"; echo hi > "$PUPPEMON_OUTPUT_DIR/o.txt"; exit 3'
    secrets: [tok]
    run_on_deploy: true
    slurm: {partition: big, cpus: 2, mem: 100M, time: 5m}
"""
    repo = manifest_project(tmp_path, str(bare_remote), manifest, files)
    puppemon("push", cwd=repo)
    cfg = config(tmp_path, shared, secrets_file(tmp_path, "py, sh"))
    with daemon(tmp_path, bare_remote, cluster, cfg) as d:
        wait_until(lambda: records_of(bare_remote, "py")() and records_of(bare_remote, "sh")(), 60, "both records",
                   lambda: d.log + cluster.logs())
        assert d.stop() == 0
    records = remote_records(bare_remote)
    py, sh = of_flow(records, "py")[0], of_flow(records, "sh")[0]
    assert py["status"] == "succeeded", (py, log_of(bare_remote, py))
    result = result_of(bare_remote, py)
    assert result["n"] == 42 and result["who"] == "cluster" and result["cwd"].startswith(str(shared / "runs"))
    py_log = log_of(bare_remote, py)
    job = job_of(py_log)
    assert f"job {job} secret ***\n" in py_log
    assert [o["path"] for o in py["outputs"]] == ["hello.txt"]
    assert (sh["status"], sh["exit_code"], sh["error"]) == ("failed", 3, "exited with code 3")
    assert "partition=big cpus=2 mem=100 tok=***\n" in log_of(bare_remote, sh)   # what the job was given
    assert [o["path"] for o in sh["outputs"]] == ["o.txt"]
    objects = subprocess.run(["git", "--git-dir", str(bare_remote), "cat-file", "--batch-all-objects", "--batch"],
                             capture_output=True).stdout
    assert SECRET.encode() not in objects
    assert list((shared / "runs").iterdir()) == []   # the runs' areas are gone once recorded
    fsck(bare_remote)


def test_a_python_environment_is_built_on_the_shared_directory_and_the_job_runs_in_it(
        tmp_path, bare_remote, cluster, shared, monkeypatch):
    from tests.test_environments import make_wheel

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "tinypkg", "2.0")
    for key, value in {"UV_NO_INDEX": "1", "UV_FIND_LINKS": str(wheels), "UV_PYTHON_DOWNLOADS": "never",
                       "UV_CACHE_DIR": str(tmp_path / "uv-cache"), "UV_NO_CONFIG": "1"}.items():
        monkeypatch.setenv(key, value)
    files = {"flow.py": "import sys, tinypkg\n\ndef main():\n    return [tinypkg.VERSION, sys.prefix]\n",
             "requirements.txt": "tinypkg==2.0\n"}
    manifest = ("version: 1\nflows:\n  job:\n    entrypoint: flow.py:main\n"
                "    python: {requirements: requirements.txt}\n    slurm: {}\n    run_on_deploy: true\n")
    repo = manifest_project(tmp_path, str(bare_remote), manifest, files)
    puppemon("push", cwd=repo)
    with DaemonProcess(str(bare_remote), tmp_path / "state", "--config", str(config(tmp_path, shared)),
                       env={**cluster.env, **{k: v for k, v in os.environ.items() if k.startswith("UV_")}}) as d:
        wait_until(records_of(bare_remote, "job"), 90, "the record", lambda: d.log + cluster.logs())
        assert d.stop() == 0
    [record] = of_flow(remote_records(bare_remote), "job")
    assert record["status"] == "succeeded", (record, log_of(bare_remote, record))
    version, prefix = result_of(bare_remote, record)
    assert version == "2.0" and prefix.startswith(str(shared / "envs")) and record["environment"]["key"] in prefix
    assert not (tmp_path / "state" / "envs").exists()


def test_the_secret_is_on_no_command_line_while_the_job_runs(tmp_path, bare_remote, cluster, shared):
    marks = tmp_path / "marks"
    marks.mkdir()
    manifest = f"""\
version: 1
flows:
  holder:
    command: 'touch {marks}/started; while [ ! -e {marks}/done ]; do sleep 0.05; done; echo "len=${{#TOK}}"'
    secrets: [tok]
    run_on_deploy: true
    timeout: 60s
    slurm: {{}}
"""
    repo = manifest_project(tmp_path, str(bare_remote), manifest)
    puppemon("push", cwd=repo)
    with daemon(tmp_path, bare_remote, cluster, config(tmp_path, shared, secrets_file(tmp_path, "holder"))) as d:
        wait_until((marks / "started").exists, 60, "the job to start", lambda: d.log + cluster.logs())
        listing = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
        assert SECRET not in listing
        assert not any(SECRET.encode() in env for env in proc_files("environ")
                       if b"SLURM_JOB_ID" not in env)   # only the job itself has it
        assert not list(shared.glob("runs/*/env-*"))   # the job read its environment file, and removed it
        (marks / "done").touch()
        wait_until(records_of(bare_remote, "holder"), 60, "the record", lambda: d.log)
        assert d.stop() == 0
    [record] = of_flow(remote_records(bare_remote), "holder")
    assert record["status"] == "succeeded" and f"len={len(SECRET)}\n" in log_of(bare_remote, record)


def test_a_timeout_in_seconds_and_a_cancel_that_reaches_the_flows_trap(tmp_path, bare_remote, cluster, shared):
    waiting = tmp_path / "waiting"
    manifest = f"""\
version: 1
defaults:
  slurm: {{}}
flows:
  slow:
    command: 'echo started; sleep 120'
    timeout: 3s
    run_on_deploy: true
  trapped:
    command: 'trap "echo got TERM; exit 7" TERM; echo waiting; touch {waiting}; while true; do sleep 0.1; done'
"""
    repo = manifest_project(tmp_path, str(bare_remote), manifest)
    puppemon("push", cwd=repo)
    with daemon(tmp_path, bare_remote, cluster, config(tmp_path, shared)) as d:
        wait_until(records_of(bare_remote, "slow"), 60, "the timed-out record", lambda: d.log + cluster.logs())
        run_id = puppemon("trigger", "trapped", cwd=repo).stdout.strip().split()[-1]
        wait_until(waiting.exists, 60, "the job to be waiting", lambda: d.log + cluster.logs())
        puppemon("cancel", run_id, cwd=repo)
        wait_until(records_of(bare_remote, "trapped"), 60, "the cancelled record", lambda: d.log)
        assert d.stop() == 0
    [slow] = of_flow(remote_records(bare_remote), "slow")
    assert (slow["status"], slow["exit_code"], slow["error"]) == ("timed_out", 124, "timed out after 3.0s")
    assert 3 <= slow["duration"] < 30
    assert cluster.state(job_of(log_of(bare_remote, slow))) in ("", "CANCELLED", "FAILED", "COMPLETED")
    [trapped] = of_flow(remote_records(bare_remote), "trapped")
    assert trapped["status"] == "cancelled", trapped
    assert "got TERM" in log_of(bare_remote, trapped)


def test_pause_suspends_the_job_and_resume_lets_it_go_on(tmp_path, bare_remote, cluster, shared):
    count = tmp_path / "count"
    manifest = f"""\
version: 1
flows:
  counter:
    command: 'i=0; while [ $i -lt 400 ]; do i=$((i+1)); echo $i > {count}; sleep 0.05; done; echo counted'
    slurm: {{}}
"""
    repo = manifest_project(tmp_path, str(bare_remote), manifest)
    puppemon("push", cwd=repo)
    with daemon(tmp_path, bare_remote, cluster, config(tmp_path, shared)) as d:
        run_id = _trigger_when_deployed(repo, bare_remote, d, "counter")
        wait_until(count.exists, 60, "the job to count", lambda: d.log + cluster.logs())
        puppemon("pause", "--run", run_id, cwd=repo)
        [(_, job)] = wait_until(lambda: _jobs(tmp_path / "state"), 30, "the job in the journal")
        wait_until(lambda: cluster.state(job) == "SUSPENDED", 30, "the job suspended", lambda: d.log)
        frozen = frozen_count(count)   # suspended: it does not count on
        puppemon("resume", "--run", run_id, cwd=repo)
        wait_until(lambda: count.read_text() != frozen, 30, "the count to go on", lambda: d.log)
        wait_until(records_of(bare_remote, "counter"), 60, "the record", lambda: d.log)
        assert d.stop() == 0
    [record] = of_flow(remote_records(bare_remote), "counter")
    log = log_of(bare_remote, record)
    assert record["status"] == "succeeded", (record, log)
    assert "puppemon: paused" in log and "puppemon: resumed after" in log and log.endswith("counted\n")


def test_live_log_lines_reach_logs_before_the_job_ends(tmp_path, bare_remote, cluster, shared):
    gate = tmp_path / "gate"
    manifest = f"""\
version: 1
flows:
  talker:
    command: 'echo first line; while [ ! -e {gate} ]; do sleep 0.05; done; echo last line'
    slurm: {{}}
"""
    repo = manifest_project(tmp_path, str(bare_remote), manifest)
    puppemon("push", cwd=repo)
    with daemon(tmp_path, bare_remote, cluster, config(tmp_path, shared, "live_interval: 1\n")) as d:
        run_id = _trigger_when_deployed(repo, bare_remote, d, "talker")
        follower = subprocess.Popen([sys.executable, "-m", "puppemon", "logs", "-f", run_id], cwd=repo,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert follower.stdout.readline().startswith("puppemon: submitted as Slurm job ")
            assert follower.stdout.readline() == "first line\n"   # from the live ref, while the job runs
            assert not of_flow(remote_records(bare_remote), "talker")
            gate.touch()
            assert follower.stdout.readline() == "last line\n"
            assert follower.wait(60) == 0
        finally:
            follower.kill()
        wait_until(records_of(bare_remote, "talker"), 60, "the record", lambda: d.log)
        assert d.stop() == 0
    [record] = of_flow(remote_records(bare_remote), "talker")
    assert log_of(bare_remote, record) == f"puppemon: submitted as Slurm job {job_of(log_of(bare_remote, record))}\n" \
        "first line\nlast line\n"


def test_kill_9_of_the_daemon_then_a_restart_records_each_job_with_its_true_end(tmp_path, bare_remote, cluster,
                                                                                shared):
    """One job ends while no daemon runs (and the controller forgets it), one goes on after the restart, and
    one is killed with no exit status while no daemon runs: crashed, the only case."""
    marks = tmp_path / "marks"
    marks.mkdir()
    manifest = f"""\
version: 1
defaults:
  slurm: {{}}
flows:
  early:
    command: 'echo early up; touch {marks}/early; while [ ! -e {marks}/go-early ]; do sleep 0.05; done; echo bye > "$PUPPEMON_OUTPUT_DIR/o.txt"; exit 4'
    run_on_deploy: true
  late:
    command: 'echo late up; touch {marks}/late; while [ ! -e {marks}/go-late ]; do sleep 0.05; done; echo late done'
    run_on_deploy: true
  lost:
    command: 'echo lost up; echo $PPID $$ > {marks}/lost.tmp; mv {marks}/lost.tmp {marks}/lost; sleep 300'
    run_on_deploy: true
"""
    repo = manifest_project(tmp_path, str(bare_remote), manifest)
    puppemon("push", cwd=repo)
    cfg = config(tmp_path, shared)
    with daemon(tmp_path, bare_remote, cluster, cfg) as first:
        for flow in ("early", "late", "lost"):
            wait_until((marks / flow).exists, 60, f"job {flow} to start", lambda: first.log + cluster.logs())
        wait_until(lambda: len(_jobs(tmp_path / "state")) == 3, 30, "the three jobs in the journal")
        jobs = {_flow_of(area): job for area, job in _jobs(tmp_path / "state")}
        first.kill9()
    (marks / "go-early").touch()
    for pid in (marks / "lost").read_text().split():   # its batch script and the flow: no exit status is written
        os.kill(int(pid), signal.SIGKILL)
    wait_until(lambda: cluster.state(jobs["early"]) == "" and cluster.state(jobs["lost"]) == "", MIN_JOB_AGE + 60,
               "the controller to forget the ended jobs")
    with daemon(tmp_path, bare_remote, cluster, cfg) as second:
        wait_until(records_of(bare_remote, "early"), 60, "early's record", lambda: second.log)
        wait_until(records_of(bare_remote, "lost"), 60, "lost's record", lambda: second.log)
        assert not of_flow(remote_records(bare_remote), "late")   # still running: followed, not recorded
        (marks / "go-late").touch()
        wait_until(records_of(bare_remote, "late"), 60, "late's record", lambda: second.log)
        assert second.stop() == 0
    records = remote_records(bare_remote)
    early, late, lost = (of_flow(records, flow)[0] for flow in ("early", "late", "lost"))
    assert (early["status"], early["exit_code"]) == ("failed", 4), early
    assert "early up" in log_of(bare_remote, early) and [o["path"] for o in early["outputs"]] == ["o.txt"]
    assert late["status"] == "succeeded" and log_of(bare_remote, late).endswith("late up\nlate done\n")
    assert lost["status"] == "crashed" and "left no exit status" in lost["error"], lost
    assert "lost up" in log_of(bare_remote, lost)
    assert len(records) == 3   # each run once
    assert list((shared / "runs").iterdir()) == []
    fsck(bare_remote)


def test_another_daemon_leaves_a_gone_daemons_running_job_to_it_and_records_it_crashed_once_it_is_over(
        tmp_path, bare_remote, cluster, shared):
    marks = tmp_path / "marks"
    marks.mkdir()
    manifest = f"""\
version: 1
flows:
  heavy:
    command: 'echo up; touch {marks}/up; while [ ! -e {marks}/go ]; do sleep 0.05; done; echo done'
    run_on_deploy: true
    runs_on: [cluster]
    slurm: {{}}
"""
    repo = manifest_project(tmp_path, str(bare_remote), manifest)
    puppemon("push", cwd=repo)
    beat = {**cluster.env, "PUPPEMON_HEARTBEAT": "1"}   # gone after 5 s instead of 5 minutes
    cfg = config(tmp_path, shared)
    d1 = DaemonProcess(str(bare_remote), tmp_path / "s1", "--config", str(cfg), "--labels", "cluster", name="d1",
                       env=beat)
    with d1, DaemonProcess(str(bare_remote), tmp_path / "s2", name="d2", env=beat) as d2:
        wait_until((marks / "up").exists, 60, "the job to run", lambda: d1.log + cluster.logs())
        wait_until(lambda: "handle" in json.dumps(_status(bare_remote, "d1")), 30, "d1's status with the job")
        d1.kill9()
        import time
        time.sleep(5.0 + 4)   # d1 is gone after 5 s without a heartbeat; then d2 looks, once a second
        assert not of_flow(remote_records(bare_remote), "heavy"), d2.log   # left to d1: it still runs
        (marks / "go").touch()
        wait_until(records_of(bare_remote, "heavy"), 60, "d2 to record it once it is over", lambda: d2.log)
        assert d2.stop() == 0
    [record] = of_flow(remote_records(bare_remote), "heavy")
    assert record["status"] == "crashed" and "daemon d1 stopped heartbeating" in record["error"], record


def _status(bare: Path, name: str) -> dict:
    proc = subprocess.run(["git", "--git-dir", str(bare), "show", f"refs/puppemon/status/{name}:status.json"],
                          capture_output=True, text=True)
    return json.loads(proc.stdout) if proc.returncode == 0 else {}


def test_a_slurm_flow_is_refused_without_a_shared_dir_or_with_an_unknown_partition(tmp_path, bare_remote, cluster):
    repo = manifest_project(tmp_path, str(bare_remote), "version: 1\nflows:\n  heavy:\n    command: 'true'\n"
                            "    slurm: {}\n    run_on_deploy: true\n")
    puppemon("push", cwd=repo)
    with daemon(tmp_path, bare_remote, cluster, config(tmp_path, None)) as d:
        wait_until(lambda: deploy_records(bare_remote), 60, "the refusal", lambda: d.log)
        assert d.stop() == 0
    [refused] = deploy_records(bare_remote)
    assert refused["status"] == "refused" and "flow 'heavy' asks for slurm:, but this daemon has no " \
        "slurm_shared_dir" in refused["error"]
    (repo / "puppemon.yaml").write_text("version: 1\nflows:\n  heavy:\n    command: 'true'\n"
                                        "    slurm: {partition: gpu}\n")
    puppemon("push", cwd=repo)
    with daemon(tmp_path, bare_remote, cluster, config(tmp_path, tmp_path)) as d:
        wait_until(lambda: len(deploy_records(bare_remote)) == 2, 60, "the second refusal", lambda: d.log)
        assert d.stop() == 0
    second = [r for r in deploy_records(bare_remote) if "gpu" in (r.get("error") or "")]
    assert second and second[0]["error"] == ("flow 'heavy': slurm.partition 'gpu' is not a partition of this "
                                             "cluster (sinfo lists: big, debug)")


def test_sbatch_failures_are_retried_and_reported_in_the_runs_error(tmp_path, bare_remote, cluster, shared):
    dead = tmp_path / "dead.conf"
    text = cluster.conf.read_text()
    port = next(line for line in text.splitlines() if line.startswith("SlurmctldPort="))
    dead.write_text(text.replace(port, "SlurmctldPort=9") + "MessageTimeout=1\n")   # nothing listens there
    repo = manifest_project(tmp_path, str(bare_remote), "version: 1\nflows:\n  heavy:\n    command: 'true'\n"
                            "    slurm: {}\n    run_on_deploy: true\n")
    puppemon("push", cwd=repo)
    env = {**cluster.env, "SLURM_CONF": str(dead)}
    with DaemonProcess(str(bare_remote), tmp_path / "state", "--config", str(config(tmp_path, shared)), env=env) as d:
        wait_until(records_of(bare_remote, "heavy"), 60, "the record", lambda: d.log)
        assert d.stop() == 0
    [record] = of_flow(remote_records(bare_remote), "heavy")
    assert record["status"] == "failed" and record["error"].startswith("sbatch failed 4 times: "), record
    assert "contact slurm controller" in record["error"]
    assert log_of(bare_remote, record).count("trying again in") == 3


def test_a_job_cancelled_in_slurm_is_cancelled_and_a_request_slurm_refuses_fails_at_once(
        tmp_path, bare_remote, cluster, shared):
    up = tmp_path / "up"
    manifest = f"""\
version: 1
flows:
  outside:
    command: 'touch {up}; sleep 120'
    run_on_deploy: true
    slurm: {{}}
  greedy:
    command: 'true'
    run_on_deploy: true
    slurm: {{gres: "gpu:1"}}
"""
    repo = manifest_project(tmp_path, str(bare_remote), manifest)
    puppemon("push", cwd=repo)
    with daemon(tmp_path, bare_remote, cluster, config(tmp_path, shared)) as d:
        wait_until(up.exists, 60, "the job to run", lambda: d.log + cluster.logs())
        [(_, job)] = wait_until(lambda: _jobs(tmp_path / "state"), 30, "the job in the journal")
        cluster.call("scancel", job)   # an administrator, not puppemon
        wait_until(lambda: records_of(bare_remote, "outside")() and records_of(bare_remote, "greedy")(), 60,
                   "both records", lambda: d.log)
        assert d.stop() == 0
    [outside] = of_flow(remote_records(bare_remote), "outside")
    assert (outside["status"], outside["error"]) == ("cancelled", f"cancelled in Slurm (scancel of job {job})")
    [greedy] = of_flow(remote_records(bare_remote), "greedy")
    assert (greedy["status"], greedy["error"]) == ("failed", "sbatch failed: Invalid generic resource (gres) "
                                                             "specification"), greedy
    assert "trying again" not in log_of(bare_remote, greedy)


def _trigger_when_deployed(repo: Path, bare: Path, d: DaemonProcess, flow: str) -> str:
    wait_until(lambda: [r for r in deploy_records(bare) if r["status"] == "deployed"], 60, "the deploy", lambda: d.log)
    return puppemon("trigger", flow, cwd=repo).stdout.strip().split()[-1]


def _jobs(state: Path) -> list[tuple[str, str]]:
    """(area, job id) of each run the daemon's journal follows."""
    entries = [json.loads(p.read_text()) for p in (state / "journal").glob("*.json")]
    return [(e["handle"]["area"], e["handle"]["job"]) for e in entries if e.get("handle")]


def _flow_of(area: str) -> str:
    return next(name for name in ("early", "late", "lost") if f"echo {name} up" in Path(area, "job-1.sh").read_text())
