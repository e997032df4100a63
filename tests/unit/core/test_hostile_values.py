"""Issue 11's classes, each as a regression: the codec refuses what cannot be represented, everything after
it is total, limits mean something, and no job or peer value reaches a terminal or a log line unescaped."""

from __future__ import annotations

import io
import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from hypernode_host.bridge.session import BadFrame, CancelRequested, JobReceived, JobRefused, Session
from hypernode_host.core import proofs
from hypernode_host.core.admission import admit, host_memory_bytes
from hypernode_host.core.jobs import JobSpec, Reason, job_id_of
from hypernode_host.core.messages import MAX_FRAME_BYTES, Capability, HostInfo, decode_backend
from hypernode_host.core.proofs import NodeKey
from hypernode_host.core.results import error_result
from hypernode_host.core.slots import plan_slots
from hypernode_host.errors import JobRejected, ProtocolError
from hypernode_host.escapes import is_clean
from hypernode_host.ops.findings import Finding, Level
from hypernode_host.ops.inspect import JobDetail, JobRow, NodeSummary, summarize_spec
from hypernode_host.ops.views import job_view, jobs_table, summary_line
from hypernode_host.settings import Settings

SETTINGS = Settings.from_env({"HN_JOB_IMAGE": "img"})
EXAMPLES = int(os.environ.get("HN_FUZZ_EXAMPLES", "150"))  # `make fuzz` runs many more
CPU_ONLY = plan_slots([], 1)
JOB_FIELDS = ["id", "script", "command", "requirements", "image", "memoryLimit", "env", "datasets", "extra"]
HOST = HostInfo(hostname="h", os="Linux", os_version="6", arch="x86_64", gpus=[], docker_version="1", agent_version="0")


def registered() -> Session:
    session = Session(None, "PUBKEY")
    session.connected("tok", HOST, {"slots": 1})
    everything = [c.value for c in Capability]
    session.receive(json.dumps({"type": "registered", "nodeId": "n", "capabilities": everything}))
    session.frames_to_send()
    return session


def rendered(renderable: Any) -> str:
    out = io.StringIO()
    Console(file=out, width=200, color_system=None, force_terminal=False).print(renderable)
    return out.getvalue()


# 1. The codec refuses what cannot be represented ----------------------------------------------------


@pytest.mark.parametrize("field", JOB_FIELDS)
def test_a_lone_surrogate_in_any_job_field_is_refused_with_one_error_reply(field: str) -> None:
    job: dict[str, Any] = {"type": "job", "id": "j-1", "script": "print(1)"}
    job[field] = {"K": "\ud800"} if field == "env" else ["\udc00"] if field == "datasets" else "x\ud800"
    session = registered()
    for frame in (json.dumps(job), json.dumps(job, ensure_ascii=False)):  # escaped, and raw in the text
        events = session.receive(frame)
        assert [type(e) for e in events] == [BadFrame]
        assert "lone surrogate" in events[0].reason  # type: ignore[union-attr]
        [reply] = session.frames_to_send()
        assert json.loads(reply)["type"] == "error" and is_clean(reply)


def test_a_lone_surrogate_in_a_key_is_refused() -> None:
    with pytest.raises(ProtocolError, match="lone surrogate"):
        decode_backend('{"type":"job","id":"j","env":{"\\ud83d":"v"}}')


@pytest.mark.parametrize("number", ["1e999", "-1e999", "1E400", "NaN", "Infinity", "-Infinity"])
def test_a_number_that_is_not_finite_is_refused(number: str) -> None:
    with pytest.raises(ProtocolError, match=r"not (finite|allowed)"):
        decode_backend('{"type":"job","id":"j","script":"x","cpuLimit":%s}' % number)


def test_huge_and_tiny_finite_numbers_pass_the_codec_and_hash() -> None:
    frame = '{"type":"job","id":"j","script":"x","n":1e308,"t":5e-324,"i":%s}' % ("9" * 400)
    fields = decode_backend(frame).fields()  # type: ignore[union-attr]
    assert len(proofs.job_digest(fields)) == 64


