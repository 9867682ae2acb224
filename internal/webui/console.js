// moonwire dev console: plain browser JavaScript, no dependencies, served
// from the binary (works offline). Each panel is one WebSocket; the page
// logs every message both ways with its time, size and kind, and the close
// code and reason.

const MAX_ROWS = 2000;      // older rows are dropped: a chatty route must not grow the page without end
const FLUSH_MS = 50;        // how often new rows are shown
const MAX_SHOWN = 4096;     // characters of a message shown; the size column has the whole length
const enc = new TextEncoder();

function now() {
  const d = new Date();
  const p = (n, w = 2) => String(n).padStart(w, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

function hex(bytes) {
  const n = Math.min(bytes.length, MAX_SHOWN / 3);
  const out = [];
  for (let i = 0; i < n; i++) out.push(bytes[i].toString(16).padStart(2, "0"));
  return out.join(" ") + (n < bytes.length ? " …" : "");
}

// parseHex reads "de ad be ef", "deadbeef" or "0xde 0xad"; it throws on
// anything else rather than send something the user did not type.
export function parseHex(s) {
  const clean = s.replace(/0x/gi, "").replace(/[\s,:]/g, "");
  if (!/^[0-9a-f]*$/i.test(clean)) throw new Error("binary: not hex (use 0-9 a-f, spaces allowed)");
  if (clean.length % 2) throw new Error("binary: odd number of hex digits");
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.substr(i * 2, 2), 16);
  return out;
}

// buildURL adds the query lines ("key=value") to url.
export function buildURL(url, query) {
  const u = new URL(url, location.href);
  if (u.protocol === "http:") u.protocol = "ws:";
  if (u.protocol === "https:") u.protocol = "wss:";
  if (u.protocol !== "ws:" && u.protocol !== "wss:") throw new Error(`URL: want ws:// or wss://, not ${u.protocol}`);
  for (const line of query.split("\n")) {
    const t = line.trim();
    if (!t) continue;
    const i = t.indexOf("=");
    if (i < 0) u.searchParams.append(t, "");
    else u.searchParams.append(t.slice(0, i), t.slice(i + 1));
  }
  return u.toString();
}

class Panel {
  constructor(root) {
    this.root = root;
    this.$ = (sel) => root.querySelector(sel);
    this.ws = null;
    this.pending = []; // rows not yet shown
    this.timer = 0;
    this.body = this.$("table.log tbody");
    this.$(".connect").addEventListener("click", () => (this.ws ? this.abort() : this.connect()));
    this.$(".clear").addEventListener("click", () => {
      this.pending = [];
      this.body.replaceChildren();
    });
    this.$(".route").addEventListener("change", (e) => {
      if (e.target.value) this.$(".url").value = wsBase() + e.target.value;
    });
    const send = this.$(".send");
    if (send) {
      send.addEventListener("click", () => this.send());
      this.$(".close").addEventListener("click", () => this.close());
      this.$(".msg").addEventListener("keydown", (e) => {
        if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) this.send();
      });
    }
  }

  row(dir, kind, size, data) {
    const tr = document.createElement("tr");
    tr.dataset.dir = dir;
    tr.dataset.kind = kind;
    for (const v of [now(), { in: "←", out: "→", info: "•" }[dir], kind, size, data]) {
      const td = document.createElement("td");
      td.textContent = v; // never innerHTML: messages are untrusted
      tr.append(td);
    }
    // Rows are added in batches, at most every FLUSH_MS: a route that sends
    // thousands of messages at once would otherwise have the page lay out
    // the table once per message.
    this.pending.push(tr);
    if (this.pending.length > MAX_ROWS) this.pending.splice(0, this.pending.length - MAX_ROWS);
    if (!this.timer) this.timer = setTimeout(() => this.flush(), FLUSH_MS);
  }

  flush() {
    this.timer = 0;
    const rows = this.pending;
    this.pending = [];
    if (!rows.length) return;
    this.body.append(...rows);
    let extra = this.body.rows.length - MAX_ROWS;
    while (extra-- > 0) this.body.firstElementChild.remove();
    rows[rows.length - 1].scrollIntoView({ block: "nearest" });
  }

  state(s) {
    this.$(".status").textContent = s;
    const open = this.ws && this.ws.readyState === WebSocket.OPEN;
    this.$(".connect").textContent = this.ws ? "Disconnect" : "Connect";
    for (const b of this.root.querySelectorAll(".send, .close")) b.disabled = !open;
  }

  connect() {
    let url;
    const protos = this.$(".protos").value.split(",").map((s) => s.trim()).filter(Boolean);
    try {
      url = buildURL(this.$(".url").value.trim(), this.$(".query").value);
      this.ws = new WebSocket(url, protos);
    } catch (e) {
      this.row("info", "error", "", String(e.message || e));
      return;
    }
    const ws = this.ws;
    ws.binaryType = "arraybuffer";
    this.row("info", "connecting", "", url + (protos.length ? "  subprotocols: " + protos.join(", ") : ""));
    this.state("connecting");
    ws.onopen = () => {
      this.row("info", "open", "", ws.protocol ? "subprotocol: " + ws.protocol : "");
      this.state("open");
      const onopen = this.$(".onopen");
      if (onopen && onopen.value) this.sendData(onopen.value);
    };
    ws.onmessage = (e) => {
      if (typeof e.data === "string") {
        const shown = e.data.length > MAX_SHOWN ? e.data.slice(0, MAX_SHOWN) + " …" : e.data;
        this.row("in", "text", enc.encode(e.data).length, shown);
      } else {
        const b = new Uint8Array(e.data);
        this.row("in", "binary", b.length, hex(b));
      }
    };
    ws.onerror = () => this.row("info", "error", "", "the browser gives no detail: a refused handshake (see the server log) or a dropped connection");
    ws.onclose = (e) => {
      this.row("info", "close", "", `code ${e.code}${e.reason ? ' reason "' + e.reason + '"' : ""}${e.wasClean ? "" : " (not clean)"}`);
      if (this.ws === ws) this.ws = null;
      this.state(`closed ${e.code}`);
    };
  }

  sendData(v, binary) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    if (binary) {
      let b;
      try {
        b = parseHex(v);
      } catch (e) {
        this.row("info", "error", "", e.message);
        return;
      }
      ws.send(b);
      this.row("out", "binary", b.length, hex(b));
    } else {
      ws.send(v);
      this.row("out", "text", enc.encode(v).length, v.length > MAX_SHOWN ? v.slice(0, MAX_SHOWN) + " …" : v);
    }
  }

  send() {
    const binary = this.root.querySelector('input[name="kind"]:checked').value === "binary";
    this.sendData(this.$(".msg").value, binary);
  }

  close() {
    if (!this.ws) return;
    const code = Number(this.$(".code").value || 1000);
    const reason = this.$(".reason").value;
    try {
      this.ws.close(code, reason);
      this.row("out", "close", "", `code ${code}${reason ? ' reason "' + reason + '"' : ""}`);
      this.state("closing");
    } catch (e) {
      // the browser allows 1000 and 3000-4999, and a reason of at most 123 bytes
      this.row("info", "error", "", String(e.message || e));
    }
  }

  abort() {
    // Disconnect: close 1000 without asking.
    if (this.ws) this.ws.close(1000);
  }
}

