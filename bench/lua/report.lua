-- Shared by every bench/run measurement: after the run, print one machine-readable
-- line, "BENCH {json}", with the counts and latency percentiles wrk collected.
-- bench/run sets BENCH_LABEL and BENCH_CONNECTIONS in the environment.
--
-- Scripts that count responses themselves (redeem.lua) pass a table of extra
-- fields to bench_report.

function bench_report(summary, latency, extra)
   local e = summary.errors
   local fields = {
      string.format('"label":"%s"', os.getenv("BENCH_LABEL") or "?"),
      string.format('"connections":%d', tonumber(os.getenv("BENCH_CONNECTIONS") or "0")),
      string.format('"requests":%d', summary.requests),
      string.format('"duration_us":%d', summary.duration),
      string.format('"err_connect":%d', e.connect),
      string.format('"err_read":%d', e.read),
      string.format('"err_write":%d', e.write),
      string.format('"err_timeout":%d', e.timeout),
      string.format('"non_2xx_3xx":%d', e.status),
      string.format('"p50_us":%d', latency:percentile(50)),
      string.format('"p90_us":%d', latency:percentile(90)),
      string.format('"p99_us":%d', latency:percentile(99)),
      string.format('"max_us":%d', latency.max),
      string.format('"mean_us":%.1f', latency.mean),
   }
   for k, v in pairs(extra or {}) do
      table.insert(fields, string.format('"%s":%d', k, v))
   end
   io.write("BENCH {" .. table.concat(fields, ",") .. "}\n")
end

function done(summary, latency, requests)
   bench_report(summary, latency)
end
