-- partition.lua: the timer drain, the audit and the lane depths.

-- ARGV[4] max timers to apply. Takes up to max due timers, earliest first
-- (then by id, then kind), and fires each on its execution as loaded at that
-- moment, exactly like the SQL store: a timer that an earlier one of the
-- same batch made stale is dropped (and counted), one set during the batch
-- waits for the next tick. A dropped timer leaves the due-index if it is
-- still due at the same time. Then the outbox is due: as many entries as
-- the batch has room left for continue, oldest first (each counted as
-- applied), as in the SQL store. Replies applied, dropped, the earliest
-- remaining due time (now while the outbox holds entries, '' if nothing is
-- due) and the store's time.
local function fn_tick(keys, args)
  local c = ctx(keys, args, true)
  c.hints = false
  local tkey = c.root .. 't'
  local applied, dropped = 0, 0
  local due_now = redis.call('ZRANGEBYSCORE', tkey, '-inf', int(c.now), 'WITHSCORES',
    'LIMIT', 0, tonumber(args[4]))
  for i = 1, #due_now, 2 do
    local member, due = due_now[i], tonumber(due_now[i + 1])
    local kind, id = timer_parts(member)
    local e = load(c, id)
    local outcome = 'dropped'
    if e then
      outcome = fire(c, e, kind, due)
    end
    if outcome == 'dropped' then
      if tonumber(redis.call('ZSCORE', tkey, member)) == due then
        redis.call('ZREM', tkey, member)
      end
      dropped = dropped + 1
    else
      applied = applied + 1
    end
  end
  local room = tonumber(args[4]) - applied - dropped
  if room > 0 then
    applied = applied + flow_drain_outbox(c, room)
  end
  local next_due
  if flow_outbox_pending(c) then
    next_due = c.now
  else
    next_due = earliest_due(c)
  end
  return ok(int(applied), int(dropped), next_due and int(next_due) or '', int(c.now))
end

local function audit_execution(c, e, problem)
  local id = e.f.id
  local ix = index_of(c, e)
  if ix.zset then
    if tonumber(redis.call('ZSCORE', ix.key, ix.member)) ~= ix.score then
      problem(id .. ' is waiting but not in its ready index ' .. ix.key)
    end
    if ix.capset ~= '' and redis.call('SISMEMBER', capsets_key(c, ix.lane), ix.capset) == 0 then
      problem(id .. ': capability set "' .. ix.capset .. '" is not listed for its lane')
    end
  elseif redis.call('SISMEMBER', ix.key, id) == 0 then
    problem(id .. ' is ' .. e.f.state .. ' but not in ' .. ix.key)
  end
  for kind, due in pairs(timers_of(c, e)) do
    local score = redis.call('ZSCORE', c.root .. 't', timer_member(kind, id))
    if tonumber(score) ~= due and not flow_timer_deferred(c, e, kind, due) then
      problem(id .. ' lacks its ' .. kind .. ' timer at ' .. int(due))
    end
  end
  local key = e.f.idempotency_key
  if key and redis.call('HGET', c.root .. 'k', key) ~= id then
    problem(id .. ': idempotency key "' .. key .. '" does not point back at it')
  end
  if (e.f.state == 'active') ~= (e.f.lease_id ~= nil) then
    problem(id .. ' is ' .. e.f.state .. ' but its lease is ' .. tostring(e.f.lease_id))
  end
  if e.f.state == 'suspended' and e.f.suspension == nil then
    problem(id .. ' is suspended but records no suspension')
  end
  if (e.f.lease_id ~= nil) ~= (e.f.attempt_started_at_ms ~= nil) then
    problem(id .. ': a lease without its running attempt, or the reverse')
  end
  if redis.call('SISMEMBER', c.root .. 'lanes', e.f.lane) == 0 then
    problem(id .. ': lane ' .. e.f.lane .. ' is not listed')
  end
end

-- Every entry of every index must belong to an execution that wants it.
local function audit_indexes(c, problem)
  local lanes = redis.call('SMEMBERS', c.root .. 'lanes')
  for _, lane in ipairs(lanes) do
    for _, st in ipairs(STATES) do
      for _, id in ipairs(redis.call('SMEMBERS', state_key(c, st, lane))) do
        local e = load(c, id)
        if e == nil or e.f.state ~= st or e.f.lane ~= lane then
          problem('index ' .. st .. '|' .. lane .. ' holds ' .. id .. ', which is not there')
        end
      end
    end
  end
  for _, lane in ipairs(lanes) do
    for _, capset in ipairs(lane_capsets(c, lane)) do
      local got = redis.call('ZRANGE', ready_key(c, lane, capset), 0, -1, 'WITHSCORES')
      for i = 1, #got, 2 do
        local id = string.sub(got[i], 17)
        local e = load(c, id)
        local want = e and e.f.state == 'waiting' and index_of(c, e)
        if not want or want.key ~= ready_key(c, lane, capset) or want.member ~= got[i]
          or want.score ~= tonumber(got[i + 1]) then
          problem('ready index ' .. lane .. '|' .. capset .. ' holds a stale entry for ' .. id)
        end
      end
    end
  end
end

local function audit_timers(c, problem)
  local all = redis.call('ZRANGE', c.root .. 't', 0, -1, 'WITHSCORES')
  for i = 1, #all, 2 do
    local member = all[i]
    local kind, id = timer_parts(member)
    local e = load(c, id)
    if e == nil or timers_of(c, e)[kind] ~= tonumber(all[i + 1]) then
      problem('timer ' .. member .. ' at ' .. all[i + 1] .. ' does not match its execution')
    end
  end
end

-- Compares every execution with its index entry and timers,
-- and every index entry and timer with its execution. Replies the number
-- of executions and the problems found (at most 1000).
local function fn_audit(keys, args)
  local c = ctx(keys, args)
  local problems = {}
  local function problem(text)
    if #problems < 1000 then
      problems[#problems + 1] = text
    end
  end
  local ids = redis.call('ZRANGE', c.root .. 'all', 0, -1)
  for _, id in ipairs(ids) do
    local e = load(c, id)
    if e == nil then
      problem(id .. ' is listed but has no hash')
    else
      audit_execution(c, e, problem)
    end
  end
  audit_indexes(c, problem)
  audit_timers(c, problem)
  audit_flows(c, problem)
  return ok(int(#ids), problems)
end

-- Replies the partition's non-zero depths as `lane|state`, count pairs:
-- the ready ZSETs' sizes for `waiting`, the state SETs' for the others.
local function fn_depths(keys, args)
  local c = ctx(keys, args)
  local out = {}
  local function add(lane, state, n)
    if n > 0 then
      out[#out + 1] = lane .. '|' .. state
      out[#out + 1] = int(n)
    end
  end
  for _, lane in ipairs(redis.call('SMEMBERS', c.root .. 'lanes')) do
    local waiting = 0
    for _, capset in ipairs(lane_capsets(c, lane)) do
      waiting = waiting + redis.call('ZCARD', ready_key(c, lane, capset))
    end
    add(lane, 'waiting', waiting)
    for _, st in ipairs(NON_TERMINAL) do
      if st ~= 'waiting' then
        add(lane, st, redis.call('SCARD', state_key(c, st, lane)))
      end
    end
  end
  return ok(out)
end
