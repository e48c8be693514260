-- Redemption load: every request accepts a different invite with a different name,
--   POST /api/invite/<token>  {"name": ..., "password": ...}  -> 204 No Content
-- Tokens come from BENCH_TOKENS (one per line, as `invites create` printed them,
-- minus everything up to the `?`); wrk thread k of BENCH_THREADS takes lines
-- k, k+n, k+2n, ... so no two requests share a token. Names are
-- BENCH_RUN-t<thread>-<counter>, distinct within and across runs. A thread that
-- runs out of tokens starts over, and the repeats answer 404 (counted, not hidden).

dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")

local threads = {}
local next_id = 0

function setup(thread)
   thread:set("tid", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

local tokens = {}
local i = 0
local run = os.getenv("BENCH_RUN") or "r"
local password = "correct horse battery staple 42"
local headers = { ["Content-Type"] = "application/json" }
ok = 0      -- 204: an account was created (read back by done() through thread:get)
other = 0   -- any other status

function init(args)
   local n = tonumber(os.getenv("BENCH_THREADS") or "1")
   local line_no = 0
   for line in io.lines(os.getenv("BENCH_TOKENS")) do
      if line_no % n == tid then
         table.insert(tokens, line)
      end
      line_no = line_no + 1
   end
end

function request()
   i = i + 1
   local token = tokens[(i - 1) % #tokens + 1]
   local body = string.format('{"name":"%s-t%d-%d","password":"%s"}', run, tid, i, password)
   return wrk.format("POST", "/api/invite/" .. token, headers, body)
end

function response(status, headers, body)
   if status == 204 then ok = ok + 1 else other = other + 1 end
end

function done(summary, latency, requests)
   local ok_total, other_total = 0, 0
   for _, t in ipairs(threads) do
      ok_total = ok_total + (t:get("ok") or 0)
      other_total = other_total + (t:get("other") or 0)
   end
   bench_report(summary, latency, { status_204 = ok_total, status_other = other_total })
end
