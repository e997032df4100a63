"""Which Redis a command connects to: HN_REDIS_URL, else the URL of the node's own Redis that `up` wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from hypernode_host.errors import ConfigError
from hypernode_host.settings import Settings
from hypernode_host.state.connect import URL_FILE, redis_url


def test_without_hn_redis_url_commands_connect_to_the_url_up_wrote(tmp_path: Path) -> None:
    assert redis_url(Settings.from_env({"HN_STATE_DIR": str(tmp_path)})) == "redis://127.0.0.1:6379/0"
    (tmp_path / URL_FILE).write_text("unix://:pw@/x/redis.sock?db=0\n")

    own = Settings.from_env({"HN_STATE_DIR": str(tmp_path)})
    given = Settings.from_env({"HN_STATE_DIR": str(tmp_path), "HN_REDIS_URL": "redis://10.0.0.5:6379/0"})

    assert (redis_url(own), own.own_redis) == ("unix://:pw@/x/redis.sock?db=0", True)
    assert (redis_url(given), given.own_redis) == ("redis://10.0.0.5:6379/0", False)
    (tmp_path / URL_FILE).unlink()
    (tmp_path / URL_FILE).mkdir()  # unreadable as a file, even for root
    unreadable = Settings.from_env({"HN_STATE_DIR": str(tmp_path)})  # settings read no file
    with pytest.raises(ConfigError, match=r"HN_REDIS_URL is not set and .*redis.url cannot be read"):
        redis_url(unreadable)
