"""The Prometheus endpoint, scraped over HTTP on loopback: its numbers follow what the node really ran."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from operator_support import Node
from prometheus_client.parser import text_string_to_metric_families

from hypernode_host.core.slots import CPU_QUEUE
from hypernode_host.node.redis_server import free_port
from hypernode_host.ops.metrics import MetricsServer, start_metrics_server
from hypernode_host.settings import Settings
from hypernode_host.state import Store
from support import wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def metrics(node: Node) -> Iterator[MetricsServer]:
    settings = Settings.from_env(
        {
            "HN_REDIS_URL": node.redis_server.url,
            "HN_CPU_SLOTS": "1",
            "HN_NODE_NAME": node.env["HN_NODE_NAME"],
            "HN_METRICS_PORT": str(free_port()),
        }
    )
    server = start_metrics_server(settings)
    assert server is not None
    yield server
    server.close()


def test_metrics_count_the_jobs_that_ran(node: Node, metrics: MetricsServer) -> None:
    assert metrics.url.startswith("http://127.0.0.1:")  # loopback unless HN_METRICS_HOST says otherwise
    before = scrape(metrics.url)

    ok = node.run(script="import time\ntime.sleep(1.2)\nprint('done')")
    bad = node.run(command="exit 4")
    after = scrape(metrics.url)

    assert value(after, "hn_redis_up") == 1
    exited = value(after, "hn_jobs_by_reason_total", reason="exit_code")
    assert exited == value(before, "hn_jobs_by_reason_total", reason="exit_code") + 1
    assert bad["reason"] == "exit_code"
    for status in ("completed", "failed"):
        assert value(after, "hn_jobs_total", status=status) == value(before, "hn_jobs_total", status=status) + 1
        grew = value(after, "hn_job_duration_seconds_count", status=status)
        assert grew == value(before, "hn_job_duration_seconds_count", status=status) + 1
    assert value(after, "hn_job_duration_seconds_sum", status="completed") == pytest.approx(
        value(before, "hn_job_duration_seconds_sum", status="completed") + ok["durationMs"] / 1000, abs=1e-6
    )
    # 1.2 s and more: above the 1 s bucket, within the 5 s one.
    assert value(after, "hn_job_duration_seconds_bucket", status="completed", le="1.0") == value(
        before, "hn_job_duration_seconds_bucket", status="completed", le="1.0"
    )
    assert value(after, "hn_job_duration_seconds_bucket", status="completed", le="5.0") == value(
        before, "hn_job_duration_seconds_bucket", status="completed", le="5.0"
    ) + (1 if ok["durationMs"] <= 5000 else 0)
    assert bad["status"] == "failed"
    assert value(after, "hn_workers_alive") == 1
    assert value(after, "hn_queue_ready", queue=CPU_QUEUE) == 0
    # The worker acknowledges its message just after it stored the result the backend already has.
    wait_for(lambda: value(scrape(metrics.url), "hn_queue_in_flight", queue=CPU_QUEUE) == 0, timeout=10)
    assert value(after, "hn_jobs_running") == 0 and value(after, "hn_jobs_queued") == 0
    assert value(after, "hn_bridge_heartbeat_age_seconds") < 10
    assert ("hn_outbox_size", ()) in after and ("hn_reconnects_total", ()) in after


def test_metrics_still_answer_when_redis_is_down() -> None:
    settings = Settings.from_env(
        {
            "HN_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            "HN_SIMULATE_GPUS": "2xRTX4090:24576",
            "HN_METRICS_PORT": str(free_port()),
        }
    )
    server = start_metrics_server(settings)
    assert server is not None
    try:
        samples = scrape(server.url)
    finally:
        server.close()

    assert value(samples, "hn_redis_up") == 0
    assert not any(name == "hn_jobs_total" for name, _ in samples)
    gpus = {dict(labels)["index"]: v for (name, labels), v in samples.items() if name == "hn_gpu_memory_total_bytes"}
    assert gpus == {"0": 24576 << 20, "1": 24576 << 20}


def test_metrics_port_0_serves_nothing() -> None:
    assert start_metrics_server(Settings.from_env({"HN_METRICS_PORT": "0"})) is None


def test_metrics_show_a_refused_token_and_the_results_the_backend_rejected(node: Node, metrics: MetricsServer) -> None:
    before = scrape(metrics.url)
    with Store.from_url(node.redis_server.url) as store:
        store.node.refused("Token already used", 1)  # as the bridge writes them
        store.node.count("results_rejected")
        try:
            refused = scrape(metrics.url)
        finally:
            store.node.clear_refusal()
    after = scrape(metrics.url)

    assert (value(before, "hn_bridge_token_refused"), value(refused, "hn_bridge_token_refused")) == (0, 1)
    assert value(after, "hn_bridge_token_refused") == 0
    assert value(refused, "hn_results_rejected_total") == value(before, "hn_results_rejected_total") + 1
