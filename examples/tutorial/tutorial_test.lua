-- Tests of the tutorial's servers:
--   moonwire test -config examples/tutorial/moonwire.toml

test("3.1 echo prefixes Echo:", function(t)
  local c = t:connect("/echo")
  c:send("hello")
  c:expect("Echo: hello")
end)

test("3.2 text and binary get their own answers", function(t)
  local c = t:connect("/binary")
  c:send("hi")
  c:expect("文本响应: hi")
  c:send("\1\2", "binary")
  t:eq({ c:recv() }, { "\1\2_response", "binary" })
end)

test("3.3 close on request, acknowledge otherwise", function(t)
  local c = t:connect("/close")
  c:send("hello")
  c:expect("收到: hello")
  c:send("close")
  t:eq({ c:closed() }, { 1000, "客户端请求关闭" })
  t:eq({ c:recv() }, { nil, "closed", 1000, "客户端请求关闭" })
end)

test("3.4 every message is answered", function(t)
  local c = t:connect("/exceptions")
  c:send("x")
  c:expect("响应: x")
end)

test("3.5 ping gets pong", function(t)
  local c = t:connect("/heartbeat")
  c:send("ping")
  c:expect("pong")
  c:send("other")
  c:expect("响应: other")
end)

test("3.6 the handshake needs a token", function(t)
  t:run("refused without", function(t)
    local c, status, body = t:connect("/auth")
    t:eq({ c, status, body }, { nil, 401, "Invalid or missing token" })
  end)
  t:run("accepted with", function(t)
    local c = t:connect("/auth", { headers = { ["X-Auth-Token"] = "token_456" } })
    c:send("m")
    c:expect("认证通过的响应: m")
  end)
end)

test("3.7 chat goes to the others", function(t)
  local a = t:connect("/chat")
  local b = t:connect("/chat")
  -- a joins the room in on_open, on its own VM, maybe after connect has
  -- returned: b speaks until a, in the room, hears it.
  local heard
  for i = 1, 100 do
    b:send("hello " .. i)
    heard = a:recv(0.05)
    if heard then break end
  end
  t:match(heard, "^%[127%.0%.0%.1:%d+%] hello %d+$")
  t:eq({ b:recv(0.05) }, { nil, "timeout" }, "the sender gets no copy")
end)

local monitor = { headers = { ["X-Monitor-Token"] = "monitor_token_2025" } }

test("4 a silent monitor client is closed", { settings = { silent_timeout = 5, check_every = 2 } }, function(t)
  local c = t:connect("/monitor", monitor)
  -- Checks at 2s and 4s find it silent for no more than 5s; the one at 6s
  -- closes it. The virtual clock makes that take microseconds.
  t:advance("5s")
  t:eq({ c:closed(0.05) }, { nil, "timeout" }, "still open at 5s")
  t:advance("1s")
  t:eq({ c:closed() }, { 1001, "Heartbeat timeout" })
end)

test("4 a monitor client that reports stays", { settings = { silent_timeout = 5, check_every = 2 } }, function(t)
  local c = t:connect("/monitor", monitor)
  t:advance("4s")
  c:send("ping")
  c:expect("pong") -- seen at 4s
  t:advance("5s")
  t:eq({ c:closed(0.05) }, { nil, "timeout" }, "silent for 5s at 9s: not more than 5s")
  t:advance("1s")
  t:eq({ c:closed() }, { 1001, "Heartbeat timeout" })
end)

test("4 reports are relayed, cut at 50 bytes", function(t)
  local a = t:connect("/monitor", monitor)
  local b = t:connect("/monitor", monitor)
  a:send("ping")
  a:expect("pong")
  b:send(string.rep("x", 60))
  a:expect(function(data) return data:match("%] " .. string.rep("x", 50) .. "%.%.%.$") ~= nil end)
end)

test("4 the token also as ?token=", function(t)
  local c = t:connect("/monitor", { query = { token = "monitor_token_2025" } })
  c:send("ping")
  c:expect("pong")
  local refused, status = t:connect("/monitor", { query = { token = "wrong" } })
  t:eq({ refused, status }, { nil, 401 })
end)

test("4 a plain GET answers the monitor page", function(t)
  local status, headers, body = t:http("GET", "/monitor")
  t:eq(status, 200)
  t:eq(headers["content-type"], "text/html; charset=utf-8")
  t:match(body, '<svg id="monitor%-chart"')
end)
