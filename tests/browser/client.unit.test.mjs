// Unit tests of clients/js/cloudpush.mjs in Node (node --test), with a
// scripted WebSocket: the decisions the browser test cannot provoke on
// demand (which close codes are retried, close() during getToken(), send
// timeouts, token refresh timing). The real protocol is covered by
// client.test.mjs against a real bridge.
import { afterEach, test } from "node:test";
import assert from "node:assert/strict";
import {
  CloudpushClient, backoffDelay, shouldReconnect, tokenExpiry,
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
  // what the server does
  open(id = "c") {
    this.readyState = 1;
    this.receive({ msgType: 0, from: "system", sessionId: "b_" + id + "_1-" + sockets.length });
  }
  receive(env) { this.onmessage({ data: JSON.stringify(env) }); }
  serverClose(code, reason = "") {
    if (this.readyState === 3) return;
    this.readyState = 3;
    if (this.onclose) this.onclose({ code, reason });
  }
}

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));
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
  await tick(20);
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
  await tick(70);
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
  await tick(30);
  assert.equal(sockets.length, 1);
  assert.deepEqual(errors, ["getToken failed: backend down", "getToken failed: backend down"]);
  assert.deepEqual(states.filter((s) => s.startsWith("reconnecting")).length, 2);

  const bad = new CloudpushClient("not a url", { channelId: "c", WebSocket: FakeSocket });
  const result = await bad.connect().then(() => "resolved", (e) => e.message);
  assert.match(result, /^closed: /);
  assert.equal(bad.state, "closed");
});
