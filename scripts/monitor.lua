-- monitor.lua: a live dashboard feed.
--
-- Clients authenticate with the X-Monitor-Token header (or ?token=), one of
-- settings.tokens. They report metrics as text (JSON or anything) or
-- binary; the server keeps each client's latest report and, every
-- settings.interval seconds (default 5), pushes a JSON snapshot of all of
-- them to every connected client:
--
--   {"type":"snapshot","at":1764160000.5,"clients":[
--     {"id":"<conn>","addr":"127.0.0.1:50312","at":1764160000.2,"kind":"text","report":{"cpu":12.5}}]}
--
-- A text report that is JSON appears decoded; other text as a string;
-- binary as base64 ("kind":"binary"). A client that stops answering the
-- router's pings is dropped by the heartbeat and leaves the snapshot.
--
-- A plain GET of the route's path answers the live monitor page
-- (monitor_page.lua): open http://127.0.0.1:8765/monitor?token=monitor-token
-- and it plots every client's reported metrics, one line per client.
local M = {}

local page = require "monitor_page"

local ROOM = "monitor"
local PREFIX = "monitor:latest:"

local function allowed(token)
  if not token then return false end
  for _, t in ipairs(ws.settings.tokens or {}) do
    if crypto.equal(t, token) then return true end
  end
  return false
end

function M.on_handshake(req)
  local token = req.headers["x-monitor-token"] or req.query.token
  if not allowed(token) then
    return false, 401, "Invalid Monitor Token"
  end
end

function M.on_open(conn)
  conn:join(ROOM)
end

function M.on_message(conn, data, kind)
  local entry = { id = conn.id, addr = conn.remote_addr, at = time.now(), kind = kind }
  if kind == "binary" then
    entry.report = crypto.base64_encode(data)
  else
    entry.report = json.decode(data) or data
  end
  local ok, err = store.set(PREFIX .. conn.id, entry)
  if not ok then
    -- The store is shared by every route and bounded: the report is
    -- dropped, and the snapshot shows this client's previous one.
    log.warn("monitor: report not stored", { err = err, bytes = #data })
  end
end

function M.on_close(conn)
  store.delete(PREFIX .. conn.id)
end

local function snapshot()
  local clients = json.array()
  for _, key in ipairs(store.keys(PREFIX)) do
    local entry = store.get(key)
    if entry then clients[#clients + 1] = entry end
  end
  ws.broadcast(ROOM, json.encode({ type = "snapshot", at = time.now(), clients = clients }))
end

-- on_http serves the monitor page. The page carries no secret: the token
-- is checked by on_handshake when the page connects.
function M.on_http(req)
  return page.answer(req)
end

function M.on_start()
  timer.every(tonumber(ws.settings.interval) or 5, snapshot)
end

return M
