"""A pid is judged only in the pid namespace it belongs to."""

from __future__ import annotations

import os
import subprocess
import sys

from hypernode_host import pidns


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    return int(done.stdout)


def test_the_namespace_is_known_and_the_same_for_every_process_in_it() -> None:
    here = pidns.current()
    child = subprocess.run(
        [sys.executable, "-c", "from hypernode_host import pidns; print(pidns.current())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(here) == 16 and child.stdout.strip() == here


def test_a_pid_is_judged_in_our_namespace_only() -> None:
    dead = _dead_pid()
    assert pidns.exited(pidns.current(), dead)
    assert not pidns.exited(pidns.current(), os.getpid())
    assert not pidns.exited("0123456789abcdef", dead)  # another container's: its pid may live there
    assert not pidns.exited("", dead)  # a registration that does not say
    assert not pidns.exited(pidns.current(), 0)
