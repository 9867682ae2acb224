-- 3.1 echo_handler: answer every message with "Echo: " and the message.
local M = {}

function M.on_open(conn)
  log.info("client connected", { addr = conn.remote_addr })
end

function M.on_message(conn, msg)
  log.info("server received", { message = msg })
  conn:send("Echo: " .. msg)
end

function M.on_close(conn)
  log.info("client disconnected", { addr = conn.remote_addr })
end

return M
