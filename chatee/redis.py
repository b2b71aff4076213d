"""Redis connection from settings (`CHATEE_REDIS_URL`, `CHATEE_REDIS_PASSWORD`,
`CHATEE_REDIS_MAX_CONNECTIONS`).

The pool is a blocking one: when all its connections are busy a command waits for one
(up to `POOL_WAIT_SECONDS`) instead of failing. redis-py's default pool holds 100 and refuses
the 101st concurrent command with "Too many connections" — under a burst of sends or of
WebSocket handshakes that dropped realtime pushes, turned cache hits into SQL reads and
refused sockets whose token could not be checked. Each open SSE or agent-event stream holds
one connection while it waits in XREAD, so size the pool above the streams a process serves.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.backoff import ExponentialBackoff
from redis.driver_info import DriverInfo
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.utils import get_lib_version

from chatee.config import Settings

POOL_WAIT_SECONDS = 10
# what redis-py sends in CLIENT SETINFO, read once: by default every new connection looks the
# version up in the installed package metadata (~1 ms each, a lot in a burst of connections)
DRIVER = DriverInfo(name="redis-py", lib_version=get_lib_version())


def connect_redis(settings: Settings) -> Redis:
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    pool = BlockingConnectionPool.from_url(
        settings.redis_connection_url(),
        max_connections=settings.redis_max_connections,
        timeout=POOL_WAIT_SECONDS,
        password=password,
        decode_responses=True,
        health_check_interval=30,
        socket_connect_timeout=5,
        socket_timeout=30,  # above the 10 s block of the event stream's XREAD
        retry=Retry(ExponentialBackoff(cap=1, base=0.05), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        driver_info=DRIVER,
    )
    return Redis.from_pool(pool)
