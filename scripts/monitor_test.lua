-- Tests of monitor.lua: moonwire test -config scripts/default.toml

local hdr = { headers = { ["X-Monitor-Token"] = "monitor-token" } }

test("a wrong token is refused", function(t)
  local c, status, body = t:connect("/monitor", { query = { token = "nope" } })
  t:eq({ c, status, body }, { nil, 401, "Invalid Monitor Token" })
end)

test("reports appear in the snapshot", { settings = { interval = 0.02 } }, function(t)
  local c = t:connect("/monitor", hdr)
  c:send('{"cpu":12.5}')
  -- Snapshots come every 20ms; the first ones may predate the report.
  local snap
  for _ = 1, 500 do
    snap = json.decode((c:recv()))
    if #snap.clients > 0 then break end
  end
  t:eq(snap.type, "snapshot")
  t:eq(#snap.clients, 1)
  t:eq(snap.clients[1].report, { cpu = 12.5 })
  t:eq(snap.clients[1].kind, "text")
end)

test("a client leaves the snapshot when it goes", { settings = { interval = 0.02 } }, function(t)
  local a = t:connect("/monitor", hdr)
  local b = t:connect("/monitor", hdr)
  b:send("up")
  local function clients()
    return #json.decode((a:recv())).clients
  end
  local n = clients()
  for _ = 1, 500 do
    if n == 1 then break end
    n = clients()
  end
  t:eq(n, 1, "b's report arrives")
  b:close()
  for _ = 1, 500 do
    if n == 0 then break end
    n = clients()
  end
  t:eq(n, 0, "b's report is gone with b")
end)
