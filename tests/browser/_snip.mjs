
import { chromium } from "playwright-core";
const [api, bridge] = process.argv.slice(2);
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"] });
const page = await browser.newPage();
page.on("console", (m) => console.log("page:", m.text()));
page.on("pageerror", (e) => console.log("pageerror:", e.message));
await page.setContent(`<script type="module">
import { CloudpushClient } from "${api}/cloudpush.mjs";
const client = new CloudpushClient("${bridge}", { channelId: "alice" });
client.on("message", (env) => console.log("push", env.messageId, JSON.stringify(env.msg)));
client.on("state", (s) => console.log(s.state, s.attempt));
await client.connect();
window.ready = true;
</script>`);
await page.waitForFunction(() => window.ready, null, { timeout: 10000 });
console.log("ORIGIN", await page.evaluate(() => location.href));
console.log("READY");
await new Promise((r) => process.stdin.once("data", r));
await page.waitForTimeout(1000);
await browser.close();
