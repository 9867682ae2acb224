-- 4.1 monitor_server: clients authenticate with X-Monitor-Token, report
-- metrics as text or binary, and every report is relayed to every other
-- client as "[ip:port] <first 50 bytes>...". "ping" is the clients'
-- heartbeat and gets "pong". A client silent (no message) for
-- settings.silent_timeout seconds is closed with 1001 "Heartbeat timeout";
-- the check runs every settings.check_every seconds, as in the tutorial.
--
-- Additions to the tutorial's server, for browsers: the token is also
-- accepted as ?token= (a browser cannot set a header on a WebSocket), and
-- a plain GET of /monitor answers the live monitor page (monitor_page, the
-- built-in module every config's scripts may require: one line per
-- reporting client).
local M = {}

local page = require "monitor_page"

local ROOM = "monitor"
local last = {}     -- conn.id -> time of its last message (per VM)
local checkers = {} -- conn.id -> timer

-- prefix returns at most n bytes of s, never cutting a UTF-8 character,
-- so that a relayed text report stays valid text.
local function prefix(s, n)
  if #s <= n then return s end
  local cut = n
  -- Back up over continuation bytes, then drop a lead byte whose
  -- character would not fit.
  while cut > 0 and s:byte(cut + 1) and s:byte(cut + 1) >= 0x80 and s:byte(cut + 1) < 0xC0 do
    cut = cut - 1
  end
  return s:sub(1, cut)
end

function M.on_handshake(req)
  local token = req.headers["x-monitor-token"] or req.query.token
  if not token or not crypto.equal(token, ws.settings.token) then
    log.info("refused: invalid monitor token", { addr = req.remote_addr })
    return false, 401, "Invalid Monitor Token"
  end
end

function M.on_open(conn)
  conn:join(ROOM)
  last[conn.id] = time.now()
  log.info("client joined the monitor", { addr = conn.remote_addr })
  local timeout = tonumber(ws.settings.silent_timeout) or 30
  checkers[conn.id] = timer.every(tonumber(ws.settings.check_every) or 10, function()
    if time.now() - last[conn.id] > timeout then
      log.info("client heartbeat timed out", { addr = conn.remote_addr, conn = conn.id })
      conn:close(1001, "Heartbeat timeout")
    end
  end)
end

function M.on_message(conn, msg, kind)
  last[conn.id] = time.now()
  if kind == "text" and msg == "ping" then
    conn:send("pong")
    return
  end
  log.info("report", { addr = conn.remote_addr, kind = kind, length = #msg })
  local relay = "[" .. conn.remote_addr .. "] " .. prefix(msg, 50) .. "..."
  -- A binary report is shown as its bytes; if they are not valid UTF-8
  -- the relay goes out as a binary message rather than broken text.
  local ok = ws.broadcast(ROOM, relay, { except = conn })
  if not ok then
    ws.broadcast(ROOM, relay, { except = conn, kind = "binary" })
  end
end

function M.on_http(req)
  return page.answer(req)
end

function M.on_close(conn, code, reason)
  local t = checkers[conn.id]
  if t then t:cancel() end
  checkers[conn.id], last[conn.id] = nil, nil
  log.info("client left the monitor", { addr = conn.remote_addr, code = code, reason = reason })
end

return M
