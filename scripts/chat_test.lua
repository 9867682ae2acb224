-- Tests of chat.lua: moonwire test -config scripts/default.toml

-- join connects to room and reads its own join announcement.
local function join(t, room)
  local c = t:connect("/chat/" .. room)
  c:expect({ type = "join", room = room })
  return c
end

test("a message reaches the others, not the sender", function(t)
  local alice = join(t, "lobby")
  local bob = join(t, "lobby")
  alice:expect({ type = "join", id = nil, members = 2 })
  alice:send("hi bob")
  local _, _, msg = bob:expect({ type = "message", text = "hi bob", room = "lobby" })
  t:ok(type(msg.at) == "number", "messages carry their time")
  t:eq({ alice:recv(0.05) }, { nil, "timeout" }, "the sender gets no copy")
end)

test("rooms are separate", function(t)
  local a = join(t, "one")
  local b = join(t, "two")
  a:send("only in one")
  t:eq({ b:recv(0.05) }, { nil, "timeout" })
end)

test("leaving is announced", function(t)
  local a = join(t, "lobby")
  local b = join(t, "lobby")
  a:expect({ type = "join", members = 2 })
  b:close()
  a:expect({ type = "leave", members = 1 })
end)

test("binary is relayed as binary", function(t)
  local a = join(t, "bin")
  local b = join(t, "bin")
  a:send("\255\0", "binary")
  t:eq({ b:recv() }, { "\255\0", "binary" })
end)

test("a newcomer gets the history", { settings = { history = 2 } }, function(t)
  local a = join(t, "lobby")
  local b = join(t, "lobby")
  a:expect({ type = "join", members = 2 })
  for _, text in ipairs({ "one", "two", "three" }) do a:send(text) end
  -- A message is kept before it is broadcast: once b has "three", the
  -- history holds it.
  for _, text in ipairs({ "one", "two", "three" }) do b:expect({ type = "message", text = text }) end
  local late = t:connect("/chat/lobby")
  late:expect({ type = "message", text = "two" })
  late:expect({ type = "message", text = "three" })
  late:expect({ type = "join", members = 3 })
end)

test("history is off with history = 0", { settings = { history = 0 } }, function(t)
  local a = join(t, "lobby")
  local b = join(t, "lobby")
  a:send("gone")
  b:expect({ type = "message", text = "gone" })
  local late = t:connect("/chat/lobby")
  late:expect({ type = "join", members = 3 }) -- first, with no replay before it
end)

test("the lobby is /chat", function(t)
  local c = t:connect("/chat")
  c:expect({ type = "join", room = "lobby" })
end)
