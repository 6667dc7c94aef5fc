"""The dashboard: HTML pages and a JSON API over the runs and flows branches (`puppemon ui`), served by
`puppemon ui`, by the daemon's `--listen`, or written as a static site (`puppemon ui --export DIR`).

reading (what a page shows, read from the tip trees and bounded ranges, cached by tip commit) · details
(a run's log, outputs and their diffs) · ansi (log colours) · pages (the page registry and their paths)
· render (Jinja2 with autoescape) · app (routes, tokens) · actions (run, cancel, pause through git)
· server (`puppemon ui`) · export (the static site)
"""
