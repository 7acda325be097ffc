// Unit tests of clients/js/cloudpush.mjs in Node (node --test), with a
// scripted WebSocket playing the server: the decisions the browser test
// cannot provoke on demand (which close codes are retried, close() during
// getToken(), send timeouts, token refresh timing; and the stream logic of
// issue 13: dedupe by offset, gaps, recovery arguments on reconnect,
// RECONNECT delays, 4006, acks). The real protocol is covered by
// client.test.mjs against a real bridge.
import { afterEach, test } from "node:test";
import assert from "node:assert/strict";
import {
  CloudpushClient, StreamTracker, backoffDelay, shouldReconnect, tokenExpiry,
} from "../../clients/js/cloudpush.mjs";

const sockets = [];
class FakeSocket {
  constructor(url) {
    this.url = new URL(url);
    this.readyState = 0;
    this.sent = [];
    sockets.push(this);
  }
  send(text) { this.sent.push(JSON.parse(text)); }
  close(code = 1000, reason = "") { this.serverClose(code, reason); }
  // what the server does; `fields` adds stream fields to CONNECTION
  open(id = "c", fields = {}) {
    this.readyState = 1;
    this.receive({ msgType: 0, from: "system", sessionId: "b_" + id + "_1-" + sockets.length, ...fields });
  }
  query(name) { return this.url.searchParams.get(name); }
  receive(env) { this.onmessage({ data: JSON.stringify(env) }); }
  serverClose(code, reason = "") {
    if (this.readyState === 3) return;
    this.readyState = 3;
    if (this.onclose) this.onclose({ code, reason });
  }
}

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));
// Waits for pred (timers slip on a loaded machine), at most ms.
const until = async (pred, ms = 5000) => {
  for (const end = Date.now() + ms; !pred() && Date.now() < end; ) await tick(5);
};
const jwt = (claims) => "e30." + Buffer.from(JSON.stringify(claims)).toString("base64url") + ".sig";

// Closed after each test, passed or not: a client that keeps reconnecting
// would keep the process alive.
const clients = [];
afterEach(() => { while (clients.length) clients.pop().close(); });

function client(options = {}) {
  sockets.length = 0;
  const c = new CloudpushClient("ws://h/ws", {
    channelId: "c", WebSocket: FakeSocket, minDelay: 1, maxDelay: 4, ...options,
  });
  clients.push(c);
  const states = [];
  c.on("state", (s) => states.push(s.state + (s.code ? ":" + s.code : "")));
  return { c, states };
}

test("backoff: full jitter under an exponential cap", () => {
  for (let attempt = 1; attempt <= 12; attempt++) {
    const cap = Math.min(30000, 500 * 2 ** (attempt - 1));
    for (let i = 0; i < 50; i++) {
      const d = backoffDelay(attempt);
      assert.ok(d >= 0 && d <= cap, `attempt ${attempt}: ${d} > ${cap}`);
    }
  }
  assert.equal(backoffDelay(3, { minDelay: 0 }), 0);
});

test("close codes: which are retried", () => {
  for (const code of [1000, 1001, 1006, 1011, 4001, 4002, 4008]) assert.ok(shouldReconnect(code, false), code);
  for (const code of [1007, 1009, 4003, 4004]) assert.ok(!shouldReconnect(code, true), code);
  for (const code of [1008, 4005]) {
    assert.ok(shouldReconnect(code, true), code);
    assert.ok(!shouldReconnect(code, false), code);
  }
});

test("tokenExpiry reads exp from a base64url payload", () => {
  assert.equal(tokenExpiry(jwt({ sub: "ü?>", exp: 1700000000 })), 1700000000000);
  assert.equal(tokenExpiry("not a token"), null);
  assert.equal(tokenExpiry(jwt({ sub: "x" })), null);
});

test("query: channelId, token and params; a static token is reused", async () => {
  const { c } = client({ token: "T", params: () => ({ since: 7 }) });
  c.connect().catch(() => {}); // rejects at the close() below
  await tick();
  assert.equal(sockets[0].url.searchParams.get("channelId"), "c");
  assert.equal(sockets[0].url.searchParams.get("token"), "T");
  assert.equal(sockets[0].url.searchParams.get("since"), "7");
  c.close();
});

