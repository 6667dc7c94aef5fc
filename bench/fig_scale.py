"""Figure 14: history at scale, with default settings. A daemon's mirror and its remote hold N runs,
one every 5 minutes over 10 flows (bench/history.py), rotated as a daemon with the default
--rotate-after rotates them (closed days in month archive refs). Then: publishing one record as
the daemon's recorder does (fetch runs and the archive refs, push), against the same at 100 runs;
and `puppemon runs --limit 50` in a clone each time after the remote moved, against
`git log -50 --format=%s runs` in that clone. 1,000,000 runs is the opt-in figure `scale-1m`
(`python -m bench --only scale-1m`: about ten minutes, most of it building the history)."""
from __future__ import annotations

import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from bench import history
from bench.common import Context, Row, git, interleaved, median, puppemon_argv, run
from puppemon.daemon import ROTATE_AFTER
from puppemon.gitstore import Store
from puppemon.history.recorder import Recorder
from puppemon.history.rotation import rotate

GOAL = 1.2
READ_GOAL = 0.3
TRACKING = "refs/puppemon/remote/runs"
# Every size starts here, so that a million runs (9.5 years of one every 5 minutes) end before today,
# as a real history does (commit dates later than the records added now would send git's walks down
# the whole history: see bench/history.py).
ORIGIN = datetime(2015, 1, 1, tzinfo=timezone.utc)


def sizes(ctx: Context, name: str = "scale") -> list[int]:
    if name == "scale-1m":
        return [100, 1_000_000]
    return [100, 1_000] if ctx.quick else [100, 10_000, 100_000]


def rows_named(ctx: Context, name: str) -> list[str]:
    big = sizes(ctx, name)[-1]
    return ([f"publish one record at {n:,} runs, default settings" for n in sizes(ctx, name)]
            + [f"puppemon runs --limit 50 at {big:,} runs, remote moved"])


class History:
    """A remote and a daemon's mirror holding `n` runs, rotated; the counter of the next record."""

    def __init__(self, ctx: Context, n: int) -> None:
        root = ctx.dir(f"scale-{n}")
        self.remote, mirror = root / "remote.git", root / "mirror.git"
        git("init", "--bare", "--quiet", str(self.remote))
        t0 = time.perf_counter()
        tip = history.build(self.remote, 0, n, origin=ORIGIN)
        self.built = time.perf_counter() - t0
        shutil.copytree(self.remote, mirror)
        # Packs with their reverse index, as git >= 2.41 writes them (and the daemon's mirror does): the
        # mirror's as its first fetch of the history would have written it, the remote's as a server's
        # repack would. Without one, git builds it in memory for each push and fetch that sends objects
        # from a big pack (a quarter of a second at a million runs).
        for repo in (self.remote, mirror):
            for pack in (repo / "objects" / "pack").glob("*.pack"):
                git("--git-dir", str(repo), "index-pack", "--rev-index", str(pack))
        git("--git-dir", str(mirror), "update-ref", TRACKING, tip)
        self.recorder = Recorder(Store.open_or_init_bare(mirror), remote=str(self.remote))
        t0 = time.perf_counter()
        rotation = rotate(self.recorder.store, self.recorder, ORIGIN + (n - 1) * history.STEP, ROTATE_AFTER)
        if not self.recorder.publish():
            raise RuntimeError("publishing the rotation failed")
        self.rotated = time.perf_counter() - t0
        self.moved = rotation.runs if rotation else 0
        self.counter = n

    def add(self) -> str:
        files, message = history.files_and_message(self.counter, ORIGIN)
        self.counter += 1
        return self.recorder.add(files, message)

    def publish(self) -> None:
        if not self.recorder.publish():
            raise RuntimeError(f"publishing to {self.remote} failed")

    def tip_runs(self) -> int:
        names = git("--git-dir", str(self.remote), "ls-tree", "-r", "--name-only", "runs", "--", "runs").split()
        return sum(1 for name in names if name.endswith("/run.json"))

    def archives(self) -> int:
        return len(git("--git-dir", str(self.remote), "for-each-ref", "refs/puppemon/archive").splitlines())


