// cloudpush WebSocket client: an ES module with no dependencies, for browsers
// and Node (pass a WebSocket implementation). The wire protocol is
// docs/protocol.md of https://github.com/cloudpush (envelopes of msgType
// -1..4); tokens and refresh are docs/security.md.

export const MsgType = Object.freeze({
  ERROR: -1, CONNECTION: 0, BUSINESS: 1, BUSINESS_ACK: 2, HEARTBEAT: 3, HEARTBEAT_ACK: 4,
});

// Close codes after which reconnecting cannot help (docs/protocol.md):
// 1007 invalid UTF-8 and 1009 too big are client bugs, 4003 another session
// replaced this one (reconnecting would replace it back, forever), 4004 the
// broker refuses the subscription. 1008 and 4005 (token refused or expired)
// are retried only when getToken can bring a new token.
const NEVER_RETRY = new Set([1007, 1009, 4003, 4004]);
const RETRY_WITH_NEW_TOKEN = new Set([1008, 4005]);

export function shouldReconnect(code, canRenewToken) {
  if (NEVER_RETRY.has(code)) return false;
  if (RETRY_WITH_NEW_TOKEN.has(code)) return canRenewToken;
  return true;
}

// Full jitter (a random delay up to the exponential cap): clients dropped
// together by a bridge restart do not come back together.
export function backoffDelay(attempt, { minDelay = 500, maxDelay = 30000, factor = 2 } = {}) {
  const cap = Math.min(maxDelay, minDelay * Math.pow(factor, Math.max(0, attempt - 1)));
  return Math.round(Math.random() * cap);
}

// The `exp` claim of a JWT in epoch milliseconds, or null. The signature is
// not checked: the server does that; the client only wants to know when to
// refresh.
export function tokenExpiry(token) {
  try {
    const part = String(token).split(".")[1];
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(b64 + "===".slice((b64.length + 3) % 4)));
    return typeof claims.exp === "number" ? claims.exp * 1000 : null;
  } catch (e) {
    return null;
  }
}

