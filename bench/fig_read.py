"""Figure 4: `puppemon runs --limit 50` and `puppemon logs <id>` in a clone of a runs
branch with 100,000 records (each fetches the remote first, with --fetch: by default a
read within 5 s of the last fetch reuses it, which is the --no-fetch note; the history
itself was fetched once before timing), against `git log -50 --format=%s runs` and
`git show runs:<path>/log.txt` in the same repository."""
from __future__ import annotations

import shutil

from bench import history
from bench.common import Context, Row, git, interleaved, median, puppemon_argv, run
from bench.fig_record import prepared
from puppemon.formats import run_dir

GOAL = 0.3


def size(ctx: Context) -> int:
    return 1_000 if ctx.quick else 100_000


def rows(ctx: Context) -> list[str]:
    return [f"puppemon runs --limit 50 ({size(ctx):,} runs)", f"puppemon logs <id> ({size(ctx):,} runs)"]


def history_tip(ctx: Context, n: int) -> str:
    return ctx.cache[("tip", n)]


def measure(ctx: Context) -> list[Row]:
    n = size(ctx)
    remote, _local, _ = prepared(ctx, n)
    project = ctx.dir(f"read-{n}") / "project"
    git("init", "--quiet", str(project))
    git("remote", "add", "origin", str(remote), cwd=project)
    # The clone already has the history (its pack copied: fetching 100,000 commits once is
    # not what is measured); the first `runs` fetches only what came since.
    pack = project / ".git" / "objects" / "pack"
    for f in (remote / "objects" / "pack").iterdir():
        shutil.copyfile(f, pack / f.name)
    tip = git("--git-dir", str(remote), "rev-parse", "runs").strip()
    packed = git("--git-dir", str(project / ".git"), "rev-parse", "--verify", "-q", history_tip(ctx, n)).strip()
    git("update-ref", "refs/heads/runs", packed, cwd=project)
    git("update-ref", "refs/remotes/origin/runs", packed, cwd=project)
    cli = puppemon_argv()
    run([*cli, "runs", "--limit", "1"], cwd=project)
    assert git("rev-parse", "runs", cwd=project).strip() == tip
    target = history.record(n // 2)
    path = run_dir(target["flow"], target["id"])
    repeat = 5 if ctx.quick else 15

    def runs() -> None:
        out = run([*cli, "runs", "--limit", "50", "--fetch"], cwd=project).stdout.decode()
        assert out.count("succeeded") == 50, out

    def runs_no_fetch() -> None:
        run([*cli, "runs", "--limit", "50", "--no-fetch"], cwd=project)

    def logs() -> None:
        out = run([*cli, "logs", target["id"], "--fetch"], cwd=project).stdout
        assert out == history.LOG, out

    def logs_no_fetch() -> None:
        run([*cli, "logs", target["id"], "--no-fetch"], cwd=project)

    times = interleaved({
        "runs": runs, "runs_nf": runs_no_fetch,
        "git_log": lambda: run(["git", "log", "-50", "--format=%s", "runs"], cwd=project),
        "logs": logs, "logs_nf": logs_no_fetch,
        "git_show": lambda: run(["git", "show", f"runs:{path}/log.txt"], cwd=project),
    }, repeat=repeat)
    label_runs, label_logs = rows(ctx)
    m = {k: median(v) for k, v in times.items()}
    return [
        Row(4, label_runs, m["runs"], "s", m["git_log"], "git log -50 --format=%s runs", f"≤ {GOAL:g} s",
            m["runs"] <= GOAL, note=f"with --no-fetch: {m['runs_nf'] * 1000:.0f} ms"),
        Row(4, label_logs, m["logs"], "s", m["git_show"], "git show runs:<path>/log.txt", f"≤ {GOAL:g} s",
            m["logs"] <= GOAL, note=f"with --no-fetch: {m['logs_nf'] * 1000:.0f} ms"),
    ]
