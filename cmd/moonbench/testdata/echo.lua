-- echo.lua: every message comes back unchanged, as the same kind (the
-- built-in scripts/echo.lua). moonbench's echo, idle and handshake
-- scenarios send binary messages and check every byte of the replies.
local M = {}

function M.on_message(conn, data, kind)
  conn:send(data, kind)
end

return M