# 2. Ids match whole ------------------------------------------------------------------------------


@pytest.mark.parametrize("job_id", ["abc\n", "abc\r\n", "\nabc", "a b", "x" * 65, ""])
def test_a_job_id_matches_whole(job_id: str) -> None:
    assert job_id_of({"id": job_id}) is None
    with pytest.raises(JobRejected):
        JobSpec.parse({"id": job_id, "script": "x"})
    session = registered()
    [event] = session.receive(json.dumps({"type": "job", "id": job_id, "script": "x"}))
    assert isinstance(event, JobRefused)


@pytest.mark.parametrize("job_id", ["abc\n", "../x", "\x1b[2J", "a" * 65, 7])
def test_a_job_cancel_names_a_job_id_or_is_refused(job_id: object) -> None:
    session = registered()
    [event] = session.receive(json.dumps({"type": "job_cancel", "jobId": job_id}))
    assert isinstance(event, BadFrame) and is_clean(event.reason)
    assert [json.loads(f)["type"] for f in session.frames_to_send()] == ["error"]
    assert session.receive('{"type":"job_cancel","jobId":"-ok.1_"}') == [CancelRequested("-ok.1_")]


def test_a_frame_over_the_session_cap_gets_one_error_reply() -> None:
    session = registered()
    [event] = session.receive('{"type":"ping","pad":"' + "Z" * MAX_FRAME_BYTES + '"}')
    assert isinstance(event, BadFrame) and "frame too large" in event.reason
    [reply] = session.frames_to_send()
    assert json.loads(reply)["message"].startswith("frame too large")
    assert session.receive('{"type":"job","id":"after","script":"x"}')[0] == JobReceived(
        "after", {"id": "after", "script": "x"}
    )


# 3. Everything after the codec is total -----------------------------------------------------------


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=8))
def test_whatever_the_codec_admits_is_hashed_signed_and_summarised(job: dict[str, Any]) -> None:
    try:
        fields = decode_backend(json.dumps({**job, "type": "job"})).fields()  # type: ignore[union-attr]
    except ProtocolError:
        return  # refused at the edge, with one line
    digest = proofs.job_digest(fields)
    result = error_result(
        job_id="j", job=fields, node_id="n", key=KEY, reason=Reason.INVALID_JOB, detail="x", at_ms=1
    ).model_dump(mode="json")
    assert result["jobDigest"] == digest
    assert proofs.verify_signature(KEY.public_key_b58, proofs.execution_hash(result), result["signature"])
    summarize_spec(fields)


KEY = NodeKey.generate()


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.dictionaries(st.text(max_size=6), st.text() | st.floats() | st.integers(), max_size=5))
def test_a_job_digest_never_raises_even_outside_the_codec(job: dict[str, Any]) -> None:
    assert len(proofs.job_digest(job)) == 64  # surrogates, NaN, infinity: an old record, a caller's bug


def test_the_canonical_form_of_real_text_is_unchanged() -> None:
    assert proofs.canonical_json({"b": "✅", "a": 1}) == '{"a":1,"b":"✅"}'.encode()


def test_an_error_result_is_one_clean_line_whatever_its_detail() -> None:
    result = error_result(
        job_id="j", job={"id": "j"}, node_id="n", key=KEY, reason=Reason.INTERNAL, detail="a\x1b[2Jb\ud800", at_ms=1
    )
    assert result.logs == "a\\x1b[2Jb\\ud800" and proofs.logs_hash(result.logs) == result.logsHash


def test_a_refused_env_key_cannot_forge_a_log_line() -> None:
    with pytest.raises(JobRejected) as refused:
        JobSpec.parse({"id": "j", "script": "x", "env": {"X\n2026-01-01 INFO forged\x1b[2J": "v"}})
    assert "\n" not in str(refused.value) and is_clean(str(refused.value))


# 4. Limits that mean something -----------------------------------------------------------------


