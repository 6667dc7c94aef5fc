"""What the daemon logs, read from a real daemon's stderr: a run that failed or timed out is a WARNING
with its reason; a succeeded one, and a claim another daemon won, are INFO and read as normal."""
from __future__ import annotations

import logging
import re

from puppemon.gitstore import Store
from puppemon.history.recorder import Recorder
from tests.daemon_helpers import deploy, manifest_project, remote_records, run_daemon_once

MANIFEST = """\
version: 1
flows:
  fine:
    command: echo fine
    run_on_deploy: true
  broken:
    command: "echo going down; exit 3"
    run_on_deploy: true
  slow:
    command: sleep 30
    timeout: 1s
    run_on_deploy: true
"""


def test_failed_and_timed_out_runs_are_warnings_with_their_reason(tmp_path, bare_remote):
    deploy(manifest_project(tmp_path, str(bare_remote), MANIFEST))
    proc = run_daemon_once(str(bare_remote), tmp_path / "state")
    assert proc.returncode == 0, proc.stderr
    records = {r["flow"]: r for r in remote_records(bare_remote)}
    levels = {m.group(2): m.group(1) for m in re.finditer(r" (INFO|WARNING) (\w+): (?:succeeded|failed|timed_out) in",
                                                          proc.stderr)}
    assert levels == {"fine": "INFO", "broken": "WARNING", "slow": "WARNING"}, proc.stderr
    for flow in ("broken", "slow"):
        r = records[flow]
        line = f" WARNING {flow}: {r['status']} in {r['duration']:.1f}s (run {r['id']}): {r['error']}\n"
        assert line in proc.stderr, proc.stderr
    assert records["broken"]["error"] and records["slow"]["status"] == "timed_out"


def test_a_claim_another_daemon_won_is_info_and_reads_as_normal(tmp_path, bare_remote, caplog):
    path = "requests/2026/11/25/20261125T083000Z-7f3a9c.claim.json"
    recorders = [Recorder(Store.open_or_init_bare(tmp_path / f"d{n}.git"), remote=str(bare_remote)) for n in (1, 2)]
    for n, recorder in enumerate(recorders, 1):
        recorder.sync(push=False)
        recorder.add({path: f'{{"daemon": "d{n}"}}\n'.encode()},
                     f"claim request 20261125T083000Z-7f3a9c (hello) for d{n}\n\n"
                     f"Puppemon-Request: 20261125T083000Z-7f3a9c\nPuppemon-Claim: d{n}\n")
    logger = logging.getLogger("puppemon")
    attach = not logger.propagate        # an entry point (setup_logging) ran in this process
    if attach:
        logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="puppemon"):
            assert recorders[0].publish() and recorders[1].publish()
    finally:
        if attach:
            logger.removeHandler(caplog.handler)
    [message] = [r for r in caplog.records if "took it first" in r.getMessage()]
    assert message.levelno == logging.INFO
    assert message.getMessage() == (f"another daemon took it first (claim request 20261125T083000Z-7f3a9c (hello) "
                                    f"for d2 on {bare_remote}): not ours to run")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