def measure_publish(histories: dict[int, History], repeat: int) -> dict[int, tuple[float, float]]:
    """Median publish time and `git push` time per size; sizes take turns so drift hits all alike."""
    pushes: dict[int, list[float]] = {n: [] for n in histories}
    git_pushes: dict[int, list[float]] = {n: [] for n in histories}
    for k in range(-2, repeat):   # two rounds of warm-up
        for n, h in histories.items():
            h.add()
            t0 = time.perf_counter()
            h.publish()
            t_push = time.perf_counter() - t0
            tip = h.add()
            t0 = time.perf_counter()
            git("--git-dir", str(h.recorder.store.git_dir), "push", "--quiet", str(h.remote), f"{tip}:refs/heads/runs")
            t_git = time.perf_counter() - t0
            h.recorder.sync(push=False)
            if k >= 0:
                pushes[n].append(t_push)
                git_pushes[n].append(t_git)
    return {n: (median(pushes[n]), median(git_pushes[n])) for n in histories}


def clone(ctx: Context, h: History, n: int) -> Path:
    """A project whose clone already holds the remote's objects and refs (fetching a long history once
    is not what is measured)."""
    project = ctx.dir(f"scale-read-{n}") / "project"
    git("init", "--quiet", str(project))
    git("remote", "add", "origin", str(h.remote), cwd=project)
    shutil.copytree(h.remote / "objects", project / ".git" / "objects", dirs_exist_ok=True)
    for line in git("--git-dir", str(h.remote), "for-each-ref", "--format=%(objectname) %(refname)").splitlines():
        sha, ref = line.split()
        if ref == "refs/heads/runs":
            git("update-ref", "refs/remotes/origin/runs", sha, cwd=project)
        git("update-ref", ref, sha, cwd=project)
    return project


def measure_read(ctx: Context, h: History, n: int, repeat: int) -> tuple[float, float]:
    project = clone(ctx, h, n)
    cli = puppemon_argv()

    def runs() -> None:
        h.add()
        h.publish()   # the remote moved: a fetch has something to bring
        t0 = time.perf_counter()
        out = run([*cli, "runs", "--limit", "50", "--fetch"], cwd=project).stdout.decode()
        runs.times.append(time.perf_counter() - t0)
        if out.count("succeeded") != 50:
            raise RuntimeError(f"runs --limit 50 showed: {out[-500:]}")

    runs.times = []
    times = interleaved({"runs": runs, "git_log": lambda: run(["git", "log", "-50", "--format=%s", "runs"],
                                                              cwd=project)}, repeat=repeat)
    return median(runs.times[-repeat:]), median(times["git_log"])


def measure_named(ctx: Context, name: str) -> list[Row]:
    repeat = 7 if ctx.quick else 21
    histories = {n: History(ctx, n) for n in sizes(ctx, name)}
    published = measure_publish(histories, repeat)
    smallest, biggest = sizes(ctx, name)[0], sizes(ctx, name)[-1]
    base = published[smallest][0]
    out = []
    for n, h in histories.items():
        value, git_push = published[n]
        note = (f"tip {h.tip_runs():,} runs, {h.archives()} archive refs; history built in {h.built:.0f} s, "
                f"{h.moved:,} runs rotated in {h.rotated:.1f} s; `git push` alone: {git_push * 1000:.0f} ms")
        flat = n != smallest
        out.append(Row(14, f"publish one record at {n:,} runs, default settings", value, "s", base,
                       f"same at {smallest} runs", f"≤ {GOAL:g}× (flat)" if flat else "",
                       value / base <= GOAL if flat else None, note=note))
    read, git_log = measure_read(ctx, histories[biggest], biggest, 5 if ctx.quick else 11)
    out.append(Row(14, f"puppemon runs --limit 50 at {biggest:,} runs, remote moved", read, "s", git_log,
                   "git log -50 --format=%s runs", f"≤ {READ_GOAL:g} s", read <= READ_GOAL))
    return out


def rows(ctx: Context) -> list[str]:
    return rows_named(ctx, "scale")


def measure(ctx: Context) -> list[Row]:
    return measure_named(ctx, "scale")
