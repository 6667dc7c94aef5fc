"""The benchmarks run in quick mode, so their code cannot rot (figures are measured, not asserted)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import FIGURES, OPT_IN, figure_module, history
from bench.common import Context
from puppemon.gitstore import Store
from puppemon.history.recorder import Recorder
from tests.conftest import git

ROOT = Path(__file__).resolve().parent.parent


def labels(ctx: Context) -> list[str]:
    found = []
    for name in (n for n in FIGURES if n not in OPT_IN):
        module = figure_module(name)
        found += module.rows_named(ctx, name) if hasattr(module, "rows_named") else module.rows(ctx)
    return found


@pytest.mark.slow
def test_quick_run_prints_every_figure(tmp_path):
    output = tmp_path / "BENCHMARKS.md"
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--output", str(output)], cwd=ROOT,
                          capture_output=True, text=True, timeout=240,
                          env={**os.environ, "PUPPEMON_BENCH_DIR": str(tmp_path / "work")})
    assert proc.returncode == 0, proc.stderr[-4000:]
    expected = labels(Context(quick=True, root=tmp_path))
    for label in expected:
        assert label in proc.stdout, f"no row {label!r} in:\n{proc.stdout}"
    assert "error:" not in proc.stdout, proc.stdout
    report = output.read_text()
    for label in expected:
        assert label in report
    assert "## Machine" in report and "python -m bench --quick" in report
    # nothing is left behind in the work directory
    assert list((tmp_path / "work").iterdir()) == []


def test_history_builder_writes_the_trees_the_recorder_writes(tmp_path):
    fast = tmp_path / "fast.git"
    slow = tmp_path / "slow.git"
    git("init", "--bare", "--quiet", str(fast))
    git("init", "--bare", "--quiet", str(slow))
    history.build(fast, 0, 30)
    tip = history.build(fast, 30, 20)
    recorder = Recorder(Store(slow))
    for i in range(50):
        files, message = history.files_and_message(i)
        last = recorder.add(files, message)
    assert git("--git-dir", str(fast), "rev-parse", f"{tip}^{{tree}}") == \
        git("--git-dir", str(slow), "rev-parse", f"{last}^{{tree}}")
    assert git("--git-dir", str(fast), "rev-list", "--count", "runs").strip() == "50"
    assert git("--git-dir", str(fast), "log", "-1", "--format=%B", "runs") == \
        git("--git-dir", str(slow), "log", "-1", "--format=%B", "runs")
    git("--git-dir", str(fast), "fsck", "--strict", "--no-dangling")
