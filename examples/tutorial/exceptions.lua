-- 3.4 exception_handler: answer every message; log how connections end.
-- In moonwire a client that vanishes is a close with code 1006, and an
-- error in this script closes only its own connection (1011).
local M = {}

function M.on_message(conn, msg)
  log.info("message", { message = msg })
  conn:send("响应: " .. msg)
end

function M.on_close(conn, code, reason)
  if code == 1000 or code == 1001 then
    log.info("connection closed", { code = code, reason = reason })
  else
    log.warn("connection closed abnormally", { code = code, reason = reason })
  end
end

return M
