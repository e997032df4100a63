"""Test hosts on a real network: network namespaces joined by veth pairs to a bridge, each with its own
address, and a Redis with a password and TLS on one of them. Needs root (CAP_NET_ADMIN); the machine's
own interfaces, routes and sysctls are left as they are (the bridge carries the traffic: no forwarding)."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import redis

from hypernode_host.node.redis_server import free_port
from support import wait_for


def sh(*args: str) -> None:
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(args)}: {done.stderr}"


class Network:
    """A bridge in the root namespace (its address: ``gateway``) and one namespace per host."""

    def __init__(self, hosts: list[str]) -> None:
        tag = secrets.token_hex(3)
        self.bridge = f"hnbr{tag}"
        self.prefix = f"10.{100 + secrets.randbelow(150)}.{secrets.randbelow(250)}"
        self.gateway = f"{self.prefix}.254"
        self.namespaces = {host: f"hn-{tag}-{host}" for host in hosts}
        self.addresses = {host: f"{self.prefix}.{i + 1}" for i, host in enumerate(hosts)}
        self._veths = {host: (f"hv{tag}{i}", f"hp{tag}{i}") for i, host in enumerate(hosts)}

    def up(self) -> None:
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for host, ns in self.namespaces.items():
            outside, inside = self._veths[host]
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
            sh("ip", "link", "set", inside, "netns", ns)
            sh("ip", "link", "set", outside, "master", self.bridge)
            sh("ip", "link", "set", outside, "up")
            sh("ip", "-n", ns, "addr", "add", f"{self.addresses[host]}/24", "dev", inside)
            sh("ip", "-n", ns, "link", "set", inside, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")

    def cut(self, host: str) -> None:
        """The host falls off the network (its link goes down)."""
        sh("ip", "link", "set", self._veths[host][0], "down")

    def restore(self, host: str) -> None:
        sh("ip", "link", "set", self._veths[host][0], "up")

    def down(self) -> None:
        for ns in self.namespaces.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)

    def command(self, host: str, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.namespaces[host], *args]


@contextmanager
def network(hosts: list[str]) -> Iterator[Network]:
    net = Network(hosts)
    try:
        net.up()
        yield net
    finally:
        net.down()


def certificates(directory: Path, address: str) -> dict[str, Path]:
    """A CA and a server certificate for ``address`` (an IP SAN), made with openssl."""
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, csr = directory / "server.pem", directory / "server.key", directory / "server.csr"
    ext = directory / "san.cnf"
    ext.write_text(f"subjectAltName=IP:{address}\n")
    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
       "-days", "1", "-subj", "/CN=hn-test-ca")  # fmt: skip
    sh("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=host-a")
    sh("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
       "-out", str(cert), "-days", "1", "-extfile", str(ext))  # fmt: skip
    for path in (key, ca_key):
        path.chmod(0o644)  # redis-server reads them; a throwaway CA of one test
    return {"ca": ca, "cert": cert, "key": key}


@contextmanager
def tls_redis(net: Network, host: str) -> Iterator[str]:
    """redis-server on ``host``'s address with a password and TLS only (no plaintext port); its URL."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is missing: run `make services`"
    directory = Path(tempfile.mkdtemp(prefix="hn-fleet-redis-"))
    certs = certificates(directory, net.addresses[host])
    port, password = free_port(), secrets.token_hex(16)
    args = [binary, "--bind", net.addresses[host], "--port", "0", "--tls-port", str(port), "--tls-cert-file",
            str(certs["cert"]), "--tls-key-file", str(certs["key"]), "--tls-ca-cert-file", str(certs["ca"]),
            "--tls-auth-clients", "no", "--requirepass", password, "--dir", str(directory), "--save", "",
            "--appendonly", "no"]  # fmt: skip
    proc = subprocess.Popen(net.command(host, *args), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"rediss://:{password}@{net.addresses[host]}:{port}/0?ssl_ca_certs={certs['ca']}&ssl_cert_reqs=required"
    client = redis.Redis.from_url(url)
    try:
        wait_for(lambda: _pings(client), timeout=20)
        yield url
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class HostProcess:
    """``hypernode-host ARGS`` run inside a host's namespace, its output in a file."""

    def __init__(self, net: Network, host: str, env: Mapping[str, str], args: tuple[str, ...]) -> None:
        self.log = Path(tempfile.mkstemp(prefix=f"hn-fleet-{host}-", suffix=".log")[1])
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                net.command(host, sys.executable, "-m", "hypernode_host", *args),
                env=dict(env),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL, as a host that loses power does."""
        self.proc.kill()
        self.proc.wait(10)

    def stop(self, timeout: float = 40) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode
