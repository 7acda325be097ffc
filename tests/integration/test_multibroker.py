"""Several Mosquitto brokers as one bus, joined by Mosquitto's own bridge
(mosquitto/bridge-example.conf), on one machine.

broker1 (the "hub") and broker2 both run with authentication and the ACL of
mosquitto/acl; broker2 opens the link to broker1 with the example's settings
(user cloudpush-broker, the bus but the documented push topics both ways:
each broker's sequencers number those and the delivery topics cross the
link; try_private, persistent session). cloudpush bridge A is on broker1; bridge B and the HTTP API on
broker2; no Redis (--redis=, as the harness does by default).

Checked: targeted HTTP pushes to clients on A and B, broadcasts, WebSocket to
WebSocket across the brokers in both directions, one channel on both
brokers, pushes published by services on either broker, and what services
see (upstream, presence); each message arrives exactly once (nothing more
within a short window after it: no loop through the link). Then a link
outage: what is published on broker2 while broker1 is down reaches the
client on broker1 when it is back (QoS 1 queues of the link and of the
bridge's persistent session).
"""

import json
import os
import re
import shutil
import subprocess
import time
import unittest

import harness as h

EXAMPLE = os.path.join(h.MOSQUITTO_DIR, "bridge-example.conf")
MAKE_PASSWORDS = os.path.join(h.MOSQUITTO_DIR, "make-passwords.sh")
ACL = os.path.join(h.MOSQUITTO_DIR, "acl")

PASSWORDS = {
    "cloudpush-bridge": ("CLOUDPUSH_BRIDGE_MQTT_PASSWORD", "mb-bridge-secret"),
    "cloudpush-httpapi": ("CLOUDPUSH_HTTPAPI_MQTT_PASSWORD", "mb-httpapi-secret"),
    "cloudpush-service": ("CLOUDPUSH_SERVICE_MQTT_PASSWORD", "mb-service-secret"),
    "cloudpush-broker": ("CLOUDPUSH_BROKER_MQTT_PASSWORD", "mb-broker-secret"),
}
QUIET = 0.5  # seconds without a second copy that count as "exactly once"
# A session that must get nothing is checked with a marker sent after the
# message on the same path: the marker must be the next frame it reads.


def link_config(remote_port):
    """bridge-example.conf with the test's address and password."""
    with open(EXAMPLE) as f:
        text = f.read()
    text, n_addr = re.subn(r"^address .*$", "address 127.0.0.1:%d" % remote_port, text, flags=re.M)
    text, n_pw = re.subn(r"^remote_password .*$",
                         "remote_password %s" % PASSWORDS["cloudpush-broker"][1], text, flags=re.M)
    if (n_addr, n_pw) != (1, 1):
        raise AssertionError("bridge-example.conf must have one address and one remote_password "
                             "line (found %d, %d)" % (n_addr, n_pw))
    return text


def credentials(user):
    return (user, PASSWORDS[user][1])


