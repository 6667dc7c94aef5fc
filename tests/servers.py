"""Real git remotes for tests: an OpenSSH server and a smart-HTTP server on 127.0.0.1.

Fixtures (loaded by conftest through `pytest_plugins`):

- `ssh_server` (session): one sshd with throwaway host and user keys, key auth only.
- `ssh_remote`: a bare repo reached over ssh, with `GIT_SSH_COMMAND` set for the test.
- `ssh_alias_remote`: the same through the user's own configuration only: a
  `Host puppemon-test` entry in `~/.ssh/config`, URLs `ssh://puppemon-test/<path>`.
- `http_server(auth=None)`: factory for a smart-HTTP server (`git http-backend` as
  CGI); `auth` is None, ("basic", user, password), ("bearer", token) or
  ("header", name, value).
- `http_remote`: a bare repo on an HTTP server without auth.

Each remote object has `.bare` (the bare repo path), `.url` and `.url_for(path)`;
`.new_bare(name)` makes another bare repo the server can reach.
"""
from __future__ import annotations

import base64
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO

import pytest

from tests.conftest import unavailable, wait_until

LOCALHOST = "127.0.0.1"
SSH_ALIAS = "puppemon-test"
START_DEADLINE = 15.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOCALHOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _tool(name: str, *extra_dirs: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), *extra_dirs])
    return shutil.which(name, path=path)


def _missing(what: str) -> None:
    """Skip on a developer machine without `what`; in CI (where .ci/run installs it) fail."""
    unavailable(f"{what} is not installed (`apt-get install openssh-server git`, or run .ci/run)")


def _git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60)
    if proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc.stdout


def _init_bare(path: Path) -> Path:
    _git("init", "--bare", "--quiet", str(path))
    return path


# --------------------------------------------------------------------------- ssh


@dataclass
class SSHServer:
    """A running sshd on 127.0.0.1 and the client-side material to reach it."""

    port: int
    user: str
    client_key: Path
    known_hosts: Path
    log: Path
    proc: subprocess.Popen

    @property
    def ssh_command(self) -> str:
        """An ssh command line that trusts only this server and offers only the test key."""
        # -F none: the real user's ~/.ssh/config (read from the passwd entry, not
        # $HOME) must not change what the tests do.
        q = shlex.quote  # git runs this through the shell
        return (f"ssh -F none -i {q(str(self.client_key))} -p {self.port}"
                f" -o UserKnownHostsFile={q(str(self.known_hosts))} -o StrictHostKeyChecking=yes"
                f" -o IdentitiesOnly=yes -o BatchMode=yes -o ConnectTimeout=10")

    def ssh_config(self) -> str:
        """A `Host puppemon-test` block for an ssh config file."""
        return (f"Host {SSH_ALIAS}\n"
                f"    HostName {LOCALHOST}\n"
                f"    Port {self.port}\n"
                f"    User {self.user}\n"
                f"    IdentityFile \"{self.client_key}\"\n"
                f"    IdentitiesOnly yes\n"
                f"    UserKnownHostsFile \"{self.known_hosts}\"\n"
                f"    StrictHostKeyChecking yes\n"
                f"    BatchMode yes\n"
                f"    ConnectTimeout 10\n")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _sshd_config(d: Path, port: int, user: str) -> str:
    return (f"Port {port}\n"
            f"ListenAddress {LOCALHOST}\n"
            f"HostKey {d / 'ssh_host_ed25519_key'}\n"
            f"PidFile {d / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {d / 'authorized_keys'}\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\n"
            "StrictModes no\n"
            "UsePAM no\n"
            f"AllowUsers {user}\n"
            "LogLevel VERBOSE\n"
            # The git on the far side must not read the machine's or the real
            # user's git config, exactly like the client side in conftest.
            f"SetEnv GIT_CONFIG_NOSYSTEM=1 HOME={d / 'server-home'}\n")


