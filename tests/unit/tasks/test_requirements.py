"""Pure rules of the requirements step: where the agent's pip finds wheels, which wheels fit the job's
image, pip's reasons, the cache key and the volume's name."""

from __future__ import annotations

import itertools
import sys

import pytest

from hypernode_host.settings import Settings
from hypernode_host.tasks.requirements import (
    PipSource,
    Target,
    cache_key,
    download_command,
    pip_reason,
    pip_source,
    python_from_env,
    python_from_link,
    volume_name,
)


def settings(**values: str) -> Settings:
    return Settings.from_env(values)


@pytest.mark.parametrize(
    ("values", "source"),
    [
        ({}, None),
        ({"HN_PIP_FIND_LINKS": "/srv/wheels"}, PipSource(("--no-index", "--find-links", "/srv/wheels"))),
        (
            {"HN_PIP_INDEX_URL": "https://pypi.example/simple"},
            PipSource(("--index-url", "https://pypi.example/simple")),
        ),
        (
            {"HN_PIP_FIND_LINKS": "https://wheels.example/"},
            PipSource(("--no-index", "--find-links", "https://wheels.example/")),
        ),
        (
            {"HN_PIP_INDEX_URL": "https://pypi.example/simple", "HN_PIP_FIND_LINKS": "/srv/wheels"},
            PipSource(("--index-url", "https://pypi.example/simple", "--find-links", "/srv/wheels")),
        ),
    ],
)
def test_wheel_sources_are_the_agents_pip_arguments(values: dict[str, str], source: PipSource | None) -> None:
    assert pip_source(settings(**values)) == source


def test_the_download_is_the_agents_own_pip_for_wheels_that_fit_the_image() -> None:
    command = download_command(
        PipSource(("--no-index", "--find-links", "/srv/wheels")), Target((3, 12), "aarch64"), "/tmp/d", ["numpy==2.0"]
    )

    assert command[:4] == [sys.executable, "-m", "pip", "download"]  # the agent's interpreter, never the image's
    assert "--only-binary=:all:" in command  # wheels only: nothing is built, no package code runs
    pairs = set(itertools.pairwise(command))
    assert {("--python-version", "3.12"), ("--implementation", "cp"), ("--abi", "cp312"), ("--abi", "abi3")} <= pairs
    assert {
        ("--dest", "/tmp/d"),
        ("--platform", "manylinux_2_28_aarch64"),
        ("--platform", "manylinux2014_aarch64"),
    } <= pairs
    assert ("--platform", "manylinux_2_29_aarch64") not in pairs
    assert command[-4:] == ["--no-index", "--find-links", "/srv/wheels", "numpy==2.0"]


def test_the_images_python_is_read_from_its_config_or_its_interpreters_link() -> None:
    assert python_from_env({"PYTHON_VERSION": "3.11.9"}) == (3, 11)
    assert python_from_env({"PATH": "/usr/bin"}) is None
    assert python_from_link("/usr/bin/python3.11") == (3, 11)
    assert python_from_link("/usr/local/bin/python3.13") == (3, 13)
    assert python_from_link("/usr/bin/python3") is None and python_from_link(None) is None


def test_pips_reason_is_its_last_error_line() -> None:
    output = (
        b"Looking in links: /wheels\n"
        b"ERROR: Could not find a version that satisfies the requirement hnpkg==9.9 (from versions: 1.0)\n"
        b"ERROR: No matching distribution found for hnpkg==9.9\n"
    )
    assert pip_reason(output) == "No matching distribution found for hnpkg==9.9"
    assert pip_reason(b"Traceback...\nOSError: boom \xff\n") == "OSError: boom \ufffd"
    assert pip_reason(b"") == "pip failed without saying why"


def test_the_cache_is_keyed_by_image_and_requirements_and_belongs_to_one_node() -> None:
    key = cache_key("sha256:a", ["numpy==2.0"])
    assert len(key) == 64 and volume_name("0123456789ab", key) == f"hn-req-0123456789ab-{key[:16]}"
    assert volume_name("ba9876543210", key) != volume_name("0123456789ab", key)  # no node reads another's wheels
    assert key != cache_key("sha256:b", ["numpy==2.0"])  # wheels fit one interpreter
    assert key != cache_key("sha256:a", ["numpy==2.1"])
    assert key == cache_key("sha256:a", ["numpy==2.0"])
