"""The JavaScript client (clients/js/cloudpush.mjs) in Debian's headless
chromium, driven by playwright-core (tests/browser/client.test.mjs). The page
is loaded from the HTTP API, which serves the module at /cloudpush.mjs, and
connects to a bridge with client authentication: tokens are minted here, one
for every getToken() call the page makes.

The node script asks questions on stdout and this side answers on its stdin:
"token?" (a fresh token), "push A B?" (HTTP pushes of seq A..B), "push-to A B
ID?" (the same to another id), "restart?" (SIGTERM the bridge, start it again
on the same port), "restart-push A B ID...?" (the same with pushes of A..B to
the channel and the ids while the bridge is down), "replace?" (a second
session of the same channelId under --single-session). The client's decisions
are also unit-tested in Node (tests/browser/client.unit.test.mjs).

The stack has a Redis (the registry, and the history of issue 13). Against a
server whose CONNECTION carries an "epoch", the script also checks offsets,
recovery across a restart with pushes made while the bridge was down, a
saved position, recovered:false and the console's offsets and gap marks;
against an older one it prints "streams: skipped"."""

import base64
import hashlib
import hmac
import json
import os
import queue
import shutil
import subprocess
import threading
import time
import unittest

import harness as h

BROWSER_DIR = os.path.join(h.REPO, "tests", "browser")
SECRET = "js-client-test-secret-0123456789abcdef"


def token(sub, exp_in):
    def b64(raw):
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": sub, "exp": int(time.time()) + exp_in, "pub": ["*"]}).encode())
    sig = hmac.new(SECRET.encode(), (head + "." + body).encode(), hashlib.sha256).digest()
    return head + "." + body + "." + b64(sig)


