"""Hand-over (issue 14): a balancer gives a client's connection to a bridge on
its own host through the bridge's socket in the hand-over directory, and is
out of the path from then on. Real mosquitto, redis-server, bridges and
balancer; the directory is the test process's own (harness.handover_dir)."""

import os
import signal
import socket
import stat
import tempfile
import time
import unittest

import harness as h

BRIDGE_ARGS = ["--registry-interval-ms", "300", "--registry-ttl-ms", "1500"]
BAL_ARGS = ["--bridge-ttl-ms", "1500", "--relay-workers", "1"]


class _Capture:
    """Stands in for a socket while RawWs writes its request."""

    def __init__(self):
        self.data = b""

    def sendall(self, data):
        self.data += data


class PacedWs(h.RawWs):
    """A RawWs whose upgrade request leaves `pause` seconds after connect,
    whole or (split) in two pieces `gap` seconds apart."""

    def __init__(self, *args, pause=0.0, split=None, gap=0.0, **kw):
        self.pause, self.split, self.gap = pause, split, gap
        super().__init__(*args, **kw)

    def _send_handshake(self, target, extra_headers):
        real, cap = self.sock, _Capture()
        self.sock = cap
        try:
            super()._send_handshake(target, extra_headers)
        finally:
            self.sock = real
        time.sleep(self.pause)
        cut = self.split or len(cap.data)
        real.sendall(cap.data[:cut])
        if cut < len(cap.data):
            time.sleep(self.gap)
            real.sendall(cap.data[cut:])


