"""The daemon's server-side settings: the command line over a config file over the defaults.

Nothing here comes from the flows branch: the remote, the name, the state
directory, secrets and the HTTP listener are the server's to decide. The config
file is `--config FILE`, else `$XDG_CONFIG_HOME/puppemon/daemon.yaml`
(`~/.config/puppemon/daemon.yaml`), else `/etc/puppemon/daemon.yaml`; relative
paths in it (state, secrets, token_file, a remote on this machine) are relative
to the file's own directory, so it means the same from any working directory
(systemd runs the daemon in `/`).
"""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from puppemon.daemon import (BUILD_TIMEOUT, GRACE, KILL_GRACE, LIVE_INTERVAL, MAX_PARALLEL, MAX_PAUSE, MISFIRE_GRACE,
                             POLL, ROTATE_AFTER)
from puppemon.errors import PuppemonError
from puppemon.formats import option_seconds
from puppemon.run.engine import EngineConfig
from puppemon.run.slurm import SlurmConfig

CONTAINER_KEYS = ("container_engine", "container_args", "container_build_args", "container_mount_roots",
                  "container_network")

CONFIG_KEYS = {"remote", "state", "name", "poll", "max_parallel", "grace", "secrets", "listen", "keep",
               "token_file", "branch_flows", "branch_runs", "users", "build_timeout",
               "rotate_after", "max_pause", "live_interval", "labels", "watch_roots", "misfire_grace",
               "slurm_shared_dir", "sbatch_args", *CONTAINER_KEYS}
CONFIG_NAME = "daemon.yaml"
PATH_KEYS = ("state", "secrets", "token_file")


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
    heartbeat: float = 60.0          # status heartbeat period (history/status.py HEARTBEAT); PUPPEMON_HEARTBEAT
    max_parallel: int = MAX_PARALLEL
    grace: float = GRACE
    branch_flows: str = "flows"
    branch_runs: str = "runs"
    once: bool = False
    config_file: str | None = None   # where the settings were read from, for the log
    secrets_file: str | None = None  # YAML of secret values and their grants (secrets.py)
    kill_grace: float = KILL_GRACE
    keep: float | None = None        # retention: prune records older than this many seconds from the runs tip
    stop_after: float | None = None  # stop by itself this long after the first cycle (quickstart)
    listen: str | None = None        # HOST:PORT of the HTTP hook
    token_file: str | None = None    # its bearer token (default: $PUPPEMON_HTTP_TOKEN)
    users: UserGrants = field(default_factory=lambda: UserGrants({}))   # config only: OS users flows may run as
    build_timeout: float = BUILD_TIMEOUT   # building one Python environment (run/environments.py)
    rotate_after: int = ROTATE_AFTER       # entries of closed days the runs tip holds before they rotate out
    max_pause: float = MAX_PAUSE           # a run paused longer than this is cancelled
    live_interval: float = LIVE_INTERVAL   # live log tails pushed at most this often (0: not published)
    labels: tuple[str, ...] = ()           # what this daemon offers: a flow's `runs_on` picks daemons by them
    containers: EngineConfig = field(default_factory=EngineConfig)   # the container engine and its flags
    watch_roots: tuple[str, ...] = ()      # directories (resolved) under which `on_file:` flows may watch
    misfire_grace: float = MISFIRE_GRACE   # --once: how late a fire may be and still be due now, not missed
    slurm: SlurmConfig = field(default_factory=SlurmConfig)   # where Slurm jobs' files live, sbatch's flags

    def load_secrets(self):
        """The secrets file as a SecretStore (None without one); PuppemonError when it is loose or bad."""
        if not self.secrets_file:
            return None
        from puppemon.secrets import load

        return load(self.secrets_file)

    def http_credentials(self) -> tuple[str | None, str | None]:
        """(bearer token, GitHub webhook secret) of the HTTP hook."""
        return read_token(self.token_file), os.environ.get("PUPPEMON_GITHUB_SECRET") or None


