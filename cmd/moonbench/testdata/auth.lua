-- auth.lua: the handshake benchmark's route. on_handshake accepts only a
-- token from settings.tokens in the X-Auth-Token header (401 otherwise);
-- then messages are echoed. Compared against the baseline's plain upgrade:
--
--   moonbench -scenario handshake -url ws://127.0.0.1:8765/auth \
--     -header 'X-Auth-Token: token_123'
local M = {}

function M.on_handshake(req)
  local token = req.headers["x-auth-token"]
  if token then
    for _, t in ipairs(ws.settings.tokens) do
      if crypto.equal(t, token) then
        return true
      end
    end
  end
  return false, 401, "Invalid or missing token"
end

function M.on_message(conn, data, kind)
  conn:send(data, kind)
end

return M
