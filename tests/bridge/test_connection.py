"""The bridge's connection over a real WebSocket through a proxy that breaks it: register, resume,
heartbeats, half-open detection, backoff, oversized and malformed frames, refused tokens, TLS, secrets.

The bridge runs in-process (BridgeThread) with pings and timeouts shrunk; Redis and the reference
backend are real, and each test runs against it as it is and as upstream's published backend
(``backend_mode``) unless it is about one of them. Jobs that really run are in test_faults.py.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path

import pytest
import redis
from bridgekit import FAST, PATIENT, BridgeThread, Stack
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from faultproxy import Proxy
from websockets.http11 import Request, Response
from websockets.sync.server import ServerConnection, serve

from hypernode_host.backend.harness import BackendThread
from hypernode_host.bridge.client import Tuning
from hypernode_host.bridge.session import State
from hypernode_host.core.messages import MAX_FRAME_BYTES
from hypernode_host.node.redis_server import RedisProcess
from hypernode_host.state import keys
from support import NodeProcess, node_env, wait_for

REFERENCE_ONLY = pytest.mark.parametrize("backend_mode", ["reference"])  # resumes: upstream's never does
# A window for something that must NOT happen (a retry with a refused token): the bridge would retry
# within HN_RECONNECT_MAX_DELAY (0.5 s here) and its token file is looked at every second.
QUIET_S = 2.5


def only_node(stack: Stack) -> dict[str, object]:
    [node] = stack.backend.nodes()  # one node: a resume never spends the token on a second one
    return node


def refusal_in(server: RedisProcess) -> str | None:
    with redis.Redis.from_url(server.url, decode_responses=True) as client:
        return client.hget(keys.NODE, "refused")


def resumed(stack: Stack, registrations: int) -> bool:
    nodes = stack.backend.nodes()
    return len(nodes) == 1 and nodes[0]["registrations"] == registrations and bool(nodes[0]["connected"])


# register, heartbeats, resume -----------------------------------------------------------------------


def test_heartbeats_carry_real_uptime_and_counts_once_registered(stack: Stack) -> None:
    with BridgeThread(stack.env) as bridge:
        node_id = stack.wait_registered()
        beats = wait_for(lambda: (b := stack.backend.heartbeats(node_id)) and len(b) >= 3 and b, timeout=60)

    assert bridge.error is None
    stats = [beat.stats for beat in beats]
    uptimes = [s["total_uptime"] for s in stats]
    assert uptimes == sorted(uptimes) and uptimes[-1] >= 1  # real seconds, not upstream's constant 0
    assert {(s["active_jobs"], s["queued_jobs"], s["free_slots"]) for s in stats} == {(0, 0, 0)}  # no worker yet
    assert stack.redis.hget(keys.NODE, "node_id") == node_id
    assert int(stack.redis.hget(keys.NODE, "heartbeat_at") or 0) > 0


@REFERENCE_ONLY
def test_after_a_drop_the_bridge_resumes_its_node_and_spends_its_token_once(stack: Stack) -> None:
    with BridgeThread(stack.env) as bridge:
        node_id = stack.wait_registered()
        assert stack.proxy.drop() == 1

        wait_for(lambda: resumed(stack, 2), timeout=60)
        beats = len(stack.backend.heartbeats(node_id))
        wait_for(lambda: len(stack.backend.heartbeats(node_id)) > beats, timeout=60)  # beating again

    assert bridge.error is None
    assert only_node(stack)["nodeId"] == node_id
    assert stack.node_counter("reconnects") >= 1


@REFERENCE_ONLY
def test_a_bridge_restarted_on_the_same_redis_resumes_the_same_node(stack: Stack) -> None:
    with BridgeThread(stack.env):
        node_id = stack.wait_registered()
    with BridgeThread(stack.env) as again:
        wait_for(lambda: resumed(stack, 2), timeout=60)
    assert again.error is None
    assert only_node(stack)["nodeId"] == node_id


@REFERENCE_ONLY
def test_a_half_open_connection_is_noticed_by_pings_and_replaced(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with BridgeThread(stack.env):
        stack.wait_registered()
        accepted = stack.proxy.accepted
        stack.proxy.set_mode("blackhole")  # both ends stay open and hear nothing: no FIN, no RST

        wait_for(lambda: stack.proxy.accepted > accepted, timeout=60)  # noticed: it dials again
        stack.proxy.set_mode("pass")
        stack.proxy.drop()  # the backend's end of the dead connection

        wait_for(lambda: resumed(stack, 2), timeout=60)
    assert "keepalive ping timeout" in caplog.text


@pytest.mark.parametrize("backend_mode", ["upstream"])
def test_after_a_drop_upstream_refuses_the_spent_token_and_a_new_one_registers_a_new_node(stack: Stack) -> None:
    with BridgeThread(stack.env) as bridge:
        first = stack.wait_registered()
        assert stack.proxy.drop() == 1

        assert stack.wait_refused() == "Token already used"  # upstream ignores the nodeId we resume with
        assert bridge.bridge.session.state is State.REFUSED
        time.sleep(QUIET_S)
        assert stack.backend.registers_refused() == 1  # the spent token is not tried again
        stack.give_token()

        second = wait_for(lambda: (n := [x for x in stack.backend.nodes() if x["connected"]]) and n[0]["nodeId"])
        wait_for(lambda: len(stack.backend.heartbeats(second)) >= 2, timeout=60)  # beating again
        assert stack.refusal() is None  # `check` no longer says refused

    assert bridge.error is None
    assert second != first and stack.backend.registers_refused() == 1
    assert stack.redis.hget(keys.NODE, "node_id") == second


def test_while_the_backend_is_unreachable_the_bridge_retries_with_capped_backoff(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    stack.proxy.set_mode("refuse")
    with BridgeThread(stack.env):
        wait_for(lambda: stack.proxy.accepted >= 6, timeout=60)
        stack.proxy.set_mode("pass")
        stack.wait_registered()

    delays = [float(d) for d in re.findall(r"reconnecting in ([\d.]+) s", caplog.text)]
    assert len(delays) >= 5
    assert all(0 <= d <= 0.5 for d in delays)  # HN_RECONNECT_MAX_DELAY caps every wait
    assert stack.node_counter("reconnects") >= 5


# hostile frames ------------------------------------------------------------------------------------


def test_bad_frames_are_refused_and_the_connection_stays(stack: Stack) -> None:
    frames: list[str | bytes] = [
        "not json",
        '{"type":"bogus"}',
        b"\x00\x01",
        '{"type":"job","id":"../x","script":"x"}',
        '{"type":"ack","id":NaN}',
        '{"type":"job_cancel"}',
    ]
    with BridgeThread(stack.env):
        node_id = stack.wait_registered()
        for frame in frames:
            assert stack.backend.send_raw(frame, node_id) == 1

        wait_for(lambda: stack.node_counter("frames_refused") == len(frames), timeout=60)
        if stack.upstream:  # it takes no error frames ("Unknown message type"): it hears none
            node_id = wait_for(lambda: stack.backend.heartbeats(node_id) and node_id)  # still beating
            assert only_node(stack)["errors"] == [] and only_node(stack)["connected"]
            return
        errors = wait_for(lambda: (e := only_node(stack)["errors"]) and len(e) == len(frames) and e, timeout=60)
        assert only_node(stack)["registrations"] == 1  # the same connection all along

    assert errors == [
        "Invalid message format: not JSON (Expecting value: line 1 column 1 (char 0))",
        "Unknown message type 'bogus'",
        "binary frames are not accepted; send JSON text",
        "job refused: 'id' must be 1-64 characters of A-Z a-z 0-9 . _ -",
        "NaN is not allowed in JSON",
        "bad job_cancel message: jobId: Field required",
    ]


def test_a_frame_over_the_session_cap_gets_one_error_reply_and_the_connection_stays(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with BridgeThread(stack.env, PATIENT):
        node_id = stack.wait_registered()
        huge = '{"type":"ping","pad":"' + "Z" * (50 << 20) + '"}'  # 50 MB: past the cap, under MAX_WIRE_BYTES
        beats = len(wait_for(lambda: stack.backend.heartbeats(node_id), timeout=10))
        assert stack.backend.send_raw(huge, node_id) == 1
        del huge

        wait_for(lambda: stack.node_counter("frames_refused") == 1, timeout=30)
        if not stack.upstream:  # upstream's backend takes no error frames
            [error] = wait_for(lambda: only_node(stack)["errors"], timeout=60)
            assert error == f"frame too large ({(50 << 20) + 24} > {MAX_FRAME_BYTES} characters)"
        wait_for(lambda: len(stack.backend.heartbeats(node_id)) > beats + 1, timeout=60)  # still beating
        assert only_node(stack)["registrations"] == 1 and only_node(stack)["connected"]  # never dropped

    assert "ZZZZZZZZ" not in caplog.text  # a summary, never the payload


# refused tokens --------------------------------------------------------------------------------------


def test_an_invalid_token_parks_the_bridge_until_a_new_token_registers_it_at_once(stack: Stack) -> None:
    stack.write_token("tok-not-issued")
    with BridgeThread(stack.env) as bridge:
        assert stack.wait_refused() == "Invalid token"
        time.sleep(QUIET_S)
        assert stack.proxy.accepted == 1  # one try: a dead token is not hammered at the backend
        assert bridge.bridge.session.state is State.REFUSED and bridge.error is None  # waiting, not ended

        stack.give_token()
        node_id = stack.wait_registered()
        wait_for(lambda: stack.backend.heartbeats(node_id), timeout=60)

    assert bridge.error is None
    assert stack.proxy.accepted == 2 and stack.backend.registers_refused() == 1
    assert stack.refusal() is None


def test_the_same_token_written_again_is_not_a_new_token(stack: Stack) -> None:
    stack.write_token("tok-not-issued")
    with BridgeThread(stack.env) as bridge:
        stack.wait_refused()
        stack.write_token("tok-not-issued")  # rewritten, not changed (touch, a redeploy of the same secret)
        bridge.call_soon(bridge.bridge.reload_token)  # and SIGHUP
        time.sleep(QUIET_S)
        assert stack.proxy.accepted == 1


def test_a_refused_bridge_closes_its_connection_with_1008_and_stops_with_1000(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    stack.write_token("tok-not-issued")
    with BridgeThread(stack.env):
        stack.wait_refused()
        wait_for(lambda: "(code 1008)" in caplog.text, timeout=60)  # policy, not 1011 (our own failure)
        stack.give_token()
        stack.wait_registered()
    assert "(code 1000)" in caplog.text  # a shutdown is a normal close


def test_a_token_already_used_by_another_node_refuses_the_second_one(stack: Stack, tmp_path: Path) -> None:
    with BridgeThread(stack.env):
        stack.wait_registered()
        with RedisProcess() as other_redis:  # another machine: no node id of its own to resume
            env = node_env(other_redis.url, stack.proxy.url, stack.token, tmp_path / "other")
            with BridgeThread(env) as intruder:
                wait_for(lambda: intruder.bridge.session.refusal, timeout=60)
            assert intruder.error is None  # refused, not ended
            assert refusal_in(other_redis) == "Token already used"

    assert len(stack.backend.nodes()) == 1


class GatewayThread:
    """A WebSocket endpoint that answers every handshake with one HTTP status (a gateway before the backend)."""

    def __init__(self, status: HTTPStatus) -> None:
        self.handshakes = 0

        def answer(connection: ServerConnection, request: Request) -> Response:
            self.handshakes += 1
            return connection.respond(status, f"{status.phrase}\n")

        self.server = serve(lambda connection: None, "127.0.0.1", 0, process_request=answer)
        self.thread = threading.Thread(target=self.server.serve_forever, name="test-gateway", daemon=True)

    def __enter__(self) -> GatewayThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.thread.join(10)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.socket.getsockname()[1]}"


def test_an_http_403_at_the_handshake_parks_the_bridge_like_a_refused_token(
    redis_server: RedisProcess, token: str, tmp_path: Path
) -> None:
    with GatewayThread(HTTPStatus.FORBIDDEN) as gateway:
        with BridgeThread(node_env(redis_server.url, gateway.url, token, tmp_path)) as bridge:
            wait_for(lambda: refusal_in(redis_server), timeout=60)
            time.sleep(QUIET_S)
            assert gateway.handshakes == 1
        assert bridge.error is None
    assert refusal_in(redis_server) == "the backend refused the connection: HTTP 403"


def test_an_http_503_at_the_handshake_is_retried(redis_server: RedisProcess, token: str, tmp_path: Path) -> None:
    with GatewayThread(HTTPStatus.SERVICE_UNAVAILABLE) as gateway:
        env = node_env(redis_server.url, gateway.url, token, tmp_path, HN_RECONNECT_MAX_DELAY="0.2")
        with BridgeThread(env) as bridge:
            wait_for(lambda: gateway.handshakes >= 3, timeout=60)  # a passing outage: tried again and again
    assert bridge.error is None


@pytest.mark.parametrize("backend_mode", ["upstream"])
@pytest.mark.parametrize("command", ["bridge", "up"])
def test_the_cli_keeps_running_when_refused_and_registers_on_sighup_with_a_new_token(
    stack: Stack, command: str
) -> None:
    # Exit 3 is gone: a refused token ends no process. `check` says what happened and what to do.
    stack.write_token("tok-not-issued")
    env = {**stack.env, "HN_LOG_LEVEL": "INFO", "HN_CPU_SLOTS": "0"}  # `up`: the bridge and no worker
    with NodeProcess(env, (command,)) as node:
        assert stack.wait_refused(60) == "Invalid token"
        check = subprocess.run(
            [sys.executable, "-m", "hypernode_host", "check", "--bridge"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert check.returncode == 1
        [line] = check.stderr.splitlines()
        assert line.startswith("bridge: token refused by the backend: Invalid token (fix: write a new token")
        assert node.proc is not None and node.proc.poll() is None  # still running

        token = stack.give_token()
        os.kill(node.proc.pid, signal.SIGHUP)  # `up` passes it on to its bridge
        stack.wait_registered(60)
        assert node.proc.poll() is None
        assert node.stop() == 0, node.output()[-3000:]
        output = node.output()
    assert "SIGHUP: reading the node token again" in output
    assert "Traceback" not in output and token not in output and "tok-not-issued" not in output


# secrets ---------------------------------------------------------------------------------------------


@REFERENCE_ONLY
def test_the_token_never_reaches_any_log_line_at_any_level(
    stack: Stack, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("websockets", "websockets.client", "websockets.server"):
        caplog.set_level(logging.DEBUG, logger=name)
    # websockets' frame lines cut a frame short: a leak can be a part of the token. Its first 8 random
    # characters are what such a cut keeps, and 8 hex digits do not turn up in the logs by chance.
    secret = stack.token.removeprefix("tok-")[:8]

    with BridgeThread(stack.env):
        node_id = stack.wait_registered()
        stack.backend.send_raw("not json", node_id)  # a refused frame
        stack.backend.push({"type": "error", "message": "Invalid token"}, node_id)  # a backend error
        stack.proxy.drop()  # a reconnect (and its register frame)
        wait_for(lambda: resumed(stack, 2), timeout=60)
        stack.proxy.set_mode("refuse")  # connection failures
        stack.proxy.drop()
        wait_for(lambda: stack.proxy.accepted >= 5, timeout=60)
        stack.proxy.set_mode("pass")
        wait_for(lambda: resumed(stack, 3), timeout=60)
    stack.write_token(stack.token + "-revoked")
    with BridgeThread(stack.env) as refused:
        stack.wait_refused()  # an auth failure, with our token in the register it sent

    assert refused.error is None
    records = [r for r in caplog.records if r.name.startswith(("hypernode_host", "websockets"))]
    assert any(r.name.startswith("websockets") for r in records)  # the library did log, at INFO
    logged = "\n".join(caplog.handler.format(r) for r in caplog.records)
    printed = capfd.readouterr()
    for text in (logged, printed.out, printed.err):
        assert secret not in text


# TLS ---------------------------------------------------------------------------------------------


class Certificates:
    """A private CA and a server certificate it signed, written as PEM files."""

    def __init__(self, directory: Path, hostname: str) -> None:
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hypernode test CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [x509.DNSName(hostname)]
        if hostname == "localhost":
            names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        server = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        self.ca_file = directory / f"ca-{hostname}.pem"
        self.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.cert_file = directory / f"server-{hostname}.pem"
        self.cert_file.write_bytes(server.public_bytes(serialization.Encoding.PEM))
        self.key_file = directory / f"server-{hostname}.key"
        self.key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def trusting_client(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


@pytest.fixture
def tls_stack(redis_server: RedisProcess, token: str, tmp_path: Path) -> Iterator[tuple[Stack, Certificates]]:
    """A stack whose backend serves wss:// with a certificate for "localhost" from a private CA."""
    certs = Certificates(tmp_path, "localhost")
    with (
        BackendThread("127.0.0.1", 0, [token], ssl_context=certs.server_context()) as backend,
        Proxy(backend.port) as proxy,
    ):
        env = node_env(redis_server.url, f"wss://localhost:{proxy.port}", token, tmp_path, HN_RECONNECT_MAX_DELAY="0.3")
        stack = Stack(redis_server, backend, proxy, env)
        yield stack, certs
        stack.redis.close()


