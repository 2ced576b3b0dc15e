-- register.lua: the library's public surface. Reads are flagged `no-writes`
-- so they may run on replicas through FCALL_RO.

-- ARGV[1] id, [2] attempt, [3] failures, [4] initial_ms, [5] max_ms,
-- [6] multiplier, [7] jitter. Replies the jitter unit (%.17g) and the
-- delay, so tests can compare them with weft-core bit for bit.
local function fn_probe_backoff(keys, args)
  local unit = jitter_unit(args[1], tonumber(args[2]))
  local e = {
    f = {
      backoff_initial_ms = args[4],
      backoff_max_ms = args[5],
      backoff_multiplier = args[6],
      backoff_jitter = args[7],
    },
  }
  return { string.format('%.17g', unit), int(backoff_delay(e, tonumber(args[3]), unit)) }
end

local function register(name, callback, read_only)
  local flags = {}
  if read_only then
    flags = { 'no-writes' }
  end
  redis.register_function({ function_name = name, callback = callback, flags = flags })
end

register('weft_version', function()
  return LIB_VERSION
end, true)
register('weft_digest', function()
  return LIB_DIGEST
end, true)
register('weft_probe_backoff', fn_probe_backoff, true)
register('weft_submit', fn_submit)
register('weft_submit_many', fn_submit_many)
register('weft_claim', fn_claim)
register('weft_claimable', fn_claimable, true)
register('weft_heartbeat', fn_heartbeat)
register('weft_complete', fn_complete)
register('weft_complete_many', fn_complete_many)
register('weft_fail', fn_fail)
register('weft_release', fn_release)
register('weft_suspend', fn_suspend)
register('weft_signal', fn_signal)
register('weft_cancel', fn_cancel)
register('weft_replay', fn_replay)
register('weft_get', fn_get, true)
register('weft_attempts', fn_attempts, true)
register('weft_list', fn_list, true)
register('weft_flow_create', fn_flow_create)
register('weft_flow_get', fn_flow_get, true)
register('weft_flow_list', fn_flow_list, true)
register('weft_flow_add_nodes', fn_flow_add_nodes)
register('weft_flow_cancel', fn_flow_cancel)
register('weft_flow_reconcile', fn_flow_reconcile)
register('weft_tick', fn_tick)
register('weft_audit', fn_audit, true)
register('weft_depths', fn_depths, true)
register('weft_init', fn_init)
register('weft_rebalance', fn_rebalance)
register('weft_owners', fn_owners, true)
