-- index.lua: the index entry and timers of an execution,
-- derived from its fields, and `commit`, which moves them by difference.
--
-- Definitions: a `waiting` execution sits in the ready ZSET of its
-- (lane, capability set), score `1000 - priority`, member
-- `%016d(ready_at_ms) .. id`: equal scores order by member, so one ZSET
-- orders by priority (high first), then ready time, then id, exactly and
-- without an epoch window. Every other state is a SET `s:<state>|<lane>` of
-- ids, so a lane's depth in a state is one SCARD and no counter is kept.

local function ready_key(c, lane, capset)
  return c.root .. 'r|' .. lane .. '|' .. capset
end

local function capsets_key(c, lane)
  return c.root .. 'c|' .. lane
end

-- The capability sets of `lane` that may hold ready work: the empty set
-- always, never listed (most work needs no capability, and listing it
-- would cost a write on every submit), then those listed in `c|<lane>`.
-- (A library before version 13 listed the empty set too; it is skipped.)
local function lane_capsets(c, lane)
  local sets = { '' }
  for _, capset in ipairs(redis.call('SMEMBERS', capsets_key(c, lane))) do
    if capset ~= '' then
      sets[#sets + 1] = capset
    end
  end
  return sets
end

local function state_key(c, state, lane)
  return c.root .. 's:' .. state .. '|' .. lane
end

local function ready_member(e)
  return string.format('%016d', num(e, 'ready_at_ms')) .. e.f.id
end

local function index_of(c, e)
  local st = e.f.state
  if st == 'waiting' then
    local capset = e.f.requires or ''
    return {
      key = ready_key(c, e.f.lane, capset),
      zset = true,
      score = 1000 - num(e, 'priority'),
      member = ready_member(e),
      lane = e.f.lane,
      capset = capset,
    }
  end
  return { key = state_key(c, st, e.f.lane), member = e.f.id }
end

-- The timers an execution must have: kind -> due_ms (`machine::timers_of`).
local function timers_of(c, e)
  local t = {}
  local st = e.f.state
  if st == 'delayed' then
    if e.f.run_at_ms then
      t.delay = num(e, 'run_at_ms')
    end
  elseif st == 'active' and e.f.lease_id then
    t.lease_expiry = num(e, 'lease_expires_at_ms')
    if e.f.lease_timeout_at_ms then
      t.attempt_timeout = num(e, 'lease_timeout_at_ms')
    end
  elseif st == 'suspended' then
    local s = suspension_of(e)
    local first = s and next_timeout(s)
    if first then
      t.waitpoint_timeout = first.timeout_at
    end
  end
  if TERMINAL[st] then
    local finished = num(e, 'finished_at_ms') or num(e, 'updated_at_ms')
    t.retention = finished + c.retention_ms
  elseif e.f.deadline_at_ms then
    t.deadline = num(e, 'deadline_at_ms')
  end
  return t
end

local function snapshot(c, e)
  return {
    index = index_of(c, e),
    timers = timers_of(c, e),
    state = e.f.state,
    lane = e.f.lane,
  }
end

-- Deferred index and timer writes. A call over many executions (a batch,
-- a claim of several) sets `c.defer = deferral()`: each SADD, SREM, ZADD
-- and ZREM of an index or the due-index then joins one variadic command
-- per (command, key), sent by `flush_deferred` before the call replies.
-- Nothing in such a call reads those keys back except the due-index's
-- earliest entry for a hint, which may then be earlier than the truth:
-- the engine wakes early and finds the true one. A member met again with
-- another command or score sends what is pending first, so every member
-- sees its writes in order; met again the same way, it is sent once.
local function deferral()
  return { groups = {}, order = {}, seen = {}, ended = {}, any = false }
end

-- Sends what is deferred; the `E` events of executions that ended go as
-- one message per state, their ids joined by commas.
local function flush_deferred(c)
  local d = c.defer
  if d and d.any then
    for _, command in ipairs(d.order) do
      redis.call(unpack(command))
    end
    for state, ids in pairs(d.ended) do
      redis.call('PUBLISH', c.events, 'E|' .. state .. '|' .. table.concat(ids, ','))
    end
    c.defer = deferral()
  end
end

-- `cmd key [score] member`, now or deferred (see `deferral`).
local function index_write(c, cmd, key, member, score)
  local d = c.defer
  if not d then
    if score then
      redis.call(cmd, key, score, member)
    else
      redis.call(cmd, key, member)
    end
    return
  end
  local tag = key .. SEP .. member
  local how = cmd .. (score or '')
  local before = d.seen[tag]
  if before == how then
    return
  end
  if before then
    flush_deferred(c)
    d = c.defer
  end
  d.seen[tag] = how
  d.any = true
  local group = d.groups[cmd .. SEP .. key]
  if not group then
    group = { cmd, key }
    d.groups[cmd .. SEP .. key] = group
    d.order[#d.order + 1] = group
  end
  if score then
    group[#group + 1] = score
  end
  group[#group + 1] = member
end

local function index_add(c, ix)
  if ix.zset then
    index_write(c, 'ZADD', ix.key, ix.member, int(ix.score))
    if ix.capset ~= '' then
      index_write(c, 'SADD', capsets_key(c, ix.lane), ix.capset)
    end
  else
    index_write(c, 'SADD', ix.key, ix.member)
  end
end

-- A capability set stays listed for its lane after its ZSET empties; the
-- next claim that finds it empty unlists it (one command there instead of
-- a ZCARD on every removal).
local function index_remove(c, ix)
  if ix.zset then
    index_write(c, 'ZREM', ix.key, ix.member)
  else
    index_write(c, 'SREM', ix.key, ix.member)
  end
end

local function timer_member(kind, id)
  return id .. '|' .. kind
end

local function timer_parts(member)
  local bar = string.find(member, '|', 1, true) or 0
  return string.sub(member, bar + 1), string.sub(member, 1, bar - 1)
end

local function earliest_due(c)
  local first = redis.call('ZRANGE', c.root .. 't', 0, 0, 'WITHSCORES')
  if first[2] then
    return tonumber(first[2])
  end
  return nil
end

-- Moves timers from `old` to `new` (kind -> due); hints an earlier timer.
local function move_timers(c, id, old, new)
  -- `first`: the earliest timer added. `bound`: the earliest of `old`
  -- still in `t` when the hint is decided, so the due-index's earliest is
  -- at most `bound` and an added timer at or after it needs no read of
  -- `t` and no hint. A retention timer is left out: a flow member's may
  -- have been dropped while its flow runs (`fire`).
  local first, bound
  for kind, due in pairs(new) do
    if old[kind] ~= due and (first == nil or due < first) then
      first = due
    end
  end
  for kind, due in pairs(old) do
    if kind ~= 'retention' and (bound == nil or due < bound) then
      bound = due
    end
  end
  local hint = c.hints and first and (bound == nil or first < bound)
  if hint then
    -- `c.known_due`: the earliest due time the engine will wake for, read
    -- once per call and lowered by each hint the call sends. Timers the
    -- call removed leave it too early, never too late.
    if c.known_due == nil then
      c.known_due = earliest_due(c) or false
    end
    hint = not c.known_due or first < c.known_due
    if hint then
      c.known_due = first
    end
  end
  for kind, due in pairs(old) do
    if new[kind] ~= due then
      index_write(c, 'ZREM', c.root .. 't', timer_member(kind, id))
    end
  end
  for kind, due in pairs(new) do
    if old[kind] ~= due then
      index_write(c, 'ZADD', c.root .. 't', timer_member(kind, id), int(due))
    end
  end
  if hint then
    redis.call('PUBLISH', c.channel, c.partition .. ':' .. int(first))
  end
end


local function same_index(a, b)
  return a.key == b.key and a.member == b.member and a.score == b.score
end

-- Publishes (or, in a batch call, defers) `E|<state>|<id>`: `id` ended.
local function publish_ended(c, state, id)
  local d = c.defer
  if d then
    local ids = d.ended[state] or {}
    ids[#ids + 1] = id
    d.ended[state] = ids
    d.any = true
  else
    redis.call('PUBLISH', c.events, 'E|' .. state .. '|' .. id)
  end
end

-- Publishes `R|<partition>|<lane>|<capset>` when an execution becomes
-- claimable and `E|<state>|<id>` when it ends (deferred in batch calls:
-- `E|<state>|<id>,<id>,…`), for `Store::events` (advisory, may be lost).
local function publish_events(c, e, before, after)
  if after.index.zset and (before == nil or not same_index(before.index, after.index)) then
    local event = 'R|' .. c.partition .. '|' .. e.f.lane .. '|' .. (e.f.requires or '')
    -- One event per (lane, capability set) and call says all it needs to.
    if not c.ready_sent[event] then
      c.ready_sent[event] = true
      redis.call('PUBLISH', c.events, event)
    end
  end
  if TERMINAL[after.state] and (before == nil or not TERMINAL[before.state]) then
    publish_ended(c, after.state, e.f.id)
  end
end

-- Writes `e` and moves its index and timers from `before`
-- (a snapshot, or nil for a new execution).
local function commit(c, e, before)
  save(c, e)
  local after = snapshot(c, e)
  publish_events(c, e, before, after)
  if before == nil then
    index_add(c, after.index)
    move_timers(c, e.f.id, {}, after.timers)
  else
    if not same_index(before.index, after.index) then
      index_remove(c, before.index)
      index_add(c, after.index)
    end
    move_timers(c, e.f.id, before.timers, after.timers)
  end
  if e.f.flow_id then
    -- Settling reads the flow's members and indexes: nothing deferred.
    local d = c.defer
    flush_deferred(c)
    c.defer = nil
    flow_hook(c, e.f.flow_id, before and before.state, e)
    if d then
      c.defer = deferral()
    end
  end
end

-- Retention: removes everything of the execution.
local function purge(c, e, before)
  local id = e.f.id
  redis.call('DEL', exec_key(c, id), attempts_key(c, id))
  index_remove(c, before.index)
  move_timers(c, id, before.timers, {})
  redis.call('ZREM', c.root .. 'all', id)
  local key = e.f.idempotency_key
  if key and redis.call('HGET', c.root .. 'k', key) == id then
    redis.call('HDEL', c.root .. 'k', key)
  end
  if e.f.flow_id then
    flow_after_purge(c, e.f.flow_id)
  end
end
