"""Failure notifications: POST a short message to a webhook URL held in a server secret.

The manifest says when (`notify.on`, statuses) and which secret holds the URL
(`notify.webhook_secret`, which must be granted to the flow). The body carries both
`content` (Discord) and `text` (Slack). Sending happens in a thread of its own with a
10 s timeout; a failure is logged and never changes the run.
"""
from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from typing import Callable

from puppemon.errors import PuppemonError
from puppemon.formats import format_duration, reason
from puppemon.secrets import SecretStore, redact

log = logging.getLogger("puppemon")

TIMEOUT = 10.0
LOG_LINES = 10
MAX_CONTENT = 1900  # Discord refuses content over 2000 characters


def message(record: dict, log_bytes: bytes, secrets: dict) -> dict:
    """The JSON body for one finished run (log lines redacted with `secrets`)."""
    lines = log_bytes.decode("utf-8", "replace").rstrip("\n").splitlines()[-LOG_LINES:]
    head = (f"puppemon: {record['flow']} {record['status']} in {format_duration(record.get('duration'))} "
            f"(run {record['id']}, daemon {record.get('daemon') or '-'})")
    if why := reason(record["status"], record.get("error")):
        head += f"\n{why}"
    tail = "\n".join(lines)
    text = head + (f"\n```\n{tail}\n```" if tail else "")
    text = redact(text, secrets)
    if len(text) > MAX_CONTENT:
        text = text[:MAX_CONTENT - 4] + "\n```" if tail else text[:MAX_CONTENT]
    return {"content": text, "text": text}


def post(url: str, body: dict, timeout: float = TIMEOUT) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": "puppemon"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - the server's own URL
        response.read()


class Notifier:
    """Called with each run the daemon records: notify when the flow's notify.on holds its status.

    `flow_for(record)` is the flow as deployed for that run (deployer.Deployer.flow_for).
    """

    def __init__(self, secrets: SecretStore | None, flow_for: Callable[[dict], object],
                 timeout: float = TIMEOUT) -> None:
        self.secrets, self.flow_for, self.timeout = secrets, flow_for, timeout
        self.threads: list[threading.Thread] = []

    def __call__(self, record: dict, log_bytes: bytes) -> None:
        flow = self.flow_for(record)
        if flow is None or flow.notify is None or record["status"] not in flow.notify.on:
            return
        name = flow.notify.webhook_secret
        try:
            store = self.secrets
            if store is None:
                raise PuppemonError(f"flow {flow.name!r} notifies through secret {name!r} but this "
                                    f"daemon has no secrets file")
            url = store.for_flow(flow.name, [name])[name]
            # For redaction only: whatever of the flow's own secrets the server grants it.
            secrets = {n: store.secrets[n].value for n in flow.secrets if store.refusal(flow.name, n) is None}
            secrets[name] = url
        except PuppemonError as exc:
            log.warning("%s: no notification for run %s: %s", flow.name, record["id"], exc.message)
            return
        if not isinstance(url, str):
            url = url.get("url") if isinstance(url, dict) else None
        if not url:
            log.warning("%s: no notification: secret %r holds no URL (a string, or a mapping with url)",
                        flow.name, name)
            return
        body = message(record, log_bytes, secrets)
        thread = threading.Thread(target=self._send, args=(flow.name, record["id"], url, body),
                                  name=f"notify-{record['id']}")
        self.threads = [t for t in self.threads if t.is_alive()] + [thread]
        thread.start()  # not a daemon thread: the process waits for it (at most `timeout`) on exit

    def _send(self, flow: str, run_id: str, url: str, body: dict) -> None:
        try:
            post(url, body, self.timeout)
            log.info("%s: notification sent for run %s", flow, run_id)
        except urllib.error.HTTPError as exc:
            log.warning("%s: notification for run %s refused: HTTP %d", flow, run_id, exc.code)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            # The URL is a secret: say why, never where.
            log.warning("%s: notification for run %s failed: %s", flow, run_id,
                        str(reason).replace(url, "***"))

