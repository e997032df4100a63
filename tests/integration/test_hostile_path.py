"""The whole path, as a property (issue 11): arbitrary values in every job field and every backend frame,
driven through the real session (Sans-I/O), intake with a real Redis and Dramatiq broker, the store,
admission, the runner (over the fake container runtime: no Docker here, its decisions are the real
ones), result building, proofs, the outbox and the operator's views and logs.

Invariants, for every example:
- nothing escapes: no exception from any step;
- every refused frame gets at most one error reply (exactly one, from a backend that takes them);
- every job id the node accepts gets exactly one result, signed, with proofs anyone can recompute;
- every rendered view and every text log line is free of control characters (a log tail keeps its
  newlines and tabs; a traceback its line breaks).

A bounded run is part of `make test`; `make fuzz` runs a long one (HN_FUZZ_EXAMPLES, default 5000).
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note
from hypothesis import strategies as st
from rich.console import Console

from hypernode_host.bridge.intake import Intake
from hypernode_host.bridge.session import BadFrame, CancelRequested, JobReceived, JobRefused, Session
from hypernode_host.core import proofs
from hypernode_host.core.admission import host_memory_bytes
from hypernode_host.core.jobs import JobState
from hypernode_host.core.messages import MAX_FRAME_BYTES, Capability, ErrorMessage, HostInfo, JobResult
from hypernode_host.core.proofs import NodeKey
from hypernode_host.core.slots import plan_slots
from hypernode_host.escapes import is_clean
from hypernode_host.logs import ContextFilter, RedactingFormatter
from hypernode_host.node.redis_server import RedisProcess
from hypernode_host.ops.inspect import job_detail, node_summary, recent_jobs
from hypernode_host.ops.views import job_view, jobs_table, summary_line
from hypernode_host.settings import Settings
from hypernode_host.state import Store
from hypernode_host.tasks.broker import build_broker
from hypernode_host.tasks.runner import JobRunner, container_name

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "tasks"))
from fakes import Behaviour, FakeClock, FakeRuntime  # the runner's fakes live beside its unit tests

EXAMPLES = int(os.environ.get("HN_FUZZ_EXAMPLES", "120"))
HOST = HostInfo(hostname="h", os="Linux", os_version="6", arch="x86_64", gpus=[], docker_version="1", agent_version="0")
KEY = NodeKey.generate()

# Values ------------------------------------------------------------------------------------------

NASTY = list("\x00\x07\x08\t\n\r\x1b\x7f\x85\x9b\u2028\u202e\u2066\ud800\udbff\udc00\udfff[]0;m?\\\"'✅é東")
TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.sampled_from(NASTY), max_size=40),
    st.sampled_from(["\x1b[31mred", "\x1b]52;c;ZXZpbA==\x07", "x\n2026-12-01 INFO forged", "\ud800", "a\udfffb"]),
    st.sampled_from([256, 257, 1 << 10, (64 << 10) + 1, 1 << 20, (1 << 20) + 1]).map(lambda n: "x" * n),
)
NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(),  # NaN and infinities included: JSON writes them as NaN / Infinity, which the codec refuses
    st.sampled_from([1e-10, 0.0099, 0.01, 5e-324, 1e308, -0.0, 0, 2**63, host_memory_bytes()]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
JSON = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12
)


def nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = [value]
    return value


VALID_ID = st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True)
JOB_ID = st.one_of(VALID_ID, VALID_ID, TEXT, st.sampled_from(["abc\n", "-x", "--json", "../x", "a" * 65, ""]), JSON)
MEMORY = st.one_of(
    st.sampled_from(["128m", "64m", "1g", "8g", str(host_memory_bytes()), "0", "31m", "lots", "1e9g"]), TEXT
)
FIELDS = {
    "script": st.one_of(st.just("print('done')"), TEXT, JSON),
    "command": st.one_of(TEXT, st.lists(TEXT, max_size=5), JSON),
    "requirements": st.one_of(st.just("numpy>=1.26"), TEXT, JSON),
    "image": st.one_of(st.just("img"), TEXT, JSON),
    "gpuRequired": st.one_of(st.booleans(), JSON),
    "gpuCount": st.one_of(st.integers(-2, 70), JSON),
    "gpuMemoryMb": st.one_of(st.integers(-1, 10**6), JSON),
    "memoryLimit": st.one_of(MEMORY, JSON),
    "cpuLimit": st.one_of(NUMBERS, JSON),
    "timeout": st.one_of(NUMBERS, JSON),
    "estimatedTime": st.one_of(NUMBERS, JSON),
    "env": st.one_of(st.dictionaries(TEXT, TEXT, max_size=4), JSON),
    "datasets": st.one_of(st.lists(TEXT, max_size=3), JSON),
    "jobId": JOB_ID,
    "nested": st.integers(28, 40).map(nested),
}
# Representable but hostile: control characters and escapes a job may really carry (and a view must escape).
PRINTABLE_TRICKS = st.text(alphabet=st.sampled_from([c for c in NASTY if not 0xD800 <= ord(c) <= 0xDFFF]), max_size=30)
PLAUSIBLE = st.fixed_dictionaries(
    {
        "id": VALID_ID,
        "memoryLimit": st.sampled_from(["128m", "64m", "256m"]),
        "cpuLimit": st.sampled_from([0.5, 1, 0.01]),
    },
    optional={
        "env": st.dictionaries(st.from_regex(r"[A-Z][A-Z0-9_]{0,8}", fullmatch=True), PRINTABLE_TRICKS, max_size=3),
        "timeout": st.sampled_from([1, 30, 1e308, 5e-324]),
        "estimatedTime": st.sampled_from([0, 1.5, 1e308]),
        "extra": PRINTABLE_TRICKS,
    },
)
RUNS = st.one_of(
    st.fixed_dictionaries({"script": PRINTABLE_TRICKS.map(lambda t: f"print({t!r})")}),
    st.fixed_dictionaries(
        {"command": PRINTABLE_TRICKS.filter(bool) | st.lists(PRINTABLE_TRICKS, min_size=1, max_size=3)}
    ),
)
PLAUSIBLE = st.builds(lambda job, run: {**job, **run}, PLAUSIBLE, RUNS)
# A plausible job with one or two of its fields replaced by anything at all.
MUTATED = st.tuples(PLAUSIBLE, st.dictionaries(st.sampled_from(sorted(FIELDS)), st.none(), max_size=2)).flatmap(
    lambda pair: st.fixed_dictionaries({name: FIELDS[name] for name in pair[1]}).map(lambda bad: {**pair[0], **bad})
)
ANYTHING = st.fixed_dictionaries({"id": JOB_ID}, optional=FIELDS).flatmap(
    lambda job: st.dictionaries(TEXT, JSON, max_size=3).map(lambda extra: {**extra, **job})
)
JOBS = st.one_of(PLAUSIBLE, MUTATED, MUTATED, ANYTHING).map(lambda job: {**job, "type": "job"})
CONTROL = st.fixed_dictionaries(
    {"type": st.sampled_from(["registered", "ack", "job_cancel", "ping", "error", "job", "bogus"]) | TEXT},
    optional={"jobId": JOB_ID, "id": JOB_ID, "nodeId": TEXT | JSON, "message": TEXT | JSON, "capabilities": JSON},
)


def encoded(value: Any, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)  # with a lone surrogate and ascii_only False: raw in the text


FRAMES = st.one_of(
    st.builds(encoded, JOBS, st.booleans()),
    st.builds(encoded, JOBS, st.booleans()),
    st.builds(encoded, JOBS, st.booleans()),
    st.builds(encoded, JOBS, st.booleans()),
    st.builds(encoded, CONTROL, st.booleans()),
    st.text(max_size=60),
    st.binary(max_size=20),
    VALID_ID.map(lambda i: '{"type":"job","id":"%s","script":"x","cpuLimit":1e999}' % i),
    VALID_ID.map(lambda i: '{"type":"job","id":"%s","script":"x","a":%s}' % (i, "[" * 40 + "]" * 40)),
    VALID_ID.map(lambda i: '{"type":"job","id":"%s","id":"%s"}' % (i, i)),
    st.just('{"type":"ping","pad":"' + "Z" * MAX_FRAME_BYTES + '"}'),
)
OUTPUT = st.lists(st.binary(max_size=64) | st.sampled_from([b"\x1b[2J", b"\xed\xa0\x80", b"done\n\x9b"]), max_size=4)


# The node's parts ---------------------------------------------------------------------------------


class Lines(logging.Handler):
    """Every record, as the node's text log writes it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.formatter_ = RedactingFormatter([])
        self.lines: list[str] = []
        self.addFilter(ContextFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.formatter_.format(record))


