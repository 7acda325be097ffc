// Browser test of the JavaScript client (clients/js/cloudpush.mjs) in Debian's
// headless chromium. The page comes from the HTTP API's origin and imports
// /cloudpush.mjs. Driven by tests/integration/test_js_client.py through
// stdin/stdout: this script prints a question ("token?", "push 1 5?",
// "restart?", "restart-push 11 13 ID...?", "replace?") and waits for the line
// that answers it ("token <jwt>", "pushed", "restarted", "replaced").
//
// The checks of issue 13 (offsets, recovery with since/epoch across a bridge
// restart, a saved position, recovered:false, the console's offsets and
// gaps) run only against a server whose CONNECTION carries an "epoch"; an
// older server skips them and says "streams: skipped". The ack checks
// (resend of an unacknowledged message, 4006, recovery) run too when the
// driver says the bridge has acks (CLOUDPUSH_TEST_ACKS=1).
// Usage: node client.test.mjs restart|replaced API_URL BRIDGE_WS_URL CHANNEL_ID
// Exits 0 when every check passed, 1 otherwise (the failing check is printed).
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const [mode, apiUrl, bridgeUrl, channelId] = process.argv.slice(2);
if (!["restart", "replaced"].includes(mode) || !apiUrl || !bridgeUrl || !channelId) {
  console.error("usage: node client.test.mjs restart|replaced API_URL BRIDGE_WS_URL CHANNEL_ID");
  process.exit(2);
}
const TIMEOUT = 15000;

// Answers from the driver, by their first word; a question waits for its own
// answer even when others (token requests of reconnect attempts) interleave.
const waiting = new Map(); // word -> [resolve]
const early = new Map(); // word -> [line]
createInterface({ input: process.stdin }).on("line", (line) => {
  const word = line.split(" ")[0];
  const queue = waiting.get(word);
  if (queue && queue.length) queue.shift()(line);
  else early.set(word, [...(early.get(word) || []), line]);
});
function ask(question, answerWord) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no answer to " + question)), TIMEOUT);
    const done = (line) => { clearTimeout(timer); resolve(line.slice(answerWord.length + 1)); };
    const ready = early.get(answerWord);
    if (ready && ready.length) return done(ready.shift());
    waiting.set(answerWord, [...(waiting.get(answerWord) || []), done]);
    console.log(question);
  });
}

let tokenCalls = 0;
function check(cond, what) {
  if (!cond) throw new Error("check failed: " + what);
  console.log("ok - " + what);
}