def start_sshd(d: Path) -> SSHServer:
    """Start sshd in the foreground with fresh keys under directory `d`."""
    sshd, keygen = _tool("sshd", "/usr/sbin", "/sbin"), _tool("ssh-keygen")
    if not sshd or not keygen or not _tool("ssh"):
        _missing("OpenSSH (sshd, ssh, ssh-keygen)")
    d.mkdir(parents=True, exist_ok=True)
    (d / "server-home").mkdir(exist_ok=True)
    for name in ("ssh_host_ed25519_key", "client_key"):
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", f"puppemon-test-{name}",
                        "-f", str(d / name)], check=True, capture_output=True)
    shutil.copyfile(d / "client_key.pub", d / "authorized_keys")
    # sshd refuses to start without its privilege separation directory, which
    # only exists once the packaged service has run.
    if os.geteuid() == 0 and not Path("/run/sshd").exists():
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
    user = pwd.getpwuid(os.getuid()).pw_name
    host_key = (d / "ssh_host_ed25519_key.pub").read_text().split()

    last_log = ""
    for _attempt in range(3):  # another process may grab the free port before sshd binds it
        port = _free_port()
        config = d / "sshd_config"
        config.write_text(_sshd_config(d, port, user))
        known_hosts = d / "known_hosts"
        known_hosts.write_text(f"[{LOCALHOST}]:{port} {host_key[0]} {host_key[1]}\n")
        log = d / "sshd.log"
        with open(log, "wb") as log_file:
            proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                    stdout=log_file, stderr=subprocess.STDOUT)
        server = SSHServer(port, user, d / "client_key", known_hosts, log, proc)
        try:
            wait_until(lambda: proc.poll() is not None or _accepts(port), START_DEADLINE, f"sshd on port {port}",
                       interval=0.02)
        except AssertionError:
            stop_sshd(server)
            raise AssertionError(f"sshd did not start listening:\n{server.log_text()}") from None
        if proc.poll() is None:
            return server
        last_log = server.log_text()
        proc.wait()
    raise AssertionError(f"sshd failed to start:\n{last_log}")


def stop_sshd(server: SSHServer) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


@pytest.fixture(scope="session")
def ssh_server(tmp_path_factory) -> SSHServer:
    """One sshd for the whole session (127.0.0.1, random port, key auth only)."""
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    stop_sshd(server)


@dataclass
class SSHRemote:
    """Bare repositories reachable over ssh; `url_for` gives the URL a test passes to git."""

    server: SSHServer
    bare: Path
    host: str  # what goes into the URL: 127.0.0.1:PORT, or the ssh config alias

    @property
    def url(self) -> str:
        return self.url_for(self.bare)

    def url_for(self, bare: Path) -> str:
        return f"ssh://{self.host}{Path(bare).resolve()}"

    def new_bare(self, name: str) -> Path:
        return _init_bare(self.bare.parent / name)


def _ssh_remote(server: SSHServer, bare: Path, host: str) -> SSHRemote:
    remote = SSHRemote(server, _init_bare(bare), host)
    try:
        _git("ls-remote", remote.url)
    except AssertionError as e:
        raise AssertionError(f"{e}\nsshd log:\n{server.log_text()}") from None
    return remote


@pytest.fixture
def ssh_remote(ssh_server, scrubbed_env, monkeypatch, tmp_path) -> SSHRemote:
    """A bare repo over ssh, reached through GIT_SSH_COMMAND (URL ssh://127.0.0.1:PORT/<path>)."""
    # Depending on scrubbed_env puts this after it, so the variable is not scrubbed away.
    monkeypatch.setenv("GIT_SSH_COMMAND", ssh_server.ssh_command)
    return _ssh_remote(ssh_server, tmp_path / "ssh-remote.git", f"{LOCALHOST}:{ssh_server.port}")


@pytest.fixture
def ssh_alias_remote(ssh_server, scrubbed_env, tmp_path) -> SSHRemote:
    """A bare repo over ssh, reached only through the user's configuration (URL ssh://puppemon-test/<path>).

    The alias lives in ~/.ssh/config of the test HOME. ssh itself finds its user
    config through the passwd entry rather than $HOME, so the test user's global
    git config points ssh at that file with core.sshCommand, as a user with a
    non-default ssh config would. No GIT_* variable is set.
    """
    ssh_dir = scrubbed_env / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    config = ssh_dir / "config"
    config.write_text(ssh_server.ssh_config())
    config.chmod(0o600)
    _git("config", "--global", "core.sshCommand", f"ssh -F {shlex.quote(str(config))}")
    return _ssh_remote(ssh_server, tmp_path / "ssh-alias-remote.git", SSH_ALIAS)


# ---------------------------------------------------------------------- smart HTTP


@dataclass
class SeenRequest:
    """One request the HTTP server answered."""

    method: str
    path: str
    query: str
    authorized: bool
    status: int = 0
    chunked: bool = False
    git_protocol: str = ""
    body_bytes: int = 0
    backend_stderr: str = ""


def _http_backend() -> list[str]:
    for candidate in ("/usr/lib/git-core/git-http-backend", "/usr/libexec/git-core/git-http-backend"):
        if os.access(candidate, os.X_OK):
            return [candidate]
    exec_path = subprocess.run(["git", "--exec-path"], capture_output=True, text=True).stdout.strip()
    candidate = os.path.join(exec_path, "git-http-backend")
    return [candidate] if os.access(candidate, os.X_OK) else ["git", "http-backend"]


