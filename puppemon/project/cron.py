"""Cron lines: a pure parser with standard (Vixie) semantics, checked against croniter in the tests.

`parse_cron` normalises a 5-field line (or a shortcut such as @daily) into the sets
of values each field allows, with cron's rules: day-of-week 0 and 7 are Sunday,
names are case-insensitive, `5/15` means 5-59/15, and a line that can never fire
(`0 0 31 2 *`) is refused. clock.py turns a CronSpec into fire times.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from puppemon.errors import PuppemonError

ALIASES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
           "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
           "@hourly": "0 * * * *"}
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# name, lowest, highest, names (first name = lowest value), what to write
FIELDS = (("minute", 0, 59, (), "0-59"), ("hour", 0, 23, (), "0-23"),
          ("day-of-month", 1, 31, (), "1-31"), ("month", 1, 12, MONTHS, "1-12 or jan-dec"),
          ("day-of-week", 0, 7, WEEKDAYS, "0-7 or sun-sat"))
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


class CronError(PuppemonError, ValueError):
    """A text that is not a valid 5-field cron line."""


@dataclass(frozen=True)
class CronSpec:
    expr: str                       # normalised: single spaces, shortcuts lower-case
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]        # 0 = Sunday ... 6 = Saturday
    day_star: bool                  # Vixie: the field *starts with* '*' (so `*/2` counts)
    weekday_star: bool
    fixed: bool                     # neither minute nor hour starts with '*': DST rules apply


def _value(token: str, expr: str, name: str, low: int, high: int, names, allowed: str) -> int:
    if token.isascii() and token.isdigit():
        number = int(token)
    elif token.lower() in names:
        number = low + names.index(token.lower())
    else:
        raise CronError(f"{name} {token!r} is not valid in {expr!r} (use {allowed})")
    if not low <= number <= high:
        raise CronError(f"{name} {number} is out of range in {expr!r} (use {allowed})")
    return number


def _field(text: str, expr: str, name: str, low: int, high: int, names, allowed: str) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        base, slash, step_text = item.partition("/")
        if base == "*":
            first, last = low, high
        elif "-" in base:
            first_text, _, last_text = base.partition("-")
            first = _value(first_text, expr, name, low, high, names, allowed)
            last = _value(last_text, expr, name, low, high, names, allowed)
            if name == "day-of-week" and last == 0 and first > 0:
                last = 7                                  # fri-sun
            if first > last:
                raise CronError(f"{name} range {base} is reversed in {expr!r} (write the smaller value first)")
        else:
            first = _value(base, expr, name, low, high, names, allowed)
            last = high if slash else first               # `5/15` means 5-59/15, as in cronie and croniter
            if slash and name == "day-of-week":
                last = max(first, 6)                      # `4/1` is thu-sat, as in croniter
        step = 1
        if slash:
            if not (step_text.isascii() and step_text.isdigit()) or int(step_text) == 0:
                raise CronError(f"{name} step {step_text!r} is not valid in {expr!r} (use a whole number from 1)")
            step = int(step_text)
        values.update(range(first, last + 1, step))
    if name == "day-of-week" and 7 in values:
        values.discard(7)
        values.add(0)
    return frozenset(values)


@functools.lru_cache(maxsize=1024)
def parse_cron(text: str) -> CronSpec:
    """Check a cron line (5 fields or a shortcut such as @daily); CronError says what is wrong."""
    expr = " ".join(text.split())
    if expr.startswith("@"):
        if expr.lower() == "@reboot":
            raise CronError("'@reboot' is not supported (use run_on_deploy: true to run on every deploy)")
        if expr.lower() not in ALIASES:
            raise CronError(f"{expr!r} is not a cron shortcut (use {', '.join(ALIASES)} or 5 fields)")
        return _replace_expr(parse_cron(ALIASES[expr.lower()]), expr.lower())
    parts = expr.split(" ")
    if len(parts) != 5 or not expr:
        raise CronError(f"{expr!r} has {len(parts) if expr else 0} fields "
                        "(cron needs 5: minute hour day-of-month month day-of-week)")
    sets = [_field(part, expr, *spec) for part, spec in zip(parts, FIELDS)]
    spec = CronSpec(expr, *sets, day_star=parts[2].startswith("*"), weekday_star=parts[4].startswith("*"),
                    fixed=not (parts[0].startswith("*") or parts[1].startswith("*")))
    if not parts[2].startswith("*") and parts[4].startswith("*"):
        if not any(day <= _DAYS_IN_MONTH[month - 1] for day in spec.days for month in spec.months):
            raise CronError(f"{expr!r} never fires (none of its months has day {min(spec.days)})")
    return spec


def _replace_expr(spec: CronSpec, expr: str) -> CronSpec:
    return CronSpec(expr, spec.minutes, spec.hours, spec.days, spec.months, spec.weekdays,
                    spec.day_star, spec.weekday_star, spec.fixed)
