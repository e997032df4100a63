"""The agent's Docker image: it builds here (from the local job image), runs as a non-root user that reaches
the Docker socket through its group, and its HEALTHCHECK command runs."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypernode_host.tasks.containers import DockerRuntime
from support import TEST_IMAGE

ROOT = Path(__file__).resolve().parents[2]
TAG = "hypernode/host:test"
EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")  # Debian's place for locally added CAs
SOCKET = Path("/var/run/docker.sock")


def docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


def extra_ca_certs() -> str:
    """This machine's own CAs (a TLS-intercepting proxy's, say), so pip in the build trusts what pip here trusts."""
    return "".join(p.read_text() for p in sorted(EXTRA_CA_DIR.glob("*.crt")))


@pytest.fixture(scope="module")
def image(docker_runtime: DockerRuntime) -> Iterator[str]:
    """Built with the classic builder (Debian's docker.io has no BuildKit), pip reaching PyPI over the host network.

    The tag stays afterwards: its layers are the cache that makes the next build take seconds.
    """
    gid = str(SOCKET.stat().st_gid)
    build = subprocess.run(
        [
            "docker",
            "build",
            "--network",
            "host",
            "--build-arg",
            f"BASE_IMAGE={TEST_IMAGE}",
            "--build-arg",
            f"DOCKER_GID={gid}",
            "--build-arg",
            f"EXTRA_CA_CERTS={extra_ca_certs()}",
            "--build-arg",
            "REVISION=test",
            "-t",
            TAG,
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    yield TAG


def test_the_image_is_labelled_non_root_and_health_checked(image: str) -> None:
    (info,) = json.loads(docker("image", "inspect", image).stdout)
    config = info["Config"]
    assert config["User"] == "hypernode"
    assert config["Healthcheck"]["Test"] == ["CMD", "hypernode-host", "check"]
    assert config["Entrypoint"] == ["hypernode-host"] and config["Cmd"] == ["up"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "hypernode-host"
    assert labels["org.opencontainers.image.revision"] == "test"
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["org.opencontainers.image.licenses"] == "MIT"
    ids = docker("run", "--rm", "--network", "none", "--entrypoint", "id", image)
    assert ids.stdout.startswith("uid=10001(hypernode)")
    assert f"{SOCKET.stat().st_gid}(" in ids.stdout  # the socket's group, baked in


def test_help_runs_in_the_image(image: str) -> None:
    done = docker("run", "--rm", "--network", "none", image, "--help")
    assert done.returncode == 0, done.stderr
    for command in ("up", "bridge", "worker", "queue", "jobs", "workers", "dead", "check", "doctor", "top"):
        assert f" {command} " in done.stdout


def test_doctor_runs_in_the_image_and_reaches_docker_through_the_group(image: str) -> None:
    done = docker(
        "run",
        "--rm",
        "--network",
        "none",
        "-e",
        "COLUMNS=200",
        "-v",
        f"{SOCKET}:{SOCKET}",
        "--group-add",
        str(SOCKET.stat().st_gid),
        image,
        "doctor",
        "--json",
    )
    assert done.returncode == 1  # no Redis and no token in this bare container
    checks = {c["part"]: c for c in json.loads(done.stdout)["checks"]}
    assert checks["docker"]["level"] == "ok"  # a non-root user, through the socket's group
    assert checks["redis"]["level"] == "fail" and checks["token"]["level"] == "fail"
    assert {"gpus", "live-restore", "nvidia-runtime", "default-runtime", "disk", "image", "node-key"} <= checks.keys()


def test_the_healthcheck_command_runs_and_reports_what_fails(image: str) -> None:
    done = docker("run", "--rm", "--network", "none", "--entrypoint", "hypernode-host", image, "check")
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith("redis: no answer from redis://127.0.0.1:6379/0")
