"""`puppemon run FLOW`: run a flow here and now, in the project directory."""
from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Iterable

import click
import yaml

from puppemon import manifest, runner
from puppemon.errors import PuppemonError

_SCALARS = (str, int, float, bool, type(None))


def _scalar(text: str) -> Any:
    """`3` -> 3, `true` -> True, `null` -> None, `1.5` -> 1.5; anything else stays text."""
    if text == "":
        return ""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if value is None and text.strip() not in ("null", "Null", "NULL", "~"):
        return text  # `#alerts` is not a YAML comment here
    if isinstance(value, str):
        quoted = len(text) >= 2 and text[0] == text[-1] and text[0] in "'\""
        return value if quoted else text  # verbatim: YAML would drop a trailing `# ...`
    # Dates, lists and mappings are not scalars here: --params-json is for structure.
    return value if isinstance(value, _SCALARS) else text


def parse_params(pairs: Iterable[str], params_json: str | None) -> dict:
    """Params from `--params-json` (a JSON object), then `-p key=value` pairs over it."""
    params: dict = {}
    if params_json:
        try:
            loaded = json.loads(params_json)
        except ValueError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint="'--params-json'") from None
        if not isinstance(loaded, dict):
            raise click.BadParameter("must be a JSON object, like '{\"days\": 2}'",
                                     param_hint="'--params-json'")
        params.update(loaded)
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected key=value, got {pair!r}", param_hint="'-p'")
        params[key.strip()] = _scalar(text)
    return params


def load_flow(directory: str | Path, name: str) -> tuple[manifest.Manifest, manifest.Flow]:
    """The manifest in `directory` and its flow `name`."""
    loaded = manifest.load(directory)
    flow = loaded.flows.get(name)
    if flow is None:
        raise PuppemonError(f"no flow {name!r} in puppemon.yaml (flows: {', '.join(sorted(loaded.flows))})")
    return loaded, flow


def _stream(data: bytes) -> None:
    try:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    except BrokenPipeError:  # `puppemon run x | head`: keep running, stop echoing
        pass


def execute_here(spec: runner.RunSpec) -> runner.RunResult:
    """Run `spec` streaming to stdout; Ctrl-C or SIGTERM cancels the run (the flow
    is in its own session, so the terminal's Ctrl-C does not reach it)."""
    cancel = threading.Event()

    def on_signal(signum, frame):
        if not cancel.is_set():
            print(f"\npuppemon: cancelling {spec.flow.name} (up to {spec.grace:g}s)...", file=sys.stderr)
        cancel.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return runner.execute(spec, on_output=_stream, cancel=cancel)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def summary(result: runner.RunResult) -> str:
    """`hello: succeeded in 0.1s`, with the reason when it did not succeed."""
    line = f"{result.flow}: {result.status} in {manifest.format_duration(result.duration)}"
    if len(result.attempts) > 1:
        line += f" ({len(result.attempts)} attempts)"
    if result.status != "succeeded" and result.error:
        line += f": {result.error}"
    return line


def exit_code(result: runner.RunResult) -> int:
    if result.exit_code is not None:
        return result.exit_code
    return 0 if result.status == "succeeded" else 1


def main(flow: str, pairs: Iterable[str] = (), params_json: str | None = None,
         directory: str = ".", record: bool = False, push: bool = True, remote: str | None = None) -> int:
    params = parse_params(pairs, params_json)
    project = Path(directory).resolve()
    loaded, found = load_flow(project, flow)
    if record:
        from puppemon.commands.runs import open_target

        target = open_target(project, remote, push)  # before the run: a bad repo or remote fails fast
    spec = runner.RunSpec(run_id=runner.new_run_id(), flow=found, code_dir=project, params=params,
                          variables=dict(loaded.variables), workdir="shared")
    result = execute_here(spec)
    print(summary(result), file=sys.stderr)
    if result.has_result:
        print(f"result: {json.dumps(result.result)}", file=sys.stderr)
    if record:
        print(target.record(result), file=sys.stderr)
    return exit_code(result)
