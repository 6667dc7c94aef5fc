"""Ids, dated paths, names, statuses, times, durations and sizes: parsed and formatted here, once.

Imports only the standard library (and errors.py), so every layer can use it and
`puppemon --help` stays fast.
"""
from __future__ import annotations

import math
import os
import re
from datetime import datetime, timedelta, timezone
from typing import Callable

from puppemon.errors import PuppemonError

UTC = timezone.utc

STATUSES = ("succeeded", "failed", "timed_out", "cancelled", "crashed", "skipped")

# A run id (and a request id, which is the id of the run it asks for): UTC start and 6 hex digits.
# ASCII digits only and \Z, not $ (which lets a trailing newline through): ids become paths and trailers.
RUN_ID = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})T[0-9]{6}Z-[0-9a-f]{1,32}\Z")
FLOW_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*\Z")
SECRET_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
FLOW_NAME_MAX = 100


def is_flow_name(value) -> bool:
    """A flow name as a manifest may spell it: lowercase letters, digits, `-` and `_`, at most 100 of them."""
    return isinstance(value, str) and len(value) <= FLOW_NAME_MAX and FLOW_NAME_RE.match(value) is not None


# --- ids and the paths dated by them ------------------------------------------------------

def new_id(now: datetime | None = None) -> str:
    """A run or request id: UTC time and 6 random hex digits, e.g. `20261125T083000Z-7f3a9c`."""
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return utc_compact(now) + "-" + os.urandom(3).hex()


def id_day(an_id: str, what: str = "run") -> str:
    """`yyyy/mm/dd` of an id (its UTC time); PuppemonError when it is not an id."""
    match = RUN_ID.match(an_id)
    if not match:
        raise PuppemonError(f"{an_id!r} is not a {what} id (expected e.g. 20261125T083000Z-7f3a9c)")
    return "/".join(match.groups())


def is_within(path: str, root: str) -> bool:
    """Whether `path` is `root` or below it (both resolved already: symlinks and `..` are the caller's)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def run_dir(flow: str, run_id: str) -> str:
    """`runs/<flow>/<yyyy>/<mm>/<dd>/<run-id>`, dated by the run id (its UTC start)."""
    return f"runs/{flow}/{id_day(run_id)}/{run_id}"


def request_base(request_id: str) -> str:
    """`requests/<yyyy>/<mm>/<dd>/<id>`, dated by the id; add `.json`, `.claim.json` or `.done.json`."""
    return f"requests/{id_day(request_id, 'request')}/{request_id}"


ARCHIVE_PREFIX = "refs/puppemon/archive/"


def fire_key(moment: datetime) -> str:
    """A fire's claim key: its scheduled UTC time, `20261125T083000Z` (`20261125T083000.500Z` between seconds)."""
    moment = moment.astimezone(UTC)
    if moment.microsecond:
        return moment.strftime("%Y%m%dT%H%M%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y%m%dT%H%M%SZ")


def claim_path(flow: str, day: datetime, key: str) -> str:
    """`claims/<yyyy>/<mm>/<dd>/<flow>/<key>.json`: which daemon takes a fire (daemon/claims.py)."""
    return f"claims/{day.astimezone(UTC):%Y/%m/%d}/{flow}/{key}.json"


def archive_ref(day: str) -> str:
    """`refs/puppemon/archive/<yyyy>-<mm>`: where records of `day` (`yyyy/mm/dd`, see id_day) go when
    their day rotates out of the runs tip."""
    yyyy, mm = day.split("/")[:2]
    return f"{ARCHIVE_PREFIX}{yyyy}-{mm}"


def dated_path(kind: str, moment: datetime, name: str) -> str:
    """`<kind>/<yyyy>/<mm>/<dd>/<name>` for records dated by when they were written (deploys)."""
    return f"{kind}/{moment.astimezone(UTC):%Y/%m/%d}/{name}"


# --- times -----------------------------------------------------------------------------

def utc_iso(moment: datetime | None) -> str | None:
    """UTC ISO 8601 with a Z, to the millisecond."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def utc_compact(moment: datetime) -> str:
    """`20261125T083000Z`: the time part of an id."""
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def local_time(text: str | None, with_zone: bool = False) -> str:
    """A record's UTC time as local wall-clock time, `2026-11-25 16:30:00` (`... CST` with the zone)."""
    moment = parse_iso(text)
    if moment is None:
        return "-"
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S" + (" %Z" if with_zone else ""))


