"""escapes.py: what a job's or a peer's value looks like once it is safe for a terminal or a log line."""

from __future__ import annotations

import io
import json
import logging
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from hypernode_host.escapes import is_clean, shown, shown_text
from hypernode_host.logs import ContextFilter, JsonFormatter, RedactingFormatter

EXAMPLES = int(os.environ.get("HN_FUZZ_EXAMPLES", "100"))  # `make fuzz` runs many more
LOTS = settings(max_examples=EXAMPLES, deadline=None)
# Any code point, lone surrogates included, and often the ones that matter here.
ANY_TEXT = st.text(
    st.characters(exclude_categories=()) | st.sampled_from(list("\x00\x1b\x07\n\r\t\x85\x9b\u2028\u202e\ud800\udfff"))
)

# What a job or a backend can put in a value to act on the operator's terminal.
TERMINAL_TRICKS = [
    "\x1b[31mred\x1b[0m",  # colours
    "\x1b]0;owned\x07",  # window title
    "\x1b]52;c;ZXZpbA==\x07",  # OSC 52: write the clipboard
    "\x1b]8;;https://evil.example\x1b\\link\x1b]8;;\x1b\\",  # a hyperlink
    "failed\x1b[1A\x1b[2Kcompleted",  # cursor up and erase: "completed" painted over a failed line
    "\x1b[2J\x1b[H",  # clear the screen
    "\x9b31m",  # a C1 CSI: the same, in one byte
    "abc\rcompleted",  # carriage return: overwrite the line
    "\u202eevil",  # a bidi override reorders what the terminal shows
]


def test_terminal_escapes_are_shown_escaped_and_act_on_nothing() -> None:
    for trick in TERMINAL_TRICKS:
        text = shown(trick)
        assert is_clean(text) and is_clean(shown_text(trick), multiline=True)
    assert shown("\x1b[31mred") == "\\x1b[31mred"
    assert shown("\x9b") == "\\x9b"
    assert shown("a\nb\tc") == "a\\nb\\tc"
    assert shown_text("a\nb\tc\rd\x1b") == "a\nb\tc\\rd\\x1b"  # a log tail keeps its lines and tabs


def test_lone_surrogates_are_shown_escaped_and_encode() -> None:
    assert shown("x\ud800y") == "x\\ud800y"
    assert shown_text("\udfff").encode("utf-8") == b"\\udfff"


def test_ordinary_text_is_left_as_it_is() -> None:
    for text in ("completed ✅", "naïve Zürich 東京", "C:\\path\\x1b", "100% done"):
        assert shown(text) == text


def test_a_value_is_cut_before_it_is_escaped_and_any_object_is_shown() -> None:
    assert shown("x" * 50, 10) == "x" * 10 + "..."
    assert shown(None) == "None" and shown(42) == "42"


@LOTS
@given(ANY_TEXT)
def test_any_text_is_shown_clean_and_encodable(text: str) -> None:
    for result, multiline in ((shown(text), False), (shown_text(text), True)):
        assert is_clean(result, multiline=multiline)
        result.encode("utf-8")  # never raises, lone surrogates included


def _record(message: str, *args: object, exc_info: object = None) -> logging.LogRecord:
    record = logging.LogRecord("hypernode_host.test", logging.WARNING, __file__, 1, message, args, exc_info)  # type: ignore[arg-type]
    ContextFilter().filter(record)  # as the CLI's handler does
    return record


@LOTS
@given(ANY_TEXT)
def test_no_value_can_forge_a_log_line_or_reach_the_terminal(value: str) -> None:
    line = RedactingFormatter([]).format(_record("cancel ignored: job %s", value))
    assert "\n" not in line and is_clean(line)
    entry = JsonFormatter([]).format(_record("frame refused: %s", value))
    assert is_clean(entry) and "\n" not in entry
    json.loads(entry)  # still one JSON object
    io.TextIOWrapper(io.BytesIO(), encoding="utf-8").write(line + entry)  # a stderr would take both


def test_a_forged_log_line_stays_on_its_own_line() -> None:
    forged = "x\n2026-12-01T00:00:00.000Z INFO    hypernode_host.bridge.client: job x: completed"
    line = RedactingFormatter([]).format(_record("backend error: %s", forged))
    assert line.count("\n") == 0 and "\\n2026-12-01" in line


def test_a_traceback_keeps_its_lines_but_not_a_values_escapes() -> None:
    try:
        raise ValueError("bad \x1b[2J value")
    except ValueError:
        import sys

        record = _record("failed", exc_info=sys.exc_info())
    text = RedactingFormatter([]).format(record)
    assert "Traceback" in text and "\n" in text and "\x1b" not in text and "\\x1b[2J" in text
