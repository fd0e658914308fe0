-- wrk script: every request carries the next session JWT from a file
-- (one per line), cycling.
--   wrk ... URL -s tokens.lua -- TOKENS_FILE [LIMIT DONE_FILE]
-- With LIMIT > 0: when LIMIT responses have arrived, the thread stops and
-- writes "<responses> <seconds from first request to LIMIT-th response>" to
-- DONE_FILE. (wrk itself keeps sleeping until -d or SIGINT, and its own
-- Requests/sec divides by that whole time, so run.sh signals wrk when
-- DONE_FILE appears and takes the rate from DONE_FILE.) Use with -t1.
local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

local tokens = {}
local n = 0
local idx = 0
local limit = 0
local done_file = nil
local responses = 0
local started = nil

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then
      n = n + 1
      tokens[n] = line
    end
  end
  if n == 0 then
    error("no tokens in " .. args[1])
  end
  limit = tonumber(args[2] or "0") or 0
  done_file = args[3]
end

function request()
  if not started then
    started = now()
  end
  idx = idx % n + 1
  return wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. tokens[idx] })
end

function response(status, headers, body)
  responses = responses + 1
  if limit > 0 and responses == limit then
    local elapsed = now() - started
    if done_file then
      local f = io.open(done_file, "w")
      f:write(string.format("%d %.6f\n", responses, elapsed))
      f:close()
    end
    wrk.thread:stop()
  end
end