test("reconnects after 1001 with a new token, stops after 4003", async () => {
  let calls = 0;
  const { c, states } = client({ getToken: async () => "tok" + ++calls });
  const ready = c.connect();
  await tick();
  sockets[0].open();
  await ready;
  sockets[0].serverClose(1001, "server shutting down");
  await until(() => sockets.length === 2);
  assert.equal(sockets.length, 2);
  assert.equal(sockets[1].url.searchParams.get("token"), "tok2");
  sockets[1].open();
  sockets[1].serverClose(4003, "replaced");
  await tick(20);
  assert.equal(sockets.length, 2, "no attempt after 4003");
  assert.deepEqual(states, ["connecting", "connected", "reconnecting:1001", "connecting", "connected", "closed:4003"]);
});

test("4005 is retried only with getToken", async () => {
  const { c, states } = client({ token: "fixed" });
  c.connect().catch(() => {});
  await tick();
  sockets[0].open();
  sockets[0].serverClose(4005, "token expired");
  await tick(20);
  assert.equal(sockets.length, 1);
  assert.equal(states.at(-1), "closed:4005");
});

test("close() while getToken() is pending opens nothing", async () => {
  let release;
  const { c, states } = client({ getToken: () => new Promise((r) => { release = r; }) });
  const ready = c.connect().then(() => "resolved", (e) => e.message);
  await tick();
  c.close();
  release("late");
  await tick(20);
  assert.equal(sockets.length, 0);
  assert.equal(states.at(-1), "closed:1000");
  assert.equal(await ready, "closed: closed by the client");
});

test("send: ack resolves, ERROR rejects with its text, timeout and disconnect reject", async () => {
  const { c } = client({ minDelay: 10000 });
  const ready = c.connect();
  await tick();
  sockets[0].open();
  await ready;
  const ok = c.send("x", { a: 1 }, { messageId: "m1" });
  const bad = c.send("x", { a: 2 }, { messageId: "m2" });
  const slow = c.send("x", { a: 3 }, { messageId: "m3", timeout: 20 });
  assert.deepEqual(sockets[0].sent.map((e) => [e.msgType, e.messageId, e.to[0]]), [[1, "m1", "x"], [1, "m2", "x"], [1, "m3", "x"]]);
  sockets[0].receive({ msgType: 2, messageId: "m1" });
  sockets[0].receive({ msgType: -1, messageId: "m2", resultMsg: "not allowed to push to x" });
  assert.equal((await ok).messageId, "m1");
  await assert.rejects(bad, (e) => e.name === "SendError" && e.message === "not allowed to push to x" && e.envelope.messageId === "m2");
  await assert.rejects(slow, /no acknowledgement within 20 ms/);
  const cut = c.send("x", { a: 4 });
  sockets[0].serverClose(1006);
  await assert.rejects(cut, /connection closed/);
  await assert.rejects(c.send("x", {}), /not connected/);
  c.close();
});

test("autoAck answers BUSINESS messages", async () => {
  const { c } = client({ autoAck: true });
  const got = [];
  c.on("message", (env) => got.push(env.msg.n));
  c.connect().catch(() => {}); // rejects at the close() below
  await tick();
  sockets[0].open();
  sockets[0].receive({ msgType: 1, messageId: "p1", msg: { n: 1 } });
  assert.deepEqual(got, [1]);
  assert.deepEqual(sockets[0].sent, [{ msgType: 2, messageId: "p1" }]);
  c.close();
});

