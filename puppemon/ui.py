"""Terminal output shared by the commands: logging set-up, tables and styled lines.

The one place that decides what output costs: rich is imported only when the stream
is a terminal (colours, the terminal's width). Off a terminal (a pipe, a file, a
test) tables are fixed-width columns written directly, the same text rich printed
there, and nothing is cut to fit a width: scripts read it.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import IO

# A piece of text and its style (a rich style name such as "red", or None).
Cell = str | tuple[str, str | None]
GAP = 3                 # between columns, as rich's SIMPLE_HEAD box with padding 1 has it
RULE = "─"


def setup_logging(level: int = logging.INFO) -> None:
    """One human line per event on stderr: rich when a terminal, plain timestamped lines otherwise."""
    logger = logging.getLogger("puppemon")
    logger.handlers.clear()
    logger.setLevel(level)
    logger.propagate = False
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, markup=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s", datefmt="[%X]"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S%z"))
    logger.addHandler(handler)


def is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):   # a replaced or closed stream
        return False


def text_of(cell: Cell) -> str:
    return cell if isinstance(cell, str) else cell[0]


def width(text: str) -> int:
    """Terminal cells `text` takes: East Asian wide characters two, combining marks none."""
    if text.isascii():
        return len(text)
    import unicodedata

    return sum(0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
               for ch in text)


def plain_table(columns: Sequence[str], rows: Sequence[Sequence[Cell]]) -> list[str]:
    """The table as lines of text: a header, a rule as wide as the table, then the rows, left-aligned."""
    texts = [list(columns)] + [[text_of(c) for c in row] for row in rows]
    widths = [max(width(r[i]) for r in texts) for i in range(len(columns))]
    total = sum(widths) + GAP * (len(widths) - 1)

    def line(cells: list[str]) -> str:
        return (" " * GAP).join(c + " " * (w - width(c)) for c, w in zip(cells, widths)).rstrip()

    return [line(texts[0]), RULE * total] + [line(r) for r in texts[1:]]


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Cell]], file: IO[str] | None = None,
                header_style: str | None = None) -> None:
    """Print a table: through rich on a terminal, as plain columns anywhere else."""
    file = file or sys.stdout
    if not is_terminal(file):
        _write(file, plain_table(columns, rows))
        return
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style=header_style)
    for name in columns:
        table.add_column(name, no_wrap=True)
    for row in rows:
        table.add_row(*(_rich_text(c) for c in row))
    con = _console(file)
    with con.capture() as capture:
        con.print(table)
    _write(file, [ln.rstrip() for ln in capture.get().splitlines()])  # rich pads the last column


def print_lines(lines: Sequence[Sequence[Cell]], file: IO[str] | None = None) -> None:
    """Print lines made of styled pieces: coloured on a terminal, the bare text anywhere else."""
    file = file or sys.stdout
    if not is_terminal(file):
        _write(file, ["".join(text_of(c) for c in line) for line in lines])
        return
    from rich.text import Text

    con = _console(file)
    for line in lines:
        con.print(Text.assemble(*(_rich_text(c) for c in line)), soft_wrap=True)


def _rich_text(cell: Cell):
    from rich.text import Text

    return Text(cell) if isinstance(cell, str) else Text(cell[0], style=cell[1] or "")


def _console(file: IO[str]):
    from rich.console import Console

    return Console(file=file, highlight=False, soft_wrap=False)


def _write(file: IO[str], lines: list[str]) -> None:
    file.write("".join(line + "\n" for line in lines))
    file.flush()
