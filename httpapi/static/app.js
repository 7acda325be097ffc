// cloudpush demo console. Its WebSocket side is the JavaScript client
// (clients/js/cloudpush.mjs, served next to this file). Everything received is
// shown with textContent, never parsed as HTML. It shows the stream side of
// the protocol (issue 13): each message's offset, the position it would
// resume from, recovery on reconnect and its result, gaps and duplicates.
import { CloudpushClient } from "./cloudpush.mjs";

const TYPES = {
  "-1": "ERROR", 0: "CONNECTION", 1: "BUSINESS", 2: "BUSINESS_ACK", 3: "HEARTBEAT", 4: "HEARTBEAT_ACK", 5: "RECONNECT",
};
const HEARTBEAT_MS = 10000;
const $ = (id) => document.getElementById(id);

let client = null;
let received = 0;
let gaps = 0;
let dups = 0;
let apiConfig = { bridges: [], balancer: null, authRequired: false };

function randomId() {
  const a = new Uint8Array(4);
  crypto.getRandomValues(a);
  return "web-" + Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
}

function messageId() {
  const a = new Uint8Array(16);
  crypto.getRandomValues(a);
  return Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
}

function setState(state, text) {
  const el = $("state");
  el.className = "state " + state;
  el.textContent = text || state;
  const open = state === "connected";
  const trying = state === "connecting" || state === "reconnecting";
  $("connect").disabled = open || trying;
  $("disconnect").disabled = !(open || trying);
  $("ws-send").disabled = !open;
}

function addEntry(kind, label, body, note) {
  const li = document.createElement("li");
  li.className = kind;
  const head = document.createElement("div");
  head.className = "head";
  const type = document.createElement("span");
  type.className = "type";
  type.textContent = label;
  if (note) {
    const extra = document.createElement("span");
    extra.className = "offset";
    extra.textContent = note;
    type.append(extra);
  }
  const time = document.createElement("span");
  time.textContent = new Date().toLocaleTimeString();
  head.append(type, time);
  const pre = document.createElement("pre");
  pre.textContent = body;
  li.append(head, pre);
  $("log").prepend(li);
  received++;
  $("count").textContent = String(received);
}

// Where a message sits in its stream: "offset 5", "broadcast offset 2",
// "offset null (not stored)", or nothing from a server without streams.
function offsetNote(env) {
  if (!("offset" in env)) return "";
  const where = env.broadcast ? "broadcast offset " : "offset ";
  return env.offset === null ? where + "null (not stored)" : where + env.offset;
}

function envelopeLabel(env) {
  const name = TYPES[env.msgType] || "msgType " + env.msgType;
  return name + (env.from ? " from " + env.from : "");
}

// BUSINESS envelopes are logged by onMessage / onDuplicate (after the
// client's dedupe), everything else here.
function onEnvelope(env) {
  if (env.msgType === 1) return;
  if (env.msgType === 4 && !$("show-acks").checked) return;
  if (env.msgType === -1 && typeof env.resultMsg === "string" && env.resultMsg.startsWith("gap:")) return; // onGap
  addEntry("t" + env.msgType, envelopeLabel(env), JSON.stringify(env, null, 2));
}

function onMessage(env) {
  addEntry("t1", envelopeLabel(env), JSON.stringify(env, null, 2), offsetNote(env));
}

function onDuplicate(env) {
  dups++;
  $("dups").textContent = String(dups);
  addEntry("dup", "duplicate dropped", JSON.stringify(env, null, 2), offsetNote(env));
}

function onGap(g) {
  gaps++;
  $("gaps").textContent = String(gaps);
  $("gaps").className = "bad";
  const range = g.from === null ? "unknown offsets" : g.from === g.to ? "offset " + g.from : "offsets " + g.from + "–" + g.to;
  const why = {
    offset: "a message came after a hole",
    reconnect: "reconnected without recovery",
    epoch: "the stream's history was lost (new epoch)",
    server: "the server could not deliver them",
  }[g.reason] || g.reason;
  addEntry("gap", "GAP: " + range + " of the " + g.stream + " stream missed", why
    + (g.message ? "\n" + g.message : "") + (g.epoch ? "\nepoch " + g.epoch : ""));
}

function onRecovered(r) {
  const el = $("recovered");
  el.textContent = String(r.recovered);
  el.className = r.recovered ? "" : "bad";
  addEntry("local recovered-" + r.recovered, "recovered: " + r.recovered,
    r.recovered ? "every message published while away follows" : "messages were missed: history gone or epoch changed");
}

function showPosition(p) {
  const part = (since, epoch) => (since === null ? "–" : since + (epoch ? " @" + epoch : ""));
  $("position").textContent = "channel " + part(p.since, p.epoch) + " · broadcast " + part(p.bsince, p.bepoch);
}

function resuming() {
  return client && client.recover && client.position.since !== null ? ", recovering from the position" : "";
}

// The client's state events: the header shows where it is, the log keeps
// why each connection ended and how the reconnects went.
function onState(s, id) {
  const why = s.code ? " (" + s.code + (s.reason ? " " + s.reason : "") + ")" : "";
  if (s.state === "connected") {
    setState("connected", "connected as " + id);
  } else if (s.state === "connecting") {
    setState("connecting", s.attempt ? "connecting, attempt " + s.attempt : "connecting");
  } else if (s.state === "reconnecting" && s.drain) {
    setState("reconnecting", "reconnecting as the server asked, in " + (s.delay / 1000).toFixed(1) + " s");
    addEntry("t-1 local", "connection lost" + why, "the server asked to reconnect: in " + s.delay + " ms"
      + resuming());
  } else if (s.state === "reconnecting") {
    setState("reconnecting", "reconnecting, attempt " + s.attempt + " in " + (s.delay / 1000).toFixed(1) + " s");
    addEntry("t-1 local", "connection lost" + why, "attempt " + s.attempt + " in " + s.delay + " ms"
      + resuming());
  } else if (s.state === "closed") {
    setState("disconnected", "disconnected" + why);
    addEntry("t-1 local", "closed", s.code ? "code " + s.code + (s.reason ? ": " + s.reason : "") : "");
    $("session").textContent = "–";
    client = null;
  }
}