test("a heartbeat carries a fresh token when exp is near", async () => {
  const tokens = [];
  const getToken = () => tokens[tokens.push(jwt({ sub: "c", exp: Math.floor(Date.now() / 1000) + 2, n: tokens.length })) - 1];
  const { c } = client({ getToken, heartbeatInterval: 50, refreshBefore: 5000 });
  c.connect().catch(() => {}); // rejects at the close() below
  await tick();
  sockets[0].open();
  await tick(1200); // the refresh point is clamped to at least 1 s after connecting
  await until(() => sockets[0].sent.some((e) => e.msgType === 3));
  const beats = sockets[0].sent.filter((e) => e.msgType === 3);
  assert.ok(beats.length >= 1);
  assert.equal(beats[0].msg.token, tokens[1], "the heartbeat carries the token fetched for it");
  c.close();
});

test("heartbeats without getToken carry no token", async () => {
  const { c } = client({ token: jwt({ exp: 1 }), heartbeatInterval: 20 });
  c.connect().catch(() => {}); // rejects at the close() below
  await tick();
  sockets[0].open();
  await until(() => sockets[0].sent.filter((e) => e.msgType === 3).length >= 2);
  const beats = sockets[0].sent.filter((e) => e.msgType === 3);
  assert.ok(beats.length >= 2, "beats: " + beats.length);
  assert.ok(beats.every((e) => !e.msg));
  c.close();
});

test("a failing getToken is retried with backoff; a URL that cannot open ends in closed", async () => {
  let calls = 0;
  const errors = [];
  const { c, states } = client({ getToken: async () => { if (++calls < 3) throw new Error("backend down"); return "t"; } });
  c.on("error", (e) => errors.push(e.message));
  c.connect().catch(() => {}); // rejects when closed after the test
  await until(() => sockets.length === 1);
  assert.equal(sockets.length, 1);
  assert.deepEqual(errors, ["getToken failed: backend down", "getToken failed: backend down"]);
  assert.deepEqual(states.filter((s) => s.startsWith("reconnecting")).length, 2);

  const bad = new CloudpushClient("not a url", { channelId: "c", WebSocket: FakeSocket });
  const result = await bad.connect().then(() => "resolved", (e) => e.message);
  assert.match(result, /^closed: /);
  assert.equal(bad.state, "closed");
});

// ---------------------------------------------------------------------------
// Streams (issue 13)

const E = "e0e0e0e0e0e0e0e0";
const biz = (offset, extra = {}) => ({ msgType: 1, messageId: "m" + offset + (extra.broadcast ? "b" : ""),
  msg: { n: offset }, offset, epoch: E, ...extra });

test("tracker: dedupe, gaps and unsequenced messages, per stream", () => {
  const t = new StreamTracker();
  assert.deepEqual(t.connected({ msgType: 0, offset: 3, epoch: E, boffset: 10, bepoch: "B" }), []);
  assert.deepEqual(t.position, { since: 3, epoch: E, bsince: 10, bepoch: "B" });
  assert.equal(t.received(biz(3)).verdict, "duplicate", "the CONNECTION's offset counts as seen");
  assert.deepEqual(t.received(biz(4)), { stream: "channel", verdict: "new", gap: null });
  assert.equal(t.received(biz(4)).verdict, "duplicate");
  assert.equal(t.received(biz(2)).verdict, "duplicate");
  const jump = t.received(biz(7));
  assert.equal(jump.verdict, "new");
  assert.deepEqual(jump.gap, { stream: "channel", epoch: E, from: 5, to: 6, reason: "offset" });
  assert.deepEqual(t.received({ msgType: 1, offset: null, msg: {} }), { stream: "channel", verdict: "unsequenced", gap: null });
  assert.deepEqual(t.received({ msgType: 1, msg: {} }).verdict, "unsequenced");
  assert.equal(t.received(biz(11, { broadcast: true, epoch: "B" })).verdict, "new");
  assert.equal(t.received(biz(11, { broadcast: true, epoch: "B" })).verdict, "duplicate");
  assert.equal(t.received(biz(8)).gap, null, "a broadcast does not move the channel stream");
  assert.deepEqual(t.position, { since: 8, epoch: E, bsince: 11, bepoch: "B" });
  // The history was lost while connected: a new epoch.
  const fresh = t.received(biz(3, { epoch: "F" }));
  assert.equal(fresh.verdict, "new");
  assert.deepEqual(fresh.gap, { stream: "channel", epoch: "F", from: 1, to: 2, reason: "epoch" });
  assert.equal(t.received(biz(1, { epoch: "F" })).verdict, "duplicate");
});

