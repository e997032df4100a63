"""The Docker Engine's version, for ``hostInfo.docker_version``, without importing docker-py.

The bridge makes no other Docker call, and docker-py with requests and urllib3 costs about 7 MB of
resident memory in a process that aims to stay under 50 MB (bench/bridge.py). So for the local
Engine socket the bridge asks ``GET /version`` itself; any other DOCKER_HOST (tcp://, ssh://, TLS)
goes through the project's Docker adapter, which handles all of those.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket

log = logging.getLogger(__name__)

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
UNKNOWN = "unknown"


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket (the Engine API's local transport)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def docker_version(timeout_s: float = 5.0) -> str:
    """The Engine's version ("20.10.24"); "unknown" when it does not answer (the bridge runs anyway)."""
    host = os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET
    if not host.startswith("unix://"):
        from hypernode_host.tasks.containers import DockerRuntime

        return DockerRuntime().version()
    connection = _UnixConnection(host.removeprefix("unix://"), timeout_s)
    try:
        connection.request("GET", "/version")
        response = connection.getresponse()
        body = response.read()
        if response.status != http.client.OK:
            log.warning("Docker Engine answered /version with HTTP %s", response.status)
            return UNKNOWN
        return str(json.loads(body).get("Version") or UNKNOWN)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        log.warning("Docker Engine version unknown: %s", exc)
        return UNKNOWN
    finally:
        connection.close()
