"""Figure 3: recording one run (commit, then push) at growing history sizes; the goal is flat."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from bench import history
from bench.common import Context, Row, git, median
from puppemon.gitstore import Store
from puppemon.history.recorder import Recorder

GOAL = 1.2
TRACKING = "refs/puppemon/remote/runs"


def sizes(ctx: Context) -> list[int]:
    return [100, 1_000] if ctx.quick else [100, 10_000, 100_000]


def rows(ctx: Context) -> list[str]:
    return ([f"record a run: {what} at {n:,} runs" for what in ("commit", "push") for n in sizes(ctx)]
            + [f"record a run: push at {sizes(ctx)[-1]:,} runs after prune"])


KEEP_DAYS = 7


def measure_pruned(ctx: Context, repeat: int) -> tuple[float, float, int]:
    """Median publish time at the largest history once `puppemon prune` kept only the last days.

    Returns (median push, the prune's own commit + push time, runs left in the tip)."""
    from puppemon.history.retention import message, plan

    n = sizes(ctx)[-1]
    remote, local, _ = prepared(ctx, n)
    store = Store(local)
    recorder = Recorder(store, remote=str(remote))
    counter = n + ctx.cache.get(("extra", n), 0)
    cutoff = history.START + (counter - KEEP_DAYS * 288) * history.STEP
    t0 = time.perf_counter()
    pruned = plan(store, store.ref(recorder.ref), cutoff)
    recorder.add({path: None for path in pruned.paths}, message(pruned))
    if not recorder.publish():
        raise RuntimeError("publishing the prune failed")
    prune_time = time.perf_counter() - t0
    left = counter - pruned.runs
    pushes = []
    for k in range(-2, repeat):
        for _ in range(2):
            files, msg = history.files_and_message(counter)
            recorder.add(files, msg)
            counter += 1
        t0 = time.perf_counter()
        if not recorder.publish():
            raise RuntimeError("publishing failed")
        if k >= 0:
            pushes.append(time.perf_counter() - t0)
    ctx.cache[("extra", n)] = counter - n
    return median(pushes), prune_time, left


def prepared(ctx: Context, n: int) -> tuple[Path, Path, float]:
    """(remote, local) bare repositories that both hold `n` records on runs; and the build time.

    Cached, so figure 4 reads the same history."""
    key = ("history", n)
    if key not in ctx.cache:
        root = ctx.dir(f"history-{n}")
        remote, local = root / "remote.git", root / "local.git"
        git("init", "--bare", "--quiet", str(remote))
        t0 = time.perf_counter()
        tip = history.build(remote, 0, n)
        built = time.perf_counter() - t0
        shutil.copytree(remote, local)
        git("--git-dir", str(local), "update-ref", TRACKING, tip)
        ctx.cache[key] = (remote, local, built)
        ctx.cache[("tip", n)] = tip
    return ctx.cache[key]


def measure_all(ctx: Context, repeat: int) -> dict[int, tuple[float, float, float, float]]:
    """Median commit and push time per history size; sizes take turns so drift hits all alike."""
    recorders, counters, commits, pushes, git_pushes = {}, {}, {}, {}, {}
    for n in sizes(ctx):
        remote, local, _ = prepared(ctx, n)
        recorders[n] = Recorder(Store(local), remote=str(remote))
        counters[n] = n + ctx.cache.get(("extra", n), 0)
        commits[n], pushes[n], git_pushes[n] = [], [], []
    for k in range(-2, repeat):  # two rounds of warm-up
        for n, recorder in recorders.items():
            files, message = history.files_and_message(counters[n])
            t0 = time.perf_counter()
            recorder.add(files, message)
            t_commit = time.perf_counter() - t0
            files, message = history.files_and_message(counters[n] + 1)
            recorder.add(files, message)
            counters[n] += 2
            t0 = time.perf_counter()
            if not recorder.publish():
                raise RuntimeError(f"publishing to {recorder.remote} failed")
            t_push = time.perf_counter() - t0
            # the same push by git alone, for what git itself costs at this size
            files, message = history.files_and_message(counters[n])
            tip = recorder.add(files, message)
            counters[n] += 1
            t0 = time.perf_counter()
            git("--git-dir", str(recorder.store.git_dir), "push", "--quiet", recorder.remote,
                f"{tip}:refs/heads/runs")
            t_git = time.perf_counter() - t0
            if k >= 0:
                commits[n].append(t_commit)
                pushes[n].append(t_push)
                git_pushes[n].append(t_git)
    for n in recorders:
        ctx.cache[("extra", n)] = counters[n] - n
    return {n: (median(commits[n]), median(pushes[n]), prepared(ctx, n)[2], median(git_pushes[n]))
            for n in recorders}


def measure(ctx: Context) -> list[Row]:
    repeat = 7 if ctx.quick else 21
    results = measure_all(ctx, repeat)
    smallest = sizes(ctx)[0]
    out = []
    for index, what in enumerate(("commit", "push")):
        base = results[smallest][index]
        for n in sizes(ctx):
            value = results[n][index]
            note = (f"history built in {results[n][2]:.1f} s" if index == 0
                    else f"`git push` of the same kind of commit alone: {results[n][3] * 1000:.0f} ms")
            if n == smallest:
                out.append(Row(3, f"record a run: {what} at {n:,} runs", value, "s", base,
                               f"same at {smallest} runs", "", None, note=note))
            else:
                out.append(Row(3, f"record a run: {what} at {n:,} runs", value, "s", base,
                               f"same at {smallest} runs", f"≤ {GOAL:g}× (flat)", value / base <= GOAL,
                               note=note))
    pushed, prune_time, left = measure_pruned(ctx, repeat)
    n = sizes(ctx)[-1]
    base = results[smallest][1]
    out.append(Row(3, f"record a run: push at {n:,} runs after prune", pushed, "s", base,
                   f"same at {smallest} runs", f"≤ {GOAL:g}× (flat)", pushed / base <= GOAL,
                   note=f"`puppemon prune` kept the last {KEEP_DAYS} days ({left:,} runs) in the tip, "
                        f"in one commit + push of {prune_time:.1f} s"))
    return out
