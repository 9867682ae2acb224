-- chat.lua: a chat room per path.
--
-- Mount it on "/chat/{room}" (and "/chat" for the lobby). Every text
-- message is broadcast to the other members as JSON; joins and leaves are
-- announced. With settings.history = N the last N messages of a room are
-- replayed to whoever joins. Binary messages are relayed to the others as
-- they are.
--
-- History is bounded, since any client can write to it: a message is kept
-- for settings.history_ttl seconds (default 3600), only if it is at most
-- settings.history_max_bytes long (default 4096; longer ones are relayed
-- but not kept), and in at most settings.history_rooms rooms at a time
-- (default 1000; messages to other rooms are relayed but not kept). The
-- shared store's own budget ([store] max_bytes) bounds the rest.
--
--   -> {"id":"<conn>","members":2,"room":"lobby","type":"join"}
--   -> {"at":1764160000.1,"from":"<conn>","room":"lobby","text":"hi","type":"message"}
--   -> {"id":"<conn>","members":1,"room":"lobby","type":"leave"}
-- (json.encode sorts keys.)
local M = {}

local function room_of(conn)
  return conn.params.room or "lobby"
end

local function setting(name, default)
  return tonumber(ws.settings[name]) or default
end

-- History lives in the shared store so every VM (and a reload) sees it:
-- one key per message, numbered by an atomic counter, each with a TTL.
local function remember(room, msg)
  local n = setting("history", 0)
  if n <= 0 or #msg > setting("history_max_bytes", 4096) then return end
  local ttl = setting("history_ttl", 3600)
  local seqkey = "chat:seq:" .. room
  if not store.get(seqkey) and #store.keys("chat:seq:") >= setting("history_rooms", 1000) then
    return -- too many rooms keep history already
  end
  local seq = store.incr(seqkey, 1, ttl)
  if not seq then return end -- the store is full: relayed, not kept
  store.set("chat:msg:" .. room .. ":" .. seq, msg, ttl)
  store.delete("chat:msg:" .. room .. ":" .. (seq - n))
end

local function replay(conn, room)
  local n = setting("history", 0)
  if n <= 0 then return end
  local last = store.get("chat:seq:" .. room) or 0
  for seq = math.max(1, last - n + 1), last do
    local msg = store.get("chat:msg:" .. room .. ":" .. seq)
    if msg then conn:send(msg) end
  end
end

function M.on_open(conn)
  local room = room_of(conn)
  replay(conn, room)
  conn:join(room)
  ws.broadcast(room, json.encode({
    type = "join", id = conn.id, room = room, members = ws.room_size(room),
  }))
end

function M.on_message(conn, data, kind)
  local room = room_of(conn)
  if kind == "binary" then
    ws.broadcast(room, data, { kind = "binary", except = conn })
    return
  end
  local msg = json.encode({
    type = "message", from = conn.id, room = room, text = data, at = time.now(),
  })
  remember(room, msg)
  ws.broadcast(room, msg, { except = conn })
end

function M.on_close(conn, code, reason)
  local room = room_of(conn)
  ws.broadcast(room, json.encode({
    type = "leave", id = conn.id, room = room, members = ws.room_size(room),
  }))
end

return M
