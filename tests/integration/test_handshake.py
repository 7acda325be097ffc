"""HTTP side of the bridge: upgrade validation, plain HTTP endpoints,
--max-connections, and the listen address."""

import json
import subprocess
import unittest

import harness as h


class HandshakeTest(h.IntegrationTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mosq = cls.class_mosquitto()
        cls.bridge = cls.class_bridge(cls.mosq, bridge_id="ithands")

    def assertJsonError(self, status, headers, body, want_status, want_code):
        self.assertEqual(status, want_status, body)
        self.assertTrue(headers.get("content-type", "").startswith("application/json"), headers)
        try:
            obj = json.loads(body)
        except ValueError:
            self.fail("error body is not JSON: %r" % body)
        self.assertEqual(obj.get("success"), False, obj)
        self.assertEqual(obj.get("code"), want_code, obj)
        self.assertIsInstance(obj.get("msg"), str, obj)
        self.assertTrue(obj["msg"], obj)
        self.assertNotIn("upgrade", {k.lower() for k in headers}, headers)

    def test_missing_channel_id(self):
        for q in ("", "other=1"):
            st, hd, body = h.handshake_error(self.bridge.port, raw_query=q)
            self.assertJsonError(st, hd, body, 400, "missing_channel_id")

    def test_empty_channel_id(self):
        st, hd, body = h.handshake_error(self.bridge.port, raw_query="channelId=")
        self.assertEqual(st, 400, body)
        self.assertIn(json.loads(body).get("code"), ("missing_channel_id", "invalid_channel_id"))

    def test_invalid_channel_ids(self):
        queries = ("channelId=a%2Fb", "channelId=a/b", "channelId=a%2B", "channelId=a+",
                   "channelId=%23", "channelId=" + "c" * 129, "channelId=a%20b",
                   "channelId=%C3%A9t%C3%A9", "channelId=a%2A")
        for q in queries:
            with self.subTest(query=q):
                st, hd, body = h.handshake_error(self.bridge.port, raw_query=q)
                self.assertJsonError(st, hd, body, 400, "invalid_channel_id")
        text = self.bridge.metrics()
        self.assertGreaterEqual(h.metric_sum(text, "cloudpush_bridge_handshakes_rejected_total"),
                                len(queries), text)

    def test_nul_in_channel_id_is_not_truncated(self):
        # "a%00b" must not become the channel "a". libwebsockets itself drops
        # a request with %00 in the URI (connection closed without a
        # response); a 400 invalid_channel_id from the bridge is also fine.
        try:
            st, hd, body = h.handshake_error(self.bridge.port, raw_query="channelId=a%00b")
        except AssertionError as e:
            if "connection closed during handshake" in str(e):
                return
            raise
        self.assertJsonError(st, hd, body, 400, "invalid_channel_id")

    def test_valid_channel_id_edge_cases(self):
        for cid in ("c" * 128, "A-z.0-9:x@y", "x"):
            with self.subTest(channel=cid):
                s = self.session(self.bridge.port, cid)
                self.assertEqual(s.connection.get("resultMsg"), "connected, channelId=%s" % cid)
                s.close()

    def test_upgrade_on_any_path(self):
        for path in ("/", "/ws", "/some/deep/path", "/healthz"):
            with self.subTest(path=path):
                cid = h.uniq("path")
                s = self.session(self.bridge.port, cid, path=path)
                self.assertIn(cid, s.connection.get("resultMsg", ""))
                s.close()

    def test_plain_get_needs_upgrade(self):
        for path in ("/", "/?channelId=abc", "/anything"):
            with self.subTest(path=path):
                st, hd, body = h.http_request(self.bridge.port, "GET", path)
                self.assertJsonError(st, hd, body, 426, "upgrade_required")

    def test_non_get_method(self):
        for method, path in (("POST", "/"), ("POST", "/healthz"), ("PUT", "/metrics"),
                             ("DELETE", "/?channelId=abc")):
            with self.subTest(method=method, path=path):
                st, hd, body = h.http_request(self.bridge.port, method, path, body=b"{}",
                                              headers={"Content-Type": "application/json"})
                self.assertJsonError(st, hd, body, 405, "method_not_allowed")

    def test_healthz(self):
        st, hd, body = h.http_request(self.bridge.port, "GET", "/healthz")
        self.assertEqual(st, 200, body)
        self.assertTrue(hd.get("content-type", "").startswith("application/json"), hd)
        obj = json.loads(body)
        self.assertEqual(obj.get("status"), "ok", obj)
        self.assertEqual(obj.get("id"), self.bridge.id, obj)
        self.assertIs(obj.get("mqtt"), True, obj)
        self.assertIsInstance(obj.get("connections"), int, obj)
        before = obj["connections"]
        s = self.session(self.bridge.port, h.uniq("hz"))
        self.assertEqual(self.bridge.healthz()[1]["connections"], before + 1)
        s.close()
        h.wait_until(lambda: self.bridge.healthz()[1]["connections"] == before, h.t(3),
                     what="connections back to %d" % before)

    def test_metrics(self):
        s = self.session(self.bridge.port, h.uniq("met"))
        s.heartbeat()
        st, hd, body = h.http_request(self.bridge.port, "GET", "/metrics")
        self.assertEqual(st, 200)
        self.assertTrue(hd.get("content-type", "").startswith("text/plain"), hd)
        text = body.decode()
        for name in ("cloudpush_bridge_connections", "cloudpush_bridge_mqtt_connected",
                     "cloudpush_bridge_messages_in_total", "cloudpush_bridge_messages_out_total",
                     "cloudpush_bridge_closes_total", "cloudpush_bridge_handshakes_rejected_total",
                     "cloudpush_bridge_bus_invalid_total"):
            self.assertIn(name, text)
        samples = h.parse_metrics(text)
        self.assertGreaterEqual(h.metric_value(text, "cloudpush_bridge_connections"), 1, text)
        self.assertEqual(h.metric_value(text, "cloudpush_bridge_mqtt_connected"), 1, text)
        in_labels = [dict(l) for (n, l) in samples if n == "cloudpush_bridge_messages_in_total"]
        out_labels = [dict(l) for (n, l) in samples if n == "cloudpush_bridge_messages_out_total"]
        self.assertTrue(in_labels and all("type" in l for l in in_labels), in_labels)
        self.assertTrue(out_labels and all("type" in l for l in out_labels), out_labels)
        self.assertGreaterEqual(h.metric_sum(text, "cloudpush_bridge_messages_in_total"), 1, text)
        self.assertGreaterEqual(h.metric_sum(text, "cloudpush_bridge_messages_out_total"), 1, text)

    def test_metrics_close_reasons_exported(self):
        text = self.bridge.metrics()
        samples = h.parse_metrics(text)
        close_reasons = {dict(l).get("reason") for (n, l) in samples
                         if n == "cloudpush_bridge_closes_total"}
        for reason in ("client", "idle_timeout", "slow_consumer", "replaced", "too_big",
                       "shutdown", "subscribe_failed", "error"):
            self.assertIn(reason, close_reasons, "closes_total has no reason=%s sample" % reason)

    def test_http_garbage_does_not_hang(self):
        import socket
        with socket.create_connection(("127.0.0.1", self.bridge.port), timeout=h.t(5)) as sock:
            sock.sendall(b"THIS IS NOT HTTP\r\n\r\n")
            try:
                data = sock.recv(4096)
            except socket.timeout:
                self.fail("no answer (and no close) to a malformed request within 5 s")
            # Either an HTTP error response or a closed connection.
            self.assertTrue(data == b"" or data.startswith(b"HTTP/1."), data[:100])
        self.assertEqual(self.bridge.healthz()[0], 200)


class LimitsTest(h.IntegrationTest):

    def test_max_connections(self):
        mosq = self.start_mosquitto()
        bridge = self.start_bridge(mosq, bridge_id="itmaxc", args=["--max-connections", "2"])
        s1 = self.session(bridge.port, h.uniq("mc"))
        self.session(bridge.port, h.uniq("mc"))
        st, hd, body = h.handshake_error(bridge.port, channel_id=h.uniq("mc"))
        self.assertEqual(st, 503, body)
        self.assertTrue(hd.get("content-type", "").startswith("application/json"), hd)
        self.assertEqual(json.loads(body).get("code"), "too_many_connections", body)
        # Plain HTTP still works at the limit.
        self.assertEqual(bridge.healthz()[0], 200)
        # A freed slot can be used again.
        s1.close()

        def try_connect():
            try:
                return self.session(bridge.port, h.uniq("mc"))
            except Exception:  # noqa: BLE001
                return None
        h.wait_until(try_connect, h.t(5), 0.2, "a connection after one was closed")

    def test_listen_loopback_only(self):
        mosq = self.start_mosquitto()
        bridge = self.start_bridge(mosq, bridge_id="itlisten")
        out = subprocess.run(["ss", "-ltnH", "sport = :%d" % bridge.port], capture_output=True,
                             text=True, timeout=10, check=True).stdout
        locals_ = [line.split()[3] for line in out.splitlines() if line.strip()]
        self.assertTrue(locals_, "nothing listens on %d: %r" % (bridge.port, out))
        for addr in locals_:
            host = addr.rsplit(":", 1)[0]
            self.assertIn(host, ("127.0.0.1", "[::ffff:127.0.0.1]"),
                          "bridge listens on %s, not only on loopback (ss: %r)" % (addr, out))

    def test_help_lists_every_flag(self):
        out = subprocess.run([h.BRIDGE_BIN, "--help"], capture_output=True, text=True,
                             timeout=10)
        self.assertEqual(out.returncode, 0, out.stderr)
        text = out.stdout + out.stderr
        for flag in ("listen", "id", "advertise", "mqtt", "mqtt-user", "mqtt-password", "prefix",
                     "idle-timeout", "max-connections", "max-message-bytes",
                     "max-queue-messages", "max-queue-bytes", "single-session",
                     "shutdown-grace", "log-level"):
            self.assertIn("--" + flag, text)
            self.assertIn("CLOUDPUSH_" + flag.upper().replace("-", "_"), text)


if __name__ == "__main__":
    unittest.main()
