"""The node's events, pure: what each one is called, how serious it is, its one line for people, and the
payloads that a plain JSON receiver, ntfy, Discord and Slack accept.

An event is emitted where it happens (state/events.py queues it in Redis) and delivered by the
notifier (ops/notify.py). Its fields come partly from jobs and peers (a job id, the backend's
refusal text): every one is escaped to printable ASCII before it goes into a line of text, and
the chat payloads are made so that no value can mention (ping) anyone or inject markup.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Any

from hypernode_host.core.messages import plain

FIELD_CHARS = 300  # of any one value in a line of text
DISCORD_MAX_CHARS = 2000  # Discord refuses a longer content
SLACK_MAX_CHARS = 3000


class Kind(StrEnum):
    JOB_FINISHED = "job.finished"  # job_id, status, reason, duration_s, gpus
    NODE_REGISTERED = "node.registered"  # node_id, resumed
    NODE_OFFLINE = "node.offline"  # since_ms, offline_s, last_error
    NODE_BACK = "node.back"  # node_id, offline_s
    TOKEN_REFUSED = "token.refused"  # noqa: S105 (an event name, not a password): reason
    GPU_UNHEALTHY = "gpu.unhealthy"  # host, slot, gpus, health
    GPU_BUSY = "gpu.busy"  # host, slot, gpus, health
    GPU_HEALTHY = "gpu.healthy"  # host, slot, gpus
    DISK_FLOOR = "disk.floor"  # path, free_bytes, floor_bytes (emitted by the disk check)
    WORKER_CRASH_LOOP = "worker.crash_loop"  # worker, restarts, window_s, exit_code
    TEST = "test"  # `hypernode-host notify --test`


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


SEVERITY = {
    Kind.NODE_REGISTERED: Severity.INFO,
    Kind.NODE_OFFLINE: Severity.CRITICAL,
    Kind.NODE_BACK: Severity.INFO,
    Kind.TOKEN_REFUSED: Severity.CRITICAL,
    Kind.GPU_UNHEALTHY: Severity.CRITICAL,
    Kind.GPU_BUSY: Severity.WARNING,
    Kind.GPU_HEALTHY: Severity.INFO,
    Kind.DISK_FLOOR: Severity.CRITICAL,
    Kind.WORKER_CRASH_LOOP: Severity.CRITICAL,
    Kind.TEST: Severity.INFO,
}
QUIET_STATUSES = ("completed", "cancelled")  # a finished job with another status cost the operator a payout


@dataclass(frozen=True)
class Event:
    """One event as queued: its kind, when (epoch ms), the node's name and id, and its own fields."""

    kind: str  # a Kind value (an unknown one, written by a newer version, is still delivered)
    at_ms: int
    node: str = ""
    node_id: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def severity(self) -> Severity:
        if self.kind == Kind.JOB_FINISHED:
            return Severity.INFO if self.fields.get("status") in QUIET_STATUSES else Severity.WARNING
        known = {k.value: k for k in Kind}.get(self.kind)
        return SEVERITY.get(known, Severity.WARNING) if known is not None else Severity.WARNING

    def document(self) -> dict[str, Any]:
        """The event as the json format sends it: its fields at the top level, beside the envelope."""
        return {
            **dict(self.fields),
            "event": self.kind,
            "severity": self.severity.value,
            "at": iso(self.at_ms),
            "at_ms": self.at_ms,
            "node": self.node,
            "node_id": self.node_id,
            "summary": summary(self),
        }


def finished_event(job_id: str, result: Mapping[str, Any], gpus: Sequence[str]) -> dict[str, Any]:
    """job.finished's fields from a job_result (core/results.py makes them)."""
    duration_ms = result.get("durationMs")
    return {
        "job_id": job_id,
        "status": result.get("status"),
        "reason": result.get("reason"),
        "exit_code": result.get("exitCode"),
        "duration_s": round(duration_ms / 1000, 3) if isinstance(duration_ms, int | float) else None,
        "gpus": list(gpus),
        "started_at": result.get("startedAt"),
        "completed_at": result.get("completedAt"),
        "execution_hash": result.get("executionHash"),
    }


def iso(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def wanted(kind: str, patterns: Sequence[str]) -> bool:
    """HN_NOTIFY_EVENTS: no patterns is every event."""
    return not patterns or any(fnmatchcase(kind, p) for p in patterns)


def _p(value: object) -> str:
    return plain(value, FIELD_CHARS)


def _duration(value: object) -> str:
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "?"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} m {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} m"


def _gpus(value: object) -> str:
    if isinstance(value, list | tuple) and value:
        return ", ".join(_p(g) for g in value)
    return "CPU"


