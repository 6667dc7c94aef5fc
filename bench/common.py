"""What every figure shares: a scrubbed environment, timing, rows of the table."""
from __future__ import annotations

import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence


@dataclass
class Context:
    """Sizes for this run and where it may write."""

    quick: bool
    root: Path                      # a fresh temporary directory, removed at the end
    cache: dict = field(default_factory=dict)

    def dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass
class Row:
    """One line of the table: a figure, its baseline and its goal."""

    figure: int
    label: str
    value: float | None             # seconds, bytes, ... (see unit)
    unit: str                       # "s", "ms", "B", "MB", "%"
    baseline: float | None = None
    baseline_label: str = ""
    goal: str = ""
    ok: bool | None = None          # None: no goal for this row, or not measured
    ratio: float | None = None      # default value / baseline
    note: str = ""

    def __post_init__(self) -> None:
        if self.ratio is None and self.value is not None and self.baseline:
            self.ratio = self.value / self.baseline


def setup_environment(root: Path) -> None:
    """This process and its children: HOME in `root`, a fixed git identity, no inherited GIT_*."""
    home = root / "home"
    templates = home / "git-templates"
    templates.mkdir(parents=True, exist_ok=True)
    for key in list(os.environ):
        if key.startswith(("GIT_", "PUPPEMON_")):
            del os.environ[key]
    # The puppemon processes a figure starts run this checkout's code, not whichever checkout the
    # installed console script was installed from (a git worktree shares one install).
    checkout = str(Path(__file__).resolve().parent.parent)
    os.environ["PYTHONPATH"] = os.pathsep.join([checkout, *filter(None, [os.environ.get("PYTHONPATH")])])
    # An installed puppemon has its bytecode (pip compiles it at install); a command that compiled every
    # module it imports each time (PYTHONDONTWRITEBYTECODE, as some shells set) is not what users run.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    compileall.compile_dir(os.path.join(checkout, "puppemon"), quiet=1)
    os.environ.update({
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "TZ": "UTC",
        "LC_ALL": "C",
    })
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Bench User\n\temail = bench@example.com\n"
        f"[init]\n\tdefaultBranch = main\n\ttemplateDir = {templates}\n"
        "[advice]\n\tdetachedHead = false\n"
        # a pack per push keeps small pushes cheap and comparable; gc is explicit (figure 5)
        "[gc]\n\tauto = 0\n"
    )


def make_root() -> Path:
    base = os.environ.get("PUPPEMON_BENCH_DIR")
    if base:
        Path(base).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="puppemon-bench-", dir=base or None))


def remove_root(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)


def git(*args: str, cwd: Path | str | None = None, env: dict | None = None,
        input: bytes | None = None) -> str:
    """Run git; raise with its stderr on failure; return stdout as text."""
    proc = subprocess.run(["git", *args], cwd=cwd, input=input, capture_output=True,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed ({proc.returncode}): "
                           f"{proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout.decode(errors="replace")


def puppemon_argv() -> list[str]:
    """How a user runs puppemon: the installed console script next to this Python, else -m."""
    script = Path(sys.executable).parent / "puppemon"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "puppemon"]


def run(argv: Sequence[str], cwd: Path | str | None = None, check: bool = True,
        timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), cwd=cwd, capture_output=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {proc.returncode}: "
                           f"{(proc.stderr or proc.stdout).decode(errors='replace').strip()[-2000:]}")
    return proc


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(fns: dict[str, Callable[[], object]], repeat: int, warmup: int = 1) -> dict[str, list[float]]:
    """Time each callable `repeat` times, taking turns so drift hits all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            times[name].append(timed(fn))
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 60 values is the largest but none)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-pct * len(ordered) // 100))))
    return ordered[rank - 1]


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "ms":
        return f"{value * 1000:.1f} ms"
    if unit == "B":
        return f"{value / 1024:.2f} KB" if value >= 1024 else f"{value:.0f} B"
    if unit == "MB":
        return f"{value / 2**20:.1f} MB"
    if unit == "%":
        return f"{value:.2f} %"
    if unit == "x":
        return f"{value:.0f}"
    return f"{value:g} {unit}"


def stop_daemon(daemon: subprocess.Popen, log) -> None:
    """SIGTERM a daemon process, kill it if it has not exited in 30 s, and close its log."""
    import signal

    daemon.send_signal(signal.SIGTERM)
    try:
        daemon.wait(30)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()
    log.close()
