-- machine.lua: the transitions of weft-core `machine.rs`, field for field.
--
-- Invariants: each function checks everything that can refuse the command
-- before it writes anything (Valkey does not roll a function back), and
-- changes exactly the fields the Rust function changes.

local function set_lease_fields_nil(e)
  for _, k in ipairs(LEASE_FIELDS) do
    put(e, k, nil)
  end
end

-- The row of the running attempt ending now as `state` (`error_json` or
-- nil): `number␟state␟started_at_ms␟ended_at_ms␟worker_id␟error_json`.
local function attempt_row(c, e, state, error_json)
  return table.concat({
    e.f.attempts, state, e.f.attempt_started_at_ms or '', int(c.now),
    e.f.lease_worker_id or '', error_json or '',
  }, SEP)
end

-- `end_attempt`: ends the running attempt and releases the lease. The
-- attempt's row is written once, here, as the field `att:<number>` of the
-- execution (saved with the rest of the transition, no key of its own);
-- while it runs, the execution's fields (`attempts`, `lease_worker_id`,
-- `attempt_started_at_ms`) are it.
local function end_attempt(c, e, state, error_json)
  if e.f.lease_id == nil then
    return
  end
  put(e, ATTEMPT .. e.f.attempts, attempt_row(c, e, state, error_json))
  set_lease_fields_nil(e)
  put(e, 'attempt_started_at_ms', nil)
end

local function finish(c, e, state)
  put(e, 'state', state)
  put(e, 'finished_at_ms', c.now)
  put(e, 'run_at_ms', nil)
  put(e, 'updated_at_ms', c.now)
end

-- `retry_or_fail`: after a counted failure, back to the queue (with backoff
-- unless `immediate`) while attempts are left, else `failed`.
local function retry_or_fail(c, e, error_json, retryable, immediate)
  local failures = num(e, 'failures') + 1
  put(e, 'failures', failures)
  put(e, 'error', error_json)
  put(e, 'updated_at_ms', c.now)
  local exhausted = failures >= num(e, 'max_attempts')
    or num(e, 'reclaims') > num(e, 'max_reclaims')
  if not retryable or exhausted then
    finish(c, e, 'failed')
    return
  end
  local delay = 0
  if not immediate then
    delay = backoff_delay(e, failures, jitter_unit(e.f.id, num(e, 'attempts')))
  end
  if delay > 0 then
    put(e, 'state', 'delayed')
    put(e, 'run_at_ms', c.now + delay)
  else
    put(e, 'state', 'waiting')
    put(e, 'run_at_ms', nil)
    put(e, 'ready_at_ms', c.now)
  end
end

-- `check_lease`: nil when the presented lease holds, else the reason code.
local function check_lease(c, e, lease_id, epoch)
  if e.f.lease_id == nil then
    return 'none'
  end
  if num(e, 'lease_epoch') ~= epoch or e.f.lease_id ~= lease_id then
    return 'newer'
  end
  if num(e, 'lease_expires_at_ms') <= c.now then
    return 'expired'
  end
  return nil
end

-- `is_replay`: a repeated write (`by` = 'completed', 'failed', 'released'
-- or 'suspended') by the lease that ended the last attempt; a release or a
-- suspend replays only until the next claim moves the epoch on.
local function is_replay(e, lease_id, epoch, by)
  return e.f.ended_lease_id == lease_id
    and num(e, 'ended_lease_epoch') == epoch
    and e.f.ended_lease_by == by
    and ((by ~= 'released' and by ~= 'suspended') or num(e, 'epoch') == epoch)
end

-- Records the lease whose write (`by`) ended the attempt.
local function put_ended_lease(e, lease_id, epoch, by)
  put(e, 'ended_lease_id', lease_id)
  put(e, 'ended_lease_epoch', epoch)
  put(e, 'ended_lease_by', by)
end

