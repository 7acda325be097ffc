"""examples/: the Python, Node.js and curl publishers push to a real client
through a real stack and read its receipt from cloudpush/ack/#."""

import json
import os
import shutil
import subprocess
import threading
import unittest

import harness as h

EXAMPLES = os.path.join(h.REPO, "examples")
NODE_DIR = os.path.join(EXAMPLES, "node")


class AckingClient:
    """A WebSocket client that acknowledges every BUSINESS message."""

    def __init__(self, test, port, channel_id):
        self.session = test.session(port, channel_id)
        self.received = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        test.addCleanup(self.stop.set)

    def run(self):
        while not self.stop.is_set():
            try:
                env = self.session.recv(timeout=0.5)
            except Exception:  # timeout or closed: look at stop again
                continue
            if env.get("msgType") == h.MSG_BUSINESS:
                self.received.append(env)
                self.session.send({"msgType": h.MSG_BUSINESS_ACK, "messageId": env["messageId"]})


class ExamplesTest(h.IntegrationTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mosq = cls.class_mosquitto()
        cls.bridge = cls.class_bridge(cls.mosq, bridge_id="examples")
        cls.api = cls.class_httpapi(cls.mosq, bridges=[cls.bridge])

    def env(self):
        env = dict(os.environ)
        env.update({"CLOUDPUSH_MQTT_HOST": "127.0.0.1", "CLOUDPUSH_MQTT_PORT": str(self.mosq.port),
                    "CLOUDPUSH_MQTT_URL": "mqtt://127.0.0.1:%d" % self.mosq.port,
                    "CLOUDPUSH_API": "http://127.0.0.1:%d" % self.api.port,
                    "CLOUDPUSH_RECEIPT_TIMEOUT": "10"})
        return env

    def run_example(self, cmd, cwd=EXAMPLES):
        r = subprocess.run(cmd, cwd=cwd, env=self.env(), capture_output=True, text=True,
                           timeout=60, stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 0, "%s failed:\n%s%s" % (cmd, r.stdout, r.stderr))
        return r.stdout

    def check(self, client, out, msg):
        receipt = [l for l in out.splitlines() if l.startswith("receipt ")]
        self.assertEqual(len(receipt), 1, out)
        mid = receipt[0].split()[1]
        got = [e for e in client.received if e["messageId"] == mid]
        self.assertEqual(len(got), 1, "the client got %s once" % mid)
        self.assertEqual(got[0]["msg"], msg)
        return got[0]

    def test_python(self):
        cid = h.uniq("py")
        client = AckingClient(self, self.bridge.port, cid)
        out = self.run_example(["/usr/bin/python3", "publish.py", cid, '{"n":1}'])
        env = self.check(client, out, {"n": 1})
        self.assertEqual((env["from"], env["trigger"]), ("billing", h.TRIGGER_MQTT))

    def test_curl(self):
        cid = h.uniq("curl")
        client = AckingClient(self, self.bridge.port, cid)
        out = self.run_example(["sh", "push.sh", cid, '{"n":2}'])
        env = self.check(client, out, {"n": 2})
        self.assertEqual(env["trigger"], h.TRIGGER_HTTP)

    def test_node(self):
        if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "mqtt")):
            r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                               cwd=NODE_DIR, capture_output=True, text=True, timeout=300)
            self.assertEqual(r.returncode, 0, "npm ci in examples/node: %s" % r.stderr)
        cid = h.uniq("node")
        client = AckingClient(self, self.bridge.port, cid)
        out = self.run_example([shutil.which("node") or "node", "publish.mjs", cid, '{"n":3}'],
                               cwd=NODE_DIR)
        self.check(client, out, {"n": 3})

    def test_no_receipt_fails(self):
        # Nobody connected: no receipt, a clear error and exit 1.
        env = self.env()
        env["CLOUDPUSH_RECEIPT_TIMEOUT"] = "1"
        r = subprocess.run(["/usr/bin/python3", "publish.py", h.uniq("nobody")], cwd=EXAMPLES,
                           env=env, capture_output=True, text=True, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("no receipt", r.stderr)


if __name__ == "__main__":
    unittest.main()