@dataclass(frozen=True)
class UserGrants:
    """`users:` of the config file: each OS user, the flows (names or globs) that may run as it.
    A flow names its user in the manifest (`user:`); it runs as that user only when granted here."""

    grants: dict[str, tuple[str, ...]]
    where: str = "the daemon's config file"

    def refusal(self, flow: str, user: str | None) -> str | None:
        """Why `flow` cannot run as `user` here (None when it can, or when it names no user)."""
        from puppemon.run.users import current_name, lookup

        if user is None or user == current_name():
            return None
        if not any(fnmatch.fnmatchcase(flow, g) for g in self.grants.get(user, ())):
            return (f"flow {flow!r} asks to run as user {user!r}, which {self.where} does not grant to it "
                    f"(add {flow!r} under users: {user}: there)")
        if os.geteuid() != 0:
            return (f"flow {flow!r} asks to run as user {user!r}, but this daemon runs as {current_name()!r}: "
                    "only a daemon started as root can run flows as other users")
        try:
            lookup(user)
        except PuppemonError as exc:
            return f"flow {flow!r} asks to run as user {user!r}: {exc.message}"
        return None


def user_grants(value: Any, where: str) -> UserGrants:
    """`users:` from a config file: a mapping of OS user names to a flow name or glob, or a list of them."""
    if not isinstance(value, dict):
        raise PuppemonError(f"{where}: users: expected a mapping of OS user names to lists of flows "
                            "(users: {backup: [backup, \"backup-*\"]})")
    grants = {}
    for user, flows in value.items():
        flows = [flows] if isinstance(flows, str) else flows
        if not isinstance(user, str) or not isinstance(flows, list) or not all(isinstance(f, str) for f in flows):
            raise PuppemonError(f"{where}: users.{user}: expected a list of flow names or globs")
        grants[user] = tuple(flows)
    return UserGrants(grants, where)


def config_dirs() -> list[Path]:
    """Where a config file is looked for when --config is not given, first found wins."""
    user = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return [Path(user) / "puppemon", Path("/etc/puppemon")]


def find_config(explicit: str | None, dirs: list[Path] | None = None) -> str | None:
    """The config file to read: `explicit`, else daemon.yaml in the first of `dirs` that has one."""
    if explicit:
        return explicit
    for directory in config_dirs() if dirs is None else dirs:
        if (directory / CONFIG_NAME).is_file():
            return str(directory / CONFIG_NAME)
    return None


def is_local_path(remote: str) -> bool:
    """Whether a remote names a path on this machine (not `scheme://...` nor scp-like `host:path`)."""
    head = remote.split("/", 1)[0]
    return "://" not in remote and ":" not in head


def load_config(path: str | None) -> dict[str, Any]:
    """Options from a YAML config file (keys as the long options, with _ for -), paths made absolute."""
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
    here = Path(path).resolve().parent
    for key in PATH_KEYS + ("remote",):
        value = data.get(key)
        if isinstance(value, str) and value and (key != "remote" or is_local_path(value)):
            data[key] = str(here / os.path.expanduser(value))   # an absolute path stays as it is
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


