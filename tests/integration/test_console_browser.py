"""The demo console in Debian's headless chromium, driven by playwright-core
(tests/browser/console.test.mjs): two pages connect as different ids; an HTTP
push sent from page A's form shows up in page B; a WebSocket message from B
shows up in A; received markup is shown as text; "recover on reconnect" is on
by default. Against a server whose CONNECTION carries an "epoch" (issue 13;
the stack has a Redis for the history) each message shows its offset, for
the channel and the broadcast stream. The screenshot is kept in the build
tree (CLOUDPUSH_ARTIFACT_DIR)."""

import os
import shutil
import subprocess
import unittest

import harness as h

BROWSER_DIR = os.path.join(h.REPO, "tests", "browser")


class ConsoleBrowserTest(h.IntegrationTest):

    def run_pages(self, bridge_args=(), api_args=()):
        node = shutil.which("node")
        self.assertIsNotNone(node, "node is required (scripts/install-deps.sh installs it)")
        self.assertTrue(os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")),
                        "run 'npm ci' in tests/browser (scripts/test.sh does)")
        self.assertTrue(os.access("/usr/bin/chromium", os.X_OK), "Debian chromium is required")
        mosq = self.start_mosquitto()
        redis = self.start_redis()
        bridge = self.start_bridge(mosq, bridge_id="webbridge", args=list(bridge_args), redis=redis)
        api = self.start_httpapi(mosq, bridges=[bridge], args=list(api_args), redis=redis)
        artifacts = os.environ.get("CLOUDPUSH_ARTIFACT_DIR", self.dir)
        os.makedirs(artifacts, exist_ok=True)
        shot = os.path.join(artifacts, "console%s.png" % ("-dev" if api_args else ""))
        if os.path.exists(shot):
            os.remove(shot)
        out = subprocess.run([node, "console.test.mjs", "http://127.0.0.1:%d/" % api.port, shot],
                             cwd=BROWSER_DIR, capture_output=True, text=True, timeout=h.t(90))
        print(out.stdout)
        self.assertEqual(out.returncode, 0, "browser test failed:\n%s\n%s" % (out.stdout,
                                                                              out.stderr))
        self.assertIn("ok - page B received the HTTP push", out.stdout)
        self.assertIn("ok - page A received B's WebSocket message", out.stdout)
        self.assertIn("ok - \"recover on reconnect\" is on by default", out.stdout)
        if "streams: on" in out.stdout:
            self.assertIn("ok - page B shows the push's offset 1", out.stdout)
            self.assertIn("ok - it shows its broadcast offset", out.stdout)
        self.assertGreater(os.path.getsize(shot), 10000, "screenshot missing or empty")
        # Both pages really went through the bridge.
        self.assertGreaterEqual(bridge.metric("cloudpush_bridge_connections_accepted_total"), 2)
        return out.stdout, bridge

    def test_two_pages_push_to_each_other(self):
        stdout, _ = self.run_pages()
        self.assertIn("dev banner: hidden", stdout)

    def test_dev_mode_pages_get_tokens_and_say_so(self):
        secret = "dev-secret-for-the-console-0123456789"
        stdout, bridge = self.run_pages(bridge_args=["--jwt-secret", secret],
                                        api_args=["--dev-token-secret", secret])
        self.assertIn("dev banner: visible", stdout)
        # Without a token the same bridge refuses: the pages really used theirs.
        st, _, _ = h.http_request(bridge.port, "GET", "/ws?channelId=x", headers={
            "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
        self.assertEqual(st, 401)


if __name__ == "__main__":
    unittest.main()
