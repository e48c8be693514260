-- Synapse's nearest equivalent of minting an invite: a registration token,
--   POST /_synapse/admin/v1/registration_tokens/new  {}  -> 200
-- as the server admin whose access token bench/synapse-peer printed
-- (BENCH_SYNAPSE_TOKEN). Each request makes a new token with Synapse's
-- defaults (unlimited uses, no expiry).

dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")

wrk.method = "POST"
wrk.body = "{}"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_SYNAPSE_TOKEN")
