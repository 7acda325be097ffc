"""Issue 13: acks with retransmit (ack=1, --ack-timeout, --ack-retries,
4006) and the paced drain on SIGTERM (RECONNECT msgType 5, close 1012
over --drain-seconds). Real mosquitto, redis-server, bridges and
WebSocket clients."""

import asyncio
import json
import signal
import subprocess
import threading
import time
import unittest

import websockets

import harness as h

MSG_RECONNECT = 5
ACK_ARGS = ["--ack-timeout", "1", "--ack-retries", "2"]


def publish(mosq, cid, mid, body):
    h.mqtt_publish(mosq.port, h.topic("client", cid),
                   json.dumps({"messageId": mid, "msg": body}))


class AckTest(h.IntegrationTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mosq = cls.class_mosquitto()
        cls.bridge = cls.class_bridge(cls.mosq, bridge_id="itacks", args=ACK_ARGS)

    def ack_session(self, cid, ack="1"):
        return self.session(self.bridge.port, cid, query={"ack": ack})

    def recv_business(self, s, timeout=5.0):
        m, raw = s.recv_raw(timeout)
        self.assertEqual(m.get("msgType"), h.MSG_BUSINESS, raw)
        return m, raw

    def test_retransmit_after_missing_ack_then_receipt(self):
        cid = h.uniq("ackre")
        acks = self.subscriber(self.mosq.port, h.topic("ack", cid))
        s = self.ack_session(cid)
        before = self.bridge.metric("cloudpush_bridge_ack_retransmits_total")
        publish(self.mosq, cid, "re-1", {"n": 1})
        first, first_raw = self.recv_business(s)
        t0 = time.monotonic()
        self.assertEqual(first["messageId"], "re-1")
        # Not confirmed: the same frame comes again after about --ack-timeout
        # (1 s; the check runs once a second).
        again, again_raw = self.recv_business(s, timeout=4)
        waited = time.monotonic() - t0
        self.assertEqual(again_raw, first_raw, "a resend is the same frame")
        self.assertGreaterEqual(waited, 0.8, "resent before --ack-timeout")
        self.assertLess(waited, h.t(3.5))
        self.assertGreaterEqual(self.bridge.metric("cloudpush_bridge_ack_retransmits_total"),
                                before + 1)
        # Confirmed now: no more resends, and the receipt reaches services.
        s.send({"msgType": h.MSG_BUSINESS_ACK, "messageId": "re-1"})
        _, receipt = acks.wait_json(lambda o: o.get("messageId") == "re-1")
        self.assertEqual(receipt.get("msgType"), h.MSG_BUSINESS_ACK, receipt)
        self.assertEqual(receipt.get("from"), cid, receipt)
        self.assertEqual(receipt.get("sessionId"), s.session_id, receipt)
        h.ws_expect_nothing(self, s.ws, 2.5)
        self.assertEqual(s.heartbeat()["msgType"], h.MSG_HEARTBEAT_ACK)  # still open

    def test_no_retransmit_once_acked(self):
        cid = h.uniq("ackok")
        s = self.ack_session(cid)
        for i in range(3):
            publish(self.mosq, cid, "ok-%d" % i, {"n": i})
        for i in range(3):
            m, _ = self.recv_business(s)
            self.assertEqual(m["messageId"], "ok-%d" % i)
            s.send({"msgType": h.MSG_BUSINESS_ACK, "messageId": m["messageId"]})
        h.ws_expect_nothing(self, s.ws, 2.5)

    def test_out_of_order_acks_resend_only_the_missing_one(self):
        cid = h.uniq("ackooo")
        s = self.ack_session(cid)
        for i in range(4):
            publish(self.mosq, cid, "ooo-%d" % i, {"n": i})
        got = [self.recv_business(s)[0]["messageId"] for _ in range(4)]
        self.assertEqual(got, ["ooo-0", "ooo-1", "ooo-2", "ooo-3"])
        for mid in ("ooo-3", "ooo-0", "ooo-2"):
            s.send({"msgType": h.MSG_BUSINESS_ACK, "messageId": mid})
        again, _ = self.recv_business(s, timeout=4)
        self.assertEqual(again["messageId"], "ooo-1")
        s.send({"msgType": h.MSG_BUSINESS_ACK, "messageId": "ooo-1"})
        h.ws_expect_nothing(self, s.ws, 2.5)

    def test_4006_after_the_retries(self):
        cid = h.uniq("ack6")
        presence = self.subscriber(self.mosq.port, h.topic("presence", cid))
        s = self.ack_session(cid)
        before = self.bridge.metric("cloudpush_bridge_closes_total", {"reason": "unacked"})
        publish(self.mosq, cid, "lost-1", {"n": 1})
        t0 = time.monotonic()
        code, reason, frames = h.ws_expect_close(s.ws, 10)
        waited = time.monotonic() - t0
        self.assertEqual(code, 4006, (reason, frames))
        self.assertEqual(reason, "unacknowledged messages")
        sent = [json.loads(f[1]) for f in frames if f[0] == "text"]
        # The first send and --ack-retries (2) resends, all of one message.
        self.assertEqual([m["messageId"] for m in sent], ["lost-1"] * 3, frames)
        self.assertGreaterEqual(waited, 2.5)
        self.assertLess(waited, h.t(6))
        _, ev = presence.wait_json(lambda o: o.get("event") == "disconnect")
        self.assertEqual(ev.get("reason"), "unacked", ev)
        self.assertEqual(self.bridge.metric("cloudpush_bridge_closes_total",
                                            {"reason": "unacked"}), before + 1)

    def test_broadcast_frames_are_tracked_per_session(self):
        a = self.ack_session(h.uniq("ackbca"))
        b = self.ack_session(h.uniq("ackbcb"))
        self.publish_broadcast(self.mosq.port, json.dumps({"messageId": "bc-1", "msg": {"all": 1}}),
                               self.bridge)
        for s in (a, b):
            m, _ = self.recv_business(s)
            self.assertEqual(m["messageId"], "bc-1")
        a.send({"msgType": h.MSG_BUSINESS_ACK, "messageId": "bc-1"})
        again, _ = self.recv_business(b, timeout=4)
        self.assertEqual(again["messageId"], "bc-1")
        self.assertEqual(again["sessionId"], b.session_id)
        b.send({"msgType": h.MSG_BUSINESS_ACK, "messageId": "bc-1"})
        h.ws_expect_nothing(self, a.ws, 1.5)

    def test_sessions_without_ack_are_unchanged(self):
        cid0, cid = h.uniq("ack0"), h.uniq("acknone")
        receipts = self.subscriber(self.mosq.port, h.topic("ack", cid))
        sessions = [self.ack_session(cid0, ack="0"), self.session(self.bridge.port, cid)]
        for s in sessions:
            publish(self.mosq, s.channel_id, "plain-" + s.channel_id, {"n": 1})
            m, _ = self.recv_business(s)
            self.assertEqual(m["messageId"], "plain-" + s.channel_id)
        for s in sessions:
            h.ws_expect_nothing(self, s.ws, 2.5)  # never resent
        # A receipt from a session without ack=1 is still published.
        sessions[1].send({"msgType": h.MSG_BUSINESS_ACK, "messageId": "plain-" + cid})
        _, receipt = receipts.wait_json(lambda o: o.get("messageId") == "plain-" + cid)
        self.assertEqual(receipt.get("sessionId"), sessions[1].session_id, receipt)

    def test_bad_ack_value_is_refused(self):
        for q in ("ack=yes", "ack=", "ack=2"):
            st, _, body = h.handshake_error(self.bridge.port,
                                            raw_query="channelId=%s&%s" % (h.uniq("ackbad"), q))
            self.assertEqual(st, 400, (q, body))
            self.assertEqual(json.loads(body).get("code"), "invalid_ack", body)

    def test_flags_and_metrics_are_documented(self):
        out = subprocess.run([h.BRIDGE_BIN, "--help"], capture_output=True, text=True,
                             timeout=10)
        text = out.stdout + out.stderr
        for flag in ("ack-window", "ack-timeout", "ack-retries", "drain-seconds",
                     "shutdown-grace"):
            self.assertIn("--" + flag, text)
            self.assertIn("CLOUDPUSH_" + flag.upper().replace("-", "_"), text)
        s = self.ack_session(h.uniq("ackm"))
        metrics = self.bridge.metrics()
        self.assertGreaterEqual(h.metric_value(metrics, "cloudpush_bridge_ack_sessions"), 1)
        for name in ("cloudpush_bridge_ack_unconfirmed", "cloudpush_bridge_ack_retransmits_total",
                     "cloudpush_bridge_ack_window_full_total", "cloudpush_bridge_draining",
                     "cloudpush_bridge_drain_reconnects_total"):
            self.assertIn("\n" + name + " ", metrics, name)
        self.assertEqual(h.metric_value(metrics, "cloudpush_bridge_draining"), 0)
        s.close()

    def test_full_window_closes_as_slow_consumer(self):
        bridge = self.start_bridge(self.mosq, bridge_id="itackwin",
                                   args=ACK_ARGS + ["--ack-window", "4", "--ack-timeout", "30"])
        cid = h.uniq("ackwin")
        s = self.session(bridge.port, cid, query={"ack": "1"})
        for i in range(5):
            publish(self.mosq, cid, "win-%d" % i, {"n": i})
        code, _, frames = h.ws_expect_close(s.ws, 5)
        self.assertEqual(code, 4002, frames)
        self.assertEqual(bridge.metric("cloudpush_bridge_ack_window_full_total"), 1)


class DrainSession:
    """A raw-socket client: websocket-client refuses close code 1012
    (its list of valid codes predates RFC 6455's registry additions)."""

    def __init__(self, test, port, cid):
        self.channel_id = cid
        self.ws = test.raw_ws(port, cid)
        hello = self.ws.recv_json()
        test.assertEqual(hello.get("msgType"), h.MSG_CONNECTION, hello)
        self.session_id = hello["sessionId"]


def read_until_close(s, out, timeout):
    """Records every message of session s with its arrival time up to the
    close frame, and answers the close (run in a thread: the sessions of a
    drain are read at once)."""
    deadline = time.monotonic() + timeout
    frames = []
    try:
        while time.monotonic() < deadline:
            try:
                ev = s.ws.recv_message(max(0.1, deadline - time.monotonic()))
            except Exception as e:  # noqa: BLE001
                out["error"] = repr(e)
                break
            now = time.monotonic()
            if ev[0] == "close":
                out["close"] = (ev[1], ev[2], now)
                s.ws.send_close(ev[1] or 1000)
                break
            frames.append((json.loads(ev[1]), now))
    finally:
        out["frames"] = frames


class DrainTest(h.IntegrationTest):

    def drain_stack(self, n, drain_seconds):
        mosq = self.start_mosquitto()
        redis = self.start_redis()
        bridge = self.start_bridge(mosq, bridge_id="itdrain", redis=redis,
                                   args=["--drain-seconds", str(drain_seconds),
                                         "--shutdown-grace", "2"])
        sessions = [DrainSession(self, bridge.port, h.uniq("drain%d-" % i)) for i in range(n)]
        h.wait_until(lambda: redis.cli("HGET", "cloudpush:bridge:itdrain", "connections")
                     == [str(n)], h.t(5), what="the registry record")
        return mosq, redis, bridge, sessions

    def read_all(self, sessions, timeout):
        results = [{} for _ in sessions]
        threads = [threading.Thread(target=read_until_close, args=(s, r, timeout), daemon=True)
                   for s, r in zip(sessions, results)]
        for th in threads:
            th.start()
        return threads, results

    def test_sigterm_reconnect_then_paced_1012(self):
        n, drain = 8, 4
        mosq, redis, bridge, sessions = self.drain_stack(n, drain)
        self.assertEqual(redis.cli("HGET", "cloudpush:bridge:itdrain", "draining"), ["0"])
        threads, results = self.read_all(sessions, h.t(drain + 6))
        t0 = time.monotonic()
        bridge.proc.send_signal(signal.SIGTERM)
        # Draining in Redis at once (the balancer stops placing here)...
        h.wait_until(lambda: redis.cli("HGET", "cloudpush:bridge:itdrain", "draining") == ["1"],
                     h.t(1.5), 0.05, "draining=1 in the registry record")
        # ...and new sessions are refused while the drain runs.
        with self.assertRaises(h.HandshakeRejected) as cm:
            h.RawWs(bridge.port, h.uniq("late"))
        self.assertEqual(cm.exception.status, 503)
        self.assertEqual(json.loads(cm.exception.body).get("code"), "shutting_down")
        self.assertEqual(bridge.metric("cloudpush_bridge_draining"), 1)
        delays = {}
        for th in threads:
            th.join(h.t(drain + 7))
        closes = []
        for s, r in zip(sessions, results):
            self.assertNotIn("error", r, r)
            frames = r["frames"]
            self.assertTrue(frames, "no RECONNECT for %s" % s.channel_id)
            rec, rec_at = frames[0]
            self.assertEqual(rec.get("msgType"), MSG_RECONNECT, rec)
            self.assertEqual(rec.get("resultMsg"), "bridge draining", rec)
            self.assertEqual(rec.get("sessionId"), s.session_id, rec)
            delay = rec.get("msg", {}).get("delayMs")
            self.assertIsInstance(delay, int, rec)
            self.assertTrue(0 <= delay < drain * 1000, rec)
            self.assertLess(rec_at - t0, h.t(1.5), "RECONNECT late")
            code, reason, closed_at = r["close"]
            self.assertEqual(code, 1012, (s.channel_id, reason))
            # Closed at about the time announced (ticks of 250 ms).
            self.assertLess(abs((closed_at - rec_at) * 1000 - delay), h.t(1.0) * 1000,
                            (delay, closed_at - rec_at))
            delays[s.channel_id] = delay
            closes.append(closed_at - t0)
        # Spread over the drain: distinct announced times, first close at
        # once, last before --drain-seconds ends.
        self.assertEqual(len(set(delays.values())), n, delays)
        self.assertLess(min(closes), h.t(1.5), closes)
        self.assertGreater(max(closes), drain * 0.6, closes)
        self.assertLess(max(closes), drain + h.t(1.0), closes)
        rc = bridge.proc.wait(timeout=h.t(5))
        self.assertEqual(rc, 0)

    def test_frames_queued_before_the_close_are_delivered(self):
        n, drain = 3, 3
        mosq, redis, bridge, sessions = self.drain_stack(n, drain)
        threads, results = self.read_all(sessions, h.t(drain + 6))
        bridge.proc.send_signal(signal.SIGTERM)
        h.wait_until(lambda: redis.cli("HGET", "cloudpush:bridge:itdrain", "draining") == ["1"],
                     h.t(1.5), 0.05, "draining=1")
        # Published during the drain, to every session: the ones still open
        # get it before their close.
        for s in sessions:
            publish(mosq, s.channel_id, "during-" + s.channel_id, {"drain": 1})
        for th in threads:
            th.join(h.t(drain + 7))
        late = 0
        for s, r in zip(sessions, results):
            self.assertEqual(r["close"][0], 1012, r)
            types = [f[0]["msgType"] for f in r["frames"]]
            self.assertEqual(types[0], MSG_RECONNECT, types)
            delay = r["frames"][0][0]["msg"]["delayMs"]
            got = [f[0] for f in r["frames"] if f[0]["msgType"] == h.MSG_BUSINESS]
            if delay >= 1500:
                # Scheduled well after the publish: it must have arrived.
                self.assertEqual([m["messageId"] for m in got], ["during-" + s.channel_id], r)
                late += 1
        self.assertGreaterEqual(late, 1)
        self.assertEqual(bridge.proc.wait(timeout=h.t(5)), 0)

    def test_second_sigterm_stops_at_once(self):
        n, drain = 4, 20
        mosq, redis, bridge, sessions = self.drain_stack(n, drain)
        threads, results = self.read_all(sessions, h.t(10))
        bridge.proc.send_signal(signal.SIGTERM)
        h.wait_until(lambda: redis.cli("HGET", "cloudpush:bridge:itdrain", "draining") == ["1"],
                     h.t(1.5), 0.05, "draining=1")
        time.sleep(0.5)
        t1 = time.monotonic()
        bridge.proc.send_signal(signal.SIGTERM)
        for th in threads:
            th.join(h.t(10))
        codes = sorted(r["close"][0] for r in results)
        # The first was closed by the drain at once, the rest by the quick stop.
        self.assertEqual(codes, [1001, 1001, 1001, 1012], results)
        for r in results:
            self.assertEqual(r["frames"][0][0]["msgType"], MSG_RECONNECT, r)
            self.assertLess(r["close"][2] - t1, h.t(2), r)
        self.assertEqual(bridge.proc.wait(timeout=h.t(5)), 0)

    def test_compressed_session_resend_and_drain(self):
        """A permessage-deflate session (written from the WRITEABLE callback,
        not coalesced) gets the same resend and the same drain."""
        mosq = self.start_mosquitto()
        bridge = self.start_bridge(mosq, bridge_id="itdrainz",
                                   args=ACK_ARGS + ["--drain-seconds", "2"])
        cid = h.uniq("drainz")
        out = {}

        async def run():
            url = h.ws_url(bridge.port, cid, query={"ack": "1"})
            async with websockets.connect(url, compression="deflate", open_timeout=h.t(5),
                                          close_timeout=2) as ws:
                out["extensions"] = [e.name for e in ws.extensions]
                hello = json.loads(await asyncio.wait_for(ws.recv(), h.t(5)))
                assert hello["msgType"] == h.MSG_CONNECTION, hello
                await asyncio.get_running_loop().run_in_executor(
                    None, publish, mosq, cid, "z-1", {"z": 1})
                out["first"] = await asyncio.wait_for(ws.recv(), h.t(5))
                out["again"] = await asyncio.wait_for(ws.recv(), h.t(4))
                await ws.send(json.dumps({"msgType": h.MSG_BUSINESS_ACK, "messageId": "z-1"}))
                bridge.proc.send_signal(signal.SIGTERM)
                out["reconnect"] = json.loads(await asyncio.wait_for(ws.recv(), h.t(5)))
                try:
                    await asyncio.wait_for(ws.recv(), h.t(5))
                except websockets.exceptions.ConnectionClosed as e:
                    out["code"] = e.rcvd.code if e.rcvd else None

        asyncio.run(asyncio.wait_for(run(), h.t(30)))
        self.assertIn("permessage-deflate", out["extensions"])
        self.assertEqual(json.loads(out["first"])["messageId"], "z-1")
        self.assertEqual(out["again"], out["first"])
        self.assertEqual(out["reconnect"]["msgType"], MSG_RECONNECT, out)
        self.assertEqual(out.get("code"), 1012, out)
        self.assertEqual(bridge.proc.wait(timeout=h.t(5)), 0)


if __name__ == "__main__":
    unittest.main()
