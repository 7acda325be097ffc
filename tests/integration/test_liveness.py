"""Idle timeout, pings, and the slow-consumer limit."""

import json
import threading
import time
import unittest


import harness as h


class IdleTimeoutTest(h.IntegrationTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mosq = cls.class_mosquitto()
        cls.bridge = cls.class_bridge(cls.mosq, bridge_id="itidle", args=["--idle-timeout", "2"])

    def test_silent_client_is_closed_4001(self):
        r = self.raw_ws(self.bridge.port, h.uniq("idle"))
        start = time.monotonic()
        # Never answer pings, never send anything; read only after a while.
        time.sleep(h.t(6))
        code, reason, messages, pings = r.read_until_close(2)
        self.assertEqual(code, 4001, "expected close 4001 within 6 s, got %r %r" % (code, reason))
        self.assertIn("idle", reason.lower())
        self.assertGreaterEqual(messages, 1, "the CONNECTION frame was not received")
        self.assertGreaterEqual(pings, 1, "the bridge sent no ping before closing an idle client")
        h.wait_until(lambda: self.bridge.metric("cloudpush_bridge_closes_total",
                                                {"reason": "idle_timeout"}) >= 1, h.t(3),
                     what='closes_total{reason="idle_timeout"} >= 1')
        self.assertLess(time.monotonic() - start, h.t(12))

    def test_silent_client_not_closed_too_early(self):
        r = self.raw_ws(self.bridge.port, h.uniq("idle-early"))
        start = time.monotonic()
        # Reading does not send anything, so this client is still silent.
        code, reason, _, pings = r.read_until_close(8, answer_pings=False)
        elapsed = time.monotonic() - start
        self.assertEqual(code, 4001, reason)
        self.assertGreaterEqual(elapsed, 1.8, "closed after %.2fs, --idle-timeout is 2" % elapsed)
        self.assertLessEqual(elapsed, h.t(6), "closed only after %.2fs" % elapsed)

    def test_heartbeats_keep_connection_open(self):
        s = self.session(self.bridge.port, h.uniq("alive"))
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < 4.5:
            s.heartbeat("keep-%d" % n)
            n += 1
            time.sleep(0.5)
        self.assertGreater(time.monotonic() - start, 4.0)
        s.heartbeat("final")

    def test_pongs_keep_connection_open(self):
        r = self.raw_ws(self.bridge.port, h.uniq("ponger"))
        self.assertEqual(r.recv_json()["msgType"], h.MSG_CONNECTION)
        start = time.monotonic()
        pings = 0
        while time.monotonic() - start < 5.0:
            try:
                fin, op, payload = r.recv_frame(0.2)
            except TimeoutError:  # = socket.timeout
                continue
            except OSError as e:
                self.fail("connection lost after %.1fs: %r" % (time.monotonic() - start, e))
            if op == h.OP_PING:
                pings += 1
                r.send_frame(h.OP_PONG, payload)
            elif op == h.OP_CLOSE:
                self.fail("closed after %.1fs although every ping was answered: %r" % (
                    time.monotonic() - start, payload))
        self.assertGreaterEqual(pings, 1, "no ping in 5 s with --idle-timeout 2")
        r.send_json({"msgType": 3, "messageId": "after-pongs"})
        for _ in range(20):
            ev = r.recv_message(5)
            if ev[0] == "text":
                m = json.loads(ev[1])
                self.assertEqual(m.get("msgType"), h.MSG_HEARTBEAT_ACK, m)
                self.assertEqual(m.get("messageId"), "after-pongs")
                break
            self.assertNotEqual(ev[0], "close", ev)


class SlowConsumerTest(h.IntegrationTest):
    COUNT = 400
    SIZE = 20000
    # 1 MB of queue per session: far more than a reading client ever lags by
    # (even on a busy, sanitized build), far less than the 8 MB the slow
    # client is sent and never reads.
    ARGS = ["--max-queue-messages", "100", "--max-queue-bytes", "1000000"]

    def start_reader(self, session, count):
        """Reads count messages on a thread; returns (ids list, errors list,
        done event)."""
        received, errors, done = [], [], threading.Event()

        def reader():
            deadline = time.monotonic() + h.t(60)
            try:
                while len(received) < count and time.monotonic() < deadline:
                    ev = h.ws_recv_event(session.ws, 10)
                    if ev[0] != "text":
                        errors.append("healthy client got %r after %d of %d messages" % (
                            ev[:3], len(received), count))
                        return
                    received.append(json.loads(ev[1]).get("messageId"))
            except Exception as e:  # noqa: BLE001
                errors.append("healthy client: %r after %d messages" % (e, len(received)))
            finally:
                done.set()

        threading.Thread(target=reader, daemon=True).start()
        return received, errors, done

    def publish_broadcasts(self, port, count, pause, reader=None, max_lag=20):
        """count messages of SIZE bytes, QoS 1, each acknowledged by the
        broker before the next; pause seconds between them. With reader
        (the healthy client's received list), never more than max_lag ahead
        of it: on a starved machine the Python reader itself may fall 1 MB
        behind, which is the bridge being right, not the test's point."""
        pub = self.mqtt_client(port)
        filler = "f" * self.SIZE
        sent = []
        for i in range(count):
            if reader is not None:
                h.wait_until(lambda: len(sent) - len(reader) <= max_lag, h.t(30), 0.002,
                             "the healthy client within %d messages" % max_lag)
            mid = "slow-%04d" % i
            pub.publish(h.topic("broadcast"), {"messageId": mid, "msg": {"i": i, "fill": filler}})
            sent.append(mid)
            if pause:
                time.sleep(pause)
        return sent

    def test_slow_consumer_closed_4002_others_unaffected(self):
        mosq = self.start_mosquitto()
        bridge = self.start_bridge(mosq, bridge_id="itslow", args=self.ARGS)
        slow = self.raw_ws(bridge.port, h.uniq("slow"), rcvbuf=4096)
        self.assertEqual(slow.recv_json()["msgType"], h.MSG_CONNECTION)
        healthy = self.session(bridge.port, h.uniq("healthy"))
        received, errors, done = self.start_reader(healthy, self.COUNT)
        # About 250 messages/s (5 MB/s): a reading client keeps up easily;
        # the slow one gets 8 MB it never reads.
        sent = self.publish_broadcasts(mosq.port, self.COUNT, 0.004, reader=received)
        done.wait(h.t(60))
        self.assertEqual(errors, [])
        self.assertEqual(len(received), self.COUNT, "healthy client got %d of %d" % (
            len(received), self.COUNT))
        self.assertEqual(received, sent, "healthy client got messages out of order or wrong")

        h.wait_until(lambda: bridge.metric("cloudpush_bridge_closes_total",
                                           {"reason": "slow_consumer"}) >= 1, h.t(10), 0.2,
                     'closes_total{reason="slow_consumer"} >= 1')
        # The slow client's socket: what was buffered, then the close frame.
        code, reason, messages, _ = slow.read_until_close(10, max_bytes=16 * 1024 * 1024)
        if code is not None:
            self.assertEqual(code, 4002, "slow consumer closed with %r %r" % (code, reason))
        self.assertLess(messages, self.COUNT, "the slow client got everything")
        self.assertEqual(bridge.healthz()[0], 200)
        healthy.heartbeat()


if __name__ == "__main__":
    unittest.main()
