"""`slurm:` in the manifest: a flow's runs are Slurm jobs (one `sbatch` per attempt), and what they ask for.

Forms (in `defaults` or per flow; a flow's `slurm:` replaces the default's whole)::

    slurm: {}                                  # the cluster's defaults
    slurm:
      partition: gpu                           # --partition (it must exist: the deploy asks `sinfo`)
      cpus: 4                                  # --cpus-per-task
      mem: 2G                                  # --mem: K, M, G or T (Slurm's own units)
      time: 1h                                 # --time, rounded up to whole minutes (default: from timeout:)
      gres: gpu:1                              # --gres

`slurm: null` runs the flow as a local process even where `defaults` set one.
Where the jobs' files live (`slurm_shared_dir`) and which flags every `sbatch`
gets are the daemon's configuration (run/slurm.py), never this file's.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import yaml

from puppemon.formats import show
from puppemon.project.schema import Invalid, duration, is_null, kind_of, named, record, scalar

PARTITION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
GRES_RE = re.compile(r"[a-z][a-z0-9_]*(:[A-Za-z0-9_.-]+)?(:\d+)?(,[a-z][a-z0-9_]*(:[A-Za-z0-9_.-]+)?(:\d+)?)*\Z")
MEM_RE = re.compile(r"(?i)(\d+)\s*([kmgt]?)b?\Z")


@dataclass(frozen=True)
class Slurm:
    """What a flow's jobs ask Slurm for; None everywhere means the cluster's defaults."""

    partition: str | None = None
    cpus: int | None = None
    mem: int | None = None        # megabytes, as `--mem` counts
    time: float | None = None     # seconds; `--time` gets whole minutes
    gres: str | None = None

    def sbatch_options(self, timeout: float | None) -> list[str]:
        """The `sbatch` flags for these, the time limit from `timeout:` (and a minute to spare) unless `time` says."""
        options = []
        if self.partition:
            options.append(f"--partition={self.partition}")
        if self.cpus:
            options.append(f"--cpus-per-task={self.cpus}")
        if self.mem:
            options.append(f"--mem={self.mem}M")
        limit = self.time if self.time else (timeout + 60 if timeout else None)
        if limit:
            options.append(f"--time={max(1, math.ceil(limit / 60))}")
        if self.gres:
            options.append(f"--gres={self.gres}")
        return options


def slurm_field(node: yaml.Node, path: str) -> Slurm | None:
    """The checker of `slurm:`; None for `slurm: null` (a local process, even if defaults set Slurm)."""
    if is_null(node):
        return None
    if not isinstance(node, yaml.MappingNode):
        raise Invalid(node, path, f"expected a mapping (partition, cpus, mem, time, gres; {{}} for the "
                      f"cluster's defaults), got {kind_of(node)}")
    return Slurm(**record(node, path, _FIELDS))


_partition = named(PARTITION_RE, "partition name", "letters, digits, '.', '_' and '-', as `sinfo` lists them")


def _cpus(node: yaml.Node, path: str) -> int:
    value = scalar(node, path)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100_000:
        raise Invalid(node, path, f"{show(value)} is not a number of CPUs (use a whole number, 1 or more)")
    return value


def _mem(node: yaml.Node, path: str) -> int:
    value = scalar(node, path)
    match = MEM_RE.match(str(value).strip()) if isinstance(value, (str, int)) and not isinstance(value, bool) \
        else None
    if not match or int(match.group(1)) == 0:
        raise Invalid(node, path, f"{show(value)} is not an amount of memory (use a whole number with K, M, G or T, "
                      "as Slurm does: 500M, 2G)")
    number, unit = int(match.group(1)), match.group(2).upper() or "M"   # Slurm's default unit is megabytes
    return max(1, math.ceil(number * {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2}[unit]))


_gres = named(GRES_RE, "generic resource", "NAME[:TYPE][:COUNT], e.g. gpu:1 or gpu:a100:2")


_FIELDS = {
    "partition": _partition,
    "cpus": _cpus,
    "mem": _mem,
    "time": duration(positive=True),
    "gres": _gres,
}
