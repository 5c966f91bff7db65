-- Leases for extauth's leased mode: take up to `want` units of a GCRA bucket at once, for a process to spend
-- locally. Same bucket, state format and arithmetic as gcra.lua (read gcra.py); the Python twin is
-- extauth/ratelimit/lease.py `grant`: keep the two in step.
--
-- KEYS[i]   window key of lease i (rl:{<key>}:<limit>/<period_ms>); all KEYS of one call in one Cluster slot
-- ARGV[1]   now, whole milliseconds, from the caller's clock
-- ARGV[2+4*(i-1) .. 5+4*(i-1)]  for lease i: limit, period_ms, want (units, >= 1), need (the cost of the
--           request asking: fewer units than that are not leased, they would be stranded)
-- return    flat array, 4 integers per lease: granted (0 or need..want; -1: the key could not be read), remaining
--           after the grant, reset_after_ms, retry_after_ms (until one unit fits; 0 when granted > 0)

local now = tonumber(ARGV[1])

local function ceil_div(a, b)
  return math.floor((a + b - 1) / b)
end

local result = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local base = 2 + 4 * (i - 1)
  local limit = tonumber(ARGV[base])
  local period = tonumber(ARGV[base + 1])
  local want, need = tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  local r = 4 * (i - 1)
  local value = redis.pcall('GET', key)
  if type(value) == 'table' then
    result[r + 1], result[r + 2], result[r + 3], result[r + 4] = -1, 0, 0, 0
  else
    local backlog = 0
    if value then
      local tat, frac = string.match(value, '^(%d+):(%d+)$')
      if tat then backlog = math.max(0, (tonumber(tat) - now) * limit + tonumber(frac)) end
    end
    local capacity = period * limit
    local room = math.floor((capacity - backlog) / period)
    local granted = 0
    if room >= need then granted = math.min(want, room) end
    if granted > 0 then
      local after = backlog + granted * period
      local ttl = math.max(1, ceil_div(after, limit))
      redis.call('SET', key, string.format('%d:%d', now + math.floor(after / limit), after % limit), 'PX', ttl)
      result[r + 1], result[r + 2], result[r + 3], result[r + 4] = granted, room - granted, ttl, 0
    else
      result[r + 1], result[r + 2] = 0, 0
      result[r + 3], result[r + 4] = ceil_div(backlog, limit), ceil_div(backlog + need * period - capacity, limit)
    end
  end
end
return result
