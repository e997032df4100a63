"""The counters and duration histogram that Store.finish_job keeps, atomically with the result, in a real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from hypernode_host.redisproc import RedisProcess
from hypernode_host.store import DURATION_BUCKETS_S, Store


@pytest.fixture
def store(redis_server: RedisProcess) -> Iterator[Store]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield Store(client)
    client.close()


def finish(store: Store, job_id: str, status: str, duration_ms: int) -> bool:
    store.record_job(job_id, {"id": job_id, "command": "true"}, "hn-cpu")
    return store.finish_job(job_id, {"id": job_id, "status": status, "durationMs": duration_ms})


def test_each_finished_job_lands_in_one_bucket_per_status(store: Store) -> None:
    assert finish(store, "a", "completed", 500)
    assert finish(store, "b", "completed", 90_000)  # 90 s: in the 120 s bucket
    assert finish(store, "c", "completed", 2 * 3600 * 1000)  # exactly 2 h: in the 7200 s bucket (le)
    assert finish(store, "d", "timeout", 3 * 86400 * 1000)  # past the last bound: only +Inf
    assert not finish(store, "a", "completed", 500)  # a result is stored once, and counted once

    durations = store.durations()
    completed = dict(durations["completed"].buckets)
    assert completed["1"] == 1 and completed["60"] == 1 and completed["120"] == 2
    assert completed["3600"] == 2 and completed["7200"] == 3 and completed["+Inf"] == 3
    assert durations["completed"].count == 3
    assert durations["completed"].sum_s == pytest.approx(0.5 + 90 + 7200)
    timeout = dict(durations["timeout"].buckets)
    assert timeout["86400"] == 0 and timeout["+Inf"] == 1
    assert [bound for bound, _ in durations["timeout"].buckets] == [format(b, "g") for b in DURATION_BUCKETS_S] + [
        "+Inf"
    ]
    assert store.status_counts() == {"completed": 3, "timeout": 1}
    assert store.counters() == {"completed": 3, "failed": 1}  # the heartbeat's counters are unchanged