@pytest.fixture
def node(redis_server: RedisProcess) -> Iterator[tuple[Settings, Store, Intake]]:
    settings = Settings.from_env({"HN_REDIS_URL": redis_server.url, "HN_JOB_IMAGE": "img", "HN_NODE_NAME": "rig"})
    broker = build_broker(redis_server.url)
    with Store.from_url(redis_server.url) as store:
        yield settings, store, Intake(settings, store, broker, KEY, plan_slots([], 1))
    broker.close()


def rendered(renderable: Any) -> str:
    out = io.StringIO()
    Console(file=out, width=160, color_system=None, force_terminal=False).print(renderable)
    return out.getvalue()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
@given(frames=st.lists(FRAMES, min_size=1, max_size=6), errors=st.booleans(), output=OUTPUT)
def test_no_value_wedges_the_node(
    node: tuple[Settings, Store, Intake],
    redis_client: redis.Redis,
    frames: list[str | bytes],
    errors: bool,
    output: list[bytes],
) -> None:
    settings_, store, intake = node
    redis_client.flushdb()
    lines = Lines()
    logging.getLogger("hypernode_host").addHandler(lines)
    try:
        accepted = drive(settings_, store, intake, frames, errors, output)
    finally:
        logging.getLogger("hypernode_host").removeHandler(lines)

    entries = store.outbox.entries()
    note(f"jobs accepted: {min(len(accepted), 3)}{'+' if len(accepted) >= 3 else ''}")
    for entry in entries:
        note(f"result: {entry.result['status']} ({entry.result.get('reason')})")
    assert sorted(e.job_id for e in entries) == sorted(accepted)  # exactly one result per accepted job
    for entry in entries:
        result = JobResult.model_validate(entry.result)
        assert result.logsHash == proofs.logs_hash(result.logs)
        assert result.executionHash == proofs.execution_hash(entry.result)
        assert proofs.verify_signature(KEY.public_key_b58, result.executionHash, result.signature)
        assert result.jobDigest == proofs.job_digest(store.jobs.get(entry.job_id).received_job())  # type: ignore[union-attr]
    for job_id in accepted:
        text = rendered(job_view(job_detail(store, job_id)))
        assert is_clean(text, multiline=True), text
    views = rendered(jobs_table(recent_jobs(store, plan_slots([], 1), limit=50), 0))
    views += rendered(summary_line(node_summary(store)))
    assert is_clean(views, multiline=True)
    for line in lines.lines:
        message, _, traceback = line.partition("\n")
        assert is_clean(message), line
        assert is_clean(traceback, multiline=True), line
        assert "Traceback" not in line, line  # nothing raised, not even caught and logged


