"""The daemon: a loop assembled from parts (loop.py), and the defaults of its settings.

The defaults are written here, once, so that `puppemon --help` can show them
without importing any part of the daemon (settings.py uses them).
"""
POLL = 60.0            # seconds between fetches
MAX_PARALLEL = 4       # runs at once
GRACE = 30.0           # on SIGTERM, how long runs may finish before they are killed
KILL_GRACE = 5.0       # a cancelled or timed-out run: SIGTERM, then SIGKILL this much later
BUILD_TIMEOUT = 600.0    # building one flow's Python environment, before the deploy is refused
ROTATE_AFTER = 500     # entries of closed days the runs tip holds before they rotate into archive refs
MAX_PAUSE = 86400.0     # a run paused (`pause --run`) longer than this is cancelled
LIVE_INTERVAL = 5.0     # seconds between two pushes of the live log tails, at least (0: none)
MISFIRE_GRACE = 60.0    # --once: a fire this late still counts as due now (catchup: none runs it)