local function claim_one(c, e, worker_id, lease_id, lease_ms)
  local before = snapshot(c, e)
  local attempts = num(e, 'attempts') + 1
  local epoch = num(e, 'epoch') + 1
  put(e, 'attempts', attempts)
  put(e, 'epoch', epoch)
  put(e, 'state', 'active')
  put(e, 'updated_at_ms', c.now)
  put(e, 'lease_id', lease_id)
  put(e, 'lease_epoch', epoch)
  put(e, 'lease_expires_at_ms', c.now + lease_ms)
  put(e, 'lease_ms', lease_ms)
  put(e, 'lease_worker_id', worker_id)
  local timeout = num(e, 'timeout_ms')
  if timeout then
    put(e, 'lease_timeout_at_ms', c.now + timeout)
  else
    put(e, 'lease_timeout_at_ms', nil)
  end
  put(e, 'attempt_started_at_ms', c.now)
  commit(c, e, before)
end

-- `claim_one` written out, for an execution outside any flow (the hottest
-- transition): the writes `commit` would derive from the snapshots before
-- and after — the fields, the ready entry to the active set, the lease and
-- attempt timers, the deadline kept — without building the snapshots. The
-- audit and the differential tests hold it to `claim_one`.
local function claim_plain(c, e, worker_id, lease_id, lease_ms)
  local f = e.f
  local id, lane = f.id, f.lane
  local ready = { zset = true, key = ready_key(c, lane, f.requires or ''), member = ready_member(e) }
  local now = int(c.now)
  local epoch = int(num(e, 'epoch') + 1)
  local expires = c.now + lease_ms
  f.attempts = int(num(e, 'attempts') + 1)
  f.epoch = epoch
  f.state = 'active'
  f.updated_at_ms = now
  f.lease_id = lease_id
  f.lease_epoch = epoch
  f.lease_expires_at_ms = int(expires)
  f.lease_ms = int(lease_ms)
  f.lease_worker_id = worker_id
  f.attempt_started_at_ms = now
  local fields = {
    'attempts', f.attempts, 'epoch', epoch, 'state', 'active', 'updated_at_ms', now,
    'lease_id', lease_id, 'lease_epoch', epoch, 'lease_expires_at_ms', f.lease_expires_at_ms,
    'lease_ms', f.lease_ms, 'lease_worker_id', worker_id, 'attempt_started_at_ms', now,
  }
  local old, new = {}, { lease_expiry = expires }
  local timeout = num(e, 'timeout_ms')
  if timeout then
    new.attempt_timeout = c.now + timeout
    f.lease_timeout_at_ms = int(new.attempt_timeout)
    fields[#fields + 1] = 'lease_timeout_at_ms'
    fields[#fields + 1] = f.lease_timeout_at_ms
  end
  local deadline = num(e, 'deadline_at_ms')
  if deadline then
    old.deadline = deadline
    new.deadline = deadline
  end
  redis.call('HSET', exec_key(c, id), unpack(fields))
  index_remove(c, ready)
  index_add(c, { key = state_key(c, 'active', lane), member = id })
  move_timers(c, id, old, new)
end

-- `release`: the attempt ends 'released' and the execution is waiting at
-- once; failures, reclaims, the error and the epoch stay as they were.
local function release_one(c, e, lease_id, epoch)
  local before = snapshot(c, e)
  end_attempt(c, e, 'released', nil)
  put_ended_lease(e, lease_id, epoch, 'released')
  put(e, 'state', 'waiting')
  put(e, 'run_at_ms', nil)
  put(e, 'ready_at_ms', c.now)
  put(e, 'updated_at_ms', c.now)
  commit(c, e, before)
end

local function cancel_one(c, e, reason)
  local before = snapshot(c, e)
  end_attempt(c, e, 'cancelled', nil)
  put(e, 'cancel_reason', reason)
  finish(c, e, 'cancelled')
  commit(c, e, before)
end

local function replay_one(c, e)
  local before = snapshot(c, e)
  put(e, 'state', 'waiting')
  put(e, 'failures', 0)
  put(e, 'reclaims', 0)
  for _, k in ipairs({ 'result', 'error', 'finished_at_ms', 'run_at_ms' }) do
    put(e, k, nil)
  end
  put(e, 'ready_at_ms', c.now)
  put(e, 'updated_at_ms', c.now)
  for _, k in ipairs({ 'ended_lease_id', 'ended_lease_epoch', 'ended_lease_by' }) do
    put(e, k, nil)
  end
  put(e, 'cancel_reason', nil)
  -- `suspends` stays, so a token of a suspension before the replay never
  -- matches a later one.
  put(e, 'suspension', nil)
  put(e, 'suspension_at_once', nil)
  for _, prefix in ipairs({ SIGNAL, RESUMED }) do
    for _, name in ipairs(signal_names(e, prefix)) do
      put(e, prefix .. name, nil)
    end
  end
  local deadline = num(e, 'deadline_ms')
  if deadline then
    put(e, 'deadline_at_ms', c.now + deadline)
  else
    put(e, 'deadline_at_ms', nil)
  end
  commit(c, e, before)
end

-- `consume_signals`: moves the signals of the suspension's waitpoints to
-- `res:*`, replacing what an earlier resume left there; buffered signals
-- for other waitpoints stay.
local function consume_signals(e, s)
  for _, name in ipairs(signal_names(e, RESUMED)) do
    put(e, RESUMED .. name, nil)
  end
  for _, w in ipairs(s.wps) do
    local payload = e.f[SIGNAL .. w.name]
    if payload then
      put(e, SIGNAL .. w.name, nil)
      put(e, RESUMED .. w.name, payload)
    end
  end
end

-- `resume`: ends the suspension in force; claimable again, its signals
-- handed on.
local function resume(c, e, s)
  put(e, 'state', 'waiting')
  put(e, 'run_at_ms', nil)
  put(e, 'ready_at_ms', c.now)
  consume_signals(e, s)
end

-- `time_out`: applies the behaviour of the waitpoint whose timeout fired
-- (`fire` has checked the timer is the execution's current one).
local function time_out(c, e)
  local s = suspension_of(e)
  local first = s and next_timeout(s)
  if not first then
    return
  end
  local why = 'waitpoint ' .. first.name .. ' timed out'
  -- `ErrorInfo::new("waitpoint_timeout", why)` as serde writes it; a
  -- waitpoint name needs no JSON escaping.
  local error_json = '{"message":"' .. why .. '","kind":"waitpoint_timeout"}'
  put(e, 'updated_at_ms', c.now)
  if first.on_timeout == 'fail' then
    put(e, 'error', error_json)
    finish(c, e, 'failed')
  elseif first.on_timeout == 'cancel' then
    put(e, 'cancel_reason', why)
    finish(c, e, 'cancelled')
  elseif first.on_timeout == 'expire' then
    put(e, 'error', error_json)
    finish(c, e, 'expired')
  else
    resume(c, e, s)
  end
end

-- `fire`: applies one due timer, or reports it stale ('dropped').
local function fire(c, e, kind, due)
  local current = timers_of(c, e)
  if due > c.now or current[kind] ~= due then
    return 'dropped'
  end
  local before = snapshot(c, e)
  if kind == 'delay' then
    put(e, 'state', 'waiting')
    put(e, 'ready_at_ms', due)
    put(e, 'run_at_ms', nil)
    put(e, 'updated_at_ms', c.now)
  elseif kind == 'lease_expiry' then
    end_attempt(c, e, 'lease_lost', ERR_LEASE_LOST)
    put(e, 'reclaims', num(e, 'reclaims') + 1)
    retry_or_fail(c, e, ERR_LEASE_LOST, true, true)
  elseif kind == 'attempt_timeout' then
    end_attempt(c, e, 'timed_out', ERR_TIMED_OUT)
    retry_or_fail(c, e, ERR_TIMED_OUT, true, false)
  elseif kind == 'deadline' then
    end_attempt(c, e, 'timed_out', ERR_DEADLINE)
    put(e, 'error', ERR_DEADLINE)
    finish(c, e, 'expired')
  elseif kind == 'waitpoint_timeout' then
    time_out(c, e)
  elseif kind == 'retention' then
    -- A flow member stays until its flow has ended; the flow's end sets
    -- the timer again.
    if e.f.flow_id and not flow_purge_allowed(c, e) then
      return 'dropped'
    end
    purge(c, e, before)
    return 'applied'
  else
    return 'dropped'
  end
  commit(c, e, before)
  return 'applied'
end
