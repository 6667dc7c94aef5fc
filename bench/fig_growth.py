"""Figure 5: repository growth per trivial run record after `git gc`: the packed size
with 2N records minus the size with N, divided by N; baseline: the record's own bytes
(run.json + log.txt), what any store must keep at the least."""
from __future__ import annotations

from pathlib import Path

from bench import history
from bench.common import Context, Row, git

GOAL = 2048


def count(ctx: Context) -> int:
    return 300 if ctx.quick else 2_000


def rows(ctx: Context) -> list[str]:
    return ["repository growth per run record (after git gc)"]


def packed_size(git_dir: Path) -> int:
    git("--git-dir", str(git_dir), "gc", "--quiet", "--prune=now")
    return sum(f.stat().st_size for f in (git_dir / "objects").rglob("*") if f.is_file())


def measure(ctx: Context) -> list[Row]:
    n = count(ctx)
    repo = ctx.dir("growth") / "runs.git"
    git("init", "--bare", "--quiet", str(repo))
    history.build(repo, 0, n)
    small = packed_size(repo)
    history.build(repo, n, n)
    large = packed_size(repo)
    per_record = (large - small) / n
    files, _ = history.files_and_message(n)
    raw = sum(len(data) for data, _mode in files.values())
    return [Row(5, rows(ctx)[0], per_record, "B", raw, "run.json + log.txt bytes", f"≤ {GOAL // 1024} KB",
                per_record <= GOAL, note=f"{n:,} → {2 * n:,} records: {small / 1024:.0f} KB → {large / 1024:.0f} KB")]
