-- chat.lua for examples/backend: a chat room per path whose members and
-- messages belong to the application backend.
--
--   ws://127.0.0.1:8765/chat/lobby?token=ann-token
--
-- on_handshake asks the backend (POST /authorize) whether the token's
-- user may join the room; on_message has it store the message (POST
-- /messages) and broadcasts it only once stored, with the backend's id.
-- Neither blocks the lane: the callback waits in http.request while the
-- VM serves its other connections, and a connection's next messages wait
-- behind it, in order.
local M = {}

local function post(path, body)
  return http.request{
    method = "POST",
    url = ws.settings.backend .. path,
    headers = { ["content-type"] = "application/json" },
    body = json.encode(body),
    timeout = 2,
  }
end

function M.on_handshake(req)
  local token = req.query.token
  if not token then return false, 401, "token required" end
  local status, _, body = post("/authorize", { token = token, room = req.params.room })
  if status == nil then return false, 503, "backend unavailable" end
  if status ~= 200 then return false, 403, "not allowed in this room" end
  return { user = json.decode(body).user }
end

function M.on_open(conn)
  local user = conn:get("user")
  conn:join(conn.params.room, {
    joined = json.encode({ type = "join", user = user }),
    left = json.encode({ type = "leave", user = user }),
  })
end

function M.on_message(conn, text)
  local room, user = conn.params.room, conn:get("user")
  local status, _, body = post("/messages", { room = room, user = user, text = text })
  if status ~= 201 then
    conn:send(json.encode({ type = "error", error = "not stored", status = status }))
    return
  end
  local stored = json.decode(body)
  ws.broadcast(room, json.encode({ type = "message", id = stored.id, user = user, text = text }))
end

return M
