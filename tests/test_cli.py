"""The command line as a whole: help for every command, --version, and a --help that stays light."""
from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from puppemon import __version__
from puppemon.cli import cli

HEAVY = ("pygit2", "apscheduler", "rich", "yaml", "watchdog", "puppemon.gitstore", "puppemon.daemon.loop",
         "puppemon.project.manifest")


def all_commands(group=cli, prefix=()):
    for name, command in sorted(group.commands.items()):
        yield (*prefix, name), command
        if hasattr(command, "commands"):
            yield from all_commands(command, (*prefix, name))


def test_every_command_has_help_text():
    runner = CliRunner()
    names = []
    for path, command in all_commands():
        names.append(" ".join(path))
        assert command.help and command.help.strip(), f"puppemon {' '.join(path)} has no help text"
        result = runner.invoke(cli, [*path, "--help"], prog_name="puppemon")
        assert result.exit_code == 0 and result.output.startswith(f"Usage: puppemon {' '.join(path)}")
        for param in command.params:
            if param.param_type_name == "option" and param.name != "help":
                assert param.help, f"puppemon {' '.join(path)} {param.opts[0]} has no help"
    assert {"init", "validate", "push", "run", "runs", "logs", "daemon", "status", "trigger", "cancel",
            "quickstart", "secrets"} <= set(names)


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.output == f"puppemon, version {__version__}\n"


def test_help_imports_no_heavy_module():
    code = ("import sys\nfrom puppemon.cli import cli\n"
            "try:\n    cli(['--help'], prog_name='puppemon')\nexcept SystemExit:\n    pass\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "[]"


def test_unknown_command_is_a_usage_error():
    result = subprocess.run([sys.executable, "-m", "puppemon", "deploy"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "No such command 'deploy'" in result.stderr and "Traceback" not in result.stderr