class BalancerHandoverTest(h.IntegrationTest):

    def settles(self, service, name, value):
        """A bridge's /metrics sums its workers' copies, which it asks them
        to refresh: a count another worker just raised may show a moment
        later."""
        h.wait_until(lambda: service.metric(name) == value, h.t(5), 0.05,
                     "%s == %s (last %s)" % (name, value, service.metric(name)))

    def stack(self, bridge_args=(), bal_args=(), bridge_env=None, bal_env=None, bridge_id=None):
        self.mosq = self.start_mosquitto()
        self.redis = self.start_redis()
        self.bridge = self.start_bridge(self.mosq, bridge_id=bridge_id or h.uniq("hob"),
                                        args=BRIDGE_ARGS + list(bridge_args), redis=self.redis,
                                        env=bridge_env)
        self.bal = self.start_balancer(self.redis, args=BAL_ARGS + list(bal_args), env=bal_env)
        h.wait_until(lambda: self.bal.live_ids() == [self.bridge.id], h.t(10),
                     what="balancer sees the bridge")
        return self.bal

    def connected(self, ws, cid):
        m = ws.recv_json(timeout=10)
        self.assertEqual(m.get("resultMsg"), "connected, channelId=%s" % cid, m)
        return m

    def roundtrip(self, ws, cid):
        """A heartbeat answered and a bus message delivered on ws."""
        ws.send_json({"msgType": 3, "messageId": "hb-%s" % cid})
        self.assertEqual(ws.recv_json(timeout=10).get("messageId"), "hb-%s" % cid)
        # Published again with the same messageId until it arrives: right
        # after a start the sequencer leader may hold the lease before its
        # subscription exists, and the broker drops what comes meanwhile (a
        # known window, docs/topics.md); a retry with the same messageId is
        # stored and delivered once.
        pub = self.mqtt_client(self.mosq.port)
        body = '{"msg":{"to":"%s"},"messageId":"rt-%s"}' % (cid, cid)
        got = None
        for _ in range(10):
            pub.publish("cloudpush/client/%s" % cid, body)
            try:
                got = ws.recv_json(timeout=h.t(1.5))
                break
            except (TimeoutError, OSError):
                continue
        self.assertIsNotNone(got, "the bus message never arrived")
        self.assertEqual(got.get("msg"), {"to": cid}, got)

    def test_local_bridge_takes_the_client(self):
        bal = self.stack()
        cid = h.uniq("ho")
        ws = self.raw_ws(bal.port, cid, path="/ws")
        self.connected(ws, cid)
        self.roundtrip(ws, cid)
        m = bal.metrics()
        self.assertEqual(h.metric_value(m, "cloudpush_balancer_handed_to_bridge_total"), 1)
        self.assertEqual(h.metric_value(m, "cloudpush_balancer_relays"), 0)
        self.assertEqual(h.metric_value(m, "cloudpush_balancer_handover_failed_total"), 0)
        self.settles(self.bridge, "cloudpush_bridge_handovers_total", 1)
        self.settles(self.bridge, "cloudpush_bridge_connections", 1)
        # The socket is private to the user: nobody else can hand clients in.
        path = os.path.join(h.handover_dir(), self.bridge.id + ".sock")
        self.assertTrue(stat.S_ISSOCK(os.stat(path).st_mode))
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)

    def test_a_whole_request_is_handed_over_before_lws_reads_it(self):
        # A request whole in the socket at accept, or whose first bytes come
        # after it, goes to the bridge unread (balancer/accept.c); one in
        # pieces, or later than the waiting room keeps it (1 s), is read by
        # lws and handed over after the balancer's checks. Every one works.
        bal = self.stack()
        cases = [("now", 0.0, None, 0.0, 1), ("after", 0.3, None, 0.0, 1),
                 ("pieces", 0.0, 20, 0.4, 0), ("late", 2.5, None, 0.0, 0)]
        for name, pause, split, gap, unread in cases:
            with self.subTest(name):
                handed = bal.metric("cloudpush_balancer_handed_to_bridge_total")
                at_accept = bal.metric("cloudpush_balancer_handed_at_accept_total")
                cid = h.uniq("hoacc" + name)
                ws = PacedWs(bal.port, cid, path="/ws", pause=pause, split=split, gap=gap,
                             timeout=10)
                self.addCleanup(ws.close)
                self.connected(ws, cid)
                self.roundtrip(ws, cid)
                m = bal.metrics()
                self.assertEqual(
                    h.metric_value(m, "cloudpush_balancer_handed_to_bridge_total"), handed + 1)
                self.assertEqual(
                    h.metric_value(m, "cloudpush_balancer_handed_at_accept_total"),
                    at_accept + unread)
                self.assertEqual(h.metric_value(m, "cloudpush_balancer_relays"), 0)
        # A plain request that waited for its first bytes is lws's as before.
        with socket.create_connection(("127.0.0.1", bal.port), timeout=h.t(5)) as s:
            time.sleep(0.3)
            s.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                answer += chunk
        self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer[:200])
        self.assertIn(b'"alive"', answer)
        # A client that leaves before a word costs nothing and breaks nothing.
        for _ in range(20):
            socket.create_connection(("127.0.0.1", bal.port), timeout=h.t(5)).close()
        cid = h.uniq("hoaccafter")
        self.connected(self.raw_ws(bal.port, cid, path="/ws"), cid)
        self.assertEqual(self.bridge.proc.poll(), None)
        self.assertEqual(bal.proc.poll(), None)

    def test_a_balancer_with_rules_of_its_own_reads_every_request(self):
        # --allowed-origins (or tokens) on the balancer: its checks need the
        # request parsed, so nothing is handed over unread, and they hold.
        bal = self.stack(bal_args=["--allowed-origins", "http://ok.example"])
        cid = h.uniq("hoorig")
        ws = self.raw_ws(bal.port, cid, path="/ws", extra_headers={"Origin": "http://ok.example"})
        self.connected(ws, cid)
        self.roundtrip(ws, cid)
        with self.assertRaises(h.HandshakeRejected) as refused:
            h.RawWs(bal.port, cid, path="/ws", extra_headers={"Origin": "http://bad.example"})
        self.assertEqual(refused.exception.status, 403)
        m = bal.metrics()
        self.assertEqual(h.metric_value(m, "cloudpush_balancer_handed_to_bridge_total"), 1)
        self.assertEqual(h.metric_value(m, "cloudpush_balancer_handed_at_accept_total"), 0)
        self.assertEqual(h.metric_value(m, "cloudpush_balancer_forbidden_origin_total"), 1)

    def test_many_clients_and_a_large_request(self):
        bal = self.stack()
        clients = []
        for i in range(50):
            cid = h.uniq("hom%d" % i)
            ws = self.raw_ws(bal.port, cid, path="/ws")
            self.connected(ws, cid)
            clients.append((cid, ws))
        # A request over 2 KiB (a long query and Origin) passes whole.
        cid = h.uniq("hobig")
        ws = self.raw_ws(bal.port, None, path="/ws",
                         raw_query="channelId=%s&pad=%s" % (cid, "x" * 1800),
                         extra_headers={"Origin": "http://" + "o" * 600 + ".example"})
        self.connected(ws, cid)
        self.roundtrip(ws, cid)
        for cid, ws in clients[::10]:
            self.roundtrip(ws, cid)
        self.assertEqual(bal.metric("cloudpush_balancer_handed_to_bridge_total"), 51)
        self.settles(self.bridge, "cloudpush_bridge_connections", 51)

    def test_a_bridge_without_handover_is_relayed(self):
        bal = self.stack(bridge_args=["--handover-dir", "off"])
        cid = h.uniq("horel")
        ws = self.raw_ws(bal.port, cid, path="/ws")
        self.connected(ws, cid)
        self.roundtrip(ws, cid)
        m = bal.metrics()
        self.assertEqual(h.metric_value(m, "cloudpush_balancer_handed_to_bridge_total"), 0)
        self.assertEqual(h.metric_value(m, "cloudpush_balancer_relays"), 1)
        self.assertEqual(self.bridge.metric("cloudpush_bridge_handovers_total"), 0)

    def test_a_directory_others_may_write_is_not_used(self):
        shared = tempfile.mkdtemp(prefix="cp-ho-open-")
        self.addCleanup(os.rmdir, shared)
        os.chmod(shared, 0o777)
        env = {"CLOUDPUSH_HANDOVER_DIR": shared}
        bal = self.stack(bridge_env=env, bal_env=env)
        self.assertIn("writable by other users", h.tail(self.bridge.log_path, 60))
        cid = h.uniq("hoopen")
        ws = self.raw_ws(bal.port, cid, path="/ws")
        self.connected(ws, cid)
        self.assertEqual(bal.metric("cloudpush_balancer_relays"), 1)
        self.assertEqual(bal.metric("cloudpush_balancer_handed_to_bridge_total"), 0)
        self.assertEqual(os.listdir(shared), [])

    def test_drain_reaches_handed_over_clients(self):
        bal = self.stack(bridge_args=["--drain-seconds", "1"])
        cid = h.uniq("hodrain")
        ws = self.raw_ws(bal.port, cid, path="/ws")
        self.connected(ws, cid)
        self.bridge.proc.send_signal(signal.SIGTERM)
        got = ws.recv_json(timeout=10)
        self.assertEqual(got.get("msgType"), 5, got)  # RECONNECT, from the bridge itself
        code, _, _, _ = ws.read_until_close(timeout=15)
        self.assertEqual(code, 1012)
        self.bridge.proc.wait(timeout=h.t(20))
        # The bridge removed its socket: nothing is handed to a stopped bridge.
        self.assertFalse(os.path.exists(os.path.join(h.handover_dir(),
                                                     self.bridge.id + ".sock")))

    def test_a_restarted_bridge_takes_over_the_socket(self):
        bid = h.uniq("horestart")
        bal = self.stack(bridge_id=bid)
        self.bridge.stop(sig=signal.SIGKILL, check=False)
        # The killed bridge left its socket file; a new one with its id reclaims it.
        self.assertTrue(os.path.exists(os.path.join(h.handover_dir(), bid + ".sock")))
        again = self.start_bridge(self.mosq, bridge_id=bid, args=BRIDGE_ARGS, redis=self.redis)
        cid = h.uniq("hoagain")
        h.wait_until(lambda: bal.live_ids() == [bid], h.t(10), what="balancer sees the bridge")
        # Until the balancer's view forgot the dead one's load, and until a
        # connection is handed over: while the dead bridge's record is still
        # live under the same id, the balancer may find no listener on the
        # socket yet and relay instead (seen in CI). Relayed ones are closed.
        handed = False
        for _ in range(20):
            try:
                ws = self.raw_ws(bal.port, cid, path="/ws")
            except h.HandshakeRejected:
                time.sleep(0.3)
                continue
            self.connected(ws, cid)
            deadline = time.monotonic() + h.t(2)
            while time.monotonic() < deadline and not handed:
                handed = again.metric("cloudpush_bridge_handovers_total") >= 1
                time.sleep(0.05)
            if handed:
                break
            ws.close()
            time.sleep(0.3)
        self.assertTrue(handed, "no connection was handed to the restarted bridge")
        self.settles(again, "cloudpush_bridge_handovers_total", 1)
        self.roundtrip(ws, cid)

    def test_a_second_bridge_with_the_same_id_does_not_steal_hand_overs(self):
        bid = h.uniq("hodup")
        self.stack(bridge_id=bid)
        # On a broker of its own: the same id is the same MQTT client id.
        twin = self.start_bridge(self.start_mosquitto(), bridge_id=bid)
        self.assertIn("another bridge with id %s takes hand-overs" % bid,
                      h.tail(twin.log_path, 60))
        twin.stop()
        # The twin's stop leaves the first bridge's socket alone.
        self.assertTrue(os.path.exists(os.path.join(h.handover_dir(), bid + ".sock")))
        cid = h.uniq("hodup")
        ws = self.raw_ws(self.bal.port, cid, path="/ws")
        self.connected(ws, cid)
        self.settles(self.bridge, "cloudpush_bridge_handovers_total", 1)


if __name__ == "__main__":
    unittest.main()