class SmartHTTPServer:
    """`git http-backend` behind a threaded HTTP/1.1 server on 127.0.0.1, with optional auth."""

    REALM = "puppemon-test"

    def __init__(self, root: Path, auth: tuple | None = None, *, anonymous_push: bool = True):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.home = self.root.parent / f"{self.root.name}-server-home"
        self.home.mkdir(exist_ok=True)
        self.auth = auth
        self.anonymous_push = anonymous_push
        self.requests: list[SeenRequest] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._check, self.remote_user = self._authenticator(auth)
        self._backend = _http_backend()
        handler = type("Handler", (_GitHTTPHandler,), {"owner": self})
        self.httpd = ThreadingHTTPServer((LOCALHOST, 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = self._handle_error  # type: ignore[method-assign]
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"smart-http-{self.port}", daemon=True)

    @staticmethod
    def _authenticator(auth):
        if auth is None:
            return (lambda headers: True), None
        kind, *args = auth
        if kind == "basic":
            user, password = args
            token = base64.b64encode(f"{user}:{password}".encode()).decode()

            def check(headers):
                scheme, _, value = (headers.get("Authorization") or "").partition(" ")
                return scheme.lower() == "basic" and value.strip() == token
            return check, user
        if kind == "bearer":
            (token,) = args
            return (lambda headers: headers.get("Authorization") == f"Bearer {token}"), "bearer"
        if kind == "header":
            name, value = args
            return (lambda headers: headers.get(name) == value), "header"
        raise ValueError(f"unknown auth {auth!r}: use ('basic', user, pw), ('bearer', token) or ('header', name, value)")

    def start(self) -> "SmartHTTPServer":
        self._thread.start()
        wait_until(lambda: _accepts(self.port), START_DEADLINE, f"HTTP server on port {self.port}", interval=0.02)
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=10)

    def url_for(self, bare: Path) -> str:
        rel = Path(bare).resolve().relative_to(self.root.resolve())
        return f"http://{LOCALHOST}:{self.port}/{urllib.parse.quote(rel.as_posix())}"

    def new_bare(self, name: str = "remote.git") -> Path:
        return _init_bare(self.root / name)

    def authorized_requests(self) -> list[SeenRequest]:
        return [r for r in self.requests if r.authorized]

    def _record(self, seen: SeenRequest) -> None:
        with self._lock:
            self.requests.append(seen)

    def _handle_error(self, request, client_address) -> None:
        import traceback
        with self._lock:
            self.errors.append(traceback.format_exc())

    def cgi_env(self, handler: "_GitHTTPHandler", path: str, query: str, authorized: bool) -> dict[str, str]:
        h = handler.headers
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "GIT_CONFIG_NOSYSTEM": "1",
            "LC_ALL": "C",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_SOFTWARE": "puppemon-test",
            "SERVER_PROTOCOL": handler.request_version,
            "SERVER_NAME": LOCALHOST,
            "SERVER_PORT": str(self.port),
            "REQUEST_METHOD": handler.command,
            "PATH_INFO": urllib.parse.unquote(path),
            "QUERY_STRING": query,
            "REMOTE_ADDR": handler.client_address[0],
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
        }
        if h.get("Content-Type"):
            env["CONTENT_TYPE"] = h["Content-Type"]
        if h.get("Content-Length") and "chunked" not in (h.get("Transfer-Encoding") or "").lower():
            env["CONTENT_LENGTH"] = h["Content-Length"]
        if h.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = h["Content-Encoding"]
        if h.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = env["HTTP_GIT_PROTOCOL"] = h["Git-Protocol"]
        if self.remote_user and authorized:
            env["REMOTE_USER"] = self.remote_user
        elif self.auth is None and self.anonymous_push:
            # http-backend refuses receive-pack to anonymous users unless told otherwise;
            # say so for this process rather than in the bare repo's config.
            env.update({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.receivepack",
                        "GIT_CONFIG_VALUE_0": "true"})
        return env


