"""Broker session hygiene (issue 15 item 10): a bridge that stops cleanly
leaves no session on the broker, and a crashed bridge's session expires
after --mqtt-session-expiry instead of queueing broadcasts for a day.
Also --single-session across bridges (item 11): the kick travels on the
bus's session control topic.

The probe connects with the bridge's client id and clean start off: the
broker's CONNACK says whether it still held a session for that id, and a
held session would hand over the messages queued for it."""

import os
import shutil
import signal
import subprocess
import threading
import time
import unittest

import paho.mqtt.client as mqtt

import harness as h

ONE_PROCESS = ["--workers", "1"]  # probed by MQTT client id (see bridge_with_channel)


def probe_session(port, client_id, wait=1.0):
    """(session_present, messages delivered to the old session)"""
    done = threading.Event()
    result = {"present": None, "messages": []}

    def on_connect(client, userdata, flags, rc, properties=None):
        result["present"] = bool(flags.get("session present"))
        done.set()

    def on_message(client, userdata, msg):
        result["messages"].append(msg.topic)

    c = mqtt.Client(client_id=client_id, protocol=mqtt.MQTTv5)
    c.on_connect = on_connect
    c.on_message = on_message
    # clean_start False: take over whatever session the broker still holds
    # (the probe's own session expires with its connection).
    c.connect("127.0.0.1", port, keepalive=10, clean_start=False)
    c.loop_start()
    try:
        if not done.wait(h.t(5)):
            raise AssertionError("no CONNACK for the probe")
        time.sleep(wait)  # queued messages, if any, come right after CONNACK
    finally:
        c.disconnect()
        c.loop_stop()
    return result["present"], result["messages"]


class SessionHygieneTest(h.IntegrationTest):

    def bridge_with_channel(self, mosq, bridge_id, args=()):
        # These tests probe the broker's session by the bridge's MQTT client
        # id: one process (--workers 1) has the plain ids; with workers each
        # has its own, suffixed -wN (test_workers covers those).
        bridge = self.start_bridge(mosq, bridge_id=bridge_id, args=list(args) + ONE_PROCESS)
        cid = h.uniq("hyg")
        self.session(bridge.port, cid)  # greeted: the channel is subscribed
        return bridge, cid

    def test_clean_exit_leaves_no_session(self):
        mosq = self.start_mosquitto()
        bridge, cid = self.bridge_with_channel(mosq, "ithygclean")
        bridge.stop()  # SIGTERM, exit 0
        h.mqtt_publish(mosq.port, h.topic("broadcast"), '{"msg":{"n":1}}')
        h.mqtt_publish(mosq.port, h.topic("client", cid), '{"msg":{"n":2}}')
        present, messages = probe_session(mosq.port, "cloudpush-bridge-ithygclean")
        self.assertFalse(present, "the broker still holds the stopped bridge's session")
        self.assertEqual(messages, [], "messages were queued for a stopped bridge")

    def test_crashed_session_expires(self):
        mosq = self.start_mosquitto()
        # Control: a long expiry keeps the session (so the probe can see one)...
        kept, kept_cid = self.bridge_with_channel(mosq, "ithygkept",
                                                  args=["--mqtt-session-expiry", "60"])
        # ...a short one makes it go away.
        gone, _ = self.bridge_with_channel(mosq, "ithyggone",
                                           args=["--mqtt-session-expiry", "2"])
        kept.stop(sig=signal.SIGKILL)
        gone.stop(sig=signal.SIGKILL)
        # Bridges subscribe to the delivery topic (what sequencers publish).
        h.mqtt_publish(mosq.port, h.topic("d/client", kept_cid), '{"msg":{"n":3}}')
        time.sleep(h.t(4))
        present, _ = probe_session(mosq.port, "cloudpush-bridge-ithyggone", wait=0.2)
        self.assertFalse(present, "the crashed bridge's session outlived its 2 s expiry")
        present, messages = probe_session(mosq.port, "cloudpush-bridge-ithygkept")
        self.assertTrue(present, "a crashed bridge's session must survive a short outage")
        self.assertIn(h.topic("d/client", kept_cid), messages)

    def test_expiry_survives_a_reconnect(self):
        """Paho's automatic reconnect must ask for the same expiry: a session
        that silently became 0 s would be lost at the next link blip."""
        mosq = self.start_mosquitto()
        bridge, cid = self.bridge_with_channel(mosq, "ithygreco",
                                               args=["--mqtt-session-expiry", "60"])
        mosq.restart()
        h.wait_until(lambda: h.http_request(bridge.port, "GET", "/readyz")[0] == 200, h.t(15),
                     what="bridge reconnected")
        bridge.stop(sig=signal.SIGKILL)
        h.mqtt_publish(mosq.port, h.topic("d/client", cid), '{"msg":{"n":4}}')
        time.sleep(h.t(1))
        present, messages = probe_session(mosq.port, "cloudpush-bridge-ithygreco")
        self.assertTrue(present, "the reconnected session lost its expiry")
        self.assertIn(h.topic("d/client", cid), messages)

    def test_sequencer_session_taken_over_after_a_crash(self):
        """A bridge's sequencer keeps its session across a crash: a service
        message the broker queued for it meanwhile is sequenced when the
        bridge is back (its session is taken over, not discarded)."""
        mosq = self.start_mosquitto()
        bridge = self.start_bridge(mosq, bridge_id="ithygseq",
                                   args=["--mqtt-session-expiry", "60"])
        bridge.stop(sig=signal.SIGKILL)
        cid = h.uniq("hyg-seq")
        delivery = self.subscriber(mosq.port, h.topic("d/client", cid))
        h.mqtt_publish(mosq.port, h.topic("client", cid),
                       '{"msg":{"n":5},"messageId":"while-away"}')
        again = self.start_bridge(mosq, bridge_id="ithygseq", args=["--mqtt-session-expiry", "60"])
        _, obj = delivery.wait_json(lambda o: o.get("messageId") == "while-away",
                                    timeout=h.t(10))
        self.assertEqual(obj.get("msg"), {"n": 5})
        self.assertIn("offset", obj)  # null: no Redis here
        self.assertEqual(again.metric("cloudpush_sequencer_messages_total",
                                      {"result": "unsequenced"}), 1)

    def test_clean_exit_ends_the_sequencer_session(self):
        mosq = self.start_mosquitto()
        bridge = self.start_bridge(mosq, bridge_id="ithygseqclean", args=ONE_PROCESS)
        bridge.stop()
        h.mqtt_publish(mosq.port, h.topic("client", h.uniq("hyg-seq")), '{"msg":{"n":6}}')
        present, messages = probe_session(mosq.port, "cloudpush-seq-ithygseqclean")
        self.assertFalse(present, "the broker still holds the stopped sequencer's session")
        self.assertEqual(messages, [])