def parse_moment(text: str, option: str, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> datetime:
    """`2h`, `3d` (that long ago), or a date/time `2026-11-25`, `2026-11-25T08:00` (local unless it names a zone)."""
    if not re.match(r"^\d{4}-\d{2}-\d{2}", text.strip()):
        try:
            return now() - timedelta(seconds=parse_duration(text))
        except DurationError:
            pass
    else:
        try:
            moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return moment if moment.tzinfo else moment.astimezone()  # naive: local time
    raise PuppemonError(f"{option} {text!r}: expected a duration (30m, 2h, 7d) or a date "
                        f"(2026-11-25, 2026-11-25T08:00)")


# --- durations -------------------------------------------------------------------------

DURATION_HINT = "use 30s, 10m, 2h, 1d"
_DURATION_RE = re.compile(r"(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?\Z",
                          re.ASCII)
_SECONDS_RE = re.compile(r"\d+(?:\.\d+)?\Z", re.ASCII)


class DurationError(PuppemonError, ValueError):
    """A text that is not a duration such as 30s, 10m, 2h, 1d."""


def show(value) -> str:
    """A value as a message quotes it: `null`, `true`, `'text'` (cut at 60 characters)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 60 else text[:56] + ("...'" if isinstance(value, str) else "...")


def parse_duration(text) -> float:
    """Seconds in "30s", "10m", "2h", "1d", "1h30m" or a number of seconds; DurationError otherwise."""
    refused = DurationError(f"{show(text)} is not a duration ({DURATION_HINT})")
    if isinstance(text, bool) or text is None:
        raise refused
    if isinstance(text, (int, float)):
        if isinstance(text, int) and abs(text) > 10**15:
            raise refused
        if not math.isfinite(text) or text < 0:
            raise refused
        return float(text)
    compact = "".join(text.split()) if isinstance(text, str) else ""
    if _SECONDS_RE.match(compact):
        return float(compact)
    match = _DURATION_RE.match(compact)
    if not compact or not match:
        raise refused
    days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return days * 86400 + hours * 3600 + minutes * 60 + seconds


def option_seconds(value, option: str) -> float:
    """A command-line or config duration (`30`, `30s`, `10m`); PuppemonError naming the option."""
    try:
        return parse_duration(value if isinstance(value, (int, float)) else str(value))
    except DurationError:
        raise PuppemonError(f"{option} {value!r}: not a duration (use 30, 30s, 10m, 2h)") from None


def format_duration(seconds: float | None) -> str:
    """A duration for humans: "1.2s", "3m 04s", "2h 05m", "3d 04h" ("-" for none)."""
    if seconds is None:
        return "-"
    if seconds < 59.95:
        return f"{max(seconds, 0.0):.1f}s"
    total = int(round(seconds))
    if total < 3600:
        return f"{total // 60}m {total % 60:02d}s"
    if total < 86400:
        return f"{total // 3600}h {total % 3600 // 60:02d}m"
    return f"{total // 86400}d {total % 86400 // 3600:02d}h"


def format_interval(seconds: float) -> str:
    """A compact interval as a manifest writes it: 6h, 1h30m, 90s -> 1m30s, 1.5s."""
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    fraction = seconds - whole
    text = "".join(f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n)
    if secs or fraction or not text:
        text += f"{secs + fraction:g}s"
    return text


def format_age(seconds: float) -> str:
    """`12 s ago`, `4 min ago`, `3 h ago`, `2 d ago`."""
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{int(seconds)} s ago"
    if seconds < 7200:
        return f"{int(seconds // 60)} min ago"
    if seconds < 172800:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} d ago"


def format_size(n: int) -> str:
    """`512 bytes`, `1.5 KiB`, `20 MiB`."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= factor:
            return f"{n / factor:.1f}".removesuffix(".0") + " " + unit
    return f"{n} bytes"


def plural(n: int, word: str, many: str | None = None) -> str:
    """`1 run`, `3 runs`."""
    return f"{n} {word if n == 1 else many or word + 's'}"


def did_you_mean(name: str, choices) -> str | None:
    """`did you mean 'hello'?` when one of `choices` is close to `name` (a typo), else None."""
    import difflib

    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


def reason(status: str, error: str | None) -> str | None:
    """What to say after a run's status: its error, unless it only repeats the status (`cancelled`)."""
    if not error or status == "succeeded" or error.strip().lower() == status.replace("_", " "):
        return None
    return error


def outcome(status: str, duration: float | None, error: str | None = None) -> str:
    """`failed in 1.2s: exited with code 3`; `cancelled in 18.2s`, not `cancelled in 18.2s: cancelled`."""
    why = reason(status, error)
    return f"{status} in {format_duration(duration)}" + (f": {why}" if why else "")


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) is this machine's loopback: localhost, 127.0.0.0/8, ::1."""
    if host == "localhost":
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
