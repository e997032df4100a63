"""Prometheus metrics, read from Redis (and NVML) at each scrape, so any process of the node can serve them.

Served on ``HN_METRICS_HOST:HN_METRICS_PORT`` (loopback by default; port 0 turns it off):
jobs by final status, job duration (buckets from a second to a day), queue depth, in flight,
dead letters, outbox size, reconnects, results the backend rejected, whether it refuses the token,
live workers and slots taking no jobs, uptime, events by kind, the notifier's deliveries, the reconciler's
passes and repairs, and per-GPU utilisation and memory.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from hypernode_host.core.clock import now_ms
from hypernode_host.core.events import Kind
from hypernode_host.core.jobs import Reason, Status
from hypernode_host.core.slots import GpuInfo, plan_slots
from hypernode_host.gpu.inventory import discover
from hypernode_host.ops.check import REDIS_TIMEOUT_S
from hypernode_host.ops.inspect import NodeSummary, known_queues, node_summary
from hypernode_host.settings import Settings
from hypernode_host.state import RedisError, Store
from hypernode_host.tasks.dramatiq_redis import Queues

log = logging.getLogger(__name__)

GPU_LABELS = ["index", "uuid", "name"]


def _le(bound: str) -> str:
    """A bucket bound as Prometheus clients write it ("5" -> "5.0", "+Inf" stays)."""
    return bound if bound == "+Inf" else repr(float(bound))


class NodeCollector(Collector):
    """Every metric of the node, computed from Redis on each collect (a scrape)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store.open(settings, timeout_s=REDIS_TIMEOUT_S)
        self.queues = Queues.open(settings, timeout_s=REDIS_TIMEOUT_S)

    def close(self) -> None:
        self.store.close()
        self.queues.close()

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("hn_redis_up", "1 when the node's Redis answered this scrape.")
        gpus = discover(self.settings)
        try:
            families = [*self._jobs(), *self._queues(gpus)]
        except RedisError as exc:
            log.warning("metrics: Redis did not answer: %s", exc)
            up.add_metric([], 0)
            yield up
            yield from self._gpus(gpus)
            return
        up.add_metric([], 1)
        yield up
        yield from families
        yield from self._gpus(gpus)

    def _jobs(self) -> list[Metric]:
        summary = node_summary(self.store)
        jobs = CounterMetricFamily("hn_jobs", "Jobs finished on this node, by final status.", labels=["status"])
        for status in Status:
            jobs.add_metric([status.value], summary.by_status.get(status.value, 0))
        reasons = CounterMetricFamily(
            "hn_jobs_by_reason", "Jobs finished on this node that did not complete, by reason.", labels=["reason"]
        )
        for reason in Reason:
            reasons.add_metric([reason.value], summary.by_reason.get(reason.value, 0))
        durations = HistogramMetricFamily(
            "hn_job_duration_seconds", "How long each finished job's container ran.", labels=["status"]
        )
        for name, stats in sorted(self.store.stats.durations().items()):
            buckets = [(_le(bound), count) for bound, count in stats.buckets]
            durations.add_metric([name], buckets, stats.sum_s)
        gauges: list[tuple[str, str, float]] = [
            ("hn_jobs_queued", "Jobs recorded and waiting for a worker.", summary.queued),
            ("hn_jobs_running", "Jobs a worker is running.", summary.running),
            ("hn_outbox_size", "Results waiting for the backend's acknowledgement.", summary.outbox),
            ("hn_workers_alive", "Worker slots with a live registration.", summary.workers_alive),
        ]
        if summary.heartbeat_age_s is not None:
            gauges.append(
                (
                    "hn_bridge_heartbeat_age_seconds",
                    "Seconds since the bridge's last heartbeat.",
                    summary.heartbeat_age_s,
                )
            )
        gauges.append(
            ("hn_bridge_token_refused", "1 while the backend refuses the node token.", float(bool(summary.refused)))
        )
        reconnects = CounterMetricFamily(
            "hn_reconnects", "Reconnections of the bridge to the backend.", value=summary.reconnects
        )
        rejected = CounterMetricFamily(
            "hn_results_rejected", "Results the backend answered with an error.", value=summary.results_rejected
        )
        reconciler = self.store.reconciler.stats()
        passes = CounterMetricFamily(
            "hn_reconciler_passes", "Reconciler passes (one per few seconds for the node).", value=reconciler.passes
        )
        requeued = CounterMetricFamily(
            "hn_reconciler_requeued",
            "Jobs the reconciler requeued: queued or running with no message and nobody holding them.",
            value=reconciler.requeued,
        )
        refused = CounterMetricFamily(
            "hn_reconciler_finished",
            "Jobs the reconciler finished: refused at intake, their error result never stored.",
            value=reconciler.finished,
        )
        if reconciler.last_at is not None:
            gauges.append(
                (
                    "hn_reconciler_last_pass_age_seconds",
                    "Seconds since the reconciler's last pass.",
                    max(now_ms() - reconciler.last_at, 0) / 1000,
                )
            )
        counters = [jobs, reasons, durations, reconnects, rejected, passes, requeued, refused, *self._events(summary)]
        gauges.append(
            (
                "hn_slots_unhealthy",
                "Live worker slots that take no jobs (a GPU unhealthy or busy, Docker down).",
                sum(1 for r in self.store.registry.all() if not r.healthy),
            )
        )
        return [*counters, *(GaugeMetricFamily(n, doc, value=v) for n, doc, v in gauges)]

    def _events(self, summary: NodeSummary) -> list[Metric]:
        """Uptime, the events emitted by kind, and the notifier's deliveries."""
        ratio = GaugeMetricFamily(
            "hn_uptime_ratio", "Share of the window the bridge was registered (24h, 7d, 30d).", labels=["window"]
        )
        for window, share in summary.uptime.items():
            if share is not None:
                ratio.add_metric([window], share)
        uptime = CounterMetricFamily(
            "hn_uptime_seconds", "Seconds the bridge has been registered, in all.", value=summary.uptime_total_s
        )
        events = CounterMetricFamily("hn_events", "Events the node emitted, by kind.", labels=["event"])
        emitted = self.store.events.emitted()
        for kind in sorted({*(k.value for k in Kind), *emitted}):
            events.add_metric([kind], emitted.get(kind, 0))
        deliveries = CounterMetricFamily(
            "hn_notify_deliveries", "The notifier's deliveries, by outcome.", labels=["outcome"]
        )
        counts = self.store.events.counts()
        for outcome in ("delivered", "dropped", "retries", "skipped"):
            deliveries.add_metric([outcome], counts.get(outcome, 0))
        return [ratio, uptime, events, deliveries]

    def _queues(self, gpus: list[GpuInfo]) -> list[Metric]:
        families = {
            "ready": GaugeMetricFamily("hn_queue_ready", "Messages waiting in a queue.", labels=["queue"]),
            "delayed": GaugeMetricFamily("hn_queue_delayed", "Delayed messages of a queue.", labels=["queue"]),
            "in_flight": GaugeMetricFamily(
                "hn_queue_in_flight", "Messages taken by a worker, not yet acknowledged.", labels=["queue"]
            ),
            "dead": GaugeMetricFamily("hn_queue_dead", "Dead-lettered messages of a queue.", labels=["queue"]),
        }
        oldest = GaugeMetricFamily(
            "hn_queue_oldest_age_seconds", "Age of the message at the head of a queue.", labels=["queue"]
        )
        slots = plan_slots(gpus, self.settings.cpu_slots, self.settings.gpus_per_worker)
        for stats in self.queues.stats(known_queues(self.store, slots)):
            for name, family in families.items():
                family.add_metric([stats.queue], getattr(stats, name))
            oldest.add_metric([stats.queue], stats.oldest_age_s or 0.0)
        return [*families.values(), oldest]

    def _gpus(self, gpus: list[GpuInfo]) -> Iterator[Metric]:
        util = GaugeMetricFamily("hn_gpu_utilization_ratio", "GPU utilisation, 0 to 1.", labels=GPU_LABELS)
        used = GaugeMetricFamily("hn_gpu_memory_used_bytes", "GPU memory in use.", labels=GPU_LABELS)
        total = GaugeMetricFamily("hn_gpu_memory_total_bytes", "GPU memory.", labels=GPU_LABELS)
        temperature = GaugeMetricFamily("hn_gpu_temperature_celsius", "GPU temperature.", labels=GPU_LABELS)
        power = GaugeMetricFamily("hn_gpu_power_watts", "GPU power draw.", labels=GPU_LABELS)
        for gpu in gpus:
            labels = [str(gpu.index), gpu.uuid, gpu.name]
            util.add_metric(labels, gpu.utilization_pct / 100)
            used.add_metric(labels, (gpu.memory_total_mb - gpu.memory_free_mb) << 20)
            total.add_metric(labels, gpu.memory_total_mb << 20)
            if gpu.temperature_c is not None:
                temperature.add_metric(labels, gpu.temperature_c)
            if gpu.power_w is not None:
                power.add_metric(labels, gpu.power_w)
        yield from (util, used, total, temperature, power)


class MetricsServer:
    """The HTTP endpoint on its own daemon thread; ``close`` stops it and frees the port."""

    def __init__(self, httpd: WSGIServer, thread: threading.Thread, collector: NodeCollector) -> None:
        self.httpd = httpd
        self.thread = thread
        self.collector = collector

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/metrics"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
        self.collector.close()


def start_metrics_server(settings: Settings) -> MetricsServer | None:
    """Serve the node's metrics at HN_METRICS_HOST:HN_METRICS_PORT; None (nothing served) when the port is 0."""
    if settings.metrics_port == 0:
        return None
    collector = NodeCollector(settings)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    httpd, thread = start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=registry)
    server = MetricsServer(httpd, thread, collector)
    log.info("metrics served at %s", server.url)
    return server
