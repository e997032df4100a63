"""How the operator commands look to a person: rich tables over the records of ops/ and Dramatiq's queues.

Every value that comes from a job, a worker or the backend is shown as plain text (``Text``), never as
rich markup, and with its control characters escaped (escapes.py): a job cannot restyle, retitle,
hide or paint over lines of the operator's terminal, nor write to its clipboard. A log tail keeps its
newlines and tabs, nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from hypernode_host.core.messages import plain
from hypernode_host.core.slots import GpuInfo, Slot
from hypernode_host.escapes import shown, shown_text
from hypernode_host.ops.deadletters import DeadLetter
from hypernode_host.ops.findings import Finding, Level
from hypernode_host.ops.inspect import JobDetail, JobRow, NodeSummary, WorkerRow, hosts_view
from hypernode_host.ops.ledger import LedgerExport
from hypernode_host.state.quarantine import Quarantined
from hypernode_host.tasks.dramatiq_redis import QueueStats

LEVEL_STYLE = {Level.OK: "green", Level.WARN: "yellow", Level.FAIL: "bold red"}


def seconds(value: float | None) -> str:
    """A duration for people: 850 ms, 12.5 s, 3 m 20 s, 2 h 05 m."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    if value < 3600:
        return f"{int(value // 60)} m {int(value % 60):02d} s"
    return f"{int(value // 3600)} h {int(value % 3600 // 60):02d} m"


def ago(at_ms: int | None, now_ms: int) -> str:
    return "-" if not at_ms else f"{seconds(max(now_ms - at_ms, 0) / 1000)} ago"


