"""Docker's errors become ours in one place, keeping the engine's status code and the container.

The engine's refusals are built by docker-py itself (create_api_error_from_http_exception, from an
HTTP response), so NotFound, ImageNotFound and APIError are told apart exactly as in production.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import docker.errors
import pytest
import requests

from hypernode_host.errors import ContainerError, ImageUnavailable, NameTaken
from hypernode_host.tasks.containers import ContainerSpec, DockerRuntime, container_error, docker_errors


def refusal(status: int, message: str) -> docker.errors.APIError:
    """The error docker-py raises when the engine answers ``status`` with ``message``."""
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps({"message": message}).encode() if message else b""
    response.url = "http+docker://localhost/v1.41/containers/abc/start"
    try:
        docker.errors.create_api_error_from_http_exception(requests.HTTPError(response=response))
    except docker.errors.APIError as exc:
        return exc
    raise AssertionError("docker-py raised nothing")


def test_a_refusal_becomes_one_line_with_its_status_and_container() -> None:
    with pytest.raises(ContainerError) as caught, docker_errors("start failed", "abc"):
        raise refusal(500, "OCI runtime create failed: no such file")
    error = caught.value
    assert type(error) is ContainerError
    assert str(error) == "start failed: OCI runtime create failed: no such file"
    assert (error.status_code, error.container) == (500, "abc")
    assert error.__cause__ is None and error.__suppress_context__  # docker-py's traceback is noise here


def test_not_found_is_a_refusal_like_any_other_unless_it_is_an_answer() -> None:
    with pytest.raises(ContainerError) as caught, docker_errors("inspect failed", "abc"):
        raise refusal(404, "No such container: abc")
    assert caught.value.status_code == 404

    def lookup() -> str:
        with docker_errors("inspect failed", "abc", ok=(404,)):
            raise refusal(404, "No such container: abc")
        return "none"  # the code after the block runs

    assert lookup() == "none"
    with pytest.raises(ContainerError, match=r"^kill failed: boom$"), docker_errors("kill failed", ok=(404, 409)):
        raise refusal(500, "boom")


def test_an_empty_explanation_falls_back_to_docker_pys_description() -> None:
    error = container_error(refusal(502, ""), "list failed")
    assert str(error).startswith("list failed: 502 Server Error for http+docker://")
    assert (error.status_code, error.container) == (502, None)


def test_transport_errors_pass_unless_asked_for() -> None:
    with pytest.raises(requests.exceptions.ReadTimeout), docker_errors("wait failed", "abc"):
        raise requests.exceptions.ReadTimeout("read timed out")
    with pytest.raises(ContainerError) as caught, docker_errors("attach failed", "abc", transport=True):
        raise requests.exceptions.ConnectionError("connection reset by peer")
    assert str(caught.value) == "attach failed: connection reset by peer"
    assert (caught.value.status_code, caught.value.container) == (None, "abc")


def test_anything_not_dockers_passes_untouched() -> None:
    with pytest.raises(KeyError), docker_errors("inspect failed", "abc", transport=True):
        raise KeyError("State")


class Engine:
    """docker-py's low-level client: every call is recorded and raises what is queued for it."""

    def __init__(self, **errors: BaseException) -> None:
        self.errors = errors
        self.calls: list[str] = []

    def __getattr__(self, method: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(method)
            if method in self.errors:
                raise self.errors[method]
            return SimpleNamespace(id="abc") if method == "create_container" else None

        return call


def runtime(engine: Engine) -> DockerRuntime:
    return DockerRuntime(SimpleNamespace(api=engine, containers=SimpleNamespace(create=engine.create_container)))  # type: ignore[arg-type]


SPEC = ContainerSpec(
    name="hn-job-j1",
    image="img",
    command=["python", "/job/script.py"],
    env={},
    labels={},
    memory_bytes=256 << 20,
    nano_cpus=1_000_000_000,
    files={"script.py": b"print(1)"},
)


def test_a_taken_name_is_name_taken() -> None:
    conflict = refusal(409, 'Conflict. The container name "/hn-job-j1" is already in use by container "abc"')
    with pytest.raises(NameTaken) as caught:
        runtime(Engine(create_container=conflict)).create(SPEC)
    assert str(caught.value) == "container hn-job-j1 exists already"
    assert (caught.value.status_code, caught.value.container) == (409, "hn-job-j1")


def test_a_missing_image_is_image_unavailable() -> None:
    missing = refusal(404, "No such image: img:latest")
    assert isinstance(missing, docker.errors.ImageNotFound)
    with pytest.raises(ImageUnavailable) as caught:
        runtime(Engine(create_container=missing)).create(SPEC)
    assert str(caught.value) == "image img is not available"
    assert (caught.value.status_code, caught.value.container) == (404, "hn-job-j1")


def test_any_other_refusal_to_create_is_a_container_error() -> None:
    with pytest.raises(ContainerError) as caught:
        runtime(Engine(create_container=refusal(400, "invalid mount config"))).create(SPEC)
    assert type(caught.value) is ContainerError
    assert str(caught.value) == "cannot create container: invalid mount config"
    assert (caught.value.status_code, caught.value.container) == (400, "hn-job-j1")


def test_files_that_cannot_be_put_in_remove_the_container() -> None:
    engine = Engine(put_archive=refusal(500, "no space left on device"))
    with pytest.raises(ContainerError, match=r"^cannot put files into the container: no space left on device$"):
        runtime(engine).create(SPEC)
    assert engine.calls == ["create_container", "put_archive", "remove_container"]  # it never starts without its files


@pytest.mark.parametrize(
    ("method", "error", "act"),
    [
        ("stop", refusal(304, ""), lambda r: r.stop("abc", 1)),  # stopped already
        ("stop", refusal(404, "No such container: abc"), lambda r: r.stop("abc", 1)),
        ("kill", refusal(404, "No such container: abc"), lambda r: r.kill("abc")),
        ("kill", refusal(409, "Container abc is not running"), lambda r: r.kill("abc")),
        ("remove_container", refusal(404, "No such container: abc"), lambda r: r.remove("abc")),
        (
            "remove_container",
            refusal(409, "removal of container abc is already in progress"),
            lambda r: r.remove("abc"),
        ),
    ],
)
def test_what_is_so_already_is_not_an_error(
    method: str, error: docker.errors.APIError, act: Callable[[DockerRuntime], None]
) -> None:
    engine = Engine(**{method: error})
    act(runtime(engine))  # raises nothing
    assert engine.calls == [method]


def test_a_conflict_that_is_not_a_removal_in_progress_is_an_error() -> None:
    with pytest.raises(ContainerError) as caught:
        runtime(Engine(remove_container=refusal(409, "cannot remove a paused container"))).remove("abc")
    assert str(caught.value) == "remove failed: cannot remove a paused container"
    assert (caught.value.status_code, caught.value.container) == (409, "abc")


def test_absent_things_are_answers() -> None:
    gone = refusal(404, "No such container: abc")
    assert runtime(Engine(inspect_container=gone)).find("hn-job-j1") is None
    assert runtime(Engine(inspect_image=refusal(404, "No such image: img"))).image_id("img") is None
    assert runtime(Engine(inspect_volume=refusal(404, "get hn-deps: no such volume"))).volume_created("v") is None
    assert (
        runtime(Engine(get_archive=refusal(404, "Could not find the file /job/x"))).has_file("abc", "/job/x") is False
    )
    assert runtime(Engine(wait=gone)).wait("abc", 1) is True  # gone counts as exited


def test_a_wait_that_times_out_means_still_running() -> None:
    assert runtime(Engine(wait=requests.exceptions.ReadTimeout("read timed out"))).wait("abc", 1) is False


def test_a_failed_lookup_names_the_container() -> None:
    with pytest.raises(ContainerError) as caught:
        runtime(Engine(inspect_container=refusal(500, "dial unix: connection refused"))).find("hn-job-j1")
    assert str(caught.value) == "cannot inspect container hn-job-j1: dial unix: connection refused"
    assert (caught.value.status_code, caught.value.container) == (500, "hn-job-j1")
