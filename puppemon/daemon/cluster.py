"""The daemon's side of `slurm:` flows: the deploy's check that this server can run them.

A flow this daemon takes that asks for Slurm is refused at deploy (recorded, naming the flow; the
last good deploy goes on) when the server has no `slurm_shared_dir`, when Slurm's commands do not
answer, or when it names a partition the cluster does not have (`sinfo`).
"""
from __future__ import annotations

from typing import Callable

from puppemon.daemon.deployer import Refused
from puppemon.run.slurm import SlurmConfig
from puppemon.run.slurmctl import SlurmError, partitions


def slurm_check(config: SlurmConfig, takes: Callable) -> Callable:
    """The deployer's check of a manifest: Refused for the first flow this daemon takes that it cannot run
    on Slurm."""
    def check(manifest) -> None:
        flows = [(name, flow) for name, flow in manifest.flows.items() if flow.slurm is not None and takes(flow)]
        if not flows:
            return
        if config.shared_dir is None:
            raise Refused(f"flow {flows[0][0]!r} asks for slurm:, but this daemon has no slurm_shared_dir (set it "
                          "with --slurm-shared-dir DIR, a directory the compute nodes see too, or run the flow "
                          "without slurm:)")
        wanted = {flow.slurm.partition for _, flow in flows if flow.slurm.partition}
        try:
            known = partitions() if wanted else set()
        except SlurmError as exc:
            raise Refused(f"flow {flows[0][0]!r} asks for slurm:, but Slurm does not answer here: {exc.message}")
        for name, flow in flows:
            if flow.slurm.partition and flow.slurm.partition not in known:
                raise Refused(f"flow {name!r}: slurm.partition {flow.slurm.partition!r} is not a partition of this "
                              f"cluster (sinfo lists: {', '.join(sorted(known)) or 'none'})")
    return check
