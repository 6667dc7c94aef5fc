"""`puppemon run FLOW`: run a flow here and now, in the project directory."""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Iterable

from puppemon.commands.common import load_flow, parse_params, write_bytes
from puppemon.daemon.wakeup import Wakeup
from puppemon.errors import PuppemonError
from puppemon.formats import format_size, new_id, outcome, plural, reason
from puppemon.project.root import find_root
from puppemon.run.runner import execute
from puppemon.run.spec import RunResult, RunSpec


def execute_here(spec: RunSpec) -> RunResult:
    """Run `spec` streaming to stdout; Ctrl-C or SIGTERM cancels the run (the flow
    is in its own session, so the terminal's Ctrl-C does not reach it)."""
    cancel = Wakeup()   # set in a signal handler: a threading.Event could deadlock there (daemon/wakeup.py)

    def on_signal(signum, frame):
        if not cancel.is_set():
            print(f"\npuppemon: cancelling {spec.flow.name} (up to {spec.grace:g}s)...", file=sys.stderr)
        cancel.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return execute(spec, on_output=write_bytes, cancel=cancel)  # `| head`: keeps running, stops echoing
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def summary(result: RunResult) -> str:
    """`hello: succeeded in 0.1s`, with the reason when it did not succeed."""
    line = f"{result.flow}: {outcome(result.status, result.duration)}"
    if len(result.attempts) > 1:
        line += f" ({len(result.attempts)} attempts)"
    why = reason(result.status, result.error)
    return line + (f": {why}" if why else "")


OUTPUTS = Path(".puppemon") / "outputs"   # in the project; .puppemon/.gitignore keeps it out of git and push


def local_secrets(flow) -> dict[str, str]:
    """The secrets `flow` asks for, from this environment (`discord` from DISCORD): on the server they come
    from the daemon's secrets file; here, one missing is an error, never an empty value."""
    from puppemon import env_name

    missing = [name for name in flow.secrets if not os.environ.get(env_name(name))]
    if missing:
        names = ", ".join(repr(n) for n in missing)
        exports = " ".join(f"{env_name(n)}=..." for n in missing)
        raise PuppemonError(f"flow {flow.name!r} asks for secret{'s' if len(missing) > 1 else ''} {names}, "
                            f"not set here: to run it locally, export {exports} (on the server, the "
                            "daemon's secrets file gives it)")
    return {name: os.environ[env_name(name)] for name in flow.secrets}


def keep_outputs(project: Path, result: RunResult) -> str | None:
    """Write what the run left in its output directory to .puppemon/outputs/<run-id>/; the line saying where."""
    if not result.outputs:
        return f"outputs: {result.outputs_note}" if result.outputs_note else None
    top = project / OUTPUTS.parent
    target = project / OUTPUTS / result.run_id
    try:
        target.mkdir(parents=True)
        if not (top / ".gitignore").exists():
            (top / ".gitignore").write_text("# written by puppemon run: nothing here is pushed\n*\n")
        for out in result.outputs:
            path = target / out.path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(out.data)
            if out.executable:
                path.chmod(0o755)
    except OSError as exc:
        raise PuppemonError(f"cannot keep the run's outputs in {target}: {exc.strerror}") from None
    size = sum(out.size for out in result.outputs)
    target = target.resolve()
    shown = os.path.relpath(target) if target.is_relative_to(Path.cwd().resolve()) else str(target)
    line = f"outputs: {shown}{os.sep} ({plural(len(result.outputs), 'file')}, {format_size(size)})"
    return line + (f"; {result.outputs_note}" if result.outputs_note else "")


def exit_code(result: RunResult) -> int:
    if result.exit_code is not None:
        return result.exit_code
    return 0 if result.status == "succeeded" else 1


def _in_container(spec: RunSpec, flow, project: Path) -> None:
    """Run `flow` in its image as the daemon would: the engine and its flags from this machine's daemon config
    (if there is one), a `build:` built (and cached by its context) first."""
    from dataclasses import replace

    from puppemon.daemon.settings import container_config, find_config, load_config
    from puppemon.run.container import ContainerBackend
    from puppemon.run.images import ImageStore

    where = find_config(None)
    engine = container_config({}, load_config(where), where)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "puppemon" / "images"
    image = ImageStore(engine, cache).prepare(flow, project)
    spec.flow = replace(flow, container=replace(flow.container, image=image, build=None))
    spec.backend, spec.base_env = ContainerBackend(engine), {}


def main(flow: str, pairs: Iterable[str] = (), params_json: str | None = None,
         directory: str = ".", record: bool = False, push: bool = True, remote: str | None = None) -> int:
    from puppemon.project.entrypoints import check_params, directory_reader

    params = parse_params(pairs, params_json)
    project = find_root(directory)
    loaded, found = load_flow(project, flow)
    check_params(found, params, directory_reader(project), "the project directory")
    if record:
        from puppemon.history.clone import open_target

        target = open_target(project, remote, push)  # before the run: a bad repo or remote fails fast
    spec = RunSpec(run_id=new_id(), flow=found, code_dir=project, params=params,
                   variables=dict(loaded.variables), workdir="shared", secrets=local_secrets(found),
                   trigger={"kind": "manual"})
    if found.container is not None:   # in its image, with this machine's engine settings
        _in_container(spec, found, project)
    if found.python is not None:  # the same environment the daemon builds, cached for this user
        from puppemon.commands.env import local_environment

        spec.environment, spec.flow_api = local_environment(found, project)
    result = execute_here(spec)
    print(summary(result), file=sys.stderr)
    if kept := keep_outputs(project, result):
        print(kept, file=sys.stderr)
    if result.has_result:
        print(f"result: {json.dumps(result.result)}", file=sys.stderr)
    if record:
        from puppemon.commands.reading import forget

        forget(target.store.git_dir)
        print(target.record(result), file=sys.stderr)
    return exit_code(result)
