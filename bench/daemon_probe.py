"""A `puppemon daemon` that notes when each run is submitted, recorded and published, then stops by itself.

python -m bench.daemon_probe OUT.jsonl RUNS --remote URL --state DIR [--poll S]

The daemon is puppemon's own, assembled as `puppemon daemon` assembles it; the
probe hears each recorded run as the daemon's listener, and takes the time of
two of its public steps: submit (a trigger source hands a run over) and publish.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

from puppemon.daemon.loop import Daemon
from puppemon.daemon.settings import Settings
from puppemon.formats import utc_iso
from puppemon.ui import setup_logging


class ProbeDaemon(Daemon):
    def __init__(self, settings: Settings, out: Path, runs: int) -> None:
        super().__init__(settings, listener=self)
        self.out = out
        self.runs = runs
        self.lock = threading.Lock()
        self.seen: list[dict] = []
        self.unpublished_ids: list[str] = []
        self.fired: dict[str, float] = {}   # "flow scheduled-iso" -> when the scheduler handed it over

    def submit(self, pending):
        if pending.scheduled is not None:
            self.fired[f"{pending.flow} {utc_iso(pending.scheduled)}"] = time.time()
        return super().submit(pending)

    def recorded(self, record: dict) -> None:
        recorded = time.time()
        with self.lock:
            self.seen.append({"id": record["id"], "flow": record["flow"], "status": record["status"],
                              "scheduled": record["scheduled"], "started": record["started"],
                              "finished": record["finished"], "recorded": recorded,
                              "fired": self.fired.get(f"{record['flow']} {record['scheduled']}")})
            self.unpublished_ids.append(record["id"])
            if len(self.seen) >= self.runs:
                self.request_stop()

    def publish(self) -> None:
        with self.lock:
            ids, self.unpublished_ids = self.unpublished_ids, []
        super().publish()
        published = time.time()
        if self.recorder.unpublished() != 0:  # not out yet: they go with the next publish
            with self.lock:
                self.unpublished_ids = ids + self.unpublished_ids
            return
        with self.lock:
            for entry in self.seen:
                if entry["id"] in ids:
                    entry["published"] = published

    def run(self) -> int:
        try:
            return super().run()
        finally:
            self.out.write_text("".join(json.dumps(e) + "\n" for e in self.seen))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("runs", type=int)
    parser.add_argument("--remote", required=True)
    parser.add_argument("--state", required=True, type=Path)
    parser.add_argument("--poll", type=float, default=60.0)
    args = parser.parse_args(argv)
    setup_logging()
    settings = Settings(remote=args.remote, state=args.state, name="bench", poll=args.poll, grace=10)
    return ProbeDaemon(settings, args.out, args.runs).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
