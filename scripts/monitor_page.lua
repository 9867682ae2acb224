-- monitor_page.lua: the live monitor page, one copy for every /monitor
-- route that shows it (the built-in monitor.lua and the tutorial's).
--
--   local page = require "monitor_page"
--   function M.on_http(req) return page.answer(req) end
--
-- The page connects back to the path it was served from with ?token= (a
-- browser cannot set X-Monitor-Token on a WebSocket), and plots every
-- client's metrics, one line per client, in a hand-written SVG chart. It
-- understands both feeds:
--
--   - the built-in's snapshots, {"type":"snapshot","at":..,"clients":[..]}:
--     numeric fields of a JSON report, "NAME: 12.3%" pairs of a text one,
--     "12.3|45.6" (cpu|mem) of a binary one; a client leaves with the
--     snapshot that no longer lists it;
--   - the tutorial's relays, "[ip:port] CPU: 42.17%, MEM: 63.05%..." and
--     "[ip:port] 42.17|63.05...": there is no leave message, so a client
--     leaves when silent for ?silence= seconds (default 15: three of the
--     tutorial's 5 s reports). In that mode the page sends "ping" every 10 s,
--     as the tutorial's clients do, so that the server does not close it as
--     silent.
--
-- ?window=S sets the chart's span (default 300: the last 5 minutes).
--
-- Everything the page holds is bounded (clients, metrics, points, text it
-- parses), since any client of the route can make it draw. No external
-- resources: it works offline, under the strict policy answer() sets.
local M = {}

M.html = [==[<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>moonwire monitor</title>
<style>
  :root { color-scheme: light; --fg: #1d2330; --muted: #687083; --line: #e3e6ec; --bg: #f7f8fa; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.4 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
  header { display: flex; flex-wrap: wrap; gap: 12px; align-items: center; padding: 12px 20px;
           background: #fff; border-bottom: 1px solid var(--line); }
  h1 { font-size: 17px; margin: 0 12px 0 0; }
  label { color: var(--muted); }
  input, select, button { font: inherit; padding: 4px 8px; }
  #state { padding: 2px 10px; border-radius: 10px; background: #e8eaef; }
  body[data-state="live"] #state { background: #d7f5dd; color: #11612b; }
  body[data-state="closed"] #state, body[data-state="refused"] #state { background: #fde2e1; color: #8c1d18; }
  main { display: flex; flex-wrap: wrap; gap: 16px; padding: 16px 20px; }
  #chart-box { flex: 1 1 640px; background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 8px; }
  #monitor-chart { width: 100%; height: auto; display: block; }
  #monitor-chart .grid { stroke: var(--line); stroke-width: 1; }
  #monitor-chart .tick { fill: var(--muted); font-size: 11px; }
  #monitor-chart .series { fill: none; stroke-width: 2; stroke-linejoin: round; stroke-linecap: round; }
  aside { flex: 0 1 280px; background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; }
  aside h2 { font-size: 14px; margin: 4px 0 8px; }
  #legend { list-style: none; margin: 0; padding: 0; }
  #legend li { display: flex; gap: 8px; align-items: center; padding: 3px 0; overflow-wrap: anywhere; }
  #legend .swatch { flex: none; width: 14px; height: 4px; border-radius: 2px; }
  #legend .value { margin-left: auto; color: var(--muted); font-variant-numeric: tabular-nums; }
  #empty { color: var(--muted); }
  [hidden] { display: none !important; }
</style>
</head>
<body data-state="idle">
<header>
  <h1>moonwire monitor</h1>
  <span id="state">idle</span>
  <form id="login">
    <label for="token">token</label>
    <input id="token" type="password" autocomplete="off" maxlength="512">
    <button id="connect" type="submit">connect</button>
  </form>
  <label for="metric">metric</label>
  <select id="metric"></select>
  <span><span id="clients-count" data-value="0">0</span> clients</span>
  <span id="detail"></span>
</header>
<main>
  <div id="chart-box">
    <svg id="monitor-chart" viewBox="0 0 900 420" role="img" aria-label="metrics of every client over time"
         xmlns="http://www.w3.org/2000/svg"></svg>
  </div>
  <aside>
    <h2>clients</h2>
    <p id="empty">No client has reported yet.</p>
    <ul id="legend"></ul>
  </aside>
</main>
<script>
"use strict";
(() => {
  // Bounds: a route's every client can make this page draw, so nothing
  // grows with what they send.
  const MAX_CLIENTS = 100;         // lines; later clients are counted, not drawn
  const MAX_METRICS = 24;          // metric names kept
  const MAX_POINTS = 1500;         // per client and metric (a report each 200 ms for 5 min)
  const MAX_TEXT = 4096;           // characters of a report that are parsed
  const MAX_NAME = 40;             // characters of a metric name
  const PING_MS = 10000;           // the tutorial's clients ping every 10 s
  const W = 900, H = 420, PAD = { l: 52, r: 16, t: 14, b: 30 };
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2",
                  "#db2777", "#4d7c0f", "#9333ea", "#ea580c", "#0f766e", "#64748b"];
  const SVG = "http://www.w3.org/2000/svg";

  const params = new URLSearchParams(location.search);
  const setting = (name, def, lo, hi) => Math.min(Math.max(Number(params.get(name)) || def, lo), hi);
  const silence = setting("silence", 15, 1, 3600) * 1000;    // ?silence=S: a relayed client's leave
  const WINDOW_MS = setting("window", 300, 10, 3600) * 1000; // ?window=S: the chart's span (5 min)
  const $ = (id) => document.getElementById(id);
  const chart = $("monitor-chart"), legend = $("legend"), metricSel = $("metric");

  // clients: id -> { id, addr, color, seen (ms), series: Map(metric -> [[t, v]...]) }
  const clients = new Map();
  const metrics = [];            // names seen, in order of arrival
  let colorNext = 0, extra = 0;  // extra: clients past MAX_CLIENTS
  let ws = null, token = "", backoff = 500, retryTimer = 0, pingTimer = 0, snapshots = false;

  function setState(state, detail) {
    document.body.dataset.state = state;
    $("state").textContent = state;
    $("detail").textContent = detail || "";
  }

  // --- parsing -----------------------------------------------------------

  function metricName(name) {
    return String(name).trim().toLowerCase().slice(0, MAX_NAME);
  }

  // metricsOfText reads "NAME: 12.3%" pairs (CPU: 42.17%, MEM: 63.05%) or
  // the tutorial's binary "42.17|63.05" (cpu|mem).
  function metricsOfText(text) {
    const s = String(text).slice(0, MAX_TEXT);
    const out = {};
    const bar = /^\s*(-?\d+(?:\.\d+)?)\|(-?\d+(?:\.\d+)?)/.exec(s);
    if (bar) {
      out.cpu = Number(bar[1]);
      out.mem = Number(bar[2]);
      return out;
    }
    // Names are bounded in the pattern too, so that a long run of letters
    // costs linear time, not quadratic.
    const re = /([A-Za-z_][A-Za-z0-9_ .-]{0,39}?)\s{0,8}[:=]\s{0,8}(-?\d{1,15}(?:\.\d{1,15})?(?:[eE][-+]?\d{1,3})?)/g;
    let m, n = 0;
    while ((m = re.exec(s)) !== null && n < MAX_METRICS) {
      const v = Number(m[2]);
      if (Number.isFinite(v)) { out[metricName(m[1])] = v; n++; }
    }
    return out;
  }

  // metricsOfReport: a snapshot entry's report, by the kind it came as.
  function metricsOfReport(report, kind) {
    if (report !== null && typeof report === "object" && !Array.isArray(report)) {
      const out = {};
      let n = 0;
      for (const [k, v] of Object.entries(report)) {
        if (n >= MAX_METRICS) break;
        if (typeof v === "number" && Number.isFinite(v)) { out[metricName(k)] = v; n++; }
        else if (typeof v === "string" && v.length < 32 && /^\s*-?\d+(\.\d+)?%?\s*$/.test(v)) {
          out[metricName(k)] = parseFloat(v); n++;
        }
      }
      return out;
    }
    if (typeof report !== "string") return {};
    if (kind === "binary") {
      try {
        const bytes = Uint8Array.from(atob(report.slice(0, MAX_TEXT)), (c) => c.charCodeAt(0));
        return metricsOfText(new TextDecoder().decode(bytes));
      } catch (e) {
        return {};
      }
    }
    return metricsOfText(report);
  }

  // --- state -------------------------------------------------------------

  function client(id, addr) {
    let c = clients.get(id);
    if (!c) {
      if (clients.size >= MAX_CLIENTS) return null;
      c = { id, addr: addr || "", color: COLORS[colorNext++ % COLORS.length], seen: 0, key: undefined, series: new Map() };
      clients.set(id, c);
    }
    return c;
  }

  // record adds a report's values at time at (ms). key identifies the
  // report where the feed repeats it (a snapshot's entry time): the same
  // key again adds nothing.
  function record(id, addr, at, values, key) {
    const names = Object.keys(values);
    if (names.length === 0) return; // nothing to plot: not shown
    const c = client(id, addr);
    if (!c) return;
    c.seen = Date.now();
    if (key !== undefined && c.key === key) return;
    c.key = key;
    for (const name of names) {
      if (!metrics.includes(name)) {
        if (metrics.length >= MAX_METRICS) continue;
        metrics.push(name);
        const o = document.createElement("option");
        o.value = name;
        o.textContent = name;
        metricSel.append(o);
      }
      let pts = c.series.get(name);
      if (!pts) { pts = []; c.series.set(name, pts); }
      if (pts.length && pts[pts.length - 1][0] > at) continue; // out of order: dropped
      pts.push([at, values[name]]);
      if (pts.length > MAX_POINTS) pts.splice(0, pts.length - MAX_POINTS);
    }
  }

  function forget(id) {
    clients.delete(id);
  }

  function onSnapshot(snap) {
    snapshots = true;
    const now = Date.now();
    const serverNow = Number(snap.at) || 0;
    const present = new Set();
    let plottable = 0; // clients with something to draw
    const list = Array.isArray(snap.clients) ? snap.clients.slice(0, MAX_CLIENTS * 2) : [];
    for (const e of list) {
      if (!e || typeof e !== "object") continue;
      const id = String(e.id || e.addr || "").slice(0, 100);
      if (!id) continue;
      present.add(id);
      // The report's time on the server's clock, placed relative to this
      // snapshot's arrival: a server whose clock differs from the
      // browser's still draws at the right place.
      const age = serverNow && Number(e.at) ? Math.max(0, (serverNow - Number(e.at)) * 1000) : 0;
      const values = metricsOfReport(e.report, e.kind);
      if (Object.keys(values).length) plottable++;
      record(id, String(e.addr || "").slice(0, 100), now - age, values, Number(e.at) || 0);
    }
    for (const id of [...clients.keys()]) if (!present.has(id)) forget(id);
    extra = Math.max(0, plottable - clients.size);
  }

  // onRelay: the tutorial's "[ip:port] report..." (text or binary).
  function onRelay(text) {
    // Lazy, so that an IPv6 address keeps its own brackets: "[[::1]:5] ...".
    const m = /^\[(\S{1,100}?)\] ([\s\S]*)$/.exec(text.slice(0, MAX_TEXT));
    if (!m) return;
    record(m[1], m[1], Date.now(), metricsOfText(m[2].replace(/\.\.\.$/, "")));
  }

  function onData(data) {
    let text;
    if (typeof data === "string") {
      text = data;
    } else {
      text = new TextDecoder().decode(new Uint8Array(data, 0, Math.min(data.byteLength, MAX_TEXT)));
    }
    if (text === "pong") return;
    if (text.startsWith("{")) {
      let msg = null;
      try { msg = JSON.parse(text); } catch (e) { /* not JSON: a relay? */ }
      if (msg && msg.type === "snapshot") { onSnapshot(msg); schedule(); return; }
    }
    onRelay(text);
    schedule();
  }

  // Relayed clients never say goodbye: silence is their leave.
  function expire() {
    if (snapshots) return;
    const now = Date.now();
    for (const c of [...clients.values()]) if (now - c.seen > silence) forget(c.id);
  }

  // --- drawing -----------------------------------------------------------

  function el(name, attrs, text) {
    const e = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const f of [1, 2, 2.5, 5, 10]) if (f * p >= v) return f * p;
    return 10 * p;
  }

  function fmt(v) {
    return Math.abs(v) >= 1000 ? v.toExponential(1) : String(Math.round(v * 100) / 100);
  }

  let pending = false;
  function schedule() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; draw(); });
  }

  function draw() {
    const now = Date.now(), from = now - WINDOW_MS;
    if (!metricSel.value && metrics.length) metricSel.value = metrics[0];
    const metric = metricSel.value;
    let lo = 0, hi = 0;
    for (const c of clients.values()) {
      const pts = c.series.get(metric) || [];
      while (pts.length && pts[0][0] < from) pts.shift();
      for (const [, v] of pts) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    }
    hi = niceMax(hi);
    lo = lo < 0 ? -niceMax(-lo) : 0;
    const x = (t) => PAD.l + (t - from) / WINDOW_MS * (W - PAD.l - PAD.r);
    const y = (v) => H - PAD.b - (v - lo) / (hi - lo) * (H - PAD.t - PAD.b);

    const parts = [];
    for (let i = 0; i <= 4; i++) {
      const v = lo + (hi - lo) * i / 4;
      parts.push(el("line", { class: "grid", x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v) }));
      parts.push(el("text", { class: "tick", x: PAD.l - 6, y: y(v) + 4, "text-anchor": "end" }, fmt(v)));
    }
    for (let m = 0; m <= 5; m++) {
      const t = from + m * WINDOW_MS / 5, ago = (5 - m) * WINDOW_MS / 5000;
      parts.push(el("line", { class: "grid", x1: x(t), x2: x(t), y1: PAD.t, y2: H - PAD.b }));
      parts.push(el("text", { class: "tick", x: x(t), y: H - 10, "text-anchor": "middle" },
        m === 5 ? "now" : ago % 60 === 0 ? "-" + ago / 60 + " min" : "-" + Math.round(ago) + " s"));
    }
    for (const c of clients.values()) {
      const pts = c.series.get(metric) || [];
      let d = "";
      pts.forEach(([t, v], i) => { d += (i ? " L" : "M") + x(t).toFixed(1) + " " + y(v).toFixed(1); });
      if (pts.length === 1) d += " l0.01 0"; // one point: a dot, drawn by the round cap
      parts.push(el("path", { class: "series", "data-client": c.id, "data-addr": c.addr, stroke: c.color, d }));
    }
    chart.replaceChildren(...parts);

    const items = [];
    for (const c of clients.values()) {
      const li = document.createElement("li");
      li.dataset.legend = c.id;
      li.dataset.addr = c.addr;
      li.title = c.addr && c.addr !== c.id ? c.id + " (" + c.addr + ")" : c.id;
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = c.color;
      const name = document.createElement("span");
      name.textContent = c.addr || c.id;
      const val = document.createElement("span");
      val.className = "value";
      const pts = c.series.get(metric) || [];
      val.textContent = pts.length ? fmt(pts[pts.length - 1][1]) : "–";
      li.append(sw, name, val);
      items.push(li);
    }
    legend.replaceChildren(...items);
    $("empty").hidden = clients.size > 0;
    const count = $("clients-count");
    count.dataset.value = String(clients.size);
    count.textContent = extra ? clients.size + " (+" + extra + " not drawn)" : String(clients.size);
  }

  // --- connection --------------------------------------------------------

  function connect() {
    clearTimeout(retryTimer);
    if (ws) { ws.onclose = null; ws.close(); }
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host +
      location.pathname + "?token=" + encodeURIComponent(token);
    let opened = false;
    setState("connecting");
    const sock = new WebSocket(url);
    ws = sock;
    sock.binaryType = "arraybuffer";
    sock.onopen = () => {
      opened = true;
      backoff = 500;
      snapshots = false;
      setState("live");
      clearInterval(pingTimer);
      // The tutorial's server closes a client silent for 30 s; the
      // built-in would store "ping" as a report, so once snapshots come
      // the page stays quiet.
      pingTimer = setInterval(() => { if (!snapshots && sock.readyState === 1) sock.send("ping"); }, PING_MS);
    };
    sock.onmessage = (e) => onData(e.data);
    sock.onclose = (e) => {
      clearInterval(pingTimer);
      if (ws !== sock) return;
      ws = null;
      // A refused handshake (a wrong token) and an unreachable server look
      // the same to a page: closed before it ever opened.
      const delay = backoff;
      backoff = Math.min(backoff * 2, 30000);
      setState(opened ? "closed" : "refused",
        (opened ? "code " + e.code + "; " : "") + "retrying in " + Math.round(delay / 1000) + " s");
      retryTimer = setTimeout(connect, delay * (0.75 + Math.random() / 2));
    };
  }

  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("token").value;
    backoff = 500;
    connect();
  });
  metricSel.addEventListener("change", schedule);
  setInterval(() => { expire(); schedule(); }, 1000);

  token = params.get("token") || "";
  $("token").value = token;
  draw();
  if (token) connect();
})();
</script>
</body>
</html>
]==]

-- answer is the on_http answer: the page for GET (and HEAD), 405 for any
-- other method. The policy allows nothing but the page's own inline code
-- and a WebSocket to its own origin; no-referrer keeps the ?token= in the
-- address bar from leaking anywhere.
function M.answer(req)
  if req.method ~= "GET" and req.method ~= "HEAD" then
    return 405, { allow = "GET, HEAD" }, "method not allowed"
  end
  return 200, {
    ["content-type"] = "text/html; charset=utf-8",
    ["content-security-policy"] = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
      .. "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ["cache-control"] = "no-cache",
    ["referrer-policy"] = "no-referrer",
    ["x-content-type-options"] = "nosniff",
  }, M.html
end

return M