test("tracker: recovery keeps the asked position, a new epoch starts from 0, a fresh connect names what it skipped", () => {
  const t = new StreamTracker({ since: 5, epoch: E, bsince: 2, bepoch: "B" });
  assert.deepEqual(t.recoveryParams(), { since: 5, epoch: E, bsince: 2, bepoch: "B" });
  // Recovery in the same epoch: 6.. follow, the position stays at 5.
  t.connected({ offset: 9, epoch: E, boffset: 2, bepoch: "B2", recovered: false },
    { channel: { since: 5, epoch: E }, broadcast: { since: 2, epoch: "B" } });
  assert.deepEqual(t.position, { since: 5, epoch: E, bsince: 0, bepoch: "B2" });
  assert.equal(t.received(biz(6)).verdict, "new");
  assert.equal(t.received(biz(1, { broadcast: true, epoch: "B2" })).verdict, "new", "a new epoch's first message");
  // A connect without recovery after a position: the skipped offsets are a gap.
  const gaps = t.connected({ offset: 12, epoch: E, boffset: 1, bepoch: "B3" }, {});
  assert.deepEqual(gaps, [
    { stream: "channel", epoch: E, from: 7, to: 12, reason: "reconnect" },
    { stream: "broadcast", epoch: "B3", from: null, to: null, reason: "epoch" },
  ]);
  assert.deepEqual(t.position, { since: 12, epoch: E, bsince: 1, bepoch: "B3" });
  // since=0 without an epoch: the inbox, everything retained is new.
  const inbox = new StreamTracker({ since: 0 });
  assert.deepEqual(inbox.recoveryParams(), { since: 0 });
  inbox.connected({ offset: 3, epoch: E, recovered: true }, { channel: { since: 0, epoch: null } });
  assert.deepEqual([1, 2, 3].map((n) => inbox.received(biz(n)).verdict), ["new", "new", "new"]);
  // A server without streams changes nothing; a junk saved position is no position.
  const old = new StreamTracker({ since: "x", epoch: 5, bsince: -1 });
  assert.deepEqual(old.position, { since: null, epoch: null, bsince: null, bepoch: null });
  assert.deepEqual(old.connected({ msgType: 0, sessionId: "s" }), []);
  assert.deepEqual(old.recoveryParams(), {});
});

test("tracker: an empty epoch (no history yet, or none readable) keeps what is known", () => {
  const t = new StreamTracker();
  t.connected({ offset: 0, epoch: "", boffset: 0, bepoch: "" });
  assert.deepEqual(t.position, { since: 0, epoch: null, bsince: 0, bepoch: null });
  assert.deepEqual(t.recoveryParams(), { since: 0, bsince: 0 });
  assert.deepEqual(t.received(biz(1)), { stream: "channel", verdict: "new", gap: null });
  assert.equal(t.position.epoch, E, "the first message brings the epoch");
  t.received(biz(2));
  // The history is unavailable at a reconnect: the position stays.
  assert.deepEqual(t.connected({ offset: 0, epoch: "", recovered: false }, { channel: { since: 2, epoch: E } }), []);
  assert.deepEqual([t.channel.offset, t.channel.epoch], [2, E]);
  assert.deepEqual(t.connected({ offset: null, epoch: "" }, {}), []);
  assert.deepEqual([t.channel.offset, t.channel.epoch], [2, E]);
  // It came back empty: a new epoch from offset 1, nothing dropped.
  assert.deepEqual(t.received(biz(1, { epoch: "F" })), { stream: "channel", verdict: "new", gap: null });
});

