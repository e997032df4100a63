"""Progress markers in a job's output: whole lines only, bounded, the latest wins."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hypernode_host.core.progress import MAX_LINE_BYTES, Progress, ProgressScanner, parse_line


def test_a_marker_line_reports_percent_and_message() -> None:
    assert parse_line("HN-PROGRESS 42 epoch 3 of 7") == Progress(42.0, "epoch 3 of 7")
    assert parse_line("HN-PROGRESS 99.5%") == Progress(99.5, "")
    for not_one in (
        "HN-PROGRESS",
        "HN-PROGRESS 101",
        "HN-PROGRESS -1",
        "HN-PROGRESS x",
        " HN-PROGRESS 5",
        "HN-PROGRESSS 5",
    ):
        assert parse_line(not_one) is None, not_one


def test_markers_are_found_across_chunks_and_the_latest_wins() -> None:
    scanner = ProgressScanner()
    for chunk in (b"starting\nHN-PRO", b"GRESS 10 warm", b"up\nnoise\nHN-PROGRESS 55 half\r\n", b"HN-PROGRESS 70"):
        scanner.feed(chunk)
    assert scanner.latest == Progress(55.0, "half")  # the last line has no end yet
    scanner.feed(b"\n")
    assert scanner.latest == Progress(70.0, "")


def test_a_line_too_long_is_never_a_marker() -> None:
    scanner = ProgressScanner()
    scanner.feed(b"HN-PROGRESS 50 " + b"x" * MAX_LINE_BYTES + b"\nHN-PROGRESS 60\n")
    assert scanner.latest == Progress(60.0, "")


@given(st.lists(st.binary(max_size=600), max_size=20))
def test_any_output_is_scanned_without_raising(chunks: list[bytes]) -> None:
    scanner = ProgressScanner()
    for chunk in chunks:
        scanner.feed(chunk)
    assert scanner.latest is None or 0 <= scanner.latest.percent <= 100
