"""Is this node working? ``check`` (and the container HEALTHCHECK) looks at the running node through Redis:
the bridge registered and heartbeating, Redis and Docker answering, a live worker on every slot, and
no job recorded as running that no live worker holds.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hypernode_host.core.clock import now_ms
from hypernode_host.core.messages import plain
from hypernode_host.core.slots import SlotState
from hypernode_host.errors import ContainerError, GpuError
from hypernode_host.gpu.inventory import plan_node_slots
from hypernode_host.logs import redact
from hypernode_host.ops.findings import Finding, Level
from hypernode_host.settings import Settings
from hypernode_host.state import RedisError, Store, holders, redis_url
from hypernode_host.state.connect import own_redis_url
from hypernode_host.state.records import NodeRecord, Registration

if TYPE_CHECKING:  # docker-py is imported only by the checks that talk to the engine
    from hypernode_host.tasks.containers import DockerRuntime

DOCKER_SOCKET = Path("/var/run/docker.sock")
HEARTBEAT_GRACE_BEATS = 3  # a bridge is stale after this many missed heartbeats
REDIS_TIMEOUT_S = 3.0  # an operator's command must answer even when Redis does not


def shown_url(settings: Settings) -> str:
    return redact(redis_url(settings))


# check --------------------------------------------------------------------------------------


def check_node(
    settings: Settings,
    *,
    bridge: bool = True,
    slots: Sequence[int] | None = None,
    docker: bool = True,
    store: Store | None = None,
) -> list[Finding]:
    """One finding per part: Redis, then (as asked) the bridge, Docker and the worker of each slot.

    ``slots`` None means every slot of this node, an empty list none. Nothing but Redis is judged
    when Redis is down.
    """
    own = store is None
    store = store or Store.open(settings, timeout_s=REDIS_TIMEOUT_S)
    try:
        try:
            store.ping()
        except RedisError as exc:
            return [Finding("redis", Level.FAIL, f"no answer from {shown_url(settings)}: {exc}", redis_fix(settings))]
        findings = [Finding("redis", Level.OK, f"answers at {shown_url(settings)}")]
        if bridge:
            findings.append(check_bridge(store.node.get(), settings, now_ms()))
        if docker:
            from hypernode_host.tasks.containers import DockerRuntime

            findings.append(check_docker(DockerRuntime(), _registered(settings, store).values()))
        if slots is None or slots:
            findings += check_workers(settings, store, slots)
        if slots is None:
            findings.append(check_jobs(store))
        return findings
    finally:
        if own:
            store.close()


def redis_fix(settings: Settings) -> str:
    """What to do when Redis does not answer: without HN_REDIS_URL it is the one `up` runs, if it ever ran."""
    if not settings.own_redis:
        return "start Redis"
    if own_redis_url(settings.state_dir) is None:  # `up` wrote no URL in the state directory
        return "HN_REDIS_URL is unset and `up` has not run here: run `up`, or set HN_REDIS_URL"
    return "the node's own Redis runs while `hypernode-host up` does: start it"


def check_bridge(node: NodeRecord, settings: Settings, now: int) -> Finding:
    """Not refused by the backend, registered, and heartbeating within HEARTBEAT_GRACE_BEATS intervals."""
    if node.refused:  # the backend's text: escaped, it cannot restyle or forge the operator's lines
        detail = f"token refused by the backend: {plain(node.refused, 300)}"
        return Finding("bridge", Level.FAIL, detail, token_fix(settings))
    if not node.node_id:
        return Finding("bridge", Level.FAIL, "never registered with the backend", "start the bridge; see its log")
    if not node.heartbeat_at:
        return Finding("bridge", Level.FAIL, f"registered as {node.node_id} but no heartbeat yet")
    age = (now - node.heartbeat_at) / 1000
    grace = HEARTBEAT_GRACE_BEATS * settings.heartbeat_interval + 1
    if age > grace:
        detail = f"last heartbeat {age:.0f} s ago (limit {grace:.0f} s): the bridge is down or disconnected"
        return Finding("bridge", Level.FAIL, detail, "see the bridge's log")
    return Finding("bridge", Level.OK, f"node {node.node_id}, heartbeat {age:.1f} s ago")


def token_fix(settings: Settings) -> str:
    """What to do when the backend refuses the token: the node keeps running and registers with a new one."""
    if settings.node_token_file is not None:
        return (
            f"write a new token from the Hypernode dashboard to {settings.node_token_file}: "
            "the bridge registers with it within a second (or at once on SIGHUP); jobs and results are kept"
        )
    return (
        "get a new token from the Hypernode dashboard and restart the node with it in HN_NODE_TOKEN, or put it "
        "in a file named by HN_NODE_TOKEN_FILE, which the bridge reads again without a restart"
    )


def check_docker(runtime: DockerRuntime, workers: Iterable[Registration] = ()) -> Finding:
    """The engine answers us; or, where we have no way to it (compose's cli service has no socket), it
    answered every worker of this node at its last check (within its registration's TTL)."""
    try:
        version = runtime.version()
        problem = "the Docker engine does not answer"
    except ContainerError as exc:
        version, problem = "unknown", str(exc)
    if version != "unknown":
        return Finding("docker", Level.OK, f"engine {version} answers")
    seen = [worker.docker for worker in workers]
    if seen and all(seen):
        return Finding("docker", Level.OK, f"engine {', '.join(sorted(set(seen)))} answers the workers (not us)")
    if seen:
        problem += f"; {seen.count('')} of {len(seen)} workers cannot reach it either"
    return Finding("docker", Level.FAIL, problem, docker_fix())


def docker_fix() -> str:
    """What to do when the engine does not answer: the socket is missing, not ours, or dockerd is down."""
    host = os.environ.get("DOCKER_HOST", "")
    if host and not host.startswith("unix://"):
        return f"check that DOCKER_HOST={host} is reachable"
    path = Path(host.removeprefix("unix://")) if host else DOCKER_SOCKET
    if not path.exists():
        return f"mount the Docker socket: -v {path}:{path}"
    if not os.access(path, os.R_OK | os.W_OK):
        gid = path.stat().st_gid
        return f"give this user the socket's group: docker run --group-add {gid} (compose: group_add: ['{gid}'])"
    return "start the Docker engine (systemctl start docker)"


def check_workers(settings: Settings, store: Store, only: Sequence[int] | None) -> list[Finding]:
    """A live registration, of a process that still exists and serves the right queue, for each slot."""
    try:
        planned = plan_node_slots(settings)
    except GpuError as exc:
        return [Finding("workers", Level.FAIL, f"cannot list this node's slots: {exc}")]
    by_id = {s.id: s for s in planned}
    registered = _registered(settings, store)
    findings = []
    for slot_id in only if only is not None else sorted(by_id):
        name = f"worker {by_id[slot_id].describe()}" if slot_id in by_id else f"worker slot {slot_id}"
        if slot_id not in by_id:
            findings.append(Finding(name, Level.FAIL, f"this node has slots 0..{len(planned) - 1}"))
            continue
        worker = registered.get(slot_id)
        if worker is None:
            findings.append(Finding(name, Level.FAIL, "not registered: not running, or stopped", "start it"))
        elif holders.exited(worker.pidns, worker.pid):  # killed before its registration's TTL ran out
            detail = f"its process {worker.pid} has exited; the registration is stale"
            findings.append(Finding(name, Level.FAIL, detail, "restart it"))
        elif worker.state is SlotState.BUSY:  # not a fault: it serves again once the GPU is free
            findings.append(Finding(name, Level.WARN, f"busy, takes no jobs: {worker.health}"))
        elif not worker.serving:
            detail, _, fix = worker.health.partition("; fix: ")
            findings.append(Finding(name, Level.FAIL, f"takes no jobs ({worker.state.value}): {detail}", fix))
        elif worker.slot.queue != by_id[slot_id].queue:
            detail = f"serves {worker.slot.queue}, expected {by_id[slot_id].queue}: its settings differ from these"
            findings.append(Finding(name, Level.FAIL, detail, "give every part the same HN_* settings"))
        else:
            findings.append(Finding(name, Level.OK, f"alive (pid {worker.pid} on {worker.host})"))
    return findings


MAX_NAMED_JOBS = 5  # of the jobs a finding names; the rest are counted


def check_jobs(store: Store) -> Finding:
    """Every job recorded as running is held by a live worker (of any host sharing this Redis).

    A running record with no live holder is a job nobody will finish until that slot's worker starts
    again (it resumes its slot's jobs) or the reconciler ends it: it would otherwise wait, silently.
    """
    live = {(r.host, r.slot.id) for r in store.registry.all() if not holders.exited(r.pidns, r.pid)}
    running = store.jobs.running()
    orphans = []
    for job_id in running:
        record = store.jobs.get(job_id)
        if record is None or record.done or record.host is None or record.slot is None:
            continue  # finished meanwhile, or not claimed yet
        if (record.host, record.slot) not in live:
            orphans.append(f"{job_id} ({record.host} slot {record.slot})")
    if not orphans:
        return Finding("jobs", Level.OK, f"{len(running)} running, each held by a live worker")
    named = ", ".join(orphans[:MAX_NAMED_JOBS]) + (
        f" and {len(orphans) - MAX_NAMED_JOBS} more" if len(orphans) > MAX_NAMED_JOBS else ""
    )
    detail = f"{len(orphans)} recorded as running with no live worker holding them: {named}"
    return Finding(
        "jobs", Level.FAIL, detail, "start the worker of their slot: it resumes them (`hypernode-host workers`)"
    )


def _registered(settings: Settings, store: Store) -> dict[int, Registration]:
    """This node's live worker registrations, by slot."""
    return {r.slot.id: r for r in store.registry.all() if r.host == settings.node_name}
