"""The options of `puppemon daemon`, one list (the command is wired in cli/__init__.py); every one may also be a key
of the daemon's config file (daemon/settings.py)."""
from __future__ import annotations

import click

from puppemon import daemon as daemon_defaults

OPTIONS = [
    click.option("--remote", default=None, metavar="URL", help="Git remote holding the flows and runs branches."),
    click.option("--state", default=None, type=click.Path(file_okay=False),
                 help="State directory (default: ~/.local/share/puppemon/daemon)."),
    click.option("--name", default=None, help="This daemon's name in records and status (default: host name)."),
    click.option("--poll", default=None, metavar="SECONDS",
                 help=f"Fetch interval (default {daemon_defaults.POLL:g}; 30s, 5m also work)."),
    click.option("--once", is_flag=True, default=None,
                 help="One cycle: fetch, deploy, run what is due, wait, publish, exit."),
    click.option("--misfire-grace", default=None, metavar="DURATION",
                 help="With --once: how late a fire may be and still be due now, not missed "
                      f"(default {daemon_defaults.MISFIRE_GRACE:g}s)."),
    click.option("--max-parallel", default=None, type=click.IntRange(min=1),
                 help=f"Runs at once (default {daemon_defaults.MAX_PARALLEL})."),
    click.option("--grace", default=None, metavar="SECONDS",
                 help="On SIGTERM, how long runs may finish before they are killed "
                      f"(default {daemon_defaults.GRACE:g})."),
    click.option("--secrets", default=None, type=click.Path(dir_okay=False), metavar="FILE",
                 help="YAML file of secret values and the flows each is granted to (mode 600)."),
    click.option("--listen", default=None, metavar="HOST:PORT",
                 help="Serve the HTTP hook there (off by default; a non-loopback address needs a token)."),
    click.option("--token-file", default=None, type=click.Path(dir_okay=False), metavar="FILE",
                 help="Bearer token for the HTTP hook (default: $PUPPEMON_HTTP_TOKEN)."),
    click.option("--keep", default=None, metavar="DURATION",
                 help="Retention: once an hour, prune records older than this (e.g. 90d) from the runs tip."),
    click.option("--rotate-after", default=None, type=click.IntRange(min=1), metavar="COUNT",
                 help="Move closed days out of the runs tip into archive refs once it holds this many of their "
                      f"records (default {daemon_defaults.ROTATE_AFTER})."),
    click.option("--build-timeout", default=None, metavar="DURATION",
                 help="How long building one flow's Python environment or container image may take before "
                      "the deploy is refused (default 10m)."),
    click.option("--max-pause", default=None, metavar="DURATION",
                 help="A run paused with `pause --run` longer than this is cancelled (default 24h)."),
    click.option("--live-interval", default=None, metavar="SECONDS",
                 help="Push the log tails of runs in flight to refs/puppemon/live/NAME at most this often, for "
                      f"`logs -f` (default {daemon_defaults.LIVE_INTERVAL:g}; 0: never)."),
    click.option("--no-live", is_flag=True, default=None, help="Publish no live log tails (as --live-interval 0)."),
    click.option("--labels", multiple=True, metavar="LABEL,...",
                 help="What this daemon offers (e.g. gpu,eu; repeatable): it takes only the flows whose runs_on "
                      "it has every label of, and the flows with no runs_on."),
    click.option("--container-engine", default=None, metavar="podman|docker",
                 help="The engine for flows with container: (default: podman, else docker, whichever is installed)."),
    click.option("--container-arg", "container_args", multiple=True, metavar="ARG",
                 help="A flag every container run gets, right after `run` (repeatable; write it with =, e.g. "
                      "--container-arg=--runtime --container-arg=runc)."),
    click.option("--container-mount-root", "container_mount_roots", multiple=True, metavar="DIR",
                 help="A host directory under which flows may mount paths (repeatable; none by default)."),
    click.option("--container-network", default=None, type=click.Choice(["none", "bridge", "host"]),
                 help="The network of container flows that do not name one (default: the engine's)."),
    click.option("--slurm-shared-dir", default=None, type=click.Path(file_okay=False), metavar="DIR",
                 help="A directory this server and the Slurm compute nodes both see: slurm: flows run as jobs "
                      "there (off without it; $SLURM_CONF names the cluster)."),
    click.option("--sbatch-arg", "sbatch_args", multiple=True, metavar="ARG",
                 help="A flag every sbatch gets, before the flow's own (repeatable; e.g. --sbatch-arg=--account=lab)."),
    click.option("--watch-root", multiple=True, metavar="DIR",
                 help="A directory under which on_file: flows may watch (repeatable; none by default)."),
    click.option("--config", default=None, type=click.Path(exists=True, dir_okay=False),
                 help="YAML file with any of these options (default: ~/.config/puppemon/daemon.yaml, else "
                      "/etc/puppemon/daemon.yaml); relative paths in it are relative to the file."),
]


def options(f):
    """Apply OPTIONS to the daemon command, in the order --help lists them."""
    for option in reversed(OPTIONS):
        f = option(f)
    return f