// Issue 13, against a server that numbers the streams: the messages so far
// carry consecutive offsets; pushes made while the bridge is down are
// recovered after the restart (the page and the console), a console that
// does not recover marks the gap, a saved position resumes a new client,
// and a position of another epoch reports recovered:false.
async function streamChecks(page, consolePage, until, consoleConnected, consoleId) {
  const { offsets, epochs } = await page.evaluate(() => ({ offsets: seen.offsets, epochs: seen.epochs }));
  check(offsets.every((o, i) => Number.isInteger(o) && (i === 0 || o === offsets[i - 1] + 1)),
    "the messages (pushes and the echo) carried consecutive offsets: " + offsets);
  check(new Set(epochs).size === 1 && typeof epochs[0] === "string", "and one epoch: " + epochs[0]);

  // A second console page that does not recover: it must mark the gap.
  const plain = await browser.newPage();
  plain.on("pageerror", (e) => console.error("plain console page error: " + e.message));
  await plain.goto(consolePage.url(), { timeout: TIMEOUT });
  const plainId = "norecover-" + consoleId;
  await plain.fill("[data-testid=channel]", plainId);
  await plain.uncheck("[data-testid=recover]");
  await plain.click("[data-testid=connect]");
  await plain.waitForFunction(consoleConnected, plainId, { timeout: TIMEOUT });
  // A message before the restart gives it a position to miss from.
  await ask("push-to 100 100 " + plainId + "?", "pushed");
  await plain.waitForFunction(() => document.querySelector("[data-testid=position]").textContent.startsWith("channel 1"),
    null, { timeout: TIMEOUT });
  check(true, "the console shows the position it would resume from");

  const mark = await page.evaluate(() => seen.states.length);
  await ask("restart-push 11 13 " + consoleId + " " + plainId + "?", "restarted");
  await until((from) => seen.states.slice(from).some((s) => s.state === "connected") && seen.seqs.length >= 13, mark);
  await page.waitForTimeout(500); // a duplicate would come now
  const seqs = await page.evaluate(() => seen.seqs);
  check(JSON.stringify(seqs) === "[1,2,3,4,5,6,7,8,9,10,11,12,13]",
    "pushes made while the bridge was down were recovered, exactly once, in order: " + seqs);
  check(await page.evaluate(() => client.recovered) === true, "the reconnect reported recovered:true");
  check((await page.evaluate(() => seen.gaps)).length === 0, "no gap event");

  await consolePage.waitForFunction(() => document.querySelector("[data-testid=recovered]").textContent === "true",
    null, { timeout: TIMEOUT });
  await consolePage.waitForFunction(() => Array.from(document.querySelectorAll("[data-testid=log] li.t1"))
    .some((li) => li.textContent.includes("\"seq\": 13") && /offset \d+/.test(li.textContent)), null, { timeout: TIMEOUT });
  check(true, "the console recovered too (recovered: true) and shows each message's offset");
  await plain.waitForFunction(() => document.querySelector("[data-testid=gaps]").textContent !== "0"
    && document.querySelector("[data-testid=log] li.gap"), null, { timeout: TIMEOUT });
  const gap = await plain.textContent("[data-testid=log] li.gap");
  check(/GAP: offsets 2–4 of the channel stream missed/.test(gap), "the console without recovery marked the gap: "
    + gap.replace(/\s+/g, " "));
  await plain.close();

  // A saved position resumes a new client (a page reload keeps it in storage).
  const saved = await page.evaluate(() => { client.close(); return client.position; });
  const last = await page.evaluate(() => seen.offsets.at(-1));
  check(saved.since === last && saved.epoch === epochs[0], "the position is the last offset: " + JSON.stringify(saved));
  await ask("push 14 15?", "pushed");
  const resumed = await page.evaluate(async (position) => {
    const { CloudpushClient } = await import("/cloudpush.mjs");
    const got = [];
    const again = new CloudpushClient(window.bridgeUrl, { channelId: client.channelId,
      getToken: () => window.testGetToken(), position });
    again.on("message", (env) => got.push(env.msg.seq));
    const connection = await again.connect();
    await new Promise((r) => setTimeout(r, 1500));
    again.close();
    return { recovered: connection.recovered, got };
  }, saved);
  check(resumed.recovered === true && JSON.stringify(resumed.got) === "[14,15]",
    "a new client given the saved position got what it missed: " + JSON.stringify(resumed));

  const otherEpoch = await page.evaluate(async (position) => {
    const { CloudpushClient } = await import("/cloudpush.mjs");
    const again = new CloudpushClient(window.bridgeUrl, { channelId: client.channelId,
      getToken: () => window.testGetToken(), position });
    let flag = null;
    again.on("recovered", (r) => { flag = r.recovered; });
    await again.connect();
    again.close();
    return flag;
  }, { since: saved.since, epoch: "not-the-epoch" });
  check(otherEpoch === false, "a position of another epoch reports recovered:false");
}

