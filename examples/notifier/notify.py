"""Post a message to a chat webhook when a disk is fuller than `warn_at` percent.

The webhook URL comes from the secret `webhook` (granted to this flow on the
server); it never appears in the code, the flows branch or the run's log.
"""
from __future__ import annotations

import json
import shutil
import socket
import urllib.request

import puppemon


def usage(paths: list[str]) -> dict[str, float]:
    """Percent used of each path's filesystem."""
    result = {}
    for path in paths:
        total, used, _free = shutil.disk_usage(path)
        result[path] = round(100 * used / total, 1) if total else 0.0
    return result


def post(url: str, payload: dict, timeout: float = 10) -> int:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status


def main(paths: list[str] = ("/",), warn_at: float = 85, channel: str = "#ops") -> dict:
    # Read the secret first: a flow that was not granted it fails at once, with
    # puppemon's message naming the secret, before doing any work.
    webhook = puppemon.secret("webhook")
    full = {path: pct for path, pct in usage(list(paths)).items() if pct >= float(warn_at)}
    if not full:
        print(f"all below {warn_at}%: nothing to send")
        return {"sent": False, "full": {}}
    host = socket.gethostname()
    lines = [f"{path} is {pct}% full" for path, pct in sorted(full.items())]
    status = post(webhook, {"channel": channel, "username": "puppemon",
                            "text": f":warning: disk space on {host}: " + "; ".join(lines)})
    print(f"sent {len(full)} warning(s) to {channel} (HTTP {status})")
    return {"sent": True, "full": full}
