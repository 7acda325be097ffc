"""The balancer's byte relay (issue 14): worker processes copy bytes between
client and bridge once the balancer's checks passed, and the bridge answers
the upgrade itself. Real mosquitto, redis-server, bridges and balancer."""

import base64
import hashlib
import hmac
import json
import os
import signal
import subprocess
import time
import unittest

import harness as h

BRIDGE_ARGS = ["--registry-interval-ms", "300", "--registry-ttl-ms", "1500"]
# The relay itself is under test: no hand-overs to the (local) bridges.
BAL_ARGS = ["--bridge-ttl-ms", "1500", "--relay-workers", "2", "--handover-dir", "off"]


def make_jwt(secret, claims):
    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    head = b64(b'{"alg":"HS256"}')
    body = b64(json.dumps(claims, separators=(",", ":")).encode())
    sig = b64(hmac.new(secret.encode(), (head + "." + body).encode(), hashlib.sha256).digest())
    return head + "." + body + "." + sig


class LimitedBalancer(h.Balancer):
    """A balancer started under prlimit with a descriptor limit of its own
    (soft and hard: the balancer cannot raise it)."""

    def __init__(self, *a, nofile, **kw):
        super().__init__(*a, **kw)
        self.nofile = nofile

    def command(self):
        return ["prlimit", "--nofile=%d:%d" % (self.nofile, self.nofile), "--"] + \
            super().command()


