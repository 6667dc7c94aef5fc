"""The table on stdout and BENCHMARKS.md."""
from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

from bench.common import Context, Row, fmt

HEADER = ("#", "figure", "puppemon", "baseline", "ratio", "goal", "")
NOTES = Path(__file__).resolve().parent / "notes.md"


def mark(row: Row) -> str:
    if row.value is None:
        return "n/a"
    return {True: "✓", False: "✗", None: ""}[row.ok]


def cells(row: Row) -> tuple[str, ...]:
    baseline = f"{fmt(row.baseline, row.unit)} ({row.baseline_label})" if row.baseline is not None else (
        row.baseline_label or "-")
    ratio = f"{row.ratio:.2f}×" if row.ratio is not None else "-"
    value = fmt(row.value, row.unit) if row.value is not None else "-"
    return (str(row.figure or ""), row.label, value, baseline, ratio, row.goal or "-", mark(row))


def table(rows: list[Row]) -> str:
    """Fixed-width text: one line per row, notes indented under it."""
    body = [cells(r) for r in rows]
    widths = [max(len(c[i]) for c in [HEADER, *body]) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(HEADER, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    for row, c in zip(rows, body):
        lines.append("  ".join(x.ljust(w) for x, w in zip(c, widths)).rstrip())
        if row.note:
            lines.append(" " * (widths[0] + 2) + f"  {row.note}")
    return "\n".join(lines)


def _output(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def machine() -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import pygit2
        pygit2_version = f"{pygit2.__version__} (libgit2 {pygit2.LIBGIT2_VERSION})"
    except ImportError:
        pygit2_version = "?"
    return {
        "uname -a": _output(["uname", "-a"]),
        "CPU": cpu,
        "nproc": str(os.cpu_count()),
        "python": sys.version.split()[0] + f" ({sys.executable})",
        "git": _output(["git", "--version"]),
        "pygit2": pygit2_version,
        "load average (1, 5, 15 min) at the end": _loadavg(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(rows: list[Row], info: dict[str, str], command: str, elapsed: float, ctx: Context) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{command}` (took {elapsed / 60:.1f} min). Every figure is a median over "
        "repeated runs, next to a baseline measured in the same run; the ratio is puppemon ÷ baseline. "
        "Goals come from the design; ✓ met, ✗ missed. Re-run it to refresh this page.",
        "",
        "| " + " | ".join(h or "ok" for h in HEADER) + " |",
        "|" + "|".join("---" for _ in HEADER) + "|",
    ]
    for row in rows:
        c = list(cells(row))
        if row.note:
            c[1] += f"<br><sub>{row.note}</sub>"
        lines.append("| " + " | ".join(_md(x) for x in c) + " |")
    lines += ["", "## Machine", ""]
    lines += [f"- {k}: `{v}`" for k, v in info.items()]
    lines += ["", "## How each figure is measured", ""]
    from bench import FIGURES, figure_module
    seen = set()
    for name in FIGURES:
        module = figure_module(name)
        if module.__name__ in seen:
            continue
        seen.add(module.__name__)
        doc = (module.__doc__ or "").strip()
        if doc:
            lines += [f"- **{name}** ({module.__name__}): " + " ".join(doc.split()), ""]
    if NOTES.exists():
        lines += ["## Notes", "", NOTES.read_text().strip(), ""]
    return "\n".join(lines).rstrip() + "\n"
