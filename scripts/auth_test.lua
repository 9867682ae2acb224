-- Tests of auth.lua: moonwire test -config scripts/default.toml

test("no token is refused with 401", function(t)
  local c, status, body = t:connect("/auth")
  t:eq(c, nil)
  t:eq(status, 401)
  t:eq(body, "Invalid or missing token")
end)

test("a wrong token is refused", function(t)
  local c, status = t:connect("/auth", { headers = { ["X-Auth-Token"] = "guess" } })
  t:eq({ c, status }, { nil, 401 })
end)

test("a listed token gets a welcome, then echo", function(t)
  local c = t:connect("/auth", { headers = { ["X-Auth-Token"] = "dev-token" } })
  c:expect({ type = "welcome", user = "user" })
  c:send("ping")
  c:expect("ping")
end)

test("the token may come in the query or as a bearer", function(t)
  local q = t:connect("/auth", { query = { token = "dev-token" } })
  q:expect({ type = "welcome" })
  local b = t:connect("/auth", { headers = { Authorization = "Bearer dev-token" } })
  b:expect({ type = "welcome" })
end)

test("tokens can name their users", { settings = { tokens = { ["s3cret"] = "ada" } } }, function(t)
  local c = t:connect("/auth", { headers = { ["X-Auth-Token"] = "s3cret" } })
  c:expect({ type = "welcome", user = "ada" })
  t:eq(select(2, t:connect("/auth", { query = { token = "dev-token" } })), 401, "settings replace the config's tokens")
end)
