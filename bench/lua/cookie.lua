-- A GET with the sign-in cookie BENCH_COOKIE (`identity=<token>`), for
-- /api/auth/check: every request is a signed-in forward-auth check.

dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")

wrk.headers["Cookie"] = os.getenv("BENCH_COOKIE")
