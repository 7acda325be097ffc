"""Bus -> WebSocket delivery: client topic, broadcast, invalid bus payloads,
several sessions of one channel, --single-session."""

import json
import re
import time
import unittest

import harness as h


def subscription_packets(mosquitto_log):
    """The SUBSCRIBE and UNSUBSCRIBE packets in a mosquitto log (log_type
    all), in order: [(kind, {topic, ...}), ...]."""
    packets, current = [], None
    with open(mosquitto_log, errors="replace") as f:
        for line in f:
            text = line.split(": ", 1)[-1].rstrip("\n")
            m = re.match(r"Received (UNSUBSCRIBE|SUBSCRIBE) from ", text)
            if m:
                current = (m.group(1), set())
                packets.append(current)
            elif current and text.startswith("\t"):
                current[1].add(text[1:].split(" (QoS")[0])
            else:
                current = None if not text.startswith("cloudpush-") else current
    return packets


class DeliveryTest(h.IntegrationTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mosq = cls.class_mosquitto()
        # Messages up to 128 KiB: the 64-bit frame length form needs > 65535.
        cls.bridge = cls.class_bridge(cls.mosq, bridge_id="itdeliv",
                                      args=["--max-message-bytes", "131072"])

    def pub(self, kind, channel_id, payload):
        h.mqtt_publish(self.mosq.port, h.topic(kind, channel_id), payload)


    def test_connection_frame(self):
        cid = h.uniq("conn")
        s = self.session(self.bridge.port, cid)
        c = s.connection
        h.assert_key_order(self, s.connection_raw)
        self.assertEqual(c.get("msgType"), h.MSG_CONNECTION, c)
        self.assertEqual(c.get("from"), "system", c)
        self.assertEqual(c.get("resultMsg"), "connected, channelId=%s" % cid, c)
        self.assertEqual(c.get("trigger"), h.TRIGGER_WEBSOCKET, c)
        self.assertIsInstance(c.get("activeTime"), int, c)
        self.assertLess(abs(c["activeTime"] - time.time() * 1000), 60000, c)
        self.assertRegex(c.get("sessionId", ""),
                         r"^%s_%s_\d{14}-[0-9a-f]{10,}$" % (re.escape(self.bridge.id), re.escape(cid)))

    def test_connection_burst_subscribes_in_batches(self):
        """Handshakes that arrive together are subscribed with fewer
        SUBSCRIBE packets than channels, and every session still gets its
        greeting and its own messages."""
        before = self.bridge.metric("cloudpush_bridge_subscribe_requests_total")
        n = 200
        ids = [h.uniq("burst%d-" % i) for i in range(n)]
        clients = [self.raw_ws(self.bridge.port, cid, wait_handshake=False) for cid in ids]
        for c in clients:
            c.finish_handshake()
            self.assertEqual(c.status, 101)
        for c in clients:
            self.assertEqual(c.recv_json()["msgType"], h.MSG_CONNECTION)
        used = self.bridge.metric("cloudpush_bridge_subscribe_requests_total") - before
        self.assertGreaterEqual(used, 1)
        self.assertLess(used, n, "one SUBSCRIBE per channel: no batching")
        c = h.MqttClient(self.mosq.port)
        try:
            for cid in ids:
                c.publish(h.topic("client", cid), {"msg": {"for": cid}})
        finally:
            c.close()
        for cid, ws in zip(ids, clients):
            self.assertEqual(ws.recv_json()["msg"], {"for": cid})
        # They leave together: fewer UNSUBSCRIBE packets than channels, and
        # the broker's log shows every channel unsubscribed once, last.
        unsubs = self.bridge.metric("cloudpush_bridge_unsubscribe_requests_total")
        for c in clients:
            c.close()
        topics = {h.topic("d/client", cid) for cid in ids}

        def unsubscribed():
            packets = subscription_packets(self.mosq.log_path)
            return packets if all(any(k == "UNSUBSCRIBE" and t in ts for k, ts in packets)
                                  for t in topics) else None
        packets = h.wait_until(unsubscribed, h.t(10),
                               what="every channel of the burst to be unsubscribed")
        used = self.bridge.metric("cloudpush_bridge_unsubscribe_requests_total") - unsubs
        self.assertGreaterEqual(used, 1)
        self.assertLess(used, n, "one UNSUBSCRIBE per channel: no batching")
        mine = [(k, ts & topics) for k, ts in packets if ts & topics]
        self.assertLess(sum(k == "UNSUBSCRIBE" for k, _ in mine), n)
        for t in topics:
            self.assertEqual([k for k, ts in mine if t in ts], ["SUBSCRIBE", "UNSUBSCRIBE"], t)

    def test_frames_of_every_length_form_arrive_intact_in_order(self):
        """Frames are framed by the bridge and written together: payloads
        with a 7-bit, a 16-bit and a 64-bit length, published back to back
        while the client reads nothing, arrive whole and in order."""
        cid = h.uniq("lens")
        r = self.raw_ws(self.bridge.port, cid)
        self.assertEqual(r.recv_json()["msgType"], h.MSG_CONNECTION)
        pads = ["", "m" * 300, "l" * 70000, "s", "n" * 65600]
        c = h.MqttClient(self.mosq.port)
        try:
            for i, pad in enumerate(pads):
                c.publish(h.topic("client", cid), {"msg": {"i": i, "pad": pad}})
        finally:
            c.close()
        for i, pad in enumerate(pads):
            m = r.recv_json()
            self.assertEqual(m["msg"], {"i": i, "pad": pad})
            self.assertEqual(m["to"], [cid])

    def test_client_topic_delivery_mosquitto_pub(self):
        cid = h.uniq("mpub")
        s = self.session(self.bridge.port, cid)
        payload = {"from": "svc-1", "messageId": "m-mosq-1", "msg": {"text": "hello", "n": 1},
                   "msgType": 1, "to": ["somebody-else"], "sessionId": "forged"}
        h.mosquitto_pub(self.mosq.port, h.topic("client", cid), json.dumps(payload))
        m, raw = s.recv_raw()
        h.assert_key_order(self, raw)
        # Provided fields are kept; sessionId and to are always the recipient's.
        self.assertDelivery(m, cid, s.session_id, {"text": "hello", "n": 1}, h.TRIGGER_MQTT,
                            sender="svc-1", message_id="m-mosq-1")
        h.ws_expect_nothing(self, s.ws, 0.3)

    def test_minimal_envelope_is_filled(self):
        cid = h.uniq("min")
        s = self.session(self.bridge.port, cid)
        self.pub("client", cid, {"msg": {"k": "v"}})
        m, raw = s.recv_raw()
        h.assert_key_order(self, raw)
        self.assertDelivery(m, cid, s.session_id, {"k": "v"}, h.TRIGGER_MQTT, sender="system")
        self.assertRegex(m["messageId"], h.HEX32)
        # No Redis here: the sequencer could not store it, and says so.
        self.assertIsNone(m["offset"], m)
        self.assertEqual(set(m), {"activeTime", "from", "messageId", "msg", "msgType", "offset",
                                  "sessionId", "to", "trigger"}, m)

    def test_not_delivered_to_other_channels(self):
        a, b = h.uniq("only-a"), h.uniq("only-b")
        sa = self.session(self.bridge.port, a)
        sb = self.session(self.bridge.port, b)
        self.pub("client", a, {"msg": {"for": "a"}})
        self.assertEqual(sa.recv()["msg"], {"for": "a"})
        h.ws_expect_nothing(self, sb.ws, 0.3)

    def test_broadcast_reaches_two_clients(self):
        a, b = h.uniq("bc-a"), h.uniq("bc-b")
        sa = self.session(self.bridge.port, a)
        sb = self.session(self.bridge.port, b)
        self.publish_broadcast(self.mosq.port, {"msg": {"all": True}, "messageId": "bc-1"}, self.bridge)
        ma = sa.recv()
        mb = sb.recv()
        self.assertDelivery(ma, a, sa.session_id, {"all": True}, h.TRIGGER_MQTT,
                            sender="system", message_id="bc-1")
        self.assertDelivery(mb, b, sb.session_id, {"all": True}, h.TRIGGER_MQTT,
                            sender="system", message_id="bc-1")

    def test_invalid_bus_payloads_are_counted_and_dropped(self):
        cid = h.uniq("inv")
        s = self.session(self.bridge.port, cid)
        # The sequencer reads them first (docs/design-delivery.md).
        counted = lambda: self.bridge.metric("cloudpush_sequencer_messages_total",
                                             {"result": "invalid"})
        before = counted()
        invalid = [b"this is not json", b"[1,2,3]", b'"a string"', b'{"foo":1}',
                   b'{"msg":"a string"}', b'{"msg":[1]}', b'{"msg":{"x":1},"msgType":3}',
                   b'{"msg":{"x":1},"msgType":"x"}', b"{\"msg\":{\"x\":1}"]
        pubc = self.mqtt_client(self.mosq.port)
        for p in invalid:
            pubc.publish(h.topic("client", cid), p)
        pubc.publish(h.topic("broadcast"), b"not json either")
        pubc.publish(h.topic("client", cid), {"msg": {"valid": 1}, "messageId": "after-bad"})
        m = s.recv()
        self.assertEqual(m.get("messageId"), "after-bad", "an invalid payload was forwarded: %r" % m)
        self.assertEqual(m.get("msg"), {"valid": 1})
        h.ws_expect_nothing(self, s.ws, 0.3)
        expected = before + len(invalid) + 1
        h.wait_until(lambda: counted() >= expected,
                     h.t(5), what="sequencer invalid >= %d" % expected)
        # Still healthy and working.
        self.assertEqual(self.bridge.healthz()[0], 200)
        self.pub("client", cid, {"msg": {"valid": 2}})
        self.assertEqual(s.recv()["msg"], {"valid": 2})

    def test_delivery_latency_histogram(self):
        """Every bus message written to a socket is timed from its arrival
        from the bus; messages the bridge makes itself are not."""
        a, b = h.uniq("lat-a"), h.uniq("lat-b")
        sa, sb = self.session(self.bridge.port, a), self.session(self.bridge.port, b)
        before = self.bridge.metric("cloudpush_bridge_delivery_seconds_count")
        for i in range(5):
            self.pub("client", a, {"msg": {"i": i}})
        self.publish_broadcast(self.mosq.port, {"msg": {"all": 1}}, self.bridge)
        for i in range(5):
            self.assertEqual(sa.recv()["msg"], {"i": i})
        self.assertEqual(sa.recv()["msg"], {"all": 1})
        self.assertEqual(sb.recv()["msg"], {"all": 1})
        sa.heartbeat()  # a HEARTBEAT_ACK is written, not timed
        text = self.bridge.metrics()
        count = h.metric_value(text, "cloudpush_bridge_delivery_seconds_count")
        self.assertEqual(count, before + 7)  # 5 + a broadcast to 2 sessions
        total = h.metric_value(text, "cloudpush_bridge_delivery_seconds_sum")
        self.assertGreater(total, 0)
        self.assertLess(total / count, 1.0)

    def test_multi_session_all_receive(self):
        cid = h.uniq("multi")
        s1 = self.session(self.bridge.port, cid)
        s2 = self.session(self.bridge.port, cid)
        self.assertNotEqual(s1.session_id, s2.session_id)
        self.pub("client", cid, {"msg": {"both": 1}, "messageId": "multi-1"})
        m1 = s1.recv()
        m2 = s2.recv()
        self.assertDelivery(m1, cid, s1.session_id, {"both": 1}, h.TRIGGER_MQTT,
                            message_id="multi-1")
        self.assertDelivery(m2, cid, s2.session_id, {"both": 1}, h.TRIGGER_MQTT,
                            message_id="multi-1")
        # Closing one session keeps the other subscribed.
        s1.close()
        time.sleep(0.2)
        self.pub("client", cid, {"msg": {"left": 1}})
        self.assertEqual(s2.recv()["msg"], {"left": 1})

    def test_session_ids_unique_within_a_second(self):
        cid = h.uniq("sid")
        sessions = [self.session(self.bridge.port, cid) for _ in range(5)]
        ids = [s.session_id for s in sessions]
        self.assertEqual(len(set(ids)), len(ids), ids)
        pat = re.compile(r"^%s_%s_(\d{14})-([0-9a-f]+)$" % (re.escape(self.bridge.id),
                                                          re.escape(cid)))
        stamps = []
        for sid in ids:
            mo = pat.match(sid)
            self.assertIsNotNone(mo, sid)
            stamps.append(mo.group(1))
        # 5 connects in well under a second: at least two share the timestamp
        # part, so uniqueness really comes from the sequence part.
        self.assertLess(len(set(stamps)), len(stamps), ids)

    def test_no_delivery_of_messages_from_before_the_session(self):
        cid = h.uniq("gone")
        s = self.session(self.bridge.port, cid)
        s.close()
        # A publish to a channel without sessions is simply not delivered and
        # does not disturb the bridge; a new session gets later messages.
        # The sequencer republishes it on the delivery topic: once a probe
        # subscribed there has it, the broker has routed it (before the new
        # session exists).
        probe = self.subscriber(self.mosq.port, h.topic("d/client", cid))
        self.pub("client", cid, {"msg": {"nobody": 1}})
        probe.wait_json(lambda o: o.get("msg") == {"nobody": 1})
        s2 = self.session(self.bridge.port, cid)
        self.pub("client", cid, {"msg": {"again": 1}})
        m = s2.recv()
        self.assertEqual(m["msg"], {"again": 1}, "a message published before the session "
                         "existed was delivered: %r" % m)


class MessageSizeTest(h.IntegrationTest):
    """One maximum message size from entry to socket (a ~1 MiB sendToAll
    was answered 200 and closed every recipient with 4002)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mosq = cls.class_mosquitto()
        # A queue byte limit below the message limit: one message alone must
        # still be delivered, never taken for a slow consumer.
        cls.bridge = cls.class_bridge(cls.mosq, bridge_id="itsize",
                                      args=["--max-message-bytes", "131072",
                                            "--max-queue-bytes", "16384"])
        cls.api = cls.class_httpapi(cls.mosq, bridges=[cls.bridge],
                                    args=["--max-message-bytes", "131072"])

    def test_big_push_is_refused_at_the_door(self):
        cid = h.uniq("big")
        s = self.session(self.bridge.port, cid)
        big = {"blob": "x" * 200000}
        for body in ({"sendToAll": True, "msg": big}, {"to": [cid], "msg": big}):
            st, resp, _ = self.api.push(body)
            self.assertEqual(st, 413, resp)
            self.assertEqual(resp["code"], "message_too_large")
            self.assertIn("the limit is 131072", resp["msg"])
        # Nothing was published: the next message is the first to arrive.
        st, resp, _ = self.api.push({"to": [cid], "msg": {"after": 1}})
        self.assertEqual(st, 200, resp)
        self.assertEqual(s.recv()["msg"], {"after": 1})

    def test_one_message_larger_than_the_queue_limit_is_delivered(self):
        a, b = h.uniq("one-a"), h.uniq("one-b")
        sa, sb = self.session(self.bridge.port, a), self.session(self.bridge.port, b)
        msg = {"blob": "y" * 100000}  # 100 KB > --max-queue-bytes 16 KiB
        st, resp, _ = self.api.push({"sendToAll": True, "msg": msg})
        self.assertEqual(st, 200, resp)
        for s in (sa, sb):
            self.assertEqual(s.recv(timeout=10)["msg"], msg)
        self.assertEqual(self.bridge.metric("cloudpush_bridge_closes_total",
                                            {"reason": "slow_consumer"}), 0)
        # Both sessions are still open and served.
        st, _, _ = self.api.push({"to": [a, b], "msg": {"still": 1}})
        self.assertEqual((sa.recv()["msg"], sb.recv()["msg"]), ({"still": 1}, {"still": 1}))

    def test_bus_payload_over_the_limit_is_dropped_and_counted(self):
        cid = h.uniq("bus-big")
        s = self.session(self.bridge.port, cid)
        too_big = lambda: self.bridge.metric("cloudpush_sequencer_messages_total",
                                             {"result": "too_big"})
        before = too_big()
        payload = json.dumps({"msg": {"blob": "z" * 200000}, "messageId": "too-big"})
        h.mqtt_publish(self.mosq.port, h.topic("client", cid), payload)
        h.mqtt_publish(self.mosq.port, h.topic("client", cid),
                       json.dumps({"msg": {"ok": 1}, "messageId": "after-big"}))
        self.assertEqual(s.recv()["messageId"], "after-big")
        self.assertEqual(too_big(), before + 1)


class PausedReaderTest(h.IntegrationTest):
    """A client that stops reading while more is broadcast than its socket
    buffers hold gets every byte, in order, once it reads again, and a
    client that keeps reading is not held up meanwhile: what the kernel
    took only in part (a short count, or nothing) is finished by lws when
    the socket drains. Both ways of writing: many sessions' writes in one
    io_uring submission (the default), and one send() each."""

    BLOB = 400000  # 24 of them (~9.6 MB): more than loopback's socket buffers

    def check(self, io_uring):
        mosq = self.start_mosquitto()
        bridge = self.start_bridge(mosq, bridge_id="itpaused-%s" % io_uring,
                                   args=["--io-uring=" + io_uring,
                                         "--max-message-bytes", "1048576",
                                         "--max-queue-bytes", str(64 << 20)])
        paused = self.session(bridge.port, h.uniq("paused"))
        reading = self.session(bridge.port, h.uniq("reading"))
        n = 24
        for i in range(n):
            blob = chr(ord("a") + i % 26) * self.BLOB
            h.mqtt_publish(mosq.port, h.topic("broadcast"),
                           json.dumps({"msg": {"i": i, "blob": blob}, "messageId": "p%d" % i}))
            m = reading.recv(timeout=10)
            self.assertEqual((m["msg"]["i"], m["messageId"]), (i, "p%d" % i))
        for i in range(n):
            m = paused.recv(timeout=10)
            self.assertEqual(m["msg"]["i"], i)
            self.assertEqual(m["msg"]["blob"], chr(ord("a") + i % 26) * self.BLOB)
        self.assertEqual(bridge.metric("cloudpush_bridge_closes_total",
                                       {"reason": "slow_consumer"}), 0)
        return bridge

    def test_io_uring(self):
        bridge = self.check("true")
        if bridge.metric("cloudpush_bridge_io_uring") == 0:
            self.assertIn("io_uring unavailable", h.tail(bridge.log_path, 200))
            self.skipTest("the kernel refuses io_uring here: the send() path ran")
        # The writes went through the ring: the reading session's and the
        # paused one's, until its socket was full.
        self.assertGreaterEqual(bridge.metric("cloudpush_bridge_ring_sends_total"), 24)
        self.assertGreaterEqual(bridge.metric("cloudpush_bridge_ring_submissions_total"), 1)
        # The paused session's socket filled: a send took part or nothing.
        self.assertGreaterEqual(bridge.metric("cloudpush_bridge_ring_short_total"), 1)
        self.assertEqual(bridge.metric("cloudpush_bridge_ring_failures_total"), 0)

    def test_send_one_by_one(self):
        bridge = self.check("false")
        self.assertEqual(bridge.metric("cloudpush_bridge_io_uring"), 0)
        self.assertEqual(bridge.metric("cloudpush_bridge_ring_sends_total"), 0)


class SingleSessionTest(h.IntegrationTest):

    def test_new_session_replaces_older(self):
        mosq = self.start_mosquitto()
        bridge = self.start_bridge(mosq, bridge_id="itsingle", args=["--single-session"])
        cid = h.uniq("single")
        other = h.uniq("single-other")
        s1 = self.session(bridge.port, cid)
        so = self.session(bridge.port, other)
        s2 = self.session(bridge.port, cid)
        code, reason, frames = h.ws_expect_close(s1.ws, 5)
        self.assertEqual(code, 4003, (code, reason, frames))
        self.assertIn("replac", reason.lower())
        self.assertEqual(frames, [], "old session got data frames before its close")
        # The new session and other channels are unaffected.
        h.mqtt_publish(mosq.port, h.topic("client", cid), {"msg": {"to": "new"}})
        m = s2.recv()
        self.assertDelivery(m, cid, s2.session_id, {"to": "new"}, h.TRIGGER_MQTT)
        so.heartbeat()
        h.wait_until(lambda: bridge.metric("cloudpush_bridge_closes_total",
                                           {"reason": "replaced"}) >= 1, h.t(3),
                     what='closes_total{reason="replaced"} >= 1')


if __name__ == "__main__":
    unittest.main()
