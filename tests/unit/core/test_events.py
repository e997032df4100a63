"""Events, pure: severities, the one line for people, each format's payload, and which health changes are news."""

from __future__ import annotations

import json

from hypernode_host.core.events import (
    DISCORD_MAX_CHARS,
    Event,
    Format,
    Kind,
    Severity,
    SlotHealth,
    finished_event,
    health_changes,
    render,
    summary,
    wanted,
)

FAILED = Event(
    Kind.JOB_FINISHED,
    1_700_000_000_000,
    "rig-1",
    "node-9",
    finished_event("job-1", {"status": "timeout", "reason": "deadline", "durationMs": 12_500}, ["GPU-a"]),
)


def test_a_finished_job_that_costs_a_payout_is_a_warning_a_completed_one_is_news() -> None:
    assert FAILED.severity is Severity.WARNING
    done = Event(Kind.JOB_FINISHED, 0, fields={"status": "completed"})
    assert done.severity is Severity.INFO
    assert Event(Kind.NODE_OFFLINE, 0).severity is Severity.CRITICAL
    assert Event("from.a.newer.version", 0).severity is Severity.WARNING  # still delivered, and said


def test_the_json_format_sends_the_event_with_its_fields_and_envelope() -> None:
    payload = render(FAILED, Format.JSON)
    document = json.loads(payload.body)

    assert payload.headers == {"Content-Type": "application/json"}
    assert document["event"] == "job.finished" and document["severity"] == "warning"
    assert (document["job_id"], document["status"], document["reason"]) == ("job-1", "timeout", "deadline")
    assert document["duration_s"] == 12.5 and document["gpus"] == ["GPU-a"]
    assert (document["node"], document["node_id"], document["at"]) == ("rig-1", "node-9", "2023-11-14T22:13:20.000Z")
    assert document["summary"] == "job job-1 timeout (deadline) after 12.5 s on GPU-a"


def test_ntfy_gets_the_line_as_body_and_ascii_headers() -> None:
    payload = render(FAILED, Format.NTFY)

    assert payload.body == b"job job-1 timeout (deadline) after 12.5 s on GPU-a"
    assert payload.headers["Title"] == "hypernode rig-1: job.finished"
    assert payload.headers["Priority"] == "high" and payload.headers["Tags"] == "warning"
    offline = render(Event(Kind.NODE_OFFLINE, 0, "rig-1", fields={"offline_s": 130}), Format.NTFY)
    assert offline.headers["Priority"] == "urgent"


def test_hostile_values_cannot_ping_restyle_or_forge_lines() -> None:
    reason = "Invalid token @everyone <!channel> <https://evil|click>\n[critical] forged line \u202e"
    event = Event(Kind.TOKEN_REFUSED, 0, "rig\nforged", fields={"reason": reason})

    discord = json.loads(render(event, Format.DISCORD).body)
    slack = json.loads(render(event, Format.SLACK).body)
    ntfy = render(event, Format.NTFY)

    assert discord["allowed_mentions"] == {"parse": []}  # "@everyone" pings nobody
    assert "\n" not in discord["content"] and "\u202e" not in discord["content"]
    assert "<" not in slack["text"] and "&lt;!channel&gt;" in slack["text"]
    assert all(v.isascii() and "\n" not in v for v in ntfy.headers.values())
    assert b"\n" not in ntfy.body


def test_a_long_value_stays_inside_what_discord_accepts() -> None:
    event = Event(Kind.TOKEN_REFUSED, 0, "rig", fields={"reason": "x" * 50_000})
    assert len(json.loads(render(event, Format.DISCORD).body)["content"]) <= DISCORD_MAX_CHARS
    assert len(summary(event)) < 1000


def test_every_kind_has_its_own_line() -> None:
    lines = {summary(Event(kind, 0, fields={"slot": 1, "gpus": ["GPU-a"], "health": "h"})) for kind in Kind}
    assert len(lines) == len(Kind)


def test_patterns_choose_events_and_none_means_all() -> None:
    assert wanted("job.finished", ())
    assert wanted("gpu.busy", ("node.*", "gpu.*")) and not wanted("job.finished", ("node.*", "gpu.*"))


def _slot(slot: int, healthy: bool, health: str = "ok") -> SlotHealth:
    return SlotHealth("rig", slot, (f"GPU-{slot}",), healthy, health)


def test_health_changes_are_news_once_each() -> None:
    first = [_slot(0, True), _slot(1, False, "GPU-1: marked lost: test")]
    assert health_changes({}, first) == [
        (Kind.GPU_UNHEALTHY, {"host": "rig", "slot": 1, "gpus": ["GPU-1"], "health": "GPU-1: marked lost: test"})
    ]
    before = {(s.host, s.slot): s for s in first}
    assert health_changes(before, first) == []  # nothing new
    later = [_slot(0, False, "GPU-0 busy: used by another process"), _slot(1, True)]
    assert [kind for kind, _ in health_changes(before, later)] == [Kind.GPU_BUSY, Kind.GPU_HEALTHY]
    worse = [_slot(0, True), _slot(1, False, "GPU-1: critical Xid 79")]
    assert [kind for kind, _ in health_changes(before, worse)] == [Kind.GPU_UNHEALTHY]  # another reason