def clock(at_ms: int | None) -> str:
    return "-" if not at_ms else datetime.fromtimestamp(at_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _text(value: object) -> Text:
    return Text("-" if value is None or value == "" else shown(value))


def short_uuid(uuid: str) -> str:
    return uuid[:12] if uuid.startswith("GPU-") else uuid


def queues_table(stats: Sequence[QueueStats]) -> Table:
    table = Table("queue", "ready", "delayed", "in flight", "dead", "oldest", title="queues", title_justify="left")
    for q in stats:
        table.add_row(
            _text(q.queue),
            str(q.ready),
            str(q.delayed),
            str(q.in_flight),
            Text(str(q.dead), style="red" if q.dead else ""),
            seconds(q.oldest_age_s),
        )
    return table


def progress_text(progress: Mapping[str, Any] | None) -> str | None:
    """``42% epoch 3``: the latest progress a job reported, or None."""
    if progress is None:
        return None
    percent, message = progress.get("percent"), progress.get("message") or ""
    shown_percent = f"{percent:g}%" if isinstance(percent, int | float) and not isinstance(percent, bool) else "?"
    return f"{shown_percent} {shown(message, 200)}".strip()  # the job's own words: escaped for the terminal


def jobs_table(rows: Sequence[JobRow], now_ms: int) -> Table:
    table = Table(
        "job",
        "state",
        "status",
        "reason",
        "progress",
        "slot",
        "GPU",
        "attempt",
        "received",
        "duration",
        "exit",
        title="jobs",
    )
    table.title_justify = "left"
    for job in rows:
        table.add_row(
            _text(job.id),
            _text(
                f"{job.state} (compacted)"
                if job.compacted_at is not None
                else f"{job.state} ({job.pull})"
                if job.pull
                else job.state
            ),
            _text(job.status),
            _text(job.reason),
            _text(progress_text(job.progress)),
            _text(job.slot),
            _text(", ".join(short_uuid(g) for g in job.gpus)),
            str(job.attempt),
            ago(job.received_at, now_ms),
            seconds(job.duration_ms / 1000 if job.duration_ms is not None else None),
            _text(job.exit_code),
        )
    return table


def job_view(job: JobDetail) -> RenderableType:
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    rows: list[tuple[str, object]] = [
        ("job", job.id),
        ("state", job.state),
        ("status", job.status),
        ("queue", job.queue),
        ("slot", job.slot),
        ("attempt", job.attempt),
        ("container", job.container),
        ("cancel requested", "yes" if job.cancel_requested else "no"),
        ("exit code", job.exit_code),
        ("oom killed", job.oom_killed),
        ("duration", seconds(job.duration_ms / 1000) if job.duration_ms is not None else None),
        ("log bytes", job.log_bytes if not job.truncated else f"{job.log_bytes} (cut to head and tail)"),
    ]
    if job.rejection is not None:
        rows.append(("rejected by the backend", job.rejection))
    if job.progress is not None:
        rows.append(("progress", progress_text(job.progress)))
    if job.compacted_at is not None:
        rows.append(("compacted", f"{clock(job.compacted_at)}: retention kept only this tombstone"))
        rows.append(("result sha256", job.result_sha256))
    if job.pull is not None:
        rows.append(("image", job.pull))
    rows += [(f"spec {name}", value) for name, value in job.spec.items()]
    rows += [(name, clock(at)) for name, at in job.timeline.items()]
    rows += [(name, value) for name, value in job.proofs.items()]
    for name, value in rows:
        facts.add_row(name, _text(value))
    parts: list[RenderableType] = [facts]
    if job.log_tail:
        parts.append(Text(f"\nlast {len(job.log_tail)} log lines:", style="bold"))
        parts.append(Text(shown_text("\n".join(job.log_tail))))
    return Group(*parts)


def workers_table(rows: Sequence[WorkerRow], now_ms: int) -> Table:
    table = Table("host", "slot", "queues", "GPUs", "state", "job", "last seen", "pid", title="workers")
    table.title_justify = "left"
    table.caption = plain("; ".join(h.describe() for h in hosts_view(rows)), 2000)  # each host's health
    table.caption_justify = "left"
    for w in rows:
        if not w.alive:
            state = Text("down", style="bold red")
        elif w.state == "serving":
            state = Text("alive", style="green")
        else:  # busy, draining or unhealthy, and why (the driver's fix included)
            state = Text(f"{w.state}: {w.health}", style="yellow" if w.state == "busy" else "bold yellow")
        table.add_row(
            _text(w.host),
            str(w.slot),
            _text(", ".join(w.queues)),
            _text(", ".join(short_uuid(g) for g in w.gpus) or "CPU"),
            state,
            _text(w.current_job),
            ago(w.seen_at, now_ms),
            _text(w.pid),
        )
    return table


def dead_table(rows: Sequence[DeadLetter], now_ms: int) -> Table:
    table = Table("queue", "job", "dead since", "enqueued", "job state", title="dead letters", title_justify="left")
    for d in rows:
        table.add_row(
            _text(d.queue), _text(d.job_id), ago(d.dead_at, now_ms), ago(d.enqueued_at, now_ms), _text(d.state)
        )
    return table


def summary_line(node: NodeSummary, token_fix: str = "") -> Text:
    """The node in a line; a refused token first, in red, with what to do (``token_fix``)."""
    beat = "no heartbeat" if node.heartbeat_age_s is None else f"heartbeat {seconds(node.heartbeat_age_s)} ago"
    counts = ", ".join(f"{status} {n}" for status, n in sorted(node.by_status.items())) or "none finished"
    line = Text()
    if node.refused:
        line.append(f"token refused by the backend: {plain(node.refused, 300)}", style="bold red")
        line.append(f" ({token_fix})\n" if token_fix else "\n")
    rejected = f", {node.results_rejected} results rejected by the backend" if node.results_rejected else ""
    line.append(
        shown(
            f"node {shown(node.node_id or '(not registered)', 128)}: {beat}, {node.reconnects} reconnects; "
            f"jobs {node.jobs} (queued {node.queued}, running {node.running}; {counts}); "
            f"outbox {node.outbox}{rejected}; workers alive {node.workers_alive}"
        )
    )
    if node.uptime:
        line.append(f"; uptime {uptime_text(node.uptime)}")
    return line


def percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100:.2f}%"