class MultiBroker:
    """Mixin: two authenticated brokers joined by the example link."""

    @classmethod
    def start_brokers(cls):
        d = cls.class_dir
        cls.passwd = os.path.join(d, "passwd")
        cls.acl = os.path.join(d, "acl")
        shutil.copy(ACL, cls.acl)
        env = {k: v for k, v in os.environ.items() if not k.endswith("_MQTT_PASSWORD")}
        env.update({var: pw for var, pw in PASSWORDS.values()})
        r = subprocess.run([MAKE_PASSWORDS, cls.passwd] + sorted(PASSWORDS), capture_output=True,
                           text=True, env=env, timeout=30, stdin=subprocess.DEVNULL)
        if r.returncode != 0 or r.stdout:
            raise AssertionError("make-passwords.sh: %d %s %s" % (r.returncode, r.stdout,
                                                                  r.stderr))
        auth = {"password_file": cls.passwd, "acl_file": cls.acl}
        cls.broker1 = cls.class_mosquitto(name="broker1", auth=auth)
        cls.broker2 = cls.class_mosquitto(name="broker2", auth=auth,
                                          extra_conf=link_config(cls.broker1.port))
        cls.wait_link()

    @classmethod
    def wait_link(cls):
        """Until a probe crosses the link each way (the link connects
        asynchronously, and again after an outage)."""
        for src, dst in ((cls.broker2, cls.broker1), (cls.broker1, cls.broker2)):
            sub = h.MqttClient(dst.port, username="cloudpush-service",
                               password=PASSWORDS["cloudpush-service"][1])
            pub = h.MqttClient(src.port, username="cloudpush-bridge",
                               password=PASSWORDS["cloudpush-bridge"][1])
            try:
                topic = "cloudpush/presence/link-probe-%d" % src.port
                sub.subscribe(topic)
                deadline = time.monotonic() + h.t(15)
                while True:
                    pub.publish(topic, b'{"probe":1}')
                    try:
                        sub.wait_messages(1, topic, timeout=0.3)
                        break
                    except AssertionError:
                        if time.monotonic() > deadline:
                            raise AssertionError("the link %s -> %s carries nothing; log:\n%s" % (
                                src.name, dst.name, h.tail(cls.broker2.log_path, 40)))
            finally:
                sub.close()
                pub.close()

    @classmethod
    def start_components(cls):
        cls.bridge_a = cls.class_bridge(cls.broker1, bridge_id="mb-a",
                                        mqtt_credentials=credentials("cloudpush-bridge"))
        cls.bridge_b = cls.class_bridge(cls.broker2, bridge_id="mb-b",
                                        mqtt_credentials=credentials("cloudpush-bridge"))
        user, pw = credentials("cloudpush-httpapi")
        cls.api = cls.class_httpapi(cls.broker2, args=["--mqtt-user", user, "--mqtt-password", pw])

    # -- helpers

    def service(self, broker, *topics):
        return self.subscriber(broker.port, *topics, username="cloudpush-service",
                               password=PASSWORDS["cloudpush-service"][1])

    def service_publish(self, broker, topic, payload):
        h.mqtt_publish(broker.port, topic, payload, username="cloudpush-service",
                       password=PASSWORDS["cloudpush-service"][1])

    def push(self, body):
        st, resp, _ = self.api.push(body)
        self.assertEqual(st, 200, resp)
        return resp["data"]

    def recv_once(self, session, msg, trigger, **kw):
        """The next message is this push, and no copy follows within QUIET."""
        m = session.recv()
        self.assertDelivery(m, session.channel_id, session.session_id, msg, trigger, **kw)
        h.ws_expect_nothing(self, session.ws, QUIET)
        return m

    def assertOnce(self, sub, topic, pred):
        """Exactly one message on topic matches pred, also QUIET later."""
        sub.wait_json(pred, topic=topic)
        time.sleep(QUIET)
        got = [p for tp, p in sub.received(topic) if pred(json.loads(p))]
        self.assertEqual(len(got), 1, "%d copies on %s: %r" % (len(got), topic, got))


