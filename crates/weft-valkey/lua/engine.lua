-- engine.lua: the store's record of P and the engines' partition leases, all
-- on the one engine hash tag (KEYS[1] = `<prefix>{engine}:`).
--
-- Definitions: `members` is a ZSET instance -> membership expiry; `owners`
-- a HASH partition -> `<expires_at_ms>|<instance>`.
-- Invariants: an instance holds at most ceil(P / live instances) partitions
-- after its own rebalance; a partition whose lease has lapsed is free.

-- ARGV[1] P to record if none is recorded yet. Replies the recorded P.
local function fn_init(keys, args)
  local meta = keys[1] .. 'meta'
  redis.call('HSETNX', meta, 'partitions', args[1])
  redis.call('HSETNX', meta, 'created_at_ms', int(now_ms()))
  return ok(redis.call('HGET', meta, 'partitions'))
end

local function owner_of(value)
  local bar = string.find(value, '|', 1, true)
  if not bar then
    return 0, ''
  end
  return tonumber(string.sub(value, 1, bar - 1)), string.sub(value, bar + 1)
end

-- ARGV[1] instance, [2] lease_ms, [3] '1' when leaving, [4] P.
-- Renews the instance's membership and leases, releases what it holds over
-- its fair share (highest partitions first) and takes free or lapsed
-- partitions (lowest first) up to it. Replies the partitions it holds.
local function fn_rebalance(keys, args)
  local members, owners = keys[1] .. 'members', keys[1] .. 'owners'
  local now = now_ms()
  local me, lease_ms, count = args[1], tonumber(args[2]), tonumber(args[4])
  local expires = now + lease_ms
  local mine, others = {}, {}
  local held = redis.call('HGETALL', owners)
  for i = 1, #held, 2 do
    local p = tonumber(held[i])
    local until_ms, who = owner_of(held[i + 1])
    if who == me then
      mine[#mine + 1] = p
    elseif until_ms > now then
      others[p] = true
    end
  end
  table.sort(mine)
  if args[3] == '1' then
    redis.call('ZREM', members, me)
    for _, p in ipairs(mine) do
      redis.call('HDEL', owners, int(p))
    end
    return ok({})
  end
  redis.call('ZADD', members, int(expires), me)
  redis.call('ZREMRANGEBYSCORE', members, '-inf', int(now))
  local live = redis.call('ZCARD', members)
  local target = math.ceil(count / live)
  local keep = {}
  for _, p in ipairs(mine) do
    if #keep < target and p < count then
      keep[#keep + 1] = p
    else
      redis.call('HDEL', owners, int(p))
    end
  end
  local taken = {}
  for _, p in ipairs(keep) do
    taken[p] = true
  end
  for p = 0, count - 1 do
    if #keep >= target then
      break
    end
    if not taken[p] and not others[p] then
      keep[#keep + 1] = p
    end
  end
  table.sort(keep)
  local out = {}
  for _, p in ipairs(keep) do
    redis.call('HSET', owners, int(p), int(expires) .. '|' .. me)
    out[#out + 1] = int(p)
  end
  return ok(out)
end

-- Replies the owners HASH as it is: partition -> `<expires_at_ms>|<instance>`.
local function fn_owners(keys, args)
  return ok(redis.call('HGETALL', keys[1] .. 'owners'))
end
