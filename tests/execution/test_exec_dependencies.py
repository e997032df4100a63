"""What a job runs on: requirements installed from a wheelhouse, images pulled from a registry.

One node serves the module, configured with a wheelhouse the tests fill with wheels they
build themselves (HN_PIP_FIND_LINKS) and allowed to run images from loopback registries.
The registry is Debian's `docker-registry`, serving on 127.0.0.1 and holding the job image.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from execsupport import Node, running_node, write_wheel

from hypernode_host.tasks.containers import LABEL_NODE, LABEL_REQUIREMENTS, LABEL_ROLE, DockerRuntime
from support import TEST_IMAGE, wait_for

PULL_TIMEOUT_S = 5
# Every job here also needs this run's own package: the cache is keyed by the requirements, so no
# other run of this module (another checkout on the same engine) shares or removes our volumes.
RUN = f"hnrun{secrets.token_hex(4)}"
FIRST = "import os\nVALUE = 42\nWHERE = os.path.dirname(__file__)\n"
SECOND = "VALUE = 43\n"


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("wheels")
    directory.chmod(0o755)  # the preparation step runs as uid 65534
    write_wheel(directory, "hnpkg", "1.0", FIRST)
    write_wheel(directory, "hnpkg", "2.0", SECOND)
    write_wheel(directory, "hnother", "0.1", "NAME = 'other'\n")
    write_wheel(directory, RUN, "1.0", "")
    return directory


@pytest.fixture(scope="module")
def node(docker_runtime: DockerRuntime, wheelhouse: Path) -> Iterator[Node]:
    with running_node(
        HN_PIP_FIND_LINKS=str(wheelhouse),
        HN_ALLOWED_IMAGES="127.0.0.1:*/hn/*",
        HN_PULL_TIMEOUT=str(PULL_TIMEOUT_S),
    ) as running:
        try:
            yield running
        finally:
            _remove_volumes(running.name)


def _remove_volumes(node_name: str) -> None:
    client = docker.from_env()
    try:
        for volume in client.volumes.list(filters={"label": f"hypernode.node={node_name}"}):
            volume.remove(force=True)
    finally:
        client.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def prep_containers_left(node: Node) -> list[str]:
    return [cid for cid, labels in DockerRuntime().labelled(LABEL_ROLE, "prep") if labels.get(LABEL_NODE) == node.name]


def installs(node: Node) -> int:
    return node.process.output().count("installing ")


def prep_containers_created(since: float) -> int:
    client = docker.from_env()
    try:
        events = client.events(
            since=int(since), until=int(time.time()) + 1, filters={"event": "create", "type": "container"}, decode=True
        )
        return sum(
            1
            for e in events
            if e["timeNano"] >= since * 1e9 and e["Actor"]["Attributes"].get("name", "").startswith("hn-prep-")
        )
    finally:
        client.close()


PROBE = """
import errno, json, os, hnpkg, hnother
try:
    open(os.path.join(hnpkg.WHERE, "evil.py"), "w")
    wrote = "written"
except OSError as exc:
    wrote = errno.errorcode[exc.errno]
print(json.dumps({"value": hnpkg.VALUE, "where": hnpkg.WHERE, "other": hnother.NAME, "write": wrote,
                  "net": sorted(os.listdir("/sys/class/net"))}))
