"""Bridge registry and presence in Redis, and the balancer: three (then
four) bridges, a balancer, redis-server and mosquitto, all real."""

import collections
import json
import signal
import time
import unittest

import harness as h

TTL_ARGS = ["--registry-interval-ms", "300", "--registry-ttl-ms", "1500"]
BAL_ARGS = ["--bridge-ttl-ms", "1500"]
API_ARGS = ["--bridge-ttl-ms", "1500"]


class RegistryTest(h.IntegrationTest):

    def start_cluster(self, bridges=3):
        self.mosq = self.start_mosquitto()
        self.redis = self.start_redis()
        self.bridges = [self.start_bridge(self.mosq, bridge_id="reg%d" % i, args=TTL_ARGS,
                                          redis=self.redis) for i in range(bridges)]
        self.bal = self.start_balancer(self.redis, args=BAL_ARGS)
        self.api = self.start_httpapi(self.mosq, redis=self.redis, args=API_ARGS)
        want = sorted(b.id for b in self.bridges)
        h.wait_until(lambda: self.bal.live_ids() == want, h.t(10), what="balancer sees %s" % want)

    def connect_via_balancer(self, ids):
        sessions = {}
        for cid in ids:
            sessions[cid] = self.session(self.bal.port, cid, path="/ws")
        return sessions

    def per_bridge(self):
        return {b.id: int(b.metric("cloudpush_bridge_connections")) for b in self.bridges
                if b.running()}

    def push(self, ids, msg):
        st, body, _ = self.api.push({"to": ids, "msg": msg})
        self.assertEqual(st, 200, body)
        return body["data"]

    def online_count(self, ids):
        n = 0
        for cid in ids:
            st, _, body = h.http_request(self.api.port, "GET", "/api/v1/clients/" + cid)
            self.assertEqual(st, 200, body)
            n += json.loads(body)["online"]
        return n

    def test_balance_presence_offline(self):
        self.start_cluster()
        ids = ["bal-%03d" % i for i in range(300)]
        sessions = self.connect_via_balancer(ids)
        counts = self.per_bridge()
        h.log("300 connections through the balancer: %s" % counts)
        self.assertEqual(sum(counts.values()), 300, counts)
        mean = 300 / 3
        self.assertLessEqual(max(counts.values()) / mean, 1.15, counts)
        # The session ids say which bridge each client landed on.
        landed = collections.Counter(s.session_id.split("_")[0] for s in sessions.values())
        self.assertEqual(dict(landed), counts)

        # Presence: all 300 online once the registries flushed.
        h.wait_until(lambda: self.push(ids, {"probe": 1})["offline"] == [], h.t(10),
                     what="no offline recipient")
        for cid in ids:
            self.assertEqual(sessions[cid].recv(timeout=10)["msg"], {"probe": 1})
        self.assertEqual(self.online_count(ids), 300)

        # Every client receives a push, one HTTP request for all.
        data = self.push(ids, {"all": "three hundred"})
        self.assertEqual(len(data["messages"]), 300)
        for cid in ids:
            m = sessions[cid].recv(timeout=10)
            self.assertEqual(m["msg"], {"all": "three hundred"})
            self.assertEqual(m["to"], [cid])

        # Some disconnect: they are reported offline, the others are not.
        gone = ids[::6]
        for cid in gone:
            sessions[cid].close()
        h.wait_until(lambda: sorted(self.push(ids, {"again": 1})["offline"]) == sorted(gone),
                     h.t(10), what="offline == the 50 that left")
        st, _, body = h.http_request(self.api.port, "GET", "/api/v1/clients/" + gone[0])
        self.assertEqual(json.loads(body), {"channelId": gone[0], "sessions": [],
                                            "online": False})

    def test_dead_bridge_drops_out_and_its_clients_come_back(self):
        self.start_cluster()
        ids = ["kill-%03d" % i for i in range(60)]
        sessions = self.connect_via_balancer(ids)
        victim = self.bridges[0]
        theirs = [c for c, s in sessions.items() if s.session_id.startswith(victim.id + "_")]
        self.assertGreater(len(theirs), 10)
        h.wait_until(lambda: self.push(ids, {"p": 0})["offline"] == [], h.t(10),
                     what="all online")
        victim.stop(sig=signal.SIGKILL, check=False)
        killed_at = time.monotonic()
        # Within its TTL (1.5 s) plus a refresh, no new connection goes to it
        # and its clients show offline.
        h.wait_until(lambda: victim.id not in self.bal.live_ids(), h.t(5),
                     what="dead bridge out of the view")
        h.wait_until(lambda: sorted(self.push(ids, {"p": 1})["offline"]) == sorted(theirs),
                     h.t(6), what="the dead bridge's clients are offline")
        h.log("dead bridge out of the view and its clients offline after %.1fs" % (
            time.monotonic() - killed_at))
        for _ in range(30):
            st, body = self.bal.get_json("/api/v1/route?channelId=probe")
            self.assertEqual(st, 200)
            self.assertNotEqual(body["bridge"], victim.id)
        # Its clients reconnect through the balancer, land elsewhere and
        # receive pushes again.
        back = self.connect_via_balancer(theirs)
        for cid, s in back.items():
            self.assertFalse(s.session_id.startswith(victim.id + "_"), s.session_id)
        h.wait_until(lambda: self.push(ids, {"p": 2})["offline"] == [], h.t(10),
                     what="all online again")
        data = self.push(theirs, {"welcome": "back"})
        for cid in theirs:
            m = back[cid].recv(timeout=10)
            while m["msg"] != {"welcome": "back"}:
                m = back[cid].recv(timeout=10)
            self.assertEqual(m["to"], [cid])
        self.assertEqual(data["offline"], [])

    def test_new_bridge_gets_a_fair_share_not_everything(self):
        self.start_cluster()
        self.connect_via_balancer(["fair-a-%03d" % i for i in range(150)])
        h.wait_until(lambda: sum(self.per_bridge().values()) == 150, h.t(5), what="150 up")
        newcomer = self.start_bridge(self.mosq, bridge_id="reg-new", args=TTL_ARGS,
                                     redis=self.redis)
        self.bridges.append(newcomer)
        h.wait_until(lambda: "reg-new" in self.bal.live_ids(), h.t(10), what="newcomer seen")
        self.connect_via_balancer(["fair-b-%03d" % i for i in range(100)])
        counts = self.per_bridge()
        h.log("after 100 more connections: %s" % counts)
        self.assertEqual(sum(counts.values()), 250, counts)
        # It fills up to the others' level (about 62 of the 100), no more.
        self.assertLess(counts["reg-new"], 100, counts)
        self.assertGreaterEqual(counts["reg-new"], 40, counts)
        self.assertLessEqual(max(counts.values()) / (250 / 4), 1.15, counts)

    def test_redis_restart_presence_comes_back(self):
        self.start_cluster()
        ids = ["rr-%02d" % i for i in range(30)]
        sessions = self.connect_via_balancer(ids)
        h.wait_until(lambda: self.push(ids, {"p": 0})["offline"] == [], h.t(10),
                     what="all online")
        self.redis.stop()
        time.sleep(0.5)
        # Bridges keep serving their clients without Redis.
        st, body, _ = self.api.push({"to": ids[:1], "msg": {"during": "outage"}})
        self.assertEqual(st, 200, body)
        self.assertNotIn("offline", body["data"])  # presence unknown, not "everyone offline"
        self.assertEqual(sessions[ids[0]].recv(timeout=10)["msg"], {"p": 0})
        self.assertEqual(sessions[ids[0]].recv(timeout=10)["msg"], {"during": "outage"})
        self.redis.start()  # empty: no persistence
        started = time.monotonic()
        h.wait_until(lambda: self.push(ids, {"p": 1})["offline"] == [], h.t(10),
                     what="presence complete again")
        h.log("presence complete %.1fs after Redis came back" % (time.monotonic() - started))
        self.assertEqual(self.online_count(ids), 30)
        h.wait_until(lambda: len(self.bal.live_ids()) == 3, h.t(5), what="bridges re-registered")

    def test_client_moving_to_another_bridge_stays_online(self):
        self.start_cluster()
        a, b = self.bridges[0], self.bridges[1]
        cid = h.uniq("mover")
        first = self.session(a.port, cid)
        second = self.session(b.port, cid)  # e.g. a reconnect that landed elsewhere
        h.wait_until(lambda: self.push([cid], {"p": 0})["offline"] == [], h.t(10),
                     what="online")
        # The old bridge dies; its leftovers are cleaned up...
        a.stop(sig=signal.SIGKILL, check=False)
        first.close()
        h.wait_until(lambda: a.id not in self.redis.cli("ZRANGE", "cloudpush:bridges", 0, -1),
                     h.t(10), what="dead bridge cleaned")
        # ...without wiping out the live session on the other bridge.
        st, _, body = h.http_request(self.api.port, "GET", "/api/v1/clients/" + cid)
        info = json.loads(body)
        self.assertTrue(info["online"], info)
        self.assertEqual([s["bridge"] for s in info["sessions"]], [b.id])
        self.assertEqual(info["sessions"][0]["sessionId"], second.session_id)
        self.push([cid], {"still": "here"})
        m = second.recv(timeout=10)
        while m["msg"] != {"still": "here"}:
            m = second.recv(timeout=10)