test("tracker: a server gap skips its range when it can be read", () => {
  const t = new StreamTracker({ since: 3, epoch: E });
  assert.deepEqual(t.serverGap({ msgType: -1, resultMsg: "gap: offsets 4-6 lost" }),
    { stream: "channel", epoch: E, from: 4, to: 6, reason: "server", message: "gap: offsets 4-6 lost" });
  assert.equal(t.received(biz(7)).gap, null, "not reported twice");
  const b = t.serverGap({ msgType: -1, resultMsg: "gap: broadcast stream, offsets 9 to 12" });
  assert.equal(b.stream, "broadcast");
  assert.equal(b.from, 9);
  assert.equal(t.serverGap({ msgType: -1, resultMsg: "gap:" }).from, null);
});

// A client connected to a fake server that speaks streams.
async function streaming(options = {}, connection = { offset: 0, epoch: E, boffset: 0, bepoch: "B" }) {
  const made = client(options);
  const seen = { messages: [], gaps: [], dups: [], recovered: [], positions: [], errors: [], reconnects: [] };
  made.c.on("message", (env) => seen.messages.push((env.broadcast ? "b" : "") + env.offset));
  made.c.on("gap", (g) => seen.gaps.push(g));
  made.c.on("duplicate", (env) => seen.dups.push(env.offset));
  made.c.on("recovered", (r) => seen.recovered.push(r.recovered));
  made.c.on("position", (p) => seen.positions.push(p));
  made.c.on("error", (e) => seen.errors.push(e.message));
  made.c.on("reconnect", (r) => seen.reconnects.push(r.delayMs));
  made.c.connect().catch(() => {});
  await tick();
  sockets[0].open("c", connection);
  return { ...made, seen };
}

test("client: duplicates are dropped, a gap is an event before its message", async () => {
  const { c, seen } = await streaming();
  for (const n of [1, 2, 2, 1, 5]) sockets[0].receive(biz(n));
  sockets[0].receive(biz(1, { broadcast: true, epoch: "B" }));
  sockets[0].receive({ msgType: 1, messageId: "u", msg: {}, offset: null });
  assert.deepEqual(seen.messages, ["1", "2", "5", "b1", "null"]);
  assert.deepEqual(seen.dups, [2, 1]);
  assert.equal(seen.gaps.length, 1);
  assert.deepEqual({ ...seen.gaps[0], envelope: seen.gaps[0].envelope.offset },
    { stream: "channel", epoch: E, from: 3, to: 4, reason: "offset", envelope: 5 });
  assert.deepEqual(c.position, { since: 5, epoch: E, bsince: 1, bepoch: "B" });
  assert.deepEqual(seen.positions.at(-1), c.position);
  assert.equal(c.recovered, null, "no recovery was asked");
  assert.deepEqual(seen.errors, []);
});

test("client: a server gap ERROR is a gap event, not an error", async () => {
  const { seen } = await streaming();
  sockets[0].receive(biz(1));
  sockets[0].receive({ msgType: -1, from: "system", resultMsg: "gap: 2-3" });
  sockets[0].receive(biz(4));
  assert.deepEqual(seen.gaps.map((g) => [g.reason, g.from, g.to]), [["server", 2, 3]]);
  assert.deepEqual(seen.messages, ["1", "4"]);
  assert.deepEqual(seen.errors, []);
});

