"""A node whose Redis is elsewhere: ``rediss://:PASSWORD@host:port/0`` over TLS, with a self-signed certificate.

Multi-host workers reach the node's Redis across the network; this is the URL they are given. The
whole node (bridge and workers, `hypernode-host up` with HN_REDIS_URL) runs a job through it, and a
client that speaks plain Redis or has no password gets nothing.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hypernode_host.backend.harness import BackendThread
from hypernode_host.node.redis_server import RedisProcess, TlsFiles
from hypernode_host.state.connect import Exposure, exposure
from hypernode_host.tasks.containers import DockerRuntime
from support import NodeProcess, job_containers, node_env


def self_signed(directory: Path) -> TlsFiles:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    files = TlsFiles(cert=directory / "redis.crt", key=directory / "redis.key", ca=directory / "redis.crt")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    files.key.chmod(0o600)
    return files


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    with RedisProcess(appendonly=True, tls=self_signed(tmp_path)) as server:
        yield server


def test_a_node_runs_a_job_through_a_redis_over_tls_with_a_password(
    tls_redis: RedisProcess, docker_runtime: DockerRuntime, tmp_path: Path
) -> None:
    assert tls_redis.url.startswith(f"rediss://:{tls_redis.password}@127.0.0.1:{tls_redis.port}/0?ssl_ca_certs=")
    token = f"tok-{secrets.token_hex(8)}"
    with BackendThread("127.0.0.1", 0, [token]) as backend:
        env = node_env(tls_redis.url, backend.url, token, tmp_path, HN_CPU_SLOTS="1")
        with NodeProcess(env) as node:
            backend.wait_for_node(timeout=60)
            job_id = backend.send_job(
                {"id": f"tls-{secrets.token_hex(6)}", "script": "print('over tls')", "memoryLimit": "128m"}
            )
            try:
                result = backend.wait_for_result(job_id, 90)
            except TimeoutError:
                raise AssertionError(f"no result; node output:\n{node.output()[-4000:]}") from None
            assert node.stop() == 0, node.output()[-3000:]
        assert job_containers(env["HN_NODE_NAME"]) == []

    assert result["status"] == "completed" and result["logs"] == "over tls\n"


def test_plain_redis_and_a_missing_password_get_nothing_from_the_tls_port(tls_redis: RedisProcess) -> None:
    plain = redis.Redis(host="127.0.0.1", port=tls_redis.port, password=tls_redis.password, socket_timeout=5)
    with pytest.raises(redis.ConnectionError):
        plain.ping()
    plain.close()
    anonymous = redis.Redis.from_url(tls_redis.url.replace(f":{tls_redis.password}@", ""), socket_timeout=5)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    anonymous.close()
    trusted = redis.Redis.from_url(tls_redis.url, socket_timeout=5)
    assert trusted.ping() is True
    trusted.close()
    # What doctor asks: the same over TLS, without the password.
    assert exposure(tls_redis.url, 5) == Exposure(anonymous=False, loopback=True, where=f"127.0.0.1:{tls_redis.port}")