def _count(value, option: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit() or int(value) < 1:
        raise PuppemonError(f"{option} {value!r}: expected a whole number of records, at least 1")
    return int(value)


def _live_interval(merged: dict[str, Any]) -> float:
    """--live-interval (the config's live_interval), 0 with --no-live; `false` in the config also means off."""
    if merged.get("no_live"):
        return 0.0
    value = merged.get("live_interval", LIVE_INTERVAL)
    if value is False:
        return 0.0
    seconds = option_seconds(value, "--live-interval")
    if 0 < seconds < 1:
        raise PuppemonError(f"--live-interval {value!r}: at least 1s (or 0, or --no-live, for none)")
    return seconds


def _heartbeat() -> float:
    """PUPPEMON_HEARTBEAT (seconds, at least 0.5): a shorter heartbeat, so that a daemon that stops is gone
    sooner (five heartbeats; tests and demos use it), else the default 60s."""
    value = os.environ.get("PUPPEMON_HEARTBEAT")
    if not value:
        return 60.0
    seconds = option_seconds(value, "PUPPEMON_HEARTBEAT")
    if seconds < 0.5:
        raise PuppemonError(f"PUPPEMON_HEARTBEAT={value}: at least 0.5s")
    return seconds


def parse_labels(value: Any, where: str = "--labels") -> tuple[str, ...]:
    """Labels from `--labels gpu,eu` (repeatable) or `labels: [gpu, eu]` in the config file, sorted, once each;
    PuppemonError for one that is not named as a flow is (lowercase letters, digits, '-', '_')."""
    from puppemon.formats import is_flow_name

    if value is None or value == "":
        return ()
    parts = value if isinstance(value, (list, tuple)) else [value]
    found = []
    for part in parts:
        if not isinstance(part, str):
            raise PuppemonError(f"{where}: expected label names (gpu, eu), got {part!r}")
        for label in (p.strip() for p in part.split(",")):
            if not is_flow_name(label):
                raise PuppemonError(f"{where}: {label!r} is not a valid label (use lowercase letters, digits, "
                                    "'-' and '_', starting with a letter or digit, e.g. --labels gpu,eu)")
            found.append(label)
    return tuple(sorted(set(found)))


def _strings(value: Any, option: str) -> tuple[str, ...]:
    if value is None:
        return ()
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
        raise PuppemonError(f"{option}: expected a list of strings, got {value!r}")
    return tuple(values)


def container_config(options: dict[str, Any], config: dict[str, Any], where: str | None) -> EngineConfig:
    """The container engine's settings: --container-* options over the config file's container_* keys."""
    def pick(key: str, plural: bool = False):
        given = options.get(key)
        if given not in (None, (), []):
            return _strings(given, "--" + key.replace("_", "-")) if plural else given
        value = config.get(key)
        return _strings(value, f"{where}: {key}") if plural else value

    engine, network = pick("container_engine"), pick("container_network")
    if engine is not None and (not isinstance(engine, str) or not engine):
        raise PuppemonError(f"container_engine {engine!r}: name podman or docker (or a path to one)")
    if network is not None and network not in ("none", "bridge", "host"):
        raise PuppemonError(f"container_network {network!r}: use none, bridge or host")
    roots = pick("container_mount_roots", True)
    for root in roots:
        if not os.path.isabs(root):
            raise PuppemonError(f"container_mount_roots: {root!r} is not an absolute path (flows may mount "
                                "paths under these host directories)")
    return EngineConfig(engine, pick("container_args", True), pick("container_build_args", True), roots, network)


def slurm_config(options: dict[str, Any], config: dict[str, Any], where: str | None) -> SlurmConfig:
    """`--slurm-shared-dir` / `slurm_shared_dir` (relative in the config file: to its directory) and
    `--sbatch-arg` / `sbatch_args`."""
    shared = options.get("slurm_shared_dir") or config.get("slurm_shared_dir")
    if shared is not None and (not isinstance(shared, str) or not shared.strip()):
        raise PuppemonError(f"slurm_shared_dir {shared!r}: name a directory the compute nodes see too")
    if shared:
        base = Path(where).resolve().parent if where and not options.get("slurm_shared_dir") else Path.cwd()
        shared = Path(os.path.realpath(base / os.path.expanduser(shared)))
    args = options.get("sbatch_args") or ()
    args = _strings(args, "--sbatch-arg") if args else _strings(config.get("sbatch_args"), f"{where}: sbatch_args")
    return SlurmConfig(shared, args)


def watch_roots(value: Any, where: str, base: Path | None = None) -> tuple[str, ...]:
    """`--watch-root DIR` (repeatable) or `watch_roots: [DIR, ...]` in the config file: absolute directories,
    symlinks and `..` resolved (relative ones against `base`: the config file's directory, else here)."""
    if value is None or value == ():
        return ()
    parts = value if isinstance(value, (list, tuple)) else [value]
    found = []
    for part in parts:
        if not isinstance(part, str) or not part.strip():
            raise PuppemonError(f"{where}: expected directory paths (watch_roots: [/srv/inbox]), got {part!r}")
        path = Path(os.path.expanduser(part))
        found.append(os.path.realpath(path if path.is_absolute() else (base or Path.cwd()) / path))
    return tuple(dict.fromkeys(found))


def build_settings(options: dict[str, Any]) -> Settings:
    """Settings from command-line options over the `config` file's; PuppemonError for a bad value."""
    options = dict(options)
    config_file = find_config(options.pop("config", None))
    config = load_config(config_file)
    merged = {**config, **{k: v for k, v in options.items() if v is not None}}
    if not merged.get("remote"):
        where = config_file or f"{config_dirs()[0] / CONFIG_NAME}, or a --config file"
        raise PuppemonError(f"no remote: pass --remote URL, or set `remote:` in {where}")
    settings = Settings(
        remote=str(merged["remote"]),
        state=Path(merged.get("state") or default_state_dir()).expanduser(),
        name=str(merged.get("name") or default_name()),
        poll=option_seconds(merged.get("poll", POLL), "--poll"),
        heartbeat=_heartbeat(),
        max_parallel=int(merged.get("max_parallel", MAX_PARALLEL)),
        grace=option_seconds(merged.get("grace", GRACE), "--grace"),
        keep=option_seconds(merged["keep"], "--keep") if merged.get("keep") else None,
        build_timeout=option_seconds(merged.get("build_timeout", BUILD_TIMEOUT), "--build-timeout"),
        rotate_after=_count(merged.get("rotate_after", ROTATE_AFTER), "--rotate-after"),
        max_pause=option_seconds(merged.get("max_pause", MAX_PAUSE), "--max-pause"),
        live_interval=_live_interval(merged),
        once=bool(merged.get("once", False)),
        misfire_grace=option_seconds(merged.get("misfire_grace", MISFIRE_GRACE), "--misfire-grace"),
        branch_flows=str(merged.get("branch_flows", "flows")),
        branch_runs=str(merged.get("branch_runs", "runs")),
        config_file=config_file,
        labels=(parse_labels(options["labels"]) if options.get("labels")
                else parse_labels(config.get("labels"), f"{config_file}: labels")),
        watch_roots=(watch_roots(options["watch_root"], "--watch-root") if options.get("watch_root")
                     else watch_roots(config.get("watch_roots"), f"{config_file}: watch_roots",
                                      Path(config_file).resolve().parent if config_file else None)),
    )
    if settings.keep is not None and settings.keep < 86400:
        raise PuppemonError(f"--keep {merged['keep']}: keep at least 1d (records are pruned by whole days)")
    if settings.max_parallel < 1:
        raise PuppemonError("--max-parallel must be at least 1")
    if not settings.name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise PuppemonError(f"--name {settings.name!r}: use letters, digits, '.', '-' and '_' only")
    if config.get("users") is not None:
        settings.users = user_grants(config["users"], config_file)
    settings.containers = container_config(options, config, config_file)
    settings.slurm = slurm_config(options, config, config_file)
    if merged.get("secrets"):
        settings.secrets_file = os.path.expanduser(str(merged["secrets"]))
    if merged.get("listen"):
        settings.listen = str(merged["listen"])
        settings.token_file = str(merged["token_file"]) if merged.get("token_file") else None
    elif merged.get("token_file"):
        raise PuppemonError("--token-file is for the HTTP hook; pass --listen HOST:PORT too")
    return settings
