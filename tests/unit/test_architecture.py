"""The architecture, enforced: layers, SDK confinement and no import cycles, read from the source with ast.

Layers, lowest first; a module imports only its own layer or below (lazy and type-only imports count):

    0 base     __init__, errors, settings, exitcodes, logs, escapes
    1 core     the domain, pure
    2 state    Redis
    3 gpu      GPU hardware
    4 tasks    Dramatiq, the runner, Docker
    5 bridge   the backend connection       5 ops   the operator surface
    6 backend  the reference backend (a foreign peer: base and core only)
    7 node     processes
    8 cli      the command line
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

import hypernode_host

ROOT = Path(hypernode_host.__file__).parent
PACKAGE = "hypernode_host"
LAYERS = {
    "__init__": 0,
    "errors": 0,
    "settings": 0,
    "exitcodes": 0,
    "logs": 0,
    "escapes": 0,
    "core": 1,
    "state": 2,
    "gpu": 3,
    "tasks": 4,
    "bridge": 5,
    "ops": 5,
    "backend": 6,
    "node": 7,
    "cli": 8,
    "__main__": 8,
}
# Third-party modules only one module of ours may import.
SDKS = {
    "redis": {"state", "tasks.dramatiq_redis"},
    "docker": {"tasks.containers"},
    "requests": {"tasks.containers"},
    "pynvml": {"gpu.nvml"},
}
# What only tasks/dramatiq_redis.py may know of Dramatiq's insides: its private consumer and its key layout.
DRAMATIQ_PRIVATE_NAMES = {"_RedisConsumer"}
DRAMATIQ_KEY_PARTS = (".msgs", ".XQ", ".DQ", "__acks__", "__heartbeats__")


def modules() -> list[str]:
    """Every module of the package, as "part.module" relative to it ("state.jobs", "cli", "core")."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found.append(".".join(parts[:-1]) if parts[-1] == "__init__" and len(parts) > 1 else ".".join(parts))
    return found


def source(module: str) -> Path:
    path = ROOT.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


@cache
def tree(module: str) -> ast.Module:
    return ast.parse(source(module).read_text(), filename=str(source(module)))