test("client: reconnects resume with since/epoch and bsince/bepoch, and report recovered", async () => {
  const { c, seen, states } = await streaming({ params: () => ({ app: "x" }) },
    { offset: 0, epoch: E, boffset: 6, bepoch: "B" });
  assert.equal(sockets[0].query("since"), null, "nothing to resume from at first");
  sockets[0].receive(biz(1));
  sockets[0].receive(biz(2));
  sockets[0].receive(biz(7, { broadcast: true, epoch: "B" }));
  sockets[0].serverClose(1006);
  await until(() => sockets.length === 2);
  assert.equal(sockets.length, 2);
  const q = sockets[1].url.searchParams;
  assert.deepEqual([q.get("since"), q.get("epoch"), q.get("bsince"), q.get("bepoch"), q.get("app")],
    ["2", E, "7", "B", "x"]);
  sockets[1].open("c", { offset: 4, epoch: E, boffset: 7, bepoch: "B", recovered: true });
  for (const n of [3, 4]) sockets[1].receive(biz(n)); // recovered
  sockets[1].receive(biz(4)); // the same one live: dropped
  sockets[1].receive(biz(5));
  assert.deepEqual(seen.messages, ["1", "2", "b7", "3", "4", "5"]);
  assert.deepEqual(seen.recovered, [true]);
  assert.equal(c.recovered, true);
  assert.deepEqual(seen.gaps, []);
  assert.equal(states.filter((s) => s === "connected").length, 2);

  // The history is gone: recovered:false and a new epoch; its messages all arrive.
  sockets[1].serverClose(1011);
  await until(() => sockets.length === 3);
  assert.equal(sockets[2].query("since"), "5");
  sockets[2].open("c", { offset: 2, epoch: "NEW", boffset: 7, bepoch: "B", recovered: false });
  sockets[2].receive(biz(1, { epoch: "NEW" }));
  sockets[2].receive(biz(2, { epoch: "NEW" }));
  assert.deepEqual(seen.recovered, [true, false]);
  assert.deepEqual(seen.messages.slice(-2), ["1", "2"]);
  assert.deepEqual(c.position, { since: 2, epoch: "NEW", bsince: 7, bepoch: "B" });
});

test("client: recover off connects fresh and marks what it skipped as a gap", async () => {
  const { c, seen } = await streaming({ recover: false });
  sockets[0].receive(biz(1));
  sockets[0].serverClose(1006);
  await until(() => sockets.length === 2);
  assert.equal(sockets[1].query("since"), null);
  sockets[1].open("c", { offset: 4, epoch: E, boffset: 0, bepoch: "B" });
  assert.deepEqual(seen.gaps.map((g) => [g.stream, g.from, g.to, g.reason]), [["channel", 2, 4, "reconnect"]]);
  c.recover = true;
  sockets[1].serverClose(1006);
  await until(() => sockets.length === 3);
  assert.equal(sockets[2].query("since"), "4");
});

test("client: a saved position resumes the first connect; params may override it", async () => {
  const saved = { since: 41, epoch: E, bsince: null, bepoch: null };
  const { c } = client({ position: saved });
  c.connect().catch(() => {});
  await tick();
  assert.equal(sockets[0].query("since"), "41");
  assert.equal(sockets[0].query("epoch"), E);
  assert.equal(sockets[0].query("bsince"), null);
  c.close();

  const other = client({ params: { since: 0 } });
  other.c.connect({ since: 9, epoch: E }).catch(() => {});
  await tick();
  assert.equal(sockets[0].query("since"), "0", "the app's params win");
  sockets[0].open("c", { offset: 2, epoch: E, boffset: 0, bepoch: "B", recovered: true });
  const got = [];
  other.c.on("message", (env) => got.push(env.offset));
  sockets[0].receive(biz(1));
  sockets[0].receive(biz(2));
  assert.deepEqual(got, [1, 2], "the position follows what the URL asked (since=0)");
});

test("client: RECONNECT waits delayMs after the 1012 close, without counting an attempt", async () => {
  const { c, seen, states } = await streaming();
  sockets[0].receive(biz(3));
  const t0 = Date.now();
  sockets[0].receive({ msgType: 5, from: "system", resultMsg: "bridge draining", msg: { delayMs: 80 } });
  sockets[0].serverClose(1012, "service restart");
  await tick(30);
  assert.equal(sockets.length, 1, "not before delayMs");
  assert.equal(states.at(-1), "reconnecting:1012");
  await until(() => sockets.length === 2);
  assert.equal(sockets.length, 2);
  assert.ok(Date.now() - t0 >= 80);
  assert.equal(sockets[1].query("since"), "3");
  assert.deepEqual(seen.reconnects, [80]);
  sockets[1].open("c", { offset: 3, epoch: E, boffset: 0, bepoch: "B", recovered: true });
  assert.equal(c.state, "connected");
  assert.deepEqual(seen.errors, []);
});

