"""The HTTP push API against a real broker, a real bridge and real
WebSocket clients."""

import json
import time
import unittest

import harness as h

HEX32 = h.HEX32


class HttpApiTest(h.IntegrationTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mosq = cls.class_mosquitto()
        cls.bridge = cls.class_bridge(cls.mosq, bridge_id="apibridge")
        cls.api = cls.class_httpapi(cls.mosq, bridges=[cls.bridge],
                                    args=["--max-recipients", "50", "--max-body-bytes", "65536"])
        cls.keyed = cls.class_httpapi(cls.mosq, name="httpapi-keyed",
                                      args=["--api-key", "first-key,second-key"])

    def assertError(self, resp, status, code):
        st, body, _ = resp
        self.assertEqual(st, status, body)
        self.assertIsInstance(body, dict, body)
        self.assertEqual(body["success"], False)
        self.assertEqual(body["code"], code, body)
        self.assertTrue(body["msg"])
        self.assertIn("data", body)

    def test_single_push_reaches_the_client(self):
        cid = h.uniq("api-one")
        s = self.session(self.bridge.port, cid)
        st, body, hdrs = self.api.push({"to": [cid], "msg": {"n": 1}, "requestId": "req-1"})
        self.assertEqual(st, 200, body)
        self.assertTrue(hdrs["content-type"].startswith("application/json"))
        self.assertEqual(body["success"], True)
        self.assertEqual(body["code"], "0")
        self.assertEqual(body["data"]["requestId"], "req-1")
        [entry] = body["data"]["messages"]
        self.assertEqual(entry["to"], cid)
        self.assertRegex(entry["messageId"], HEX32)
        m = s.recv()
        self.assertEqual(m["msgType"], h.MSG_BUSINESS)
        self.assertEqual(m["msg"], {"n": 1})
        self.assertEqual(m["messageId"], entry["messageId"])
        self.assertEqual(m["requestId"], "req-1")
        self.assertEqual(m["trigger"], h.TRIGGER_HTTP)
        self.assertEqual(m["from"], "system")
        self.assertEqual(m["to"], [cid])
        self.assertEqual(m["sessionId"], s.session_id)

    def test_multi_push_one_envelope_each_shared_request_id(self):
        a, b = h.uniq("api-a"), h.uniq("api-b")
        sa, sb = self.session(self.bridge.port, a), self.session(self.bridge.port, b)
        st, body, _ = self.api.push({"to": [a, b, a], "msg": {"k": "v"}, "from": "billing"})
        self.assertEqual(st, 200, body)
        entries = body["data"]["messages"]
        self.assertEqual([e["to"] for e in entries], [a, b], "duplicates are sent once")
        rid = body["data"]["requestId"]
        self.assertRegex(rid, r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
        ma, mb = sa.recv(), sb.recv()
        self.assertNotEqual(ma["messageId"], mb["messageId"])
        self.assertEqual(ma["messageId"], entries[0]["messageId"])
        self.assertEqual(mb["messageId"], entries[1]["messageId"])
        self.assertEqual(ma["requestId"], rid)
        self.assertEqual(mb["requestId"], rid)
        self.assertEqual(ma["from"], "billing")
        h.ws_expect_nothing(self, sa.ws, 0.3)  # a got it exactly once

    def test_broadcast(self):
        a, b = h.uniq("api-all-a"), h.uniq("api-all-b")
        sa, sb = self.session(self.bridge.port, a), self.session(self.bridge.port, b)
        st, body, _ = self.api.push({"sendToAll": True, "to": ["not/valid"], "msg": {"all": 1}})
        self.assertEqual(st, 200, body)
        [entry] = body["data"]["messages"]
        self.assertEqual(entry["to"], "*")
        ma, mb = sa.recv(), sb.recv()
        self.assertEqual(ma["messageId"], entry["messageId"])
        self.assertEqual(mb["messageId"], entry["messageId"])
        self.assertEqual(ma["to"], [a])
        self.assertEqual(mb["to"], [b])

    def test_compatibility_endpoints(self):
        cid = h.uniq("api-compat")
        s = self.session(self.bridge.port, cid)
        for path in ("/message/send", "/portal/message/send"):
            st, body, _ = self.api.push({"to": [cid], "msg": {"via": path}, "sendToAll": False},
                                        path=path)
            self.assertEqual(st, 200, body)
            self.assertEqual((body["success"], body["code"], body["msg"]), (True, "0", "success"))
            m = s.recv()
            self.assertEqual(m["msg"], {"via": path})
            self.assertEqual(m["trigger"], h.TRIGGER_HTTP)
            st, body, _ = self.api.push({"to": None, "msg": {}}, path=path)
            self.assertEqual(st, 400)
            self.assertEqual((body["success"], body["code"], body["error"]),
                             (False, "-1", "missing_to"))

    def test_bad_requests(self):
        cases = [
            ("not json", "invalid_json"),
            ('{"to":["a"],"msg":{}} trailing', "invalid_json"),
            (b'{"to":["a"],"msg":{"x":"\xff"}}', "invalid_json"),
            ("[1,2]", "invalid_body"),
            ({"to": ["a"]}, "invalid_msg"),
            ({"to": ["a"], "msg": "text"}, "invalid_msg"),
            ({"to": ["a"], "msg": [1]}, "invalid_msg"),
            ({"msg": {}}, "missing_to"),
            ({"to": [], "msg": {}}, "missing_to"),
            ({"to": "a", "msg": {}}, "invalid_to"),
            ({"to": ["ok", "a/b"], "msg": {}}, "invalid_channel_id"),
            ({"to": ["a+"], "msg": {}}, "invalid_channel_id"),
            ({"to": ["#"], "msg": {}}, "invalid_channel_id"),
            ({"to": ["x" * 129], "msg": {}}, "invalid_channel_id"),
            ({"to": [5], "msg": {}}, "invalid_channel_id"),
            ({"to": ["c%d" % i for i in range(51)], "msg": {}}, "too_many_recipients"),
            ({"to": ["a"], "msg": {}, "sendToAll": "yes"}, "invalid_field"),
            ({"to": ["a"], "msg": {}, "requestId": ""}, "invalid_field"),
            ({"to": ["a"], "msg": {}, "from": 7}, "invalid_field"),
            ({"to": ["a"], "msg": {}, "delay": 30}, "delay_not_supported"),
        ]
        for body, code in cases:
            with self.subTest(body=str(body)[:60]):
                self.assertError(self.api.push(body), 400, code)
        # Exactly at the limit is fine; delay 0 is accepted.
        st, _, _ = self.api.push({"to": ["c%d" % i for i in range(50)], "msg": {}, "delay": 0})
        self.assertEqual(st, 200)

    def test_deeply_nested_json_is_refused_not_fatal(self):
        # A ~2 KB body nested 999 deep overflowed a CivetWeb worker's stack
        # inside cJSON's recursive parser and killed the process (SIGSEGV).
        cid = h.uniq("api-deep")
        s = self.session(self.bridge.port, cid)
        for opener, closer in (("[", "]"), ('{"a":', "}")):
            for depth in (999, 5000):
                body = '{"to":["%s"],"msg":{"v":%s1%s}}' % (cid, opener * depth, closer * depth)
                with self.subTest(opener=opener, depth=depth):
                    st, reply, _ = self.api.push(body)
                    self.assertError((st, reply, None), 400, "invalid_json")
                    self.assertIn("nested deeper than 64 levels", reply["msg"])
                    self.assertTrue(self.api.running(), "the HTTP API died")
                    self.assertEqual(self.api.health()[0], 200)
        # The deepest accepted document (64 levels in all) is delivered whole.
        inner = 62
        body = '{"to":["%s"],"msg":{"v":%s1%s}}' % (cid, "[" * inner, "]" * inner)
        st, reply, _ = self.api.push(body)
        self.assertEqual(st, 200, reply)
        v = s.recv()["msg"]["v"]
        for _ in range(inner):
            self.assertIsInstance(v, list)
            [v] = v
        self.assertEqual(v, 1)

    def test_method_type_and_size(self):
        st, body, hdrs = self.api.push(None, method="GET", content_type=None)
        self.assertEqual(st, 405)
        self.assertEqual(hdrs.get("allow"), "POST")
        self.assertEqual(body["code"], "method_not_allowed")
        self.assertError(self.api.push({"to": ["a"], "msg": {}}, content_type="text/plain"),
                         415, "unsupported_media_type")
        self.assertError(self.api.push({"to": ["a"], "msg": {}}, content_type=None), 415,
                         "unsupported_media_type")
        st, body, _ = self.api.push({"to": ["a"], "msg": {}},
                                    content_type="application/json; charset=utf-8")
        self.assertEqual(st, 200, body)
        big = {"to": ["a"], "msg": {"pad": "x" * 70000}}
        self.assertError(self.api.push(big), 413, "body_too_large")

    def test_api_keys(self):
        cid = h.uniq("api-key")
        s = self.session(self.bridge.port, cid)
        body = {"to": [cid], "msg": {"auth": 1}}
        st, resp, hdrs = self.keyed.push(body)
        self.assertError((st, resp, hdrs), 401, "unauthorized")
        self.assertEqual(hdrs.get("www-authenticate"), "Bearer")
        self.assertError(self.keyed.push(body, headers={"Authorization": "Bearer wrong-key"}),
                         401, "unauthorized")
        self.assertError(self.keyed.push(body, headers={"Authorization": "first-key"}), 401,
                         "unauthorized")
        h.ws_expect_nothing(self, s.ws, 0.3)
        for key in ("first-key", "second-key"):
            st, resp, _ = self.keyed.push(body, headers={"Authorization": "Bearer " + key})
            self.assertEqual(st, 200, resp)
            self.assertEqual(s.recv()["msg"], {"auth": 1})
        # The unkeyed API needs none; health is never behind the key.
        for path in ("/healthz", "/livez", "/readyz"):
            st, _, _ = h.http_request(self.keyed.port, "GET", path)
            self.assertEqual(st, 200, path)
        # Who is online is behind the key too.
        st, _, body = h.http_request(self.keyed.port, "GET", "/api/v1/clients/alice")
        self.assertEqual(st, 401, body)
        self.assertEqual(json.loads(body)["code"], "unauthorized")
        st, _, body = h.http_request(self.keyed.port, "GET", "/api/v1/clients/alice",
                                     headers={"Authorization": "Bearer second-key"})
        self.assertEqual(st, 501, body)  # past the key: this API runs without --redis

    def test_health_readiness_metrics_and_console(self):
        st, _, body = h.http_request(self.api.port, "GET", "/healthz")
        self.assertEqual((st, json.loads(body)), (200, {"status": "ok"}))
        st, _, body = h.http_request(self.api.port, "GET", "/readyz")
        self.assertEqual((st, json.loads(body)["mqtt"]), (200, True))
        st, _, body = h.http_request(self.api.port, "GET", "/api/v1/config")
        cfg = json.loads(body)
        self.assertEqual(cfg["bridges"], ["ws://127.0.0.1:%d/ws" % self.bridge.port])
        self.assertEqual(cfg["authRequired"], False)
        st, hdrs, body = h.http_request(self.api.port, "GET", "/")
        self.assertEqual(st, 200)
        self.assertIn(b"cloudpush", body)
        self.api.push({"to": ["metrics-probe"], "msg": {}})
        text = self.api.metrics()
        self.assertGreaterEqual(h.metric_value(text, "cloudpush_httpapi_requests_total",
                                               {"endpoint": "/api/v1/push", "status": "200"}), 1)
        self.assertGreaterEqual(h.metric_value(text, "cloudpush_httpapi_messages_published_total"), 1)
        self.assertGreaterEqual(h.metric_value(text, "cloudpush_httpapi_publish_seconds_count"), 1)
        self.assertEqual(h.metric_value(text, "cloudpush_httpapi_mqtt_connected"), 1)
        self.assertEqual(h.metric_value(text, "cloudpush_build_info",
                                        {"program": "httpapi", "version": "0.1.0"}), 1)
        self.assertGreater(h.metric_value(text, "process_resident_memory_bytes"), 1e6)
        self.assertGreater(h.metric_value(text, "process_open_fds"), 3)


class ProbesTest(h.IntegrationTest):

    def test_ready_without_redis_and_alive_without_the_broker(self):
        mosq = self.start_mosquitto()
        bridge = self.start_bridge(mosq, bridge_id="probes")
        # Redis configured but not running: pushes work, so the API is ready.
        dead_redis = "redis://127.0.0.1:%d" % h.free_port()
        api = self.start_httpapi(mosq, args=["--redis", dead_redis])
        st, _, body = h.http_request(api.port, "GET", "/readyz")
        self.assertEqual((st, json.loads(body)),
                         (200, {"status": "ready", "mqtt": True, "redis": False}))
        cid = h.uniq("probes")
        s = self.session(bridge.port, cid)
        st, resp, _ = api.push({"to": [cid], "msg": {"k": 1}})
        self.assertEqual(st, 200, resp)
        self.assertNotIn("offline", resp["data"], "presence is unknown, not 'everyone offline'")
        self.assertEqual(s.recv()["msg"], {"k": 1})
        # Broker gone: not ready, still alive (a liveness probe must not restart it).
        mosq.stop()
        h.wait_until(lambda: h.http_request(api.port, "GET", "/readyz")[0] == 503, h.t(10),
                     what="/readyz 503 without the broker")
        st, _, body = h.http_request(api.port, "GET", "/livez")
        self.assertEqual((st, json.loads(body)), (200, {"status": "alive"}))
        st, _, _ = h.http_request(api.port, "POST", "/livez")
        self.assertEqual(st, 405)


class KeyRateTest(h.IntegrationTest):

    def test_rate_per_key_is_429_with_retry_after(self):
        mosq = self.start_mosquitto()
        api = self.start_httpapi(mosq, args=["--api-key", "k-one,k-two", "--rate-per-key", "5",
                                             "--burst-per-key", "5"])
        body = {"to": ["rl"], "msg": {}}
        for _ in range(5):
            st, resp, _ = api.push(body, headers={"Authorization": "Bearer k-one"})
            self.assertEqual(st, 200, resp)
        st, resp, hdrs = api.push(body, headers={"Authorization": "Bearer k-one"})
        self.assertEqual((st, resp["code"]), (429, "rate_limited"))
        self.assertGreaterEqual(int(hdrs["retry-after"]), 1)
        # Each key has its own budget; the first one refills with time.
        st, _, _ = api.push(body, headers={"Authorization": "Bearer k-two"})
        self.assertEqual(st, 200)
        time.sleep(0.5)
        st, _, _ = api.push(body, headers={"Authorization": "Bearer k-one"})
        self.assertEqual(st, 200)
        self.assertEqual(api.metric("cloudpush_httpapi_rate_limited_total"), 1)


class BrokerDownTest(h.IntegrationTest):

    def test_broker_down_is_503_and_nothing_is_claimed(self):
        mosq = self.start_mosquitto()
        bridge = self.start_bridge(mosq, bridge_id="apidown")
        api = self.start_httpapi(mosq)
        cid = h.uniq("api-down")
        s = self.session(bridge.port, cid)
        mosq.stop()
        api.wait_health_status(503, h.t(10))
        st, body, _ = api.push({"to": [cid, "other"], "msg": {"lost": True}, "requestId": "r-down"})
        self.assertEqual(st, 503, body)
        self.assertEqual(body["success"], False)
        self.assertEqual(body["code"], "bus_unavailable")
        self.assertEqual(body["data"]["requestId"], "r-down")
        self.assertEqual(body["data"]["confirmed"], [])
        self.assertEqual([e["to"] for e in body["data"]["unconfirmed"]], [cid, "other"])
        self.assertEqual(api.metric("cloudpush_httpapi_messages_unconfirmed_total"), 2)
        # Nothing was buffered to be sent later: after the broker is back the
        # client sees nothing of it, and a new push works again.
        mosq.start()
        api.wait_healthy(h.t(15))
        bridge.wait_healthy(h.t(15))
        st, body, _ = api.push({"to": [cid], "msg": {"after": True}})
        self.assertEqual(st, 200, body)
        m = s.recv(timeout=10)
        self.assertEqual(m["msg"], {"after": True})


if __name__ == "__main__":
    unittest.main()
