"""Which daemons may take which flows: a flow's `runs_on` labels against a daemon's `--labels`."""
from __future__ import annotations

from typing import Iterable


def can_take(labels: Iterable[str], runs_on: Iterable[str] | None) -> bool:
    """Whether a daemon with `labels` may take a flow that asks for `runs_on` (all of them; None or
    empty: any daemon)."""
    return set(runs_on or ()) <= set(labels)
