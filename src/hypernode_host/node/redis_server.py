"""A redis-server of our own: private ones for the demo and the tests, and the one `up` runs for a node.

Every one has a password, random unless given: anything that reaches a Redis of the agent's can read
every job's script and env, enqueue jobs and forge results, so none is ever open.

Every option goes to redis-server in a config file (mode 0600, in the server's directory), never
in its arguments, so a password never shows in a process list.

``up`` without ``HN_REDIS_URL`` runs the node's own Redis (``embedded``): AOF on, ``noeviction``, a
fresh random password at every start, and no TCP port at all, only a Unix socket in the state
directory (mode 0700), so it never collides with a Redis the host runs, even when the container
shares the host's network. Its URL, password included, goes to ``<state dir>/redis.url`` (0600),
where state/connect.py finds it for every command run while ``HN_REDIS_URL`` is unset.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from hypernode_host.errors import ConfigError, HypernodeError
from hypernode_host.state.connect import URL_FILE, answers

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0  # replaying a big AOF takes a while
SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes on Linux, fewer elsewhere


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class TlsFiles:
    """The server's certificate and key (PEM), and the CA clients check it against (``ssl_ca_certs``)."""

    cert: Path
    key: Path
    ca: Path


def _quoted(value: str) -> str:
    """A value in redis.conf syntax (a double-quoted string)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class RedisProcess:
    """``with RedisProcess() as r: r.url`` — started on enter, stopped (and its own files removed) on exit.

    By default a loopback port of its own; with ``unix_socket`` that socket and no TCP port. Always a
    password: a fresh random one unless ``password`` names it (``""``: none, only for a test of what an
    unauthenticated Redis gets). With ``log_level`` its log goes to our stdout at that level (else
    nowhere). ``pass_fds`` stay open in it. With ``tls`` the port speaks TLS only, and the URL is
    ``rediss://``, naming the CA to check the server with.
    """

    def __init__(
        self,
        port: int | None = None,
        appendonly: bool = False,
        directory: Path | None = None,
        *,
        password: str | None = None,
        unix_socket: Path | None = None,
        log_level: str | None = None,
        pass_fds: tuple[int, ...] = (),
        tls: TlsFiles | None = None,
    ) -> None:
        self.tls = tls
        self.unix_socket = unix_socket
        self.port = 0 if unix_socket else port or free_port()
        self.appendonly = appendonly
        self.password = secrets.token_hex(16) if password is None else password
        self.log_level = log_level
        self.pass_fds = pass_fds
        self._own_dir = directory is None
        self.dir = directory or Path(tempfile.mkdtemp(prefix="hn-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.unix_socket:
            return f"unix://{auth}{self.unix_socket}?db=0"
        if self.tls:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={quote(str(self.tls.ca), safe='/')}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def config(self) -> str:
        """redis.conf for this server."""
        lines = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "protected-mode": "yes",
            "dir": _quoted(str(self.dir)),
            "save": '""',
            "appendonly": "yes" if self.appendonly else "no",
            "appendfsync": "everysec",
            "maxmemory-policy": "noeviction",
            "daemonize": "no",
            "logfile": '""',
            "loglevel": self.log_level or "notice",
        }
        if self.unix_socket:
            lines.update(unixsocket=_quoted(str(self.unix_socket)), unixsocketperm="700")
        if self.password:
            lines["requirepass"] = _quoted(self.password)
        if self.tls:  # TLS only, on the port; clients need no certificate of their own
            lines.update(
                {
                    "port": "0",
                    "tls-port": str(self.port),
                    "tls-cert-file": _quoted(str(self.tls.cert)),
                    "tls-key-file": _quoted(str(self.tls.key)),
                    "tls-ca-cert-file": _quoted(str(self.tls.ca)),
                    "tls-auth-clients": "no",
                }
            )
        return "".join(f"{name} {value}\n" for name, value in lines.items())

    def start(self) -> RedisProcess:
        binary = shutil.which("redis-server")
        if binary is None:
            raise HypernodeError("redis-server not found: run `make services` (or install redis-server)")
        conf = self.dir / "redis.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(self.config())
        output = None if self.log_level else subprocess.DEVNULL
        # A session of its own: a Ctrl-C meant for `up` must not stop Redis before the workers.
        self.proc = subprocess.Popen(
            [binary, str(conf)], stdout=output, stderr=output, start_new_session=True, pass_fds=self.pass_fds
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while not answers(self.url):  # not yet listening, or replaying its AOF
            if self.proc.poll() is not None:
                raise HypernodeError(f"redis-server exited at start (code {self.proc.returncode})")
            if time.monotonic() > deadline:
                raise HypernodeError(f"redis-server did not answer within {START_TIMEOUT_S:.0f} s")
            time.sleep(0.05)

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisProcess:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()


# The node's own Redis ----------------------------------------------------------------------


@contextmanager
def embedded(state_dir: Path) -> Iterator[RedisProcess]:
    """The node's own Redis, data in ``<state_dir>/redis``, running until the block ends.

    One at a time per state directory: a second ``up`` on it is refused (two servers on one AOF
    would corrupt it). The server holds the lock too, so a Redis left running by a killed ``up``
    keeps it until it is stopped.
    """
    directory = state_dir / "redis"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    sock = directory / "redis.sock"
    if len(os.fsencode(sock)) > SOCKET_PATH_MAX:
        raise ConfigError(f"HN_STATE_DIR is too long for Redis's Unix socket ({sock}): use a shorter path")
    with _exclusive(directory / "lock") as lock:
        server = RedisProcess(
            appendonly=True,
            directory=directory,
            password=secrets.token_hex(32),
            unix_socket=sock,
            log_level="warning",
            pass_fds=(lock,),
        )
        try:
            server.start()
            _write_private(state_dir / URL_FILE, server.url + "\n")
            log.info("the node's own Redis is up (data in %s)", directory)
            yield server
        finally:
            server.stop()


@contextmanager
def _exclusive(path: Path) -> Iterator[int]:
    """An exclusive lock on ``path`` while the block runs; its file descriptor."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"another `hypernode-host up` runs the Redis in {path.parent}: stop it, or give this one "
                "its own HN_STATE_DIR"
            ) from None
        yield fd
    finally:
        os.close(fd)  # releases the lock


def _write_private(path: Path, text: str) -> None:
    """Whole or not at all, readable by its owner only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    tmp.replace(path)
