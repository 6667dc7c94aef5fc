"""What the environment figures build from, with no network: small wheels made with zipfile in a local
directory, uv pointed at it offline, and a slow find-links server on 127.0.0.1 for a build that takes a
known while."""
from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PACKAGES = 5   # "a few small packages": benchpkg0 needs benchpkg1, ... needs benchpkg4 (a chain to resolve)


def wheel(directory: Path, name: str, version: str = "1.0", requires: tuple[str, ...] = ()) -> Path:
    """A pure-Python wheel: `name/__init__.py` and its dist-info (METADATA, WHEEL, RECORD with hashes)."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"{dist}/METADATA": (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                             + "".join(f"Requires-Dist: {r}\n" for r in requires)).encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: puppemon-bench\nRoot-Is-Purelib: true\n"
                         b"Tag: py3-none-any\n",
    }
    record = "".join(f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
                     f"{len(data)}\n" for path, data in files.items()) + f"{dist}/RECORD,,\n"
    files[f"{dist}/RECORD"] = record.encode()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name_in_zip, data in files.items():
            zf.writestr(name_in_zip, data)
    return path


def wheelhouse(directory: Path, count: int = PACKAGES, prefix: str = "benchpkg") -> Path:
    """`count` wheels, each needing the next; a requirements.txt naming the first and one pinned."""
    for i in range(count):
        wheel(directory, f"{prefix}{i}", requires=(f"{prefix}{i + 1}",) if i + 1 < count else ())
    return directory


def requirements(count: int = PACKAGES, prefix: str = "benchpkg", comment: str = "") -> bytes:
    """What the flows declare: the head of the chain (uv resolves the rest) and one pin."""
    return (f"# {comment}\n" if comment else "").encode() + \
        f"{prefix}0\n{prefix}{count // 2}==1.0\n".encode()


def uv_settings(wheels: Path | str, cache: Path) -> dict[str, str]:
    """uv offline, from a wheel directory (or a find-links URL), with a cache of the bench's own."""
    return {"UV_NO_INDEX": "1", "UV_FIND_LINKS": str(wheels), "UV_CACHE_DIR": str(cache),
            "UV_PYTHON_DOWNLOADS": "never", "UV_NO_CONFIG": "1"}


@contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """These variables in this process's environment (EnvStore reads uv's settings from it), then as before."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class SlowFindLinks:
    """A find-links page on 127.0.0.1 that answers its listing after `delay` seconds (the wheels at once):
    an environment build that takes a known while, like one from a slow mirror."""

    def __init__(self, wheels: Path, delay: float) -> None:
        self.wheels, self.delay = wheels, delay
        self.listings: list[float] = []   # when each listing was asked for
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                self.answer(head=True)

            def do_GET(self) -> None:
                self.answer(head=False)

            def answer(self, head: bool) -> None:
                name = self.path.strip("/")
                if not name and head:
                    body, kind = b"", "text/html"
                elif not name:
                    outer.listings.append(time.time())
                    time.sleep(outer.delay)
                    links = "".join(f'<a href="{p.name}">{p.name}</a>\n' for p in sorted(outer.wheels.glob("*.whl")))
                    body, kind = f"<html><body>\n{links}</body></html>\n".encode(), "text/html"
                elif "/" not in name and (outer.wheels / name).is_file():
                    body, kind = (outer.wheels / name).read_bytes(), "application/octet-stream"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")  # every build waits for the listing again
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def __enter__(self) -> SlowFindLinks:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
