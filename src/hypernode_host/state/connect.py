"""The one way to a Redis connection: which Redis (the URL), and the client for it.

``HN_REDIS_URL`` names the node's Redis. Without it the node uses its own, which ``up`` runs
(node/redis_server.py) and whose URL, password included, it writes to ``<state dir>/redis.url``.
That file is read here, when a connection is made, and not when settings are built: settings stay
a pure function of the environment, and a command run after ``up`` restarted its Redis (with a new
password) finds the new URL.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
import redis.connection

from hypernode_host.errors import ConfigError
from hypernode_host.settings import Settings

DEFAULT_URL = "redis://127.0.0.1:6379/0"  # HN_REDIS_URL unset and `up` never ran here
URL_FILE = "redis.url"  # in the state directory: the URL of the node's own Redis
HEALTH_CHECK_INTERVAL_S = 30

# What callers outside state/ catch, without importing redis themselves.
RedisError = redis.RedisError
RedisRefused = redis.ResponseError  # the server answered with an error (a managed Redis refusing CONFIG)
RedisDown = (redis.ConnectionError, redis.TimeoutError)  # an outage or restart (loading its AOF included)
# How a server that takes reads but refuses writes says so: out of memory under noeviction ("OOM ...",
# which redis-py raises as OutOfMemoryError without the word, also inside a script or a pipeline's
# message), a disk it cannot persist to ("MISCONF"), a read-only replica ("READONLY", ReadOnlyError).
_REFUSING_WRITES = ("OOM command not allowed", "command not allowed when used memory", "MISCONF", "READONLY")


def write_refusal(exc: BaseException) -> str | None:
    """The server's own words when ``exc`` says it refuses writes (out of memory, a full disk, a replica);
    None for any other error. Such a refusal lasts until an operator or the server's own expiry frees
    room: callers wait and try again, or refuse new work with this reason."""
    if not isinstance(exc, redis.ResponseError):
        return None
    text = " ".join(str(exc).split())
    if isinstance(exc, redis.exceptions.OutOfMemoryError) and not text.startswith("OOM"):
        text = f"OOM {text}"  # as the server said it
    if isinstance(exc, redis.ReadOnlyError) or any(marker in text for marker in _REFUSING_WRITES):
        return text[:200]
    return None


@contextmanager
def unless_refused() -> Iterator[None]:
    """Drop a write Redis refuses (out of memory, a full disk) for a record that is only a hint (an image's
    last use, a pull's or a job's progress): a job must never fail, nor wait, for one. Any other error is raised."""
    try:
        yield
    except redis.ResponseError as exc:
        if write_refusal(exc) is None:
            raise


def own_redis_url(state_dir: Path) -> str | None:
    """The URL of the node's own Redis that ``up`` wrote in ``state_dir``; None when it never ran there."""
    path = state_dir / URL_FILE
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(
            f"HN_REDIS_URL is not set and {path} cannot be read ({exc.strerror}): run as the user that runs "
            "`hypernode-host up`, or set HN_REDIS_URL"
        ) from None


def redis_url(settings: Settings) -> str:
    """HN_REDIS_URL; without it the URL of the node's own Redis, or the local default when `up` never ran."""
    if settings.redis_url is not None:
        return settings.redis_url
    return own_redis_url(settings.state_dir) or DEFAULT_URL


def connect(url: str, *, timeout_s: float | None = None, decode: bool = True) -> redis.Redis:
    """A client for ``url``; with ``timeout_s`` every command gives up after that long (a check must answer)."""
    return redis.Redis.from_url(
        url,
        decode_responses=decode,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
    )


def answers(url: str) -> bool:
    """True when the Redis at ``url`` answers PING; False while it is unreachable or still loading its data."""
    client = redis.Redis.from_url(url)
    try:
        return bool(client.ping())
    except redis.ConnectionError:  # BusyLoadingError (replaying its AOF) is one too
        return False
    finally:
        client.close()


@dataclass(frozen=True)
class Exposure:
    """Whether the Redis at a URL lets in a client without credentials, and from where it can be reached."""

    anonymous: bool  # a client without username or password got an answer to PING
    loopback: bool  # its address is this machine's own (loopback, or a Unix socket)
    where: str  # host:port or the socket's path


def exposure(url: str, timeout_s: float) -> Exposure | None:
    """Ask the Redis at ``url`` for PING without the URL's credentials; None when it does not answer at all."""
    options = dict(redis.connection.parse_url(url))  # type: ignore[no-untyped-call]
    options.pop("password", None)
    options.pop("username", None)
    path = options.get("path")
    host = str(options.get("host", "localhost"))
    where = str(path) if path else f"{host}:{options.get('port', 6379)}"
    # A pool takes what parse_url gives for every scheme (a Unix socket's path, TLS's connection class).
    pool = redis.ConnectionPool(socket_timeout=timeout_s, socket_connect_timeout=timeout_s, **options)
    client = redis.Redis(connection_pool=pool)
    try:
        client.ping()
        anonymous = True
    except redis.AuthenticationError:  # NOAUTH, or a default user that is off
        anonymous = False
    except redis.ResponseError as exc:
        if "DENIED" in str(exc):  # protected mode: no password, so every local client gets in
            return Exposure(True, True, where)
        if "NOAUTH" not in str(exc) and "NOPERM" not in str(exc):
            raise
        anonymous = False
    except (redis.ConnectionError, redis.TimeoutError):
        return None
    finally:
        client.close()
        pool.disconnect()
    return Exposure(anonymous, bool(path) or _loopback(host), where)


def _loopback(host: str) -> bool:
    """True when every address ``host`` names is a loopback one (127.0.0.0/8, ::1)."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addresses)