class BalancerHttpTest(h.IntegrationTest):

    def test_routes_and_errors(self):
        mosq = self.start_mosquitto()
        redis = self.start_redis()
        bal = self.start_balancer(redis, args=BAL_ARGS)
        # No live bridge: 503 JSON on both route APIs, refused upgrade.
        st, body = bal.get_json("/api/v1/route?channelId=x")
        self.assertEqual((st, body["code"]), (503, "no_bridge"))
        st, body = bal.get_json("/server/get?channelId=x")
        self.assertEqual((st, body["success"], body["code"]), (503, False, "-1"))
        with self.assertRaises(h.HandshakeRejected) as cm:
            h.RawWs(bal.port, "x", path="/ws")
        self.assertEqual(cm.exception.status, 503)
        bridge = self.start_bridge(mosq, bridge_id="only", args=TTL_ARGS, redis=redis)
        h.wait_until(lambda: bal.live_ids() == ["only"], h.t(10), what="bridge seen")
        st, body = bal.get_json("/api/v1/route?channelId=abc")
        self.assertEqual(st, 200)
        self.assertEqual(body, {"url": "ws://127.0.0.1:%d/ws?channelId=abc" % bridge.port,
                                "bridge": "only"})
        st, body = bal.get_json("/server/get?channelId=abc")
        self.assertEqual(body, {"success": True, "code": "0", "msg": "success",
                                "data": {"address": "127.0.0.1:%d" % bridge.port}})
        for q in ("", "?channelId=", "?channelId=a/b"):
            st, body = bal.get_json("/api/v1/route" + q)
            self.assertEqual(st, 400, body)
            self.assertIn(body["code"], ("missing_channel_id", "invalid_channel_id"))
        st, body = bal.get_json("/api/v1/bridges")
        [only] = body["bridges"]
        self.assertEqual((only["id"], only["capacity"], only["draining"]), ("only", 10000, False))
        st, _, text = h.http_request(bal.port, "GET", "/metrics")
        self.assertEqual(h.metric_value(text.decode(), "cloudpush_balancer_bridges"), 1)
        self.assertEqual(h.metric_value(text.decode(), "cloudpush_build_info",
                                        {"program": "balancer", "version": "0.1.0"}), 1)
        self.assertGreater(h.metric_value(text.decode(), "process_max_fds"), 1000)
        # The bridge's too: its descriptor use against its limit bounds capacity.
        text = bridge.metrics()
        self.assertEqual(h.metric_value(text, "cloudpush_build_info",
                                        {"program": "bridge", "version": "0.1.0"}), 1)
        self.assertGreater(h.metric_value(text, "process_open_fds"), 3)
        self.assertGreater(h.metric_value(text, "process_resident_memory_bytes"), 1e6)
        st, _, _ = h.http_request(bal.port, "GET", "/healthz")
        self.assertEqual(st, 200)

    def test_bridge_without_its_broker_is_not_offered(self):
        """A bridge refuses sessions while its broker is away (503
        bus_unavailable): its record says ready 0 at once, and the balancer
        stops placing clients there until it is back."""
        mosq = self.start_mosquitto()
        redis = self.start_redis()
        bal = self.start_balancer(redis, args=BAL_ARGS)
        bridge = self.start_bridge(mosq, bridge_id="flaky", args=TTL_ARGS, redis=redis)
        h.wait_until(lambda: bal.live_ids() == ["flaky"], h.t(10), what="bridge offered")
        self.assertEqual(redis.cli("HGET", "cloudpush:bridge:flaky", "ready"), ["1"])
        self.session(bal.port, "before", path="/ws")  # got its CONNECTION

        mosq.stop()
        h.wait_until(lambda: redis.cli("HGET", "cloudpush:bridge:flaky", "ready") == ["0"],
                     h.t(10), what="record says not ready")
        h.wait_until(lambda: bal.live_ids() == [], h.t(5), what="balancer stops offering it")
        st, body = bal.get_json("/api/v1/bridges")
        [flaky] = body["bridges"]
        self.assertEqual((flaky["id"], flaky["ready"], flaky["draining"]),
                         ("flaky", False, False))
        with self.assertRaises(h.HandshakeRejected) as cm:
            h.RawWs(bal.port, "during", path="/ws")
        self.assertEqual(cm.exception.status, 503)
        st, body = bal.get_json("/api/v1/route?channelId=during")
        self.assertEqual((st, body["code"]), (503, "no_bridge"))
        st, _, _ = h.http_request(bal.port, "GET", "/readyz")
        self.assertEqual(st, 503)
        st, _, text = h.http_request(bal.port, "GET", "/metrics")
        self.assertEqual(h.metric_value(text.decode(), "cloudpush_balancer_bridges"), 0)
        self.assertEqual(h.metric_value(text.decode(), "cloudpush_balancer_bridges_not_ready"), 1)
        # No client was sent to the bridge only to be refused there.
        self.assertEqual(bridge.metric("cloudpush_bridge_handshakes_rejected_total",
                                       {"reason": "bus_unavailable"}), 0)

        mosq.restart()
        h.wait_until(lambda: bal.live_ids() == ["flaky"], h.t(15), what="offered again")
        self.assertEqual(redis.cli("HGET", "cloudpush:bridge:flaky", "ready"), ["1"])
        self.session(bal.port, "after", path="/ws")

    def test_relay_passes_close_codes_both_ways(self):
        mosq = self.start_mosquitto()
        redis = self.start_redis()
        bal = self.start_balancer(redis, args=BAL_ARGS)
        bridge = self.start_bridge(mosq, bridge_id="closer", redis=redis,
                                   args=TTL_ARGS + ["--single-session", "--max-message-bytes",
                                                    "1024"])
        h.wait_until(lambda: bal.live_ids() == ["closer"], h.t(10), what="bridge seen")
        # Several query arguments reach the bridge intact (lws keeps them as
        # separate fragments; the relay joins and encodes them again).
        multi = self.session(bal.port, h.uniq("relay-q"), path="/ws",
                             query={"a": "1 2/3", "b": ""})
        self.assertIn("_%s_" % multi.channel_id, multi.session_id)
        cid = h.uniq("relay")
        old = self.session(bal.port, cid, path="/ws")
        self.session(bal.port, cid, path="/ws")  # replaces the old one: 4003
        code, _, _ = h.ws_expect_close(old.ws, timeout=5)
        self.assertEqual(code, 4003)
        big = self.session(bal.port, h.uniq("relay-big"), path="/ws")
        big.send_raw(json.dumps({"msgType": 3, "pad": "x" * 2000}))
        code, _, _ = h.ws_expect_close(big.ws, timeout=5)
        self.assertEqual(code, 1009)
        # Bridge draining → relayed clients get its RECONNECT, then the close.
        # (Raw client: websocket-client refuses 1012. lws 4.1's client side
        # turns the bridge's 1012 into 1002 before the relay sees it: the
        # balancer's own drain work is to give relayed clients 1012.)
        last = self.raw_ws(bal.port, h.uniq("relay-last"), path="/ws")
        self.assertEqual(last.recv_json()["msgType"], 0)
        bridge.stop()
        self.assertEqual(last.recv_json(10)["msgType"], 5)
        ev = last.recv_message(10)
        self.assertEqual(ev[0], "close", ev)
        self.assertIn(ev[1], (1012, 1002), ev)


if __name__ == "__main__":
    unittest.main()
