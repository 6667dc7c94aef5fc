"""Figures 10-12, per-flow Python environments built with uv from a local directory of small wheels
made by the bench (no network: UV_NO_INDEX=1, UV_FIND_LINKS=<dir>, UV_CACHE_DIR and
UV_PYTHON_DOWNLOADS=never; pip --no-index --find-links <dir>). 10: `execute` of a trivial
entrypoint flow in a prebuilt environment (with `flow_api`, as the daemon's executor calls it per
run) against the same run with `python: system`, alternating. 11: a cold `EnvStore.ensure` (an empty
environments directory each time) of five small packages, with uv's download cache warm and empty,
against `python -m venv e && e/bin/pip install -r requirements.txt` of the same, alternating.
12: a redeploy with unchanged requirements (`Daemon.deploy(sha, wait=True)` of a new flows commit,
in-process, waiting for the thread that ensures its environments) against
the same deploy of a manifest without `python:`, alternating; no build may happen; and
`EnvStore.ensure` on a cached key alone, what a redeploy pays per environment."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import venv  # noqa: F401 - the baseline runs `python -m venv`; fail early if it is missing
from pathlib import Path

from bench import wheels
from bench.common import Context, Row, git, median, timed

RUN_GOAL = 0.020
BUILD_GOAL = 0.25
NOISE_FLOOR = 0.005   # a redeploy "within noise": this much, or the plain deploys' IQR if larger

FLOW = 'def main():\n    return {"ok": True}\n'
MANIFEST = """\
version: 1
flows:
  hello:
    entrypoint: flow.py:main
{python}"""
ENV_LINE = "    python: {requirements: requirements.txt}\n"


def rows_named(ctx: Context, name: str) -> list[str]:
    return {
        "env-run": ["run in a cached environment"],
        "env-build": ["cold environment build (uv cache warm)", "cold environment build (uv cache empty)"],
        "env-redeploy": ["redeploy, dependencies unchanged", "EnvStore.ensure on a cached key"],
    }[name]


def rows(ctx: Context) -> list[str]:
    return [label for name in ("env-run", "env-build", "env-redeploy") for label in rows_named(ctx, name)]


def measure_named(ctx: Context, name: str) -> list[Row]:
    return {"env-run": measure_run, "env-build": measure_build, "env-redeploy": measure_redeploy}[name](ctx)


def setup(ctx: Context) -> dict:
    """The wheel directory, uv's settings, a code directory with a requirements file (once per bench run)."""
    if "envs" in ctx.cache:
        return ctx.cache["envs"]
    root = ctx.dir("envs")
    house = wheels.wheelhouse(root / "wheels")
    code = root / "code"
    code.mkdir()
    (code / "flow.py").write_text(FLOW)
    (code / "requirements.txt").write_bytes(wheels.requirements())
    ctx.cache["envs"] = {"root": root, "wheels": house, "code": code,
                         "uv": wheels.uv_settings(house, root / "uv-cache")}
    return ctx.cache["envs"]


def request(code: Path):
    from puppemon.run.environments import Request

    data = (code / "requirements.txt").read_bytes()
    return Request("requirements", {"requirements.txt": data}, code, "requirements.txt",
                   what="requirements requirements.txt")


def alternate(fns: dict, repeat: int, warmup: int) -> dict[str, list[float]]:
    """Like common.interleaved, but the order turns each round (A B C, B C A, ...)."""
    names = list(fns)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(repeat):
        for n in names[i % len(names):] + names[:i % len(names)]:
            times[n].append(timed(fns[n]))
    return times


