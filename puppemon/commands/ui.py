"""`puppemon ui`: the dashboard over this clone's runs and flows branches, or a static export of it."""
from __future__ import annotations

import sys

from puppemon.errors import PuppemonError


def main(remote: str | None = None, port: int = 8787, host: str = "127.0.0.1", open_browser: bool = False,
         export: str | None = None, directory: str = ".", fetch: bool = True, every: float = 3.0) -> int:
    """Serve the dashboard (or, with `export`, write it as a static site into that directory)."""
    from puppemon.formats import is_loopback
    from puppemon.gitstore import Store
    from puppemon.gitstore.transport import resolve_remote
    from puppemon.web.server import Fetcher

    store = Store.discover(directory)
    try:
        remote = resolve_remote(store, remote)
    except PuppemonError:
        if remote is not None:
            raise
        print("note: this repository has no remote: showing local records only (pass --remote NAME|URL)",
              file=sys.stderr)
    fetcher = Fetcher(store, remote if fetch else None, every)
    if export is not None:
        from puppemon.web.export import export as write_site

        fetcher.fetch()
        written, kept = write_site(store, export)
        print(f"wrote {written} pages to {export} ({kept} unchanged)")
        return 0
    return _serve(store, remote, fetcher, host, port, open_browser, is_loopback(host))


def _serve(store, remote, fetcher, host: str, port: int, open_browser: bool, loopback: bool) -> int:
    from puppemon.web.actions import GitActions
    from puppemon.web.app import Access, App
    from puppemon.web.reading import Sources
    from puppemon.web.server import UiServer

    actions = GitActions(store, remote, fetcher.wake.set) if remote and loopback else None
    if not loopback:
        print(f"note: {host} is not a loopback address: the pages are read-only (no run, cancel or pause)",
              file=sys.stderr)
    app = App(Sources(store), Access(local=True, loopback_only=loopback), actions)
    try:
        server = UiServer(app, host, port)
    except OSError as exc:
        raise PuppemonError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another with --port") from None
    url = f"http://{host if ':' not in host else f'[{host}]'}:{server.server_address[1]}/"
    fetcher.start()
    print(f"serving the dashboard of {remote or 'this repository'} at {url} (Ctrl-C stops)", flush=True)
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        fetcher.stop()
        server.server_close()
    return 0
