"""The broker goes away and comes back: health, buffering, resubscription."""

import json
import sys
import time
import unittest

import harness as h


class BrokerRestartTest(h.IntegrationTest):

    def recv_id(self, session, message_id, timeout):
        """Receives frames until the one with message_id; returns it and the
        frames seen before it (duplicates of earlier messages are tolerated:
        QoS 1 is at-least-once)."""
        deadline = time.monotonic() + h.t(timeout)
        before = []
        while True:
            left = (deadline - time.monotonic()) / h.SLOW
            if left <= 0:
                self.fail("%s: no message %r within %.0fs (got %r)" % (
                    session.channel_id, message_id, h.t(timeout), before))
            try:
                m = session.recv(left)
            except h.WsClosed as e:
                self.fail("%s: closed (%s %r) while waiting for %r" % (
                    session.channel_id, e.code, e.reason, message_id))
            except Exception as e:  # noqa: BLE001 - timeout
                self.fail("%s: no message %r within %.0fs (%r; got %r)" % (
                    session.channel_id, message_id, h.t(timeout), e, before))
            if m.get("messageId") == message_id:
                if before:
                    print("note: %s got %r before %r" % (session.channel_id, before, message_id),
                          file=sys.stderr)
                return m, before
            before.append(m)

    def test_broker_restart(self):
        mosq = self.start_mosquitto()
        bridge = self.start_bridge(mosq, bridge_id="itrestart")
        a, b = h.uniq("rs-a"), h.uniq("rs-b")
        sa = self.session(bridge.port, a)
        sb = self.session(bridge.port, b)
        sa.send({"msgType": 1, "to": [b], "msg": {"phase": "before"}, "messageId": "before"})
        self.recv_id(sb, "before", 5)
        self.recv_id(sa, "before", 5)

        # Broker down.
        mosq.stop()
        st, body = bridge.wait_health_status(503, h.t(10))
        self.assertIsInstance(body, dict, body)
        self.assertEqual(body.get("status"), "unavailable", body)
        self.assertIs(body.get("mqtt"), False, body)
        self.assertEqual(bridge.metric("cloudpush_bridge_mqtt_connected"), 0)
        st, hd, raw = h.handshake_error(bridge.port, channel_id=h.uniq("rs-new"))
        self.assertEqual(st, 503, raw)
        self.assertEqual(json.loads(raw).get("code"), "bus_unavailable", raw)

        # Existing sessions stay open; a push made now is buffered.
        sa.heartbeat("hb-down")
        sa.send({"msgType": 1, "to": [b], "msg": {"phase": "down"}, "messageId": "while-down"})
        # No BUSINESS_ACK before the broker accepted the publish.
        h.ws_expect_nothing(self, sa.ws, 1.0)
        self.assertTrue(bridge.running())

        # Broker back on the same port, with its persistent sessions.
        mosq.restart()
        m, _ = self.recv_id(sb, "while-down", 20)
        self.assertDelivery(m, b, sb.session_id, {"phase": "down"}, h.TRIGGER_WEBSOCKET,
                            sender=a, message_id="while-down")
        ack, _ = self.recv_id(sa, "while-down", 20)
        self.assertEqual(ack.get("msgType"), h.MSG_BUSINESS_ACK, ack)
        body = bridge.wait_health_status(200, h.t(20))[1]
        self.assertIs(body.get("mqtt"), True, body)

        # Subscriptions work again: client topic, broadcast, new sessions.
        h.mqtt_publish(mosq.port, h.topic("client", b), {"msg": {"phase": "after"},
                                                         "messageId": "after-1"})
        m, _ = self.recv_id(sb, "after-1", 10)
        self.assertDelivery(m, b, sb.session_id, {"phase": "after"}, h.TRIGGER_MQTT,
                            message_id="after-1")
        h.mqtt_publish(mosq.port, h.topic("client", a), {"msg": {"phase": "after"},
                                                         "messageId": "after-2"})
        self.recv_id(sa, "after-2", 10)
        h.mqtt_publish(mosq.port, h.topic("broadcast"), {"msg": {"phase": "bc"},
                                                         "messageId": "after-bc"})
        self.recv_id(sa, "after-bc", 10)
        self.recv_id(sb, "after-bc", 10)
        c = h.uniq("rs-c")
        sc = self.session(bridge.port, c)
        sa.send({"msgType": 1, "to": [c], "msg": {"phase": "new"}, "messageId": "to-new"})
        self.recv_id(sc, "to-new", 10)
        self.recv_id(sa, "to-new", 10)

    def test_bridge_starts_while_broker_down(self):
        mosq = h.Mosquitto(self.dir)  # not started: the port is free
        self._logs.append(mosq.log_path)
        self.addCleanup(mosq.stop)
        bridge = self.start_bridge(mosq, bridge_id="itlate", wait=False)
        # It must run and report itself unavailable rather than exit or hang.
        st, body = bridge.wait_health_status(503, h.t(10))
        self.assertIs(body.get("mqtt"), False, body)
        mosq.start()
        bridge.wait_health_status(200, h.t(20))
        cid = h.uniq("late")
        s = self.session(bridge.port, cid)
        h.mqtt_publish(mosq.port, h.topic("client", cid), {"msg": {"late": 1}, "messageId": "l1"})
        self.recv_id(s, "l1", 10)


if __name__ == "__main__":
    unittest.main()
