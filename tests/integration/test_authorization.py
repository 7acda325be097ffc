"""What an authenticated client may do, and who may connect at all: the
token's `pub` claim decides which ids a client pushes to, the rate limit
counts recipients, --allowed-origins refuses other pages on bridges and the
balancer, and the balancer refuses before the upgrade when its descriptors
cannot hold another relay."""

import re
import unittest

import harness as h
from test_security import SECRET, token

MSG_ERROR = h.MSG_ERROR


class PubClaimTest(h.IntegrationTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mosq = cls.class_mosquitto()
        cls.bridge = cls.class_bridge(cls.mosq, bridge_id="authz",
                                      args=["--jwt-secret", SECRET, "--client-rate", "10",
                                            "--client-burst", "10"])
        cls.any_bridge = cls.class_bridge(cls.mosq, bridge_id="authz-any",
                                          args=["--jwt-secret", SECRET, "--client-push-any"])

    def client(self, sub, pub=None, bridge=None):
        extra = {} if pub is None else {"pub": pub}
        return self.session((bridge or self.bridge).port, sub,
                            query={"token": token(sub, extra=extra)})

    def push(self, s, to, mid):
        s.send({"msgType": h.MSG_BUSINESS, "messageId": mid, "to": to, "msg": {"m": mid}})
        return s.recv()

    def test_pushes_only_to_what_pub_names(self):
        forbidden = self.bridge.metric("cloudpush_bridge_push_forbidden_total")
        alice = self.client(h.uniq("alice"), pub=["bob-1", "room-*"])
        bob, room = self.client("bob-1"), self.client(h.uniq("room-"))
        carol = self.client(h.uniq("carol"))
        reply = self.push(alice, ["bob-1", room.channel_id], "ok-1")
        self.assertEqual(reply["msgType"], h.MSG_BUSINESS_ACK, reply)
        self.assertEqual(bob.recv()["msg"], {"m": "ok-1"})
        self.assertEqual(room.recv()["msg"], {"m": "ok-1"})
        reply = self.push(alice, ["bob-1", carol.channel_id], "no-1")
        self.assertEqual(reply["msgType"], MSG_ERROR)
        self.assertEqual(reply["messageId"], "no-1")
        self.assertEqual(reply["resultMsg"], "not allowed to push to %s: the token's pub claim "
                                             "does not name it" % carol.channel_id)
        # Nothing of a refused message went out, not even to the allowed id.
        self.assertEqual(self.push(alice, ["bob-1"], "ok-2")["msgType"], h.MSG_BUSINESS_ACK)
        self.assertEqual(bob.recv()["msg"], {"m": "ok-2"})
        self.assertEqual(self.bridge.metric("cloudpush_bridge_push_forbidden_total"),
                         forbidden + 1)

    def test_no_pub_claim_means_no_pushes(self):
        s = self.client(h.uniq("nopub"))
        reply = self.push(s, [s.channel_id], "self")
        self.assertEqual(reply["msgType"], MSG_ERROR)
        self.assertIn("the token has no pub claim", reply["resultMsg"])

    def test_star_and_refresh(self):
        target = self.client(h.uniq("t"))
        s = self.client(h.uniq("star"), pub=[])
        self.assertEqual(self.push(s, [target.channel_id], "a")["msgType"], MSG_ERROR)
        # A refreshed token brings its own pub claim.
        s.send({"msgType": h.MSG_HEARTBEAT, "messageId": "r",
                "msg": {"token": token(s.channel_id, extra={"pub": ["*"]})}})
        self.assertEqual(s.recv()["resultMsg"], "token refreshed")
        self.assertEqual(self.push(s, [target.channel_id], "b")["msgType"], h.MSG_BUSINESS_ACK)
        self.assertEqual(target.recv()["msg"], {"m": "b"})

    def test_malformed_pub_claim_refuses_the_token(self):
        for pub in ("bob", [1], ["a/b"], ["x*y"], ["ok"] * 65):
            with self.subTest(pub=str(pub)[:30]):
                with self.assertRaises(h.HandshakeRejected) as cm:
                    h.RawWs(self.bridge.port, path="/ws",
                            raw_query="token=" + token("m", extra={"pub": pub}))
                self.assertEqual(cm.exception.status, 401)
                self.assertIn("pub must be", cm.exception.json()["msg"])

    def test_client_push_any_restores_the_original(self):
        target = self.client(h.uniq("t2"), bridge=self.any_bridge)
        s = self.client(h.uniq("anyone"), bridge=self.any_bridge)
        self.assertEqual(self.push(s, [target.channel_id], "c")["msgType"], h.MSG_BUSINESS_ACK)
        self.assertEqual(target.recv()["msg"], {"m": "c"})

    def test_rate_limit_counts_recipients(self):
        # --client-rate 10, --client-burst 10: one message to 8 recipients
        # uses 8; the next one to 5 more does not fit.
        ids = [h.uniq("r%d-" % i) for i in range(13)]
        s = self.client(h.uniq("fan"), pub=["*"])
        self.assertEqual(self.push(s, ids[:8], "eight")["msgType"], h.MSG_BUSINESS_ACK)
        reply = self.push(s, ids[8:], "five")
        self.assertEqual(reply["msgType"], MSG_ERROR)
        self.assertIn("rate limit exceeded", reply["resultMsg"])
        self.assertIn("(recipients)", reply["resultMsg"])


class OriginTest(h.IntegrationTest):

    def test_allowed_origins_on_bridge_and_balancer(self):
        mosq = self.start_mosquitto()
        redis = self.start_redis()
        origins = ["--allowed-origins", "https://app.example,http://127.0.0.1:8080"]
        bridge = self.start_bridge(mosq, bridge_id="origins", redis=redis,
                                   args=origins + ["--registry-interval-ms", "300",
                                                   "--registry-ttl-ms", "1500"])
        bal = self.start_balancer(redis, args=origins + ["--bridge-ttl-ms", "1500"])
        h.wait_until(lambda: bal.live_ids() == ["origins"], h.t(10), what="bridge seen")
        for port, path in ((bridge.port, "/ws"), (bal.port, "/ws")):
            with self.subTest(port=port):
                with self.assertRaises(h.HandshakeRejected) as cm:
                    h.RawWs(port, "o1", path=path, extra_headers={"Origin": "https://evil.example"})
                self.assertEqual(cm.exception.status, 403)
                self.assertEqual(cm.exception.json()["code"], "forbidden_origin")
                for origin in ("https://app.example", "HTTP://127.0.0.1:8080"):
                    ws = h.RawWs(port, h.uniq("o2"), path=path, extra_headers={"Origin": origin})
                    self.assertEqual(ws.recv_json()["msgType"], h.MSG_CONNECTION)
                    ws.close()
                ws = h.RawWs(port, h.uniq("o3"), path=path)  # no Origin: not a browser
                self.assertEqual(ws.recv_json()["msgType"], h.MSG_CONNECTION)
                ws.close()
        self.assertEqual(bridge.metric("cloudpush_bridge_handshakes_rejected_total",
                                       {"reason": "forbidden_origin"}), 1)
        st, _, text = h.http_request(bal.port, "GET", "/metrics")
        self.assertEqual(h.metric_value(text.decode(), "cloudpush_balancer_forbidden_origin_total"),
                         1)


class BalancerDescriptorTest(h.IntegrationTest):
    """Two descriptors per relayed client: past ~9 990 clients on a 20 000
    limit new clients got 101 and then 1013. Now the balancer knows its room
    and refuses before the upgrade."""

    def test_refused_before_the_upgrade_when_descriptors_run_out(self):
        mosq = self.start_mosquitto()
        redis = self.start_redis()
        self.start_bridge(mosq, bridge_id="fds", redis=redis,
                          args=["--registry-interval-ms", "300", "--registry-ttl-ms", "1500"])
        # The service thread's own relay (the one a TLS listener uses): two
        # descriptors per client in one process. The byte relay's workers,
        # one limit each, are tested in test_balancer_relay. No hand-over to
        # the local bridge: a handed-over client holds no descriptor here.
        bal = h.Balancer(self.dir, redis, args=["--bridge-ttl-ms", "1500",
                                                "--relay-workers", "0", "--handover-dir", "off"])
        plain = bal.command
        # 100 descriptors: 64 kept for itself, room for 18 relays.
        bal.command = lambda: ["prlimit", "--nofile=100:100", "--"] + plain()
        self.addCleanup(bal.stop)
        self._logs.append(bal.log_path)
        bal.start()
        h.wait_until(lambda: bal.live_ids() == ["fds"], h.t(10), what="bridge seen")
        st, _, text = h.http_request(bal.port, "GET", "/metrics")
        self.assertEqual(h.metric_value(text.decode(), "cloudpush_balancer_relay_capacity"), 18)
        clients = []
        try:
            for i in range(18):
                ws = h.RawWs(bal.port, h.uniq("fd%d-" % i), path="/ws")
                self.assertEqual(ws.recv_json()["msgType"], h.MSG_CONNECTION)
                clients.append(ws)
            for _ in range(3):
                with self.assertRaises(h.HandshakeRejected) as cm:
                    h.RawWs(bal.port, h.uniq("over"), path="/ws")
                self.assertEqual(cm.exception.status, 503)
                self.assertEqual(cm.exception.json()["code"], "descriptor_limit")
            # Every relayed client still works.
            for ws in clients:
                ws.send_json({"msgType": h.MSG_HEARTBEAT, "messageId": "hb"})
                self.assertEqual(ws.recv_json()["msgType"], h.MSG_HEARTBEAT_ACK)
        finally:
            for ws in clients:
                ws.close()
        with open(bal.log_path) as f:
            log = f.read()
        self.assertEqual(len(re.findall("refusing new clients", log)), 1, "logged once")
        self.assertIn("leaves room for 18 relayed clients", log)
        # Room again once clients left.
        h.wait_until(lambda: self._connects(bal), h.t(10), what="a relay after clients left")

    def _connects(self, bal):
        try:
            ws = h.RawWs(bal.port, h.uniq("again"), path="/ws")
        except h.HandshakeRejected:
            return False
        ws.close()
        return True
