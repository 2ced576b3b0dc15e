-- waitpoint.lua: how an execution's suspension and signals are stored
-- (weft-core `waitpoint.rs`).
--
-- Definitions: the last suspension is the field `suspension`:
-- `seq␟resume_when␟suspended_at_ms`, then per waitpoint in declaration order
-- `␟name␟timeout_at_ms␟on_timeout␟expires_at_ms␟signalled` (timeout empty
-- when none, signalled `1`/`0`); waitpoint names are letters, digits and
-- `_ . : / -`, so the separator never occurs in them. A signal's payload is
-- the field `sig:<waitpoint>` while no run has been handed it, and
-- `res:<waitpoint>` once the suspension it belongs to has ended by resuming
-- (`Execution::signals`, `resumed_signals`); payloads are the JSON text Rust
-- sent, never decoded here, so their bytes stay exactly as sent.

local SIGNAL = 'sig:'
local RESUMED = 'res:'

-- The recorded suspension as a table (waitpoints in `wps`), or nil.
local function suspension_of(e)
  local raw = e.f.suspension
  if raw == nil then
    return nil
  end
  local p = split(raw)
  local s = { seq = tonumber(p[1]), resume_when = p[2], at = tonumber(p[3]), wps = {} }
  for i = 4, #p, 5 do
    s.wps[#s.wps + 1] = {
      name = p[i],
      timeout_at = tonumber(p[i + 1]),
      on_timeout = p[i + 2],
      expires_at = tonumber(p[i + 3]),
      signalled = p[i + 4] == '1',
    }
  end
  return s
end

local function suspension_text(s)
  local parts = { int(s.seq), s.resume_when, int(s.at) }
  for _, w in ipairs(s.wps) do
    parts[#parts + 1] = w.name
    parts[#parts + 1] = w.timeout_at and int(w.timeout_at) or ''
    parts[#parts + 1] = w.on_timeout
    parts[#parts + 1] = int(w.expires_at)
    parts[#parts + 1] = w.signalled and '1' or '0'
  end
  return table.concat(parts, SEP)
end

-- `Suspension::satisfied`.
local function suspension_satisfied(s)
  local any, all = false, true
  for _, w in ipairs(s.wps) do
    if w.signalled then
      any = true
    else
      all = false
    end
  end
  if s.resume_when == 'any' then
    return any
  end
  return all
end

-- `Suspension::next_timeout`: the unsignalled waitpoint whose timeout falls
-- first; the earlier declared wins a tie, as `min_by_key` picks the first.
local function next_timeout(s)
  local first
  for _, w in ipairs(s.wps) do
    if not w.signalled and w.timeout_at and (first == nil or w.timeout_at < first.timeout_at) then
      first = w
    end
  end
  return first
end

-- The waitpoint names of the fields starting with `prefix` (`SIGNAL` or
-- `RESUMED`).
local function signal_names(e, prefix)
  local names = {}
  for k in pairs(e.f) do
    if string.sub(k, 1, #prefix) == prefix then
      names[#names + 1] = string.sub(k, #prefix + 1)
    end
  end
  return names
end
