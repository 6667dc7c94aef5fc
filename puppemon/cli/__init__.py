"""Command-line wiring only: each command calls one function in puppemon.commands."""
from __future__ import annotations

import gc

import click

from puppemon import __version__
from puppemon.cli.schedule import backfill
from puppemon.cli.wiring import call as _call, complete as _complete
from puppemon.cli.daemon_options import options as daemon_options
from puppemon.formats import STATUSES


def _params_options(f):
    """-p KEY=VALUE and --params-json, shared by run and trigger."""
    f = click.option("--params-json", default=None, metavar="JSON",
                     help="Parameters as a JSON object; -p values override it.")(f)
    return click.option("-p", "--param", "pairs", multiple=True, metavar="KEY=VALUE",
                        help="A parameter; the value is read as YAML (3 is an int, true a bool). "
                             "Repeatable.")(f)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="puppemon")
def cli() -> None:
    """puppemon: push scripts to a git branch; a daemon runs them on schedule and
    commits every run back to git."""


@cli.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@click.option("--github", is_flag=True, help="Also write a GitHub Actions workflow that pushes on merge.")
@click.option("--puppemon-source", default=None, metavar="REQUIREMENT",
              help="With --github: what the workflow installs, e.g. git+https://host/you/puppemon.git@v0.1.0 "
                   "(default: this puppemon's own clone and commit).")
@click.option("--serverless", is_flag=True, help="With --github: also a scheduled workflow that runs the flows on "
              "GitHub Actions, no server needed (docs/serverless.md).")
def init(directory: str, github: bool, puppemon_source: str | None, serverless: bool) -> None:
    """Scaffold puppemon.yaml and an example flow (never overwrites)."""
    _call("init", directory=directory, github=github, puppemon_source=puppemon_source, serverless=serverless)


@cli.command()
@click.argument("directory", default=".", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True,
              help="Print the verdict and each flow as JSON (also when the manifest is invalid).")
def validate(directory: str, as_json: bool) -> None:
    """Check puppemon.yaml and show each flow's trigger and next fire time.

    Each entrypoint is read, never imported: its file must be in the project
    and define the function, and the flow's params must fit its signature.
    DIRECTORY may be the project or a directory inside it.
    """
    _call("validate", directory=directory, as_json=as_json)


@cli.command()
@click.option("--remote", "remote", default=None, metavar="NAME|URL",
              help="Remote to push to (default: the branch's upstream remote, else origin).")
@click.option("--branch", default="flows", show_default=True, help="Branch that holds deploys.")
@click.option("-m", "--message", default=None, help="Extra text for the deploy commit.")
@click.option("--dry-run", is_flag=True,
              help="List every path that would be added, changed or removed; write nothing.")
@click.option("--watch", is_flag=True, help="Keep running; push again after files change.")
@click.option("--allow", multiple=True, metavar="PATH",
              help="Deploy this file although it looks like a secret (a key, .env values). Repeatable.")
@click.option("-C", "directory", default=".", type=click.Path(exists=True, file_okay=False),
              help="Project directory, or one inside it (default: the current one).")
def push(remote, branch, message, dry_run, watch, allow, directory) -> None:
    """Snapshot the working directory onto the flows branch and push it.

    Before anything is written, it warns about virtual environments and large
    files, and refuses files that look like secrets (private keys, .env values,
    a secrets file holding values) unless --allow names them.
    """
    _call("push", directory=directory, remote=remote, branch=branch, message=message,
          dry_run=dry_run, watch=watch, allow=allow)


@cli.command()
@click.argument("flow", shell_complete=_complete("flows"))
@_params_options
@click.option("--record", is_flag=True, help="Record the run on the runs branch and push it to the remote.")
@click.option("--no-push", is_flag=True, help="With --record: commit the record locally only.")
@click.option("--remote", default=None, metavar="NAME|URL",
              help="With --record: remote to push to (default: as for push).")
@click.option("-C", "directory", default=".", type=click.Path(exists=True, file_okay=False),
              help="Project directory, or one inside it (default: the current one).")
def run(flow, pairs, params_json, record, no_push, remote, directory) -> None:
    """Run FLOW here and now, streaming its output; exit with its exit code.

    A flow with `python:` runs in its environment, built here as the daemon builds it
    (cached in ~/.cache/puppemon/envs; `puppemon env FLOW` shows it). A flow with
    `container:` runs in its image, in the project itself, with the engine settings of
    this machine's daemon config. It runs as you, whatever its `user:`."""
    _call("run", flow=flow, pairs=pairs, params_json=params_json, directory=directory,
          record=record, push=not no_push, remote=remote)


