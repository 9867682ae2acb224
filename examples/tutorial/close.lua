-- 3.3 close_handler: "close" makes the server close the connection with
-- 1000 and a reason; anything else is acknowledged.
local M = {}

function M.on_message(conn, msg)
  if msg == "close" then
    conn:close(1000, "客户端请求关闭")
  else
    conn:send("收到: " .. msg)
  end
end

function M.on_close(conn, code, reason)
  log.info("connection closed", { code = code, reason = reason })
end

return M