# -- figure 10 ----------------------------------------------------------------
def measure_run(ctx: Context) -> list[Row]:
    from puppemon.formats import new_id
    from puppemon.project.manifest import parse
    from puppemon.run.environments import EnvStore, flow_api
    from puppemon.run.runner import execute
    from puppemon.run.spec import RunSpec

    s = setup(ctx)
    envs_dir = s["root"] / "run-envs"
    with wheels.environ(s["uv"]):
        env = EnvStore(envs_dir).ensure(request(s["code"]))
    flow_env = parse(MANIFEST.format(python=ENV_LINE).encode(), "puppemon.yaml").flows["hello"]
    flow_sys = parse(MANIFEST.format(python="").encode(), "puppemon.yaml").flows["hello"]

    def run(environment):
        def go():
            if environment is not None:
                spec = RunSpec(new_id(), flow_env, s["code"], {}, environment=environment,
                               flow_api=flow_api(envs_dir))  # per run, as daemon/executor.py does
            else:
                spec = RunSpec(new_id(), flow_sys, s["code"], {})
            result = execute(spec)
            if result.status != "succeeded" or result.result != {"ok": True}:
                raise RuntimeError(f"run {result.status}: {result.error}\n{result.log.decode(errors='replace')}")
        return go

    def bare(python: str):
        return lambda: subprocess.run([python, "-c", "pass"], check=True)

    repeat = 5 if ctx.quick else 40
    times = alternate({"env": run(env), "system": run(None), "env-bare": bare(str(env.interpreter)),
                       "system-bare": bare(sys.executable)}, repeat=repeat, warmup=1)
    value, base = median(times["env"]), median(times["system"])
    diff = value - base
    start = median(times["env-bare"]) - median(times["system-bare"])
    return [Row(10, "run in a cached environment", value, "s", base, "same run, python: system",
                f"≤ +{RUN_GOAL * 1000:g} ms", diff <= RUN_GOAL,
                note=f"{diff * 1000:+.1f} ms over system ({repeat} runs each, alternating); trivial entrypoint, "
                     f"environment of {len(env.packages)} packages prebuilt; `python -c pass` of the environment's "
                     f"interpreter {start * 1000:+.1f} ms against the daemon's (whose site-packages .pth hooks this "
                     f"skips; some of what they import the flow API imports anyway)")]


