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
-- (default 100; messages to other rooms are relayed but not kept). It
-- lives in the store that every route of the process shares: with the
-- default config's history = 20 the bounds come to at most 20 x 4 KiB x
-- 100 rooms, about 8 MiB of the 64 MiB [store] max_bytes. When the store
-- is full a message is relayed but not kept, and the room keeps the
-- history it had.
--
--   -> {"id":"<conn>","members":2,"room":"lobby","type":"join"}
--   -> {"at":1764160000.1,"from":"<conn>","room":"lobby","text":"hi","type":"message"}
--   -> {"id":"<conn>","members":1,"room":"lobby","type":"leave"}
-- (json.encode sorts keys.)
--
-- A room the config gives a history ([history], e.g. "*" = { size = 100 })
-- is kept by the broker instead, on one node or many: every message, joins
-- and leaves included, reaches every member (the sender too) with its
-- "offset" and "epoch", and a client that reconnects, to any node, with
-- ?since=OFFSET&epoch=EPOCH gets exactly what it missed, then live
-- messages. When that is impossible (the history expired, or the client is
-- further behind than it keeps) the client gets
--   -> {"epoch":"<e>","offset":<n>,"reason":"trimmed","room":"lobby","type":"reload"}
-- and should reload its state, then go on from that offset. A newcomer
-- without ?since= is replayed the last settings.history messages. While the
-- broker cannot be asked, a joining client is closed 1013 (try again
-- later) rather than served with a gap.
local M = {}

local function room_of(conn)
  return conn.params.room or "lobby"
end

local function setting(name, default)
  return tonumber(ws.settings[name]) or default
end

-- History lives in the shared store so every VM (and a reload) sees it:
-- one key per message, numbered by an atomic counter, each with a TTL. A
-- room has history while its counter (refreshed by every kept message)
-- lives. ROOMS counts those rooms, so that admitting a room costs a few
-- O(1) store calls; a timer recounts them (recount, below) to forget the
-- rooms whose history expired.
local SEQ = "chat:seq:"
local ROOMS = "chat:rooms"

local function remember(room, msg)
  local n = setting("history", 0)
  if n <= 0 or #msg > setting("history_max_bytes", 4096) then return end
  local ttl = setting("history_ttl", 3600)
  local seqkey = SEQ .. room
  local counted = false
  if not store.get(seqkey) then
    -- A room without history: take a place among history_rooms, if any.
    local rooms = store.incr(ROOMS, 1)
    if not rooms then return end -- the store is full: relayed, not kept
    if rooms > setting("history_rooms", 100) then
      store.incr(ROOMS, -1)
      return -- too many rooms keep history already
    end
    counted = true
  end
  local seq = store.incr(seqkey, 1, ttl)
  if not seq then
    if counted then store.incr(ROOMS, -1) end
    return -- the store is full: relayed, not kept
  end
  if not store.set("chat:msg:" .. room .. ":" .. seq, msg, ttl) then
    -- The store is full: give the number back, so that the replay window
    -- still covers the messages the room kept, and delete none of them.
    -- (Should another VM have numbered a message meanwhile, the next one
    -- may take its number: a message lost, at worst, never the history.)
    store.incr(seqkey, -1)
    return
  end
  store.delete("chat:msg:" .. room .. ":" .. (seq - n))
end

-- recount sets ROOMS to the number of rooms that have history. A room's
-- history expires silently, so without it ROOMS would only grow; store.keys
-- walks the whole store, so it runs on a timer, never per message.
local function recount()
  local live = #store.keys(SEQ)
  local counted = store.get(ROOMS) or 0
  if live ~= counted then store.incr(ROOMS, live - counted) end
end

local function replay(conn, room)
  local n = setting("history", 0)
  if n <= 0 then return end
  local last = store.get(SEQ .. room) or 0
  for seq = math.max(1, last - n + 1), last do
    local msg = store.get("chat:msg:" .. room .. ":" .. seq)
    if msg then conn:send(msg) end
  end
end

function M.on_start()
  if setting("history", 0) > 0 then
    -- A room whose history expired frees its place within a minute (or
    -- within history_ttl, if shorter).
    timer.every(math.max(0.01, math.min(setting("history_ttl", 3600), 60)), recount)
  end
end

-- kept reports whether the broker keeps room's history ([history]). The
-- answer depends on the config only (a reload builds new VMs), so it is
-- remembered, for a bounded number of rooms.
local LAST = 2 ^ 53 - 1
local known, nknown = {}, 0
local function kept(room)
  local k = known[room]
  if k == nil then
    local entries, err = ws.history(room, { since = LAST })
    k = entries ~= nil or not tostring(err):find("keeps no history", 1, true)
    if nknown >= 1000 then known, nknown = {}, 0 end
    known[room], nknown = k, nknown + 1
  end
  return k
end

-- announce broadcasts msg (a table) to room: stamped with its offset in a
-- room with history, to everyone but except otherwise.
local function announce(room, msg, except)
  if kept(room) then
    ws.broadcast(room, json.encode(msg), { stamp = true })
  else
    ws.broadcast(room, json.encode(msg), { except = except })
  end
end

function M.on_open(conn)
  local room = room_of(conn)
  if kept(room) then
    local since = conn:query("since")
    local want = conn:query("epoch")
    if not since then
      -- A newcomer: replay the last settings.history messages.
      local entries, top, epoch = ws.history(room, { since = LAST })
      if not entries then
        conn:close(1013, "history unavailable, reconnect")
        return
      end
      since, want = math.max(0, top - setting("history", 0)), epoch
    end
    local ok, offset, ep, why = conn:recover(room, since, want)
    if ok == nil then
      -- The broker cannot be asked now: rather than live messages with a
      -- gap the client would not see, ask it to come back (1013: try
      -- again later) and recover then.
      conn:close(1013, "history unavailable, reconnect")
      return
    elseif not ok then
      conn:send(json.encode({ type = "reload", room = room, offset = offset, epoch = ep, reason = why }))
    end
  else
    replay(conn, room)
    conn:join(room)
  end
  announce(room, { type = "join", id = conn.id, room = room, members = ws.room_size(room) })
end

function M.on_message(conn, data, kind)
  local room = room_of(conn)
  if kind == "binary" then
    ws.broadcast(room, data, { kind = "binary", except = conn })
    return
  end
  local msg = { type = "message", from = conn.id, room = room, text = data, at = time.now() }
  if kept(room) then
    ws.broadcast(room, json.encode(msg), { stamp = true })
    return
  end
  msg = json.encode(msg)
  remember(room, msg)
  ws.broadcast(room, msg, { except = conn })
end

function M.on_close(conn, code, reason)
  local room = room_of(conn)
  announce(room, { type = "leave", id = conn.id, room = room, members = ws.room_size(room) })
end

return M
