"""`switchpoint cache stats` and `switchpoint cache flush`: the logic behind the thin CLI commands."""

from __future__ import annotations

import asyncio
import json
import sys

from redis.exceptions import RedisError

from switchpoint.router.cache.redis_store import RedisStore, redacted


async def store_stats(url: str) -> dict[str, object]:
    store = RedisStore(url, lookup_timeout_s=2.0, write_timeout_s=10.0)
    try:
        return await store.stats()
    finally:
        await store.close()


async def flush(url: str, policy: str, tenant: str | None = None) -> int:
    store = RedisStore(url, lookup_timeout_s=2.0, write_timeout_s=10.0)
    try:
        return await store.flush(policy, tenant)
    finally:
        await store.close()


def run_stats(url: str, as_json: bool) -> int:
    try:
        stats = asyncio.run(store_stats(url))
    except (RedisError, OSError) as exc:
        print(f"switchpoint cache stats: {redacted(url)}: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(stats))
        return 0
    print(f"cache at {stats['url']}: {stats['entries']:,} entries in {stats['scopes']:,} scopes "
          f"({stats['vectors']:,} vectors); memory {stats['used_memory']:,} bytes"
          f" (maxmemory {stats['maxmemory'] or 'unlimited'}); evicted keys {stats['evicted_keys']:,}, "
          f"expired keys {stats['expired_keys']:,}")
    policies: dict[str, int] = stats["policies"]  # type: ignore[assignment]
    for policy, count in sorted(policies.items()):
        print(f"  {policy:<50}{count:>10,}")
    return 0


def run_flush(url: str, policy: str, tenant: str | None) -> int:
    if policy.count("/") != 1:
        print("switchpoint cache flush: --policy is NAMESPACE/NAME of the RoutingPolicy", file=sys.stderr)
        return 2
    try:
        removed = asyncio.run(flush(url, policy, tenant))
    except (RedisError, OSError) as exc:
        print(f"switchpoint cache flush: {redacted(url)}: {exc}", file=sys.stderr)
        return 1
    who = f" for tenant {tenant}" if tenant is not None else ""
    print(f"removed {removed:,} cache entries of {policy}{who}")
    return 0
