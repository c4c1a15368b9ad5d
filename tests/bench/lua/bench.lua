-- Shared by the wrk scripts of tests/bench/run: the request headers and
-- the machine-readable result line. Load it with
--   local bench = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "bench.lua")
local bench = {}

-- The two-pair context of every request (as KE_CONTEXT in kmsd_env.c).
bench.context = '{"tenant":"t-0001","doc":"d-000001"}'

-- Base64 of 32 bytes: the DEK the wrap rows send.
bench.dek = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA="

-- JSON headers and "Authorization: Bearer $KMS_BENCH_TOKEN" when set.
function bench.headers()
   wrk.headers["Content-Type"] = "application/json"
   local token = os.getenv("KMS_BENCH_TOKEN")
   if token and token ~= "" then
      wrk.headers["Authorization"] = "Bearer " .. token
   end
end

-- Lines of a file, as an array (for pools of ciphertexts).
function bench.lines(path)
   local t = {}
   local f = assert(io.open(path, "r"), "cannot open " .. tostring(path))
   for l in f:lines() do
      if l ~= "" then t[#t + 1] = l end
   end
   f:close()
   assert(#t > 0, "no lines in " .. path)
   return t
end

-- Threads get an id (for random seeds and pool offsets).
local nthreads = 0
function bench.setup(thread)
   thread:set("tid", nthreads)
   nthreads = nthreads + 1
end

-- One line for tests/bench/run: throughput, latency percentiles (ms) and
-- everything that went wrong (wrk counts answers other than 2xx/3xx as
-- errors.status).
function bench.done(summary, latency, requests)
   local e = summary.errors
   local secs = summary.duration / 1e6
   io.write(string.format("BENCH requests=%d seconds=%.3f rps=%.1f " ..
      "p50_ms=%.3f p99_ms=%.3f non2xx=%d errors=%d\n",
      summary.requests, secs, summary.requests / secs,
      latency:percentile(50) / 1000, latency:percentile(99) / 1000,
      e.status, e.connect + e.read + e.write + e.timeout))
end

return bench