class _GitHTTPHandler(BaseHTTPRequestHandler):
    # HTTP/1.1, because curl refuses to send a chunked body to an HTTP/1.0 server.
    protocol_version = "HTTP/1.1"
    owner: SmartHTTPServer

    def log_message(self, format, *args) -> None:  # the request log is self.owner.requests
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        path, _, query = self.path.partition("?")
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        authorized = self.owner._check(self.headers)
        seen = SeenRequest(self.command, path, query, authorized, chunked=chunked,
                           git_protocol=self.headers.get("Git-Protocol") or "")
        # Recorded before answering, and filled in before the answer ends, so a test
        # that looks right after git exits sees the whole request.
        self.owner._record(seen)
        if not authorized:
            seen.status = 401
            self._unauthorized()
        else:
            self._run_backend(path, query, chunked, seen)

    def _unauthorized(self) -> None:
        body = b"authentication required\n"
        self.send_response(401)
        self.send_header("WWW-Authenticate", f'Basic realm="{SmartHTTPServer.REALM}"')
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        # The request body (if any) is left unread, so this connection cannot be reused.
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def _request_body(self, chunked: bool):
        """Yield the request body as it arrives, de-chunked."""
        if chunked:
            while True:
                line = self.rfile.readline()
                if not line:
                    raise ConnectionError("request body ended inside a chunk header")
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return
                remaining = size
                while remaining:
                    data = self.rfile.read(min(remaining, 65536))
                    if not data:
                        raise ConnectionError("request body ended inside a chunk")
                    remaining -= len(data)
                    yield data
                self.rfile.readline()  # the CRLF that ends each chunk
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining:
                data = self.rfile.read(min(remaining, 65536))
                if not data:
                    raise ConnectionError("request body shorter than Content-Length")
                remaining -= len(data)
                yield data

    def _run_backend(self, path: str, query: str, chunked: bool, seen: SeenRequest) -> None:
        env = self.owner.cgi_env(self, path, query, authorized=True)
        proc = subprocess.Popen(self.owner._backend, env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stderr_chunks: list[bytes] = []

        # Feed stdin and drain stderr on their own threads while the response is
        # streamed here: the backend may answer before it has read everything.
        def feed(stdin: IO[bytes]) -> None:
            backend_reading = True
            try:
                for data in self._request_body(chunked):
                    seen.body_bytes += len(data)
                    if backend_reading:
                        try:
                            stdin.write(data)
                        except BrokenPipeError:
                            # Keep reading (and dropping) the body so the connection stays in step.
                            backend_reading = False
            except ConnectionError:
                self.close_connection = True
            finally:
                try:
                    stdin.close()
                except BrokenPipeError:
                    pass

        feeder = threading.Thread(target=feed, args=(proc.stdin,), daemon=True)
        drainer = threading.Thread(target=lambda: stderr_chunks.append(proc.stderr.read()), daemon=True)
        feeder.start()
        drainer.start()

        def finish() -> None:
            feeder.join(timeout=60)
            drainer.join(timeout=60)
            proc.wait(timeout=60)
            seen.backend_stderr = b"".join(stderr_chunks).decode(errors="replace")

        try:
            seen.status, headers = self._cgi_headers(proc.stdout)
            self.send_response(seen.status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            while True:
                data = proc.stdout.read1(65536)
                if not data:
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            finish()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        finally:
            proc.stdout.close()
            if proc.returncode is None:
                proc.kill()
                finish()
            proc.stderr.close()

    @staticmethod
    def _cgi_headers(stdout: IO[bytes]) -> tuple[int, list[tuple[str, str]]]:
        status, headers = 200, []
        while True:
            line = stdout.readline()
            if line in (b"\r\n", b"\n", b""):
                return status, headers
            name, _, value = line.decode("latin-1").rstrip("\r\n").partition(":")
            if name.strip().lower() == "status":
                status = int(value.strip().split()[0])
            else:
                headers.append((name.strip(), value.strip()))


@pytest.fixture
def http_server(tmp_path):
    """Factory: `http_server(auth=None)` starts a smart-HTTP server serving a fresh tmp root."""
    servers: list[SmartHTTPServer] = []

    def make(auth: tuple | None = None, *, anonymous_push: bool = True) -> SmartHTTPServer:
        root = tmp_path / f"http-root-{len(servers)}"
        server = SmartHTTPServer(root, auth, anonymous_push=anonymous_push).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@dataclass
class HTTPRemote:
    """A bare repo served over smart HTTP."""

    server: SmartHTTPServer
    bare: Path

    @property
    def url(self) -> str:
        return self.server.url_for(self.bare)

    def url_for(self, bare: Path) -> str:
        return self.server.url_for(bare)

    def new_bare(self, name: str) -> Path:
        return self.server.new_bare(name)


@pytest.fixture
def http_remote(http_server) -> HTTPRemote:
    """A bare repo `remote.git` on a smart-HTTP server without auth (anonymous push allowed)."""
    server = http_server()
    remote = HTTPRemote(server, server.new_bare("remote.git"))
    _git("ls-remote", remote.url)
    return remote
