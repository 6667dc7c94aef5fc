"""`puppemon validate` and `puppemon init`: exact output through click and through a real process."""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone

from click.testing import CliRunner

from puppemon.cli import cli
from puppemon.commands import init as init_command, validate as validate_command
from puppemon.project.manifest import load
from puppemon.project.triggers import next_fire
from tests.conftest import puppemon

MANIFEST = """\
version: 1
defaults:
  timezone: Asia/Taipei
flows:
  daily-report:
    entrypoint: reports/daily.py:main
    schedule: "0 8 * * 1-5"
  backup:
    command: ["./backup.sh", "--fast"]
    every: 6h
  nightly:
    command: make
    schedule: ["0 2 * * *", "30 14 * * sun"]
    timezone: America/New_York
    run_on_deploy: true
  rebuild-index:
    command: make index
    run_on_deploy: true
  adhoc:
    command: make x
"""


DAILY = "def main(days=1):\n    return days\n"


def write_project(directory) -> None:
    (directory / "puppemon.yaml").write_text(MANIFEST)
    (directory / "reports").mkdir()
    (directory / "reports" / "daily.py").write_text(DAILY)


def _expected(daily: str, nightly: str, backup: str) -> str:
    return (
        "puppemon.yaml is valid: 5 flows\n"
        "flow            trigger                                                       next run\n"
        + "─" * 98 + "\n"
        "daily-report    cron 0 8 * * 1-5 (Asia/Taipei)                                " + daily + "\n"
        "backup          every 6h                                                      " + backup + "\n"
        "nightly         cron 0 2 * * *, 30 14 * * sun (America/New_York), on deploy   " + nightly + "\n"
        "rebuild-index   on deploy                                                     next deploy\n"
        "adhoc           manual                                                        on trigger\n"
    )


def _candidates(directory, before: datetime, after: datetime) -> set[str]:
    """The exact text for `now` at the start and at the end of the call (a minute may turn)."""
    flows = load(directory).flows
    return {_expected(*(next_fire(flows[name], now).strftime("%Y-%m-%d %H:%M %Z")
                        for name in ("daily-report", "nightly", "backup")))
            for now in (before, after)}


def test_validate_render_with_a_fixed_clock(tmp_path, capsys):
    write_project(tmp_path)
    now = datetime(2026, 11, 25, 23, 30, tzinfo=timezone.utc)      # Thursday 07:30 in Taipei
    assert validate_command.main(str(tmp_path), now=now) == 0
    assert capsys.readouterr().out == _expected("2026-11-26 08:00 CST", "2026-11-26 02:00 EST",
                                                     "2026-11-26 08:00 CST")   # 6h steps from the epoch: 00:00 UTC


def test_validate_through_click(tmp_path):
    write_project(tmp_path)
    before = datetime.now(timezone.utc)
    result = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    after = datetime.now(timezone.utc)
    assert result.exit_code == 0, result.output
    assert result.output in _candidates(tmp_path, before, after)


def test_validate_in_a_real_process(tmp_path):
    write_project(tmp_path)
    before = datetime.now(timezone.utc)
    proc = puppemon("validate", cwd=tmp_path, env={"COLUMNS": "20"})   # a narrow terminal changes nothing
    after = datetime.now(timezone.utc)
    assert proc.stderr == ""
    assert proc.stdout in _candidates(tmp_path, before, after)


def test_validate_one_flow_and_no_flows(tmp_path, capsys):
    (tmp_path / "puppemon.yaml").write_text("version: 1\nflows:\n  a:\n    command: x\n    every: 90s\n")
    now = datetime(2026, 11, 25, 23, 30, 10, tzinfo=timezone.utc)
    assert validate_command.main(str(tmp_path), now=now) == 0
    assert capsys.readouterr().out == (
        "puppemon.yaml is valid: 1 flow\n"
        "flow   trigger       next run\n"
        + "─" * 41 + "\n"
        "a      every 1m30s   2026-11-25 23:31 UTC\n")   # 90s steps from the epoch: 23:31:30
    (tmp_path / "puppemon.yaml").write_text("version: 1\nflows: {}\n")
    assert validate_command.main(str(tmp_path)) == 0
    assert capsys.readouterr().out == "puppemon.yaml is valid: 0 flows\n"


