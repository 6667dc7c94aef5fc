"""What several commands share: warnings, status colours, and -p parsing."""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Iterable

import click

from puppemon.errors import PuppemonError

STATUS_STYLE = {"succeeded": "green", "failed": "red", "crashed": "red", "timed_out": "red",
                "cancelled": "yellow", "skipped": "yellow"}

_SCALARS = (str, int, float, bool, type(None))


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def styled_status(status: str) -> tuple[str, str | None]:
    """A status and its colour, as a ui.Cell."""
    return status, STATUS_STYLE.get(status)


def write_bytes(data: bytes) -> None:
    """Bytes to stdout as they are; a closed pipe (`| head`) ends quietly."""
    try:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        pass


def _scalar(text: str) -> Any:
    """`3` -> 3, `true` -> True, `null` -> None, `1.5` -> 1.5; anything else stays text."""
    import yaml

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
        from puppemon.history.requests import MAX_DEPTH, nesting

        deep = click.BadParameter(f"nests deeper than {MAX_DEPTH} levels", param_hint="'--params-json'")
        try:
            loaded = json.loads(params_json)
        except ValueError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint="'--params-json'") from None
        except RecursionError:
            raise deep from None
        if not isinstance(loaded, dict):
            raise click.BadParameter("must be a JSON object, like '{\"days\": 2}'",
                                     param_hint="'--params-json'")
        if nesting(loaded) > MAX_DEPTH:  # the daemon would refuse the request (history/requests.py)
            raise deep
        params.update(loaded)
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected key=value, got {pair!r}", param_hint="'-p'")
        params[key.strip()] = _scalar(text)
    return params


def load_flow(directory: str | os.PathLike, name: str) -> tuple[Any, Any]:
    """The manifest in `directory` and its flow `name`."""
    from puppemon.project import manifest

    loaded = manifest.load(directory)
    flow = loaded.flows.get(name)
    if flow is None:
        raise PuppemonError(f"no flow {name!r} in puppemon.yaml" + hint_flows(name, loaded.flows))
    return loaded, flow


def hint_flows(name: str, known) -> str:
    """`; did you mean 'hello'?` for a misspelled flow name, else the flows there are."""
    from puppemon.formats import did_you_mean

    close = did_you_mean(name, known)
    return f"; {close}" if close else f" (flows: {', '.join(sorted(known)) or 'none'})"


def fetch_deployed(store, remote: str, branch: str = "flows", timeout: float | None = 300) -> tuple:
    """(tip, puppemon.yaml as bytes or None) of the remote's `branch`; (None, None) when nothing is
    deployed. The fetched objects stay, so the deployed code can be read; the scratch ref does not."""
    from puppemon.project.root import MANIFEST_NAME
    from puppemon.project.snapshot import scratch_ref

    ref = scratch_ref(branch)
    try:
        tip = store.fetch_optional(store.remote_url(remote), f"refs/heads/{branch}", ref, timeout=timeout)
        return tip, store.read(tip, MANIFEST_NAME) if tip else None
    finally:
        store.delete_ref(ref)
