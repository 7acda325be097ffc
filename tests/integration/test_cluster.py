"""Two bridge processes on one broker."""

import unittest

import harness as h


class ClusterTest(h.IntegrationTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mosq = cls.class_mosquitto()
        cls.b1 = cls.class_bridge(cls.mosq, bridge_id="itnode1")
        cls.b2 = cls.class_bridge(cls.mosq, bridge_id="itnode2")

    def test_push_between_bridges(self):
        a, b = h.uniq("cl-a"), h.uniq("cl-b")
        sa = self.session(self.b1.port, a)
        sb = self.session(self.b2.port, b)
        self.assertTrue(sa.session_id.startswith("itnode1_"), sa.session_id)
        self.assertTrue(sb.session_id.startswith("itnode2_"), sb.session_id)
        for i, mid in enumerate(("x-1", None)):
            env = {"msgType": 1, "to": [b], "msg": {"hop": i}}
            if mid:
                env["messageId"] = mid
            sa.send(env)
            m = sb.recv()
            self.assertDelivery(m, b, sb.session_id, {"hop": i}, h.TRIGGER_WEBSOCKET, sender=a,
                                message_id=mid)
            ack = sa.recv_type(h.MSG_BUSINESS_ACK)
            self.assertEqual(ack.get("messageId"), m["messageId"])
        # And back.
        sb.send({"msgType": 1, "to": [a], "msg": {"back": True}, "messageId": "back-1"})
        self.assertDelivery(sa.recv(), a, sa.session_id, {"back": True}, h.TRIGGER_WEBSOCKET,
                            sender=b, message_id="back-1")
        self.assertEqual(sb.recv_type(h.MSG_BUSINESS_ACK)["messageId"], "back-1")

    def test_broadcast_reaches_both_bridges(self):
        c1, c2 = h.uniq("clb-1"), h.uniq("clb-2")
        s1 = self.session(self.b1.port, c1)
        s2 = self.session(self.b2.port, c2)
        self.publish_broadcast(self.mosq.port, {"msg": {"everyone": 1}, "messageId": "bc-cluster"},
                               self.b1, self.b2)
        self.assertDelivery(s1.recv(), c1, s1.session_id, {"everyone": 1}, h.TRIGGER_MQTT,
                            message_id="bc-cluster")
        self.assertDelivery(s2.recv(), c2, s2.session_id, {"everyone": 1}, h.TRIGGER_MQTT,
                            message_id="bc-cluster")

    def test_same_channel_on_both_bridges(self):
        cid = h.uniq("clm")
        s1 = self.session(self.b1.port, cid)
        s2 = self.session(self.b2.port, cid)
        sender = self.session(self.b1.port, h.uniq("clm-sender"))
        sender.send({"msgType": 1, "to": [cid], "msg": {"twice": 1}, "messageId": "tw"})
        self.assertDelivery(s1.recv(), cid, s1.session_id, {"twice": 1}, h.TRIGGER_WEBSOCKET,
                            sender=sender.channel_id, message_id="tw")
        self.assertDelivery(s2.recv(), cid, s2.session_id, {"twice": 1}, h.TRIGGER_WEBSOCKET,
                            sender=sender.channel_id, message_id="tw")
        # Exactly once per session: a marker from the same sender, on the
        # same path, is the next frame of both.
        h.ws_expect_nothing(self, s1.ws, 0.3)
        sender.send({"msgType": 1, "to": [cid], "msg": {"marker": 1}, "messageId": "tw-marker"})
        for s in (s1, s2):
            h.ws_expect_marker(self, s.ws, "tw-marker")


if __name__ == "__main__":
    unittest.main()
