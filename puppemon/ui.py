"""Terminal output shared by the commands: logging set-up and a console."""
from __future__ import annotations

import logging
import sys


def setup_logging(level: int = logging.INFO) -> None:
    """One human line per event on stderr: rich when a terminal, plain timestamped lines otherwise."""
    logger = logging.getLogger("puppemon")
    logger.handlers.clear()
    logger.setLevel(level)
    logger.propagate = False
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, markup=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s", datefmt="[%X]"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S%z"))
    logger.addHandler(handler)


def console(stderr: bool = False):
    """A rich Console; a fixed width when not a terminal so output is stable."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, width=None if stream.isatty() else 120, highlight=False,
                   soft_wrap=False)
