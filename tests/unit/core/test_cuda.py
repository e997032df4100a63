"""An image's CUDA requirement against the driver's CUDA version, as the NVIDIA Container Toolkit reads it."""

from __future__ import annotations

import pytest

from hypernode_host.core.cuda import Driver, image_requirement, incompatibility, parse_driver

# What nvidia/cuda:12.8.0-runtime-ubuntu22.04 declares (shortened to two brands).
CUDA_12_8 = [
    "PATH=/usr/local/cuda/bin:/usr/bin",
    "NVIDIA_REQUIRE_CUDA=cuda>=12.8 brand=unknown,driver>=470,driver<471 brand=tesla,driver>=535,driver<536",
    "CUDA_VERSION=12.8.0",
]
DRIVER_550 = Driver("550.54.15", "12.4")


def test_an_image_needing_a_newer_cuda_than_the_driver_is_refused_with_both_versions() -> None:
    problem = incompatibility(CUDA_12_8, DRIVER_550)
    assert problem is not None
    assert problem.startswith("the image needs cuda>=12.8 (requires 'cuda>=12.8 brand=unknown")
    assert problem.endswith("this GPU's driver 550.54.15 supports CUDA 12.4 at most")
    assert incompatibility(CUDA_12_8, Driver("570.86.10", "12.8")) is None


def test_an_alternative_of_the_requirement_is_enough_forward_compatibility() -> None:
    assert incompatibility(CUDA_12_8, Driver("535.161.08", "12.2")) is None  # brand=tesla,driver>=535,driver<536
    assert incompatibility(CUDA_12_8, Driver("536.1", "12.2")) is not None


def test_cuda_version_alone_means_at_least_its_major_minor() -> None:
    assert image_requirement(["CUDA_VERSION=12.6.3"]) == "cuda>=12.6"
    assert incompatibility(["CUDA_VERSION=12.6.3"], DRIVER_550) is not None
    assert incompatibility(["CUDA_VERSION=12.4.1"], DRIVER_550) is None


def test_no_requirement_a_disabled_one_or_an_unknown_driver_refuses_nothing() -> None:
    assert incompatibility(["PATH=/bin"], DRIVER_550) is None
    assert incompatibility([*CUDA_12_8, "NVIDIA_DISABLE_REQUIRE=true"], DRIVER_550) is None
    assert incompatibility(CUDA_12_8, Driver("simulated", None)) is None
    assert incompatibility(["NVIDIA_REQUIRE_CUDA=cuda>=banana"], DRIVER_550) is None  # not ours to judge


def test_driver_pairs_parse_as_the_simulation_writes_them() -> None:
    assert parse_driver("550.54/12.4") == Driver("550.54", "12.4")
    for bad in ("550.54", "550/x", "/12.4", "a.b/12.4"):
        with pytest.raises(ValueError, match="not a driver/CUDA pair"):
            parse_driver(bad)
