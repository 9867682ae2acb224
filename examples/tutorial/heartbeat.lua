-- 3.5 heartbeat_server_handler: "ping" (the client's own heartbeat) gets
-- "pong"; other messages get "响应: " .. msg. Like the tutorial's
-- server_heartbeat task, a protocol ping goes to each client every
-- settings.ping_every seconds, and the task ends with the connection.
local M = {}

local pingers = {} -- conn.id -> timer; per VM, and a connection never leaves its VM

function M.on_open(conn)
  pingers[conn.id] = timer.every(tonumber(ws.settings.ping_every) or 10, function()
    if not conn.closed then
      conn:ping()
      log.debug("server sent ping")
    end
  end)
end

function M.on_message(conn, msg)
  if msg == "ping" then
    conn:send("pong")
  else
    conn:send("响应: " .. msg)
  end
end

function M.on_close(conn)
  local t = pingers[conn.id]
  if t then t:cancel() end
  pingers[conn.id] = nil
end

return M
