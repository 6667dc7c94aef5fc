"""Call a flow's Python entrypoint inside a run: `python -m puppemon._bootstrap ENTRY RESULT_FILE`.

ENTRY is `path/to/file.py:function` or `package.module:function`, resolved from the
working directory. The function is called with the run's params as keyword
arguments (awaited if it is a coroutine function); a JSON-serialisable return value
is written to RESULT_FILE. Exit codes: 0 ok, 1 the function raised (traceback on
stderr), 2 the entrypoint could not be found or imported. When the run fails, a
one-line reason goes to RESULT_FILE + ".error" for the run record.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import puppemon


class EntryNotFound(Exception):
    """The entrypoint names a file, module or function that does not exist."""


def _load_file(target: str) -> ModuleType:
    path = Path(target)
    if not path.is_file():
        raise EntryNotFound(f"file {target} not found (in {os.getcwd()})")
    parts = list(path.with_suffix("").parts)
    # A dotted name that mirrors the path keeps `from . import helpers` working
    # (cwd is on sys.path, so the parent directory imports as a package).
    if parts and all(p.isidentifier() for p in parts):
        name = ".".join(parts)
    else:
        name = "__puppemon_entry__"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise EntryNotFound(f"{target} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _import_module(target: str) -> ModuleType:
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        # Only "the entry module itself is missing" is a bad entrypoint; a missing
        # dependency inside the flow's code is the flow's own failure (traceback).
        if exc.name and (target == exc.name or target.startswith(exc.name + ".")):
            raise EntryNotFound(f"no module named {exc.name!r} (in {os.getcwd()})") from None
        raise


def resolve(entry: str) -> Callable[..., Any]:
    """The function `entry` names; EntryNotFound when there is none."""
    target, sep, func_name = entry.rpartition(":")
    if not sep or not target or not func_name:
        raise EntryNotFound("expected 'path/to/file.py:function' or 'module:function'")
    is_file = target.endswith(".py") or "/" in target
    module = _load_file(target) if is_file else _import_module(target)
    func = getattr(module, func_name, None)
    if func is None:
        raise EntryNotFound(f"no function {func_name!r} in {target}")
    if not callable(func):
        raise EntryNotFound(f"{func_name!r} in {target} is not callable")
    return func


def _print_traceback(exc: BaseException) -> None:
    tb = exc.__traceback__
    # Start the traceback at the flow's own code, not at this module.
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb, file=sys.stderr)


def _write(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    entry, result_file = argv
    cwd = os.getcwd()
    sys.path[:] = [cwd] + [p for p in sys.path if p not in ("", cwd)]
    target = entry.rpartition(":")[0]
    if target.endswith(".py") or "/" in target:
        # Like `python reports/daily.py`: the script's directory is importable too.
        script_dir = str(Path(cwd, target).parent)
        if script_dir != cwd:
            sys.path.insert(1, script_dir)
    sys.argv = [target or entry]
    # Line-buffered so prints and tracebacks interleave in the log in the order they happen.
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    try:
        func = resolve(entry)
        value = func(**puppemon.params())
        if inspect.isawaitable(value):
            import asyncio  # only for `async def` flows: ~20 ms of every run otherwise

            value = asyncio.run(_await(value))
    except EntryNotFound as exc:
        message = f"entrypoint {entry}: {exc}"
        print(f"puppemon: {message}", file=sys.stderr)
        _write(result_file + ".error", message)
        return 2
    except Exception as exc:  # noqa: BLE001 - the flow's failure (also at import), reported in its log
        _print_traceback(exc)
        _write(result_file + ".error", traceback.format_exception_only(type(exc), exc)[-1].strip())
        return 1
    if value is None:
        return 0
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        print(f"puppemon: the return value of {entry} ({type(value).__name__}) is not "
              f"JSON-serialisable; no result recorded", file=sys.stderr)
        return 0
    _write(result_file, text)
    return 0


async def _await(awaitable: Any) -> Any:
    return await awaitable


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
