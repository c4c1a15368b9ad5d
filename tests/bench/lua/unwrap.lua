-- unwrap or rewrap: wrk ... -s unwrap.lua URL -- unwrap|rewrap POOL_FILE
-- Each request takes the next ciphertext of the pool (made by kmsd_env
-- under bench-1 with the bench context); rewrap goes to bench-1's primary.
local bench = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "bench.lua")
local bodies = {}
local i = 0

setup = bench.setup
done = bench.done

function init(args)
   local op = args[1]
   assert(op == "unwrap" or op == "rewrap", "unwrap or rewrap")
   bench.headers()
   wrk.method = "POST"
   wrk.path = "/v1/keys/bench-1/" .. op
   for n, ct in ipairs(bench.lines(args[2])) do
      bodies[n] = '{"ciphertext":"' .. ct .. '","context":' .. bench.context .. '}'
   end
   -- threads start at different places of the pool
   i = ((tid or 0) * 7919) % #bodies
end

function request()
   i = i % #bodies + 1
   return wrk.format(nil, nil, nil, bodies[i])
end
