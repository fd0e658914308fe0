-- wrk script: every request carries the next session JWT from a file
-- (one per line), cycling; after LIMIT responses (0 = no limit) the run stops.
--   wrk ... URL -s tokens.lua -- TOKENS_FILE LIMIT
local tokens = {}
local n = 0
local idx = 0
local limit = 0
local responses = 0

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then
      n = n + 1
      tokens[n] = line
    end
  end
  limit = tonumber(args[2] or "0") or 0
  if n == 0 then
    error("no tokens in " .. args[1])
  end
end

function request()
  idx = idx % n + 1
  return wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. tokens[idx] })
end

function response(status, headers, body)
  responses = responses + 1
  if limit > 0 and responses >= limit then
    wrk.thread:stop()
  end
end