def uptime_text(shares: dict[str, float | None]) -> str:
    """24h 99.50%, 7d 98.10%, 30d - (not observed yet)."""
    return ", ".join(f"{window} {percent(ratio)}" for window, ratio in shares.items())


def gpus_view(gpus: Sequence[GpuInfo], slots: Sequence[Slot]) -> RenderableType:
    """The GPUs found and the worker slots planned on them."""
    table = Table("index", "name", "uuid", "memory MiB", "util %", "driver", "CUDA", "processes", "health")
    for g in gpus:
        table.add_row(
            str(g.index),
            _text(g.name + (" (simulated)" if g.simulated else "")),
            _text(g.uuid),
            str(g.memory_total_mb),
            str(g.utilization_pct),
            _text(g.driver_version),
            _text(g.cuda_version),
            str(g.compute_processes),
            _text(g.health),
        )
    found: RenderableType = table if gpus else Text("no GPUs: this node runs CPU jobs only")
    return Group(found, *(Text(shown(f"{s.describe()} → {', '.join(s.queues)}")) for s in slots))


def quarantine_lines(held: Sequence[Quarantined]) -> list[str]:
    """The workloads the poison-job breaker refuses, one line each (their texts escaped)."""
    lines = [
        plain(f"quarantined workload {q.workload}: {q.ttl_s} s left, after job {q.job_id} on {q.gpu} ({q.reason})", 400)
        for q in held
    ]
    return lines + (["clear with: hypernode-host gpus --clear-quarantine"] if held else [])


def findings_table(findings: Sequence[Finding]) -> Table:
    table = Table("", "check", "result", "fix", show_header=False, box=None, padding=(0, 1))
    for f in findings:
        table.add_row(
            Text(f.level.value, style=LEVEL_STYLE[f.level]),
            _text(f.part),
            _text(f.detail),
            Text(shown(f.fix) if f.level is not Level.OK else ""),
        )
    return table


def ledger_view(export: LedgerExport) -> RenderableType:
    """`ledger`: the summary, the days, busy hours per GPU and the jobs."""
    summary = export.summary
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    statuses = ", ".join(f"{status} {n}" for status, n in summary.by_status.items()) or "none finished"
    shares = {u["window"]: u["ratio"] for u in summary.uptime}
    for name, value in (
        ("jobs", f"{summary.jobs} ({statuses})"),
        ("success rate", percent(summary.success_rate)),
        ("backend", f"{summary.acknowledged} acknowledged, {summary.rejected} rejected, {summary.unsettled} unsettled"),
        ("credit reported", f"{summary.credit:g}"),
        ("uptime", uptime_text(shares)),
    ):
        facts.add_row(name, _text(value))
    days = Table("day (UTC)", "jobs", "completed", "failed", "credit", title="per day", title_justify="left")
    for d in summary.per_day:
        days.add_row(d.day, str(d.jobs), str(d.completed), str(d.failed), f"{d.credit:g}")
    busy = Table("GPU", "busy hours", title="busy hours", title_justify="left")
    for gpu, hours in summary.busy_hours.items():
        busy.add_row(_text(gpu), f"{hours:.3f}")
    jobs = Table("job", "received", "status", "reason", "GPU", "duration", "backend", "credit", title="jobs")
    jobs.title_justify = "left"
    for row in export.rows:
        said = "acknowledged" if row.acknowledged_ms else f"rejected: {row.rejection}" if row.rejected_ms else ""
        jobs.add_row(
            _text(row.id),
            clock(row.received_ms),
            _text(row.status),
            _text(row.reason),
            _text(", ".join(short_uuid(g) for g in row.gpus)),
            seconds(row.duration_ms / 1000 if row.duration_ms is not None else None),
            _text(said),
            _text(row.credit),
        )
    return Group(facts, days, busy, jobs)
