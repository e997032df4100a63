"""The chaos run of bench/chaos.py, bounded: 30 jobs over two slots and every kind of fault at least once
(SIGKILL a worker and the bridge, Redis restarted with AOF, every Redis client killed, the WebSocket cut,
the reference backend restarted, a Docker engine of the run's own restarted). Each job ends with exactly
one result, credited once, the outbox drains and no container is left."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from chaos import KINDS, run, table

pytestmark = pytest.mark.timeout(900)  # a few minutes on a busy machine: an engine is started and restarted
JOBS = 30


def test_every_job_ends_with_exactly_one_result_through_every_kind_of_fault() -> None:
    report = run(JOBS, seed=14, engine=True, every_s=(2.0, 4.0))

    assert report.ok, table(report)
    assert set(report.faults) == set(KINDS), table(report)
    assert report.results_per_job == {1: JOBS} and report.credited_once == JOBS, table(report)
    assert report.leftover_containers == 0
