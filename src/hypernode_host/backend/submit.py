"""Submitting a job to the reference backend, as ``hypernode-host submit`` does."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from hypernode_host.core.messages import MAX_FRAME_BYTES
from hypernode_host.errors import BackendUnreachable, SubmitRefused

log = logging.getLogger(__name__)

# How long the backend has to accept the connection and answer the submit itself (not the job's run).
ANSWER_TIMEOUT_S = 10.0


def build_job(
    *,
    script: str | None = None,
    command: str | None = None,
    image: str | None = None,
    timeout: float | None = None,
    memory: str | None = None,
    cpus: float | None = None,
    gpu: bool | None = None,
    gpu_count: int | None = None,
    estimated_time: float | None = None,
    job_id: str | None = None,
) -> dict[str, Any]:
    """The job's fields with upstream's names, leaving out what was not given.

    ``script`` is the Python source itself (not a path). No further validation: the node is the one that
    admits or refuses a job, and tests need to be able to send it bad ones.
    """
    if (script is None) == (command is None):
        raise ValueError("give exactly one of script or command")
    fields = {
        "id": job_id,
        "script": script,
        "command": command,
        "image": image,
        "timeout": timeout,
        "memoryLimit": memory,
        "cpuLimit": cpus,
        "gpuRequired": gpu,
        "gpuCount": gpu_count,
        "estimatedTime": estimated_time,
    }
    return {name: value for name, value in fields.items() if value is not None}


async def submit_job(url: str, job: dict[str, Any], *, wait: bool, wait_timeout: float) -> dict[str, Any]:
    """Submit ``job``; ``{"id", "result", "verification"}``, the last two None unless ``wait``.

    Raises TimeoutError when no result came within ``wait_timeout`` seconds, SubmitRefused when the
    backend refuses the job, BackendUnreachable when it cannot be reached or drops the connection.
    """
    try:
        connection = await connect(url, open_timeout=ANSWER_TIMEOUT_S, max_size=MAX_FRAME_BYTES)
    except (InvalidURI, InvalidHandshake, OSError) as exc:  # OSError includes the handshake's TimeoutError
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise BackendUnreachable(f"cannot connect to {url}: {reason}") from None
    async with connection:
        try:
            return await _submit_on(connection, job, wait=wait, wait_timeout=wait_timeout)
        except ConnectionClosed:
            raise BackendUnreachable(f"{url} closed the connection before answering") from None


async def _submit_on(
    connection: ClientConnection, job: dict[str, Any], *, wait: bool, wait_timeout: float
) -> dict[str, Any]:
    await connection.send(json.dumps({"type": "submit", "job": job, "wait": wait}))
    try:
        submitted = await asyncio.wait_for(_expect(connection, "submitted", None), ANSWER_TIMEOUT_S)
    except TimeoutError:
        raise BackendUnreachable(f"the backend did not answer the submit within {ANSWER_TIMEOUT_S:g} s") from None
    job_id = str(submitted["id"])
    log.info("job %s submitted", job_id)
    if not wait:
        return {"id": job_id, "result": None, "verification": None}
    try:
        reply = await asyncio.wait_for(_expect(connection, "result", job_id), wait_timeout)
    except TimeoutError:
        raise TimeoutError(f"no result for job {job_id} within {wait_timeout:g} s") from None
    return {"id": job_id, "result": reply.get("result"), "verification": reply.get("verification")}


async def _expect(connection: ClientConnection, kind: str, job_id: str | None) -> dict[str, Any]:
    """The next frame of type ``kind`` (for ``job_id`` if given); SubmitRefused on an error frame."""
    while True:
        frame = await connection.recv()
        try:
            value = json.loads(frame)
        except ValueError:
            continue  # not ours to judge: a backend extension we do not know
        if not isinstance(value, dict):
            continue
        if value.get("type") == "error":
            raise SubmitRefused(str(value.get("message", "the backend refused the job"))[:500])
        if value.get("type") == kind and (job_id is None or value.get("id") == job_id):
            return value