class SingleSessionAcrossBridgesTest(h.IntegrationTest):

    def test_newest_session_wins_on_any_bridge(self):
        self.newest_session_wins(self.start_mosquitto())

    def test_with_the_shipped_acl(self):
        """mosquitto/acl lets the bridges use the control topic."""
        pw = os.path.join(self.dir, "passwd")
        acl = os.path.join(self.dir, "acl")
        shutil.copy(os.path.join(h.MOSQUITTO_DIR, "acl"), acl)
        env = dict(os.environ, CLOUDPUSH_BRIDGE_MQTT_PASSWORD="bridge-pw-for-tests",
                   CLOUDPUSH_SERVICE_MQTT_PASSWORD="service-pw-for-tests")
        subprocess.run([os.path.join(h.MOSQUITTO_DIR, "make-passwords.sh"), pw], check=True,
                       capture_output=True, env=env, timeout=30, stdin=subprocess.DEVNULL)
        mosq = self.start_mosquitto(auth={"password_file": pw, "acl_file": acl})
        self.newest_session_wins(mosq, ("cloudpush-bridge", "bridge-pw-for-tests"))

    def newest_session_wins(self, mosq, creds=None):
        kw = {"mqtt_credentials": creds} if creds else {}
        a = self.start_bridge(mosq, bridge_id="itssa", args=["--single-session"], **kw)
        b = self.start_bridge(mosq, bridge_id="itssb", args=["--single-session"], **kw)
        cid = h.uniq("single")
        control = None
        if not creds:
            control = self.subscriber(mosq.port, h.topic("control/session", cid))
        first = self.session(a.port, cid)
        second = self.session(b.port, cid)  # on another bridge
        code, reason, _ = h.ws_expect_close(first.ws)
        self.assertEqual(code, 4003, reason)
        self.assertIn("replaced", reason)
        if control:
            # The announcement is on the documented topic.
            _, ev = control.wait_json(lambda o: o.get("sessionId") == second.session_id)
            self.assertIsInstance(ev.get("at"), int, ev)

        # Back to the first bridge: the newest session is kept there too,
        # even when the older session's announcement is still travelling.
        third = self.session(a.port, cid)
        code, reason, _ = h.ws_expect_close(second.ws)
        self.assertEqual(code, 4003, reason)
        self.assertIn("replaced", reason)
        service = {"username": "cloudpush-service",
                   "password": "service-pw-for-tests"} if creds else {}
        h.mqtt_publish(mosq.port, h.topic("client", cid), '{"msg":{"to":"newest"}}', **service)
        m = third.recv_type(h.MSG_BUSINESS)
        self.assertEqual(m.get("sessionId"), third.session_id)
        self.assertEqual(m.get("msg"), {"to": "newest"})
        self.assertEqual(a.metric("cloudpush_bridge_replaced_by_other_bridge_total"), 1)
        self.assertEqual(b.metric("cloudpush_bridge_replaced_by_other_bridge_total"), 1)


if __name__ == "__main__":
    unittest.main()
