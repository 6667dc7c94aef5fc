"""The dashboard's routes, whoever serves them (`puppemon ui`, the daemon's `--listen`): pages, the JSON
API, raw logs and outputs, the live tail of a run in flight, and the actions.

Who may do what (Access): a local `puppemon ui` acts as its user, with no token, on loopback only; a
daemon's pages are readable without its token on a loopback address, and every action needs the token;
on any other address every route needs it. Actions are POSTs of JSON (a cross-site form cannot send
one without the browser asking first, and nothing here answers that), from no other origin.
"""
from __future__ import annotations

import hmac
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from puppemon.errors import PuppemonError
from puppemon.formats import is_loopback
from puppemon.web import details, reading, render
from puppemon.web.pages import ID, NAME, PAGES, resolve

log = logging.getLogger("puppemon")

HTML_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
               "frame-ancestors 'none'; form-action 'self'")
STATIC = {"static/dashboard.js": "text/javascript", "static/dashboard.css": "text/css"}
LIVE = re.compile(rf"api/runs/({ID})/live\.json")
RAW = re.compile(rf"runs/({ID})/(log\.txt|outputs/.+)")
ACTION = re.compile(rf"api/(flows|runs)/({NAME}|{ID})/(run|pause|resume|cancel)")


class Actions(Protocol):
    """What the action buttons do (web/actions.py through git; the daemon in-process)."""

    def run(self, flow: str, params: dict) -> dict: ...
    def cancel(self, run_id: str) -> dict: ...
    def pause(self, flow: str, reason: str | None) -> dict: ...
    def resume(self, flow: str) -> dict: ...
    def pause_run(self, run_id: str) -> dict: ...


@dataclass
class Access:
    """`local`: a `puppemon ui` (no token); else a daemon's token, needed for every route when
    `pages_need_token` (not a loopback address), for the actions only otherwise."""

    local: bool = True
    token: str | None = None
    pages_need_token: bool = False
    loopback_only: bool = False   # a local `ui` on a loopback address: requests naming another host are refused

    def host_allowed(self, headers) -> bool:
        """Whether the request's Host is a loopback one, where that is asked (a page of another site whose
        name was pointed at 127.0.0.1, DNS rebinding, reaches no further)."""
        if not self.loopback_only:
            return True
        host = urlsplit("//" + (headers.get("Host") or "")).hostname
        return bool(host) and is_loopback(host)

    @property
    def mode(self) -> str:
        """How pages behave: `local` (actions shown), `token` (actions once a token is given), `locked`
        (every page, as well, fetched with the token by the page's script)."""
        if self.local or not self.token:
            return "local"
        return "locked" if self.pages_need_token else "token"

    def allowed(self, headers, action: bool) -> bool:
        if self.local or not self.token or not (action or self.pages_need_token):
            return True
        given = headers.get("Authorization", "") or ""
        return hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode())


@dataclass
class Response:
    code: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: dict = field(default_factory=dict)


