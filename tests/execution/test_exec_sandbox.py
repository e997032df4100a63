"""The sandbox from inside: the project's seccomp profile in a job, and two nodes sharing one engine.

Two nodes (two Redis, two identities, two backends) run on the one Docker engine of the tests, as two
stacks on one machine would. The first also runs the seccomp probes.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import docker
import pytest
from execsupport import Node, running_node

from hypernode_host.tasks.containers import LABEL_NODE_ID, DockerRuntime
from support import TEST_IMAGE, wait_for

SECCOMP_PROBE = """
import ctypes, errno, json, multiprocessing, subprocess, threading
libc = ctypes.CDLL(None, use_errno=True)
NUMBERS = {"io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "ptrace": 101,
           "userfaultfd": 323, "bpf": 321, "keyctl": 250, "modify_ldt": 154, "getppid": 110}

def call(number):
    ctypes.set_errno(0)
    result = libc.syscall(number, 0, 0, 0, 0, 0)
    return "ok" if result >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))

report = {name: call(number) for name, number in NUMBERS.items()}
thread = threading.Thread(target=lambda: None)
thread.start()
thread.join()
with multiprocessing.Pool(2) as pool:
    report["pool"] = pool.map(abs, [-1, -2])
report["child"] = subprocess.run(["sh", "-c", "echo child"], capture_output=True, text=True).stdout.strip()
print(json.dumps(report, sort_keys=True))
"""


PINNED = f"127.0.0.1:1/hn/pinned-{secrets.token_hex(4)}"  # the job image, under a name pinned to its ID
WRONG = f"127.0.0.1:1/hn/wrong-{secrets.token_hex(4)}"  # the job image, under a name pinned to another


@pytest.fixture(scope="module")
def node(docker_runtime: DockerRuntime) -> Iterator[Node]:
    image_id = docker_runtime.image_id(TEST_IMAGE)
    assert image_id is not None
    client = docker.from_env()
    image = client.images.get(TEST_IMAGE)
    for name in (PINNED, WRONG):
        image.tag(name, "latest")
    pins = f"{PINNED}@{image_id},{WRONG}@sha256:{'0' * 64}"
    try:
        with running_node(HN_ALLOWED_IMAGES=pins) as running:
            yield running
    finally:
        for name in (PINNED, WRONG):
            client.images.remove(f"{name}:latest")
        client.close()


@pytest.fixture(scope="module")
def other(node: Node) -> Iterator[Node]:
    """A second stack on the same machine, with the same host name (both default to the machine's)."""
    with running_node(HN_NODE_NAME=node.name) as running:
        yield running


def test_a_job_cannot_set_up_io_uring_or_trace_and_a_normal_workload_runs(node: Node) -> None:
    result = node.run(script=SECCOMP_PROBE)

    assert result["status"] == "completed", result["logs"]
    report = json.loads(result["logs"].strip().splitlines()[-1])
    for name in ("io_uring_setup", "io_uring_enter", "io_uring_register", "ptrace", "userfaultfd", "bpf", "keyctl"):
        assert report[name] in ("EPERM", "ENOSYS"), report  # refused, whatever the arguments
    assert report["modify_ldt"] in ("EPERM", "ENOSYS"), report
    assert report["getppid"] == "ok"
    assert report["pool"] == [1, 2] and report["child"] == "child"  # processes, threads, shared memory
    node.assert_unharmed()


def test_two_nodes_on_one_engine_running_the_same_job_id_each_get_their_own_run(node: Node, other: Node) -> None:
    """Names were only hn-job-<id>: the second node reattached to the first's container and returned its
    output as its own signed result, and the first lost its container."""
    assert node.identity != other.identity and node.name == other.name
    job_id = f"same-{secrets.token_hex(6)}"
    mine = {node.identity: secrets.token_hex(8), other.identity: secrets.token_hex(8)}
    script = "import time\nprint('mine {}', flush=True)\ntime.sleep(4)\nprint('done')\n"
    for each in (node, other):
        each.submit(id=job_id, script=script.format(mine[each.identity]))

    both = wait_for(
        lambda: (
            (
                names := {
                    labels.get(LABEL_NODE_ID): cid
                    for cid, labels in DockerRuntime().labelled(LABEL_NODE_ID)
                    if labels.get("hypernode.job_id") == job_id
                }
            )
            and len(names) == 2
            and names
        ),
        timeout=60,
    )
    results = {each.identity: each.result(job_id) for each in (node, other)}

    assert set(both) == {node.identity, other.identity}  # at the same time, one container each
    for each in (node, other):
        result = results[each.identity]
        assert result["status"] == "completed", result["logs"]
        assert result["logs"] == f"mine {mine[each.identity]}\ndone\n"  # its own run, its own output
    node.assert_unharmed()
    other.assert_unharmed()


def test_an_image_pinned_by_digest_runs_only_as_that_image(node: Node) -> None:
    pinned = node.run(script="print('the pinned one')", image=PINNED)
    wrong = node.run(script="print('never')", image=WRONG)

    assert pinned["status"] == "completed" and pinned["logs"] == "the pinned one\n"
    assert (wrong["status"], wrong["reason"]) == ("error", "image_not_allowed")
    assert wrong["logs"].startswith(f"image '{WRONG}' is not the one this node pins (sha256:000000000000")
    node.assert_unharmed()