// In development mode the API mints a token for the chosen id; the bridges
// (and the balancer) then check it like any other. The client asks again
// before each reconnect and when the token is about to expire.
async function devToken(id) {
  const r = await fetch("/api/v1/dev/token?channelId=" + encodeURIComponent(id), { method: "POST" });
  if (!r.ok) throw new Error("token request failed: " + r.status);
  return (await r.json()).token;
}

function connect(ev) {
  ev.preventDefault();
  const id = $("channel").value.trim();
  if (!/^[A-Za-z0-9._:@-]{1,128}$/.test(id)) {
    addEntry("t-1 local", "invalid channelId", "1-128 characters of A-Z a-z 0-9 . _ : @ -");
    return;
  }
  $("session").textContent = "–";
  $("position").textContent = "–";
  $("recovered").textContent = "–";
  $("recovered").className = "";
  client = new CloudpushClient($("endpoint").value, {
    channelId: id,
    getToken: apiConfig.devTokens ? () => devToken(id) : null,
    heartbeatInterval: HEARTBEAT_MS,
    maxDelay: 5000, // a console should come back soon after its bridge does
    recover: $("recover").checked,
    ack: $("ack").checked,
  });
  client.on("envelope", onEnvelope);
  client.on("message", onMessage);
  client.on("duplicate", onDuplicate);
  client.on("gap", onGap);
  client.on("recovered", onRecovered);
  client.on("position", showPosition);
  client.on("reconnect", (r) => addEntry("t5 local", "server asked to reconnect in " + r.delayMs + " ms", r.reason));
  client.on("state", (s) => onState(s, id));
  client.on("connection", (env) => { $("session").textContent = env.sessionId || "–"; });
  client.on("error", (e) => { if (!e.envelope) addEntry("t-1 local", "client error", e.message); });
  client.connect().catch(() => { /* shown by the state event */ });
}

function disconnect() {
  if (client) client.close(1000, "bye");
}

function ids(text) {
  return text.split(",").map((s) => s.trim()).filter(Boolean);
}

function parseMsg(id) {
  try {
    const v = JSON.parse($(id).value);
    if (v && typeof v === "object" && !Array.isArray(v)) return v;
  } catch (e) { /* fall through */ }
  return null;
}

function sendWs(ev) {
  ev.preventDefault();
  const msg = parseMsg("ws-msg");
  if (!msg) {
    addEntry("t-1 local", "not sent", "msg must be a JSON object");
    return;
  }
  const env = { msgType: 1, to: ids($("ws-to").value), msg, messageId: messageId() };
  // The BUSINESS_ACK or ERROR shows up in the log as an envelope; only
  // failures without one (timeout, disconnect) are added here.
  client.send(env.to, msg, { messageId: env.messageId })
    .catch((e) => { if (!e.envelope) addEntry("t-1 local", "not acknowledged", e.message); });
  addEntry("local", "sent BUSINESS", JSON.stringify(env, null, 2));
}

async function sendHttp(ev) {
  ev.preventDefault();
  const out = $("http-result");
  const msg = parseMsg("http-msg");
  if (!msg) {
    out.className = "result bad";
    out.textContent = "msg must be a JSON object";
    return;
  }
  const body = $("http-all").checked ? { sendToAll: true, msg } : { to: ids($("http-to").value), msg };
  const headers = { "Content-Type": "application/json" };
  if ($("http-key").value) headers.Authorization = "Bearer " + $("http-key").value;
  out.className = "result";
  out.textContent = "sending…";
  try {
    const r = await fetch("/api/v1/push", { method: "POST", headers, body: JSON.stringify(body) });
    const text = await r.text();
    out.className = r.ok ? "result" : "result bad";
    out.textContent = r.status + " " + text;
  } catch (e) {
    out.className = "result bad";
    out.textContent = String(e);
  }
}

function fillEndpoints() {
  const sel = $("endpoint");
  sel.textContent = "";
  const add = (url, label) => {
    const o = document.createElement("option");
    o.value = url;
    o.textContent = label + "  " + url;
    sel.append(o);
  };
  if (apiConfig.balancer) add(apiConfig.balancer, "balancer");
  apiConfig.bridges.forEach((u, i) => add(u, "bridge " + (i + 1)));
  if (!sel.options.length) add("ws://" + location.hostname + ":9001/ws", "bridge");
  $("key-label").hidden = !apiConfig.authRequired;
  $("dev-banner").hidden = !apiConfig.devTokens;
}

async function init() {
  $("channel").value = randomId();
  $("new-id").onclick = () => { $("channel").value = randomId(); };
  $("connect-form").onsubmit = connect;
  $("disconnect").onclick = disconnect;
  $("ws-form").onsubmit = sendWs;
  $("http-form").onsubmit = sendHttp;
  $("http-all").onchange = () => { $("http-to").disabled = $("http-all").checked; };
  $("clear").onclick = () => { $("log").textContent = ""; received = 0; $("count").textContent = "0"; };
  // Takes effect at the next reconnect of the current client too.
  $("recover").onchange = () => { if (client) client.recover = $("recover").checked; };
  setState("disconnected");
  try {
    const r = await fetch("/api/v1/config");
    if (r.ok) apiConfig = await r.json();
  } catch (e) { /* offline defaults */ }
  fillEndpoints();
}

init();
