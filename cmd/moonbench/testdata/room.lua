-- room.lua: the broadcast benchmark's route. Every connection joins one
-- room; every message goes to everyone else in it, unchanged and of the
-- same kind (moonbench publishes binary). No join or leave announcements:
-- subscribers would count them as "other messages".
local M = {}

local ROOM = ws.settings.room or "bench"

function M.on_open(conn)
  conn:join(ROOM)
end

function M.on_message(conn, data, kind)
  ws.broadcast(ROOM, data, { kind = kind, except = conn })
end

return M
