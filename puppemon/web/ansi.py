"""ANSI colours in a log, as HTML: the text escaped, SGR colours and bold as <span class>, other escape
sequences dropped."""
from __future__ import annotations

import re

from markupsafe import Markup, escape

SGR = re.compile(r"\x1b\[([0-9;]*)m")
OTHER = re.compile(r"\x1b(?:\[[0-9;?]*[A-Za-ln-z]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
COLOURS = ("black", "red", "green", "yellow", "blue", "magenta", "cyan", "white")


def _apply(codes: str, state: dict) -> None:
    numbers = iter(int(c) if c.isdigit() else 0 for c in (codes.split(";") if codes else ["0"]))
    for code in numbers:
        if code in (38, 48):   # 256 colours (5;N) or RGB (2;R;G;B): not shown, and not codes of their own
            for _ in range({5: 1, 2: 3}.get(next(numbers, 0), 0)):
                next(numbers, None)
        elif code == 0:
            state.clear()
        elif code == 1:
            state["bold"] = "bold"
        elif code == 22:
            state.pop("bold", None)
        elif 30 <= code <= 37 or 90 <= code <= 97:
            state["fg"] = "fg-" + COLOURS[code % 10] + ("-bright" if code >= 90 else "")
        elif code == 39:
            state.pop("fg", None)
        elif 40 <= code <= 47:
            state["bg"] = "bg-" + COLOURS[code % 10]
        elif code == 49:
            state.pop("bg", None)


def to_html(text: str) -> Markup:
    """`text` (a log) as HTML for a <pre>: every character escaped, its colours as classes."""
    text = OTHER.sub("", text)
    parts, state, pos = [], {}, 0
    for match in SGR.finditer(text):
        parts.append(_chunk(text[pos:match.start()], state))
        _apply(match.group(1), state)
        pos = match.end()
    parts.append(_chunk(text[pos:], state))
    return Markup("".join(parts))


def _chunk(text: str, state: dict) -> str:
    if not text:
        return ""
    if not state:
        return str(escape(text))
    return f'<span class="{" ".join(sorted(state.values()))}">{escape(text)}</span>'