test("client: RECONNECT without a close: the client closes and reconnects at delayMs", async () => {
  const captured = [];
  const { seen } = await streaming();
  sockets[0].receive({ msgType: 5, resultMsg: "draining", msg: { delayMs: 30 } });
  const first = sockets[0];
  assert.equal(first.readyState, 1);
  await until(() => sockets.length === 2);
  assert.equal(first.readyState, 3, "the client closed the draining session");
  assert.equal(sockets.length, 2);
  assert.deepEqual(seen.reconnects, [30]);
  captured.push(sockets[1].query("since"));
  assert.deepEqual(captured, ["0"]);
});

test("client: 4006 (unacknowledged) reconnects and recovers from the position", async () => {
  const { states } = await streaming({ ack: "manual" });
  sockets[0].receive(biz(1));
  sockets[0].receive(biz(2));
  sockets[0].serverClose(4006, "unacknowledged messages");
  await until(() => sockets.length === 2);
  assert.equal(sockets.length, 2);
  assert.equal(sockets[1].query("since"), "2");
  assert.equal(sockets[1].query("ack"), "1");
  assert.ok(states.includes("reconnecting:4006"));
});

test("client: ack:true sends ack=1 and acks after the message listeners, duplicates again", async () => {
  const whenHandled = [];
  const made = client({ ack: true });
  made.c.on("message", () => whenHandled.push(sockets[0].sent.length));
  made.c.connect().catch(() => {});
  await tick();
  assert.equal(sockets[0].query("ack"), "1");
  sockets[0].open("c", { offset: 0, epoch: E, boffset: 0, bepoch: "B" });
  sockets[0].receive(biz(1));
  sockets[0].receive(biz(2));
  sockets[0].receive(biz(2)); // resent: our ack was lost
  sockets[0].receive({ msgType: 1, messageId: "u", msg: {}, offset: null });
  assert.deepEqual(whenHandled, [0, 1, 3], "each ack goes after its listeners ran");
  assert.deepEqual(sockets[0].sent.map((e) => [e.msgType, e.messageId]), [[2, "m1"], [2, "m2"], [2, "m2"], [2, "u"]]);
});

test("client: ack:'manual' acks only what the app acked, and re-acks a resent acked message", async () => {
  const { c } = await streaming({ ack: "manual" });
  assert.equal(sockets[0].query("ack"), "1");
  sockets[0].receive(biz(1));
  sockets[0].receive(biz(2));
  assert.deepEqual(sockets[0].sent, []);
  c.ack("m1");
  sockets[0].receive(biz(1)); // resent although acked: ack again
  sockets[0].receive(biz(2)); // resent, not acked yet by the app: still not
  assert.deepEqual(sockets[0].sent.map((e) => e.messageId), ["m1", "m1"]);
  assert.throws(() => client({ ack: "yes" }), /ack must be/);
});

test("client: an ack made while disconnected goes out after the next CONNECTION", async () => {
  const { c } = await streaming({ ack: "manual" });
  sockets[0].receive(biz(1));
  sockets[0].serverClose(4006, "unacknowledged messages");
  c.ack("m1");
  await tick(20);
  assert.deepEqual(sockets[1].sent, [], "not before the CONNECTION");
  sockets[1].open("c", { offset: 1, epoch: E, boffset: 0, bepoch: "B", recovered: true });
  assert.deepEqual(sockets[1].sent, [{ msgType: 2, messageId: "m1" }]);
  sockets[1].receive(biz(1)); // a resend: acked again, it was acked
  assert.equal(sockets[1].sent.length, 2);
});

test("client: a server without streams: no recovery arguments, everything delivered", async () => {
  const { c, seen } = await streaming({}, {});
  sockets[0].receive({ msgType: 1, messageId: "a", msg: {} });
  sockets[0].receive({ msgType: 1, messageId: "a", msg: {} });
  sockets[0].serverClose(1006);
  await until(() => sockets.length === 2);
  assert.equal(sockets[1].url.search, "?channelId=c");
  assert.equal(seen.messages.length, 2);
  assert.deepEqual(c.position, { since: null, epoch: null, bsince: null, bepoch: null });
  assert.deepEqual(seen.positions, []);
});
