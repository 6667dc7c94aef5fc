"""Retention: take old records out of the runs branch's tip tree; history keeps them.

A record never leaves git history (nothing is rewritten or force-pushed): pruning
is one ordinary commit that deletes old date directories from the tip. It keeps
the tip's tree, and with it the cost of every later push, bounded: git's
connectivity check on push reads the whole tree of the old tip.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Iterator

from puppemon.gitstore import Store


@dataclass
class Pruned:
    before: date
    runs: int                 # run directories taken out of the tip
    other: int                # request, deploy and claim files taken out
    paths: list[str]          # the date directories removed

    def summary(self) -> str:
        what = f"{self.runs} run{'s' if self.runs != 1 else ''}"
        if self.other:
            what += f" and {self.other} request/deploy file{'s' if self.other != 1 else ''}"
        return f"{what} from before {self.before.isoformat()}"


BASES = ("requests", "deploys", "claims")   # dated like runs/<flow>/, beside it


def dated_dirs(store: Store, tip: str) -> Iterator[tuple[str, date, str]]:
    """(base, date, path) of every `<base>/<yyyy>/<mm>/<dd>` directory at `tip`, for each base of the
    runs layout: `runs/<flow>` of every flow, `requests`, `deploys`, `claims`."""
    bases = [f"runs/{e.name}" for e in store.listdir(tip, "runs") if e.is_tree] + list(BASES)
    for base in bases:
        for year in store.listdir(tip, base):
            for month in store.listdir(tip, f"{base}/{year.name}"):
                for day in store.listdir(tip, f"{base}/{year.name}/{month.name}"):
                    try:
                        when = date(int(year.name), int(month.name), int(day.name))
                    except ValueError:
                        continue  # not ours: leave it alone
                    yield base, when, f"{base}/{year.name}/{month.name}/{day.name}"


def plan(store: Store, tip: str | None, before: datetime) -> Pruned:
    """What pruning everything dated before `before` (UTC) would remove from `tip`."""
    cutoff = before.astimezone(timezone.utc).date()
    result = Pruned(cutoff, 0, 0, [])
    if not tip:
        return result
    for base, when, path in dated_dirs(store, tip):
        if when < cutoff:
            entries = store.listdir(tip, path)
            if base.startswith("runs/"):
                result.runs += len(entries)
            else:
                result.other += len(entries)
            result.paths.append(path)
    return result


def message(pruned: Pruned) -> str:
    return (f"prune: {pruned.summary()} (still in history)\n\n"
            f"Puppemon-Prune-Before: {pruned.before.isoformat()}\n")
