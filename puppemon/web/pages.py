"""The dashboard's pages: one class each, listed in PAGES, with the paths they live at.

Paths are the same served and exported, and every link between pages is relative, so an exported site
works from `file://` and under any prefix:

    index.html                 overview
    flows/<flow>.html          a flow (flows/<flow>.<n>.html: page n of its runs)
    runs/<run-id>.html         a run
    deploys.html               deploys

The JSON API (served only) is the same data under api/: api/overview.json, api/flows/<flow>.json?page=N,
api/runs/<run-id>.json, api/deploys.json, api/runs/<run-id>/live.json?since=N.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from puppemon.web import details, reading


class Page(Protocol):
    """A page: its template, the data it shows (the JSON API returns that same data), its path."""

    template: str

    def data(self, sources: reading.Sources, **args) -> dict:
        ...

    def path(self, **args) -> str:
        ...


class Overview:
    template = "overview.html"

    def data(self, sources, **_args) -> dict:
        return reading.overview(sources)

    def path(self, **_args) -> str:
        return "index.html"


class Flow:
    template = "flow.html"

    def data(self, sources, flow: str = "", page: int = 1) -> dict:
        return reading.flow_page(sources, flow, page)

    def path(self, flow: str = "", page: int = 1) -> str:
        return f"flows/{flow}.html" if page <= 1 else f"flows/{flow}.{page}.html"


class Run:
    template = "run.html"

    def data(self, sources, run_id: str = "") -> dict:
        return details.run_page(sources, run_id)

    def path(self, run_id: str = "") -> str:
        return f"runs/{run_id}.html"


class Deploys:
    template = "deploys.html"

    def data(self, sources, **_args) -> dict:
        return reading.deploys(sources)

    def path(self, **_args) -> str:
        return "deploys.html"


PAGES: dict[str, Page] = {"overview": Overview(), "flow": Flow(), "run": Run(), "deploys": Deploys()}


@dataclass(frozen=True)
class Target:
    """What a path asks for: a page (`json`: its data as JSON) and the page's arguments."""

    page: str
    args: dict
    json: bool = False


NAME = r"[a-z0-9][a-z0-9_-]{0,99}"
ID = r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}"
ROUTES = [
    (re.compile(r"(?:index\.html)?"), lambda m: Target("overview", {})),
    (re.compile(rf"flows/({NAME})(?:\.([0-9]{{1,6}}))?\.html"),
     lambda m: Target("flow", {"flow": m[1], "page": int(m[2] or 1)})),
    (re.compile(rf"runs/({ID})\.html"), lambda m: Target("run", {"run_id": m[1]})),
    (re.compile(r"deploys\.html"), lambda m: Target("deploys", {})),
    (re.compile(r"api/overview\.json"), lambda m: Target("overview", {}, True)),
    (re.compile(rf"api/flows/({NAME})\.json"), lambda m: Target("flow", {"flow": m[1]}, True)),
    (re.compile(rf"api/runs/({ID})\.json"), lambda m: Target("run", {"run_id": m[1]}, True)),
    (re.compile(r"api/deploys\.json"), lambda m: Target("deploys", {}, True)),
]


def resolve(path: str) -> Target | None:
    """The page a path (without its leading /) names, or None."""
    for pattern, target in ROUTES:
        match = pattern.fullmatch(path)
        if match:
            return target(match)
    return None


def root_of(path: str) -> str:
    """The relative way from the page at `path` back to the site's root: `../` per directory."""
    return "../" * path.count("/")
