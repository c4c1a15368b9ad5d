-- wrap: wrk ... -s wrap.lua URL -- ITEMS [KEYS]
--   ITEMS 0: a single wrap of a 32-byte DEK under bench-1; N > 0: a batch
--   of N such items. KEYS > 0: a single wrap under a key picked at random
--   per request out of bench-s0 .. bench-s<KEYS-1>.
local bench = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "bench.lua")
local item = '{"plaintext":"' .. bench.dek .. '","context":' .. bench.context .. '}'
local keys = 0

setup = bench.setup
done = bench.done

function init(args)
   local items = tonumber(args[1] or "0")
   keys = tonumber(args[2] or "0")
   bench.headers()
   wrk.method = "POST"
   wrk.path = "/v1/keys/bench-1/wrap"
   if items > 0 then
      local t = {}
      for i = 1, items do t[i] = item end
      wrk.body = '{"batch":[' .. table.concat(t, ",") .. ']}'
   else
      wrk.body = item
   end
   if keys > 0 then
      math.randomseed(os.time() * 1000 + (tid or 0))
      request = function()
         return wrk.format(nil, "/v1/keys/bench-s" ..
            math.random(0, keys - 1) .. "/wrap")
      end
   end
end