@cli.command("env")
@click.argument("flow", shell_complete=_complete("flows"))
@click.option("--rebuild", is_flag=True, help="Build the environment again even if it is cached.")
@click.option("-C", "directory", default=".", type=click.Path(exists=True, file_okay=False),
              help="The project directory (default: the one you are in).")
def env_command(flow, rebuild, directory) -> None:
    """Show (and build, when needed) the Python environment FLOW runs in: its path and packages."""
    _call("env", flow=flow, rebuild=rebuild, directory=directory)


def _read_options(f):
    """--remote, --fetch/--no-fetch and -C, shared by the commands that read the runs branch."""
    f = click.option("-C", "directory", default=".", type=click.Path(exists=True, file_okay=False),
                     help="Project directory (default: the current one).")(f)
    f = click.option("--fetch/--no-fetch", "fetch", default=None,
                     help="Fetch the remote's history first, or do not: show what the local repository has. "
                          "Default: fetch, unless this repository fetched that remote in the last 5 s and has "
                          "not written to it since (PUPPEMON_FETCH_WINDOW=SECONDS; 0 always fetches).")(f)
    return click.option("--remote", default=None, metavar="NAME|URL",
                        help="Remote to read (default: the branch's upstream remote, else origin).")(f)


def _history_options(f):
    """--remote, --no-fetch and -C, for prune (which writes what it read, so it always fetches first)."""
    f = click.option("-C", "directory", default=".", type=click.Path(exists=True, file_okay=False),
                     help="Project directory (default: the current one).")(f)
    f = click.option("--no-fetch", is_flag=True, help="Do not fetch; show what the local repository has.")(f)
    return click.option("--remote", default=None, metavar="NAME|URL",
                        help="Remote to read (default: the branch's upstream remote, else origin).")(f)


@cli.command()
@click.argument("flow", required=False, shell_complete=_complete("flows"))
@click.option("--status", default=None, type=click.Choice(STATUSES), help="Only runs with this status.")
@click.option("-n", "--limit", default=20, show_default=True, type=click.IntRange(min=1),
              help="How many runs to show.")
@click.option("--since", default=None, metavar="DATE|DURATION",
              help="Only runs started since then: 2h, 7d, 2026-11-25, 2026-11-25T08:00.")
@click.option("--until", default=None, metavar="DATE|DURATION",
              help="Only runs started before then (same forms); older days are read from the archive refs.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of run.json records (see docs/json.md).")
@_read_options
def runs(flow, status, limit, since, until, as_json, remote, fetch, directory) -> None:
    """List recorded runs, newest first (fetches the remote's runs branch first)."""
    _call("runs", flow=flow, status=status, limit=limit, since=since, until=until, as_json=as_json, remote=remote,
          fetch=fetch, directory=directory)


@cli.command()
@click.argument("run", metavar="RUN_ID|FLOW", shell_complete=_complete("both"))
@click.option("--result", is_flag=True, help="Print the run's result.json instead of its log.")
@click.option("--outputs", is_flag=True, help="List the run's output files instead of its log.")
@click.option("--json", "as_json", is_flag=True, help="Print the run's record, log and result as one JSON object.")
@click.option("-f", "--follow", is_flag=True,
              help="Follow a running run (or FLOW's): print its output as it comes, until it ends.")
@click.option("--http", default=None, metavar="URL",
              help="With -f: also read the output from the daemon's HTTP hook at URL, for less delay "
                   "(token: $PUPPEMON_HTTP_TOKEN).")
@_read_options
def logs(run, result, outputs, as_json, follow, http, remote, fetch, directory) -> None:
    """Print the log of a run (an id or unique prefix), or of the latest run of FLOW."""
    _call("logs", which=run, result=result, outputs=outputs, remote=remote, fetch=fetch, directory=directory,
          as_json=as_json, follow=follow, http=http)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the daemons' status as JSON (see docs/json.md).")
@click.option("--prune-gone", is_flag=True,
              help="Remove the status refs (and live-log refs) of the daemons that are gone from the remote.")
@_read_options
def status(as_json, prune_gone, remote, fetch, directory) -> None:
    """Show each daemon's heartbeat, deployed commit, next fire times and runs in flight.

    A daemon with no heartbeat for 3 of its heartbeat periods (5 minutes at least) is gone.
    """
    _call("status", as_json=as_json, remote=remote, fetch=fetch, directory=directory, prune_gone=prune_gone)


@cli.command()
@click.argument("directory", default="puppemon-demo", type=click.Path(file_okay=False))
@click.option("--for", "duration", default="30s", show_default=True, metavar="DURATION",
              help="How long to run the daemon (Ctrl-C stops it sooner).")
