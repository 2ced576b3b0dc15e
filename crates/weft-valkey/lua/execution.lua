-- execution.lua: the execution operations, one function each.
--
-- Every reply is a table: { 'ok', ... } or { 'err', kind, detail, detail }.
-- Argument layout after the header (ARGV[1..3]) is given per function; the
-- Rust side (src/ops.rs) builds exactly these lists.

-- Creates one execution from ARGV[at..last]: 8 random hex digits, delay_ms
-- or '', run_at_ms or '', idempotency key or '', then the field/value
-- pairs of the fields that do not depend on time. Returns 'existing' and
-- the stored execution, or 'created' and only the fields the library set:
-- the stored hash is the pairs overlaid with them, which Rust rebuilds
-- from what it sent (no payload copied back), or `collision`.
local function submit_item(c, args, at, last)
  local idem = args[at + 3]
  if idem ~= '' then
    local existing = redis.call('HGET', c.root .. 'k', idem)
    if existing then
      local found = load(c, existing)
      if found then
        return ok('existing', record(found))
      end
    end
  end
  local id = c.id_prefix .. args[at]
  -- Claims the id in the listing index first; a taken id writes nothing.
  if redis.call('ZADD', c.root .. 'all', 'NX', 0, id) == 0 then
    return err('collision')
  end
  local f = {}
  for i = at + 4, last, 2 do
    f[args[i]] = args[i + 1]
  end
  local run_at
  if args[at + 1] ~= '' then
    run_at = c.now + tonumber(args[at + 1])
  elseif args[at + 2] ~= '' then
    run_at = tonumber(args[at + 2])
  end
  if run_at and run_at <= c.now then
    run_at = nil
  end
  local now = c.now_text
  local set = {
    'id', id, 'state', run_at and 'delayed' or 'waiting',
    'created_at_ms', now, 'updated_at_ms', now,
    'attempts', '0', 'failures', '0', 'reclaims', '0', 'epoch', '0',
  }
  local ready = now
  if run_at then
    ready = int(run_at)
    set[#set + 1] = 'run_at_ms'
    set[#set + 1] = ready
  end
  set[#set + 1] = 'ready_at_ms'
  set[#set + 1] = ready
  local deadline = tonumber(f.deadline_ms)
  if deadline then
    set[#set + 1] = 'deadline_at_ms'
    set[#set + 1] = int(c.now + deadline)
  end
  for i = 1, #set, 2 do
    f[set[i]] = set[i + 1]
  end
  -- Two writes instead of one list built again: the sent pairs, then `set`
  -- (a later pair wins); `e` has nothing left to save.
  local key = exec_key(c, id)
  redis.call('HSET', key, unpack(args, at + 4, last))
  redis.call('HSET', key, unpack(set))
  local e = { f = f, dirty = {} }
  commit(c, e, nil)
  if not c.lanes_listed[f.lane] then
    c.lanes_listed[f.lane] = true
    redis.call('SADD', c.root .. 'lanes', f.lane)
  end
  if idem ~= '' then
    redis.call('HSET', c.root .. 'k', idem, id)
  end
  return ok('created', set)
end

-- The context of a submit: ids are ARGV[4] (`ex_` + partition), the
-- store's time in hex, then each item's random digits.
local function submit_ctx(keys, args)
  local c = ctx(keys, args, true)
  c.id_prefix = args[4] .. string.format('%012x', c.now % 281474976710656)
  c.now_text = int(c.now)
  c.lanes_listed = {}
  return c
end

-- ARGV[4] id prefix, [5..] one item as `submit_item` reads it.
local function fn_submit(keys, args)
  return submit_item(submit_ctx(keys, args), args, 5, #args)
end

-- ARGV[4] id prefix, [5] the number of items, then per item the number of
-- its field/value pairs and the item as `submit_item` reads it. Replies
-- each item's reply, in order. A lane is listed and a ready event sent
-- once per call, not per item.
local function fn_submit_many(keys, args)
  local c = submit_ctx(keys, args)
  c.defer = deferral()
  local replies, at = {}, 6
  for n = 1, tonumber(args[5]) do
    local last = at + 4 + 2 * tonumber(args[at])
    replies[n] = submit_item(c, args, at + 1, last)
    at = last + 1
  end
  flush_deferred(c)
  return ok(replies)
end

local function capset_within(capset, have)
  if capset == '' then
    return true
  end
  for cap in string.gmatch(capset, '[^,]+') do
    if not have[cap] then
      return false
    end
  end
  return true
end

-- The `max` best ready entries over every (lane, capset) the worker may
-- take: { score, member } sorted by score, then member.
local function claim_candidates(c, lanes, have, max)
  local entries = {}
  for _, lane in ipairs(lanes) do
    for _, capset in ipairs(lane_capsets(c, lane)) do
      if capset_within(capset, have) then
        local got = redis.call('ZRANGE', ready_key(c, lane, capset), 0, max - 1, 'WITHSCORES')
        if #got == 0 and capset ~= '' then
          redis.call('SREM', capsets_key(c, lane), capset)
        end
        for i = 1, #got, 2 do
          entries[#entries + 1] = { tonumber(got[i + 1]), got[i] }
        end
      end
    end
  end
  table.sort(entries, function(a, b)
    if a[1] ~= b[1] then
      return a[1] < b[1]
    end
    return a[2] < b[2]
  end)
  return entries
end

-- Reads `n caps, caps..., n lanes, lanes...` from ARGV[i]; returns the
-- capability set, the lanes (deduplicated) and the index after them.
local function claim_filter(args, i)
  local have, lanes, seen = {}, {}, {}
  for _ = 1, tonumber(args[i]) do
    i = i + 1
    have[args[i]] = true
  end
  i = i + 1
  for _ = 1, tonumber(args[i]) do
    i = i + 1
    if not seen[args[i]] then
      seen[args[i]] = true
      lanes[#lanes + 1] = args[i]
    end
  end
  return have, lanes, i + 1
end

-- ARGV[4] worker id, [5] lease_ms, [6] max, [7] n caps, caps..., n lanes,
-- lanes..., then `max` lease ids. Replies the claimed tasks (`task_record`).
local function fn_claim(keys, args)
  local c = ctx(keys, args, true)
  local worker_id, lease_ms, max = args[4], tonumber(args[5]), tonumber(args[6])
  local have, lanes, i = claim_filter(args, 7)
  c.defer = deferral()
  local tasks = {}
  for _, entry in ipairs(claim_candidates(c, lanes, have, max)) do
    if #tasks >= max then
      break
    end
    local e = load_core(c, string.sub(entry[2], 17), CLAIM_FIELDS)
    if e and e.f.state == 'waiting' then
      if e.f.flow_id then
        claim_one(c, e, worker_id, args[i + #tasks], lease_ms)
      else
        claim_plain(c, e, worker_id, args[i + #tasks], lease_ms)
      end
      if e.f.flow_id then
        -- Replied, never stored: the upstreams' results as they are now.
        e.f._inputs = flow_inputs(c, e)
      end
      tasks[#tasks + 1] = task_record(e)
    end
  end
  flush_deferred(c)
  return ok(tasks)
end

-- ARGV[4] max, [5] n caps, caps..., n lanes, lanes... Replies how many
-- executions (at most max) a claim with this filter would take now.
local function fn_claimable(keys, args)
  local c = ctx(keys, args)
  local max = tonumber(args[4])
  local have, lanes = claim_filter(args, 5)
  local n = 0
  for _, lane in ipairs(lanes) do
    for _, capset in ipairs(lane_capsets(c, lane)) do
      if n >= max then
        return ok(int(n))
      end
      if capset_within(capset, have) then
        n = n + redis.call('ZCARD', ready_key(c, lane, capset))
      end
    end
  end
  return ok(int(math.min(n, max)))
end

-- Loads the execution named by ARGV[4] or answers `not_found`.
local function load_arg(c, args)
  local e = load(c, args[4])
  if e == nil then
    return nil, err('not_found')
  end
  return e
end

-- The context and the execution of ARGV[4] for a command Rust may have
-- refused (ARGV[refused] = '1'): `not_found` first, then `refused`, as the
-- state machine reports them; on either, the reply that ends the call.
local function load_unrefused(keys, args, refused)
  local c = ctx(keys, args, true)
  local e, failure = load_arg(c, args)
  if not e then
    return nil, nil, failure
  end
  if args[refused] == '1' then
    return nil, nil, err('refused')
  end
  return c, e
end

-- The reply of a write that ends a lease: the execution, or with `brief`
-- only the outcome and the state it left.
local function ended(e, outcome, brief)
  if brief then
    return ok(outcome, e.f.state)
  end
  return ok(outcome, record(e))
end

-- The checks every write that ends a lease (complete, fail, release) makes,
-- in the state machine's order: the execution `id` exists, the same write
-- by the lease that ended it replays (`by`), Rust's refusal (`refused` =
-- '1', when the write has one), the lease holds. With `fields` only those
-- are loaded (`load_core`) and the reply is brief. Returns e and the epoch,
-- or nil and the reply that ends the call.
local function ending_checks(c, id, lease_id, epoch_text, by, refused, fields)
  local brief = fields and true or false
  local e
  if brief then
    e = load_core(c, id, fields)
  else
    e = load(c, id)
  end
  if not e then
    return nil, err('not_found')
  end
  local epoch = tonumber(epoch_text)
  if is_replay(e, lease_id, epoch, by) then
    return nil, ended(e, 'replayed', brief)
  end
  if refused == '1' then
    return nil, err('refused')
  end
  local lost = check_lease(c, e, lease_id, epoch)
  if lost then
    return nil, err('lease_lost', lost)
  end
  return e, epoch
end

-- `ending_checks` for a call about the execution of ARGV[4], its lease
-- ARGV[5] and epoch ARGV[6]; refused when ARGV[refused] = '1'. Returns c,
-- e, epoch, or nil and the reply that ends the call.
local function ending_write(keys, args, by, refused, fields)
  local c = ctx(keys, args, true)
  local e, epoch = ending_checks(c, args[4], args[5], args[6], by, refused and args[refused], fields)
  if not e then
    return nil, nil, nil, epoch
  end
  return c, e, epoch
end

-- ARGV[4] id, [5] lease id, [6] epoch, [7] lease_ms or '', [8] '1' when
-- Rust refuses the new duration: refused once the lease is found to hold.
local function fn_heartbeat(keys, args)
  local c = ctx(keys, args, true)
  local e, failure = load_arg(c, args)
  if not e then
    return failure
  end
  local lost = check_lease(c, e, args[5], tonumber(args[6]))
  if lost then
    return err('lease_lost', lost)
  end
  if args[8] == '1' then
    return err('refused')
  end
  local lease_ms = tonumber(args[7]) or num(e, 'lease_ms')
  local before = snapshot(c, e)
  put(e, 'lease_expires_at_ms', c.now + lease_ms)
  put(e, 'lease_ms', lease_ms)
  put(e, 'updated_at_ms', c.now)
  commit(c, e, before)
  return ok(e.f.lease_expires_at_ms, '0')
end

-- `complete_one` written out for an active execution outside any flow
-- (the second hottest transition): the writes `commit` would derive — the
-- attempt's row, the result and the lease that ended it set, the lease
-- and attempt fields cleared, active set to completed set, the lease,
-- attempt and deadline timers to the retention timer, the `E` event —
-- without the snapshots. The audit and the differential tests hold it to
-- `complete_one`.
local function complete_plain(c, e, lease_id, epoch, result)
  local f = e.f
  local id, lane = f.id, f.lane
  local old = { lease_expiry = num(e, 'lease_expires_at_ms') }
  old.attempt_timeout = num(e, 'lease_timeout_at_ms')
  old.deadline = num(e, 'deadline_at_ms')
  local fields = {
    ATTEMPT .. f.attempts, attempt_row(c, e, 'succeeded', nil), 'result', result,
    'ended_lease_id', lease_id, 'ended_lease_epoch', int(epoch), 'ended_lease_by', 'completed',
    'state', 'completed', 'finished_at_ms', int(c.now), 'updated_at_ms', int(c.now),
  }
  local cleared = {}
  local function clear(k)
    if f[k] then
      cleared[#cleared + 1] = k
      f[k] = nil
    end
  end
  for _, k in ipairs(LEASE_FIELDS) do
    clear(k)
  end
  clear('attempt_started_at_ms')
  clear('run_at_ms')
  for i = 1, #fields, 2 do
    f[fields[i]] = fields[i + 1]
  end
  local key = exec_key(c, id)
  redis.call('HSET', key, unpack(fields))
  if #cleared > 0 then
    redis.call('HDEL', key, unpack(cleared))
  end
  index_remove(c, { key = state_key(c, 'active', lane), member = id })
  index_add(c, { key = state_key(c, 'completed', lane), member = id })
  move_timers(c, id, old, { retention = c.now + c.retention_ms })
  publish_ended(c, 'completed', id)
end

-- `complete`: the attempt succeeded with `result`.
local function complete_one(c, e, lease_id, epoch, result)
  if not e.f.flow_id and e.f.state == 'active' then
    complete_plain(c, e, lease_id, epoch, result)
    return
  end
  local before = snapshot(c, e)
  end_attempt(c, e, 'succeeded', nil)
  put(e, 'result', result)
  put_ended_lease(e, lease_id, epoch, 'completed')
  finish(c, e, 'completed')
  commit(c, e, before)
end

-- ARGV[4] id, [5] lease id, [6] epoch, [7] result JSON, [8] '1' when Rust
-- refuses the write (result over the limit): refused after the replay check,
-- [9] '1' for the brief reply (`ended`).
local function fn_complete(keys, args)
  local brief = args[9] == '1'
  local c, e, epoch, reply = ending_write(keys, args, 'completed', 8, brief and COMPLETE_FIELDS)
  if not e then
    return reply
  end
  complete_one(c, e, args[5], epoch, args[7])
  return ended(e, 'applied', brief)
end

-- ARGV[4] the number of items, then per item: id, lease id, epoch, result
-- JSON, '1' when Rust refuses it. Completes each as `weft_complete` does
-- with the brief reply, and replies each item's reply, in order.
local function fn_complete_many(keys, args)
  local c = ctx(keys, args, true)
  c.defer = deferral()
  local replies = {}
  for n = 1, tonumber(args[4]) do
    local at = 5 * n
    local e, epoch = ending_checks(c, args[at], args[at + 1], args[at + 2], 'completed',
      args[at + 4], COMPLETE_FIELDS)
    if e then
      complete_one(c, e, args[at + 1], epoch, args[at + 3])
      replies[n] = ended(e, 'applied', true)
    else
      replies[n] = epoch
    end
  end
  flush_deferred(c)
  return ok(replies)
end

-- ARGV[4] id, [5] lease id, [6] epoch, [7] error JSON (already cut to
-- length), [8] retryable '1' or '0', [9] '1' when Rust refuses the write
-- (error kind too long): refused after the replay check, [10] '1' for the
-- brief reply (`ended`).
local function fn_fail(keys, args)
  local brief = args[10] == '1'
  local c, e, epoch, reply = ending_write(keys, args, 'failed', 9, brief and CORE_FIELDS)
  if not e then
    return reply
  end
  local before = snapshot(c, e)
  end_attempt(c, e, 'failed', args[7])
  put_ended_lease(e, args[5], epoch, 'failed')
  retry_or_fail(c, e, args[7], args[8] == '1', false)
  commit(c, e, before)
  return ended(e, 'applied', brief)
end

-- ARGV[4] id, [5] lease id, [6] epoch.
local function fn_release(keys, args)
  local c, e, epoch, reply = ending_write(keys, args, 'released')
  if not e then
    return reply
  end
  release_one(c, e, args[5], epoch)
  return ok('applied', record(e))
end

-- ARGV[4] id, [5] lease id, [6] epoch, [7] '1' when Rust refuses the spec
-- (`SuspendSpec::validate`): refused before the replay check, as the state
-- machine validates first; [8] resume_when, [9] how long a token of a
-- waitpoint without a timeout stays valid (ms), [10..] per waitpoint:
-- name, timeout_ms or '', on_timeout. `machine::suspend::suspend`.
local function fn_suspend(keys, args)
  local c, e, failure = load_unrefused(keys, args, 7)
  if not e then
    return failure
  end
  local epoch = tonumber(args[6])
  if is_replay(e, args[5], epoch, 'suspended') then
    return ok('replayed', record(e))
  end
  local lost = check_lease(c, e, args[5], epoch)
  if lost then
    return err('lease_lost', lost)
  end
  -- A suspend that buffered signals satisfied at once, sent again by the
  -- same lease (a retry after a lost answer), gets the same answer.
  if e.f.state == 'active' and e.f.suspension_at_once == args[6] then
    local last = suspension_of(e)
    local same = last and last.resume_when == args[8] and #last.wps * 3 == #args - 9
    for i, w in ipairs(same and last.wps or {}) do
      same = same and w.name == args[7 + 3 * i]
    end
    if same then
      return ok('replayed', record(e))
    end
  end
  local before = snapshot(c, e)
  local seq = (num(e, 'suspends') or 0) + 1
  put(e, 'suspends', seq)
  put(e, 'updated_at_ms', c.now)
  local ttl = tonumber(args[9])
  local s = { seq = seq, resume_when = args[8], at = c.now, wps = {} }
  for i = 10, #args, 3 do
    local timeout = tonumber(args[i + 1])
    local timeout_at = timeout and (c.now + timeout)
    s.wps[#s.wps + 1] = {
      name = args[i],
      timeout_at = timeout_at,
      on_timeout = args[i + 2],
      expires_at = timeout_at or (c.now + ttl),
      signalled = e.f[SIGNAL .. args[i]] ~= nil,
    }
  end
  put(e, 'suspension', suspension_text(s))
  put(e, 'suspension_at_once', nil)
  if suspension_satisfied(s) then
    -- Buffered signals already satisfy it: the attempt goes on under the
    -- same lease, handed the signals.
    put(e, 'suspension_at_once', args[6])
    consume_signals(e, s)
  else
    end_attempt(c, e, 'suspended', nil)
    put_ended_lease(e, args[5], epoch, 'suspended')
    put(e, 'state', 'suspended')
  end
  commit(c, e, before)
  return ok('applied', record(e))
end

-- ARGV[4] id, [5] waitpoint, [6] payload JSON, [7] the token's suspension
-- seq, '' for an operator's signal, [8] '1' when Rust refuses the signal
-- (waitpoint name, payload size): refused once the execution exists,
-- [9] most signals an execution buffers. `machine::suspend::signal`.
local function fn_signal(keys, args)
  local c, e, failure = load_unrefused(keys, args, 8)
  if not e then
    return failure
  end
  local st = e.f.state
  if TERMINAL[st] then
    return err('conflict_ended', st)
  end
  local name, payload = args[5], args[6]
  local s = suspension_of(e)
  local wp
  if s and st == 'suspended' then
    for _, w in ipairs(s.wps) do
      if w.name == name then
        wp = w
        break
      end
    end
  end
  local seq = tonumber(args[7])
  -- A token opens one waitpoint of the suspension in force, once.
  if seq and not (wp and s.seq == seq and not wp.signalled) then
    return err('invalid_token')
  end
  local before = snapshot(c, e)
  if wp then
    if wp.signalled then
      return err('conflict_signalled', name)
    end
    wp.signalled = true
    put(e, 'suspension', suspension_text(s))
    put(e, SIGNAL .. name, payload)
    put(e, 'updated_at_ms', c.now)
    if suspension_satisfied(s) then
      resume(c, e, s)
    end
  else
    if e.f[SIGNAL .. name] then
      return err('conflict_signalled', name)
    end
    if #signal_names(e, SIGNAL) >= tonumber(args[9]) then
      return err('conflict_signals_full')
    end
    put(e, SIGNAL .. name, payload)
    put(e, 'updated_at_ms', c.now)
  end
  commit(c, e, before)
  return ok('applied', record(e))
end

-- ARGV[4] id, [5] '1' when a reason follows, [6] reason, [7] '1' when Rust
-- refuses the cancel (reason too long): refused once the execution exists.
local function fn_cancel(keys, args)
  local c, e, failure = load_unrefused(keys, args, 7)
  if not e then
    return failure
  end
  local st = e.f.state
  if st == 'cancelled' then
    return ok('replayed', record(e))
  end
  if TERMINAL[st] then
    return err('conflict_ended', st)
  end
  local reason
  if args[5] == '1' then
    reason = args[6]
  end
  cancel_one(c, e, reason)
  return ok('applied', record(e))
end

-- ARGV[4] id.
local function fn_replay(keys, args)
  local c = ctx(keys, args, true)
  local e, failure = load_arg(c, args)
  if not e then
    return failure
  end
  if e.f.flow_id then
    return err('conflict_flow_member')
  end
  if not TERMINAL[e.f.state] then
    return err('conflict_not_ended', e.f.state)
  end
  replay_one(c, e)
  return ok('applied', record(e))
end

-- ARGV[4] id.
local function fn_get(keys, args)
  local c = ctx(keys, args)
  local e, failure = load_arg(c, args)
  if not e then
    return failure
  end
  return ok(record(e))
end

-- ARGV[4] id. Replies the ended attempts' rows, then the running one's,
-- made from the execution's fields.
local function fn_attempts(keys, args)
  local c = ctx(keys, args)
  local f = redis.call('HMGET', exec_key(c, args[4]), 'id', 'lease_id', 'attempts',
    'attempt_started_at_ms', 'lease_worker_id')
  if not f[1] then
    return err('not_found')
  end
  local rows = redis.call('LRANGE', attempts_key(c, args[4]), 0, -1)
  -- Then the `att:<number>` fields, by number (HSCAN walks the hash in C;
  -- the payload is never copied into Lua).
  local numbered, cursor = {}, '0'
  repeat
    local page = redis.call('HSCAN', exec_key(c, args[4]), cursor, 'MATCH', ATTEMPT .. '*',
      'COUNT', 1000)
    cursor = page[1]
    for i = 1, #page[2], 2 do
      local number = tonumber(string.sub(page[2][i], #ATTEMPT + 1))
      numbered[#numbered + 1] = { number, page[2][i + 1] }
    end
  until cursor == '0'
  table.sort(numbered, function(a, b)
    return a[1] < b[1]
  end)
  for _, attempt in ipairs(numbered) do
    rows[#rows + 1] = attempt[2]
  end
  if f[2] then
    rows[#rows + 1] = table.concat({ f[3], 'running', f[4] or '', '', f[5] or '', '' }, SEP)
  end
  return ok(rows)
end

local function list_matches(e, lane, state, kind, flow)
  return (lane == '' or e.f.lane == lane)
    and (state == '' or e.f.state == state)
    and (kind == '' or e.f.kind == kind)
    and (flow == '' or e.f.flow_id == flow)
end

-- ARGV[4] id to start after ('' from the first), [5] matches wanted,
-- [6] most ids to examine, [7] lane, [8] state, [9] kind, [10] flow id
-- ('' for any). Replies the last id examined, '1' when the partition is
-- exhausted, and the matching executions in id order.
local function fn_list(keys, args)
  local c = ctx(keys, args)
  return lex_scan(c.root .. 'all', args[4], tonumber(args[5]), tonumber(args[6]), function(id)
    local e = load(c, id)
    if e and list_matches(e, args[7], args[8], args[9], args[10]) then
      return record(e)
    end
  end)
end
