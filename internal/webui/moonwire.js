// moonwire.js: the browser client for moonwire, an ES module with no
// dependencies. It wraps the browser's WebSocket with what every app
// otherwise writes by hand: reconnecting with capped exponential backoff
// and jitter, resuming rooms that keep a history (?since=OFFSET&epoch=EPOCH,
// which the route hands to conn:recover), dropping duplicates, noticing
// gaps, and a bounded send queue while disconnected.
//
//   import { MoonWire } from "/_moonwire.js";
//   const mw = new MoonWire("wss://chat.example.com/chat/lobby", { token });
//   mw.on("message", (m) => console.log(m.json ?? m.data));
//   mw.send("hello");
//
// The API is documented in clients/js/README.md of the moonwire repository.

/** Close codes after which reconnecting cannot help: the server (or the
 * client) meant it, or the client speaks something the route refuses. */
const FINAL_CODES = new Set([1000, 1002, 1003, 1007, 1008, 1010]);

const DEFAULTS = {
  token: null, // string, or a function (maybe async) called before every connect
  tokenParam: "token", // the query parameter the token goes in (auth.lua reads ?token=)
  query: null, // object, or a function (maybe async) returning one, added to the URL
  protocols: undefined, // WebSocket subprotocols
  room: null, // the room this URL resumes; default: the room of the first stamped message
  resume: null, // function(positions) -> query object; default: since/epoch of `room`
  initialDelay: 500, // ms before the first reconnect
  maxDelay: 30000, // ms: the cap of the backoff
  factor: 2, // each failed attempt multiplies the delay
  jitter: 0.5, // a delay is cut by up to this fraction, at random
  stableAfter: 5000, // ms a connection must stay open to reset the backoff
  maxRetries: Infinity, // attempts in a row before giving up (close event with final=true)
  reconnect: null, // function(code, reason) -> bool; default: not after FINAL_CODES
  queueSize: 256, // messages kept while disconnected
  queuePolicy: "drop-oldest", // or "drop-newest" or "error"
  binaryType: "arraybuffer",
};

const POLICIES = new Set(["drop-oldest", "drop-newest", "error"]);

/** MAX_ROOMS bounds the rooms whose position the client keeps: messages of
 * further rooms are delivered unchecked, so that a route naming ever new
 * rooms cannot grow the client's memory without end. */
export const MAX_ROOMS = 1000;

/** SendError is what send() throws: reason "full" when the queue is full
 * and the policy is "error", "closed" after close() or a final close. */
export class SendError extends Error {
  constructor(message, reason) {
    super(message);
    this.name = "SendError";
    this.reason = reason;
  }
}

/**
 * MoonWire is one logical connection to a moonwire route that survives
 * disconnections. Events (on(type, fn) or addEventListener, with the data
 * in event.detail): open, message, close, reconnecting, recovered, gap,
 * drop.
 */
export class MoonWire extends EventTarget {
  /**
   * @param {string|string[]|function} url ws:// or wss:// URL; a list is
   *   tried in turn (one more per reconnect); a function (maybe async) is
   *   asked before every connect.
   * @param {object} options see DEFAULTS above and the README.
   */
  constructor(url, options = {}) {
    super();
    for (const k of Object.keys(options)) {
      if (!(k in DEFAULTS)) throw new TypeError(`moonwire: unknown option ${k}`);
    }
    this.options = { ...DEFAULTS, ...options };
    const o = this.options;
    if (!POLICIES.has(o.queuePolicy)) {
      throw new TypeError(`moonwire: queuePolicy must be one of ${[...POLICIES].join(", ")}`);
    }
    const check = (ok, what) => {
      if (!ok) throw new TypeError(`moonwire: ${what}`);
    };
    check(Number.isInteger(o.queueSize) && o.queueSize >= 0, "queueSize must be an integer >= 0");
    check(o.initialDelay >= 0 && o.maxDelay >= o.initialDelay, "need 0 <= initialDelay <= maxDelay");
    check(o.factor >= 1, "factor must be >= 1");
    check(o.jitter >= 0 && o.jitter <= 1, "jitter must be within 0..1");
    check(o.maxRetries >= 0, "maxRetries must be >= 0");
    this._urls = typeof url === "function" ? url : [].concat(url);
    if (typeof this._urls !== "function" && this._urls.length === 0) {
      throw new TypeError("moonwire: no URL");
    }
    this._next = 0; // index of the next URL in the list
    this.ws = null;
    this.state = "connecting"; // connecting | open | reconnecting | closed
    this.attempt = 0; // failed attempts in a row
    this.positions = new Map(); // room -> { offset, epoch }
    this.stats = { duplicates: 0, gaps: 0, reconnects: 0, dropped: 0 };
    this._queue = [];
    this._timer = null;
    this._stable = null;
    this._resuming = new Set(); // rooms resumed by the current connection, not yet confirmed
    this._connect();
  }

