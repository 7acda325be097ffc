// A Node.js service pushing to one client over the bus, and reading the
// client's receipt (its BUSINESS_ACK) from cloudpush/ack/#.
//
//   cd examples/node && npm ci && node publish.mjs alice '{"hello":"from node"}'
//
// Uses the `mqtt` package. The broker is CLOUDPUSH_MQTT_URL
// (mqtt://127.0.0.1:11883, the local stack of scripts/run-stack.sh), with
// CLOUDPUSH_MQTT_USER / CLOUDPUSH_MQTT_PASSWORD when it needs a login. Exits
// 0 once the receipt came, 1 when none came within CLOUDPUSH_RECEIPT_TIMEOUT
// seconds (10).
import { randomBytes } from "node:crypto";
import mqtt from "mqtt";

const url = process.env.CLOUDPUSH_MQTT_URL || "mqtt://127.0.0.1:11883";
const prefix = process.env.CLOUDPUSH_PREFIX || "cloudpush";
const timeoutS = Number(process.env.CLOUDPUSH_RECEIPT_TIMEOUT || 10);
const to = process.argv[2] || "alice";
const msg = process.argv[3] ? JSON.parse(process.argv[3]) : { hello: "from node" };

// Our own messageId: the client's receipt carries it back.
const messageId = randomBytes(16).toString("hex");
const client = mqtt.connect(url, {
  clientId: "example-publisher-" + messageId.slice(0, 8),
  clean: true,
  username: process.env.CLOUDPUSH_MQTT_USER,
  password: process.env.CLOUDPUSH_MQTT_PASSWORD,
  reconnectPeriod: 0,
});

const timer = setTimeout(() => {
  console.error(`no receipt for ${messageId} within ${timeoutS} s (is ${to} connected and acknowledging?)`);
  client.end(true);
  process.exit(1);
}, timeoutS * 1000);

let done = false;
client.on("error", (err) => {
  if (done) return; // closing after the receipt
  console.error("broker: " + err.message);
  process.exit(1);
});

client.on("message", (topic, payload) => {
  const receipt = JSON.parse(payload.toString());
  if (receipt.messageId !== messageId) return;
  console.log(`receipt ${receipt.messageId} from ${receipt.from} (session ${receipt.sessionId})`);
  done = true;
  clearTimeout(timer);
  client.end(false, {}, () => process.exit(0));
});

client.on("connect", async () => {
  // Receipts first, so none can be missed; then the push (QoS 1: the broker has it once this resolves).
  await client.subscribeAsync(`${prefix}/ack/#`, { qos: 1 });
  const envelope = { messageId, from: "billing", msg };
  await client.publishAsync(`${prefix}/client/${to}`, JSON.stringify(envelope), { qos: 1 });
  console.log(`pushed ${messageId} to ${to}`);
});
