"""Lua scripts, kept as .lua files beside the Python that runs them (package data: the wheel carries them)."""

from __future__ import annotations

from importlib import resources

import redis
from redis.commands.core import Script

OURS = "hypernode_host.state"


def source(name: str, package: str = OURS) -> str:
    """The text of ``lua/<name>.lua`` in ``package``."""
    return (resources.files(package) / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def register(client: redis.Redis, name: str, package: str = OURS) -> Script:
    """The script ``name`` of ``package``, ready to run on ``client`` (EVALSHA, loaded on first use)."""
    return client.register_script(source(name, package))
