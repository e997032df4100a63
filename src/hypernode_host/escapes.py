"""Values from a job or a peer, made safe to show: for a terminal, a table cell, a JSON line or a log line.

A job id, a script, a backend's node id or error text may hold terminal escape sequences (colours,
window titles, OSC 52 clipboard writes, links, cursor moves that paint "completed" over a failed
line), line breaks that forge a log line, or a lone surrogate that no UTF-8 stream can encode. Every
such character is written as a visible escape instead (``\\x1b``, ``\\n``, ``\\ud800``), so the
operator sees exactly what was sent and the value can never act on the terminal or the log.

Escaped: C0 controls and DEL, C1 controls (0x80-0x9f: 0x9b alone starts a CSI sequence on many
terminals), lone surrogates, the Unicode line and paragraph separators and the bidirectional
overrides and isolates (which reorder what a terminal shows). Everything else, any other non-ASCII
character included, is shown as it is. Pure: no I/O.
"""

from __future__ import annotations

import re

# Newline and tab are kept only where a value is shown on several lines (a log tail).
_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069\t]")
_UNSAFE_IN_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shown(value: object, limit: int | None = None) -> str:
    """``value`` on one line with every unsafe character escaped (newline and tab too); cut to ``limit``
    characters of the value first, when given. Total: any object, any string."""
    text = value if isinstance(value, str) else _str(value)
    if limit is not None and len(text) > limit:
        text = text[:limit] + "..."
    return _UNSAFE.sub(_escape, text)


def shown_text(value: object) -> str:
    """``value`` as text of several lines (a log tail): newline and tab kept, every other unsafe character
    escaped (a carriage return too: it moves the cursor back over what the line showed)."""
    text = value if isinstance(value, str) else _str(value)
    return _UNSAFE_IN_TEXT.sub(_escape, text)


def is_clean(text: str, *, multiline: bool = False) -> bool:
    """True when ``text`` holds no character ``shown`` (``shown_text`` with ``multiline``) would escape."""
    return (_UNSAFE_IN_TEXT if multiline else _UNSAFE).search(text) is None


def _str(value: object) -> str:
    try:
        return str(value)
    except Exception:  # a hostile __str__ cannot stop a value being shown
        return object.__repr__(value)