"""


def test_requirements_are_installed_once_then_reused_read_only(node: Node) -> None:
    first = node.run(script=PROBE, requirements=f"hnpkg==1.0\nhnother\n{RUN}\n")
    again = node.run(
        script=PROBE,
        requirements=f"# the same, written differently\n{RUN.upper()}\nHNother   \nhnpkg == 1.0  # pinned\n",
    )

    for result in (first, again):
        assert result["status"] == "completed", result["logs"]
        assert result["logs"].strip().splitlines()[-1] == (
            '{"value": 42, "where": "/opt/hypernode/deps/site/hnpkg", "other": "other", "write": "EROFS", '
            '"net": ["lo"]}'
        )
    assert installs(node) == 1  # the second job, on either slot, found the cache ready
    volumes = [v for v in DockerRuntime().client.volumes.list(filters={"label": LABEL_REQUIREMENTS})]
    assert any(v.attrs["Labels"].get("hypernode.node") == node.name for v in volumes)
    assert prep_containers_left(node) == []
    node.assert_unharmed()


def test_two_slots_needing_the_same_new_requirements_install_them_once(node: Node) -> None:
    before = installs(node)
    script = "import hnpkg\nprint('value', hnpkg.VALUE)\n"
    jobs = [node.submit(script=script, requirements=f"hnpkg==2.0\n{RUN}") for _ in range(2)]

    results = [node.result(job_id) for job_id in jobs]

    assert [r["status"] for r in results] == ["completed", "completed"], [r["logs"] for r in results]
    assert all("value 43" in r["logs"] for r in results)
    assert installs(node) == before + 1  # the step's container name is a lock; the second waited, then reused
    assert prep_containers_left(node) == []
    node.assert_unharmed()


def test_a_requirement_that_cannot_be_installed_is_an_error_with_pips_reason(node: Node) -> None:
    since = time.time()

    result = node.run(script="print('never')", requirements=f"{RUN}\nhnpkg==9.9")

    assert (result["status"], result["reason"]) == ("error", "requirements_failed")
    assert result["logs"] == "requirements could not be installed: No matching distribution found for hnpkg==9.9"
    assert prep_containers_created(since) == 1
    assert prep_containers_left(node) == []
    node.assert_unharmed()


@pytest.mark.parametrize(
    "requirements",
    [
        "--index-url http://127.0.0.1:1/simple\nhnpkg",
        "-e git+https://example.com/x.git#egg=x",
        "hnpkg @ https://example.com/hnpkg-1.0-py3-none-any.whl",
        "./hnpkg",
        "hnpkg; os.system('id')",
    ],
)
def test_requirements_that_are_not_plain_names_are_refused_before_docker(node: Node, requirements: str) -> None:
    result = node.run(script="print('never')", requirements=requirements)

    assert result["status"] == "error"
    assert result["logs"].startswith("invalid job: requirements: line 1")
    assert "\n" not in result["logs"]


@pytest.fixture(scope="module")
def registry(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's docker-registry on a free loopback port, holding the job image as hn/job-python:test."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.fail("docker-registry is not installed: apt-get install docker-registry (see scripts/services.sh)")
    root = tmp_path_factory.mktemp("registry")
    port = _free_port()
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log = (root / "registry.log").open("wb")
    process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    repository = f"127.0.0.1:{port}/hn/job-python"
    client = docker.from_env()
    try:
        wait_for(lambda: _answers(port), timeout=20)
        client.images.get(TEST_IMAGE).tag(repository, "test")
        for event in client.images.push(repository, "test", stream=True, decode=True):
            assert "error" not in event, event
        client.images.remove(f"{repository}:test")  # only the tag: the job must pull it back
        yield f"{repository}:test"
    finally:
        if any(f"{repository}:test" in image.tags for image in client.images.list(name=repository)):
            client.images.remove(f"{repository}:test")
        client.close()
        process.terminate()
        process.wait(10)
        log.close()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
            probe.sendall(b"GET /v2/ HTTP/1.0\r\n\r\n")
            return probe.recv(12).startswith(b"HTTP/1.")
    except OSError:
        return False


def test_an_allowed_image_that_is_missing_is_pulled_and_its_id_reported(node: Node, registry: str) -> None:
    assert DockerRuntime().image_id(registry) is None

    result = node.run(script="print('pulled and ran')", image=registry)

    assert result["status"] == "completed", result["logs"]
    assert "pulled and ran" in result["logs"]
    assert result["image"] == DockerRuntime().image_id(TEST_IMAGE)  # the ID that ran, not the name asked for
    output = node.process.output()
    assert f"image {registry} is not here: pulling it" in output
    assert f"pulling {registry}: Status: Downloaded newer image for {registry}" in output
    node.assert_unharmed()


def test_an_image_the_registry_does_not_have_is_an_error(node: Node, registry: str) -> None:
    missing = registry.replace(":test", ":no-such-tag")

    result = node.run(script="print('never')", image=missing)

    assert result["status"] == "error"
    assert result["logs"].startswith(f"image {missing} is not available: ")
    assert "not found" in result["logs"] and "\n" not in result["logs"]
    node.assert_unharmed()


@pytest.fixture
def silent_registry() -> Iterator[int]:
    """A loopback port that accepts connections and never answers: a registry that hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, name="silent-registry")
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        for connection in held:
            connection.close()
        listener.close()


def test_a_pull_that_hangs_gives_up_at_the_pull_timeout(node: Node, silent_registry: int) -> None:
    image = f"127.0.0.1:{silent_registry}/hn/job-python:test"

    result = node.run(script="print('never')", image=image, wait_s=PULL_TIMEOUT_S + 30)

    assert result["status"] == "error"
    # A stalled pull is tried again (tasks/imagecache.py), twice, then the job ends.
    stalled = f"image {image} is not available: pull failed (no progress for {PULL_TIMEOUT_S} s)"
    assert result["logs"] == f"{stalled} (after 3 attempts)"
    node.assert_unharmed()
