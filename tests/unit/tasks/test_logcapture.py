"""Bounded head+tail capture of job output."""

from __future__ import annotations

import hashlib

from hypernode_host.tasks.logcapture import LogCapture


def test_small_output_is_kept_whole() -> None:
    capture = LogCapture(1000)
    capture.feed(b"hello\n")
    capture.feed(b"done\n")
    result = capture.result()
    assert result.text == "hello\ndone\n"
    assert not result.truncated and result.total_bytes == 11
    assert result.full_sha256 == hashlib.sha256(b"hello\ndone\n").hexdigest()


def test_large_output_keeps_head_and_tail_within_the_budget() -> None:
    capture = LogCapture(1000)
    everything = b"".join(f"line {i}\n".encode() for i in range(100_000))
    for start in range(0, len(everything), 4096):
        capture.feed(everything[start : start + 4096])
    result = capture.result()
    assert result.truncated
    assert len(result.text) <= 1000
    assert result.text.startswith("line 0\nline 1\n")
    assert result.text.endswith("line 99999\n")  # completion markers are printed last: the tail is kept
    assert "bytes of output cut here" in result.text
    assert result.total_bytes == len(everything)
    assert result.full_sha256 == hashlib.sha256(everything).hexdigest()


def test_memory_stays_bounded_whatever_the_job_prints() -> None:
    capture = LogCapture(300)
    chunk = b"x" * 65536
    for _ in range(2000):  # 128 MiB
        capture.feed(chunk)
    assert len(capture._head) + len(capture._tail) < 300 * 4 * 3 + len(chunk)
    assert capture.total == 2000 * 65536


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    capture = LogCapture(1000)
    capture.feed(b"ok \xff\xfe\x00 binary\n")
    result = capture.result()
    assert "\ufffd" in result.text and result.text.startswith("ok ")
    assert result.full_sha256 == hashlib.sha256(b"ok \xff\xfe\x00 binary\n").hexdigest()


def test_exactly_the_budget_is_not_cut() -> None:
    capture = LogCapture(256)
    capture.feed(b"a" * 256)
    assert capture.result().text == "a" * 256
    assert not capture.result().truncated


def test_multibyte_characters_split_across_chunks_and_cuts_stay_whole() -> None:
    text = "héllo wörld ✅ " * 2000  # 2-, 3-byte characters; fed in odd-sized chunks
    data = text.encode()
    capture = LogCapture(500)
    for start in range(0, len(data), 7):
        capture.feed(data[start : start + 7])
    result = capture.result()
    assert result.truncated and len(result.text) <= 500
    assert "\ufffd" not in result.text  # no character broken by a chunk or a cut
    head, _, tail = result.text.partition("\n[... hypernode: ")
    assert text.startswith(head)
    assert text.endswith(tail.split("cut here ...]\n", 1)[1])
    assert result.total_bytes == len(data)


def test_the_cut_marker_counts_the_bytes_left_out() -> None:
    capture = LogCapture(300)
    data = bytes(range(97, 123)) * 10_000  # ASCII: one byte per character
    capture.feed(data)
    result = capture.result()
    marker = result.text.split("[... hypernode: ", 1)[1]
    cut = int(marker.split(" bytes", 1)[0])
    kept = len(result.text) - len("\n[... hypernode:  bytes of output cut here ...]\n") - len(str(cut))
    assert cut + kept == len(data)


def test_nothing_written_is_empty_and_not_truncated() -> None:
    result = LogCapture(1000).result()
    assert result.text == "" and result.total_bytes == 0 and not result.truncated
    assert result.full_sha256 == hashlib.sha256(b"").hexdigest()


def test_only_invalid_bytes_never_raise() -> None:
    capture = LogCapture(256)
    for _ in range(1000):
        capture.feed(b"\xff\xfe\xc3")  # invalid and truncated sequences, repeated past the budget
    result = capture.result()
    assert result.truncated and len(result.text) <= 256
    result.text.encode("utf-8")  # valid text whatever came in
