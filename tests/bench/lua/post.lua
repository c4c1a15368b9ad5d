-- A fixed request: wrk ... -s post.lua URL -- datakey|sign|jwks
local bench = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "bench.lua")

setup = bench.setup
done = bench.done

function init(args)
   local what = args[1]
   bench.headers()
   if what == "datakey" then
      wrk.method = "POST"
      wrk.path = "/v1/keys/bench-1/datakey"
      wrk.body = '{"bits":256,"context":' .. bench.context .. '}'
   elseif what == "sign" then
      -- ES256 over 32 bytes of input (kmsd hashes, the token signs)
      wrk.method = "POST"
      wrk.path = "/v1/keys/bench-sign/sign"
      wrk.body = '{"input":"' .. bench.dek .. '"}'
   elseif what == "jwks" then
      wrk.method = "GET"
      wrk.path = "/.well-known/jwks.json"
      wrk.headers["Content-Type"] = nil
      wrk.headers["Authorization"] = nil
   else
      error("datakey, sign or jwks")
   end
end
