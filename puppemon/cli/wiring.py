"""What every command's click wiring uses: the call into puppemon.commands, and shell completion."""
from __future__ import annotations

import sys
from importlib import import_module

import click


def call(module: str, **kwargs) -> None:
    """Import puppemon.commands.<module> lazily (keeps --help fast) and exit with its code."""
    from puppemon.errors import report

    try:
        code = import_module(f"puppemon.commands.{module}").main(**kwargs)
    except (click.exceptions.Exit, click.ClickException, click.Abort):
        raise
    except BaseException as exc:  # noqa: BLE001 - the one place errors become messages
        if isinstance(exc, SystemExit):
            raise
        code = report(exc)
    sys.exit(code or 0)


def complete(kind: str):
    """A click shell_complete callback: flow names (`flows`), run ids (`runs`) or both (`both`), read from
    the local repository (commands/complete.py; imported only when completing)."""
    def complete(ctx: click.Context, _param, incomplete: str) -> list[str]:
        from puppemon.commands import complete as found

        directory = str(ctx.params.get("directory") or ".")
        names = found.flow_names(directory, incomplete) if kind in ("flows", "both") else []
        return names + (found.run_ids(directory, incomplete) if kind in ("runs", "both") else [])
    return complete
