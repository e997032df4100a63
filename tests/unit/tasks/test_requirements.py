"""The requirements step: where the agent's pip finds wheels, which wheels fit the job's image, pip's
reasons, the cache key and the volume's name, and the installer's decisions on a fake runtime."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

from hypernode_host.errors import RequirementsFailed
from hypernode_host.settings import Settings
from hypernode_host.tasks.containers import ContainerState, PrepSpec
from hypernode_host.tasks.requirements import (
    Limits,
    PipSource,
    RequirementsInstaller,
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


class FakePrep:
    """The preparation step's runtime in memory: volumes, one step container, the calls made."""

    def __init__(self, exit_code: int = 0) -> None:
        self.calls: list[str] = []
        self.volumes: dict[str, dict[str, str]] = {}
        self.containers: dict[str, PrepSpec] = {}
        self.specs: list[PrepSpec] = []
        self.exit_code = exit_code
        self.files: list[str] = []

    def ensure_volume(self, name: str, labels: Mapping[str, str]) -> None:
        self.volumes.setdefault(name, dict(labels))

    def volume_created(self, name: str) -> str | None:
        return "t0" if name in self.volumes else None

    def remove_volume(self, name: str) -> None:
        self.calls.append("remove_volume")
        self.volumes.pop(name, None)

    def image_config(self, image: str) -> tuple[dict[str, str], str]:
        return {"PATH": "/usr/bin"}, "amd64"

    def create_prep(self, spec: PrepSpec) -> str:
        self.calls.append("create_prep")
        self.containers["c1"] = spec
        self.specs.append(spec)
        return "c1"

    def link_target(self, container_id: str, path: str) -> str | None:
        return "/usr/bin/python3.12" if path == "/usr/bin/python3" else None

    def put_files(self, container_id: str, directory: str, paths: Sequence[Path]) -> None:
        self.files += [p.name for p in paths]

    def has_file(self, container_id: str, path: str) -> bool:
        return False

    def find(self, name: str) -> str | None:
        return None

    def start(self, container_id: str) -> None:
        self.calls.append("start")

    def wait(self, container_id: str, timeout_s: float) -> bool:
        return True

    def state(self, container_id: str) -> ContainerState:
        return ContainerState(False, self.exit_code, False, 1, 2, "sha256:img")

    def output_tail(self, container_id: str, lines: int) -> bytes:
        return b"ERROR: hnpkg-1.0-cp312-cp312-manylinux_2_28_x86_64.whl is not a supported wheel on this platform.\n"

    def remove(self, container_id: str) -> None:
        self.calls.append("remove")
        self.containers.pop(container_id, None)


class Installer(RequirementsInstaller):
    """The installer with the agent's pip download replaced: it "downloads" one wheel, or fails like pip."""

    fail: str | None = None
    command: list[str] = []  # noqa: RUF012 - set once per test

    def _download(self, command: list[str], deadline: float, should_stop: Callable[[], bool]) -> bool:
        Installer.command = command
        if self.fail:
            raise RequirementsFailed(f"requirements could not be installed: {self.fail}")
        dest = Path(command[command.index("--dest") + 1])
        (dest / "hnpkg-1.0-py3-none-any.whl").write_bytes(b"PK")
        return True


LIMITS = Limits(memory_bytes=256 << 20, nano_cpus=500_000_000, timeout_s=60)


def installer(runtime: FakePrep) -> Installer:
    return Installer(runtime, settings(HN_PIP_INDEX_URL="https://pypi.example/simple"), 0, lambda: "0123456789ab")


def test_wheels_for_the_images_python_are_put_in_and_installed_offline_with_the_jobs_limits() -> None:
    runtime = FakePrep()

    volume = installer(runtime).ensure("sha256:img", ["hnpkg==1.0"], LIMITS, should_stop=lambda: False)

    assert volume is not None and volume.startswith("hn-req-0123456789ab-") and volume in runtime.volumes
    assert ("--python-version", "3.12") in set(itertools.pairwise(Installer.command))  # from /usr/bin/python3's link
    assert runtime.files == ["hnpkg-1.0-py3-none-any.whl"]
    assert runtime.calls == ["create_prep", "start", "remove"]
    (spec,) = runtime.specs
    assert (spec.memory_bytes, spec.nano_cpus) == (256 << 20, 500_000_000)  # the job's own
    assert "--no-index" in spec.command[2] and "--find-links /wheels" in spec.command[2]


@pytest.mark.parametrize("step", ["download", "install"])
def test_a_failed_step_removes_its_container_and_its_volume(step: str) -> None:
    runtime = FakePrep(exit_code=1 if step == "install" else 0)
    steps = installer(runtime)
    steps.fail = "No matching distribution found for hnpkg==9.9" if step == "download" else None

    with pytest.raises(RequirementsFailed, match="requirements could not be installed: ") as caught:
        steps.ensure("sha256:img", ["hnpkg==9.9"], LIMITS, should_stop=lambda: False)

    assert caught.value.reason == "requirements_failed"
    assert runtime.calls[-2:] == ["remove", "remove_volume"] and runtime.volumes == {}
    assert ("start" in runtime.calls) == (step == "install")  # nothing of the image ran for a failed download
