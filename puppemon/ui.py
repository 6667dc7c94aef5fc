"""Terminal output shared by the commands: logging set-up, tables and styled lines.

The one place that decides what output costs: rich is imported only when the stream
is a terminal (for its colours). Tables are laid out here: on a terminal they fit its
width ($COLUMNS first) by narrowing wrapping columns, then dropping columns by the
priority each command gives them (Column.drop); an id is never cut. Off a terminal (a
pipe, a file, a test) every column is printed whole, fixed-width, whatever the width:
scripts read it.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Column:
    """A table column and how it gives way when the terminal is too narrow for the whole table.

    `drop`: 0 is always shown; otherwise the column with the highest `drop` goes first. `wrap`: the
    column may be narrowed (down to `least` cells, never below its longest word) and its text wraps
    at spaces. Nothing is ever cut: a word (an id) stays whole, on one line.
    """

    name: str
    drop: int = 0
    wrap: bool = False
    least: int = 0


def _column(spec: str | Column) -> Column:
    return spec if isinstance(spec, Column) else Column(spec)


def terminal_width(file: IO[str]) -> int | None:
    """The width tables fit on `file`: its terminal's ($COLUMNS first), None off a terminal (no limit)."""
    if not is_terminal(file):
        return None
    import shutil

    return max(shutil.get_terminal_size().columns, 20)


def fit(columns: Sequence[str | Column], texts: Sequence[Sequence[str]],
        limit: int | None) -> tuple[list[int], list[int]]:
    """(the columns kept, by index; the width of each kept one) for a table at most `limit` cells wide:
    wrapping columns narrow first, then columns are dropped by priority. With no limit, all, whole."""
    specs = [_column(c) for c in columns]
    rows = [[c.name for c in specs]] + [list(r) for r in texts]
    natural = [max(width(r[i]) for r in rows) for i in range(len(specs))]
    least = [max([width(specs[i].name), specs[i].least] + [width(w) for r in rows[1:] for w in r[i].split(" ")])
             if specs[i].wrap else natural[i] for i in range(len(specs))]
    least = [min(a, b) for a, b in zip(least, natural)]
    keep = list(range(len(specs)))
    while True:
        gaps = GAP * (len(keep) - 1)
        if limit is None or sum(natural[i] for i in keep) + gaps <= limit:
            return keep, [natural[i] for i in keep]
        if sum(least[i] for i in keep) + gaps <= limit:
            widths = {i: natural[i] for i in keep}
            excess = sum(widths.values()) + gaps - limit
            for i in sorted((i for i in keep if specs[i].wrap), key=lambda i: -specs[i].drop):
                give = min(excess, natural[i] - least[i])
                widths[i] -= give
                excess -= give
            return keep, [widths[i] for i in keep]
        droppable = [i for i in keep if specs[i].drop]
        if not droppable:   # wider than the terminal even so: it wraps the lines, nothing is cut
            return keep, [least[i] for i in keep]
        keep.remove(max(droppable, key=lambda i: (specs[i].drop, i)))


def wrap_words(text: str, cells: int) -> list[str]:
    """`text` in lines of at most `cells` cells, broken at spaces; a longer word stays whole."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and width(lines[-1]) + 1 + width(word) <= cells:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def table_lines(columns: Sequence[str | Column], rows: Sequence[Sequence[Cell]], limit: int | None = None,
                header_style: str | None = None, rule: bool = True, indent: str = "") -> list[list[Cell]]:
    """The table as lines of styled pieces: a header, a rule as wide as the table, then the rows,
    left-aligned and fitted to `limit` cells (see fit)."""
    texts = [[text_of(c) for c in row] for row in rows]
    keep, widths = fit(columns, texts, limit)
    names = [_column(columns[i]).name for i in keep]
    lines = [[[(piece, _style(row[i])) for piece in wrap_words(text_of(row[i]), w)]
              if width(text_of(row[i])) > w else [(text_of(row[i]), _style(row[i]))]
              for i, w in zip(keep, widths)] for row in rows]
    # a wrapped column is as wide as its widest line, which may be less than it was given
    widths = [max([width(n)] + [width(piece[0]) for row in lines for piece in row[k]])
              for k, n in enumerate(names)]
    out: list[list[Cell]] = [_line(indent, [[(n, header_style)] for n in names], widths)]
    if rule:
        out.append([indent + RULE * (sum(widths) + GAP * (len(widths) - 1))])
    for parts in lines:
        for k in range(max((len(p) for p in parts), default=1)):
            out.append(_line(indent, [p[k:k + 1] for p in parts], widths))
    return out


def _style(cell: Cell) -> str | None:
    return None if isinstance(cell, str) else cell[1]


def _line(indent: str, cells: list[list[tuple[str, str | None]]], widths: list[int]) -> list[Cell]:
    """One physical line: each cell padded to its width, the gaps between, no trailing spaces."""
    last = max((n for n, c in enumerate(cells) if c and c[0][0]), default=-1)
    line: list[Cell] = [indent] if indent else []
    for n, (cell, w) in enumerate(zip(cells[:last + 1], widths)):
        text, style = cell[0] if cell else ("", None)
        line.append((text, style) if style else text)
        if n < last:
            line.append(" " * (w - width(text) + GAP))
    return line or [""]


def plain_table(columns: Sequence[str | Column], rows: Sequence[Sequence[Cell]]) -> list[str]:
    """The table as lines of text: a header, a rule as wide as the table, then the rows, left-aligned."""
    return ["".join(text_of(c) for c in line) for line in table_lines(columns, rows)]


def print_table(columns: Sequence[str | Column], rows: Sequence[Sequence[Cell]], file: IO[str] | None = None,
                header_style: str | None = None) -> None:
    """Print a table: coloured and fitted to the width on a terminal (see fit), whole anywhere else."""
    file = file or sys.stdout
    print_lines(table_lines(columns, rows, terminal_width(file), header_style), file)


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