# -- figure 11 ----------------------------------------------------------------
def measure_build(ctx: Context) -> list[Row]:
    from puppemon.run.environments import EnvStore

    s = setup(ctx)
    root, req = s["root"] / "build", request(s["code"])
    root.mkdir()
    count = iter(range(10**6))

    def uv_build(cold_cache: bool):
        def go():
            n = next(count)
            settings = dict(s["uv"])
            if cold_cache:
                settings["UV_CACHE_DIR"] = str(root / f"uv-cache-{n}")
            with wheels.environ(settings):
                env = EnvStore(root / f"envs-{n}").ensure(req)
            if len(env.packages) != wheels.PACKAGES:
                raise RuntimeError(f"built {env.packages}")
        return go

    def pip_build():
        target = root / f"venv-{next(count)}"
        subprocess.run([sys.executable, "-m", "venv", str(target)], check=True, capture_output=True)
        subprocess.run([str(target / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
                        "--no-index", "--find-links", str(s["wheels"]), "-r", str(s["code"] / "requirements.txt")],
                       check=True, capture_output=True)

    with wheels.environ(s["uv"]):  # warm uv's cache of the wheels (what "warm" means below)
        EnvStore(root / "envs-warmup").ensure(req)
    repeat, warmup = (1, 0) if ctx.quick else (9, 1)
    times = alternate({"warm": uv_build(False), "cold": uv_build(True), "pip": pip_build},
                      repeat=repeat, warmup=warmup)
    shutil.rmtree(root, ignore_errors=True)
    base = median(times["pip"])
    out = []
    for key, label, note in (
            ("warm", "cold environment build (uv cache warm)",
             "empty environments directory each time; uv's cache (UV_CACHE_DIR) already holds the wheels"),
            ("cold", "cold environment build (uv cache empty)",
             "empty environments directory and an empty UV_CACHE_DIR each time")):
        value = median(times[key])
        out.append(Row(11, label, value, "s", base, "python -m venv + pip install -r", f"≤ {BUILD_GOAL:g}×",
                       value / base <= BUILD_GOAL,
                       note=f"{note}; {wheels.PACKAGES} small wheels from a local directory; {repeat} builds each"))
    return out


# -- figure 12 ----------------------------------------------------------------
def measure_redeploy(ctx: Context) -> list[Row]:
    from puppemon.daemon.loop import Daemon
    from puppemon.daemon.settings import Settings
    from puppemon.project.snapshot import deploy
    from puppemon.run.environments import EnvStore

    s = setup(ctx)
    root = ctx.dir("redeploy")
    sides = {}
    with wheels.environ(s["uv"]):
        for side, python in (("env", ENV_LINE), ("plain", "")):
            remote = root / f"{side}.git"
            git("init", "--bare", "--quiet", str(remote))
            project = root / f"{side}-project"
            project.mkdir()
            for f in ("flow.py", "requirements.txt"):
                shutil.copy(s["code"] / f, project / f)
            (project / "puppemon.yaml").write_text(MANIFEST.format(python=python))
            git("init", "--quiet", str(project))
            git("add", "-A", cwd=project)
            git("commit", "--quiet", "-m", "flows", cwd=project)
            git("remote", "add", "origin", str(remote), cwd=project)
            daemon = Daemon(Settings(remote=str(remote), state=root / f"{side}-state", name="bench", grace=5)).open()
            sides[side] = {"project": project, "daemon": daemon, "n": 0}

        def push(side: str) -> str:
            """A new flows commit (one file changed, not the requirements); the daemon fetches it."""
            p = sides[side]
            p["n"] += 1
            (p["project"] / "counter.txt").write_text(f"{p['n']}\n")
            git("add", "-A", cwd=p["project"])
            git("commit", "--quiet", "-m", f"edit {p['n']}", cwd=p["project"])
            deploy(p["project"])
            d = p["daemon"]
            return d.store.fetch_optional(d.s.remote, f"refs/heads/{d.s.branch_flows}",
                                          f"refs/puppemon/remote/{d.s.branch_flows}")

        def redeploy(side: str):
            d = sides[side]["daemon"]
            sha = push(side)
            t = timed(lambda: d.deploy(sha, wait=True))  # environments are ensured in a thread: wait for it
            if d.deployer.current is None or d.deployer.current.sha != sha:
                raise RuntimeError(f"deploy {sha[:7]} did not happen")
            return t

        try:
            for side in sides:  # the first deploy builds the environment (not timed)
                redeploy(side)
            envs_dir = sides["env"]["daemon"].state.envs_dir
            before = built_marks(envs_dir)
            repeat = 5 if ctx.quick else 30
            times = {"env": [], "plain": []}
            for i in range(repeat):
                for side in (("env", "plain") if i % 2 == 0 else ("plain", "env")):
                    times[side].append(redeploy(side))
            after = built_marks(envs_dir)
            builds = sum(1 for k, v in after.items() if before.get(k) != v)
            # what a redeploy pays per environment: ensure on a cached key, alone
            req = request(sides["env"]["daemon"].deployer.current.directory)
            store = EnvStore(envs_dir)
            ensure = [timed(lambda: store.ensure(req)) for _ in range(repeat)]
        finally:
            for p in sides.values():
                p["daemon"].close()
    value, base = median(times["env"]), median(times["plain"])
    plain = sorted(times["plain"])
    noise = max(NOISE_FLOOR, plain[len(plain) * 3 // 4] - plain[len(plain) // 4])  # the plain deploys' IQR
    out = [Row(12, "redeploy, dependencies unchanged", value, "s", base, "same deploy without python:",
               f"0 builds, within noise (≤ +{noise * 1000:.0f} ms: IQR of the plain deploys)",
               builds == 0 and value - base <= noise,
               note=f"{builds} builds in {repeat} redeploys; {(value - base) * 1000:+.1f} ms a deploy for one "
                    f"environment; Daemon.deploy(sha, wait=True) of a new flows commit in-process, alternating"),
           Row(12, "EnvStore.ensure on a cached key", median(ensure), "s", None, "", "", None,
               note=f"per environment, per deploy; min {min(ensure) * 1000:.1f} ms, max {max(ensure) * 1000:.1f} ms")]
    return out


def built_marks(envs_dir: Path) -> dict[str, str]:
    """Each environment's `built` time from its marker: a build changes it or adds one."""
    from puppemon.run.environments import MARKER

    return {d.name: json.loads((d / MARKER).read_text())["built"]
            for d in envs_dir.iterdir() if (d / MARKER).is_file()}
