"""Tables and styled lines: plain text off a terminal (rich is the oracle for its layout), rich on one."""
from __future__ import annotations

import io

import pytest

from puppemon.ui import plain_table, print_lines, print_table


def rich_layout(columns, rows) -> list[str]:
    """What rich prints for the same table off a terminal, wide enough that nothing is cut."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name in columns:
        table.add_column(name, no_wrap=True)
    for row in rows:
        table.add_row(*(Text(c) for c in row))
    out = io.StringIO()
    Console(file=out, width=1000, color_system=None).print(table)
    return [line.rstrip() for line in out.getvalue().splitlines()]


@pytest.mark.parametrize("columns, rows", [
    (("id", "flow"), [["20261125T083000Z-7f3a9c", "hello"], ["x", "a-much-longer-flow-name"]]),
    (("a-wide-header", "b"), [["1", ""], ["", "2"]]),
    (("who", "what"), [["日本語のユーザー", "manual by ann@laptop"], ["ascii", "x"]]),    # two cells a character
    (("name", "n"), [["e\u0301te\u0301", "1"], ["plain", "22"]]),                      # combining accents
    (("only",), [["[red]not markup[/]"]]),
])
def test_plain_table_is_what_rich_prints_off_a_terminal(columns, rows):
    assert plain_table(columns, rows) == rich_layout(columns, rows)


def test_styles_are_dropped_off_a_terminal():
    out = io.StringIO()
    print_table(("status", "n"), [[("failed", "red"), "1"], [("succeeded", None), "22"]], file=out)
    print_lines([[("bold", "bold"), " and plain"], [""]], file=out)
    assert out.getvalue() == ("status      n\n" + "─" * 14 + "\nfailed      1\nsucceeded   22\n"
                              "bold and plain\n\n")