class BalancerRelayTest(h.IntegrationTest):

    def stack(self, bridges=1, bal_args=(), balancer_cls=None, bridge_args=(), **bal_kw):
        self.mosq = self.start_mosquitto()
        self.redis = self.start_redis()
        self.bridges = [self.start_bridge(self.mosq, bridge_id=h.uniq("relb%d" % i),
                                          args=BRIDGE_ARGS + list(bridge_args),
                                          redis=self.redis)
                        for i in range(bridges)]
        if balancer_cls:
            bal = balancer_cls(self.dir, self.redis, args=BAL_ARGS + list(bal_args), **bal_kw)
            self.addCleanup(bal.stop)
            self._logs.append(bal.log_path)
            self.bal = bal.start()
        else:
            self.bal = self.start_balancer(self.redis, args=BAL_ARGS + list(bal_args))
        want = sorted(b.id for b in self.bridges)
        h.wait_until(lambda: self.bal.live_ids() == want, h.t(10), what="balancer sees bridges")
        return self.bal

    def connected(self, ws, cid):
        m = ws.recv_json(timeout=10)
        self.assertEqual(m.get("resultMsg"), "connected, channelId=%s" % cid, m)
        return m

    def test_workers_relay_bytes(self):
        bal = self.stack()
        self.assertEqual(bal.metric("cloudpush_balancer_relay_workers"), 2)
        cid = h.uniq("bytes")
        ws = self.raw_ws(bal.port, cid, path="/ws")
        self.connected(ws, cid)
        ws.send_json({"msgType": 3, "messageId": "hb-1"})
        self.assertEqual(ws.recv_json(timeout=10).get("messageId"), "hb-1")
        m = bal.metrics()
        self.assertEqual(h.metric_value(m, "cloudpush_balancer_relays"), 1)
        self.assertGreater(h.metric_value(m, "cloudpush_balancer_relay_bytes_total",
                                          {"direction": "down"}), 0)
        # Nothing counted message by message: the workers do not parse frames.
        self.assertEqual(h.metric_value(m, "cloudpush_balancer_relay_messages_total",
                                        {"direction": "down"}), 0)

    def test_large_messages_both_ways(self):
        # 600 KB from one relayed client to another, up and down through the
        # workers (many times a relay buffer: it goes in pieces).
        bal = self.stack(bridge_args=["--max-message-bytes", "2000000"])
        a, b = h.uniq("biga"), h.uniq("bigb")
        wa = self.raw_ws(bal.port, a, path="/ws")
        wb = self.raw_ws(bal.port, b, path="/ws")
        self.connected(wa, a)
        self.connected(wb, b)
        body = {"blob": "x" * 600000, "tail": "\u00e9\u4e2d"}
        wa.send_json({"msgType": 1, "to": [b], "msg": body, "messageId": "big-1"})
        got = None
        deadline = time.monotonic() + h.t(20)
        while time.monotonic() < deadline:
            m = wb.recv_json(timeout=20)
            if m.get("messageId") == "big-1" or m.get("msg") == body:
                got = m
                break
        self.assertIsNotNone(got, "the 600 KB message did not arrive")
        self.assertEqual(got["msg"], body)

    def test_many_clients(self):
        bal = self.stack(bridges=2)
        n = 400
        socks = []
        for i in range(n):
            cid = "many-%03d-%s" % (i, h.uniq("m"))
            ws = self.raw_ws(bal.port, cid, path="/ws")
            socks.append((cid, ws))
        for cid, ws in socks:
            self.connected(ws, cid)
        per = [int(b.metric("cloudpush_bridge_connections")) for b in self.bridges]
        self.assertEqual(sum(per), n, per)
        self.assertGreater(min(per), n // 4, per)
        h.wait_until(lambda: bal.metric("cloudpush_balancer_relays") == n, h.t(5),
                     what="%d relays" % n)
        for i, (cid, ws) in enumerate(socks):
            ws.send_json({"msgType": 3, "messageId": "m%d" % i})
        for i, (cid, ws) in enumerate(socks):
            self.assertEqual(ws.recv_json(timeout=10).get("messageId"), "m%d" % i)
        for _, ws in socks:
            ws.send_close(1000)
        h.wait_until(lambda: bal.metric("cloudpush_balancer_relays") == 0, h.t(10),
                     what="every relay closed")

    def test_query_and_token_pass_through(self):
        secret = "relay-secret-0123456789abcdef0123"
        self.mosq = self.start_mosquitto()
        self.redis = self.start_redis()
        bridge = self.start_bridge(self.mosq, bridge_id=h.uniq("reltok"),
                                   args=BRIDGE_ARGS + ["--jwt-secret", secret], redis=self.redis)
        self.bal = bal = self.start_balancer(self.redis, args=BAL_ARGS + ["--jwt-secret", secret])
        h.wait_until(lambda: bal.live_ids() == [bridge.id], h.t(10), what="balancer sees bridge")
        cid = h.uniq("tok")
        token = make_jwt(secret, {"sub": cid, "exp": int(time.time()) + 600})
        # In the query, with other arguments around it (percent-encoded ones too).
        ws = self.raw_ws(bal.port, None, path="/ws",
                         raw_query="a=1&token=%s&b=%%C3%%A9+x&channelId=%s" % (token, cid))
        self.connected(ws, cid)
        # The offered subprotocol goes along: the bridge's answer names it.
        cid2 = h.uniq("tokp")
        token2 = make_jwt(secret, {"sub": cid2, "exp": int(time.time()) + 600})
        ws2 = self.raw_ws(bal.port, None, path="/ws",
                          raw_query="channelId=%s&token=%s" % (cid2, token2),
                          extra_headers={"Sec-WebSocket-Protocol": "cloudpush"})
        self.assertEqual(ws2.headers.get("sec-websocket-protocol"), "cloudpush")
        self.connected(ws2, cid2)
        # A bad token is refused by the balancer before anything reaches a bridge.
        st, _, body = h.handshake_error(bal.port, path="/ws",
                                        raw_query="channelId=%s&token=bad" % cid)
        self.assertEqual(st, 401, body)

    def test_bridge_going_away_closes_the_client(self):
        bal = self.stack()
        cid = h.uniq("gone")
        ws = self.raw_ws(bal.port, cid, path="/ws")
        self.connected(ws, cid)
        self.bridges[0].stop(sig=signal.SIGKILL, check=False)
        code, reason, _, _ = ws.read_until_close(timeout=10)
        self.assertEqual((code, reason), (1001, "bridge closed"))
        h.wait_until(lambda: bal.metric("cloudpush_balancer_relays") == 0, h.t(10),
                     what="the relay freed")
        self.assertEqual(bal.metric("cloudpush_balancer_relay_bridge_gone_total"), 1)

    def test_bridge_unreachable_is_503_before_the_upgrade(self):
        bal = self.stack()
        # The registry still lists the bridge for a while after it died.
        self.bridges[0].stop(sig=signal.SIGKILL, check=False)
        st, _, body = h.handshake_error(bal.port, path="/ws", channel_id=h.uniq("unr"))
        self.assertEqual(st, 503, body)
        self.assertIn(json.loads(body)["code"], ("bridge_unreachable", "no_bridge"), body)

    def test_drain_closes_with_1012_paced(self):
        bal = self.stack(bal_args=["--drain-seconds", "3"])
        n = 12
        socks = []
        for i in range(n):
            cid = h.uniq("drain%d-" % i)
            ws = self.raw_ws(bal.port, cid, path="/ws")
            self.connected(ws, cid)
            socks.append(ws)
        t0 = time.monotonic()
        bal.proc.send_signal(signal.SIGTERM)
        when, codes = [], []
        for ws in socks:
            code, reason, _, _ = ws.read_until_close(timeout=15)
            codes.append((code, reason))
            when.append(time.monotonic() - t0)
            ws.close()  # answered by the client's end of the TCP connection
        self.assertEqual(set(codes), {(1012, "balancer restarting")}, codes)
        # Paced: spread over the drain, not all at once.
        self.assertGreater(max(when) - min(when), 1.0, when)
        self.assertEqual(bal.proc.wait(timeout=h.t(15)), 0)
        self.assertIn("draining", h.tail(bal.log_path, 40))

    def test_bridge_drain_1012_passes_through(self):
        mosq = self.start_mosquitto()
        redis = self.start_redis()
        bridge = self.start_bridge(mosq, bridge_id=h.uniq("reld"), redis=redis,
                                   args=BRIDGE_ARGS + ["--drain-seconds", "1"])
        bal = self.start_balancer(redis, args=BAL_ARGS)
        h.wait_until(lambda: bal.live_ids() == [bridge.id], h.t(10), what="balancer sees bridge")
        cid = h.uniq("bd")
        ws = self.raw_ws(bal.port, cid, path="/ws")
        self.connected(ws, cid)
        bridge.proc.send_signal(signal.SIGTERM)
        code, _, _, _ = ws.read_until_close(timeout=15)
        self.assertEqual(code, 1012)

    def test_a_dead_worker_gets_no_more_clients(self):
        bal = self.stack()
        workers = [int(p) for p in subprocess.check_output(
            ["pgrep", "-P", str(bal.proc.pid)]).split()]
        self.assertEqual(len(workers), 2, workers)
        os.kill(workers[0], signal.SIGKILL)

        def dead():  # a zombie until the balancer exits: its sockets are closed
            with open("/proc/%d/stat" % workers[0]) as f:
                return f.read().split(") ", 1)[1].startswith("Z")
        h.wait_until(dead, h.t(5), what="the worker gone")
        for i in range(6):
            cid = h.uniq("alive%d-" % i)
            ws = self.raw_ws(bal.port, cid, path="/ws")
            self.connected(ws, cid)
        self.assertIn("no more clients for it", h.tail(bal.log_path, 40))

    def test_descriptor_limit_503_under_prlimit(self):
        # 2 workers with 60 descriptors each: (60 - 16) / 2 = 22 relays each.
        bal = self.stack(balancer_cls=LimitedBalancer, nofile=60)
        cap = bal.metric("cloudpush_balancer_relay_capacity")
        self.assertEqual(cap, 44)
        self.assertEqual(bal.metric("cloudpush_balancer_relay_capacity_descriptor_bound"), 1)
        self.assertIn("leaves room for 44 relayed clients", h.tail(bal.log_path, 80))
        held = []
        for i in range(44):
            cid = h.uniq("lim%d-" % i)
            ws = self.raw_ws(bal.port, cid, path="/ws")
            self.connected(ws, cid)
            held.append(ws)
        st, _, body = h.handshake_error(bal.port, path="/ws", channel_id=h.uniq("over"))
        self.assertEqual((st, json.loads(body)["code"]), (503, "descriptor_limit"), body)
        self.assertGreaterEqual(bal.metric("cloudpush_balancer_descriptor_limited_total"), 1)
        # Room again once a client left.
        held.pop().send_close(1000)
        h.wait_until(lambda: bal.metric("cloudpush_balancer_relays") == 43, h.t(10),
                     what="a relay freed")
        cid = h.uniq("again")
        ws = self.raw_ws(bal.port, cid, path="/ws")
        self.connected(ws, cid)


if __name__ == "__main__":
    unittest.main()
