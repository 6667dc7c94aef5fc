"""Click wiring of the commands about a flow's schedule: `backfill`."""
from __future__ import annotations

import click

from puppemon.cli.wiring import call, complete


@click.command()
@click.argument("flow", shell_complete=complete("flows"))
@click.option("--from", "start", required=True, metavar="DATE",
              help="First moment of the range: 2026-11-01, 2026-11-01T08:00 (in the flow's timezone unless an "
                   "offset is given: 2026-11-01T08:00+08:00).")
@click.option("--to", "end", required=True, metavar="DATE",
              help="Last moment of the range (a date alone: that whole day); fire times after now are left "
                   "to the schedule.")
@click.option("--dry-run", is_flag=True, help="List the fire times and what would be asked for; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the fire times and requests as JSON (docs/json.md).")
@click.option("--remote", default=None, metavar="NAME|URL",
              help="Remote to send the requests to (default: the branch's upstream remote, else origin).")
@click.option("-C", "directory", default=".", type=click.Path(exists=True, file_okay=False),
              help="Project directory (default: the current one).")
def backfill(**options) -> None:
    """Ask for one run of FLOW per fire time of its schedule from --from to --to.

    The fire times are listed first. Each run is asked for through the runs branch with its scheduled
    time (PUPPEMON_SCHEDULED_TIME); a fire time already asked for, or run, is not asked for again.
    At most 1000 fire times at once.
    """
    call("backfill", **options)