def quickstart(directory, duration) -> None:
    """Create a demo project with a local remote, push it and run the daemon for a while."""
    _call("quickstart", directory=directory, duration=duration)


@cli.command()
@daemon_options
def daemon(**options) -> None:
    """Fetch flows from a remote, run them on schedule, commit every run to the runs branch."""
    _call("daemon", **options)


cli.add_command(backfill)


@cli.command()
@click.argument("flow", shell_complete=_complete("flows"))
@_params_options
@click.option("--remote", default=None, metavar="NAME|URL",
              help="Remote to send the request to (default: the branch's upstream remote, else origin).")
@click.option("--wait", is_flag=True, help="Follow the run to its end, print its log, exit with its exit code.")
@click.option("--timeout", default=None, metavar="SECONDS", help="With --wait: give up after this long (exit 2).")
@click.option("--json", "as_json", is_flag=True, help="Print the request as JSON (see the README); not with --wait.")
@click.option("-C", "directory", default=".", type=click.Path(exists=True, file_okay=False),
              help="Project directory (default: the current one).")
def trigger(flow, pairs, params_json, remote, wait, timeout, as_json, directory) -> None:
    """Ask the daemon to run FLOW: write a request to the runs branch and print the run's id."""
    _call("trigger", flow=flow, pairs=pairs, params_json=params_json, remote=remote, wait=wait,
          timeout=timeout, as_json=as_json, directory=directory)


@cli.command()
@click.argument("run_id", metavar="[RUN_ID]", required=False, shell_complete=_complete("runs"))
@click.option("--flow", default=None, metavar="NAME", help="Cancel every requested, queued or running run of NAME.")
@click.option("--wait", is_flag=True, help="Wait until each run is recorded (exit 1 unless all are cancelled).")
@click.option("--timeout", default=None, metavar="SECONDS", help="With --wait: give up after this long (exit 2).")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON (see the README).")
@click.option("--remote", default=None, metavar="NAME|URL",
              help="Remote to send the request to (default: the branch's upstream remote, else origin).")
@click.option("-C", "directory", default=".", type=click.Path(exists=True, file_okay=False),
              help="Project directory (default: the current one).")
def cancel(run_id, flow, wait, timeout, as_json, remote, directory) -> None:
    """Withdraw RUN_ID (an id or unique prefix) if it has not started, else stop it (SIGTERM, grace, SIGKILL)."""
    _call("cancel", run_id=run_id, flow=flow, wait=wait, timeout=timeout, as_json=as_json, remote=remote,
          directory=directory)


def _control_options(f):
    """FLOW, --all, --run ID, --json, --remote and -C, shared by pause and resume."""
    f = click.option("-C", "directory", default=".", type=click.Path(exists=True, file_okay=False),
                     help="Project directory (default: the current one).")(f)
    f = click.option("--remote", default=None, metavar="NAME|URL",
                     help="Remote to write to (default: the branch's upstream remote, else origin).")(f)
    f = click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")(f)
    f = click.option("--run", "run_id", default=None, metavar="RUN_ID", shell_complete=_complete("runs"),
                     help="A run in flight instead of a flow (its process group is frozen, SIGSTOP).")(f)
    f = click.option("--all", "all_flows", is_flag=True, help="Every deployed flow, in one commit.")(f)
    return click.argument("flow", required=False, shell_complete=_complete("flows"))(f)


@cli.command()
@_control_options
@click.option("--reason", default=None, metavar="TEXT", help="Why, for `git log runs`, status and upcoming.")
def pause(flow, all_flows, run_id, as_json, remote, directory, reason) -> None:
    """Pause FLOW (or --all): its schedule and triggers start no run until it is resumed.

    The state is a commit on the runs branch, so every daemon honours it, through
    restarts and deploys. Requests for a paused flow are refused. With --run ID,
    freeze that run in flight instead; its timeout stops counting meanwhile.
    """
    _call("pause", flow=flow, all_flows=all_flows, run_id=run_id, as_json=as_json, remote=remote,
          directory=directory, reason=reason)


@cli.command()
@_control_options
@click.option("--catch-up", "catch_up", is_flag=True,
              help="Run once for the fires missed while paused (one run per flow, not one per fire).")
def resume(flow, all_flows, run_id, as_json, remote, directory, catch_up) -> None:
    """Resume FLOW (or --all) paused with `puppemon pause`; with --run ID, let that run go on.

    Fires missed while paused are not run, unless --catch-up asks for one run.
    """
    _call("pause", flow=flow, all_flows=all_flows, run_id=run_id, as_json=as_json, remote=remote,
          directory=directory, catch_up=catch_up, resume=True)


