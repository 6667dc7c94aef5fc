"""`puppemon daemon`: run the flows of a remote on schedule and record every run."""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from puppemon.errors import PuppemonError

CONFIG_KEYS = {"remote", "state", "name", "poll", "max_parallel", "grace", "secrets", "listen", "keep",
               "token_file", "branch_flows", "branch_runs"}


def default_state_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "puppemon" / "daemon"


def load_config(path: str | None) -> dict[str, Any]:
    """Options from a YAML config file (keys as the long options, with _ for -)."""
    if not path:
        return {}
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except OSError as exc:
        raise PuppemonError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        raise PuppemonError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise PuppemonError(f"{path}: expected a mapping of options (remote, state, name, poll, ...)")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - CONFIG_KEYS)
    if unknown:
        raise PuppemonError(f"{path}: unknown option {unknown[0]!r} (allowed: {', '.join(sorted(CONFIG_KEYS))})")
    return data


def seconds(value: Any, option: str) -> float:
    from puppemon.manifest import parse_duration

    try:
        return float(value) if isinstance(value, (int, float)) else parse_duration(str(value))
    except (ValueError, PuppemonError):
        raise PuppemonError(f"--{option}: {value!r} is not a duration (use 30, 30s, 10m, 2h)") from None


def build_settings(options: dict[str, Any]):
    from puppemon.daemon import Settings

    config = load_config(options.pop("config", None))
    merged = {**config, **{k: v for k, v in options.items() if v is not None}}
    if not merged.get("remote"):
        raise PuppemonError("no remote: pass --remote URL (or set `remote:` in the --config file)")
    settings = Settings(
        remote=str(merged["remote"]),
        state=Path(merged.get("state") or default_state_dir()).expanduser(),
        name=str(merged.get("name") or socket.gethostname() or "puppemon"),
        poll=seconds(merged.get("poll", 60), "poll"),
        max_parallel=int(merged.get("max_parallel", 4)),
        grace=seconds(merged.get("grace", 30), "grace"),
        keep=seconds(merged["keep"], "keep") if merged.get("keep") else None,
        once=bool(merged.get("once", False)),
        branch_flows=str(merged.get("branch_flows", "flows")),
        branch_runs=str(merged.get("branch_runs", "runs")),
    )
    if settings.keep is not None and settings.keep < 86400:
        raise PuppemonError(f"--keep {merged['keep']}: keep at least 1d (records are pruned by whole days)")
    if settings.max_parallel < 1:
        raise PuppemonError("--max-parallel must be at least 1")
    if not settings.name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise PuppemonError(f"--name {settings.name!r}: use letters, digits, '.', '-' and '_' only")
    return settings, merged


def main(**options: Any) -> int:
    from puppemon.daemon import Daemon
    from puppemon.ui import setup_logging

    settings, merged = build_settings(dict(options))
    setup_logging()
    daemon = Daemon(settings)
    configure_extras(daemon, merged)
    return daemon.run()


def configure_extras(daemon, merged: dict[str, Any]) -> None:
    """Secrets, HTTP and trigger requests plug in here."""
    from puppemon.notify import install
    from puppemon.requests import RequestServer

    if merged.get("secrets"):
        from puppemon.secrets import load

        daemon.s.secrets = load(os.path.expanduser(str(merged["secrets"])))
    requests = RequestServer()
    daemon.hooks.append(requests)
    install(daemon)
    if merged.get("listen"):
        from puppemon.httpd import HttpHook, read_token

        hook = HttpHook(daemon, requests, str(merged["listen"]), read_token(merged.get("token_file")),
                        os.environ.get("PUPPEMON_GITHUB_SECRET") or None)
        hook.start()
        daemon.closers.append(hook.stop)
    elif merged.get("token_file"):
        raise PuppemonError("--token-file is for the HTTP hook; pass --listen HOST:PORT too")
