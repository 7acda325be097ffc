// Browser test of the demo console: two pages in Debian's headless chromium.
// Against a server that numbers the streams (issue 13: the CONNECTION
// carries an epoch, so the page shows a position) it also checks that each
// message shows its offset, for the channel and the broadcast stream; an
// older server skips that and says "streams: skipped".
// Usage: node console.test.mjs CONSOLE_URL SCREENSHOT_PATH
// Exits 0 when every check passed, 1 otherwise (the failing check is printed).
import { chromium } from "playwright-core";

const [consoleUrl, screenshot] = process.argv.slice(2);
if (!consoleUrl || !screenshot) {
  console.error("usage: node console.test.mjs CONSOLE_URL SCREENSHOT_PATH");
  process.exit(2);
}
const TIMEOUT = 10000;
const suffix = Math.random().toString(16).slice(2, 8);
const idA = "page-a-" + suffix;
const idB = "page-b-" + suffix;

function check(cond, what) {
  if (!cond) throw new Error("check failed: " + what);
  console.log("ok - " + what);
}

async function open(browser, id) {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  page.on("pageerror", (e) => console.error(`[${id}] page error: ${e.message}`));
  await page.goto(consoleUrl, { timeout: TIMEOUT });
  await page.fill("[data-testid=channel]", id);
  await page.click("[data-testid=connect]");
  await page.waitForFunction(
    (want) => document.querySelector("[data-testid=state]").textContent === "connected as " + want,
    id, { timeout: TIMEOUT });
  await page.waitForFunction(
    () => document.querySelector("[data-testid=session]").textContent.includes("_"),
    null, { timeout: TIMEOUT });
  return page;
}

async function logHas(page, text) {
  await page.waitForFunction(
    (t) => Array.from(document.querySelectorAll("[data-testid=log] li")).some((li) => li.textContent.includes(t)),
    text, { timeout: TIMEOUT });
  return true;
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let failed = false;
try {
  const a = await open(browser, idA);
  const b = await open(browser, idB);
  const banner = await a.isVisible("[data-testid=dev-banner]");
  console.log("dev banner: " + (banner ? "visible" : "hidden"));
  const sessionA = await a.textContent("[data-testid=session]");
  check(sessionA.includes("_" + idA + "_"), "page A shows its sessionId " + sessionA);
  check(await logHas(a, "CONNECTION"), "page A lists its CONNECTION envelope");
  check(await a.isChecked("[data-testid=recover]"), "\"recover on reconnect\" is on by default");
  const position = await a.textContent("[data-testid=position]");
  const streams = position !== "–";
  console.log("streams: " + (streams ? "on, position " + position : "skipped (the CONNECTION carries no epoch)"));

  // HTTP push from page A's form reaches page B.
  await a.fill("[data-testid=http-to]", idB);
  await a.fill("[data-testid=http-msg]", JSON.stringify({ text: "http from A " + suffix }));
  await a.click("[data-testid=http-send]");
  await a.waitForFunction(
    () => document.querySelector("[data-testid=http-result]").textContent.startsWith("200 "),
    null, { timeout: TIMEOUT });
  check(true, "page A's HTTP push answered 200");
  check(await logHas(b, "http from A " + suffix), "page B received the HTTP push");

  // A WebSocket business message from page B reaches page A.
  await b.fill("[data-testid=ws-to]", idA);
  await b.fill("[data-testid=ws-msg]", JSON.stringify({ text: "ws from B " + suffix }));
  await b.click("[data-testid=ws-send]");
  check(await logHas(a, "ws from B " + suffix), "page A received B's WebSocket message");
  check(await logHas(a, "BUSINESS from " + idB), "it is labelled as coming from B");
  check(await logHas(b, "BUSINESS_ACK"), "page B got the BUSINESS_ACK");

  // Received data is text, never HTML.
  const evil = "<img src=x onerror=\"window.__xss=1\">" + suffix;
  await b.fill("[data-testid=http-to]", idA);
  await b.fill("[data-testid=http-msg]", JSON.stringify({ html: evil }));
  await b.click("[data-testid=http-send]");
  check(await logHas(a, "onerror"), "page A shows the markup as text");
  check(await a.evaluate(() => window.__xss === undefined && !document.querySelector("[data-testid=log] img")),
    "the markup was not executed or rendered");

  if (streams) {
    // A stream with no history yet has no epoch (CONNECTION "epoch":""): none is shown.
    check(/^channel 0( @\S+)? · broadcast \d+( @\S+)?$/.test(position), "a new id starts at offset 0: " + position);
    const entry = async (page, text) => page.evaluate((t) => Array.from(document.querySelectorAll("[data-testid=log] li"))
      .find((li) => li.textContent.includes(t)).querySelector(".offset").textContent, text);
    check(await entry(b, "http from A " + suffix) === "offset 1", "page B shows the push's offset 1");
    check(await entry(a, "ws from B " + suffix) === "offset 1", "page A shows the WebSocket message's offset 1");
    await b.check("[data-testid=http-all]");
    await b.fill("[data-testid=http-msg]", JSON.stringify({ text: "to all " + suffix }));
    await b.click("[data-testid=http-send]");
    check(await logHas(a, "to all " + suffix), "page A received the broadcast");
    check(/^broadcast offset \d+$/.test(await entry(a, "to all " + suffix)), "it shows its broadcast offset");
    await a.waitForFunction(() => /broadcast \d+ @/.test(document.querySelector("[data-testid=position]").textContent)
      && document.querySelector("[data-testid=gaps]").textContent === "0", null, { timeout: TIMEOUT });
    check(true, "the position follows; no gap: " + await a.textContent("[data-testid=position]"));
  }

  await a.screenshot({ path: screenshot, fullPage: true });
  console.log("screenshot: " + screenshot);
} catch (e) {
  failed = true;
  console.error(e.message);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