  /** on subscribes fn(detail) to an event and returns the unsubscribe function. */
  on(type, fn) {
    const h = (e) => fn(e.detail);
    this.addEventListener(type, h);
    return () => this.removeEventListener(type, h);
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** url returns the URL the current (or last) connection used. */
  get url() {
    return this._url;
  }

  /**
   * send sends data (string, ArrayBuffer, typed array or Blob) now when
   * connected, else queues it. It returns "sent", "queued" or "dropped"
   * (drop-newest with a full queue); with the "error" policy a full queue
   * throws SendError (reason "full"), and any send after the client closed
   * for good throws SendError (reason "closed").
   */
  send(data) {
    if (this.state === "closed") throw new SendError("moonwire: closed", "closed");
    if (this.state === "open" && this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(data);
      return "sent";
    }
    const o = this.options;
    if (this._queue.length >= o.queueSize) {
      if (o.queuePolicy === "error") {
        throw new SendError(`moonwire: send queue full (${o.queueSize} messages)`, "full");
      }
      this.stats.dropped++;
      if (o.queuePolicy === "drop-newest" || o.queueSize === 0) {
        this._emit("drop", { data, reason: "queue full" });
        return "dropped";
      }
      this._emit("drop", { data: this._queue.shift(), reason: "queue full" });
    }
    this._queue.push(data);
    return "queued";
  }

  /** queued is the number of messages waiting for a connection. */
  get queued() {
    return this._queue.length;
  }

  /**
   * close closes the connection (code 1000 by default) and stops
   * reconnecting for good; queued messages are dropped. Idempotent.
   */
  close(code = 1000, reason = "") {
    if (this.state === "closed") return;
    this.state = "closed";
    clearTimeout(this._timer);
    clearTimeout(this._stable);
    this._queue = [];
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      try {
        ws.close(code, reason);
      } catch {
        ws.close();
      }
    }
    this._emit("close", { code, reason, final: true, byClient: true });
  }

  async _target() {
    let url;
    if (typeof this._urls === "function") {
      url = await this._urls();
    } else {
      url = this._urls[this._next % this._urls.length];
      this._next++;
    }
    const u = new URL(url, globalThis.location?.href);
    // A URL relative to the page comes out http(s): the same host's ws(s).
    if (u.protocol === "http:") u.protocol = "ws:";
    else if (u.protocol === "https:") u.protocol = "wss:";
    const o = this.options;
    const add = (q) => {
      for (const [k, v] of Object.entries(q || {})) {
        if (v !== undefined && v !== null) u.searchParams.set(k, String(v));
      }
    };
    add(typeof o.query === "function" ? await o.query() : o.query);
    const token = typeof o.token === "function" ? await o.token() : o.token;
    if (token) u.searchParams.set(o.tokenParam, token);
    add(this._resumeQuery());
    return u.toString();
  }

  // _resumeQuery is what tells the route where the client left off.
  _resumeQuery() {
    const o = this.options;
    if (o.resume) return o.resume(new Map(this.positions));
    const room = this._resumeRoom();
    const p = room === undefined ? undefined : this.positions.get(room);
    if (!p) return {};
    return { since: p.offset, epoch: p.epoch };
  }

  // _resumeRoom is the room whose position the URL carries by default.
  _resumeRoom() {
    return this.options.room ?? this.positions.keys().next().value;
  }

