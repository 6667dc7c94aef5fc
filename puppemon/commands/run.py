"""`puppemon run FLOW`: run a flow here and now, in the project directory."""
from __future__ import annotations

import json
import signal
import sys
import threading
from typing import Iterable

from puppemon.commands.common import load_flow, parse_params, write_bytes
from puppemon.formats import format_duration, new_id
from puppemon.project import manifest
from puppemon.run.runner import execute
from puppemon.run.spec import RunResult, RunSpec


def execute_here(spec: RunSpec) -> RunResult:
    """Run `spec` streaming to stdout; Ctrl-C or SIGTERM cancels the run (the flow
    is in its own session, so the terminal's Ctrl-C does not reach it)."""
    cancel = threading.Event()

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
    line = f"{result.flow}: {result.status} in {format_duration(result.duration)}"
    if len(result.attempts) > 1:
        line += f" ({len(result.attempts)} attempts)"
    if result.status != "succeeded" and result.error:
        line += f": {result.error}"
    return line


def exit_code(result: RunResult) -> int:
    if result.exit_code is not None:
        return result.exit_code
    return 0 if result.status == "succeeded" else 1


def main(flow: str, pairs: Iterable[str] = (), params_json: str | None = None,
         directory: str = ".", record: bool = False, push: bool = True, remote: str | None = None) -> int:
    from puppemon.project.entrypoints import check_params, directory_reader

    params = parse_params(pairs, params_json)
    project = manifest.find_root(directory)
    loaded, found = load_flow(project, flow)
    check_params(found, params, directory_reader(project), "the project directory")
    if record:
        from puppemon.history.clone import open_target

        target = open_target(project, remote, push)  # before the run: a bad repo or remote fails fast
    spec = RunSpec(run_id=new_id(), flow=found, code_dir=project, params=params,
                   variables=dict(loaded.variables), workdir="shared")
    if found.python is not None:  # the same environment the daemon builds, cached for this user
        from puppemon.commands.env import local_environment

        spec.environment, spec.flow_api = local_environment(found, project)
    result = execute_here(spec)
    print(summary(result), file=sys.stderr)
    if result.has_result:
        print(f"result: {json.dumps(result.result)}", file=sys.stderr)
    if record:
        from puppemon.commands.reading import forget

        forget(target.store.git_dir)
        print(target.record(result), file=sys.stderr)
    return exit_code(result)