def _json(code: int, value) -> Response:
    return Response(code, (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode(),
                    "application/json; charset=utf-8")


class App:
    """Answers a request for one of the dashboard's routes; None for a path that is not one."""

    def __init__(self, sources: reading.Sources, access: Access, actions: Actions | None = None) -> None:
        self.sources, self.access, self.actions = sources, access, actions

    def html(self, code: int, template: str, data: dict, path: str, **extra) -> Response:
        text = render.page(template, data, path, self.access.mode, actions=self.actions is not None, **extra)
        return Response(code, text.encode(), headers={"Content-Security-Policy": HTML_POLICY})

    def missing(self, path: str, message: str) -> Response:
        return self.html(404, "missing.html", {}, path, title="Not found", message=message)

    def get(self, target: str, headers) -> Response | None:
        """A GET of `target` (path and query)."""
        if not self.access.host_allowed(headers):
            return _json(403, {"error": "this dashboard answers requests for 127.0.0.1 or localhost only"})
        url = urlsplit(target)
        path, query = unquote(url.path).lstrip("/"), parse_qs(url.query)
        if path in STATIC:
            return Response(200, render.static_file(path.split("/")[1]), STATIC[path])
        if path == "token.html":
            return self.html(200, "token.html", {}, path, message="Give this daemon's token to use its dashboard.")
        found, live, raw = resolve(path), LIVE.fullmatch(path), RAW.fullmatch(path)
        if not (found or live or raw):
            return None
        if not self.access.allowed(headers, action=False):
            if found and not found.json:
                return self.html(401, "token.html", {}, path, locked=True,
                                 message="This dashboard needs the daemon's token.")
            return _json(401, {"error": "missing or wrong bearer token"})
        try:
            if live:
                return _json(200, self.live(live[1], query))
            if raw:
                return self.raw(raw[1], raw[2])
            if found.page == "flow" and "page" in query and query["page"][0].isdigit():
                found.args["page"] = min(int(query["page"][0][:7]), 10**6)
            data = PAGES[found.page].data(self.sources, **found.args)
        except reading.NotFound as exc:
            return _json(404, {"error": str(exc)}) if (live or raw or found.json) else self.missing(path, str(exc))
        if found.json:
            return _json(200, data)
        return self.html(200, PAGES[found.page].template, data, path)

    def live(self, run_id: str, query: dict) -> dict:
        since = (query.get("since") or ["0"])[0]
        runs, located = reading.find_run(self.sources, run_id)
        if located.state == "finished":
            return {"id": run_id, "state": "finished", "live": None}
        return {"id": run_id, "state": located.state,
                "live": details.live_part(self.sources, run_id, int(since) if since.isdigit() else 0)}

    def raw(self, run_id: str, name: str) -> Response:
        """A run's whole log, or one of its outputs, as a download (never shown as a page)."""
        _runs, located = reading.find_run(self.sources, run_id)
        if located.record is None:
            raise reading.NotFound(f"run {run_id} has no record yet")
        found = details.blob(self.sources, located.record, name)
        if found is None:
            raise reading.NotFound(f"run {run_id} has no {name}")
        data = self.sources.store.data(found[0])
        kind = "text/plain; charset=utf-8" if name == "log.txt" else "application/octet-stream"
        return Response(200, data, kind, {"Content-Disposition": _attachment(name.rsplit("/", 1)[-1])})

    def post(self, path: str, headers, raw: bytes) -> Response | None:
        """A POST of an action: run, cancel, pause, resume."""
        match = ACTION.fullmatch(urlsplit(path).path.lstrip("/"))
        if not match:
            return None
        if not self.access.host_allowed(headers):
            return _json(403, {"error": "this dashboard answers requests for 127.0.0.1 or localhost only"})
        if not self.access.allowed(headers, action=True):
            return _json(401, {"error": "missing or wrong bearer token"})
        if self.actions is None:
            return _json(405, {"error": "this dashboard takes no actions"})
        if "application/json" not in (headers.get("Content-Type") or "") or not _same_origin(headers):
            return _json(403, {"error": "actions are JSON requests from the dashboard's own pages"})
        try:
            body = json.loads(raw or b"{}")
        except (ValueError, RecursionError):
            return _json(400, {"error": "the body is not JSON"})
        if not isinstance(body, dict):
            return _json(400, {"error": "the body must be a JSON object"})
        try:
            return _json(202, self.act(match[1], match[2], match[3], body))
        except PuppemonError as exc:
            return _json(409, {"error": str(exc).splitlines()[0]})

    def act(self, kind: str, name: str, verb: str, body: dict) -> dict:
        reason = body.get("reason") if isinstance(body.get("reason"), str) else None
        if kind == "flows" and verb == "run":
            params = body.get("params", {})
            if not isinstance(params, dict):
                raise PuppemonError("params must be a JSON object")
            self._deployed(name, params)
            return self.actions.run(name, params)
        if kind == "flows" and verb in ("pause", "resume"):
            return self.actions.pause(name, reason) if verb == "pause" else self.actions.resume(name)
        if kind == "runs" and verb in ("cancel", "pause"):
            self._unfinished(name, verb)
            return self.actions.cancel(name) if verb == "cancel" else self.actions.pause_run(name)
        raise PuppemonError(f"no action {verb} for {kind}")

    def _deployed(self, flow: str, params: dict) -> None:
        """Refuse, as `puppemon trigger` does, a run no daemon could serve: a flow the deployed manifest does
        not have, or a param its function does not take (a manifest that cannot be read: its daemon says why)."""
        from puppemon.project.entrypoints import check_request, tree_reader

        flows = reading.manifest_flows(self.sources)
        if flows:
            tip = self.sources.store.ref(self.sources.flows_ref)
            check_request(flows, flow, params, tree_reader(self.sources.store, tip), tip, f"flows {tip[:7]}")

    def _unfinished(self, run_id: str, verb: str) -> None:
        """Refuse, as `puppemon cancel` does, to act on a run that has ended (or that nothing knows of)."""
        from puppemon.history.lookup import UNFINISHED

        try:
            _runs, located = reading.find_run(self.sources, run_id)
        except reading.NotFound as exc:
            raise PuppemonError(str(exc)) from None
        if located.state not in UNFINISHED:
            raise PuppemonError(f"{located.describe()}: nothing to {verb}")


def _attachment(name: str) -> str:
    """A Content-Disposition for a download called `name` (any characters: an ASCII fallback, and the
    name itself as RFC 6266's filename*)."""
    from urllib.parse import quote

    clean = "".join(c for c in name if c.isprintable())
    fallback = "".join(c if c.isascii() and c not in '"\\' else "_" for c in clean) or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(clean, safe='')}"


def _same_origin(headers) -> bool:
    """No Origin (not a browser's cross-site request), or the one of the Host asked."""
    origin = headers.get("Origin")
    if not origin:
        return True
    return urlsplit(origin).netloc == (headers.get("Host") or "")