def summary(event: Event) -> str:
    """The event in one line of printable ASCII (every value from a job or peer escaped)."""
    f = event.fields
    match event.kind:
        case Kind.JOB_FINISHED:
            reason = f" ({_p(f['reason'])})" if f.get("reason") else ""
            took = _duration(f.get("duration_s"))
            return f"job {_p(f.get('job_id'))} {_p(f.get('status'))}{reason} after {took} on {_gpus(f.get('gpus'))}"
        case Kind.NODE_REGISTERED:
            return f"registered as node {_p(f.get('node_id'))}" + (" (resumed)" if f.get("resumed") else "")
        case Kind.NODE_OFFLINE:
            error = f"; last error: {_p(f['last_error'])}" if f.get("last_error") else ""
            return f"offline: no registered connection for {_duration(f.get('offline_s'))}{error}"
        case Kind.NODE_BACK:
            return f"back online as node {_p(f.get('node_id'))} after {_duration(f.get('offline_s'))} offline"
        case Kind.TOKEN_REFUSED:
            return f"the backend refuses the node token: {_p(f.get('reason'))}; the node waits for a new one"
        case Kind.GPU_UNHEALTHY | Kind.GPU_BUSY:
            what = "unhealthy" if event.kind == Kind.GPU_UNHEALTHY else "busy"
            where = f"slot {_p(f.get('slot'))} ({_gpus(f.get('gpus'))})"
            return f"{where} is {what} and takes no jobs: {_p(f.get('health'))}"
        case Kind.GPU_HEALTHY:
            return f"slot {_p(f.get('slot'))} ({_gpus(f.get('gpus'))}) is healthy again and takes jobs"
        case Kind.DISK_FLOOR:
            return f"disk floor reached at {_p(f.get('path'))}: {_p(f.get('free_bytes'))} bytes free"
        case Kind.WORKER_CRASH_LOOP:
            return (
                f"{_p(f.get('worker'))} is restarting in a loop: {_p(f.get('restarts'))} exits in "
                f"{_p(f.get('window_s'))} s (last exit code {_p(f.get('exit_code'))})"
            )
        case Kind.TEST:
            return "a test event: this receiver hears the node"
    return f"{_p(event.kind)}: {_p(json.dumps(dict(f), sort_keys=True, default=str))}"


def title(event: Event) -> str:
    return f"hypernode {_p(event.node) or 'node'}: {_p(event.kind)}"


class Format(StrEnum):
    JSON = "json"
    NTFY = "ntfy"
    DISCORD = "discord"
    SLACK = "slack"


NTFY_PRIORITY = {Severity.INFO: "default", Severity.WARNING: "high", Severity.CRITICAL: "urgent"}
NTFY_TAGS = {Severity.INFO: "information_source", Severity.WARNING: "warning", Severity.CRITICAL: "rotating_light"}
ICON = {Severity.INFO: "", Severity.WARNING: "[warning] ", Severity.CRITICAL: "[critical] "}


@dataclass(frozen=True)
class Payload:
    body: bytes
    headers: dict[str, str]


def _json_body(value: Mapping[str, Any]) -> Payload:
    body = json.dumps(value, separators=(",", ":"), ensure_ascii=True, default=str).encode()
    return Payload(body, {"Content-Type": "application/json"})


def slack_escape(text: str) -> str:
    """Slack's three control characters (its message formatting): &, < and >."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render(event: Event, fmt: Format | str) -> Payload:
    """The request body and headers that ``fmt``'s receivers accept for ``event``."""
    line = f"{ICON[event.severity]}{title(event)}: {summary(event)}"
    match Format(fmt):
        case Format.JSON:
            return _json_body(event.document())
        case Format.NTFY:
            # ntfy publishes a POSTed body as the message; its headers are ASCII (title() is).
            headers = {
                "Content-Type": "text/plain; charset=utf-8",
                "Title": title(event),
                "Priority": NTFY_PRIORITY[event.severity],
                "Tags": NTFY_TAGS[event.severity],
            }
            return Payload(summary(event).encode(), headers)
        case Format.DISCORD:
            # allowed_mentions with no parse: an "@everyone" in a value pings nobody.
            return _json_body({"content": line[:DISCORD_MAX_CHARS], "allowed_mentions": {"parse": []}})
        case Format.SLACK:
            return _json_body({"text": slack_escape(line)[:SLACK_MAX_CHARS]})
    raise ValueError(f"unknown format {fmt!r}")  # pragma: no cover: Format(fmt) raised first


# Slot health, seen by the bridge: which changes are events -----------------------------------


@dataclass(frozen=True)
class SlotHealth:
    host: str
    slot: int
    gpus: tuple[str, ...]
    healthy: bool
    health: str


def _health_kind(health: str) -> Kind:
    return Kind.GPU_BUSY if "busy" in health.lower() else Kind.GPU_UNHEALTHY


def health_changes(
    before: Mapping[tuple[str, int], SlotHealth], now: Sequence[SlotHealth]
) -> list[tuple[Kind, dict[str, Any]]]:
    """The events between two readings of the slots (by host and slot): a slot seen taking no jobs for
    the first time, or for another reason (unhealthy, or busy when its health says so), and one healthy
    again. A slot that disappeared (its worker is down) is the crash-loop event's business."""
    events: list[tuple[Kind, dict[str, Any]]] = []
    for slot in now:
        fields: dict[str, Any] = {"host": slot.host, "slot": slot.slot, "gpus": list(slot.gpus)}
        old = before.get((slot.host, slot.slot))
        if not slot.healthy and (old is None or old.healthy or old.health != slot.health):
            events.append((_health_kind(slot.health), {**fields, "health": slot.health}))
        elif slot.healthy and old is not None and not old.healthy:
            events.append((Kind.GPU_HEALTHY, fields))
    return events
