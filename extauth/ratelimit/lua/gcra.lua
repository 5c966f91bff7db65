-- GCRA rate limiting for extauth: several requests per call, each all-or-nothing.
-- Same algorithm as extauth/ratelimit/gcra.py (read its docstring); keep the two in step.
--
-- KEYS[i]   window key of check i: rl:{<key>}:<limit>/<period_ms> (all KEYS in one Cluster slot)
-- ARGV[1]   now, whole milliseconds, from the caller's clock
-- ARGV[2+5*(i-1) .. 6+5*(i-1)]  for check i: limit, period_ms, cost, shadow (0|1), last (1 if the last check
--           of its request: the boundary of an all-or-nothing group)
-- return    flat array, 4 integers per check: allowed (0|1), remaining, reset_after_ms, retry_after_ms;
--           allowed = -1: the key could not be read (e.g. it holds another type): that check's request is
--           not consumed and the caller answers it by its failure modes; the other requests are unaffected
-- stored    "<tat_ms>:<frac>" with a PX TTL equal to the time until the bucket is full again

local now = tonumber(ARGV[1])

local function ceil_div(a, b)
  return math.floor((a + b - 1) / b)
end

local cache = {}
local broken = {}
local function get(key)
  local state = cache[key]
  if state == nil then
    local value = redis.pcall('GET', key)
    state = false
    if type(value) == 'table' then
      broken[key] = true
    elseif value then
      local tat, frac = string.match(value, '^(%d+):(%d+)$')
      if tat then state = {tonumber(tat), tonumber(frac)} end
    end
    cache[key] = state
  end
  return state
end

local function put(key, state, ttl)
  cache[key] = state
  redis.call('SET', key, string.format('%d:%d', state[1], state[2]), 'PX', ttl)
end

local function backlog_of(state, limit)
  if not state then return 0 end
  return math.max(0, (state[1] - now) * limit + state[2])
end

local result = {}
local group_start = 1
local group_ok = true
local pending, pending_order = {}, {}

for i = 1, #KEYS do
  local key = KEYS[i]
  local base = 2 + 5 * (i - 1)
  local limit = tonumber(ARGV[base])
  local period = tonumber(ARGV[base + 1])
  local cost = tonumber(ARGV[base + 2])
  local shadow = ARGV[base + 3] == '1'
  local last = ARGV[base + 4] == '1'

  local state
  if pending[key] then state = pending[key][1] else state = get(key) end
  local capacity = period * limit
  local backlog = backlog_of(state, limit)
  local after = backlog + cost * period
  local r = 4 * (i - 1)
  if broken[key] then
    group_ok = false
    result[r + 1], result[r + 2], result[r + 3], result[r + 4] = -1, 0, 0, 0
  elseif after <= capacity then
    local new_state = {now + math.floor(after / limit), after % limit}
    local ttl = math.max(1, ceil_div(after, limit))
    if shadow then
      put(key, new_state, ttl)
    else
      if not pending[key] then table.insert(pending_order, key) end
      pending[key] = {new_state, ttl}
    end
    result[r + 1], result[r + 2], result[r + 3], result[r + 4] = 1, math.floor((capacity - after) / period), ttl, 0
  else
    if not shadow then group_ok = false end
    result[r + 1], result[r + 2] = 0, math.floor((capacity - backlog) / period)
    result[r + 3], result[r + 4] = ceil_div(backlog, limit), ceil_div(after - capacity, limit)
  end

  if last then
    if group_ok then
      for _, k in ipairs(pending_order) do put(k, pending[k][1], pending[k][2]) end
    else
      -- Nothing of this request is consumed: report the room left without it.
      for j = group_start, i do
        local b = 2 + 5 * (j - 1)
        local rj = 4 * (j - 1)
        if result[rj + 1] == 1 and ARGV[b + 3] ~= '1' then
          local l, p = tonumber(ARGV[b]), tonumber(ARGV[b + 1])
          local bl = backlog_of(get(KEYS[j]), l)
          result[rj + 2], result[rj + 3] = math.floor((p * l - bl) / p), ceil_div(bl, l)
        end
      end
    end
    group_start, group_ok, pending, pending_order = i + 1, true, {}, {}
  end
end

return result
