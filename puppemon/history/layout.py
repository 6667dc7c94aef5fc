"""The layout version of a remote's runs branch: `control/format.json`, the one place that knows it.

    control/format.json   {"schema": 1, "layout": N, "requires": "<first puppemon version that knows N>"}

A daemon writes it when the branch has none (`missing`, `record`). Every writer checks it
before it pushes (the Recorder, `check`): a layout newer than LAYOUT means records, claims or
pauses this version would not honour, so it refuses to write, naming the version to upgrade
to. A branch without the file is in layout 1. Like the rest of control/, the file is never
rotated nor pruned.
"""
from __future__ import annotations

import json

from puppemon.errors import PuppemonError
from puppemon.history.records import dump_json, one_line

PATH = "control/format.json"
SCHEMA = 1
LAYOUT = 1
REQUIRES = {1: "0.1.0"}   # layout -> the first puppemon version that writes and reads it
MAX_SIZE = 16 * 1024


class LayoutError(PuppemonError):
    """The runs branch is in a layout this version does not know: nothing may be written to it."""


def body() -> dict:
    return {"schema": SCHEMA, "layout": LAYOUT, "requires": REQUIRES[LAYOUT]}


def files() -> dict[str, bytes]:
    """The file this version writes (the same bytes from every daemon: two at once do not collide)."""
    return {PATH: dump_json(body())}


MESSAGE = f"layout {LAYOUT} of the runs branch\n\nPuppemon-Layout: {LAYOUT}\n"


def missing(store, tip: str | None) -> bool:
    """Whether the branch at `tip` has no control/format.json yet (nothing at all: False, nothing to mark)."""
    return bool(tip) and store.lookup(tip, PATH) is None


def check(store, tip: str | None, where: str = "the runs branch") -> None:
    """LayoutError when `tip` holds a control/format.json whose layout this version does not know."""
    if not tip:
        return
    try:
        data = store.read(tip, PATH, MAX_SIZE)
    except ValueError:  # TooLarge: not a format.json this version wrote
        data = b"?"
    if data is None:
        return
    try:
        found = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        found = None
    layout = found.get("layout") if isinstance(found, dict) else None
    if isinstance(layout, int) and not isinstance(layout, bool) and 1 <= layout <= LAYOUT:
        return
    if not isinstance(layout, int) or isinstance(layout, bool):
        raise LayoutError(f"{where} has a {PATH} this version of puppemon cannot read: restore it "
                          f"(`git log runs -- {PATH}`) before writing to it")
    requires = found.get("requires")
    version = (f"puppemon {one_line(requires, 40)} or later" if isinstance(requires, str) and requires
               else f"a puppemon version that knows layout {layout}")
    from puppemon import __version__

    raise LayoutError(f"{where} is in layout {layout} ({PATH}), newer than puppemon {__version__} knows "
                      f"(layout {LAYOUT}): upgrade to {version}; nothing was written")
