"""The test suite's Redis is a real Redis 8 server with vector sets (used by the cache and budgets)."""

from __future__ import annotations

import redis


def test_redis_8_with_vector_sets(redis_url):
    client = redis.Redis.from_url(redis_url)
    assert client.ping()
    assert int(client.info("server")["redis_version"].split(".")[0]) >= 8
    client.execute_command("VADD", "vs", "VALUES", 3, 1.0, 0.0, 0.0, "a")
    client.execute_command("VADD", "vs", "VALUES", 3, 0.0, 1.0, 0.0, "b")
    nearest = client.execute_command("VSIM", "vs", "VALUES", 3, 0.9, 0.1, 0.0, "COUNT", 1)
    assert nearest[0] in (b"a", "a")
