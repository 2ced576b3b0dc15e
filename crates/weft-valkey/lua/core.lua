-- core.lua: helpers shared by every Weft function.
--
-- Definitions: every partition function receives KEYS[1] = the partition's
-- key root `<prefix>{<tag>}:` and derives every key it touches from it, so
-- one call touches one hash slot. ARGV[1..3] are the call header:
-- retention_ms, the key prefix (channels are `<prefix>due` and
-- `<prefix>events`) and the partition number.
--
-- An execution is loaded into a table `e` with `e.f` (field -> string, the
-- stored hash) and `e.dirty` (fields changed since loading). Numbers are
-- written with `int` so they never pass through Lua's `%.14g` formatting.
--
-- Invariants (mirroring weft-core machine.rs): the index entry and the timers
-- of an execution are functions of its fields (`index_of`, `timers_of`);
-- `commit` moves both by the difference between a snapshot taken before the
-- change and one taken after, exactly as `Transition::between` does.

local SEP = '\31'
local TERMINAL = {
  completed = true, failed = true, cancelled = true, expired = true, skipped = true,
}
local NON_TERMINAL = { 'waiting', 'delayed', 'blocked', 'active', 'suspended' }
local STATES = {
  'waiting', 'delayed', 'blocked', 'active', 'suspended',
  'completed', 'failed', 'cancelled', 'expired', 'skipped',
}
local LEASE_FIELDS = {
  'lease_id', 'lease_epoch', 'lease_expires_at_ms', 'lease_ms', 'lease_worker_id',
  'lease_timeout_at_ms',
}

-- Error texts fixed by the state machine; JSON shaped like `ErrorInfo`.
local ERR_LEASE_LOST = '{"message":"the worker\'s lease expired","kind":"lease_lost"}'
local ERR_TIMED_OUT = '{"message":"the attempt exceeded timeout_ms","kind":"timed_out"}'
local ERR_DEADLINE = '{"message":"the execution reached its deadline","kind":"deadline"}'

-- Settles a flow member's transition on its flow; set by flow.lua, called
-- by `commit` and `purge`.
local flow_hook
-- Retention of flow members, set by flow.lua: `flow_purge_allowed(c, e)`,
-- `flow_after_purge(c, flow_id)`, `flow_timer_deferred(c, e, kind, due)`.
local flow_purge_allowed, flow_after_purge, flow_timer_deferred

-- Integers as decimal text; `%d` goes through a C long, exact below 2^53.
-- The last conversion is kept: most numbers a call writes are its `now`.
local int_last, int_text
local function int(n)
  if n ~= int_last then
    int_last, int_text = n, string.format('%d', n)
  end
  return int_text
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The call's context; `with_time` reads the store's clock (writers only,
-- so reads cost no `TIME`).
local function ctx(keys, args, with_time)
  local c = {
    root = keys[1],
    retention_ms = tonumber(args[1]),
    channel = args[2] .. 'due',
    events = args[2] .. 'events',
    partition = args[3],
    hints = true,
    ready_sent = {},
  }
  if with_time then
    c.now = now_ms()
  end
  return c
end

local function ok(...)
  return { 'ok', ... }
end

