-- flow.lua: flows, mirroring weft-core `flow.rs` step for step.
--
-- Definitions: a flow lives on its partition in four keys: `f:<fid>` (HASH:
-- meta fields named like `Flow`'s, plus `n:<state>` member counts), `fn:<fid>`
-- (LIST of `key␟member id`, in insertion order), `fs:<fid>` (HASH node key ->
-- member state, kept by `flow_settle` with the counts) and `fe:<fid>` (LIST
-- of `from␟to␟on`, in insertion order). `flows` is a ZSET of flow ids, score
-- 0, for listing. A member is an execution on the same partition with
-- `flow_id`, `flow_node` and, when it has incoming edges, the join counters
-- `join_mode`, `join_n`, `join_cancel_remaining`, `join_total`,
-- `join_fired`, `join_dead`.
--
-- Invariants: every member transition settles its flow inside the same
-- FCALL (`commit` calls `flow_hook`), so the counts always match the
-- members' states; the cascade a transition causes runs breadth first, each
-- step with the same transition code as a direct call, at most
-- CASCADE_CHUNK_MAX steps per call: what is left is appended in the same
-- call to the partition's outbox `o` (LIST, oldest at the head) as one
-- entry `<flow id>␞<follow-up>␞…`, each follow-up `u␟<id>␟1|0` (an
-- upstream ended, fired or not) or `c␟<id>␟<reason>` (a cancel), and a due
-- hint for now is published; `weft_tick` continues the entries (␞ = 0x1e).
-- While a flow operation runs, `c.flow_busy` stops
-- `commit` from settling again: the operation settles each step itself.
-- A flow's last member ending publishes `F|<state>|<flow id>` on the events
-- channel.

-- `flow::CASCADE_CHUNK_MAX`: most member transitions one call applies
-- before the rest of a cascade goes to the partition's outbox.
local CASCADE_CHUNK_MAX = 256
local OUTBOX_SEP = '\30'
local FLOW_TERMINAL = { completed = true, failed = true, cancelled = true }

local function flow_key(c, fid)
  return c.root .. 'f:' .. fid
end

local function flow_part_key(c, part, fid)
  return c.root .. part .. ':' .. fid
end

local function flow_add_edge(fl, from, to, on)
  local edge = { from = from, to = to, on = on }
  fl.edges[#fl.edges + 1] = edge
  fl.down[from] = fl.down[from] or {}
  fl.down[from][#fl.down[from] + 1] = edge
  fl.up[to] = fl.up[to] or {}
  fl.up[to][#fl.up[to] + 1] = from
end

local function flow_new(fid)
  return {
    id = fid, m = {}, counts = {}, nodes = {}, member = {}, state_of = {},
    down = {}, up = {}, edges = {}, dirty_nodes = {},
  }
end

local function flow_load(c, fid)
  local meta = redis.call('HGETALL', flow_key(c, fid))
  if #meta == 0 then
    return nil
  end
  local fl = flow_new(fid)
  for i = 1, #meta, 2 do
    local k, v = meta[i], meta[i + 1]
    if string.sub(k, 1, 2) == 'n:' then
      fl.counts[string.sub(k, 3)] = tonumber(v)
    else
      fl.m[k] = v
    end
  end
  fl.was = fl.m.state
  for _, entry in ipairs(redis.call('LRANGE', flow_part_key(c, 'fn', fid), 0, -1)) do
    local p = split(entry)
    fl.nodes[#fl.nodes + 1] = p[1]
    fl.member[p[1]] = p[2]
  end
  local states = redis.call('HGETALL', flow_part_key(c, 'fs', fid))
  for i = 1, #states, 2 do
    fl.state_of[states[i]] = states[i + 1]
  end
  for _, entry in ipairs(redis.call('LRANGE', flow_part_key(c, 'fe', fid), 0, -1)) do
    local p = split(entry)
    flow_add_edge(fl, p[1], p[2], p[3])
  end
  return fl
end

-- Sets again the retention timers of members that came due (and were
-- dropped) while the flow ran. Only a flow older than the retention period
-- can have any, so the common case reads nothing.
local function flow_rearm_retention(c, fl)
  if tonumber(fl.m.created_at_ms) + c.retention_ms > c.now then
    return
  end
  for _, key in ipairs(fl.nodes) do
    local e = load(c, fl.member[key])
    local due = e and timers_of(c, e).retention
    if due and due <= c.now then
      redis.call('ZADD', c.root .. 't', int(due), timer_member('retention', e.f.id))
      if c.hints then
        redis.call('PUBLISH', c.channel, c.partition .. ':' .. int(due))
      end
    end
  end
end

-- Writes the meta, every count (zeros included, so none lingers) and the
-- node states that changed; publishes FlowEnded when the flow just ended.
local function flow_save(c, fl)
  local hset = {}
  for k, v in pairs(fl.m) do
    hset[#hset + 1] = k
    hset[#hset + 1] = v
  end
  for _, s in ipairs(STATES) do
    hset[#hset + 1] = 'n:' .. s
    hset[#hset + 1] = int(fl.counts[s] or 0)
  end
  redis.call('HSET', flow_key(c, fl.id), unpack(hset))
  local nodes = {}
  for key in pairs(fl.dirty_nodes) do
    nodes[#nodes + 1] = key
    nodes[#nodes + 1] = fl.state_of[key]
  end
  if #nodes > 0 then
    redis.call('HSET', flow_part_key(c, 'fs', fl.id), unpack(nodes))
  end
  fl.dirty_nodes = {}
  if FLOW_TERMINAL[fl.m.state] and not (fl.was and FLOW_TERMINAL[fl.was]) then
    redis.call('PUBLISH', c.events, 'F|' .. fl.m.state .. '|' .. fl.id)
    flow_rearm_retention(c, fl)
  end
  fl.was = fl.m.state
end

-- `derive_state`.
local function flow_derive(fl)
  local n = function(s)
    return fl.counts[s] or 0
  end
  local open = 0
  for _, s in ipairs(NON_TERMINAL) do
    open = open + n(s)
  end
  if open == 0 then
    if fl.m.cancelled == '1' then
      return 'cancelled'
    elseif n('failed') + n('expired') > 0 then
      return 'failed'
    end
    return 'completed'
  end
  if n('waiting') + n('delayed') + n('active') == 0 then
    return 'blocked'
  end
  return 'running'
end

-- `EdgeOn::fires`: nil while `state` has not ended.
local function edge_fires(on, state)
  if not TERMINAL[state] then
    return nil
  end
  local success = state == 'completed'
  local failure = state == 'failed' or state == 'expired'
  if on == 'success' then
    return success
  elseif on == 'failure' then
    return failure
  end
  return success or failure
end

-- `JoinState::outcome`.
local function join_outcome(mode, n, total, fired, dead)
  local need = total
  if mode == 'any' then
    need = math.min(1, total)
  elseif mode == 'quorum' then
    need = n or 1
  end
  local open = math.max(0, total - fired - dead)
  if fired >= need then
    return 'satisfied'
  elseif fired + open < need then
    return 'unsatisfiable'
  end
  return 'pending'
end

local function push(queue, item)
  queue[#queue + 1] = item
end

-- `cancel_all`.
local function flow_cancel_all(fl, reason, queue)
  for _, key in ipairs(fl.nodes) do
    push(queue, { cancel = true, id = fl.member[key], reason = reason })
  end
end

local function flow_shift(fl, from, to)
  if from then
    local n = fl.counts[from] or 0
    if n <= 0 then
      error('weft: flow ' .. fl.id .. ' counts would go negative (' .. from .. ')')
    end
    fl.counts[from] = n - 1
  end
  if to then
    fl.counts[to] = (fl.counts[to] or 0) + 1
  end
end

-- `settle`: records a member's move from `old_state` to `e` (nil for a
-- purged member) and queues what it causes.
local function flow_settle(c, fl, old_state, e, queue)
  local new_state = e and e.f.state
  if old_state ~= new_state then
    flow_shift(fl, old_state, new_state)
  end
  fl.m.updated_at_ms = int(c.now)
  fl.m.state = flow_derive(fl)
  if FLOW_TERMINAL[fl.m.state] and not fl.m.finished_at_ms then
    fl.m.finished_at_ms = int(c.now)
  end
  if not e then
    return
  end
  local key = e.f.flow_node or ''
  if fl.member[key] then
    fl.state_of[key] = new_state
    fl.dirty_nodes[key] = true
  end
  local ended = TERMINAL[new_state] and not (old_state and TERMINAL[old_state])
  if ended and fl.m.halted ~= '1' then
    if fl.m.on_failure == 'cancel_flow' and (new_state == 'failed' or new_state == 'expired') then
      fl.m.halted = '1'
      flow_cancel_all(fl, 'flow cancelled: member ' .. key .. ' ' .. new_state, queue)
    else
      for _, edge in ipairs(fl.down[key] or {}) do
        local id = fl.member[edge.to]
        if id then
          push(queue, { id = id, fired = edge_fires(edge.on, new_state) or false })
        end
      end
    end
  end
  local promoted = old_state == 'blocked' and new_state == 'waiting'
  if promoted and e.f.join_cancel_remaining == '1' and fl.m.halted ~= '1' then
    for _, from in ipairs(fl.up[key] or {}) do
      local id = fl.member[from]
      if id then
        push(queue, { cancel = true, id = id, reason = 'join of ' .. key .. ' satisfied' })
      end
    end
  end
end

-- `machine::upstream_ended`: counts an upstream's end on the member's join
-- and decides a blocked member. False when the member has no join.
local function upstream_one(c, e, fired)
  local total = num(e, 'join_total')
  if not total then
    return false
  end
  local f, d = num(e, 'join_fired') or 0, num(e, 'join_dead') or 0
  if f + d >= total then
    error('weft: ' .. e.f.id .. ': more upstreams ended than it has')
  end
  if fired then
    f = f + 1
  else
    d = d + 1
  end
  local before = snapshot(c, e)
  put(e, 'join_fired', f)
  put(e, 'join_dead', d)
  put(e, 'updated_at_ms', c.now)
  if e.f.state == 'blocked' then
    local outcome = join_outcome(e.f.join_mode, num(e, 'join_n'), total, f, d)
    if outcome == 'satisfied' then
      put(e, 'state', 'waiting')
      put(e, 'ready_at_ms', c.now)
    elseif outcome == 'unsatisfiable' then
      finish(c, e, 'skipped')
    end
  end
  commit(c, e, before)
  return true
end

-- `cascade`: applies queued follow-ups breadth first, at most
-- CASCADE_CHUNK_MAX steps. Returns the follow-ups left over (a list).
local function flow_cascade(c, fl, queue)
  local head, steps = 1, 0
  while head <= #queue do
    if steps == CASCADE_CHUNK_MAX then
      local left = {}
      for i = head, #queue do
        left[#left + 1] = queue[i]
      end
      return left
    end
    local item = queue[head]
    head = head + 1
    steps = steps + 1
    -- A member purged by retention has nothing left to change.
    local e = load(c, item.id)
    if e then
      local old_state = e.f.state
      local applied = false
      if item.cancel then
        if not TERMINAL[old_state] then
          cancel_one(c, e, item.reason)
          applied = true
        end
      else
        applied = upstream_one(c, e, item.fired)
      end
      if applied then
        flow_settle(c, fl, old_state, e, queue)
      end
    end
  end
  return {}
end

local function outbox_key(c)
  return c.root .. 'o'
end

-- One outbox entry: the flow id, then each follow-up.
local function outbox_encode(fid, left)
  local parts = { fid }
  for _, item in ipairs(left) do
    if item.cancel then
      parts[#parts + 1] = table.concat({ 'c', item.id, item.reason }, SEP)
    else
      parts[#parts + 1] = table.concat({ 'u', item.id, item.fired and '1' or '0' }, SEP)
    end
  end
  return table.concat(parts, OUTBOX_SEP)
end

-- The flow id and follow-ups of an outbox entry.
local function outbox_decode(entry)
  local fid, queue = nil, {}
  for part in string.gmatch(entry, '[^' .. OUTBOX_SEP .. ']+') do
    if fid == nil then
      fid = part
    else
      local p = split(part)
      if p[1] == 'c' then
        push(queue, { cancel = true, id = p[2], reason = p[3] or '' })
      else
        push(queue, { id = p[2], fired = p[3] == '1' })
      end
    end
  end
  return fid, queue
end

-- Appends the follow-ups a call left over to the partition's outbox and
-- hints the partition's owner to continue them now (`enqueue`).
local function flow_enqueue(c, fl, left)
  if #left == 0 then
    return
  end
  redis.call('RPUSH', outbox_key(c), outbox_encode(fl.id, left))
  if c.hints then
    redis.call('PUBLISH', c.channel, c.partition .. ':' .. int(c.now))
  end
end

-- `cascade` up to one chunk, the rest to the outbox.
local function flow_run(c, fl, queue)
  flow_enqueue(c, fl, flow_cascade(c, fl, queue))
end

-- `after_member_transition`, called by `commit` for every flow member.
flow_hook = function(c, fid, old_state, e)
  -- A move within one state (a heartbeat) changes nothing in the flow, as
  -- in the SQL stores.
  if c.flow_busy or old_state == e.f.state then
    return
  end
  local fl = flow_load(c, fid)
  if not fl then
    return
  end
  c.flow_busy = true
  local queue = {}
  flow_settle(c, fl, old_state, e, queue)
  flow_run(c, fl, queue)
  flow_save(c, fl)
  c.flow_busy = false
end

-- The reply for one flow: meta fields (with non-zero `n:<state>` counts),
-- nodes as `key␟id␟state`, edges as `from␟to␟on`.
local function flow_reply(fl)
  local meta = {}
  for k, v in pairs(fl.m) do
    meta[#meta + 1] = k
    meta[#meta + 1] = v
  end
  for s, n in pairs(fl.counts) do
    if n > 0 then
      meta[#meta + 1] = 'n:' .. s
      meta[#meta + 1] = int(n)
    end
  end
  local nodes, edges = {}, {}
  for _, key in ipairs(fl.nodes) do
    nodes[#nodes + 1] = table.concat({ key, fl.member[key], fl.state_of[key] }, SEP)
  end
  for _, edge in ipairs(fl.edges) do
    edges[#edges + 1] = table.concat({ edge.from, edge.to, edge.on }, SEP)
  end
  return { meta, nodes, edges }
end

-- Reads a graph from ARGV[i..]: n nodes, n edges, then per node: key,
-- 8 random hex digits, state, join_total ('0' for none), join_mode, join_n
-- or '', join_cancel_remaining, n field pairs, pairs...; per edge: from, to,
-- on. Member ids are `ex_` .. `stamp` .. the random digits.
local function parse_graph(args, i, stamp)
  local n_nodes, n_edges = tonumber(args[i]), tonumber(args[i + 1])
  i = i + 2
  local nodes, edges = {}, {}
  for _ = 1, n_nodes do
    local node = {
      key = args[i], id = 'ex_' .. stamp .. args[i + 1], state = args[i + 2],
      total = tonumber(args[i + 3]), mode = args[i + 4], n = args[i + 5],
      cancel_remaining = args[i + 6], fields = {},
    }
    local pairs_n = tonumber(args[i + 7])
    i = i + 8
    for _ = 1, pairs_n do
      node.fields[#node.fields + 1] = { args[i], args[i + 1] }
      i = i + 2
    end
    nodes[#nodes + 1] = node
  end
  for _ = 1, n_edges do
    edges[#edges + 1] = { args[i], args[i + 1], args[i + 2] }
    i = i + 3
  end
  return nodes, edges
end

-- True when some new member id is taken (or repeated in the request).
local function ids_taken(c, nodes)
  local seen = {}
  for _, node in ipairs(nodes) do
    if seen[node.id] or redis.call('ZSCORE', c.root .. 'all', node.id) then
      return true
    end
    seen[node.id] = true
  end
  return false
end

-- `create_members`: writes each node's member (`blocked` with its join
-- when it has incoming edges, else `waiting`), settles it, then appends
-- the edges. `c.flow_busy` must be set.
local function flow_add_members(c, fl, nodes, edges)
  for _, node in ipairs(nodes) do
    local e = { f = {}, dirty = {} }
    for _, pair in ipairs(node.fields) do
      put(e, pair[1], pair[2])
    end
    put(e, 'id', node.id)
    put(e, 'state', node.state)
    put(e, 'ready_at_ms', c.now)
    put(e, 'created_at_ms', c.now)
    put(e, 'updated_at_ms', c.now)
    for _, k in ipairs({ 'attempts', 'failures', 'reclaims', 'epoch' }) do
      put(e, k, 0)
    end
    put(e, 'flow_id', fl.id)
    put(e, 'flow_node', node.key)
    if node.total > 0 then
      put(e, 'join_mode', node.mode)
      if node.n ~= '' then
        put(e, 'join_n', node.n)
      end
      put(e, 'join_cancel_remaining', node.cancel_remaining)
      put(e, 'join_total', node.total)
      put(e, 'join_fired', 0)
      put(e, 'join_dead', 0)
    end
    redis.call('ZADD', c.root .. 'all', 'NX', 0, node.id)
    commit(c, e, nil)
    redis.call('SADD', c.root .. 'lanes', e.f.lane)
    redis.call('RPUSH', flow_part_key(c, 'fn', fl.id), node.key .. SEP .. node.id)
    fl.nodes[#fl.nodes + 1] = node.key
    fl.member[node.key] = node.id
    flow_settle(c, fl, nil, e, {})
  end
  for _, edge in ipairs(edges) do
    redis.call('RPUSH', flow_part_key(c, 'fe', fl.id), table.concat(edge, SEP))
    flow_add_edge(fl, edge[1], edge[2], edge[3])
  end
end

local function id_stamp(c, partition_hex)
  return partition_hex .. string.format('%012x', c.now % 281474976710656)
end

-- ARGV[4] partition as 4 hex digits, [5] 8 random hex digits for the flow
-- id, [6] '1' when a name follows, [7] name, [8] idempotency key or '',
-- [9] on_failure, [10..] the graph (`parse_graph`). Replies 'created' or
-- 'existing' and the flow.
local function fn_flow_create(keys, args)
  local c = ctx(keys, args, true)
  local idem = args[8]
  if idem ~= '' then
    local existing = redis.call('HGET', c.root .. 'k', 'f|' .. idem)
    if existing then
      local found = flow_load(c, existing)
      if found then
        return ok('existing', flow_reply(found))
      end
    end
  end
  local stamp = id_stamp(c, args[4])
  local fid = 'fl_' .. stamp .. args[5]
  local nodes, edges = parse_graph(args, 10, stamp)
  if redis.call('ZSCORE', c.root .. 'flows', fid) or ids_taken(c, nodes) then
    return err('collision')
  end
  local fl = flow_new(fid)
  fl.m = {
    id = fid, state = 'running', on_failure = args[9], cancelled = '0', halted = '0',
    created_at_ms = int(c.now), updated_at_ms = int(c.now),
  }
  if args[6] == '1' then
    fl.m.name = args[7]
  end
  if idem ~= '' then
    fl.m.idempotency_key = idem
    redis.call('HSET', c.root .. 'k', 'f|' .. idem, fid)
  end
  redis.call('ZADD', c.root .. 'flows', 0, fid)
  c.flow_busy = true
  flow_add_members(c, fl, nodes, edges)
  flow_save(c, fl)
  c.flow_busy = false
  return ok('created', flow_reply(fl))
end

local function load_flow_arg(c, args)
  local fl = flow_load(c, args[4])
  if not fl then
    return nil, err('not_found')
  end
  return fl
end

-- ARGV[4] flow id.
local function fn_flow_get(keys, args)
  local c = ctx(keys, args)
  local fl, failure = load_flow_arg(c, args)
  if not fl then
    return failure
  end
  return ok(flow_reply(fl))
end

-- ARGV[4] flow id, [5] the node count and [6] the edge count Rust
-- validated against, [7] partition as 4 hex digits, [8..] the graph.
-- Replies 'changed' when the flow gained nodes since Rust read it.
local function fn_flow_add_nodes(keys, args)
  local c = ctx(keys, args, true)
  local fl, failure = load_flow_arg(c, args)
  if not fl then
    return failure
  end
  if FLOW_TERMINAL[fl.m.state] then
    return err('conflict_flow_ended', fl.m.state)
  end
  if #fl.nodes ~= tonumber(args[5]) or #fl.edges ~= tonumber(args[6]) then
    return err('changed')
  end
  local nodes, edges = parse_graph(args, 8, id_stamp(c, args[7]))
  if ids_taken(c, nodes) then
    return err('collision')
  end
  local existing = {}
  for _, key in ipairs(fl.nodes) do
    existing[key] = true
  end
  c.flow_busy = true
  flow_add_members(c, fl, nodes, edges)
  local queue = {}
  for _, edge in ipairs(edges) do
    local from, to = fl.member[edge[1]], fl.member[edge[2]]
    if existing[edge[1]] and from and to then
      local upstream = load(c, from)
      local fired = upstream and edge_fires(edge[3], upstream.f.state)
      if fired ~= nil and fl.m.halted ~= '1' then
        push(queue, { id = to, fired = fired })
      end
    end
  end
  flow_run(c, fl, queue)
  flow_save(c, fl)
  c.flow_busy = false
  return ok(flow_reply(fl))
end

-- ARGV[4] flow id. `cancel_flow`.
local function fn_flow_cancel(keys, args)
  local c = ctx(keys, args, true)
  local fl, failure = load_flow_arg(c, args)
  if not fl then
    return failure
  end
  if FLOW_TERMINAL[fl.m.state] then
    if fl.m.cancelled == '1' then
      return ok(flow_reply(fl))
    end
    return err('conflict_flow_ended', fl.m.state)
  end
  fl.m.cancelled = '1'
  fl.m.halted = '1'
  c.flow_busy = true
  local queue = {}
  flow_cancel_all(fl, 'flow cancelled', queue)
  -- What a huge flow leaves over continues through the outbox (DESIGN §7).
  flow_run(c, fl, queue)
  fl.m.state = flow_derive(fl)
  if FLOW_TERMINAL[fl.m.state] and not fl.m.finished_at_ms then
    fl.m.finished_at_ms = int(c.now)
  end
  flow_save(c, fl)
  c.flow_busy = false
  return ok(flow_reply(fl))
end

-- ARGV[4] flow id to start after ('' from the first), [5] matches wanted,
-- [6] most ids to examine, [7] state ('' for any). Replies like `weft_list`.
local function fn_flow_list(keys, args)
  local c = ctx(keys, args)
  return lex_scan(c.root .. 'flows', args[4], tonumber(args[5]), tonumber(args[6]), function(fid)
    local fl = flow_load(c, fid)
    if fl and (args[7] == '' or fl.m.state == args[7]) then
      return flow_reply(fl)
    end
  end)
end

-- A claimed member's inputs as JSON text: each upstream's result by node
-- key, `null` unless it completed (`flow::inputs`).
local function flow_inputs(c, e)
  local fl = flow_load(c, e.f.flow_id)
  if not fl then
    return '{}'
  end
  local parts = {}
  for _, from in ipairs(fl.up[e.f.flow_node or ''] or {}) do
    local id = fl.member[from]
    local upstream = id and load(c, id)
    if upstream then
      local result = 'null'
      if upstream.f.state == 'completed' and upstream.f.result then
        result = upstream.f.result
      end
      parts[#parts + 1] = cjson.encode(from) .. ':' .. result
    end
  end
  return '{' .. table.concat(parts, ',') .. '}'
end

-- `drain_outbox`, for `weft_tick`: continues up to `max` outbox entries,
-- oldest first; each runs its follow-ups for one more chunk and leaves the
-- outbox in this call (what a chunk leaves over becomes a new entry at the
-- tail). An entry whose flow is gone is dropped. Returns how many ran.
local function flow_drain_outbox(c, max)
  local key = outbox_key(c)
  local n = math.min(max, redis.call('LLEN', key))
  for _ = 1, n do
    local fid, queue = outbox_decode(redis.call('LPOP', key))
    local fl = flow_load(c, fid)
    if fl then
      c.flow_busy = true
      flow_run(c, fl, queue)
      flow_save(c, fl)
      c.flow_busy = false
    end
  end
  return n
end

-- Whether the partition's outbox holds entries.
local function flow_outbox_pending(c)
  return redis.call('LLEN', outbox_key(c)) > 0
end

-- The audit of one partition's flows: counts, node states and the derived
-- state against the members as they are.
local function audit_flows(c, problem)
  for _, fid in ipairs(redis.call('ZRANGE', c.root .. 'flows', 0, -1)) do
    local fl = flow_load(c, fid)
    if not fl then
      problem('flow ' .. fid .. ' is listed but has no hash')
    else
      local counts = {}
      for _, key in ipairs(fl.nodes) do
        local e = load(c, fl.member[key])
        -- A purged member is counted as it ended.
        local state = e and e.f.state or fl.state_of[key]
        counts[state] = (counts[state] or 0) + 1
        if e then
          if fl.state_of[key] ~= e.f.state then
            problem('flow ' .. fid .. ' node ' .. key .. ' is ' .. tostring(fl.state_of[key])
              .. ' but its member is ' .. e.f.state)
          end
        end
      end
      for _, s in ipairs(STATES) do
        if (counts[s] or 0) ~= (fl.counts[s] or 0) then
          problem('flow ' .. fid .. ' counts ' .. int(fl.counts[s] or 0) .. ' ' .. s
            .. ' members, found ' .. int(counts[s] or 0))
        end
      end
      if flow_derive(fl) ~= fl.m.state then
        problem('flow ' .. fid .. ' is ' .. fl.m.state .. ' but its counts say '
          .. flow_derive(fl))
      end
    end
  end
  for i, entry in ipairs(redis.call('LRANGE', outbox_key(c), 0, -1)) do
    local fid = outbox_decode(entry)
    if not fid or redis.call('EXISTS', flow_key(c, fid)) == 0 then
      problem('outbox entry ' .. int(i) .. ' continues flow ' .. tostring(fid)
        .. ', which is not there')
    end
  end
end

-- Whether a member's retention purge may go ahead: once its flow ended (or
-- is gone). A purge leaves the flow's counts and node states as they were.
flow_purge_allowed = function(c, e)
  local state = redis.call('HGET', flow_key(c, e.f.flow_id), 'state')
  return not state or FLOW_TERMINAL[state] ~= nil
end

-- After a member's purge: the flow (and its idempotency key) goes with its
-- last member.
flow_after_purge = function(c, fid)
  local fl = flow_load(c, fid)
  if not fl then
    return
  end
  for _, key in ipairs(fl.nodes) do
    if redis.call('EXISTS', exec_key(c, fl.member[key])) == 1 then
      return
    end
  end
  redis.call('DEL', flow_key(c, fid), flow_part_key(c, 'fn', fid), flow_part_key(c, 'fs', fid),
    flow_part_key(c, 'fe', fid))
  redis.call('ZREM', c.root .. 'flows', fid)
  local idem = fl.m.idempotency_key
  if idem and redis.call('HGET', c.root .. 'k', 'f|' .. idem) == fid then
    redis.call('HDEL', c.root .. 'k', 'f|' .. idem)
  end
end

-- Whether the audit should miss this timer: a member of a running flow
-- holds no retention timer once it is due.
flow_timer_deferred = function(c, e, kind, due)
  if kind ~= 'retention' or not e.f.flow_id or flow_purge_allowed(c, e) then
    return false
  end
  c.now = c.now or now_ms()
  return due <= c.now
end

-- `flow::recount`: the flow as its members say it is (a purged member
-- keeps its recorded state). Changes `fl` and says whether anything moved.
local function flow_recount(c, fl)
  local counts, changed = {}, false
  for _, key in ipairs(fl.nodes) do
    local e = load(c, fl.member[key])
    local state = e and e.f.state or fl.state_of[key]
    if fl.state_of[key] ~= state then
      fl.state_of[key] = state
      fl.dirty_nodes[key] = true
      changed = true
    end
    counts[state] = (counts[state] or 0) + 1
  end
  for _, s in ipairs(STATES) do
    if (counts[s] or 0) ~= (fl.counts[s] or 0) then
      changed = true
    end
  end
  fl.counts = counts
  local state = flow_derive(fl)
  if state ~= fl.m.state then
    fl.m.state = state
    changed = true
  end
  if not FLOW_TERMINAL[state] and fl.m.finished_at_ms then
    fl.m.finished_at_ms = nil
    redis.call('HDEL', flow_key(c, fl.id), 'finished_at_ms')
    changed = true
  elseif FLOW_TERMINAL[state] and not fl.m.finished_at_ms then
    fl.m.finished_at_ms = fl.m.updated_at_ms
    changed = true
  end
  return changed
end

-- ARGV[4] flow id to start after ('' from the first), [5] most flows.
-- The flow projector's pass: recounts each flow from its members and
-- rewrites those that drifted, without events (a repair is not a member's
-- move). Replies flows examined, flows repaired and the next cursor ('' after
-- the partition's last flow).
local function fn_flow_reconcile(keys, args)
  local c = ctx(keys, args)
  local min = '-'
  if args[4] ~= '' then
    min = '(' .. args[4]
  end
  local max = tonumber(args[5])
  local page = redis.call('ZRANGEBYLEX', c.root .. 'flows', min, '+', 'LIMIT', 0, max)
  local repaired = 0
  for _, fid in ipairs(page) do
    local fl = flow_load(c, fid)
    if fl and flow_recount(c, fl) then
      fl.was = fl.m.state
      flow_save(c, fl)
      repaired = repaired + 1
    end
  end
  local next_cursor = ''
  if #page == max then
    next_cursor = page[#page]
  end
  return ok(int(#page), int(repaired), next_cursor)
end
