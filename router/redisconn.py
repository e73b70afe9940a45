"""One `--redis` URL for one Redis server or a Redis Cluster: the server says which (INFO cluster).

A user configures the URL once; a cluster seed (any node's address) and a single server look the
same. The first client made for a URL asks `INFO cluster` with a short timeout and remembers the
answer for the process: `cluster_enabled:1` gives a `redis.asyncio.cluster.RedisCluster` (it reads
the slot map from the seed and follows MOVED/ASK), anything else the plain client on a blocking
pool. A server that cannot be reached at that moment is taken for a single server (and asked again
for the next client), so a router still starts while Redis is down.

What the cluster client does not do, and its callers therefore avoid (redis-py 8.1, checked in its
source and issues): EVALSHA is refused inside a cluster pipeline (redis/redis-py#2914, fixed after
8.1), so scripts run as plain calls there; every script's keys share one slot (hash tags), as Redis
Cluster requires; its connection pool per node does not block when full, it raises
MaxConnectionsError (a RedisError, so the callers' failure handling applies).
"""

from __future__ import annotations

import logging

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

log = logging.getLogger("switchpoint.router.redis")

AsyncClient = aioredis.Redis | RedisCluster

_kinds: dict[str, bool] = {}


def is_cluster(url: str, timeout_s: float = 1.0) -> bool:
    """Whether the server at `url` runs in cluster mode (remembered per URL once known)."""
    known = _kinds.get(url)
    if known is not None:
        return known
    try:
        with redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s) as probe:
            known = bool(int(probe.info("cluster").get("cluster_enabled", 0)))
    except (redis.RedisError, OSError) as exc:
        log.warning("could not ask %s whether it is a Redis Cluster (%s); treating it as one server for now",
                    _host(url), exc)
        return False
    _kinds[url] = known
    if known:
        log.info("%s is a Redis Cluster: keys are spread by hash tag over its masters", _host(url))
    return known


def async_client(url: str, *, timeout_s: float, max_connections: int, retries: int = 1,
                 protocol: int | None = None, blocking: bool = True) -> AsyncClient:
    """A client for `url`, a single server or a cluster seed. `blocking`: for a single server, a pool that waits
    (up to the timeout) for a free connection instead of failing at once."""
    kwargs: dict[str, object] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    if protocol is not None:
        kwargs["protocol"] = protocol
    if is_cluster(url):
        return RedisCluster.from_url(url, max_connections=max_connections, retry=Retry(NoBackoff(), retries),
                                     **kwargs)  # type: ignore[arg-type]
    pool_class = aioredis.BlockingConnectionPool if blocking else aioredis.ConnectionPool
    extra = {"timeout": timeout_s} if blocking else {}
    pool = pool_class.from_url(url, max_connections=max_connections, retry=Retry(NoBackoff(), retries),
                               **extra, **kwargs)  # type: ignore[arg-type]
    return aioredis.Redis(connection_pool=pool)


async def close(client: AsyncClient) -> None:
    await client.aclose()
    if isinstance(client, aioredis.Redis):
        await client.connection_pool.disconnect()


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}"