def test_wss_refuses_an_untrusted_certificate_and_never_falls_back_to_plain_text(
    tls_stack: tuple[Stack, Certificates], caplog: pytest.LogCaptureFixture
) -> None:
    stack, _ = tls_stack
    caplog.set_level(logging.INFO)
    with BridgeThread(stack.env):  # the system's trust store: the private CA is not in it
        wait_for(lambda: stack.proxy.accepted >= 3, timeout=60)

    assert "certificate verify failed" in caplog.text
    assert stack.backend.nodes() == []  # no register ever reached the backend
    assert stack.proxy.first_bytes and all(b.startswith(b"\x16\x03") for b in stack.proxy.first_bytes)  # TLS only


def test_wss_connects_when_the_certificate_is_trusted(tls_stack: tuple[Stack, Certificates]) -> None:
    stack, certs = tls_stack
    tuning = Tuning(**{**FAST.__dict__, "ssl_context": certs.trusting_client()})
    with BridgeThread(stack.env, tuning) as bridge:
        stack.wait_registered()
    assert bridge.error is None


def test_wss_refuses_a_trusted_certificate_for_another_host(
    redis_server: RedisProcess, token: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    certs = Certificates(tmp_path, "backend.example")
    tuning = Tuning(**{**FAST.__dict__, "ssl_context": certs.trusting_client()})
    with (
        BackendThread("127.0.0.1", 0, [token], ssl_context=certs.server_context()) as backend,
        Proxy(backend.port) as proxy,
    ):
        env = node_env(redis_server.url, f"wss://localhost:{proxy.port}", token, tmp_path, HN_RECONNECT_MAX_DELAY="0.3")
        with BridgeThread(env, tuning):
            wait_for(lambda: proxy.accepted >= 2, timeout=60)
        assert backend.nodes() == []
    assert "Hostname mismatch" in caplog.text
