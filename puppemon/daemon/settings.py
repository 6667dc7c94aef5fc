"""The daemon's server-side settings: defaults (written once, here), the config file, the command line.

Nothing here comes from the flows branch: the remote, the name, the state
directory, secrets and the HTTP listener are the server's to decide.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from puppemon.daemon import GRACE, KILL_GRACE, MAX_PARALLEL, POLL
from puppemon.errors import PuppemonError
from puppemon.formats import option_seconds

CONFIG_KEYS = {"remote", "state", "name", "poll", "max_parallel", "grace", "secrets", "listen", "keep",
               "token_file", "branch_flows", "branch_runs"}


def default_name() -> str:
    import socket

    return socket.gethostname() or "puppemon"


def default_state_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "puppemon" / "daemon"


@dataclass
class Settings:
    remote: str
    state: Path
    name: str = field(default_factory=default_name)
    poll: float = POLL
    max_parallel: int = MAX_PARALLEL
    grace: float = GRACE
    branch_flows: str = "flows"
    branch_runs: str = "runs"
    once: bool = False
    secrets_file: str | None = None  # YAML of secret values and their grants (secrets.py)
    kill_grace: float = KILL_GRACE
    keep: float | None = None        # retention: prune records older than this many seconds from the runs tip
    stop_after: float | None = None  # stop by itself this long after the first cycle (quickstart)
    listen: str | None = None        # HOST:PORT of the HTTP hook
    token_file: str | None = None    # its bearer token (default: $PUPPEMON_HTTP_TOKEN)

    def load_secrets(self):
        """The secrets file as a SecretStore (None without one); PuppemonError when it is loose or bad."""
        if not self.secrets_file:
            return None
        from puppemon.secrets import load

        return load(self.secrets_file)

    def http_credentials(self) -> tuple[str | None, str | None]:
        """(bearer token, GitHub webhook secret) of the HTTP hook."""
        return read_token(self.token_file), os.environ.get("PUPPEMON_GITHUB_SECRET") or None


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


def read_token(token_file: str | None) -> str | None:
    """The bearer token: from `token_file` (first line), else PUPPEMON_HTTP_TOKEN, else None."""
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as fh:
                token = fh.readline().strip()
        except OSError as exc:
            raise PuppemonError(f"cannot read token file {token_file}: {exc.strerror}") from None
        if not token:
            raise PuppemonError(f"token file {token_file} is empty")
        return token
    return os.environ.get("PUPPEMON_HTTP_TOKEN") or None


def build_settings(options: dict[str, Any]) -> Settings:
    """Settings from command-line options over the `config` file's; PuppemonError for a bad value."""
    options = dict(options)
    config = load_config(options.pop("config", None))
    merged = {**config, **{k: v for k, v in options.items() if v is not None}}
    if not merged.get("remote"):
        raise PuppemonError("no remote: pass --remote URL (or set `remote:` in the --config file)")
    settings = Settings(
        remote=str(merged["remote"]),
        state=Path(merged.get("state") or default_state_dir()).expanduser(),
        name=str(merged.get("name") or default_name()),
        poll=option_seconds(merged.get("poll", POLL), "--poll"),
        max_parallel=int(merged.get("max_parallel", MAX_PARALLEL)),
        grace=option_seconds(merged.get("grace", GRACE), "--grace"),
        keep=option_seconds(merged["keep"], "--keep") if merged.get("keep") else None,
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
    if merged.get("secrets"):
        settings.secrets_file = os.path.expanduser(str(merged["secrets"]))
    if merged.get("listen"):
        settings.listen = str(merged["listen"])
        settings.token_file = str(merged["token_file"]) if merged.get("token_file") else None
    elif merged.get("token_file"):
        raise PuppemonError("--token-file is for the HTTP hook; pass --listen HOST:PORT too")
    return settings
