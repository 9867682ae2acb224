-- Tests of echo.lua: moonwire test -config scripts/default.toml

test("text comes back as text", function(t)
  local c = t:connect("/echo")
  c:send("hello")
  t:eq({ c:recv() }, { "hello", "text" })
end)

test("binary comes back as binary", function(t)
  local c = t:connect("/echo")
  c:send("\0\1\2", "binary")
  local data, kind = c:recv()
  t:eq(data, "\0\1\2")
  t:eq(kind, "binary")
end)

test("the close code comes back", function(t)
  local c = t:connect("/echo")
  c:send("last")
  c:expect("last")
  t:eq(c:close(4000, "bye"), 4000, "the server answers with the same code")
end)

test("nothing is sent unasked", function(t)
  local c = t:connect("/echo")
  t:eq({ c:recv(0.05) }, { nil, "timeout" })
end)
