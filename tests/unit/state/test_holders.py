"""A pid is judged only in the pid namespace it belongs to."""

from __future__ import annotations

import os
import subprocess
import sys

from hypernode_host.state import holders


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    return int(done.stdout)


def test_the_namespace_is_known_and_the_same_for_every_process_in_it() -> None:
    here = holders.current()
    child = subprocess.run(
        [sys.executable, "-c", "from hypernode_host.state import holders; print(holders.current())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(here) == 16 and child.stdout.strip() == here


def test_a_pid_is_judged_in_our_namespace_only() -> None:
    dead = _dead_pid()
    assert holders.exited(holders.current(), dead)
    assert not holders.exited(holders.current(), os.getpid())
    assert not holders.exited("0123456789abcdef", dead)  # another container's: its pid may live there
    assert not holders.exited("", dead)  # a registration that does not say
    assert not holders.exited(holders.current(), 0)
