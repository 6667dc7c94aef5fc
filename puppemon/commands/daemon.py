"""`puppemon daemon`: run the flows of a remote on schedule and record every run."""
from __future__ import annotations

from typing import Any


def main(**options: Any) -> int:
    from puppemon.daemon.loop import Daemon
    from puppemon.daemon.settings import build_settings
    from puppemon.ui import setup_logging

    settings = build_settings(options)
    setup_logging()
    return Daemon(settings).run()