class Driver:
    """The node process: its stdout lines in a queue, read with a deadline."""

    def __init__(self, args, log_path, env=None):
        self.stderr = open(log_path, "w")
        self.proc = subprocess.Popen(args, cwd=BROWSER_DIR, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True,
                                     bufsize=1, env=env)
        self.lines = queue.Queue()
        self.transcript = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line(self, timeout):
        line = self.lines.get(timeout=timeout)
        if line is not None:
            self.transcript.append(line)
        return line

    def answer(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc.stdin.close()
        self.proc.stdout.close()
        self.stderr.close()


class JsClientTest(h.IntegrationTest):

    def setUp(self):
        super().setUp()
        self.node = shutil.which("node")
        self.assertIsNotNone(self.node, "node is required (scripts/install-deps.sh installs it)")
        self.assertTrue(os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")),
                        "run 'npm ci' in tests/browser (scripts/test.sh does)")
        self.assertTrue(os.access("/usr/bin/chromium", os.X_OK), "Debian chromium is required")
        self.channel = h.uniq("jsc")
        self.tokens_minted = 0

    def start_stack(self, bridge_args=()):
        self.mosq = self.start_mosquitto()
        self.redis = self.start_redis()
        self.bridge_args = ["--jwt-secret", SECRET] + list(bridge_args)
        self.bridge = self.start_bridge(self.mosq, bridge_id="jsbridge", args=self.bridge_args,
                                        redis=self.redis)
        # Development tokens for the console page (the test page's come from token()).
        self.api = self.start_httpapi(self.mosq, bridges=[self.bridge], redis=self.redis,
                                      args=["--dev-token-secret", SECRET])

    def run_driver(self, mode, actions):
        """Runs the node script, answering its questions until it exits;
        actions maps a question's first word to a function of the question
        that returns the answer line."""
        stderr_log = os.path.join(self.dir, "node-stderr.log")
        self._logs.append(stderr_log)
        # The ack checks run once the bridge has acks with retransmit (issue 13).
        helptext = subprocess.run([h.BRIDGE_BIN, "--help"], capture_output=True, text=True,
                                  timeout=10).stdout
        env = dict(os.environ, CLOUDPUSH_TEST_ACKS="1" if "--ack-timeout" in helptext else "0")
        driver = Driver([self.node, "client.test.mjs", mode, "http://127.0.0.1:%d/" % self.api.port,
                         "ws://127.0.0.1:%d/ws" % self.bridge.port, self.channel], stderr_log, env)
        self.addCleanup(driver.close)
        deadline = time.monotonic() + h.t(150)  # the ack checks wait for resends and 4006
        self.later = None  # (when, function returning the answer line) of a delayed answer
        while True:
            left = deadline - time.monotonic()
            self.assertGreater(left, 0, "node script timed out:\n" + "\n".join(driver.transcript))
            if self.later and time.monotonic() >= self.later[0]:
                driver.answer(self.later[1]())
                self.later = None
            try:
                line = driver.next_line(min(left, 0.05))
            except queue.Empty:
                continue
            if line is None:
                break
            print(line)
            word = line.split(" ")[0]
            if word == "token?":
                self.tokens_minted += 1
                driver.answer("token " + token(self.channel, 8))
            elif line.endswith("?"):
                answer = actions[word](line)
                if answer is not None:
                    driver.answer(answer)
        rc = driver.proc.wait(timeout=h.t(10))
        with open(stderr_log) as f:
            err = f.read()
        self.assertEqual(rc, 0, "browser test failed:\n%s\n%s" % ("\n".join(driver.transcript), err))
        self.assertIn("done", driver.transcript)
        return driver.transcript

    def push_seqs(self, first, last, ids):
        for seq in range(first, last + 1):
            st, body, _ = self.api.push({"to": ids, "msg": {"seq": seq}})
            self.assertEqual(st, 200, body)

    def push(self, line):
        first, last = (int(x) for x in line.rstrip("?").split(" ")[1:3])
        self.push_seqs(first, last, [self.channel])
        return "pushed"

    def push_to(self, line):
        words = line.rstrip("?").split(" ")
        self.push_seqs(int(words[1]), int(words[2]), words[3:])
        return "pushed"

    def restart(self, line):
        """SIGTERM (the client sees 1001, or RECONNECT then 1012 from a
        draining bridge); the bridge stays down for 1.5 s while token
        requests are still answered, so reconnect attempts meet a closed
        port; then it starts again on the same port. "restart-push A B
        ID...?" pushes seq A..B to the channel and the ids meanwhile."""
        port = self.bridge.port
        self.bridge.stop()
        words = line.rstrip("?").split(" ")
        if words[0] == "restart-push":
            self.push_seqs(int(words[1]), int(words[2]), [self.channel] + words[3:])

        def start_again():
            self.bridge = self.start_bridge(self.mosq, bridge_id="jsbridge",
                                            args=self.bridge_args, port=port, redis=self.redis)
            return "restarted"
        self.later = (time.monotonic() + 1.5, start_again)

    def test_pushes_acks_refresh_and_a_bridge_restart(self):
        self.start_stack()
        out = self.run_driver("restart", {"push": self.push, "push-to": self.push_to,
                                          "restart?": self.restart,
                                          "restart-push": self.restart})
        self.assertIn("ok - every push arrived exactly once, in order: 1,2,3,4,5,6,7,8,9,10", out)
        self.assertIn("ok - getToken was called again for the reconnect", out)
        self.assertIn("ok - attempts failed while the bridge was down, with growing capped delays", out)
        self.assertTrue(any(line.startswith("ok - the console logged the lost connection") for line in out))
        # The restarted bridge took the reconnect, and its token was minted here.
        self.assertGreaterEqual(self.bridge.metric("cloudpush_bridge_connections_accepted_total"), 1)
        self.assertGreaterEqual(self.tokens_minted, 3)
        streams = [line for line in out if line.startswith("streams: ")]
        self.assertEqual(len(streams), 1, out)
        if streams[0].startswith("streams: on"):
            self.assertIn("ok - the reconnect reported recovered:true", out)
            self.assertIn("ok - a position of another epoch reports recovered:false", out)
            self.assertTrue(any(line.startswith("ok - the console without recovery marked the gap")
                                for line in out))
        if "acks: skipped" not in out:
            self.assertIn("ok - the message reached the app once, through resends and the recovery", out)
            self.assertIn("ok - ack: true confirmed it: no resend", out)

    def test_replaced_session_is_not_retried(self):
        self.start_stack(["--single-session"])
        sessions = []

        def replace(_line):
            sessions.append(self.session(self.bridge.port, self.channel,
                                         query={"token": token(self.channel, 60)}))
            return "replaced"

        out = self.run_driver("replaced", {"replace?": replace})
        self.assertIn("ok - no reconnect attempt", out)
        # The page's session and the replacing one: no third connection.
        self.assertEqual(self.bridge.metric("cloudpush_bridge_connections_accepted_total"), 2)
        self.assertEqual(self.tokens_minted, 1)

    def test_client_logic_in_node(self):
        """tests/browser/client.unit.test.mjs: close codes, backoff, close()
        during getToken(), send timeouts, refresh timing, and the streams of
        issue 13 (dedupe, gaps, recovery arguments, RECONNECT, 4006, acks),
        with a scripted WebSocket in Node (no browser, no bridge)."""
        out = subprocess.run([self.node, "--test", "client.unit.test.mjs"], cwd=BROWSER_DIR,
                             capture_output=True, text=True, timeout=h.t(60))
        self.assertEqual(out.returncode, 0, out.stdout[-4000:] + out.stderr[-2000:])
        self.assertIn("# fail 0", out.stdout)


if __name__ == "__main__":
    unittest.main()
