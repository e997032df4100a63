"""Logs: timestamps, levels, job and slot context, JSON lines, and secrets that never reach the output."""

from __future__ import annotations

import io
import json
import logging
import signal
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from operator_support import run_cli

from hypernode_host import logs
from hypernode_host.node.redis_server import free_port
from support import NodeProcess, wait_for

TOKEN = "tok-9f8e7d6c5b4a"


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, logging.Logger]]:
    """The CLI's logging set-up writing into a buffer; the root logger restored afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    buffer = io.StringIO()
    yield buffer, logging.getLogger("hypernode_host.tests")
    root.handlers[:], _ = saved
    root.setLevel(saved[1])
    logs.bind_process(slot=None)


def _configure(buffer: io.StringIO, fmt: str) -> None:
    logs.configure("DEBUG", [TOKEN], fmt)
    logging.getLogger().handlers[0].setStream(buffer)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"register {{'token': '{TOKEN}', 'hostInfo': {{}}}}", "register {'token': '***', 'hostInfo': {}}"),
        (
            'frame {"type":"register","token":"abc123","nodeId":null}',
            'frame {"type":"register","token":"***","nodeId":null}',
        ),
        ("headers: Authorization: Bearer eyJhbGciOi.x.y", "headers: Authorization: Bearer ***"),
        ("{'Authorization': 'Basic dXNlcjpwYXNz'}", "{'Authorization': '***'}"),
        ("env HN_NODE_TOKEN=abc123 set", "env HN_NODE_TOKEN=*** set"),
        ("GET /nodes?token=abc123&x=1", "GET /nodes?token=***&x=1"),
        ("redis://:hunter2@10.0.0.5:6379/0", "redis://:***@10.0.0.5:6379/0"),
        (
            "unix://:hunter2@/var/lib/hypernode/redis/redis.sock?db=0",
            "unix://:***@/var/lib/hypernode/redis/redis.sock?db=0",
        ),
        ("connected to ws://127.0.0.1:3003", "connected to ws://127.0.0.1:3003"),
        ("job j-1: completed (exit 0, 1200 ms)", "job j-1: completed (exit 0, 1200 ms)"),
    ],
)
def test_secret_looking_values_are_masked(text: str, expected: str) -> None:
    assert logs.redact(text) == expected


def test_text_lines_carry_time_level_context_and_no_secret(captured: tuple[io.StringIO, logging.Logger]) -> None:
    buffer, log = captured
    _configure(buffer, "text")
    logs.bind_process(slot=3)
    with logs.job_context("job-7"):
        log.warning("sending with %s", TOKEN)
    try:
        raise RuntimeError(f"refused {TOKEN}")
    except RuntimeError:
        log.exception("failed")

    first, *rest = buffer.getvalue().splitlines()
    stamp, level, name, *message = first.split(" ")
    assert datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").year >= 2024  # ISO 8601, UTC, milliseconds
    assert level == "WARNING"
    assert name == "hypernode_host.tests" and " ".join(message) == "[job=job-7 slot=3]: sending with ***"
    assert "[slot=3]: failed" in rest[0]
    assert rest[-1] == "RuntimeError: refused ***"  # tracebacks are redacted too
    assert TOKEN not in buffer.getvalue()


def test_json_lines_are_objects_with_context(captured: tuple[io.StringIO, logging.Logger]) -> None:
    buffer, log = captured
    _configure(buffer, "json")
    done = threading.Event()

    def other_thread() -> None:  # a job's context belongs to the thread that runs it
        log.info("from another thread")
        done.set()

    with logs.job_context("job-8", slot=1):
        log.info('frame {"token": "%s"}', TOKEN)
        threading.Thread(target=other_thread).start()
        done.wait(5)
    try:
        raise ValueError(TOKEN)
    except ValueError:
        log.error("boom", exc_info=True)

    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert lines[0]["message"] == 'frame {"token": "***"}'
    assert lines[0]["job_id"] == "job-8" and lines[0]["slot"] == 1 and lines[0]["level"] == "INFO"
    assert lines[0]["logger"] == "hypernode_host.tests" and lines[0]["ts"].endswith("Z")
    assert "job_id" not in lines[1]
    assert lines[2]["exc"].endswith("ValueError: ***") and "job_id" not in lines[2]
    assert TOKEN not in buffer.getvalue()


def test_a_lost_broker_connection_that_dramatiq_recovers_is_a_warning(
    captured: tuple[io.StringIO, logging.Logger],
) -> None:
    buffer, _ = captured
    _configure(buffer, "text")
    consumer = logging.getLogger("dramatiq.worker.ConsumerThread(hn-cpu)")  # the logger Dramatiq 2 uses

    consumer.critical("Consumer encountered a connection error: %s", "Connection closed by server.")
    consumer.critical("Consumer encountered an unexpected error.")  # not a fault Dramatiq recovers from
    logging.getLogger("hypernode_host.tests").critical("Consumer encountered a connection error: ours")

    levels = [line.split(" ")[1] for line in buffer.getvalue().splitlines()]
    assert levels == ["WARNING", "CRITICAL", "CRITICAL"]
    assert "connection error: Connection closed by server." in buffer.getvalue().splitlines()[0]


def test_a_bridge_with_json_logs_writes_only_json_and_never_its_token(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HN_NODE_TOKEN": TOKEN,
        "HN_ENDPOINT": f"ws://127.0.0.1:{free_port()}?token={TOKEN}",  # nobody listens: it logs its retries
        "HN_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "HN_KEY_FILE": str(tmp_path / "node.key"),
        "HN_RECONNECT_DELAY": "0.1",
        "HN_RECONNECT_MAX_DELAY": "0.2",
        "HN_LOG_FORMAT": "json",
        "HN_LOG_LEVEL": "DEBUG",
    }
    with NodeProcess(env, ("bridge",)) as bridge:
        wait_for(lambda: bridge.output().count("\n") >= 3, timeout=30)
        assert bridge.proc is not None
        bridge.proc.send_signal(signal.SIGTERM)
        bridge.proc.wait(30)
        output = bridge.output()

    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert len(lines) >= 3
    assert all({"ts", "level", "logger", "message"} <= line.keys() for line in lines)
    assert TOKEN not in output


def test_bad_log_format_is_one_line_and_exit_2() -> None:
    done = run_cli("--log-format", "xml", "queue", env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: HN_LOG_FORMAT: String should match pattern")
