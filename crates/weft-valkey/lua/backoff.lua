-- backoff.lua: retry delays bit for bit as weft-core computes them.
--
-- Definitions: `jitter_unit(id, attempt)` is FNV-1a 64 over the id's bytes
-- followed by the attempt number as 4 little-endian bytes, then
-- `(hash >> 11) / 2^53`. Lua 5.1 has only doubles, so the 64-bit hash is
-- kept as two 32-bit halves; every intermediate stays below 2^53 and is
-- therefore exact.
--
-- Invariants: `backoff_delay` equals `Backoff::delay_ms` for every input
-- (tested against Rust over many ids, attempts and policies).

local TWO32 = 4294967296
local TWO24 = 16777216

-- hash = (hash xor byte) * (2^40 + 0x1b3) mod 2^64, on (hi, lo) halves.
local function fnv_step(hi, lo, byte)
  local low8 = lo % 256
  lo = lo - low8 + bit.band(bit.bxor(low8, byte), 255)
  local lo_mul = lo * 435
  local carry = math.floor(lo_mul / TWO32)
  local new_lo = lo_mul % TWO32
  -- The 2^40 term moves lo's low 24 bits into hi, shifted by 8.
  local new_hi = (hi * 435 + carry + (lo % TWO24) * 256) % TWO32
  return new_hi, new_lo
end

local function jitter_unit(id, attempt)
  local hi, lo = 3421674724, 2216829733 -- 0xcbf29ce4_84222325
  for i = 1, #id do
    hi, lo = fnv_step(hi, lo, string.byte(id, i))
  end
  local n = attempt
  for _ = 1, 4 do
    hi, lo = fnv_step(hi, lo, n % 256)
    n = math.floor(n / 256)
  end
  return (hi * 2097152 + math.floor(lo / 2048)) / 9007199254740992
end

-- `f64::powi` as compiled (square-and-multiply), not C's `pow`.
local function powi(a, b)
  local r = 1.0
  while true do
    if b % 2 == 1 then
      r = r * a
    end
    b = math.floor(b / 2)
    if b == 0 then
      break
    end
    a = a * a
  end
  return r
end

-- `f64::round` (half away from zero), then `.max(0.0)`.
local function round_nonneg(x)
  if not (x > 0) then
    return 0
  end
  local f = math.floor(x)
  if x - f >= 0.5 then
    return f + 1
  end
  return f
end

-- `Backoff::delay_ms(failures, unit)` for the policy stored on `e`.
local function backoff_delay(e, failures, unit)
  local initial = num(e, 'backoff_initial_ms')
  local max = num(e, 'backoff_max_ms')
  local multiplier = num(e, 'backoff_multiplier')
  local jitter = num(e, 'backoff_jitter')
  local exponent = failures - 1
  if exponent < 0 then
    exponent = 0
  end
  local base = initial * powi(multiplier, exponent)
  -- `f64::min` returns the other operand when one is NaN (0 × inf).
  if base ~= base or max < base then
    base = max
  end
  local spread = base * jitter * (2.0 * unit - 1.0)
  return round_nonneg(base + spread)
end