-- Walks the ZSET `key` in lexicographic order after member `after` ('' from
-- the first), examining at most `budget` members, and collects `pick(member)`
-- (nil skips it) until `want` items are found. Replies as every listing
-- function does: the last member examined, '1' when the set is exhausted,
-- and the items.
local function lex_scan(key, after, want, budget, pick)
  local items, last, scanned = {}, after, 0
  while scanned < budget do
    local min = '-'
    if last ~= '' then
      min = '(' .. last
    end
    local page = math.min(100, budget - scanned)
    local batch = redis.call('ZRANGEBYLEX', key, min, '+', 'LIMIT', 0, page)
    for _, member in ipairs(batch) do
      scanned = scanned + 1
      last = member
      local item = pick(member)
      if item then
        items[#items + 1] = item
        if #items >= want then
          return ok(last, '0', items)
        end
      end
    end
    if #batch < page then
      return ok(last, '1', items)
    end
  end
  return ok(last, '0', items)
end

local function err(kind, a, b)
  return { 'err', kind, a or '', b or '' }
end

local function split(text)
  local out = {}
  local start = 1
  while true do
    local i = string.find(text, SEP, start, true)
    if not i then
      out[#out + 1] = string.sub(text, start)
      return out
    end
    out[#out + 1] = string.sub(text, start, i - 1)
    start = i + 1
  end
end

local function exec_key(c, id)
  return c.root .. 'x:' .. id
end

-- The field prefix of an ended attempt's row (`end_attempt`).
local ATTEMPT = 'att:'

-- The list that held ended attempts' rows before library version 17; read
-- and purged still, never written.
local function attempts_key(c, id)
  return c.root .. 'a:' .. id
end

local function load(c, id)
  local flat = redis.call('HGETALL', exec_key(c, id))
  if #flat == 0 then
    return nil
  end
  local e = { f = {}, dirty = {} }
  for i = 1, #flat, 2 do
    e.f[flat[i]] = flat[i + 1]
  end
  return e
end

-- Every field a write that ends a lease (complete, fail) reads or may
-- clear: all but the bulky ones (payload, result, error, tags, signals).
-- `id` comes first in these lists, so a missing hash answers false there.
local CORE_FIELDS = {
  'id', 'state', 'lane', 'requires', 'priority', 'ready_at_ms', 'run_at_ms',
  'created_at_ms', 'updated_at_ms', 'finished_at_ms', 'deadline_at_ms', 'timeout_ms',
  'attempts', 'failures', 'reclaims', 'epoch', 'max_attempts', 'max_reclaims',
  'backoff_initial_ms', 'backoff_max_ms', 'backoff_multiplier', 'backoff_jitter',
  'lease_id', 'lease_epoch', 'lease_expires_at_ms', 'lease_ms', 'lease_worker_id',
  'lease_timeout_at_ms', 'attempt_started_at_ms', 'ended_lease_id', 'ended_lease_epoch',
  'ended_lease_by', 'suspension', 'suspension_at_once', 'flow_id',
}

-- The fields `complete` reads or may clear: an active execution's index,
-- timers, lease and attempt, and the lease that ended it.
local COMPLETE_FIELDS = {
  'id', 'state', 'lane', 'run_at_ms', 'updated_at_ms', 'finished_at_ms', 'deadline_at_ms',
  'attempts', 'epoch', 'lease_id', 'lease_epoch', 'lease_expires_at_ms', 'lease_ms',
  'lease_worker_id', 'lease_timeout_at_ms', 'attempt_started_at_ms', 'ended_lease_id',
  'ended_lease_epoch', 'ended_lease_by', 'flow_id',
}

-- The fields a claim reads or writes, and the task it replies: a waiting
-- execution's index, timers and counters, and what the worker is handed.
-- A waiting execution holds no lease or attempt fields to clear.
local CLAIM_FIELDS = {
  'id', 'state', 'kind', 'lane', 'payload', 'requires', 'priority', 'ready_at_ms',
  'deadline_at_ms', 'timeout_ms', 'attempts', 'epoch', 'updated_at_ms', 'flow_id', 'suspends',
}

-- `load` of `fields` only (`CORE_FIELDS`, `COMPLETE_FIELDS`,
-- `CLAIM_FIELDS`): the bulky fields a write does not need are never copied
-- into Lua. A flow member (settling reads the rest of it) and an execution
-- that was ever suspended (its signals are fields of their own) are loaded
-- whole. A record loaded in part (`e.core`) is never replied whole
-- (`record` refuses it).
local function load_core(c, id, fields)
  local v = redis.call('HMGET', exec_key(c, id), unpack(fields))
  if not v[1] then
    return nil
  end
  local e = { f = {}, dirty = {}, core = true }
  for i, k in ipairs(fields) do
    if v[i] then
      e.f[k] = v[i]
    end
  end
  if e.f.flow_id or e.f.suspends then
    return load(c, id)
  end
  return e
end

local function num(e, k)
  local v = e.f[k]
  if v == nil then
    return nil
  end
  return tonumber(v)
end

-- Sets (or, with nil, clears) a field and marks it for `save`.
local function put(e, k, v)
  if type(v) == 'number' then
    v = int(v)
  end
  if e.f[k] ~= v then
    e.f[k] = v
    e.dirty[k] = true
  end
end

local function save(c, e)
  local hset, hdel = {}, {}
  for k in pairs(e.dirty) do
    local v = e.f[k]
    if v == nil then
      hdel[#hdel + 1] = k
    else
      hset[#hset + 1] = k
      hset[#hset + 1] = v
    end
  end
  local key = exec_key(c, e.f.id)
  if #hset > 0 then
    redis.call('HSET', key, unpack(hset))
  end
  if #hdel > 0 then
    redis.call('HDEL', key, unpack(hdel))
  end
  e.dirty = {}
end

-- The execution as one reply value: its fields as a MessagePack map of
-- strings, packed in C. One bulk string costs the server and the client far
-- less than a flat array of every field and value.
local function record(e)
  if e.core then
    error('weft: a record loaded without its bulky fields cannot be replied whole')
  end
  return cmsgpack.pack(e.f)
end

-- What a worker is handed of a claimed execution, packed like `record`.
local TASK_FIELDS = {
  'id', 'kind', 'lane', 'payload', 'attempts', 'lease_id', 'lease_epoch',
  'lease_expires_at_ms', 'lease_ms', 'lease_worker_id', 'lease_timeout_at_ms',
}

-- The task of a claimed execution: its `TASK_FIELDS`, or the whole record
-- when it was loaded whole (a flow member's or a resumed execution's task
-- also carries inputs or signals).
local function task_record(e)
  if not e.core then
    return record(e)
  end
  local t = {}
  for _, k in ipairs(TASK_FIELDS) do
    t[k] = e.f[k]
  end
  return cmsgpack.pack(t)
end
