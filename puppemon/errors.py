"""The one error type puppemon raises on purpose, and the one place that reports errors."""
from __future__ import annotations

import os
import sys
from pathlib import Path


class PuppemonError(Exception):
    """An expected failure, with a message meant for a person: what happened and what to do."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _crash_log_path() -> Path:
    import tempfile

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(base) / "puppemon" / "crash.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
    except OSError:
        return Path(tempfile.gettempdir()) / "puppemon-crash.log"


def report(exc: BaseException) -> int:
    """Print `exc` the way users should see it and return the exit code."""
    if isinstance(exc, PuppemonError):
        print(f"Error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        print("Interrupted.", file=sys.stderr)
        return 130
    import time  # here, not at the top: only the crash path needs them, and every command imports this
    import traceback

    path = _crash_log_path()
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')} puppemon {' '.join(sys.argv[1:])}\n")
            fh.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        where = f"; the traceback is in {path}"
    except OSError:
        where = ""
    first = str(exc).splitlines()[0] if str(exc) else ""
    print(f"Error: unexpected {type(exc).__name__}: {first}{where}", file=sys.stderr)
    return 3