  async _connect() {
    let url;
    try {
      url = await this._target();
    } catch (err) {
      if (this.state === "closed") return;
      this._emit("error", { error: err });
      this._retry(1006, `url: ${err}`);
      return;
    }
    if (this.state === "closed") return;
    this._url = url;
    this._resuming = new Set(this.positions.keys());
    let ws;
    try {
      ws = new WebSocket(url, this.options.protocols);
    } catch (err) {
      // A malformed URL or a forbidden port: retrying will not help.
      this.state = "closed";
      this._queue = [];
      this._emit("close", { code: 1006, reason: String(err), final: true });
      return;
    }
    ws.binaryType = this.options.binaryType;
    this.ws = ws;
    ws.onopen = () => {
      this.state = "open";
      this._stable = setTimeout(() => (this.attempt = 0), this.options.stableAfter);
      this._emit("open", { url, resumed: this._resuming.size > 0 });
      // Flush what was queued, in order, unless the socket goes away meanwhile.
      while (this._queue.length && ws.readyState === WebSocket.OPEN && this.ws === ws) {
        ws.send(this._queue.shift());
      }
    };
    ws.onmessage = (e) => this._message(ws, e.data);
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearTimeout(this._stable);
      this._retry(e.code, e.reason, this.state === "open");
    };
  }

  _retry(code, reason, wasOpen = false) {
    if (this.state === "closed") return;
    const o = this.options;
    const again = o.reconnect ? o.reconnect(code, reason) : !FINAL_CODES.has(code);
    if (!again || this.attempt >= o.maxRetries) {
      this.state = "closed";
      this._queue = [];
      this._emit("close", { code, reason, final: true, wasOpen });
      return;
    }
    this._emit("close", { code, reason, final: false, wasOpen });
    const base = Math.min(o.maxDelay, o.initialDelay * Math.pow(o.factor, this.attempt));
    const delay = Math.max(0, Math.round(base * (1 - o.jitter * Math.random())));
    this.state = "reconnecting";
    this.stats.reconnects++;
    // attempt counts reconnects since the last connection that stayed open
    // for stableAfter: a server that accepts and drops at once (1013 try
    // again later) backs off as one that refuses does.
    this.attempt++;
    this._emit("reconnecting", { attempt: this.attempt, delay, code, reason });
    this._timer = setTimeout(() => {
      if (this.state === "closed") return;
      this._connect();
    }, delay);
  }

  // _message checks a message's offset against what the client has seen
  // for its room: duplicates are dropped, a gap makes the client reconnect
  // with since= so that the route fills it, a reload is reported.
  _message(ws, data) {
    if (this.ws !== ws) return;
    let json;
    if (typeof data === "string" && data.charCodeAt(0) === 123 /* { */) {
      try {
        json = JSON.parse(data);
      } catch {
        json = undefined;
      }
    }
    const stamped =
      json &&
      typeof json === "object" &&
      Number.isSafeInteger(json.offset) &&
      json.offset >= 0 &&
      typeof json.epoch === "string";
    if (!stamped) {
      this._emit("message", { data, json });
      return;
    }
    const room = typeof json.room === "string" ? json.room : this.options.room ?? "";
    const have = this.positions.get(room);
    if (json.type === "reload") {
      // The route could not give what was missed: the app reloads its state
      // and goes on from the room's current offset.
      this._resuming.delete(room);
      this._track(room, json);
      this.stats.gaps++;
      this._emit("gap", {
        room,
        reload: true,
        reason: json.reason,
        from: have ? have.offset : 0,
        offset: json.offset,
        epoch: json.epoch,
      });
      return;
    }
    if (have && have.epoch === json.epoch) {
      if (json.offset <= have.offset) {
        this.stats.duplicates++;
        return;
      }
      if (json.offset > have.offset + 1) {
        // Missed messages: say so, then ask the route for them.
        this.stats.gaps++;
        this._emit("gap", { room, reload: false, from: have.offset, offset: json.offset, epoch: json.epoch });
        if (this.options.resume || room === this._resumeRoom()) {
          this._reconnectNow(4000, "gap");
          return;
        }
      }
    } else if (have) {
      // A new epoch: the room's history was lost; nothing can be recovered.
      this.stats.gaps++;
      this._emit("gap", { room, reload: true, reason: "epoch", from: have.offset, offset: json.offset, epoch: json.epoch });
    }
    if (this._resuming.delete(room) && have && have.epoch === json.epoch) {
      this._emit("recovered", { room, since: have.offset, epoch: json.epoch });
    }
    this._track(room, json);
    this._emit("message", { data, json, room, offset: json.offset, epoch: json.epoch });
  }

  // _track remembers room's position, within MAX_ROOMS rooms.
  _track(room, json) {
    if (this.positions.size >= MAX_ROOMS && !this.positions.has(room)) return;
    this.positions.set(room, { offset: json.offset, epoch: json.epoch });
  }

  // _reconnectNow drops the current socket and reconnects, after the
  // backoff's delay: a route that never fills the gap must not make the
  // client hammer it.
  _reconnectNow(code, reason) {
    const ws = this.ws;
    this.ws = null;
    clearTimeout(this._stable);
    if (ws) {
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      ws.close(code, reason);
    }
    this._emit("close", { code, reason, final: false, wasOpen: true });
    const o = this.options;
    const base = Math.min(o.maxDelay, o.initialDelay * Math.pow(o.factor, this.attempt));
    const delay = this.attempt === 0 ? 0 : Math.round(base * (1 - o.jitter * Math.random()));
    this.attempt++;
    this.state = "reconnecting";
    this.stats.reconnects++;
    this._emit("reconnecting", { attempt: this.attempt, delay, code, reason });
    this._timer = setTimeout(() => {
      if (this.state === "closed") return;
      this._connect();
    }, delay);
  }
}

export default MoonWire;
