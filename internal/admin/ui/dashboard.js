// moonwire operator dashboard. Plain ES2020, no build step, no framework,
// nothing loaded from elsewhere: the admin listener serves it under a CSP
// of script-src 'self', so there is no inline script, no eval, and every
// piece of server text goes into the page with textContent (never parsed
// as markup), because route names, room names, errors and member info are
// chosen by clients and scripts, not by the operator.
"use strict";

(() => {
  // The feed's charts cover 15 minutes at a point a second; a cap on the
  // points keeps memory flat whatever the server sends.
  const WINDOW_MS = 15 * 60 * 1000;
  const MAX_POINTS = 900;
  // Caps on what one answer may make the page render: a hostile or broken
  // server must not be able to grow the DOM without bound.
  const MAX_ROWS = 1000;
  const MAX_ENTRIES = 100;
  const MAX_TEXT = 4000;
  const MAX_TRACE = 20000;
  const MAX_SERIES = 12;
  const ROOMS_REFRESH_MS = 5000;
  const SEARCH_DEBOUNCE_MS = 300;
  const ACTION_HEADERS = { "X-Moonwire-Action": "1", "Content-Type": "application/json" };
  const DEFAULT_CODE = 1008;
  const DEFAULT_REASON = "closed by an operator";

  const $ = (sel) => document.querySelector(sel);

  // ---------- formatting ----------

  const clip = (s, n) => {
    s = s == null ? "" : String(s);
    return s.length > n ? s.slice(0, n) + "…" : s;
  };

  const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : 0);

  // fmtCount: 999, 1.2k, 3.4M; small fractional rates keep one decimal.
  function fmtCount(v) {
    v = num(v);
    const a = Math.abs(v);
    if (a < 1000) {
      if (Number.isInteger(v)) return String(v);
      return a < 10 ? v.toFixed(1).replace(/\.0$/, "") : String(Math.round(v));
    }
    const units = ["k", "M", "G", "T", "P"];
    let i = -1;
    let x = a;
    while (x >= 1000 && i < units.length - 1) { x /= 1000; i++; }
    const s = x < 10 ? x.toFixed(1).replace(/\.0$/, "") : String(Math.round(x));
    return (v < 0 ? "-" : "") + s + units[i];
  }

  function fmtBytes(v) {
    v = num(v);
    const units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let i = 0;
    let x = Math.abs(v);
    while (x >= 1024 && i < units.length - 1) { x /= 1024; i++; }
    const s = i === 0 ? String(Math.round(x)) : x < 10 ? x.toFixed(1) : String(Math.round(x));
    return (v < 0 ? "-" : "") + s + " " + units[i];
  }

  // fmtMs: two significant digits; -1 means no callback ran in the minute.
  function fmtMs(v) {
    v = num(v);
    if (v < 0) return "–";
    if (v === 0) return "0 ms";
    if (v >= 1000) return String(Number((v / 1000).toPrecision(2))) + " s";
    return String(Number(v.toPrecision(2))) + " ms";
  }

  function fmtDuration(s) {
    s = Math.max(0, Math.floor(num(s)));
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    const sec = s % 60;
    if (d > 0) return `${d} d ${h} h`;
    if (h > 0) return `${h} h ${m} min`;
    if (m > 0) return `${m} min ${sec} s`;
    return `${sec} s`;
  }

  function fmtAgo(ms) {
    const s = Math.round((Date.now() - num(ms)) / 1000);
    if (s < 1) return "just now";
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return `${Math.floor(s / 86400)} d ago`;
  }

  const fmtAbs = (ms) => {
    const d = new Date(num(ms));
    return Number.isNaN(d.getTime()) ? "" : d.toLocaleString();
  };

  // ---------- DOM helpers ----------

  // el builds an element: attributes through setAttribute, children as
  // nodes or text nodes, so no string is ever parsed as HTML.
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false) continue;
        e.setAttribute(k, v === true ? "" : String(v));
      }
    }
    for (const c of children) {
      if (c === undefined || c === null) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  // timeEl is a relative time that the ticker keeps current, with the
  // absolute time in its title.
  function timeEl(ms) {
    const d = new Date(num(ms));
    // toISOString throws on a date out of range: a bad number is no time.
    const iso = Number.isNaN(d.getTime()) ? undefined : d.toISOString();
    return el("time", { "data-at": num(ms), title: fmtAbs(ms), datetime: iso }, fmtAgo(ms));
  }

  function refreshTimes() {
    for (const t of document.querySelectorAll("time[data-at]")) {
      t.textContent = fmtAgo(Number(t.getAttribute("data-at")));
    }
  }

  // syncRows keeps tbody's rows in items' order, keyed by key(item) in the
  // data attribute attr, building missing rows and updating the others in
  // place (so a selection or hover survives the once-a-second refresh).
  function syncRows(tbody, items, attr, key, build, update) {
    const old = new Map();
    for (const tr of tbody.children) old.set(tr.getAttribute(attr), tr);
    let prev = null;
    const seen = new Set();
    for (const it of items.slice(0, MAX_ROWS)) {
      const k = String(key(it));
      if (seen.has(k)) continue;
      seen.add(k);
      let tr = old.get(k);
      if (!tr) {
        tr = build(it);
        tr.setAttribute(attr, k);
      }
      update(tr, it);
      const want = prev ? prev.nextSibling : tbody.firstChild;
      if (want !== tr) tbody.insertBefore(tr, want);
      prev = tr;
    }
    for (const [k, tr] of old) if (!seen.has(k)) tr.remove();
  }

  function setCell(td, raw, text, title) {
    const v = raw === null || raw === undefined ? "" : String(raw);
    if (td.getAttribute("data-value") !== v) td.setAttribute("data-value", v);
    if (td.textContent !== text) td.textContent = text;
    if (title !== undefined) td.title = title;
  }

  // ---------- state ----------

  const state = {
    session: null,
    feed: null,
    retryTimer: 0,
    retryDelay: 1000,
    points: [],
    snapshot: null,
    actions: { close: true, reload: true },
    reloadSig: "",
    errorSig: "",
    roomsSeq: 0,
    roomsTimer: 0,
    searchTimer: 0,
    membersSeq: 0,
    selectedRoom: null,
  };

  function setState(s) {
    const prev = document.body.getAttribute("data-state");
    document.body.setAttribute("data-state", s);
    // The rooms list is fetched, not streamed: load it as soon as the
    // feed is live rather than on the next 5 s tick.
    if (s === "live" && prev !== "live") roomsTick();
    const badge = $("#conn-state");
    badge.textContent = { live: "live", connecting: "connecting…", reconnecting: "reconnecting…", login: "logged out", forbidden: "unavailable" }[s] || s;
    badge.className = "badge " + (s === "live" ? "ok" : s === "reconnecting" || s === "forbidden" ? "bad" : "");
    $("#login").hidden = s !== "login";
    $("#forbidden").hidden = s !== "forbidden";
    $("#main").hidden = !(s === "live" || s === "reconnecting" || (s === "connecting" && state.snapshot));
  }

  // ---------- HTTP ----------

  async function readJSON(res) {
    try {
      return await res.json();
    } catch {
      return null;
    }
  }

  // errorOf is the server's {"error":"..."} or the status line.
  async function errorOf(res) {
    const body = await readJSON(res);
    if (body && typeof body.error === "string" && body.error) return clip(body.error, MAX_TEXT);
    return `HTTP ${res.status} ${res.statusText}`.trim();
  }

  async function getJSON(url) {
    const res = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    if (res.status === 401) {
      checkSession();
      throw new Error(await errorOf(res));
    }
    if (!res.ok) throw new Error(await errorOf(res));
    const body = await readJSON(res);
    if (body === null) throw new Error("the answer is not JSON");
    return body;
  }

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      cache: "no-store",
      headers: ACTION_HEADERS,
      body: JSON.stringify(body),
    });
  }

  // ---------- session and login ----------

  async function checkSession() {
    let s;
    try {
      const res = await fetch("/dashboard/session", { credentials: "same-origin", cache: "no-store" });
      s = await readJSON(res);
      if (!res.ok || !s) throw new Error(`HTTP ${res.status}`);
    } catch (e) {
      // The node may be restarting: keep trying, showing that we are.
      setState(state.snapshot ? "reconnecting" : "connecting");
      scheduleRetry();
      return;
    }
    state.session = s;
    if (s.node) $("#node-id").textContent = clip(s.node, 200);
    if (s.version) $("#node-version").textContent = clip(s.version, 200);
    if (s.error) {
      stopFeed();
      $("#forbidden-text").textContent = clip(s.error, MAX_TEXT);
      setState("forbidden");
      return;
    }
    $("#logout-button").hidden = !(s.auth_required && s.logged_in);
    if (s.auth_required && !s.logged_in) {
      stopFeed();
      setState("login");
      $("#login-token").focus();
      return;
    }
    startFeed();
  }

  function scheduleRetry() {
    clearTimeout(state.retryTimer);
    state.retryTimer = setTimeout(checkSession, state.retryDelay);
    state.retryDelay = Math.min(state.retryDelay * 2, 30000);
  }

  async function login() {
    const input = $("#login-token");
    const errEl = $("#login-error");
    const button = $("#login-button");
    errEl.textContent = "";
    if (!input.value) {
      errEl.textContent = "Enter the token.";
      return;
    }
    button.disabled = true;
    try {
      const res = await post("/dashboard/login", { token: input.value });
      if (res.status === 204 || res.ok) {
        input.value = "";
        await checkSession();
        return;
      }
      let msg = await errorOf(res);
      const after = res.headers.get("Retry-After");
      if (res.status === 429 && after) msg += ` (retry in ${clip(after, 20)} s)`;
      errEl.textContent = msg;
    } catch (e) {
      errEl.textContent = "login failed: " + clip(e.message, 200);
    } finally {
      button.disabled = false;
    }
  }

  async function logout() {
    try {
      await post("/dashboard/logout", {});
    } catch {
      // Logged out or not, the page goes back to the session check.
    }
    stopFeed();
    state.snapshot = null;
    await checkSession();
  }

  // ---------- the feed ----------

  function startFeed() {
    if (state.feed) return;
    setState(state.snapshot ? "reconnecting" : "connecting");
    const es = new EventSource("/dashboard/feed");
    state.feed = es;
    es.addEventListener("series", (ev) => {
      const s = parse(ev.data);
      if (s && Array.isArray(s.points)) setSeries(s.points);
    });
    es.addEventListener("snapshot", (ev) => {
      const s = parse(ev.data);
      if (!s || typeof s !== "object") return;
      state.retryDelay = 1000;
      if (document.body.getAttribute("data-state") !== "live") setState("live");
      applySnapshot(s);
    });
    es.addEventListener("error", () => {
      if (state.feed !== es) return;
      setState("reconnecting");
      if (es.readyState === EventSource.CLOSED) {
        // EventSource gives up on an HTTP error (401, 403, 503): find out
        // why from the session, which also retries with a backoff.
        stopFeed();
        scheduleRetry();
      }
    });
  }

  function stopFeed() {
    if (state.feed) {
      state.feed.close();
      state.feed = null;
    }
  }

  function parse(data) {
    try {
      return JSON.parse(data);
    } catch {
      return null;
    }
  }

  // ---------- snapshot ----------

  function applySnapshot(s) {
    state.snapshot = s;
    $("#node-id").textContent = clip(s.node, 200);
    $("#node-version").textContent = clip(s.version, 200);
    $("#uptime").textContent = fmtDuration(s.uptime_s);
    $("#draining").hidden = !s.draining;
    $("#last-update").textContent = "";
    $("#last-update").append("updated ", timeEl(s.at || Date.now()));
    renderTotals(s.totals || {}, s.rates || {});
    if (s.point && typeof s.point === "object") addPoint(s.point);
    renderCharts();
    renderRoutes(Array.isArray(s.routes) ? s.routes : []);
    renderReloads(Array.isArray(s.reloads) ? s.reloads : []);
    renderErrors(Array.isArray(s.errors) ? s.errors : []);
    renderCluster(s.nodes, s.broker);
    renderActions(s.actions || {});
  }

  const TOTALS = {
    connections: ["connections", fmtCount, null],
    handshakes_accepted: ["handshakes accepted", fmtCount, null],
    handshakes_refused: ["handshakes refused", fmtCount, "handshakes_refused"],
    messages_in: ["messages in", fmtCount, "messages_in"],
    messages_out: ["messages out", fmtCount, "messages_out"],
    bytes_in: ["bytes in", fmtBytes, "bytes_in"],
    bytes_out: ["bytes out", fmtBytes, "bytes_out"],
    broadcasts: ["broadcasts", fmtCount, null],
    deliveries: ["deliveries", fmtCount, "deliveries"],
    slow_consumer_closes: ["slow-consumer closes", fmtCount, "slow_consumer_closes"],
    queue_drops: ["queue drops", fmtCount, null],
    protocol_errors: ["protocol errors", fmtCount, null],
    script_errors: ["script errors", fmtCount, null],
    script_timeouts: ["script timeouts", fmtCount, null],
    reloads_ok: ["reloads ok", fmtCount, null],
    reloads_failed: ["reloads failed", fmtCount, null],
  };

  const sumOf = (m) => (m && typeof m === "object" ? Object.values(m).reduce((a, v) => a + num(v), 0) : 0);

  function tileFor(field) {
    let t = document.querySelector(`[data-total="${CSS.escape(field)}"]`);
    if (!t) {
      if (document.querySelectorAll("#totals .tile").length >= 64) return null;
      t = el("div", { class: "tile", "data-total": field, "data-value": "0" });
      $("#totals").append(t);
    }
    if (!t.firstChild) {
      const spec = TOTALS[field];
      t.append(el("span", { class: "label" }, spec ? spec[0] : field.replace(/_/g, " ")), el("span", { class: "value" }), el("span", { class: "sub" }));
    }
    return t;
  }

  function renderTotals(totals, rates) {
    for (const [field, raw] of Object.entries(totals)) {
      const spec = TOTALS[field] || [field, fmtCount, null];
      const t = tileFor(field);
      if (!t) continue;
      let value = raw;
      let title = "";
      let sub = "";
      if (field === "handshakes_refused") {
        value = sumOf(raw);
        const parts = Object.entries(raw || {}).slice(0, MAX_SERIES).map(([k, v]) => `${clip(k, 10)}: ${fmtCount(v)}`);
        title = parts.join(", ");
        sub = parts.join(" · ");
        const r = sumOf(rates.handshakes_refused);
        if (r > 0) sub = `${fmtCount(r)}/s ${sub}`;
      } else if (typeof raw !== "number") {
        continue;
      } else if (spec[2] && typeof rates[spec[2]] === "number") {
        sub = spec[1] === fmtBytes ? `${fmtBytes(rates[spec[2]])}/s` : `${fmtCount(rates[spec[2]])}/s`;
      }
      t.setAttribute("data-value", String(value));
      t.querySelector(".value").textContent = spec[1](value);
      t.querySelector(".sub").textContent = sub;
      t.title = title || String(value);
    }
  }

  // ---------- charts ----------

  const SVGNS = "http://www.w3.org/2000/svg";
  const CW = 300;
  const CH = 80;
  const CHARTS = [
    { name: "connections", title: "connections", series: () => [["connections", (p) => p.connections]], fmt: fmtCount },
    { name: "messages", title: "messages/s", series: () => [["in", (p) => p.messages_in], ["out", (p) => p.messages_out]], fmt: fmtCount },
    { name: "deliveries", title: "broadcast deliveries/s", series: () => [["deliveries", (p) => p.deliveries]], fmt: fmtCount },
    { name: "slow_closes", title: "slow-consumer closes/s", series: () => [["slow_closes", (p) => p.slow_consumer_closes]], fmt: fmtCount },
    { name: "refusals", title: "handshake refusals/s", series: refusalSeries, fmt: fmtCount },
    { name: "heap", title: "Go heap", series: () => [["heap", (p) => p.heap_bytes]], fmt: fmtBytes },
    { name: "goroutines", title: "goroutines", series: () => [["goroutines", (p) => p.goroutines]], fmt: fmtCount },
  ];

  // refusalSeries is a series per status code seen in the window.
  function refusalSeries() {
    const codes = new Set();
    for (const p of state.points) {
      if (p.handshakes_refused && typeof p.handshakes_refused === "object") {
        for (const k of Object.keys(p.handshakes_refused)) {
          if (codes.size < MAX_SERIES) codes.add(k);
        }
      }
    }
    return [...codes].sort().map((k) => [k, (p) => (p.handshakes_refused ? p.handshakes_refused[k] : 0)]);
  }

  function cleanPoint(p) {
    return {
      at: num(p.at),
      connections: num(p.connections),
      messages_in: num(p.messages_in),
      messages_out: num(p.messages_out),
      deliveries: num(p.deliveries),
      slow_consumer_closes: num(p.slow_consumer_closes),
      handshakes_refused: p.handshakes_refused && typeof p.handshakes_refused === "object" ? p.handshakes_refused : null,
      heap_bytes: num(p.heap_bytes),
      goroutines: num(p.goroutines),
    };
  }

  function trimPoints() {
    const pts = state.points;
    if (pts.length > MAX_POINTS) pts.splice(0, pts.length - MAX_POINTS);
    const last = pts.length ? pts[pts.length - 1].at : 0;
    let drop = 0;
    while (drop < pts.length && pts[drop].at < last - WINDOW_MS) drop++;
    if (drop) pts.splice(0, drop);
  }

  function setSeries(points) {
    state.points = points.slice(-MAX_POINTS).filter((p) => p && typeof p === "object").map(cleanPoint);
    state.points.sort((a, b) => a.at - b.at);
    trimPoints();
  }

  function addPoint(p) {
    const c = cleanPoint(p);
    const pts = state.points;
    if (pts.length && c.at <= pts[pts.length - 1].at) return; // the series already has it
    pts.push(c);
    trimPoints();
  }

  function svg(tag, attrs) {
    const e = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    return e;
  }

  function buildCharts() {
    const box = $("#charts");
    for (const c of CHARTS) {
      const s = svg("svg", { "data-chart": c.name, viewBox: `0 0 ${CW} ${CH}`, preserveAspectRatio: "none", role: "img", "aria-label": c.title });
      s.append(svg("line", { class: "grid", x1: 0, y1: 0, x2: CW, y2: 0 }), svg("line", { class: "grid", x1: 0, y1: CH, x2: CW, y2: CH }));
      const fig = el("figure", { class: "chart", id: `chart-${c.name}` },
        el("figcaption", null, el("span", { class: "title" }, c.title), el("span", { class: "current" }, "–")),
        el("div", { class: "plot" }, el("span", { class: "axis max" }, ""), s, el("span", { class: "axis min" }, "")),
        el("div", { class: "xaxis" }, el("span", null, "−15 min"), el("span", { class: "legend" }), el("span", null, "now")));
      box.append(fig);
    }
  }

  function renderCharts() {
    const pts = state.points;
    const end = pts.length ? pts[pts.length - 1].at : Date.now();
    const start = end - WINDOW_MS;
    for (const c of CHARTS) {
      const fig = document.getElementById(`chart-${c.name}`);
      const s = fig.querySelector("svg");
      const series = c.series();
      let min = 0;
      let max = 0;
      for (const [, get] of series) {
        for (const p of pts) {
          const v = num(get(p));
          if (v < min) min = v;
          if (v > max) max = v;
        }
      }
      if (max === min) max = min + 1;
      const paths = new Map();
      for (const p of s.querySelectorAll("path[data-series]")) paths.set(p.getAttribute("data-series"), p);
      const legend = fig.querySelector(".legend");
      const current = [];
      series.forEach(([name, get], i) => {
        let path = paths.get(name);
        if (!path) {
          path = svg("path", { "data-series": name, class: `line s${i % 8}`, "vector-effect": "non-scaling-stroke" });
          s.append(path);
        }
        paths.delete(name);
        path.setAttribute("d", pathData(pts, get, start, min, max));
        if (pts.length) current.push([name, num(get(pts[pts.length - 1])), i]);
      });
      for (const p of paths.values()) p.remove();
      fig.querySelector(".axis.max").textContent = c.fmt(max);
      fig.querySelector(".axis.min").textContent = c.fmt(min);
      const cur = fig.querySelector(".current");
      cur.textContent = current.length === 1 && series.length === 1 ? c.fmt(current[0][1]) : current.length ? "" : "–";
      legend.textContent = "";
      if (series.length > 1 || c.name === "refusals") {
        for (const [name, v, i] of current) {
          legend.append(el("span", { class: `key s${i % 8}` }, `${clip(name, 10)} ${c.fmt(v)}`));
        }
        if (!current.length) cur.textContent = "none";
      }
    }
  }

  // pathData draws a polyline, starting a new segment after a gap of more
  // than 5 s (the feed was down), so a gap is not drawn as a slope. Fewer
  // than two points give no path.
  function pathData(pts, get, start, min, max) {
    if (pts.length < 2) return "";
    const out = [];
    let prevAt = -Infinity;
    for (const p of pts) {
      const x = ((p.at - start) / WINDOW_MS) * CW;
      const y = CH - ((num(get(p)) - min) / (max - min)) * CH;
      out.push((p.at - prevAt > 5000 ? "M" : "L") + x.toFixed(1) + " " + y.toFixed(1));
      prevAt = p.at;
    }
    return out.join("");
  }

  // ---------- routes ----------

  const ROUTE_FIELDS = ["path", "script", "version", "loaded_at", "connections", "messages_in", "messages_out", "in_per_s", "out_per_s", "bytes_in", "bytes_out", "p50_ms", "p99_ms", "errors", "timeouts"];

  function renderRoutes(routes) {
    syncRows($("#routes-body"), routes.filter((r) => r && typeof r.path === "string"), "data-route", (r) => r.path,
      () => {
        const tr = el("tr");
        for (const f of ROUTE_FIELDS) {
          tr.append(el(f === "path" ? "th" : "td", { "data-field": f, class: /^(path|script|version|loaded_at)$/.test(f) ? "" : "num" }));
        }
        return tr;
      },
      (tr, r) => {
        for (const f of ROUTE_FIELDS) {
          const td = tr.querySelector(`[data-field="${f}"]`);
          const v = r[f];
          switch (f) {
            case "path": case "script": case "version":
              setCell(td, v, clip(v, 200));
              break;
            case "loaded_at":
              if (td.getAttribute("data-value") !== String(v)) {
                td.setAttribute("data-value", String(v));
                td.textContent = "";
                if (num(v) > 0) td.append(timeEl(v));
              }
              break;
            case "bytes_in": case "bytes_out":
              setCell(td, v, fmtBytes(v), String(v));
              break;
            case "p50_ms": case "p99_ms":
              setCell(td, v, fmtMs(v), num(v) < 0 ? "no callback ran in the last minute" : `${v} ms`);
              break;
            default:
              setCell(td, v, fmtCount(v), String(v));
          }
        }
        tr.classList.toggle("has-errors", num(r.errors) + num(r.timeouts) > 0);
      });
  }

  // ---------- reloads and script errors ----------

  function renderReloads(reloads) {
    const sig = JSON.stringify(reloads.slice(0, MAX_ENTRIES));
    if (sig === state.reloadSig) return;
    state.reloadSig = sig;
    const list = $("#reload-list");
    list.textContent = "";
    for (const r of reloads.slice(0, MAX_ENTRIES)) {
      if (!r || typeof r !== "object") continue;
      const ok = r.ok === true;
      const li = el("li", { class: "reload-entry", "data-ok": ok ? "true" : "false" },
        el("div", { class: "head" },
          el("span", { class: `badge ${ok ? "ok" : "bad"}` }, ok ? "ok" : "failed"),
          " ", timeEl(r.at), " by ", el("span", { class: "reload-by" }, clip(r.by || "?", 100))));
      li.append(el("div", { class: "reload-changed" }, describeChange(r)));
      if (!ok && r.error) li.append(el("pre", { class: "reload-error" }, clip(r.error, MAX_TEXT)));
      list.append(li);
    }
    $("#reloads-empty").hidden = list.children.length > 0;
  }

  function describeChange(r) {
    const part = (label, xs) => (Array.isArray(xs) && xs.length ? `${label}: ${xs.slice(0, 50).map((x) => clip(x, 200)).join(", ")}${xs.length > 50 ? ", …" : ""}` : "");
    const parts = [part("changed", r.changed), part("removed", r.removed), part("settings", r.server)].filter(Boolean);
    if (parts.length) return parts.join("; ");
    return r.ok ? "nothing changed" : "nothing applied: the previous version keeps serving";
  }

  function renderErrors(errors) {
    const sig = JSON.stringify(errors.slice(0, MAX_ENTRIES));
    if (sig === state.errorSig) return;
    state.errorSig = sig;
    const list = $("#error-list");
    // Keep open tracebacks open across a rebuild: key them by time and text.
    const open = new Set([...list.querySelectorAll("details[open]")].map((d) => d.getAttribute("data-key")));
    list.textContent = "";
    for (const e of errors.slice(0, MAX_ENTRIES)) {
      if (!e || typeof e !== "object") continue;
      const li = el("li", { class: "script-error" },
        el("div", { class: "head" },
          timeEl(e.at), " ",
          el("code", { "data-field": "route" }, clip(e.route, 200)), " ",
          el("span", { "data-field": "callback" }, clip(e.callback, 100)), " conn ",
          el("code", { "data-field": "conn" }, clip(e.conn || "–", 200))),
        el("pre", { "data-field": "error", class: "err-text" }, clip(e.error, MAX_TEXT)));
      if (e.traceback) {
        const key = `${e.at}|${clip(e.error, 200)}`;
        li.append(el("details", { "data-key": key, open: open.has(key) },
          el("summary", null, "traceback"),
          el("pre", { class: "traceback" }, clip(e.traceback, MAX_TRACE))));
      }
      list.append(li);
    }
    $("#errors-empty").hidden = list.children.length > 0;
  }

  // ---------- cluster and broker ----------

  function renderCluster(nodes, broker) {
    const section = $("#cluster");
    if (!Array.isArray(nodes)) {
      section.hidden = true;
      $("#nodes-body").textContent = "";
    } else {
      section.hidden = false;
      syncRows($("#nodes-body"), nodes.filter((n) => n && typeof n.id === "string"), "data-node", (n) => n.id,
        () => el("tr", null, el("th", { "data-field": "id" }), el("td", { "data-field": "connections", class: "num" }),
          el("td", { "data-field": "rooms", class: "num" }), el("td", { "data-field": "broker_connected" }),
          el("td", { "data-field": "broker_queued", class: "num" }), el("td", { "data-field": "age_ms", class: "num" })),
        (tr, n) => {
          setCell(tr.querySelector('[data-field="id"]'), n.id, clip(n.id, 200) + (n.self ? " (this node)" : ""));
          setCell(tr.querySelector('[data-field="connections"]'), n.connections, fmtCount(n.connections));
          setCell(tr.querySelector('[data-field="rooms"]'), n.rooms, fmtCount(n.rooms));
          setCell(tr.querySelector('[data-field="broker_connected"]'), n.broker_connected, n.broker_connected ? "connected" : "disconnected");
          setCell(tr.querySelector('[data-field="broker_queued"]'), n.broker_queued, fmtCount(n.broker_queued));
          const age = num(n.age_ms);
          setCell(tr.querySelector('[data-field="age_ms"]'), n.age_ms, age < 1000 ? `${Math.round(age)} ms` : fmtDuration(age / 1000), `reported ${fmtAbs(n.at)}`);
          tr.classList.toggle("stale", age > 10000 || !n.broker_connected);
        });
    }
    const bs = $("#broker");
    const dl = $("#broker-list");
    if (!broker || typeof broker !== "object") {
      bs.hidden = true;
      dl.textContent = "";
      return;
    }
    bs.hidden = false;
    dl.textContent = "";
    const rows = [
      ["kind", clip(broker.kind, 50)],
      ["state", broker.connected ? "connected" : "disconnected"],
      ["lag (queued)", fmtCount(broker.queued)],
      ["rooms", fmtCount(broker.rooms)],
      ["publishes", fmtCount(broker.publishes)],
      ["receives", fmtCount(broker.receives)],
      ["errors", fmtCount(broker.errors)],
      ["reconnects", fmtCount(broker.reconnects)],
      ["dropped", fmtCount(broker.dropped)],
    ];
    if (broker.error) rows.push(["last error", clip(broker.error, MAX_TEXT)]);
    for (const [k, v] of rows) dl.append(el("dt", null, k), el("dd", { "data-field": k, class: k === "state" ? (broker.connected ? "good" : "error") : "" }, v));
  }

  // ---------- actions ----------

  function renderActions(a) {
    state.actions = { close: a.close !== false, reload: a.reload !== false };
    const rb = $("#reload-button");
    rb.disabled = !state.actions.reload;
    rb.title = state.actions.reload ? "reload the configuration and scripts, as SIGHUP does" : "this node runs on the embedded configuration, which cannot be reloaded";
    const cb = $("#close-conn-button");
    cb.disabled = !state.actions.close;
    cb.title = state.actions.close ? "" : "this node does not allow closing connections from the dashboard";
    for (const b of document.querySelectorAll("button.close-member")) {
      b.disabled = !state.actions.close;
      b.title = cb.title;
    }
  }

  let pendingConfirm = null;

  // confirmAction opens the in-page dialog naming what will happen and
  // resolves true only on the explicit "Confirm".
  function confirmAction(text, yesLabel) {
    if (pendingConfirm) pendingConfirm(false);
    const dlg = $("#confirm");
    $("#confirm-text").textContent = text;
    $("#confirm-yes").textContent = yesLabel || "Confirm";
    return new Promise((resolve) => {
      pendingConfirm = (v) => {
        pendingConfirm = null;
        if (dlg.open) dlg.close();
        resolve(v);
      };
      if (!dlg.open) dlg.showModal();
      $("#confirm-no").focus();
    });
  }

  function showResult(ok, text) {
    const r = $("#action-result");
    r.setAttribute("data-ok", ok ? "true" : "false");
    r.className = ok ? "good" : "error";
    r.textContent = clip(text, MAX_TEXT);
  }

  const utf8Len = (s) => new TextEncoder().encode(s).length;
  const validCode = (c) => Number.isInteger(c) && ((c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999));

  async function closeConn(id, code, reason) {
    id = String(id).trim();
    if (!id) return showResult(false, "Enter a connection id.");
    if (id.length > 200) return showResult(false, "That connection id is too long.");
    if (!validCode(code)) return showResult(false, `Close code ${code} is not allowed: use 1000-1003, 1007-1014 or 3000-4999.`);
    if (utf8Len(reason) > 123) return showResult(false, "The reason is over 123 bytes.");
    const ok = await confirmAction(`Close connection ${id} with code ${code} and reason "${reason}"? The client is disconnected at once.`, "Close it");
    if (!ok) return;
    try {
      const res = await post("/dashboard/close", { conn: id, code, reason });
      if (res.status === 401) checkSession();
      const body = await readJSON(res);
      if (res.ok && body && body.ok !== false) {
        showResult(true, body.message || `connection ${id} closed`);
        if (state.selectedRoom !== null) loadMembers(state.selectedRoom);
      } else {
        showResult(false, body && body.error ? body.error : `HTTP ${res.status}`);
      }
    } catch (e) {
      showResult(false, "close failed: " + e.message);
    }
  }

  async function reloadNow() {
    const ok = await confirmAction("Reload the configuration and every route's script now? A broken file is refused and the current version keeps serving.", "Reload");
    if (!ok) return;
    try {
      const res = await post("/dashboard/reload", {});
      if (res.status === 401) checkSession();
      const body = await readJSON(res);
      if (!res.ok) return showResult(false, body && body.error ? body.error : `HTTP ${res.status}`);
      if (body && body.ok) showResult(true, `reload succeeded: ${describeChange(body)}`);
      else showResult(false, `reload failed: ${body && body.error ? body.error : "unknown error"}`);
    } catch (e) {
      showResult(false, "reload failed: " + e.message);
    }
  }

  // ---------- rooms and members ----------

  async function loadRooms() {
    const seq = ++state.roomsSeq;
    const q = $("#rooms-search").value.slice(0, 200);
    const limit = Math.min(500, Math.max(1, parseInt($("#rooms-limit").value, 10) || 50));
    try {
      const a = await getJSON(`/dashboard/rooms?q=${encodeURIComponent(q)}&limit=${limit}`);
      if (seq !== state.roomsSeq) return; // a newer search answered first
      $("#rooms-error").textContent = "";
      const rooms = Array.isArray(a.rooms) ? a.rooms.filter((r) => r && typeof r.name === "string").slice(0, 500) : [];
      syncRows($("#rooms-body"), rooms, "data-room", (r) => r.name,
        (r) => {
          const tr = el("tr", { class: "clickable", tabindex: "0" }, el("td", { "data-field": "name" }), el("td", { "data-field": "members", class: "num" }));
          return tr;
        },
        (tr, r) => {
          setCell(tr.querySelector('[data-field="name"]'), r.name, clip(r.name, 200));
          setCell(tr.querySelector('[data-field="members"]'), r.members, fmtCount(r.members), String(r.members));
          tr.classList.toggle("selected", r.name === state.selectedRoom);
        });
      const total = num(a.total);
      $("#rooms-count").textContent = total > rooms.length ? `${rooms.length} of ${fmtCount(total)} rooms` : `${rooms.length} room${rooms.length === 1 ? "" : "s"}`;
    } catch (e) {
      if (seq === state.roomsSeq) $("#rooms-error").textContent = "rooms: " + clip(e.message, 300);
    }
  }

  function roomsTick() {
    clearTimeout(state.roomsTimer);
    state.roomsTimer = setTimeout(roomsTick, ROOMS_REFRESH_MS);
    if (document.visibilityState === "visible" && document.body.getAttribute("data-state") === "live") loadRooms();
  }

  async function loadMembers(room) {
    const seq = ++state.membersSeq;
    state.selectedRoom = room;
    for (const tr of $("#rooms-body").children) tr.classList.toggle("selected", tr.getAttribute("data-room") === room);
    const list = $("#members");
    const note = $("#members-note");
    $("#members-title").textContent = "Members of " + clip(room, 200);
    note.textContent = "loading…";
    try {
      const a = await getJSON(`/dashboard/members?room=${encodeURIComponent(room)}`);
      if (seq !== state.membersSeq) return;
      list.textContent = "";
      const members = Array.isArray(a.members) ? a.members.filter((m) => m && typeof m.conn === "string").slice(0, 500) : [];
      for (const m of members) {
        const info = m.info === null || m.info === undefined ? "" : clip(JSON.stringify(m.info), 300);
        const b = el("button", { type: "button", class: "close-member", disabled: !state.actions.close }, "close");
        b.addEventListener("click", () => closeConn(m.conn, DEFAULT_CODE, DEFAULT_REASON));
        list.append(el("li", { "data-member": m.conn }, el("code", null, clip(m.conn, 200)), " ", info ? el("span", { class: "info" }, info) : null, " ", b));
      }
      let text = `${members.length} member${members.length === 1 ? "" : "s"}, ${a.presence ? "across the cluster (presence)" : "on this node"}`;
      if (a.error) text += ` — ${clip(a.error, 500)}`;
      note.textContent = text;
    } catch (e) {
      if (seq === state.membersSeq) note.textContent = "members: " + clip(e.message, 300);
    }
  }

  // ---------- wiring ----------

  function wire() {
    buildCharts();
    $("#login-button").addEventListener("click", login);
    $("#login-token").addEventListener("keydown", (e) => { if (e.key === "Enter") login(); });
    $("#logout-button").addEventListener("click", logout);
    $("#confirm-yes").addEventListener("click", () => pendingConfirm && pendingConfirm(true));
    $("#confirm-no").addEventListener("click", () => pendingConfirm && pendingConfirm(false));
    // Escape closes a modal dialog with "cancel": that is a "no".
    $("#confirm").addEventListener("cancel", () => pendingConfirm && pendingConfirm(false));
    // A stale close event (from a dialog replaced by a newer one) must not
    // cancel the open one: only act when the dialog really is closed.
    $("#confirm").addEventListener("close", () => { if (!$("#confirm").open && pendingConfirm) pendingConfirm(false); });
    $("#close-conn-button").addEventListener("click", () => {
      const code = Number($("#close-conn-code").value || DEFAULT_CODE);
      const reason = $("#close-conn-reason").value;
      closeConn($("#close-conn-id").value, code, reason);
    });
    $("#reload-button").addEventListener("click", reloadNow);
    $("#rooms-search").addEventListener("input", () => {
      clearTimeout(state.searchTimer);
      state.searchTimer = setTimeout(loadRooms, SEARCH_DEBOUNCE_MS);
    });
    $("#rooms-limit").addEventListener("change", loadRooms);
    $("#rooms-body").addEventListener("click", (e) => {
      const tr = e.target.closest("tr[data-room]");
      if (tr) loadMembers(tr.getAttribute("data-room"));
    });
    $("#rooms-body").addEventListener("keydown", (e) => {
      const tr = e.target.closest("tr[data-room]");
      if (tr && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); loadMembers(tr.getAttribute("data-room")); }
    });
    document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") roomsTick(); });
    setInterval(() => {
      refreshTimes();
      if (state.snapshot) $("#uptime").textContent = fmtDuration(num(state.snapshot.uptime_s) + (Date.now() - num(state.snapshot.at)) / 1000);
    }, 1000);
    checkSession();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", wire);
  else wire();
})();
