"""Pure rules of the requirements step: where the wheels come from, pip's reasons, the cache key."""

from __future__ import annotations

import pytest

from hypernode_host.settings import Settings
from hypernode_host.tasks.requirements import PipSource, cache_key, pip_reason, pip_source, volume_name


def settings(**values: str) -> Settings:
    return Settings.from_env(values)


@pytest.mark.parametrize(
    ("values", "source"),
    [
        ({}, None),
        (
            {"HN_PIP_FIND_LINKS": "/srv/wheels"},
            PipSource(("--no-index", "--find-links", "/wheels"), "/srv/wheels", "none"),
        ),
        (
            {"HN_PIP_INDEX_URL": "https://pypi.example/simple"},
            PipSource(("--index-url", "https://pypi.example/simple"), None, "host"),
        ),
        (
            {"HN_PIP_FIND_LINKS": "https://wheels.example/"},
            PipSource(("--no-index", "--find-links", "https://wheels.example/"), None, "host"),
        ),
        (
            {"HN_PIP_INDEX_URL": "https://pypi.example/simple", "HN_PIP_FIND_LINKS": "/srv/wheels"},
            PipSource(("--index-url", "https://pypi.example/simple", "--find-links", "/wheels"), "/srv/wheels", "host"),
        ),
    ],
)
def test_wheel_sources_and_the_network_they_need(values: dict[str, str], source: PipSource | None) -> None:
    assert pip_source(settings(**values)) == source


def test_pips_reason_is_its_last_error_line() -> None:
    output = (
        b"Looking in links: /wheels\n"
        b"ERROR: Could not find a version that satisfies the requirement hnpkg==9.9 (from versions: 1.0)\n"
        b"ERROR: No matching distribution found for hnpkg==9.9\n"
    )
    assert pip_reason(output) == "No matching distribution found for hnpkg==9.9"
    assert pip_reason(b"Traceback...\nOSError: boom \xff\n") == "OSError: boom \ufffd"
    assert pip_reason(b"") == "pip failed without saying why"


def test_the_cache_is_keyed_by_image_and_requirements() -> None:
    key = cache_key("sha256:a", ["numpy==2.0"])
    assert len(key) == 64 and volume_name(key) == f"hn-req-{key[:16]}"
    assert key != cache_key("sha256:b", ["numpy==2.0"])  # wheels fit one interpreter
    assert key != cache_key("sha256:a", ["numpy==2.1"])
    assert key == cache_key("sha256:a", ["numpy==2.0"])
