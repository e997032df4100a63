"""Uptime, events by kind, the notifier's deliveries and the slots that take no jobs, as the metrics (scraped
over HTTP) and `top` show them, from a real Redis."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from hypernode_host.core.clock import now_ms
from hypernode_host.core.events import Kind
from hypernode_host.core.slots import GpuInfo, Slot
from hypernode_host.node.redis_server import RedisProcess, free_port
from hypernode_host.ops.metrics import start_metrics_server
from hypernode_host.settings import Settings
from hypernode_host.state import Store
from hypernode_host.state.records import Registration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def seed(store: Store) -> None:
    """A node that has run a while: registered for an hour of the last two, a lost GPU, events."""
    now = now_ms()
    store.uptime.seen(now - 2 * 3_600_000)
    store.uptime.credit(now - 3_600_000, now)
    store.node.registered("node-1", now)
    store.node.heartbeat(now)
    gpu = GpuInfo(index=0, uuid="GPU-m-0", name="RTX4090", memory_total_mb=24576, memory_free_mb=24576)
    store.registry.register(Registration("rig", Slot(id=0, gpus=(gpu,)), healthy=False, health="lost"), 60, now)
    store.events.emit(Kind.DISK_FLOOR, {"path": "/var/lib/docker", "free_bytes": 1}, node="rig")
    store.events.emit(Kind.DISK_FLOOR, {"path": "/var/lib/docker", "free_bytes": 1}, node="rig")
    store.events.advance("r", "1-0", "dropped")


def metric_samples(redis_server: RedisProcess) -> Samples:
    settings = Settings.from_env(
        {"HN_REDIS_URL": redis_server.url, "HN_CPU_SLOTS": "1", "HN_METRICS_PORT": str(free_port())}
    )
    server = start_metrics_server(settings)
    assert server is not None
    try:
        return scrape(server.url)
    finally:
        server.close()


def test_uptime_events_deliveries_and_unhealthy_slots_are_metrics(redis_server: RedisProcess, store: Store) -> None:
    seed(store)
    samples = metric_samples(redis_server)

    day = samples[("hn_uptime_ratio", (("window", "24h"),))]
    assert 0.49 < day < 0.51  # an hour up of the two since it was first seen
    assert samples[("hn_uptime_seconds_total", ())] == 3600
    assert samples[("hn_events_total", (("event", "disk.floor"),))] == 2
    assert samples[("hn_events_total", (("event", "node.offline"),))] == 0  # every kind, from zero
    assert samples[("hn_notify_deliveries_total", (("outcome", "dropped"),))] == 1
    assert samples[("hn_slots_unhealthy", ())] == 1


def test_top_shows_the_uptime_of_each_window(redis_server: RedisProcess, store: Store, tmp_path: Path) -> None:
    seed(store)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HN_")}
    env |= {"HN_REDIS_URL": redis_server.url, "HN_CPU_SLOTS": "1", "HN_STATE_DIR": str(tmp_path), "COLUMNS": "250"}

    def top(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "hypernode_host", "top", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    line = " ".join(top("--once").split())  # however the terminal wraps it
    assert re.search(r"uptime 24h (49\.9\d|50\.0\d)%, 7d \d+\.\d\d%, 30d \d+\.\d\d%", line), line
    node = json.loads(top("--json"))["node"]
    assert 0.49 < node["uptime"]["24h"] < 0.51 and node["uptime_total_s"] == 3600
