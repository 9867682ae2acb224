-- 3.7 chat_handler: everyone is in one room; each message goes to every
-- other client, prefixed with the sender's address.
local M = {}

local ROOM = "chat"

function M.on_open(conn)
  conn:join(ROOM)
  log.info("joined the chat", { addr = conn.remote_addr, online = ws.room_size(ROOM) })
end

function M.on_message(conn, msg)
  ws.broadcast(ROOM, "[" .. conn.remote_addr .. "] " .. msg, { except = conn })
end

function M.on_close(conn)
  log.info("left the chat", { addr = conn.remote_addr, online = ws.room_size(ROOM) })
end

return M