@pytest.mark.parametrize("cpus", [1e-10, 0.001, 0.0099, 0, -1])
def test_a_cpu_limit_below_a_hundredth_is_refused(cpus: float) -> None:
    with pytest.raises(JobRejected, match="cpuLimit"):
        JobSpec.parse({"id": "j", "script": "x", "cpuLimit": cpus})
    assert JobSpec.parse({"id": "j", "script": "x", "cpuLimit": 0.01}).cpuLimit == 0.01


def test_a_memory_limit_of_all_the_hosts_memory_is_refused() -> None:
    spec = JobSpec.parse({"id": "j", "script": "x", "memoryLimit": str(host_memory_bytes()), "cpuLimit": 1})
    with pytest.raises(JobRejected, match="HN_MEMORY_RESERVE") as refused:
        admit(spec, SETTINGS, CPU_ONLY)
    assert refused.value.reason == Reason.NO_CAPACITY
    fits = host_memory_bytes() - (SETTINGS.memory_reserve << 20)
    ok = JobSpec.parse({"id": "j", "script": "x", "memoryLimit": str(fits), "cpuLimit": 1})
    assert admit(ok, SETTINGS, CPU_ONLY).queue
    with pytest.raises(JobRejected):
        admit(ok, SETTINGS.model_copy(update={"memory_reserve": SETTINGS.memory_reserve + 1}), CPU_ONLY)


def test_the_memory_reserve_is_a_setting_with_a_default() -> None:
    assert Settings.from_env({}).memory_reserve == 1024
    assert Settings.from_env({"HN_MEMORY_RESERVE": "4096"}).memory_reserve == 4096


# 5. Views: nothing from a job reaches the terminal raw ------------------------------------------------

PAINT = "failed\x1b[1A\x1b[2Kcompleted\x1b]52;c;ZXZpbA==\x07\x9b2J\ud800"


def test_the_job_view_escapes_every_value_from_the_job() -> None:
    spec = summarize_spec({"id": "j", "command": PAINT, "image": PAINT, "env": {PAINT: "secret"}, "cpuLimit": 1})
    detail = JobDetail(
        id="j",
        state="finished",
        status="failed",
        queue=PAINT,
        slot=0,
        attempt=1,
        container=PAINT,
        cancel_requested=False,
        spec=spec,
        timeline={"received": 1},
        exit_code=1,
        oom_killed=False,
        duration_ms=5,
        proofs={"image": PAINT},
        log_bytes=10,
        truncated=False,
        log_tail=[PAINT, "line two\tTAB"],
        rejection=PAINT,
    )
    text = rendered(job_view(detail))
    assert is_clean(text, multiline=True) and "secret" not in text
    assert "\\x1b[1A" in text and "failed\\x1b[1A" in text.splitlines()[-2]  # the tail keeps its lines
    assert text.splitlines()[-1].split() == ["line", "two", "TAB"]  # and its tab (as spaces)
    text.encode("utf-8")


def test_a_script_with_a_lone_surrogate_is_summarised() -> None:
    summary = summarize_spec({"id": "j", "script": "print('\ud800')"})
    assert summary["kind"] == "script" and len(summary["script_sha256"]) == 64


def test_tables_and_the_summary_line_escape_peer_values() -> None:
    row = JobRow(PAINT, PAINT, None, PAINT, None, [PAINT], 0, 1, None, None, None)
    node = NodeSummary(PAINT, None, None, 0, 1, 0, 0, 0, {PAINT: 1}, 0, refused=PAINT)
    for renderable in (jobs_table([row], 2), summary_line(node, "fix")):
        assert is_clean(rendered(renderable), multiline=True)


def test_a_finding_line_escapes_a_peer_value() -> None:
    line = Finding("bridge", Level.FAIL, f"registered as {PAINT}", PAINT).line()
    assert is_clean(line)


def test_json_output_is_ascii_with_every_control_character_escaped() -> None:
    text = json.dumps({"logs": PAINT})  # the CLI's --json: json.dumps' defaults
    assert text.isascii() and is_clean(text)


def test_the_host_memory_is_what_the_kernel_says() -> None:
    assert host_memory_bytes() == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
