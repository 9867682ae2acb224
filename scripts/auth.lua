-- auth.lua: only clients with a valid token get in.
--
-- A token comes in the X-Auth-Token header, an "Authorization: Bearer"
-- header, or the ?token= query parameter. It is valid when it is one of
-- settings.tokens (a list, or a table mapping token -> user name), or an
-- HS256 JWT signed with settings.jwt_secret (its "sub" claim names the
-- user). A JWT must carry an "exp" claim unless settings.jwt_require_exp is
-- false: a token without one would be valid forever, however it leaked.
-- Anything else is refused with HTTP 401 before the upgrade.
--
-- Accepted clients get a welcome, then every message is echoed back.
local M = {}

local function token_of(req)
  local t = req.headers["x-auth-token"]
  if t and t ~= "" then return t end
  local bearer = req.headers["authorization"]
  if bearer then
    t = bearer:match("^[Bb]earer%s+(.+)$")
    if t then return t end
  end
  return req.query.token
end

-- user_for returns the user a token stands for, or nil and why not.
local function user_for(token)
  local tokens = ws.settings.tokens
  if tokens then
    for k, v in pairs(tokens) do
      if type(k) == "number" and crypto.equal(v, token) then return "user" end
      if type(k) == "string" and crypto.equal(k, token) then return tostring(v) end
    end
  end
  local secret = ws.settings.jwt_secret
  if secret and token:find("^[%w_-]+%.[%w_-]+%.[%w_-]+$") then
    local claims, err = crypto.jwt_verify(token, secret, { require_exp = ws.settings.jwt_require_exp ~= false })
    if not claims then return nil, err end
    return tostring(claims.sub or "user")
  end
  return nil, "unknown token"
end

function M.on_handshake(req)
  local token = token_of(req)
  if not token then
    return false, 401, "Invalid or missing token"
  end
  local user, why = user_for(token)
  if not user then
    log.info("refused", { remote_addr = req.remote_addr, reason = why })
    return false, 401, "Invalid or missing token"
  end
  return { user = user }
end

function M.on_open(conn)
  conn:send(json.encode({ type = "welcome", user = conn:get("user") }))
end

function M.on_message(conn, data, kind)
  conn:send(data, kind)
end

return M