def imported(module: str) -> Iterator[tuple[str, int]]:
    """(module name as written, line) of every import in ``module``, wherever it is in the file."""
    for node in ast.walk(tree(module)):
        if isinstance(node, ast.Import):
            yield from ((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{module}:{node.lineno}: relative import"
            submodules = [f"{node.module}.{alias.name}" for alias in node.names]
            if all(ours(name) for name in submodules):  # `from hypernode_host.state import keys`: modules only
                yield from ((name, node.lineno) for name in submodules)
            else:
                yield node.module, node.lineno


def ours(name: str) -> str | None:
    """The module of ours that ``name`` is ("hypernode_host.state.keys" -> "state.keys"), if any."""
    if name == PACKAGE:
        return "__init__"
    if not name.startswith(PACKAGE + "."):
        return None
    relative = name.removeprefix(PACKAGE + ".")
    return relative if relative in set(modules()) else None


def dependencies(module: str) -> set[str]:
    return {target for name, _ in imported(module) if (target := ours(name)) and target != module}


def part(module: str) -> str:
    return module.split(".", maxsplit=1)[0]


def layer(module: str) -> int:
    return LAYERS[part(module)]


def test_every_part_has_a_layer() -> None:
    assert {part(m) for m in modules()} <= LAYERS.keys()


@pytest.mark.parametrize("module", modules())
def test_a_module_imports_only_its_layer_or_below(module: str) -> None:
    above = sorted(d for d in dependencies(module) if layer(d) > layer(module))
    assert above == [], f"{module} (layer {layer(module)}) imports {above}"


@pytest.mark.parametrize("module", [m for m in modules() if part(m) == "backend"])
def test_the_reference_backend_is_a_foreign_peer(module: str) -> None:
    """It speaks the protocol like any backend would: nothing of the agent's own machinery."""
    assert {part(d) for d in dependencies(module)} <= {"__init__", "errors", "settings", "logs", "core", "backend"}


def test_the_bridge_uses_of_tasks_only_the_queue_and_the_engine_probe() -> None:
    used = {d for m in modules() if part(m) == "bridge" for d in dependencies(m) if part(d) == "tasks"}
    assert used <= {"tasks.broker", "tasks.engine"}


def test_the_bridge_and_the_operator_surface_do_not_import_each_other() -> None:
    for module in modules():
        other = {"bridge": "ops", "ops": "bridge"}.get(part(module))
        assert not [d for d in dependencies(module) if part(d) == other], module


def _allowed(module: str, owners: set[str]) -> bool:
    return any(module == owner or module.startswith(owner + ".") for owner in owners)


@pytest.mark.parametrize("sdk", sorted(SDKS))
def test_each_sdk_is_imported_by_its_adapter_only(sdk: str) -> None:
    offenders = [
        f"{module}:{line}"
        for module in modules()
        for name, line in imported(module)
        if (name == sdk or name.startswith(sdk + ".")) and not _allowed(module, SDKS[sdk])
    ]
    assert offenders == []


def _reaches_a_client(node: ast.AST) -> bool:
    """``x.redis``, ``x._client`` or ``broker.client``: a Redis client got at from outside its owner."""
    if not isinstance(node, ast.Attribute) or (isinstance(node.value, ast.Name) and node.value.id == "self"):
        return False
    return node.attr in {"redis", "_client"} or (node.attr == "client" and "broker" in ast.unparse(node.value))


def test_no_redis_client_is_reached_outside_state() -> None:
    """The Store keeps its client to itself, and a broker's is Dramatiq's own."""
    offenders = [
        f"{module}:{node.lineno}: {ast.unparse(node)}"
        for module in modules()
        if not _allowed(module, {"state", "tasks.dramatiq_redis"})
        for node in ast.walk(tree(module))
        if _reaches_a_client(node)
    ]
    assert offenders == []


def _docstrings(module: str) -> set[int]:
    """The ids of the docstring constants of ``module``: prose may name Dramatiq's keys, code may not."""
    found = set()
    for node in ast.walk(tree(module)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def test_dramatiqs_insides_are_known_in_one_module() -> None:
    offenders = []
    for module in modules():
        if module == "tasks.dramatiq_redis":
            continue
        prose = _docstrings(module)
        for node in ast.walk(tree(module)):
            if isinstance(node, ast.alias) and node.name.split(".")[-1] in DRAMATIQ_PRIVATE_NAMES:
                offenders.append(f"{module}:{node.lineno}: import {node.name}")
            elif isinstance(node, ast.Attribute | ast.Name) and ast.unparse(node).split(".")[-1] in (
                DRAMATIQ_PRIVATE_NAMES
            ):
                offenders.append(f"{module}:{node.lineno}: {ast.unparse(node)}")
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in prose
                and any(key in node.value for key in DRAMATIQ_KEY_PARTS)
            ):
                offenders.append(f"{module}:{node.lineno}: {node.value[:40]!r}")
    assert offenders == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for successor in graph.get(node, ()):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_between_modules() -> None:
    assert _cycles({m: dependencies(m) for m in modules()}) == []


def test_no_import_cycle_between_packages() -> None:
    graph: dict[str, set[str]] = {}
    for module in modules():
        graph.setdefault(part(module), set()).update(part(d) for d in dependencies(module) if part(d) != part(module))
    assert _cycles(graph) == []


def test_the_checks_see_a_violation() -> None:
    """The rules above would catch what they forbid (so an empty result means something)."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    assert ours("hypernode_host.state.keys") == "state.keys" and ours("redis") is None
    assert "state.jobs" in dependencies("ops.inspect") or "state" in dependencies("ops.inspect")
    assert layer("cli") > layer("node") > layer("backend") > layer("ops") > layer("tasks") > layer("state")
