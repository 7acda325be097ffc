// The browser's own EventSource against a bridge's GET /sse, in Debian's
// headless chromium: the page (the bridge's /healthz, so the stream is
// same-origin) opens the stream and collects what arrives; the Python side
// (tests/integration/test_sse.py) pushes two messages once it sees the
// stream open. With SSE_BASE (a balancer's URL) the stream is opened there,
// cross-origin, and the balancer's 307 leads to a bridge.
// Usage: node sse.test.mjs BRIDGE_URL CHANNEL_ID [SSE_BASE]
// Exits 0 when every check passed, 1 otherwise (the failing check is printed).
import { chromium } from "playwright-core";

const [bridgeUrl, channelId, sseBase = ""] = process.argv.slice(2);
if (!bridgeUrl || !channelId) {
  console.error("usage: node sse.test.mjs BRIDGE_URL CHANNEL_ID");
  process.exit(2);
}
const TIMEOUT = 30000;

function check(cond, what) {
  if (!cond) throw new Error("check failed: " + what);
  console.log("ok - " + what);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let failed = false;
try {
  const page = await browser.newPage();
  page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
  page.on("console", (m) => console.log(`[page] ${m.text()}`));
  await page.goto(bridgeUrl + "/healthz", { timeout: TIMEOUT });
  await page.evaluate(([id, base]) => {
    window.received = [];
    window.opened = false;
    const es = new EventSource(base + "/sse?channelId=" + encodeURIComponent(id));
    es.onopen = () => { window.opened = true; };
    es.onmessage = (e) => window.received.push(JSON.parse(e.data));
    es.onerror = () => console.log("EventSource error, readyState " + es.readyState);
  }, [channelId, sseBase]);
  await page.waitForFunction(() => window.opened, null, { timeout: TIMEOUT });
  await page.waitForFunction(() => window.received.length >= 3, null, { timeout: TIMEOUT });
  const got = await page.evaluate(() => window.received);
  check(got[0].msgType === 0 && got[0].resultMsg === "connected, channelId=" + channelId,
    "EventSource got the CONNECTION first");
  check(got[1].msgType === 1 && got[1].msg.n === 0 && got[2].msg.n === 1,
    "EventSource got both pushes in order");
} catch (e) {
  console.log("not ok - " + e.message);
  failed = true;
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
