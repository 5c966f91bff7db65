-- Releases for extauth's queued mode: a reserved request that gave up (Envoy cancelled its Check) takes its
-- units back out of each bucket, so its place goes to the next request. The Python twin is
-- extauth/ratelimit/queue.py `release`.
--
-- KEYS[i]   window key of check i; all KEYS of one call in one Cluster slot
-- ARGV[1]   now, whole milliseconds
-- ARGV[2+3*(i-1) .. 4+3*(i-1)]  for check i: limit, period_ms, cost
-- return    the number of keys changed

local now = tonumber(ARGV[1])
local changed = 0
for i = 1, #KEYS do
  local key = KEYS[i]
  local base = 2 + 3 * (i - 1)
  local limit, period, cost = tonumber(ARGV[base]), tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
  local value = redis.pcall('GET', key)
  if type(value) == 'string' then
    local tat, frac = string.match(value, '^(%d+):(%d+)$')
    if tat then
      local backlog = (tonumber(tat) - now) * limit + tonumber(frac) - cost * period
      if backlog <= 0 then
        redis.call('DEL', key)
      else
        redis.call('SET', key, string.format('%d:%d', now + math.floor(backlog / limit), backlog % limit),
                   'PX', math.max(1, math.floor((backlog + limit - 1) / limit)))
      end
      changed = changed + 1
    end
  end
end
return changed