function randomId() {
  const bytes = new Uint8Array(16);
  if (globalThis.crypto && globalThis.crypto.getRandomValues) globalThis.crypto.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function errorText(e) {
  return e && e.message ? e.message : String(e);
}

export class SendError extends Error {
  constructor(message, envelope) {
    super(message);
    this.name = "SendError";
    this.envelope = envelope || null;
  }
}

const OPEN = 1;

export class CloudpushClient extends EventTarget {
  #url; #opts; #ws = null; #state = "idle"; #attempt = 0; #closedByUser = false;
  #token = null; #tokenExp = null; #connection = null;
  #generation = 0; // bumped by close() and each attempt: a stale attempt stops after its await
  #retryTimer = null; #heartbeatTimer = null; #connectTimer = null;
  #pending = new Map(); // messageId -> { resolve, reject, timer }
  #listeners = new Map(); // "type" -> Map(on() callback -> EventTarget listener), for off()

  constructor(url, options = {}) {
    super();
    if (!options.channelId) throw new TypeError("channelId is required");
    this.#url = url;
    this.#opts = {
      token: null, getToken: null, params: null, autoAck: false,
      minDelay: 500, maxDelay: 30000, factor: 2,
      heartbeatInterval: 25000, refreshBefore: 60000,
      sendTimeout: 10000, connectTimeout: 10000,
      WebSocket: globalThis.WebSocket,
      ...options,
    };
    if (!this.#opts.WebSocket) throw new TypeError("no WebSocket implementation: pass options.WebSocket");
  }

  get state() { return this.#state; }
  get channelId() { return this.#opts.channelId; }
  get sessionId() { return this.#connection ? this.#connection.sessionId : null; }

  // on("message", (envelope) => ...) calls back with the event's detail.
  on(type, callback) {
    if (!this.#listeners.has(type)) this.#listeners.set(type, new Map());
    const byCallback = this.#listeners.get(type);
    if (byCallback.has(callback)) return this;
    const listener = (ev) => callback(ev.detail);
    byCallback.set(callback, listener);
    this.addEventListener(type, listener);
    return this;
  }

  off(type, callback) {
    const byCallback = this.#listeners.get(type);
    const listener = byCallback && byCallback.get(callback);
    if (listener) {
      this.removeEventListener(type, listener);
      byCallback.delete(callback);
    }
    return this;
  }

  // Starts connecting; resolves with the first CONNECTION envelope, rejects
  // when the client closes (close() or a code not worth retrying) first.
  connect() {
    if (this.#state === "connected") return Promise.resolve(this.#connection);
    this.#closedByUser = false;
    const ready = new Promise((resolve, reject) => {
      const onConnection = (ev) => { done(); resolve(ev.detail); };
      const onState = (ev) => {
        if (ev.detail.state === "closed") { done(); reject(new Error("closed: " + (ev.detail.reason || ev.detail.code))); }
      };
      const done = () => {
        this.removeEventListener("connection", onConnection);
        this.removeEventListener("state", onState);
      };
      this.addEventListener("connection", onConnection);
      this.addEventListener("state", onState);
    });
    if (this.#state === "idle" || this.#state === "closed") {
      this.#attempt = 0;
      this.#open();
    }
    return ready;
  }

  // Closes for good: no reconnect; sends still waiting for an ack fail.
  close(code = 1000, reason = "") {
    this.#closedByUser = true;
    this.#generation++;
    clearTimeout(this.#retryTimer);
    const ws = this.#ws;
    this.#teardown("closed by the client");
    if (ws) ws.close(code, reason);
    this.#setState("closed", { code, reason: reason || "closed by the client" });
  }

  // Sends a BUSINESS message; resolves with its BUSINESS_ACK (the bus took
  // it), rejects with a SendError on its ERROR, a timeout or a disconnect.
  send(to, msg, { messageId = randomId(), requestId, timeout = this.#opts.sendTimeout } = {}) {
    if (this.#state !== "connected") return Promise.reject(new SendError("not connected"));
    const env = { msgType: MsgType.BUSINESS, to: Array.isArray(to) ? to : [to], msg, messageId };
    if (requestId) env.requestId = requestId;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(messageId);
        reject(new SendError("no acknowledgement within " + timeout + " ms"));
      }, timeout);
      this.#pending.set(messageId, { resolve, reject, timer });
      this.#ws.send(JSON.stringify(env));
    });
  }

  // Confirms that a received message was processed (BUSINESS_ACK upstream).
  ack(messageId) {
    if (this.#ws && this.#ws.readyState === OPEN) {
      this.#ws.send(JSON.stringify({ msgType: MsgType.BUSINESS_ACK, messageId }));
    }
  }

  #emit(type, detail) {
    this.dispatchEvent(Object.assign(new Event(type), { detail }));
  }

  #setState(state, extra = {}) {
    this.#state = state;
    this.#emit("state", { state, attempt: this.#attempt, ...extra });
  }

  async #open() {
    const generation = ++this.#generation;
    this.#setState("connecting");
    try {
      this.#token = this.#opts.getToken ? await this.#opts.getToken() : this.#opts.token;
    } catch (e) {
      this.#emit("error", { error: e, message: "getToken failed: " + errorText(e) });
      if (generation === this.#generation) this.#scheduleReconnect(0, "no token");
      return;
    }
    if (generation !== this.#generation) return; // close() came during getToken()
    this.#tokenExp = this.#token ? tokenExpiry(this.#token) : null;
    let ws;
    try {
      ws = new this.#opts.WebSocket(this.#buildUrl());
    } catch (e) {
      // A malformed URL, or a page that may not open it (mixed content): no retry can help.
      this.#emit("error", { error: e, message: errorText(e) });
      this.#setState("closed", { reason: errorText(e) });
      return;
    }
    this.#ws = ws;
    // A bridge that accepts TCP but never sends CONNECTION is as good as down.
    this.#connectTimer = setTimeout(() => ws.close(4000, "connect timeout"), this.#opts.connectTimeout);
    ws.onmessage = (ev) => { if (ws === this.#ws) this.#receive(ev.data); };
    ws.onclose = (ev) => { if (ws === this.#ws) this.#lost(ev.code, ev.reason); };
    ws.onerror = () => {}; // a close event follows; Node's ws throws on an unhandled error
  }

  #buildUrl() {
    const u = new URL(this.#url, globalThis.location ? globalThis.location.href : undefined);
    u.searchParams.set("channelId", this.#opts.channelId);
    if (this.#token) u.searchParams.set("token", this.#token);
    // Extra query arguments for each (re)connect: where resuming from an
    // offset (issue 13) will add its position.
    const p = this.#opts.params;
    const extra = typeof p === "function" ? p() : p;
    for (const [k, v] of Object.entries(extra || {})) u.searchParams.set(k, String(v));
    return u.toString();
  }

  #receive(data) {
    let env;
    try {
      env = JSON.parse(data);
    } catch (e) {
      this.#emit("error", { message: "unparseable frame", data: String(data) });
      return;
    }
    this.#emit("envelope", env);
    switch (env.msgType) {
      case MsgType.CONNECTION:
        clearTimeout(this.#connectTimer);
        this.#connection = env;
        this.#attempt = 0;
        this.#setState("connected", { sessionId: env.sessionId || null });
        this.#emit("connection", env);
        this.#scheduleHeartbeat();
        break;
      case MsgType.BUSINESS:
        this.#emit("message", env);
        if (this.#opts.autoAck && env.messageId) this.ack(env.messageId);
        break;
      case MsgType.BUSINESS_ACK:
        this.#settle(env.messageId, (p) => p.resolve(env));
        break;
      case MsgType.HEARTBEAT_ACK:
        this.#emit("heartbeat", env);
        break;
      case MsgType.ERROR:
        if (!this.#settle(env.messageId, (p) => p.reject(new SendError(env.resultMsg || "error", env)))) {
          this.#emit("error", { message: env.resultMsg || "error", envelope: env });
        }
        break;
      default:
        break;
    }
  }

  #settle(messageId, action) {
    const p = messageId && this.#pending.get(messageId);
    if (!p) return false;
    clearTimeout(p.timer);
    this.#pending.delete(messageId);
    action(p);
    return true;
  }

  // One timer: the next heartbeat comes after heartbeatInterval, or earlier
  // when the token must be refreshed before that.
  #scheduleHeartbeat() {
    clearTimeout(this.#heartbeatTimer);
    let delay = this.#opts.heartbeatInterval;
    if (this.#opts.getToken && this.#tokenExp) {
      delay = Math.min(delay, Math.max(1000, this.#tokenExp - this.#opts.refreshBefore - Date.now()));
    }
    this.#heartbeatTimer = setTimeout(() => this.#heartbeat(), delay);
  }

  async #heartbeat() {
    const ws = this.#ws;
    const env = { msgType: MsgType.HEARTBEAT, messageId: randomId() };
    if (this.#opts.getToken && this.#tokenExp && this.#tokenExp - Date.now() <= this.#opts.refreshBefore) {
      try {
        const token = await this.#opts.getToken();
        env.msg = { token };
        this.#token = token;
        this.#tokenExp = tokenExpiry(token);
      } catch (e) {
        this.#emit("error", { error: e, message: "getToken failed: " + errorText(e) });
      }
    }
    if (ws !== this.#ws || !ws || ws.readyState !== OPEN) return;
    ws.send(JSON.stringify(env));
    this.#scheduleHeartbeat();
  }

  #teardown(why) {
    clearTimeout(this.#heartbeatTimer);
    clearTimeout(this.#connectTimer);
    if (this.#ws) { this.#ws.onmessage = null; this.#ws.onclose = null; }
    this.#ws = null;
    this.#connection = null;
    for (const [, p] of this.#pending) { clearTimeout(p.timer); p.reject(new SendError(why)); }
    this.#pending.clear();
  }

  #lost(code, reason) {
    this.#teardown("connection closed before the acknowledgement");
    if (this.#closedByUser) return;
    if (!shouldReconnect(code, Boolean(this.#opts.getToken))) {
      this.#setState("closed", { code, reason });
      return;
    }
    this.#scheduleReconnect(code, reason);
  }

  #scheduleReconnect(code, reason) {
    this.#attempt++;
    const delay = backoffDelay(this.#attempt, this.#opts);
    this.#setState("reconnecting", { delay, code, reason });
    this.#retryTimer = setTimeout(() => this.#open(), delay);
  }
}