// Acks with retransmit (ack=1), with the bridge's default --ack-timeout and
// --ack-retries: a message the app does not confirm comes again (same
// messageId and offset: a duplicate for the client), then the session is
// closed with 4006, the client reconnects and recovers, and the message the
// app confirmed meanwhile is confirmed again. A client with ack: true gets
// no resend.
async function ackChecks(page, until) {
  const LONG = 45000;
  await page.evaluate(() => {
    const seen = (window.ackSeen = { messages: [], dups: [], states: [], recovered: [] });
    const a = (window.acker = new window.CloudpushClientClass(window.bridgeUrl, {
      channelId: client.channelId, getToken: () => window.testGetToken(), ack: "manual",
      position: client.position, minDelay: 100, maxDelay: 500,
    }));
    a.on("message", (env) => seen.messages.push({ id: env.messageId, offset: env.offset, seq: env.msg.seq }));
    a.on("duplicate", (env) => seen.dups.push({ id: env.messageId, offset: env.offset }));
    a.on("state", (st) => seen.states.push(st));
    a.on("recovered", (r) => seen.recovered.push(r.recovered));
    return a.connect();
  });
  check(await page.evaluate(() => acker.state) === "connected", "a client with ack: \"manual\" connected (ack=1)");
  await ask("push 16 16?", "pushed");
  await until(() => ackSeen.messages.some((m) => m.seq === 16));
  const first = await page.evaluate(() => ackSeen.messages.find((m) => m.seq === 16));
  await page.waitForFunction((id) => ackSeen.dups.some((d) => d.id === id), first.id, { timeout: LONG });
  const dup = await page.evaluate((id) => ackSeen.dups.find((d) => d.id === id), first.id);
  check(dup.offset === first.offset, "an unacknowledged message was resent with its messageId and offset " + dup.offset);
  await page.waitForFunction(() => ackSeen.states.some((st) => st.code === 4006), null, { timeout: LONG });
  const closed = await page.evaluate(() => ackSeen.states.find((st) => st.code === 4006));
  check(closed.state === "reconnecting", "after the retries the session was closed with 4006 (" + closed.reason + "), and the client reconnects");
  // The reconnect may be over before this line runs (minDelay 100 ms, a
  // slow test loop): look for "connected" after the 4006, not after the ack.
  const mark = await page.evaluate((id) => {
    acker.ack(id);
    return ackSeen.states.findIndex((st) => st.code === 4006) + 1;
  }, first.id);
  await page.waitForFunction((from) => ackSeen.states.slice(from).some((st) => st.state === "connected"), mark, { timeout: LONG });
  check(await page.evaluate(() => ackSeen.messages.filter((m) => m.seq === 16).length) === 1,
    "the message reached the app once, through resends and the recovery");
  await page.evaluate(() => acker.close());

  await page.evaluate(() => {
    const seen = (window.autoSeen = { messages: 0, dups: 0 });
    const a = (window.autoAcker = new window.CloudpushClientClass(window.bridgeUrl, {
      channelId: client.channelId, getToken: () => window.testGetToken(), ack: true, position: acker.position,
    }));
    a.on("message", () => seen.messages++);
    a.on("duplicate", () => seen.dups++);
    return a.connect();
  });
  await ask("push 17 17?", "pushed");
  await until(() => autoSeen.messages >= 1);
  await page.waitForTimeout(8000); // past the default --ack-timeout (5 s)
  check(await page.evaluate(() => autoSeen.dups) === 0, "ack: true confirmed it: no resend");
  await page.evaluate(() => autoAcker.close());
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let failed = false;
try {
  const page = await browser.newPage();
  page.on("pageerror", (e) => console.error("page error: " + e.message));
  await page.exposeFunction("testGetToken", async () => { tokenCalls++; return ask("token?", "token"); });
  await page.goto(apiUrl, { timeout: TIMEOUT });
  const until = (fn, arg) => page.waitForFunction(fn, arg, { timeout: TIMEOUT });

  // The client records what it sees in window.seen.
  const connection = await page.evaluate(async ({ url, id }) => {
    const { CloudpushClient } = await import("/cloudpush.mjs");
    window.bridgeUrl = url;
    window.CloudpushClientClass = CloudpushClient;
    const seen = (window.seen = { states: [], seqs: [], offsets: [], epochs: [], echoes: 0, refreshed: 0, errors: [],
      gaps: [], dups: 0, recovered: [] });
    const client = (window.client = new CloudpushClient(url, {
      channelId: id, getToken: () => window.testGetToken(),
      minDelay: 200, maxDelay: 2000, heartbeatInterval: 1000, refreshBefore: 6000,
    }));
    client.on("state", (s) => seen.states.push(s));
    client.on("message", (env) => {
      if (typeof env.msg.seq === "number") seen.seqs.push(env.msg.seq);
      if (!env.broadcast) { seen.offsets.push(env.offset); seen.epochs.push(env.epoch); }
      if (env.msg.echo) seen.echoes++;
    });
    client.on("gap", (g) => seen.gaps.push(g));
    client.on("duplicate", () => seen.dups++);
    client.on("recovered", (r) => seen.recovered.push(r.recovered));
    client.on("heartbeat", (env) => { if (env.resultMsg === "token refreshed") seen.refreshed++; });
    client.on("error", (e) => seen.errors.push(e.message));
    return client.connect();
  }, { url: bridgeUrl, id: channelId });
  check(connection.msgType === 0 && connection.sessionId.includes("_" + channelId + "_"),
    "connected: CONNECTION " + connection.sessionId);
  check(tokenCalls === 1, "getToken was called for the connection");
  const streams = typeof connection.epoch === "string";
  console.log("streams: " + (streams ? "on, epoch " + connection.epoch + " offset " + connection.offset
    : "skipped (the CONNECTION carries no epoch)"));

  if (mode === "replaced") {
    await ask("replace?", "replaced");
    await until(() => seen.states.some((s) => s.state === "closed"));
    await page.waitForTimeout(3000); // time for a reconnect that must not come
    const states = await page.evaluate(() => seen.states);
    const closed = states.findIndex((s) => s.state === "closed");
    check(states[closed].code === 4003, "closed with 4003: " + states[closed].reason);
    check(closed === states.length - 1, "no state after closed: " + JSON.stringify(states.slice(closed)));
    check(!states.some((s) => s.state === "reconnecting"), "no reconnect attempt");
    check(tokenCalls === 1, "getToken was not called again");
  } else {
    await ask("push 1 5?", "pushed");
    await until(() => seen.seqs.length >= 5);
    check(JSON.stringify(await page.evaluate(() => seen.seqs)) === "[1,2,3,4,5]", "pushes 1-5 arrived in order");

    const ack = await page.evaluate(() => client.send(client.channelId, { echo: 1 }, { messageId: "self-1" }));
    check(ack.msgType === 2 && ack.messageId === "self-1", "send() to itself resolved with its BUSINESS_ACK");
    await until(() => seen.echoes === 1);
    check(true, "the message sent to itself arrived");
    const refused = await page.evaluate(() => client.send(["not a valid id!"], { x: 1 }).then(
      () => "resolved", (e) => e.name + ": " + e.message));
    check(refused.startsWith("SendError: invalid channel id in to"), "send() to an invalid id rejected: " + refused);

    // Tokens live 8 s and are refreshed 6 s before exp: a heartbeat carries one.
    await until(() => seen.refreshed >= 1);
    check(tokenCalls >= 2, "a heartbeat carried a fresh token (getToken calls: " + tokenCalls + ")");

    // The demo console (its WebSocket side is this client) shows the restart.
    const consolePage = await browser.newPage();
    consolePage.on("pageerror", (e) => console.error("console page error: " + e.message));
    await consolePage.goto(apiUrl, { timeout: TIMEOUT });
    const consoleId = "console-" + channelId;
    await consolePage.fill("[data-testid=channel]", consoleId);
    await consolePage.click("[data-testid=connect]");
    const consoleConnected = (want) => document.querySelector("[data-testid=state]").textContent === "connected as " + want;
    await consolePage.waitForFunction(consoleConnected, consoleId, { timeout: TIMEOUT });

    const mark = await page.evaluate(() => seen.states.length);
    const callsBefore = tokenCalls;
    await ask("restart?", "restarted");
    await until((from) => {
      const after = seen.states.slice(from);
      const retry = after.findIndex((s) => s.state === "reconnecting" && s.attempt >= 1);
      return retry >= 0 && after.slice(retry).some((s) => s.state === "connected");
    }, mark);
    const after = await page.evaluate((from) => seen.states.slice(from), mark);
    console.log("states: " + after.map((s) => s.state + (s.attempt ? "#" + s.attempt : "")
      + (s.delay !== undefined ? "(" + s.delay + "ms)" : "") + (s.code ? "[" + s.code + "]" : "")).join(" "));
    // 1001 from a bridge that just stops; a draining one (issue 13) sends
    // RECONNECT first, and the client reconnects when it asks.
    const drained = after[0].drain === true;
    check(after[0].state === "reconnecting" && ([1001, 1012].includes(after[0].code) || drained),
      "the restart closed with 1001 (or a RECONNECT), then reconnecting");
    check(tokenCalls > callsBefore, "getToken was called again for the reconnect");
    const retries = after.filter((s) => s.state === "reconnecting" && !s.drain);
    // After a RECONNECT the client may come back after the bridge did: no
    // failed attempt is needed then.
    check(retries.length >= (drained ? 0 : 2) && retries.every((s, i) => s.attempt === i + 1
      && s.delay >= 0 && s.delay <= Math.min(2000, 200 * 2 ** i)),
    "attempts failed while the bridge was down, with growing capped delays");
    check(!after.some((s) => s.state === "closed"), "never closed");

    await consolePage.waitForFunction(
      () => Array.from(document.querySelectorAll("[data-testid=log] li")).some((li) => /connection lost \((1001|1012|1000)/.test(li.textContent)),
      null, { timeout: TIMEOUT });
    await consolePage.waitForFunction(consoleConnected, consoleId, { timeout: TIMEOUT });
    const lost = await consolePage.textContent("[data-testid=log] li.t-1");
    check(/attempt \d+ in \d+ ms|the server asked to reconnect/.test(lost), "the console logged the lost connection and reconnected: " + lost.replace(/\s+/g, " "));

    await ask("push 6 10?", "pushed");
    await until(() => seen.seqs.length >= 10);
    await page.waitForTimeout(500); // a duplicate would come now
    const seqs = await page.evaluate(() => seen.seqs);
    check(JSON.stringify(seqs) === "[1,2,3,4,5,6,7,8,9,10]", "every push arrived exactly once, in order: " + seqs);
    check((await page.evaluate(() => seen.errors)).length === 0, "no error events");
    if (streams) await streamChecks(page, consolePage, until, consoleConnected, consoleId);
    if (streams && process.env.CLOUDPUSH_TEST_ACKS === "1") await ackChecks(page, until);
    else console.log("acks: skipped");
    await page.evaluate(() => client.close());
    check(await page.evaluate(() => client.state) === "closed", "close() ends in state closed");
  }
  console.log("done");
} catch (e) {
  failed = true;
  console.error(e.message);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
