-- Switchpoint budget ledger: one script for every operation, so that window arithmetic
-- exists in one place and every operation is atomic across router replicas.
--
-- Each budget instance (a Budget, or one tenant of an EachTenant budget) owns four keys:
--   spend     HASH  bucket id -> amount spent in that bucket
--   res       HASH  reservation id -> amount reserved
--   resexp    ZSET  reservation id -> expiry (ms)
--   reserved  STRING total of res
-- A window is `nbuckets` buckets of `bucket_ms`: Calendar windows use one bucket of the
-- whole duration (aligned to the Unix epoch, so 1d resets at 00:00 UTC); Rolling windows
-- use 60 buckets, so the spend of "the last duration" is exact to 1/60 of it.
-- Amounts are integers (tokens, or nano-units of money). The clock is Redis's own TIME.
--
-- ARGV[1] = op: "reserve" | "settle" | "settle_once" | "peek" | "grant" | "release"
--   settle_once: settle, unless the request's settle-once mark (the last key, in the same slot) is already
--   taken; takes it (for the reservation ttl) in the same atomic step, so exactly one Report of a request,
--   on any router replica, settles it and learns from it.
--   grant: a lease (ARGV[2] is its id) for one router to admit requests from without a call each: up to
--   `amount`, and at most 1/LEASE_SHARE of what is free, so routers near the limit get less; none when that is
--   less than `share` (the least worth holding), and every request then reserves on its own again. A lease is a reservation like
--   any other (held in `res` and `reserved`, charged in full if it expires, i.e. its router died).
--   release: give back `amount` of a lease (its router's unused part): what stays held is exactly the share of
--   its requests still in flight, each settled by its Report (below) or charged with the lease when it expires.
--   grant and release are each done once per lease id, so the client's retry of a dropped call is harmless.
-- ARGV[2] = reservation (or lease) id, ARGV[3] = reservation ttl (ms), ARGV[4] = force_soft (0/1)
-- then per budget i (KEYS[4i-3..4i]): limit, amount, bucket_ms, nbuckets, action, lease, share
--   action: 0 Observe, 1 Downgrade, 2 Reject
--   lease, share (settle): the lease the request was admitted from and the share it took; "" and 0 for a
--   request that reserved on its own. share (grant): the least lease worth granting. A settle releases the request's own reservation, or else its share of the
--   lease, and records actual usage; neither live (expired, so already charged in full): it does nothing.
-- Returns {status, index, {spent, reserved, limit, window_end_ms, free_at_ms, exhausted, granted}...}
--   status: 0 admitted (reserved in every budget), 1 rejected by budget `index`,
--           2 downgrade required by budget `index` (nothing reserved); settle/peek/grant/release: 0;
--           settle_once: 0, or 3 (no states) when the request was already settled.
--   granted: what a grant added to the lease (0 for the other ops).

local op = ARGV[1]
local rid = ARGV[2]
local ttl = tonumber(ARGV[3])
local force_soft = ARGV[4] == "1"
local nkeys = #KEYS
if op == "settle_once" then
  nkeys = nkeys - 1
  if not redis.call("SET", KEYS[#KEYS], "1", "NX", "PX", ttl) then
    return {3, 0}
  end
  op = "settle"
end
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = nkeys / 4
local EXPIRE_BATCH = 100
local LEASE_SHARE = 8
local STRIDE = 7
local RELEASED = "/released"

local function charge_expired(spend, res, resexp, reserved, cur)
  -- A reservation never settled is charged in full: the request was admitted and probably ran.
  local stale = redis.call("ZRANGEBYSCORE", resexp, "-inf", now, "LIMIT", 0, EXPIRE_BATCH)
  for _, id in ipairs(stale) do
    local amt = redis.call("HGET", res, id)
    if amt then
      redis.call("DECRBY", reserved, amt)
      redis.call("HDEL", res, id)
      redis.call("HINCRBY", spend, cur, amt)
    end
    redis.call("ZREM", resexp, id)
  end
end

local function window_spend(spend, cur, nbuckets)
  -- Sum the buckets inside the window; drop the ones that left it. Returns total and the buckets, oldest first.
  local flat = redis.call("HGETALL", spend)
  local total = 0
  local buckets = {}
  for j = 1, #flat, 2 do
    local b = tonumber(flat[j])
    local amt = tonumber(flat[j + 1])
    if b <= cur - nbuckets then
      redis.call("HDEL", spend, flat[j])
    else
      total = total + amt
      table.insert(buckets, {b, amt})
    end
  end
  table.sort(buckets, function(a, b) return a[1] < b[1] end)
  return total, buckets
end

local states = {}
local verdict, culprit = 0, 0
for i = 1, n do
  local spend, res, resexp, reserved = KEYS[4 * i - 3], KEYS[4 * i - 2], KEYS[4 * i - 1], KEYS[4 * i]
  local base = 4 + (i - 1) * STRIDE
  local limit = tonumber(ARGV[base + 1])
  local amount = tonumber(ARGV[base + 2])
  local bucket_ms = tonumber(ARGV[base + 3])
  local nbuckets = tonumber(ARGV[base + 4])
  local action = tonumber(ARGV[base + 5])
  local lease = ARGV[base + 6]
  local share = tonumber(ARGV[base + 7])
  local cur = math.floor(now / bucket_ms)

  charge_expired(spend, res, resexp, reserved, cur)
  local spent, buckets = window_spend(spend, cur, nbuckets)
  local held = tonumber(redis.call("GET", reserved) or "0")
  local already = op == "reserve" and redis.call("HEXISTS", res, rid) == 1
  local exhausted = 0
  local free_at = 0
  if op == "reserve" and not already and spent + held + amount > limit then
    exhausted = 1
    -- When does the request fit? When enough old buckets leave the window (rolling), or
    -- at the next window (calendar). 0: only when in-flight reservations settle, or never.
    local freed = 0
    for _, bucket in ipairs(buckets) do
      freed = freed + bucket[2]
      if spent - freed + held + amount <= limit then
        free_at = (bucket[1] + nbuckets) * bucket_ms
        break
      end
    end
    if action == 2 and verdict ~= 1 then
      verdict, culprit = 1, i
    elseif action == 1 and verdict == 0 and not force_soft then
      verdict, culprit = 2, i
    end
  end
  states[i] = {spend, res, resexp, reserved, amount, bucket_ms, nbuckets, cur,
               {spent, held, limit, (cur + 1) * bucket_ms, free_at, exhausted, 0}, lease, share}
end

local function release(res, resexp, reserved, id, amt, s)
  -- Give back up to `amt` of reservation `id` (one that holds nothing any more goes); returns what it still holds.
  local held = tonumber(redis.call("HGET", res, id) or "0")
  local give = math.min(amt, held)
  if give > 0 then
    redis.call("DECRBY", reserved, give)
    s[9][2] = s[9][2] - give
  end
  if held - give > 0 then
    redis.call("HINCRBY", res, id, -give)
  else
    redis.call("HDEL", res, id)
    redis.call("ZREM", resexp, id)
  end
  return held - give
end

for i = 1, n do
  local s = states[i]
  local spend, res, resexp, reserved, amount, bucket_ms, nbuckets, cur = s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8]
  local keep = nbuckets * bucket_ms + ttl
  local lease, share = s[10], s[11]
  if op == "reserve" and verdict == 0 and redis.call("HEXISTS", res, rid) == 0 then
    redis.call("HSET", res, rid, amount)
    redis.call("ZADD", resexp, now + ttl, rid)
    redis.call("INCRBY", reserved, amount)
    s[9][2] = s[9][2] + amount
  elseif op == "settle" then
    local amt = redis.call("HGET", res, rid)
    if amt then
      -- Only a live reservation settles: a retried or late Report never counts twice.
      redis.call("HDEL", res, rid)
      redis.call("ZREM", resexp, rid)
      redis.call("DECRBY", reserved, amt)
      redis.call("HINCRBY", spend, cur, amount)
      s[9][1] = s[9][1] + amount
      s[9][2] = s[9][2] - tonumber(amt)
    elseif lease ~= "" then
      local from = redis.call("HEXISTS", res, lease) == 1 and lease
                   or redis.call("HEXISTS", res, lease .. RELEASED) == 1 and lease .. RELEASED
      if from then
        release(res, resexp, reserved, from, share, s)
        redis.call("HINCRBY", spend, cur, amount)
        s[9][1] = s[9][1] + amount
      end
    end
  elseif op == "grant" then
    -- once per lease id: a retried grant answers what the first one granted
    local held = redis.call("HGET", res, rid)
    if held then
      s[9][7] = tonumber(held)
    else
      local free = s[9][3] - s[9][1] - s[9][2]
      local granted = math.min(amount, math.floor(free / LEASE_SHARE))
      if granted >= math.max(1, share) then
        redis.call("HSET", res, rid, granted)
        redis.call("ZADD", resexp, now + ttl, rid)
        redis.call("INCRBY", reserved, granted)
        s[9][2] = s[9][2] + granted
        s[9][7] = granted
      end
    end
  elseif op == "release" then
    -- Once per lease: what stays (the share of requests still in flight) moves to `<id>/released`, so a retried
    -- release finds nothing to give back; it is held until the reservation ttl after the release.
    local left = release(res, resexp, reserved, rid, amount, s)
    if left > 0 then
      redis.call("HDEL", res, rid)
      redis.call("ZREM", resexp, rid)
      redis.call("HSET", res, rid .. RELEASED, left)
      redis.call("ZADD", resexp, now + ttl, rid .. RELEASED)
    end
  end
  if op ~= "peek" then
    for _, key in ipairs({spend, res, resexp, reserved}) do
      redis.call("PEXPIRE", key, keep)
    end
  end
end

local out = {verdict, culprit}
for i = 1, n do
  table.insert(out, states[i][9])
end
return out
