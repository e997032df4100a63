"""A secret the process learns after logging is set up (a token read from HN_NODE_TOKEN_FILE) is masked too."""

from __future__ import annotations

import logging

from hypernode_host import logs


def _line(formatter: logging.Formatter, message: str) -> str:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, message, None, None)
    logs.ContextFilter().filter(record)  # as the handler does before formatting
    return formatter.format(record)


def test_a_secret_learned_later_is_masked_by_every_formatter() -> None:
    text, json_lines = logs.RedactingFormatter([]), logs.JsonFormatter([])
    logs.mask("tok-learned-0123456789")

    for formatter in (text, json_lines):
        line = _line(formatter, "the backend said: no such node tok-learned-0123456789")
        assert "tok-learned" not in line and logs.MASK in line


def test_a_secret_too_short_to_be_told_from_words_is_not_learned() -> None:
    logs.mask("abc")
    assert _line(logs.RedactingFormatter([]), "abc is fine").endswith("abc is fine")
