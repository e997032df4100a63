"""What a job runs on: requirements downloaded and installed, images pulled from a registry, and a
hostile image that gets nothing more than its job.

One node serves the module, configured with a package index the tests serve on loopback
(HN_PIP_INDEX_URL: Python's http.server over a PEP 503 tree of wheels they build themselves) and
allowed to run images from loopback registries. The registry is Debian's `docker-registry`, serving
on 127.0.0.1 and holding the job image.
"""

from __future__ import annotations

import functools
import http.server
import io
import secrets
import shutil
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from typing import Any

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
SLOW = "hnslow"  # the index takes this long to answer for it: longer than any job's timeout here
SLOW_S = 60


class _Index(http.server.SimpleHTTPRequestHandler):
    """A PEP 503 index: /simple/<name>/ lists that project's wheels (http.server's directory listing)."""

    def do_GET(self) -> None:
        if f"/{SLOW}" in self.path:
            time.sleep(SLOW_S)
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("index")
    for name, version, source in [
        ("hnpkg", "1.0", FIRST),
        ("hnpkg", "2.0", SECOND),
        ("hnother", "0.1", "NAME = 'other'\n"),
        (RUN, "1.0", ""),
        (SLOW, "1.0", ""),
    ]:
        project = root / "simple" / name
        project.mkdir(parents=True, exist_ok=True)
        write_wheel(project, name, version, source)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Index, directory=str(root)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="index", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def node(docker_runtime: DockerRuntime, index: str) -> Iterator[Node]:
    with running_node(
        HN_PIP_INDEX_URL=index,
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
    assert prep_containers_created(since) == 1  # the step's lock, taken before the download
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


def requirement_volumes(node: Node) -> set[str]:
    client = docker.from_env()
    try:
        volumes = client.volumes.list(filters={"label": [LABEL_REQUIREMENTS, f"{LABEL_NODE}={node.name}"]})
        return {v.name for v in volumes}
    finally:
        client.close()


def test_a_failed_install_leaves_no_volume(node: Node) -> None:
    before = requirement_volumes(node)

    result = node.run(script="print('never')", requirements=f"{RUN}\nhnother==7.7")

    assert (result["status"], result["reason"]) == ("error", "requirements_failed")
    assert requirement_volumes(node) == before
    assert prep_containers_left(node) == []


def test_installing_requirements_counts_against_the_jobs_timeout(node: Node) -> None:
    started = time.monotonic()

    result = node.run(script="print('never')", requirements=f"{RUN}\n{SLOW}", timeout=5, wait_s=SLOW_S)

    assert (result["status"], result["reason"]) == ("error", "timeout"), result
    assert result["logs"] == "requirements: not downloaded within the job's timeout"
    assert time.monotonic() - started < SLOW_S  # given up at the job's deadline, not when the index answered
    assert prep_containers_left(node) == []
    node.assert_unharmed()


# Runs at every start of the image's interpreter (a .pth file in its site-packages): it tries the
# node's Redis and a listener on the host, and says what it got, on stdout and, when it runs in the
# requirements step, in the site directory the job then imports from.
HOSTILE = """
import os, socket

def _try(host, port, payload):
    try:
        with socket.create_connection((host, port), timeout=3) as conn:
            conn.sendall(payload)
            return "reached " + repr(conn.recv(64))
    except OSError as exc:
        return "blocked (" + type(exc).__name__ + ")"

_report = []
for _name, _host, _port, _payload in TARGETS:
    _report.append(_name + ": " + _try(_host, _port, _payload))
if os.access("/deps/site", os.W_OK):
    with open("/deps/site/hostile-prep.txt", "a") as _out:
        _out.write("\\n".join("prep " + line for line in _report) + "\\n")
else:
    print("\\n".join("job " + line for line in _report), flush=True)
"""


@pytest.fixture
def listener() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP listener on every address of the host, keeping what anyone sends it."""
    server = socket.socket()
    server.bind(("0.0.0.0", 0))
    server.listen(8)
    server.settimeout(0.2)
    received: list[bytes] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    received.append(conn.recv(64) or b"(connected)")
                except OSError:
                    received.append(b"(connected)")

    thread = threading.Thread(target=accept, name="listener")
    thread.start()
    try:
        yield int(server.getsockname()[1]), received
    finally:
        stop.set()
        thread.join(5)
        server.close()


def _host_address() -> str:
    """An address of this host other than loopback, when it has one (what a container would aim at)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: it only picks the outgoing interface
        return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()


@pytest.fixture
def hostile_image(node: Node, listener: tuple[int, list[bytes]]) -> Iterator[str]:
    """The job image plus a start-up hook that goes for the node's Redis and the host's listener."""
    port, _ = listener
    redis_port = node.redis_server.port
    targets = [
        ("redis", "127.0.0.1", redis_port, b"SET hn:hostile owned\r\n"),
        ("redis-host", _host_address(), redis_port, b"SET hn:hostile owned\r\n"),
        ("outside", "127.0.0.1", port, b"hostile\n"),
        ("outside-host", _host_address(), port, b"hostile\n"),
    ]
    hook = f"TARGETS = {targets!r}\n" + HOSTILE
    dockerfile = (
        f"FROM {TEST_IMAGE}\nCOPY hn_hostile.py /tmp/hn_hostile.py\n"
        "RUN d=$(python3 -c 'import site; print(site.getsitepackages()[0])') && mkdir -p \"$d\" "
        '&& cp /tmp/hn_hostile.py "$d/" && echo \'import hn_hostile\' > "$d/hn_hostile.pth"\n'
    )
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, text in (("Dockerfile", dockerfile), ("hn_hostile.py", hook)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    tag = f"127.0.0.1:1/hn/hostile-{RUN}:latest"
    client = docker.from_env()
    try:
        client.images.build(fileobj=context, custom_context=True, tag=tag, network_mode="none", rm=True, pull=False)
        yield tag
    finally:
        client.images.remove(tag, force=True)
        client.close()


def test_a_hostile_image_reaches_neither_redis_nor_the_network_when_its_requirements_are_installed(
    node: Node, hostile_image: str, listener: tuple[int, list[bytes]]
) -> None:
    """The requirements step once ran the job's image on the host's network: its interpreter's start-up
    wrote into the node's Redis. Now the download is the agent's, and the image runs offline."""
    report = "/opt/hypernode/deps/site/hostile-prep.txt"
    script = f"import hnpkg\nprint(open({report!r}).read(), end='')\nprint('value', hnpkg.VALUE)\n"

    result = node.run(script=script, image=hostile_image, requirements=f"hnpkg==1.0\n{RUN}")

    assert result["status"] == "completed", result["logs"]
    lines = result["logs"].splitlines()
    for where in ("prep", "job"):
        for target in ("redis", "redis-host", "outside", "outside-host"):
            assert any(line.startswith(f"{where} {target}: blocked (") for line in lines), result["logs"]
    assert "reached" not in result["logs"] and "value 42" in lines
    _, received = listener
    assert received == []
    assert node.redis.exists("hn:hostile") == 0
    assert prep_containers_left(node) == []
    node.assert_unharmed()


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
        wait_for(lambda: _answers(port), timeout=60)
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
