-- Tests of monitor.lua: moonwire test -config scripts/default.toml

local hdr = { headers = { ["X-Monitor-Token"] = "monitor-token" } }

test("a wrong token is refused", function(t)
  local c, status, body = t:connect("/monitor", { query = { token = "nope" } })
  t:eq({ c, status, body }, { nil, 401, "Invalid Monitor Token" })
end)

test("a snapshot every interval", { settings = { interval = 5 } }, function(t)
  local c = t:connect("/monitor", hdr)
  -- The virtual clock moves only with t:advance: 15 seconds bring exactly
  -- three snapshots, 5 seconds apart.
  t:advance("15s")
  local at = {}
  for i = 1, 3 do
    local snap = json.decode((c:recv()))
    t:eq(snap.type, "snapshot")
    at[i] = snap.at
  end
  t:eq({ c:recv(0.05) }, { nil, "timeout" }, "no fourth snapshot")
  local function gap(x, y) return string.format("%.3f", y - x) end
  t:eq({ gap(at[1], at[2]), gap(at[2], at[3]) }, { "5.000", "5.000" })
end)

-- A report is read by the server at some moment after c:send returns,
-- and nothing answers it: snapshots come until one shows it, with a
-- moment of real time between them for the server to read it. At most
-- five (25 s of the virtual clock): the heartbeat closes a silent test
-- client at 30 s whether or not the server has read the report, and a
-- loop that advanced faster than a busy machine read failed there.
local function snapshotWith(t, c, n)
  local snap
  for _ = 1, 5 do
    t:advance("5s")
    snap = json.decode((c:recv()))
    if #snap.clients == n then return snap end
    c:recv(0.2) -- nothing comes between advances: a pause in real time
  end
  return snap
end

test("reports appear in the snapshot", function(t)
  local c = t:connect("/monitor", hdr)
  c:send('{"cpu":12.5}')
  local snap = snapshotWith(t, c, 1)
  t:eq(snap.type, "snapshot")
  t:eq(#snap.clients, 1)
  t:eq(snap.clients[1].report, { cpu = 12.5 })
  t:eq(snap.clients[1].kind, "text")
end)

test("a client leaves the snapshot when it goes", function(t)
  local a = t:connect("/monitor", hdr)
  local b = t:connect("/monitor", hdr)
  b:send("up")
  t:eq(#snapshotWith(t, a, 1).clients, 1, "b's report arrives")
  -- A new watcher, with the heartbeat's whole 30 s ahead of it: a's may
  -- be mostly spent. b:close returns once the server has answered.
  local w = t:connect("/monitor", hdr)
  b:close()
  t:eq(#snapshotWith(t, w, 0).clients, 0, "b's report is gone with b")
end)

test("a silent client is dropped by the heartbeat", function(t)
  local c = t:connect("/monitor", hdr)
  -- The default heartbeat (10s / 30s) closes a client that never sends
  -- (test clients do not answer pings) at 30s.
  t:advance("29.5s")
  t:eq({ c:closed(0.05) }, { nil, "timeout" }, "open at 29.5s")
  t:advance("1s")
  t:eq({ c:closed() }, { 1001, "heartbeat timeout" })
end)

test("a plain GET answers the monitor page", function(t)
  local status, headers, body = t:http("GET", "/monitor")
  t:eq(status, 200)
  t:eq(headers["content-type"], "text/html; charset=utf-8")
  t:match(headers["content-security-policy"], "default%-src 'none'")
  t:match(body, '<svg id="monitor%-chart"')
  t:match(body, 'id="metric"')
  t:eq(({ t:http("POST", "/monitor", { body = "x" }) })[1], 405, "only GET and HEAD")
end)
