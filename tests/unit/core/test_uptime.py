"""Uptime, pure: registered time split by hour, and its share of each window."""

from __future__ import annotations

import pytest

from hypernode_host.core.uptime import HOUR_MS, split_by_hour, uptime, uptimes

DAY_MS = 24 * HOUR_MS
NOW = 1_700_000_000_000 - 1_700_000_000_000 % HOUR_MS + HOUR_MS // 2  # half past an hour


def test_a_stretch_is_split_at_each_hour() -> None:
    start = 5 * HOUR_MS - 1000
    assert split_by_hour(start, 6 * HOUR_MS + 500) == {4 * HOUR_MS: 1000, 5 * HOUR_MS: HOUR_MS, 6 * HOUR_MS: 500}
    assert split_by_hour(10, 10) == {}


def test_a_node_up_all_day_but_two_hours_is_at_11_of_12() -> None:
    first = NOW - 30 * DAY_MS
    hours = split_by_hour(first, NOW - 3 * HOUR_MS) | split_by_hour(NOW - HOUR_MS, NOW)
    day = uptime(hours, first, NOW, "24h")
    assert day.up_s == pytest.approx(22 * 3600) and day.observed_s == 86_400
    assert day.ratio == pytest.approx(22 / 24)


def test_a_new_node_is_not_down_before_it_existed() -> None:
    first = NOW - 2 * HOUR_MS
    week = uptime(split_by_hour(first, NOW), first, NOW, "7d")
    assert week.observed_s == 2 * 3600 and week.ratio == pytest.approx(1.0)
    assert uptime({}, None, NOW, "30d").ratio is None  # never ran
    hour = NOW - HOUR_MS // 2  # the hour now, half gone: a quarter hour up in it is half of what was observed
    assert uptime({hour: HOUR_MS // 4}, None, NOW, "30d").ratio == pytest.approx(0.5)
    assert uptime({}, NOW, NOW, "24h").ratio is None  # nothing observed yet


def test_the_hour_at_the_window_start_counts_for_its_part_inside() -> None:
    start = NOW - DAY_MS
    hour = start - start % HOUR_MS
    inside = (hour + HOUR_MS - start) / HOUR_MS
    day = uptime({hour: HOUR_MS}, None, NOW, "24h")
    assert day.up_s == pytest.approx(3600 * inside)
    assert [u.window for u in uptimes({}, None, NOW)] == ["24h", "7d", "30d"]