function wsBase() {
  return (location.protocol === "https:" ? "wss://" : "ws://") + location.host;
}

async function loadRoutes() {
  const res = await fetch("/_console/routes.json", { cache: "no-store" });
  if (!res.ok) throw new Error(`routes: HTTP ${res.status}`);
  return res.json();
}

function tabs() {
  const buttons = document.querySelectorAll("nav [role=tab]");
  for (const b of buttons) {
    b.addEventListener("click", () => {
      for (const o of buttons) {
        o.setAttribute("aria-selected", String(o === b));
        document.getElementById(o.dataset.panel).hidden = o !== b;
      }
    });
  }
}

async function main() {
  tabs();
  const panels = [...document.querySelectorAll(".panel")].map((el) => new Panel(el));
  for (const p of panels) p.state("closed");
  let routes = [];
  try {
    routes = await loadRoutes();
  } catch (e) {
    panels[0].row("info", "error", "", String(e.message || e));
  }
  for (const p of panels) {
    const sel = p.$(".route");
    for (const r of routes) {
      const o = document.createElement("option");
      o.value = r.path;
      o.textContent = `${r.path}  (${r.script})`;
      sel.append(o);
    }
    if (routes.length) p.$(".url").placeholder = wsBase() + routes[0].path;
  }
  document.body.dataset.ready = "true"; // the browser test waits for this
}

main();
