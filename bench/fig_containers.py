"""Figure 19, flows in containers (podman, a local busybox image: no registry). 19a: the runner's
`execute` of a trivial command flow (`true`) with `container:` against the same `podman run --rm IMAGE
true` by hand, and against the flow run locally, alternating; the goal is within 1.2× of the bare
`podman run`. 19b: a daemon's resident memory (VmRSS) while 4 container runs are in flight, against the
same daemon while 4 local runs of the same command are in flight (the engine clients are the runs'
processes, not the daemon's). Opt-in (`--only containers`): it needs podman that can run containers."""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Context, Row, interleaved, median, puppemon_argv, stop_daemon
from bench.fig_daemon import deploy_project
from bench.fig_idle import rss, wait_for

RUN_GOAL = 1.2
IN_FLIGHT = 4


def rows(ctx: Context) -> list[str]:
    return ["trivial flow in a container", f"daemon RSS, {IN_FLIGHT} container runs in flight"]


def _image() -> tuple[str, list[str]]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.containers import IMAGE, engine_args, rootfs_tar

    subprocess.run(["podman", "import", "-", IMAGE], input=rootfs_tar(), capture_output=True, check=True, cwd="/")
    return IMAGE, engine_args()


def measure(ctx: Context) -> list[Row]:
    image, args = _image()
    return [_run_overhead(ctx, image, args), _daemon_memory(ctx, image, args)]


def _run_overhead(ctx: Context, image: str, args: list[str]) -> Row:
    from puppemon.project.manifest import parse
    from puppemon.run.container import ContainerBackend
    from puppemon.run.engine import EngineConfig
    from puppemon.run.runner import execute
    from puppemon.run.spec import RunSpec

    code = ctx.dir("containers/code")
    flows = parse(f"version: 1\nflows:\n  boxed:\n    command: [\"true\"]\n    container: {{image: {image}, "
                  f"network: none}}\n  local:\n    command: [\"true\"]\n").flows
    backend = ContainerBackend(EngineConfig(args=tuple(args)))
    counter = iter(range(10**6))

    def run(flow: str, **extra) -> None:
        spec = RunSpec(run_id=f"20261201T000000Z-{next(counter):06x}", flow=flows[flow], code_dir=code, params={},
                       **extra)
        result = execute(spec)
        assert result.status == "succeeded", (result.error, result.log)

    def by_hand() -> None:
        subprocess.run(["podman", "run", "--rm", *args, "--network", "none", image, "true"], check=True,
                       capture_output=True)

    repeat = 5 if ctx.quick else 21
    times = interleaved({"container": lambda: run("boxed", backend=backend, base_env={}), "bare": by_hand,
                         "local": lambda: run("local")}, repeat)
    value, base, local = median(times["container"]), median(times["bare"]), median(times["local"])
    return Row(19, rows(ctx)[0], value, "s", base, "podman run --rm IMAGE true", f"≤ {RUN_GOAL:g}×",
               value / base <= RUN_GOAL,
               note=f"the same flow run locally: {local * 1000:.0f} ms; {repeat} runs each, alternating; the "
                    f"container run adds a work copy of the code, an env file and `--init`")


def _daemon_memory(ctx: Context, image: str, args: list[str]) -> Row:
    import json

    def in_flight(boxed: bool) -> int:
        root = Path(tempfile.mkdtemp(dir=ctx.dir("containers")))
        box = f"    container: {{image: {image}, network: none}}\n" if boxed else ""
        flows = "".join(f"  job-{i}:\n    command: [\"sleep\", \"6\"]\n    run_on_deploy: true\n{box}"
                        for i in range(IN_FLIGHT))
        remote = deploy_project(root, f"version: 1\nflows:\n{flows}")
        config = root / "daemon.yaml"
        config.write_text(f"container_args: {json.dumps(args)}\n")
        log = open(root / "daemon.log", "wb")
        daemon = subprocess.Popen([*puppemon_argv(), "daemon", "--remote", str(remote), "--state", str(root / "s"),
                                   "--name", "mem", "--poll", "60", "--config", str(config)],
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            def running() -> bool:
                if daemon.poll() is not None:
                    raise RuntimeError(f"daemon exited: {(root / 'daemon.log').read_text()[-2000:]}")
                return (root / "daemon.log").read_text().count("started run") >= IN_FLIGHT
            wait_for(running, 60, f"{IN_FLIGHT} runs in flight")
            time.sleep(1.0)
            return rss(daemon.pid)
        finally:
            stop_daemon(daemon, log)

    repeat = 1 if ctx.quick else 3
    boxed, local = [], []
    for _ in range(repeat):
        boxed.append(in_flight(True))
        local.append(in_flight(False))
    value, base = median(boxed), median(local)
    return Row(19, rows(ctx)[1], value, "MB", base, f"the same daemon, {IN_FLIGHT} local runs in flight",
               note=f"median of {repeat} daemons each")
