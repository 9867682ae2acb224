-- echo.lua: every message comes back unchanged, as the same kind.
-- It is also the target of the conformance suite, so it does nothing else.
local M = {}

function M.on_message(conn, data, kind)
  conn:send(data, kind)
end

return M