class MultiBrokerTest(MultiBroker, h.IntegrationTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.start_brokers()
        cls.start_components()

    def test_link_uses_the_broker_user(self):
        """The link logged in to broker1 as cloudpush-broker (the ACL user),
        with a persistent session (c0), and broker1 recognised it as a
        Mosquitto bridge ("New bridge": try_private, which keeps messages from
        going back over the link); anonymous clients are still refused."""
        with open(self.broker1.log_path, errors="replace") as f:
            log = f.read()
        self.assertRegex(log, r"New bridge connected from 127\.0\.0\.1:\d+ as cloudpush-link-1 "
                              r"\(p\d+, c0, k\d+, u'cloudpush-broker'\)")
        for broker in (self.broker1, self.broker2):
            c = h.MqttClient(broker.port, connect=False)
            try:
                self.assertNotEqual(c.connect(expect_success=False), 0)
            finally:
                c.close()

    def test_http_push_to_clients_on_both_brokers(self):
        a, b = h.uniq("mb-a"), h.uniq("mb-b")
        sa = self.session(self.bridge_a.port, a)
        sb = self.session(self.bridge_b.port, b)
        data = self.push({"to": [a, b], "msg": {"both": 1}})
        ids = {m["to"]: m["messageId"] for m in data["messages"]}
        self.recv_once(sa, {"both": 1}, h.TRIGGER_HTTP, message_id=ids[a])
        self.recv_once(sb, {"both": 1}, h.TRIGGER_HTTP, message_id=ids[b])
        # One recipient at a time, on the far broker and on the near one;
        # each push is the other session's marker: the API publishes them in
        # order, so a copy of "far" for b would reach b before "near".
        data = self.push({"to": [a], "msg": {"far": 1}})
        self.recv_once(sa, {"far": 1}, h.TRIGGER_HTTP, message_id=data["messages"][0]["messageId"])
        data = self.push({"to": [b], "msg": {"near": 1}})
        near = h.ws_expect_marker(self, sb.ws, data["messages"][0]["messageId"])
        self.assertDelivery(near, b, sb.session_id, {"near": 1}, h.TRIGGER_HTTP,
                            message_id=data["messages"][0]["messageId"])
        h.ws_expect_nothing(self, sb.ws, QUIET)  # and exactly once
        data = self.push({"to": [a], "msg": {"marker": 1}})
        h.ws_expect_marker(self, sa.ws, data["messages"][0]["messageId"])

    def test_broadcast_reaches_both_brokers(self):
        sa = self.session(self.bridge_a.port, h.uniq("mb-bca"))
        sb = self.session(self.bridge_b.port, h.uniq("mb-bcb"))
        data = self.push({"sendToAll": True, "msg": {"all": 1}})
        mid = data["messages"][0]["messageId"]
        ma = sa.recv()
        mb = sb.recv()
        for s, m in ((sa, ma), (sb, mb)):
            self.assertDelivery(m, s.channel_id, s.session_id, {"all": 1}, h.TRIGGER_HTTP,
                                message_id=mid)
        # And a broadcast a service publishes on broker1.
        self.service_publish(self.broker1, h.topic("broadcast"),
                             {"msg": {"all": 2}, "messageId": "mb-bc-2"})
        for s in (sa, sb):
            self.assertDelivery(s.recv(), s.channel_id, s.session_id, {"all": 2},
                                h.TRIGGER_MQTT, message_id="mb-bc-2")
        h.ws_expect_nothing(self, sa.ws, QUIET)
        # A marker broadcast on the same path (broker1, then the link): no
        # second copy of either broadcast came before it.
        self.service_publish(self.broker1, h.topic("broadcast"),
                             {"msg": {"marker": 1}, "messageId": "mb-bc-marker"})
        for s in (sa, sb):
            h.ws_expect_marker(self, s.ws, "mb-bc-marker")

    def test_websocket_to_websocket_both_directions(self):
        a, b = h.uniq("mb-wa"), h.uniq("mb-wb")
        sa = self.session(self.bridge_a.port, a)
        sb = self.session(self.bridge_b.port, b)
        sa.send({"msgType": 1, "to": [b], "msg": {"ab": 1}, "messageId": "mb-ab"})
        self.assertEqual(sa.recv_type(h.MSG_BUSINESS_ACK)["messageId"], "mb-ab")
        self.recv_once(sb, {"ab": 1}, h.TRIGGER_WEBSOCKET, sender=a, message_id="mb-ab")
        sb.send({"msgType": 1, "to": [a], "msg": {"ba": 1}, "messageId": "mb-ba"})
        self.assertEqual(sb.recv_type(h.MSG_BUSINESS_ACK)["messageId"], "mb-ba")
        self.recv_once(sa, {"ba": 1}, h.TRIGGER_WEBSOCKET, sender=b, message_id="mb-ba")
        # b gets no copy of its own message back over the link: a marker
        # from a, sent after "ba" reached a, is the next thing b reads.
        sa.send({"msgType": 1, "to": [b], "msg": {"marker": 1}, "messageId": "mb-ab-marker"})
        h.ws_expect_marker(self, sb.ws, "mb-ab-marker")

    def test_one_channel_on_both_brokers(self):
        c = h.uniq("mb-both")
        s1 = self.session(self.bridge_a.port, c)
        s2 = self.session(self.bridge_b.port, c)
        data = self.push({"to": [c], "msg": {"twice": 1}})
        mid = data["messages"][0]["messageId"]
        m1, m2 = s1.recv(), s2.recv()
        self.assertDelivery(m1, c, s1.session_id, {"twice": 1}, h.TRIGGER_HTTP, message_id=mid)
        self.assertDelivery(m2, c, s2.session_id, {"twice": 1}, h.TRIGGER_HTTP, message_id=mid)
        sender = self.session(self.bridge_a.port, h.uniq("mb-sender"))
        sender.send({"msgType": 1, "to": [c], "msg": {"ws": 1}, "messageId": "mb-tw"})
        for s in (s1, s2):
            self.assertDelivery(s.recv(), c, s.session_id, {"ws": 1}, h.TRIGGER_WEBSOCKET,
                                sender=sender.channel_id, message_id="mb-tw")
        h.ws_expect_nothing(self, s1.ws, QUIET)
        # The sender's marker on the same path is the next frame of both.
        sender.send({"msgType": 1, "to": [c], "msg": {"marker": 1}, "messageId": "mb-tw-marker"})
        for s in (s1, s2):
            h.ws_expect_marker(self, s.ws, "mb-tw-marker")

    def test_services_publish_on_either_broker(self):
        a, b = h.uniq("mb-sa"), h.uniq("mb-sb")
        sa = self.session(self.bridge_a.port, a)
        sb = self.session(self.bridge_b.port, b)
        self.service_publish(self.broker1, h.topic("client", b),
                             {"msg": {"from": "broker1"}, "messageId": "mb-s1"})
        self.service_publish(self.broker2, h.topic("client", a),
                             {"msg": {"from": "broker2"}, "messageId": "mb-s2"})
        self.recv_once(sb, {"from": "broker1"}, h.TRIGGER_MQTT, message_id="mb-s1")
        self.recv_once(sa, {"from": "broker2"}, h.TRIGGER_MQTT, message_id="mb-s2")

    def test_services_see_client_events_once_on_each_broker(self):
        watch1 = self.service(self.broker1, "cloudpush/upstream/#", "cloudpush/presence/#")
        watch2 = self.service(self.broker2, "cloudpush/upstream/#", "cloudpush/presence/#")
        a, b = h.uniq("mb-ua"), h.uniq("mb-ub")
        sa = self.session(self.bridge_a.port, a)
        sb = self.session(self.bridge_b.port, b)
        sa.send({"msgType": 1, "to": [b], "msg": {"up": 1}, "messageId": "mb-up"})
        sb.recv_type(h.MSG_BUSINESS)
        for w in (watch1, watch2):
            self.assertOnce(w, "cloudpush/upstream/" + a, lambda o: o.get("messageId") == "mb-up")
            self.assertOnce(w, "cloudpush/presence/" + b,
                            lambda o: o.get("event") == "connect" and o.get("bridge") == "mb-b")


class LinkOutageTest(MultiBroker, h.IntegrationTest):
    """broker1 stops and comes back: the link and bridge A reconnect; a push
    made on broker2 meanwhile reaches A's client afterwards."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.start_brokers()
        cls.start_components()

    def test_push_during_outage_arrives_after_it(self):
        a, b = h.uniq("mb-oa"), h.uniq("mb-ob")
        sa = self.session(self.bridge_a.port, a)
        sb = self.session(self.bridge_b.port, b)
        self.broker1.stop()
        self.bridge_a.wait_health_status(503, h.t(10))
        # broker2 takes it (the API's 200) and keeps it for the link.
        data = self.push({"to": [a, b], "msg": {"during": 1}})
        ids = {m["to"]: m["messageId"] for m in data["messages"]}
        self.recv_once(sb, {"during": 1}, h.TRIGGER_HTTP, message_id=ids[b])
        self.broker1.restart()
        self.bridge_a.wait_health_status(200, h.t(15))
        m = sa.recv(timeout=15)
        self.assertDelivery(m, a, sa.session_id, {"during": 1}, h.TRIGGER_HTTP,
                            message_id=ids[a])
        # The link works again both ways.
        self.wait_link()
        sb.send({"msgType": 1, "to": [a], "msg": {"after": 1}, "messageId": "mb-after"})
        self.assertEqual(sb.recv_type(h.MSG_BUSINESS_ACK)["messageId"], "mb-after")
        m = sa.recv()
        while m.get("messageId") == ids[a]:
            m = sa.recv()  # QoS 1 may repeat a message across a reconnect
        self.assertDelivery(m, a, sa.session_id, {"after": 1}, h.TRIGGER_WEBSOCKET, sender=b,
                            message_id="mb-after")


if __name__ == "__main__":
    unittest.main()
