"""Hostile clients: tokens (missing, forged, expired, stolen, for another
channelId), token refresh and expiry, rate limits, forged fields, wildcard
ids, deep JSON, unfinished fragments, slowloris handshakes. Each case checks
the exact answer and that an honest client keeps receiving."""

import base64
import hashlib
import hmac
import json
import socket
import time
import unittest

import harness as h

SECRET = "s3cr3t-for-tests-only-0123456789abcdef"
LEEWAY = 1


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(sub=None, exp_in=60, alg="HS256", secret=SECRET, extra=None, header=None):
    """A compact JWS; with alg none the signature is empty."""
    claims = {"exp": int(time.time()) + exp_in}
    if sub is not None:
        claims["sub"] = sub
    claims.update(extra or {})
    head = b64(json.dumps(header or {"alg": alg}, separators=(",", ":")).encode())
    body = b64(json.dumps(claims, separators=(",", ":")).encode())
    signing = (head + "." + body).encode()
    if alg == "none":
        sig = ""
    else:
        sig = b64(hmac.new(secret.encode(), signing, hashlib.sha256).digest())
    return head + "." + body + "." + sig


class AuthTest(h.IntegrationTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mosq = cls.class_mosquitto()
        cls.bridge = cls.class_bridge(cls.mosq, bridge_id="secure",
                                      args=["--jwt-secret", SECRET, "--jwt-leeway", str(LEEWAY)])

    def rejected(self, raw_query, status, code, extra_headers=None):
        with self.assertRaises(h.HandshakeRejected) as cm:
            h.RawWs(self.bridge.port, path="/ws", raw_query=raw_query,
                    extra_headers=extra_headers)
        self.assertEqual(cm.exception.status, status, cm.exception.body)
        self.assertEqual(cm.exception.json()["code"], code)
        return cm.exception.json()["msg"]

    def connect(self, query):
        ws = self.raw_ws(self.bridge.port, None, path="/ws", raw_query=query)
        first = ws.recv_json()
        self.assertEqual(first["msgType"], h.MSG_CONNECTION, first)
        return ws, first

    def test_tokens_at_the_door(self):
        cid = h.uniq("alice")
        # Without a token nobody gets in, not even with a valid channelId.
        self.rejected("channelId=" + cid, 401, "unauthorized")
        # Stolen identity: a valid token of someone else for this channelId.
        self.rejected("channelId=%s&token=%s" % (cid, token("mallory")), 403,
                      "forbidden_channel")
        self.assertEqual(self.rejected("channelId=%s&token=%s" % (cid, token(cid, -3600)), 401,
                                       "token_expired"), "token expired")
        self.rejected("channelId=%s&token=%s" % (cid, token(cid, secret="x" * 40)), 401,
                      "unauthorized")
        self.rejected("channelId=%s&token=%s" % (cid, token(cid, alg="none")), 401,
                      "unauthorized")
        self.rejected("channelId=%s&token=%s" % (cid, token(cid, alg="HS512")), 401,
                      "unauthorized")
        self.rejected("channelId=%s&token=%s" % (cid, token(cid, extra={"nbf": 2 ** 31})),
                      401, "unauthorized")
        self.rejected("channelId=%s&token=%s" % (cid, "not.a.jwt"), 401, "unauthorized")
        self.rejected("channelId=a/b&token=" + token("a"), 400, "invalid_channel_id")
        self.rejected("channelId=%s&token=%s" % (cid, token(cid, extra={"exp": None})), 401,
                      "unauthorized")
        # A good token: with the channelId, or alone (the id comes from sub).
        ws, first = self.connect("channelId=%s&token=%s" % (cid, token(cid)))
        self.assertIn("_%s_" % cid, first["sessionId"])
        ws2, first2 = self.connect("token=" + token(cid))
        self.assertIn("_%s_" % cid, first2["sessionId"])
        self.assertGreaterEqual(self.bridge.metric("cloudpush_bridge_handshakes_rejected_total",
                                                   {"reason": "unauthorized"}), 8)

    def test_token_as_subprotocol(self):
        cid = "sp%d" % (time.monotonic_ns() % 1000)
        short = token(cid)  # fits lws 4.1's 127-byte protocol list
        self.assertLess(len("cloudpush, " + short), 127)
        ws = self.raw_ws(self.bridge.port, None, path="/ws", raw_query="",
                         extra_headers={"Sec-WebSocket-Protocol": "cloudpush, " + short})
        self.assertEqual(ws.headers.get("sec-websocket-protocol"), "cloudpush")
        self.assertEqual(ws.recv_json()["msgType"], h.MSG_CONNECTION)

    def test_expiry_and_refresh(self):
        cid = h.uniq("exp")
        short, _ = self.connect("token=" + token(cid, exp_in=1))
        keeper, _ = self.connect("token=" + token(cid, exp_in=1))
        # The keeper refreshes its token; a refresh for someone else is refused.
        keeper.send_json({"msgType": 3, "messageId": "bad",
                          "msg": {"token": token("someone-else", 600)}})
        err = keeper.recv_json()
        self.assertEqual((err["msgType"], err["messageId"]), (h.MSG_ERROR, "bad"))
        self.assertIn("another channelId", err["resultMsg"])
        keeper.send_json({"msgType": 3, "messageId": "good", "msg": {"token": token(cid, 600)}})
        ack = keeper.recv_json()
        self.assertEqual((ack["msgType"], ack["messageId"], ack["resultMsg"]),
                         (h.MSG_HEARTBEAT_ACK, "good", "token refreshed"))
        code, reason, _, _ = short.read_until_close(timeout=1 + LEEWAY + 8, answer_pings=True)
        self.assertEqual((code, reason), (4005, "token expired"))
        # The refreshed session outlived the old expiry and still works.
        keeper.send_json({"msgType": 3, "messageId": "after"})
        self.assertEqual(keeper.recv_json()["messageId"], "after")
        self.assertGreaterEqual(self.bridge.metric("cloudpush_bridge_closes_total",
                                                   {"reason": "token_expired"}), 1)


class AbuseTest(h.IntegrationTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mosq = cls.class_mosquitto()
        cls.bridge = cls.class_bridge(cls.mosq, bridge_id="abused",
                                      args=["--client-rate", "20", "--client-burst", "20",
                                            "--idle-timeout", "3"])

    def honest_still_receives(self, s):
        h.mqtt_publish(self.mosq.port, h.topic("client", s.channel_id), {"msg": {"ok": 1}})
        m = s.recv()
        self.assertEqual(m["msg"], {"ok": 1})

    def test_rate_limit_error_then_close(self):
        honest = self.session(self.bridge.port, h.uniq("honest"))
        flood = self.raw_ws(self.bridge.port, h.uniq("flood"))
        self.assertEqual(flood.recv_json()["msgType"], h.MSG_CONNECTION)
        for i in range(40):
            flood.send_json({"msgType": 3, "messageId": "m%d" % i})
        acks, errors = 0, []
        for _ in range(21):
            m = flood.recv_json()
            if m["msgType"] == h.MSG_HEARTBEAT_ACK:
                acks += 1
            else:
                errors.append(m)
        self.assertEqual(acks, 20)
        self.assertEqual(len(errors), 1)
        self.assertIn("rate limit exceeded", errors[0]["resultMsg"])
        # Sustained abuse: closed with 4008.
        for i in range(300):
            try:
                flood.send_json({"msgType": 3, "messageId": "z%d" % i})
            except OSError:
                break
        code, reason, _, _ = flood.read_until_close(timeout=5)
        self.assertEqual((code, reason), (4008, "rate limit exceeded"))
        self.honest_still_receives(honest)
        self.assertGreaterEqual(self.bridge.metric("cloudpush_bridge_rate_limited_total"), 100)

    def test_forged_fields_are_overwritten(self):
        a, b = h.uniq("forger"), h.uniq("victim")
        sa, sb = self.session(self.bridge.port, a), self.session(self.bridge.port, b)
        sa.send({"msgType": 1, "to": [b], "msg": {"x": 1}, "from": "admin",
                 "sessionId": "fake", "trigger": 1})
        m = sb.recv()
        self.assertEqual((m["from"], m["trigger"], m["sessionId"]),
                         (a, h.TRIGGER_WEBSOCKET, sb.session_id))

    def test_wildcards_and_levels_never_reach_the_bus(self):
        s = self.session(self.bridge.port, h.uniq("wild"))
        for bad in ("#", "+", "a/b", "cloudpush/broadcast", "x/#"):
            with self.subTest(bad=bad):
                with self.assertRaises(h.HandshakeRejected) as cm:
                    h.RawWs(self.bridge.port, bad)
                self.assertEqual(cm.exception.status, 400)
                s.send({"msgType": 1, "to": [bad], "msg": {}, "messageId": "w"})
                err = s.recv()
                self.assertEqual((err["msgType"], err["messageId"]), (h.MSG_ERROR, "w"))
        self.honest_still_receives(s)

    def test_deep_json_and_garbage(self):
        s = self.session(self.bridge.port, h.uniq("deep"))
        deep = '{"msgType":1,"to":["x"],"msg":' + "[" * 5000 + "]" * 5000 + "}"
        s.send_raw(deep)
        err = s.recv()
        self.assertEqual(err["msgType"], h.MSG_ERROR)
        self.assertEqual(err["resultMsg"], "invalid JSON: nested deeper than 64 levels")
        s.send_raw("\x00\x01\x02 not json")
        self.assertEqual(s.recv()["resultMsg"], "invalid JSON")
        self.honest_still_receives(s)

    def test_fragment_that_never_finishes(self):
        raw = self.raw_ws(self.bridge.port, h.uniq("frag"))
        self.assertEqual(raw.recv_json()["msgType"], h.MSG_CONNECTION)
        raw.send_frame(h.OP_TEXT, b'{"msgType":3,', fin=False)
        # Never finished, never answered to pings: the idle timeout ends it.
        code, _, _, _ = raw.read_until_close(timeout=10)
        self.assertEqual(code, 4001)
        # (Clients that stay silent longer than the 3 s idle timeout are
        # closed too, so the honest client is one that just connected.)
        self.honest_still_receives(self.session(self.bridge.port, h.uniq("ok")))

    def test_slowloris_handshake_is_dropped(self):
        honest = self.session(self.bridge.port, h.uniq("ok2"))
        socks = []
        for _ in range(20):
            c = socket.create_connection(("127.0.0.1", self.bridge.port), timeout=5)
            c.sendall(b"GET /ws?channelId=slow HTTP/1.1\r\nHost: x\r\n")  # never finished
            socks.append(c)
        self.honest_still_receives(honest)
        deadline = time.monotonic() + h.t(20)
        closed = 0
        for c in socks:
            c.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                closed += c.recv(1024) == b""
            except (socket.timeout, OSError):
                pass
            c.close()
        self.assertEqual(closed, 20, "half-open handshakes must be dropped by the server")
        self.honest_still_receives(self.session(self.bridge.port, h.uniq("ok3")))


class TlsTest(h.IntegrationTest):
    """wss:// on a bridge and on the balancer's entry point, with a
    self-signed certificate made by the test."""

    def test_wss_bridge_and_balancer(self):
        import ssl
        import subprocess

        import websocket
        cert, key = self.dir + "/cert.pem", self.dir + "/key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
                        "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
        mosq = self.start_mosquitto()
        redis = self.start_redis()
        tls = ["--tls-cert", cert, "--tls-key", key]
        bridge = self.start_bridge(mosq, bridge_id="tlsb", redis=redis, wait=False,
                                   args=tls + ["--registry-interval-ms", "300"])
        ctx = ssl.create_default_context(cafile=cert)

        def healthy():
            import urllib.request
            try:
                return urllib.request.urlopen("https://127.0.0.1:%d/healthz" % bridge.port,
                                              context=ctx, timeout=2).status == 200
            except OSError:
                return False
        h.wait_until(healthy, h.t(10), what="bridge healthy over https")
        bal = self.start_balancer(redis, wait=False, args=tls + ["--tls-verify-bridges=false"])
        h.wait_until(lambda: h.tcp_accepts(bal.port), h.t(10), what="balancer listening")
        cid = h.uniq("tls")
        direct = websocket.create_connection("wss://127.0.0.1:%d/ws?channelId=%s" % (
            bridge.port, cid), sslopt={"ca_certs": cert}, timeout=h.t(5))
        self.addCleanup(direct.close)
        self.assertEqual(json.loads(direct.recv())["msgType"], h.MSG_CONNECTION)

        def relayed():
            try:
                ws = websocket.create_connection("wss://127.0.0.1:%d/ws?channelId=%s-r" % (
                    bal.port, cid), sslopt={"ca_certs": cert}, timeout=h.t(5))
            except (OSError, websocket.WebSocketException):
                return None
            return ws
        via = h.wait_until(relayed, h.t(10), what="relay over wss")
        self.addCleanup(via.close)
        self.assertEqual(json.loads(via.recv())["msgType"], h.MSG_CONNECTION)
        h.mqtt_publish(mosq.port, h.topic("broadcast"), {"msg": {"secure": True}})
        self.assertEqual(json.loads(direct.recv())["msg"], {"secure": True})
        self.assertEqual(json.loads(via.recv())["msg"], {"secure": True})
        # Plain ws:// to a TLS port is not served.
        with self.assertRaises(Exception):
            websocket.create_connection("ws://127.0.0.1:%d/ws?channelId=x" % bridge.port,
                                        timeout=h.t(3))


class AddressLimitTest(h.IntegrationTest):
    """Per client address: concurrent sessions and new-connection rate."""

    def refused(self, port, cid, code, headers=None):
        with self.assertRaises(h.HandshakeRejected) as cm:
            h.RawWs(port, cid, extra_headers=headers)
        self.assertEqual(cm.exception.status, 429, cm.exception.body)
        self.assertEqual(cm.exception.json()["code"], code)

    def test_concurrent_and_rate_limits(self):
        mosq = self.start_mosquitto()
        capped = self.start_bridge(mosq, bridge_id="capped",
                                   args=["--max-connections-per-ip", "3"])
        held = [self.session(capped.port, h.uniq("cap")) for _ in range(3)]
        self.refused(capped.port, h.uniq("cap"), "too_many_connections_from_address")
        held[0].close()
        h.wait_until(lambda: capped.healthz()[1]["connections"] == 2, h.t(5), what="one left")
        self.session(capped.port, h.uniq("cap"))  # room again
        self.assertGreaterEqual(capped.metric("cloudpush_bridge_address_limited_total"), 1)

        paced = self.start_bridge(mosq, bridge_id="paced",
                                  args=["--connect-rate-per-ip", "2", "--connect-burst-per-ip",
                                        "3"])
        for _ in range(3):
            self.session(paced.port, h.uniq("rate"))
        self.refused(paced.port, h.uniq("rate"), "connection_rate_exceeded")
        time.sleep(1.2)  # two more tokens at 2 per second
        self.session(paced.port, h.uniq("rate"))

    def test_forwarded_for_only_from_trusted_proxies(self):
        mosq = self.start_mosquitto()
        untrusting = self.start_bridge(mosq, bridge_id="untrusting",
                                       args=["--max-connections-per-ip", "1"])
        a = self.raw_ws(untrusting.port, h.uniq("x"), extra_headers={"X-Forwarded-For": "a1"})
        self.assertEqual(a.recv_json()["msgType"], h.MSG_CONNECTION)
        # A forged header does not make a second client out of the same peer.
        self.refused(untrusting.port, h.uniq("x"), "too_many_connections_from_address",
                     {"X-Forwarded-For": "b2"})
        trusting = self.start_bridge(mosq, bridge_id="trusting",
                                     args=["--max-connections-per-ip", "1",
                                           "--trusted-proxies", "127.0.0.1"])
        for who in ("a1", "b2"):
            ws = self.raw_ws(trusting.port, h.uniq("y"), extra_headers={"X-Forwarded-For": who})
            self.assertEqual(ws.recv_json()["msgType"], h.MSG_CONNECTION)
        self.refused(trusting.port, h.uniq("y"), "too_many_connections_from_address",
                     {"X-Forwarded-For": "other, a1"})


if __name__ == "__main__":
    unittest.main()
