-- 3.2 binary_handler: text gets a text answer, binary a binary one.
local M = {}

function M.on_message(conn, msg, kind)
  if kind == "text" then
    conn:send("文本响应: " .. msg)
  else
    log.info("binary message", { length = #msg })
    conn:send(msg .. "_response", "binary")
  end
end

return M