@cli.command()
@click.argument("flow", required=False, shell_complete=_complete("flows"))
@click.option("-n", "count", default=1, show_default=True, type=click.IntRange(min=1, max=100),
              help="How many fire times to show per flow.")
@click.option("--json", "as_json", is_flag=True, help="Print the fire times as JSON.")
@_read_options
def upcoming(flow, count, as_json, remote, fetch, directory) -> None:
    """List the next fire times of the deployed flows (or FLOW), soonest first.

    Read from the remote's flows branch (and its runs branch for paused flows), in
    each flow's timezone and yours; without a deploy, from puppemon.yaml here.
    """
    _call("upcoming", flow=flow, count=count, as_json=as_json, remote=remote, fetch=fetch, directory=directory)


@cli.command()
@click.option("--remote", default=None, metavar="NAME|URL",
              help="Remote to read and act on (default: the branch's upstream remote, else origin).")
@click.option("--port", default=8787, show_default=True, type=click.IntRange(0, 65535), help="Port to serve on.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to serve on; actions (run, cancel, pause) only on a loopback one.")
@click.option("--open", "open_browser", is_flag=True, help="Open the dashboard in a web browser.")
@click.option("--export", default=None, metavar="DIR", type=click.Path(file_okay=False),
              help="Write the pages as a static site into DIR instead (only changed pages are rewritten; "
                   "--port, --host and --open do not apply).")
@click.option("--no-fetch", is_flag=True,
              help="Never fetch: show what this repository has (the buttons still push what they write).")
@click.option("-C", "directory", default=".", type=click.Path(exists=True, file_okay=False),
              help="Project directory (default: the current one).")
def ui(remote, port, host, open_browser, export, no_fetch, directory) -> None:
    """Serve a web dashboard of the runs and flows branches (fetched every few seconds)."""
    _call("ui", remote=remote, port=port, host=host, open_browser=open_browser, export=export,
          fetch=not no_fetch, directory=directory)


@cli.group()
def secrets() -> None:
    """Inspect the daemon's secrets file (names only, never values)."""


@secrets.command("check")
@click.option("--secrets", "secrets_file", required=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="The daemon's secrets file.")
@click.option("--manifest", default=None, type=click.Path(exists=True, dir_okay=False),
              help="A puppemon.yaml: show which flow gets which secret, and what is not granted.")
@click.option("--json", "as_json", is_flag=True, help="Print the secrets' names and grants as JSON.")
def secrets_check(secrets_file, manifest, as_json) -> None:
    """Check a secrets file; with --manifest, show each flow's granted and refused secrets."""
    _call("secrets", secrets_file=secrets_file, manifest=manifest, as_json=as_json)


@cli.command()
@click.option("--before", default=None, metavar="DATE|DURATION",
              help="Prune records dated before this day: 2026-09-01, or an age such as 90d.")
@click.option("--dry-run", is_flag=True, help="Say what would be pruned (or purged); change nothing.")
@click.option("--no-push", is_flag=True, help="Commit the prune locally only.")
@click.option("--purge", is_flag=True,
              help="With --before: rewrite the history of runs and the archive refs without those days, "
                   "and force-push it (asks first; stop the daemons before).")
@click.option("--purge-run", "purge_runs", multiple=True, metavar="RUN_ID",
              help="Rewrite the history without this run's record and request (a purge). Repeatable.")
@click.option("--yes", is_flag=True, help="Purge without asking (needed when not at a terminal).")
@_history_options
def prune(before, dry_run, no_push, purge, purge_runs, yes, remote, no_fetch, directory) -> None:
    """Take old runs, requests and deploy records out of the runs branch's tip.

    One ordinary commit deletes whole days older than --before; history keeps
    every record (`git log runs`, `git show`), nothing is rewritten or forced.
    It keeps pushes to the runs branch fast as history grows.

    --purge (with --before) and --purge-run ID remove records for good: every
    commit of runs and of the archive refs is rewritten without them and
    force-pushed with a lease. Stop the daemons first; other clones must fetch
    again (see the README, "History in plain git").
    """
    _call("prune", before=before, remote=remote, dry_run=dry_run, push=not no_push, fetch=not no_fetch,
          directory=directory, purge=purge, purge_runs=purge_runs, yes=yes)


def main() -> None:
    try:
        cli(prog_name="puppemon")
    finally:
        # Exiting frees what is left: the collector's pass over every object at exit (~20 ms after a
        # push of 10,000 files) finds nothing a process that is ending needs freed.
        gc.freeze()


if __name__ == "__main__":
    main()
