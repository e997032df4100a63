"""The log throttle: a burst of lines, then a count of those left out."""

from __future__ import annotations

from hypernode_host.bridge.throttle import Throttle


def test_throttle_logs_a_burst_then_counts_what_it_left_out() -> None:
    throttle = Throttle(burst=2, window_s=10)
    assert [throttle.admit(t) for t in (0, 1, 2, 3, 4)] == [0, 0, None, None, None]
    assert throttle.admit(10.5) == 3  # a new window: the first line says how many were left out
    assert throttle.admit(11) == 0
    assert throttle.admit(12) is None
    assert throttle.pending() == 1 and throttle.pending() == 0
