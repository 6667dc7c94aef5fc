"""Pages as HTML: Jinja2 templates (package data, autoescaped) and the filters they use."""
from __future__ import annotations

import functools
from datetime import datetime, timezone

from puppemon.formats import format_duration, format_size, parse_iso
from puppemon.web.ansi import to_html

STATUS_LABELS = {"timed_out": "timed out"}


@functools.lru_cache(maxsize=1)
def environment():
    from jinja2 import Environment, PackageLoader, ChainableUndefined, select_autoescape

    env = Environment(loader=PackageLoader("puppemon.web", "templates"),
                      autoescape=select_autoescape(["html"], default_for_string=True, default=True),
                      undefined=ChainableUndefined, auto_reload=False, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(duration=lambda s: format_duration(s) if isinstance(s, (int, float)) else "-",
                       when=when, in_zone=in_zone, ansi=to_html, size=format_size, age=age,
                       label=lambda s: STATUS_LABELS.get(s, s), pretty=pretty, short=lambda s: (s or "")[:7])
    env.globals.update(chart=chart, trend=trend)
    return env


def pretty(value) -> str:
    """A value as JSON text (escaped by the template like any text)."""
    import json

    return json.dumps(value, ensure_ascii=False)


def when(text: str | None) -> str:
    """`2026-11-25 08:30:00 UTC`."""
    moment = _moment(text)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def in_zone(text: str | None, zone: str) -> str:
    """`2026-11-25 16:30 CST` in the flow's timezone."""
    from zoneinfo import ZoneInfo

    moment = _moment(text)
    if moment is None:
        return "-"
    try:
        return moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")
    except (KeyError, ValueError):
        return when(text)


def age(seconds: float | None) -> str:
    return f"{format_duration(seconds)} ago" if isinstance(seconds, (int, float)) else "never"


def _moment(text) -> datetime | None:
    try:
        return parse_iso(text) if isinstance(text, str) else None
    except ValueError:
        return None


def chart(points: list[dict], width: int = 600, height: int = 120) -> list[dict]:
    """Bars of a duration chart: x, y, w, h in the SVG's coordinates, with the run's id and status."""
    if not points:
        return []
    top = max(p["duration"] for p in points) or 1.0
    step = width / len(points)
    return [{"x": round(i * step, 2), "w": round(max(step - 1, 1), 2),
             "h": round(max(p["duration"] / top * (height - 4), 1), 2),
             "y": round(height - max(p["duration"] / top * (height - 4), 1), 2), **p}
            for i, p in enumerate(points)]


def trend(durations: list[float], width: int = 90, height: int = 20) -> str:
    """The points of a duration sparkline, oldest to newest."""
    if len(durations) < 2:
        return f"0,{height / 2:g} {width},{height / 2:g}"
    top = max(durations) or 1.0
    step = width / (len(durations) - 1)
    return " ".join(f"{i * step:.1f},{height - 2 - d / top * (height - 4):.1f}" for i, d in enumerate(durations))


def page(template: str, data: dict, path: str, mode: str, **extra) -> str:
    """The HTML of a page at `path` (links relative to it). `mode`: `local` (a `puppemon ui`: actions
    shown), `token` (a daemon: actions once a token is given), `static` (an export: no script needed)."""
    from puppemon.web.pages import root_of

    return environment().get_template(template).render(
        d=data, root=root_of(path), mode=mode, path=path, **extra)


def static_file(name: str) -> bytes:
    """A file of templates/static (the script and the style sheet)."""
    from importlib.resources import files

    return (files("puppemon.web") / "templates" / "static" / name).read_bytes()