def test_validate_invalid_manifest(tmp_path):
    (tmp_path / "puppemon.yaml").write_text("version: 1\nflows:\n  backup:\n    command: x\n    every: often\n")
    proc = puppemon("validate", str(tmp_path), check=False)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == ("Error: puppemon.yaml:5:12: flows.backup.every: 'often' is not a duration "
                           "(use 30s, 10m, 2h, 1d)\n")
    result = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert result.exit_code == 1


def test_validate_without_a_manifest(tmp_path):
    proc = puppemon("validate", check=False, cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == "Error: no puppemon.yaml in .; run `puppemon init` to create one\n"


def test_init_then_validate(tmp_path):
    proc = puppemon("init", cwd=tmp_path)
    assert proc.stdout == (
        "wrote puppemon.yaml\n"
        "wrote flows/hello.py\n"
        "next: run `puppemon validate`, then `puppemon push` to deploy\n")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "flows", "flows/hello.py", "puppemon.yaml"]
    flows = load(tmp_path).flows
    assert list(flows) == ["hello"]
    assert (flows["hello"].entrypoint, flows["hello"].trigger("cron").exprs, flows["hello"].params) == (
        "flows/hello.py:main", ("0 8 * * *",), {"name": "world"})
    assert puppemon("validate", cwd=tmp_path).stdout.startswith("puppemon.yaml is valid: 1 flow\n")
    # the example flow does what its comment says
    out = subprocess.run([sys.executable, "-c", "import runpy; print(runpy.run_path('flows/hello.py')['main']('you'))"],
                         cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert out == "Hello, you!\n{'greeting': 'Hello, you!'}\n"


def test_init_into_a_new_directory(tmp_path):
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "my project")])
    assert result.exit_code == 0
    target = tmp_path / "my project"
    assert result.output == (
        f"wrote {target}/puppemon.yaml\n"
        f"wrote {target}/flows/hello.py\n"
        f"next: run `puppemon validate '{target}'`, then `puppemon push -C '{target}'` to deploy\n")
    assert load(target).flows["hello"].timezone == "UTC"


def test_init_never_overwrites(tmp_path):
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "hello.py").write_text("mine\n")
    proc = puppemon("init", check=False, cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == ("Error: flows/hello.py already exists; puppemon init never overwrites files "
                           "(remove it or run init in another directory)\n")
    assert not (tmp_path / "puppemon.yaml").exists()                 # nothing written
    assert (tmp_path / "flows" / "hello.py").read_text() == "mine\n"
    (tmp_path / "flows" / "hello.py").unlink()
    (tmp_path / "puppemon.yaml").write_text("mine\n")
    proc = puppemon("init", str(tmp_path), check=False)
    assert proc.returncode == 1
    assert proc.stderr == (f"Error: {tmp_path}/puppemon.yaml already exists; puppemon init never overwrites files "
                           "(remove it or run init in another directory)\n")
    assert not (tmp_path / "flows" / "hello.py").exists()
    assert (tmp_path / "puppemon.yaml").read_text() == "mine\n"


def test_init_github_writes_the_workflow_too(tmp_path, capsys):
    source = "git+https://git.example.com/me/puppemon.git@v0.1.0"
    assert init_command.main(str(tmp_path), github=True, puppemon_source=source) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path}/.github/workflows/puppemon-push.yml (deploys on every push to main)\n" in out
    assert f'PUPPEMON_SOURCE: "{source}"' in (tmp_path / ".github" / "workflows" / "puppemon-push.yml").read_text()


def test_help_texts():
    runner = CliRunner()
    assert "Check puppemon.yaml and show each flow's trigger and next fire time." in runner.invoke(
        cli, ["validate", "--help"]).output
    assert "Scaffold puppemon.yaml and an example flow (never overwrites)." in runner.invoke(
        cli, ["init", "--help"]).output
