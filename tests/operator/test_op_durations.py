"""The counters and duration histogram that store.jobs.finish keeps, atomically with the result, in a real Redis."""

from __future__ import annotations

import pytest

from hypernode_host.state import Store
from hypernode_host.state.stats import DURATION_BUCKETS_S


def finish(store: Store, job_id: str, status: str, duration_ms: int) -> bool:
    store.jobs.record(job_id, {"id": job_id, "command": "true"}, "hn-cpu")
    return store.jobs.finish(job_id, {"id": job_id, "status": status, "durationMs": duration_ms})


def test_each_finished_job_lands_in_one_bucket_per_status(store: Store) -> None:
    assert finish(store, "a", "completed", 500)
    assert finish(store, "b", "completed", 90_000)  # 90 s: in the 120 s bucket
    assert finish(store, "c", "completed", 2 * 3600 * 1000)  # exactly 2 h: in the 7200 s bucket (le)
    assert finish(store, "d", "timeout", 3 * 86400 * 1000)  # past the last bound: only +Inf
    assert not finish(store, "a", "completed", 500)  # a result is stored once, and counted once

    durations = store.stats.durations()
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
    assert store.stats.status_counts() == {"completed": 3, "timeout": 1}
    assert store.stats.counters() == {"completed": 3, "failed": 1}  # the heartbeat's counters are unchanged
