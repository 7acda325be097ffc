// cloudpush WebSocket client: an ES module with no dependencies, for browsers
// and Node (pass a WebSocket implementation). The wire protocol is
// docs/protocol.md of https://github.com/cloudpush (envelopes of msgType
// -1..5); tokens and refresh are docs/security.md; offsets, recovery, acks
// and drain are docs/design-delivery.md (issue 13).

export const MsgType = Object.freeze({
  ERROR: -1, CONNECTION: 0, BUSINESS: 1, BUSINESS_ACK: 2, HEARTBEAT: 3, HEARTBEAT_ACK: 4,
  RECONNECT: 5,
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


// ---------------------------------------------------------------------------
// Stream positions (issue 13). Each channel id has a stream, broadcasts have
// one of their own; a stored message carries its stream's "offset" (+1 per
// message) and "epoch" (changes when the stream's history was lost). The
// tracker keeps the last offset and epoch of both streams, drops what it has
// already seen, and names what it missed. It is pure logic (no socket), so
// it is exported and unit-tested on its own.

export const Stream = Object.freeze({ CHANNEL: "channel", BROADCAST: "broadcast" });

// CONNECTION keys and recovery query arguments of each stream.
const STREAM_KEYS = {
  channel: { offset: "offset", epoch: "epoch", since: "since", sinceEpoch: "epoch" },
  broadcast: { offset: "boffset", epoch: "bepoch", since: "bsince", sinceEpoch: "bepoch" },
};

const isOffset = (v) => Number.isSafeInteger(v) && v >= 0;
// An epoch, or null: "" (a stream that has no history yet) is no epoch.
const epochOf = (v) => (typeof v === "string" && v ? v : null);

export class StreamTracker {
  // { offset, epoch } per stream; null = unknown (no position yet, or a
  // server that sends no offsets: then everything is delivered as it comes).
  channel = { offset: null, epoch: null };
  broadcast = { offset: null, epoch: null };

  constructor(position) { this.restore(position); }

  // Takes a position saved from `position` (e.g. across a page reload).
  // Values that are not an offset or an epoch are ignored (a corrupt store
  // means "no position", not an exception).
  restore(position) {
    const p = position || {};
    for (const s of [Stream.CHANNEL, Stream.BROADCAST]) {
      const k = STREAM_KEYS[s];
      this[s] = { offset: isOffset(p[k.since]) ? p[k.since] : null, epoch: epochOf(p[k.sinceEpoch]) };
      if (this[s].offset === null) this[s].epoch = null;
    }
  }

  // The position as the query arguments that resume from it: feed it back to
  // restore() or to CloudpushClient's `position`.
  get position() {
    return {
      since: this.channel.offset, epoch: this.channel.epoch,
      bsince: this.broadcast.offset, bepoch: this.broadcast.epoch,
    };
  }

  // Query arguments that resume from the known position (nothing for an
  // unknown stream: the server then starts from "now").
  recoveryParams() {
    const q = {};
    for (const s of [Stream.CHANNEL, Stream.BROADCAST]) {
      const k = STREAM_KEYS[s];
      if (this[s].offset === null) continue;
      q[k.since] = this[s].offset;
      if (this[s].epoch !== null) q[k.sinceEpoch] = this[s].epoch;
    }
    return q;
  }

  // A CONNECTION envelope. `asked` is what the connect URL asked for, per
  // stream: { since, epoch } or null. Returns the gaps it reveals.
  connected(env, asked = {}) {
    const gaps = [];
    for (const s of [Stream.CHANNEL, Stream.BROADCAST]) {
      const k = STREAM_KEYS[s];
      if (typeof env[k.epoch] !== "string") continue; // a server without streams: keep what we know
      const epoch = epochOf(env[k.epoch]);
      const offset = isOffset(env[k.offset]) ? env[k.offset] : null;
      const pos = this[s];
      const ask = asked[s];
      if (ask) {
        // Recovery: the server sends every retained message after `since`
        // next, so the position stays there and moves as they arrive. With
        // another epoch `since` means nothing: everything of the new epoch
        // is new to us (the server says recovered:false).
        const same = ask.epoch === null || epoch === null || ask.epoch === epoch;
        pos.offset = same ? ask.since : 0;
        pos.epoch = epoch || ask.epoch;
      } else if (offset !== null) {
        // A fresh connect starts at the stream's current offset; after a
        // position in the same epoch, the offsets in between were missed.
        const same = pos.epoch === null || epoch === null || pos.epoch === epoch;
        if (pos.offset !== null && same && offset > pos.offset) {
          gaps.push({ stream: s, epoch: epoch || pos.epoch, from: pos.offset + 1, to: offset, reason: "reconnect" });
        } else if (pos.offset !== null && !same) {
          gaps.push({ stream: s, epoch, from: null, to: null, reason: "epoch" });
        }
        if (!same || pos.offset === null || offset > pos.offset) pos.offset = offset;
        if (epoch !== null) pos.epoch = epoch;
      } // else the server does not know where the stream is (no history now): keep ours
      // The server is the authority: an offset it has not reached was never seen.
      const sameNow = epoch !== null && pos.epoch === epoch;
      if (offset !== null && pos.offset !== null && pos.offset > offset && sameNow) pos.offset = offset;
    }
    return gaps;
  }

  // A BUSINESS envelope: { stream, verdict, gap } with verdict "new" (deliver;
  // the position moved), "duplicate" (offset already seen: drop) or
  // "unsequenced" (no offset: not stored; deliver, the position stays).
  // gap: the offsets skipped before this one, or null.
  received(env) {
    const stream = env.broadcast === true ? Stream.BROADCAST : Stream.CHANNEL;
    if (!isOffset(env.offset)) return { stream, verdict: "unsequenced", gap: null };
    const pos = this[stream];
    const epoch = epochOf(env.epoch) || pos.epoch;
    let gap = null;
    if (pos.offset === null) {
      // the first position we learn
    } else if (pos.epoch !== null && epoch !== pos.epoch) {
      // The history was lost while we were connected: what came before this
      // offset in the new epoch never reached us.
      if (env.offset > 1) gap = { stream, epoch, from: 1, to: env.offset - 1, reason: "epoch" };
    } else if (env.offset <= pos.offset) {
      return { stream, verdict: "duplicate", gap: null };
    } else if (env.offset > pos.offset + 1) {
      gap = { stream, epoch, from: pos.offset + 1, to: env.offset - 1, reason: "offset" };
    }
    pos.offset = env.offset;
    pos.epoch = epoch;
    return { stream, verdict: "new", gap };
  }

  // An ERROR envelope whose resultMsg starts with "gap:": the server could
  // not deliver a range of offsets. When the range can be read ("gap: 5-7",
  // "gap: offsets 5 to 7 ..."), the position skips it so the next message is
  // not reported a second time.
  serverGap(env) {
    const text = String(env.resultMsg || "");
    const stream = env.broadcast === true || /\bbroadcast\b/i.test(text) ? Stream.BROADCAST : Stream.CHANNEL;
    const pos = this[stream];
    const epoch = epochOf(env.epoch) || pos.epoch;
    const nums = (text.slice(4).match(/\d+/g) || []).map(Number).filter(Number.isSafeInteger);
    let from = null; let to = null;
    if (nums.length >= 2) [from, to] = nums;
    else if (nums.length === 1) from = to = nums[0];
    if (to !== null && from > to) [from, to] = [to, from];
    if (to !== null && pos.offset !== null && epoch === pos.epoch && from <= pos.offset + 1 && to > pos.offset) {
      pos.offset = to;
    }
    return { stream, epoch, from, to, reason: "server", message: text };
  }
}

const OPEN = 1;
const ACKED_REMEMBERED = 1024; // manual acks remembered to re-ack a resent message
const MAX_DRAIN_DELAY = 300000; // a RECONNECT's delayMs is capped at 5 min

export class CloudpushClient extends EventTarget {
  #url; #opts; #ws = null; #state = "idle"; #attempt = 0; #closedByUser = false;
  #token = null; #tokenExp = null; #connection = null;
  #generation = 0; // bumped by close() and each attempt: a stale attempt stops after its await
  #retryTimer = null; #heartbeatTimer = null; #connectTimer = null; #drainTimer = null;
  #pending = new Map(); // messageId -> { resolve, reject, timer }
  #listeners = new Map(); // "type" -> Map(on() callback -> EventTarget listener), for off()
  #tracker; #asked = {}; // what the current attempt's URL asked to recover, per stream
  #recovered = null; #lastPosition = "";
  #drainAt = null; // epoch ms: reconnect then, as a RECONNECT envelope asked
  #acked = new Set(); // manual acks, to answer a resent message again
  #unsentAcks = new Set(); // acks made while disconnected: sent after the next CONNECTION

  constructor(url, options = {}) {
    super();
    if (!options.channelId) throw new TypeError("channelId is required");
    this.#url = url;
    this.#opts = {
      token: null, getToken: null, params: null, autoAck: false,
      ack: false, recover: true, position: null,
      minDelay: 500, maxDelay: 30000, factor: 2,
      heartbeatInterval: 25000, refreshBefore: 60000,
      sendTimeout: 10000, connectTimeout: 10000,
      WebSocket: globalThis.WebSocket,
      ...options,
    };
    if (!this.#opts.WebSocket) throw new TypeError("no WebSocket implementation: pass options.WebSocket");
    if (this.#opts.ack === undefined || this.#opts.ack === null) this.#opts.ack = false;
    if (![false, true, "manual"].includes(this.#opts.ack)) throw new TypeError('ack must be false, true or "manual"');
    this.#opts.recover = this.#opts.recover !== false; // on unless turned off
    this.#tracker = new StreamTracker(this.#opts.position);
    this.#lastPosition = JSON.stringify(this.#tracker.position);
  }

  get state() { return this.#state; }
  get channelId() { return this.#opts.channelId; }
  get sessionId() { return this.#connection ? this.#connection.sessionId : null; }
  // Where the client is in its streams, as the query arguments that resume
  // from there: { since, epoch, bsince, bepoch } (null = unknown). Save it
  // (the "position" event) and pass it back as options.position or to
  // connect() to resume after a page reload.
  get position() { return this.#tracker.position; }
  // The `recovered` flag of the last CONNECTION: true, false (messages were
  // missed), or null (no recovery asked, or a server without history).
  get recovered() { return this.#recovered; }
  // Whether (re)connects ask to resume from the position (since/epoch).
  get recover() { return this.#opts.recover; }
  set recover(on) { this.#opts.recover = Boolean(on); }

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
  // A position ({ since, epoch, bsince, bepoch }, e.g. saved from a
  // "position" event) replaces the client's before it connects.
  connect(position) {
    if (this.#state === "connected") return Promise.resolve(this.#connection);
    this.#closedByUser = false;
    if (position) this.#tracker.restore(position);
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
  // With ack: "manual" the app calls it; an ack=1 session that leaves a
  // message unconfirmed gets it again, then is closed with 4006.
  ack(messageId) {
    if (!messageId) return;
    if (this.#opts.ack === "manual") {
      this.#acked.delete(messageId);
      this.#acked.add(messageId);
      if (this.#acked.size > ACKED_REMEMBERED) this.#acked.delete(this.#acked.values().next().value);
    }
    if (this.#ws && this.#ws.readyState === OPEN && this.#connection) {
      this.#ws.send(JSON.stringify({ msgType: MsgType.BUSINESS_ACK, messageId }));
    } else {
      // Still a receipt for the service (cloudpush/ack/<channelId>) when it
      // goes on the next session; bounded like the remembered acks.
      this.#unsentAcks.add(messageId);
      if (this.#unsentAcks.size > ACKED_REMEMBERED) this.#unsentAcks.delete(this.#unsentAcks.values().next().value);
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
    const q = u.searchParams;
    q.set("channelId", this.#opts.channelId);
    if (this.#token) q.set("token", this.#token);
    if (this.#opts.ack) q.set("ack", "1");
    if (this.#opts.recover) {
      for (const [k, v] of Object.entries(this.#tracker.recoveryParams())) q.set(k, String(v));
    }
    // The app's own query arguments for each (re)connect, last: they may
    // override the position too.
    const p = this.#opts.params;
    const extra = typeof p === "function" ? p() : p;
    for (const [k, v] of Object.entries(extra || {})) q.set(k, String(v));
    // What this attempt asked to recover, read back from the URL itself.
    this.#asked = {};
    for (const s of [Stream.CHANNEL, Stream.BROADCAST]) {
      const k = STREAM_KEYS[s];
      const since = q.has(k.since) ? Number(q.get(k.since)) : NaN;
      if (isOffset(since)) this.#asked[s] = { since, epoch: q.get(k.sinceEpoch) || null };
    }
    return u.toString();
  }

  // Emits "position" when the position moved since the last one emitted.
  #positionMaybeMoved() {
    const now = this.#tracker.position;
    const key = JSON.stringify(now);
    if (key === this.#lastPosition) return;
    this.#lastPosition = key;
    this.#emit("position", now);
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
      case MsgType.CONNECTION: {
        clearTimeout(this.#connectTimer);
        this.#connection = env;
        this.#attempt = 0;
        const gaps = this.#tracker.connected(env, this.#asked);
        this.#recovered = typeof env.recovered === "boolean" ? env.recovered : null;
        for (const id of this.#unsentAcks) this.#ws.send(JSON.stringify({ msgType: MsgType.BUSINESS_ACK, messageId: id }));
        this.#unsentAcks.clear();
        this.#setState("connected", { sessionId: env.sessionId || null, recovered: this.#recovered });
        this.#emit("connection", env);
        if (this.#recovered !== null) this.#emit("recovered", { recovered: this.#recovered, connection: env });
        for (const gap of gaps) this.#emit("gap", gap);
        this.#positionMaybeMoved();
        this.#scheduleHeartbeat();
        break;
      }
      case MsgType.BUSINESS:
        this.#business(env);
        break;
      case MsgType.RECONNECT:
        this.#reconnectRequested(env);
        break;
      case MsgType.BUSINESS_ACK:
        this.#settle(env.messageId, (p) => p.resolve(env));
        break;
      case MsgType.HEARTBEAT_ACK:
        this.#emit("heartbeat", env);
        break;
      case MsgType.ERROR:
        if (typeof env.resultMsg === "string" && env.resultMsg.startsWith("gap:")) {
          this.#emit("gap", { ...this.#tracker.serverGap(env), envelope: env });
          this.#positionMaybeMoved();
        } else if (!this.#settle(env.messageId, (p) => p.reject(new SendError(env.resultMsg || "error", env)))) {
          this.#emit("error", { message: env.resultMsg || "error", envelope: env });
        }
        break;
      default:
        break;
    }
  }

  // A BUSINESS message: dropped when already seen (a resend or a recovered
  // copy), else a gap first when offsets were skipped, then the message.
  // Auto acks go after the "message" listeners returned; a duplicate is
  // acked again (the server resent it because our ack got lost).
  #business(env) {
    const seen = this.#tracker.received(env);
    const autoAck = this.#opts.ack === true || this.#opts.autoAck;
    if (seen.verdict === "duplicate") {
      this.#emit("duplicate", env);
      if (env.messageId && (autoAck || this.#acked.has(env.messageId))) this.ack(env.messageId);
      return;
    }
    if (seen.gap) this.#emit("gap", { ...seen.gap, envelope: env });
    this.#emit("message", env);
    if (autoAck && env.messageId) this.ack(env.messageId);
    if (seen.verdict === "new") this.#positionMaybeMoved();
  }

  // RECONNECT (msgType 5): the bridge is draining. Reconnect at the moment
  // it suggests (msg.delayMs), whether it closes first (1012) or not; this
  // is no failure, so it does not count as a backoff attempt.
  #reconnectRequested(env) {
    const asked = Number(env.msg && env.msg.delayMs);
    const delay = Number.isFinite(asked) ? Math.min(Math.max(0, asked), MAX_DRAIN_DELAY) : 0;
    const ws = this.#ws;
    this.#drainAt = Date.now() + delay;
    this.#emit("reconnect", { delayMs: delay, reason: env.resultMsg || "", envelope: env });
    clearTimeout(this.#drainTimer);
    this.#drainTimer = setTimeout(() => {
      if (ws !== this.#ws) return;
      this.#lost(1000, "reconnect requested by the server");
      ws.close(1000, "reconnecting as the server asked");
    }, delay);
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
    clearTimeout(this.#drainTimer);
    this.#drainAt = null;
    if (this.#ws) { this.#ws.onmessage = null; this.#ws.onclose = null; }
    this.#ws = null;
    this.#connection = null;
    for (const [, p] of this.#pending) { clearTimeout(p.timer); p.reject(new SendError(why)); }
    this.#pending.clear();
  }

  #lost(code, reason) {
    const drainAt = this.#drainAt;
    this.#teardown("connection closed before the acknowledgement");
    if (this.#closedByUser) return;
    if (drainAt !== null) {
      const delay = Math.max(0, drainAt - Date.now());
      this.#setState("reconnecting", { delay, code, reason, drain: true });
      this.#retryTimer = setTimeout(() => this.#open(), delay);
      return;
    }
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