def drive(
    settings_: Settings, store: Store, intake: Intake, frames: list[str | bytes], errors: bool, output: list[bytes]
) -> list[str]:
    session = Session(None, KEY.public_key_b58)
    session.connected("tok", HOST, {"slots": 1})
    capabilities = [c.value for c in Capability] if errors else []
    session.receive(json.dumps({"type": "registered", "nodeId": "node-1", "capabilities": capabilities}))
    session.frames_to_send()
    store.node.registered("node-1", 1)
    accepted: list[str] = []
    for frame in frames:
        events = session.receive(frame)
        replies = [json.loads(f) for f in session.frames_to_send()]
        refused = [e for e in events if isinstance(e, BadFrame | JobRefused)]
        error_replies = [r for r in replies if r.get("type") == "error"]
        assert len(error_replies) <= 1
        # (a second `registered` may announce other capabilities: what counts is what holds now)
        if refused and Capability.ERRORS in session.capabilities and not _is_error_frame(frame):
            assert len(error_replies) == 1
            assert ErrorMessage.model_validate(error_replies[0]).message
        for event in events:
            if isinstance(event, JobReceived):
                known = intake.accept(event.job_id, event.fields)
                if known is None and event.job_id not in accepted:
                    accepted.append(event.job_id)
            elif isinstance(event, CancelRequested):
                store.cancels.request(event.job_id)
    run_queued(settings_, store, output)
    return accepted


def _is_error_frame(frame: str | bytes) -> bool:
    try:
        value = json.loads(frame)
    except (ValueError, TypeError):
        return False
    return isinstance(value, dict) and value.get("type") == "error"


def run_queued(settings_: Settings, store: Store, output: list[bytes]) -> None:
    """What the worker of the one CPU slot does with every job left queued: run it (over the fake runtime)."""
    clock = FakeClock()
    runtime = FakeRuntime(clock, [])
    slots = plan_slots([], 1)
    runner = JobRunner(settings_, store, runtime, KEY, slots[0], slots, clock=clock)  # type: ignore[arg-type]
    for record in store.jobs.recent(10_000, JobState.QUEUED):
        runtime.behaviours[container_name(runner.node, record.id)] = Behaviour(
            output=tuple(output), exit_code=len(output) % 2
        )
        runner.run(record.id)
