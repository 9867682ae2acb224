-- 3.6 auth_middleware: the X-Auth-Token header must hold a valid token,
-- or the handshake is refused with 401 "Invalid or missing token".
local M = {}

local function valid(token)
  if not token then return false end
  for _, t in ipairs(ws.settings.tokens) do
    if crypto.equal(t, token) then return true end
  end
  return false
end

function M.on_handshake(req)
  if not valid(req.headers["x-auth-token"]) then
    log.info("refused: invalid or missing token", { addr = req.remote_addr })
    return false, 401, "Invalid or missing token"
  end
end

function M.on_open(conn)
  log.info("client authenticated", { addr = conn.remote_addr })
end

function M.on_message(conn, msg)
  conn:send("认证通过的响应: " .. msg)
end

return M
