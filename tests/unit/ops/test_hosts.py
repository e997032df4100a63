"""`workers` and `top` sum the workers up per host: how many serve, which states the others are in, lost hosts."""

from __future__ import annotations

from hypernode_host.ops.inspect import WorkerRow, hosts_view


def row(host: str, slot: int, state: str = "serving", alive: bool = True) -> WorkerRow:
    return WorkerRow(host, slot, [], [], alive, alive and state != "unhealthy", "ok", None, None, None, state)


def test_each_host_says_how_its_workers_are() -> None:
    rows = [
        row("a", 0),
        row("a", 1, "busy"),
        row("a", 2, "draining"),
        row("a", 3, "down", alive=False),
        row("b", 0, "down", alive=False),
        row("c", 0),
    ]

    hosts = hosts_view(rows)

    assert [h.describe() for h in hosts] == [
        "a: 1 of 4 serving, 1 busy, 1 draining, 1 down",
        "b: lost: none of its 1 worker(s) is alive",
        "c: 1 of 1 serving",
    ]
    assert (hosts[0].workers, hosts[0].serving, hosts[0].down, hosts[0].other) == (4, 1, 1, {"busy": 1, "draining": 1})
