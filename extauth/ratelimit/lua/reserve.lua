-- Reservations for extauth's queued mode (`on_limit: queue`): consume one request's checks now for a time up
-- to each check's tolerance ahead, and return how long the request must wait to conform. Same bucket, state
-- and arithmetic as gcra.lua (read gcra.py); the Python twin is extauth/ratelimit/queue.py `reserve`.
--
-- KEYS[i]   window key of check i (rl:{<key>}:<limit>/<period_ms>); all KEYS of one call in one Cluster slot
-- ARGV[1]   now, whole milliseconds, from the caller's clock
-- ARGV[2+4*(i-1) .. 5+4*(i-1)]  for check i: limit, period_ms, cost, tolerance_ms (how far ahead of now this
--           check may be reserved: its max_wait; 0 for a check that must conform now)
-- return    {status, wait_ms}: 1 reserved (every check consumed; the request conforms in wait_ms), 0 some check
--           is further ahead than its tolerance, or costs more than its limit (nothing consumed; wait_ms: the
--           wait it would need),
--           -1 a key could not be read (nothing consumed)

local now = tonumber(ARGV[1])

local function ceil_div(a, b)
  return math.floor((a + b - 1) / b)
end

local states, order = {}, {}
local wait, fits = 0, true
for i = 1, #KEYS do
  local key = KEYS[i]
  local base = 2 + 4 * (i - 1)
  local limit, period = tonumber(ARGV[base]), tonumber(ARGV[base + 1])
  local cost, tolerance = tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  local backlog = states[key]
  if backlog == nil then
    local value = redis.pcall('GET', key)
    if type(value) == 'table' then return {-1, 0} end
    backlog = 0
    if value then
      local tat, frac = string.match(value, '^(%d+):(%d+)$')
      if tat then backlog = math.max(0, (tonumber(tat) - now) * limit + tonumber(frac)) end
    end
    table.insert(order, {key, limit})
  end
  local after = backlog + cost * period
  local ahead = math.max(0, ceil_div(after - period * limit, limit))
  if ahead > wait then wait = ahead end
  -- A cost above the limit never conforms, however long it waits.
  if ahead > tolerance or cost > limit then fits = false end
  states[key] = after
end
if not fits then return {0, wait} end
for _, entry in ipairs(order) do
  local key, limit = entry[1], entry[2]
  local after = states[key]
  redis.call('SET', key, string.format('%d:%d', now + math.floor(after / limit), after % limit),
             'PX', math.max(1, ceil_div(after, limit)))
end
return {1, wait}
