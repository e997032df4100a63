"""Everything the agent keeps in Redis: its keys, Lua scripts, records and the one way to connect.

Nothing outside this package (and tasks/dramatiq_redis.py, which owns Dramatiq's layout) holds a
Redis client; callers get typed records from the Store and catch the error types exported here.
"""

from hypernode_host.state.connect import RedisDown, RedisError, RedisRefused, connect, redis_url, write_refusal
from hypernode_host.state.store import Store

__all__ = ["RedisDown", "RedisError", "RedisRefused", "Store", "connect", "redis_url", "write_refusal"]
