"""Offline verification (``hypernode-host verify``): the Oracle's checks on a result file, one line each.

The checks are the Oracle's own (oracle.verify_offline), so a result verified here is one the reference
backend would verify, less what only the backend can know (skipped, and said so). Every value from the
result is escaped before it is printed: a result is a peer's document, and a terminal must not obey it.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hypernode_host.backend.oracle import CHECK_NAMES, Verification, verify_offline
from hypernode_host.errors import HypernodeError

MAX_FILE_BYTES = 64 << 20  # a result frame is at most 2 MiB; a file far beyond that is not one
SHOWN_CHARS = 200


class UnreadableResult(HypernodeError):
    """A result or job file that is not a JSON object (or cannot be read)."""


def printable(value: object, limit: int = SHOWN_CHARS) -> str:
    """``value`` as text safe for a terminal: control, format and separator characters escaped, bounded.

    The agent's own escaping (escapes.py) is not the reference backend's to import: a foreign peer.
    """
    text = value if isinstance(value, str) else repr(value)
    out = []
    for char in text[:limit]:
        if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            out.append(char.encode("unicode_escape", errors="backslashreplace").decode("ascii"))
        else:
            out.append(char)
    return "".join(out) + ("..." if len(text) > limit else "")


def load_json_object(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in ``path``; UnreadableResult naming ``what`` when it is not one."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise UnreadableResult(f"{what} {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise UnreadableResult(f"{what} {path}: larger than {MAX_FILE_BYTES >> 20} MiB")
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise UnreadableResult(f"{what} {path}: not JSON ({printable(str(exc), 80)})") from None
    if not isinstance(value, dict):
        raise UnreadableResult(f"{what} {path}: not a JSON object")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def result_of(document: Mapping[str, Any]) -> Mapping[str, Any]:
    """The job_result in ``document``: the document itself, or its ``result`` (``submit --json``'s output)."""
    inner = document.get("result")
    if "executionHash" not in document and isinstance(inner, dict):
        return inner
    return document


def verify_file(
    result_path: Path, job_path: Path | None = None, node_key: str | None = None
) -> tuple[Mapping[str, Any], Verification]:
    """The result in ``result_path`` and the Oracle's verdict on it (with the job and key when given)."""
    result = result_of(load_json_object(result_path, "result"))
    job = load_json_object(job_path, "job") if job_path is not None else None
    return result, verify_offline(result, job=job, node_public_key=node_key)


def report(result: Mapping[str, Any], verification: Verification) -> list[str]:
    """A line naming the result, then one per check in the Oracle's order: ``PASS``, ``FAIL`` with its
    reason, or ``skipped`` with what it needs; then the verdict."""
    lines = [
        f"job {printable(result.get('id'))} on node {printable(result.get('nodeId'))}: "
        f"status {printable(result.get('status'))}, reason {printable(result.get('reason'))}"
    ]
    for name in CHECK_NAMES:
        if name in verification.skipped:
            lines.append(f"skipped {name}: {printable(verification.skipped[name])}")
        elif verification.checks.get(name):
            lines.append(f"PASS    {name}")
        else:
            lines.append(f"FAIL    {name}: {printable(verification.reasons.get(name, 'failed'))}")
    failed = len(verification.failed)
    ran, skipped = len(verification.checks), len(verification.skipped)
    summary = f"{ran - failed} passed, {failed} failed, {skipped} skipped"
    lines.append(("verified: " if verification.verified else "NOT verified: ") + summary)
    return lines
