"""mosquitto/acl and mosquitto/make-passwords.sh against a real broker."""

import os
import shutil
import subprocess
import time
import unittest

import harness as h

MAKE_PASSWORDS = os.path.join(h.MOSQUITTO_DIR, "make-passwords.sh")
ACL = os.path.join(h.MOSQUITTO_DIR, "acl")

PASSWORDS = {
    "cloudpush-bridge": ("CLOUDPUSH_BRIDGE_MQTT_PASSWORD", "bridge-secret-1"),
    "cloudpush-httpapi": ("CLOUDPUSH_HTTPAPI_MQTT_PASSWORD", "httpapi-secret-2"),
    "cloudpush-service": ("CLOUDPUSH_SERVICE_MQTT_PASSWORD", "service-secret-3"),
}
REFUSED = 0x80


def run_make_passwords(args, env_extra=None):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_MQTT_PASSWORD")}
    env.update(env_extra or {})
    return subprocess.run([MAKE_PASSWORDS] + args, capture_output=True, text=True, env=env,
                          timeout=30, stdin=subprocess.DEVNULL)


class MakePasswordsTest(h.IntegrationTest):

    def test_usage(self):
        r = run_make_passwords([])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("usage", (r.stdout + r.stderr).lower())
        r = run_make_passwords(["--help"])
        self.assertEqual(r.returncode, 0)
        self.assertIn("PASSWORD_FILE", r.stdout)
        r = run_make_passwords([os.path.join(self.dir, "pw"), "somebody"])
        self.assertNotEqual(r.returncode, 0)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "pw")))

    def test_generated_passwords_printed_once_and_idempotent(self):
        pw = os.path.join(self.dir, "pw")
        r = run_make_passwords([pw])
        self.assertEqual(r.returncode, 0, r.stderr)
        printed = dict(line.split(":", 1) for line in r.stdout.splitlines() if line)
        self.assertEqual(set(printed), set(PASSWORDS))
        for user, password in printed.items():
            self.assertGreaterEqual(len(password), 20, user)
        self.assertEqual(os.stat(pw).st_mode & 0o077, 0, "password file readable by others")
        with open(pw) as f:
            first = f.read()
        for user in PASSWORDS:
            self.assertIn(user + ":", first)
            self.assertNotIn(printed[user], first, "password stored in clear")
        # Second run: nothing printed, nothing changed.
        r = run_make_passwords([pw])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "")
        with open(pw) as f:
            self.assertEqual(f.read(), first)
        # The printed passwords work against a broker using the file.
        acl = os.path.join(self.dir, "acl")
        shutil.copy(ACL, acl)
        mosq = self.start_mosquitto(auth={"password_file": pw, "acl_file": acl})
        for user, password in printed.items():
            c = h.MqttClient(mosq.port, username=user, password=password)
            c.close()

    def test_env_passwords_replace(self):
        pw = os.path.join(self.dir, "pw")
        env = {var: secret for var, secret in PASSWORDS.values()}
        r = run_make_passwords([pw], env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "", "passwords from the environment must not be printed")
        r = run_make_passwords([pw, "cloudpush-httpapi"],
                               {"CLOUDPUSH_HTTPAPI_MQTT_PASSWORD": "changed"})
        self.assertEqual(r.returncode, 0, r.stderr)
        acl = os.path.join(self.dir, "acl")
        shutil.copy(ACL, acl)
        mosq = self.start_mosquitto(auth={"password_file": pw, "acl_file": acl})
        h.MqttClient(mosq.port, username="cloudpush-httpapi", password="changed").close()
        h.MqttClient(mosq.port, username="cloudpush-bridge", password="bridge-secret-1").close()
        c = h.MqttClient(mosq.port, username="cloudpush-httpapi", password="httpapi-secret-2",
                         connect=False)
        try:
            self.assertNotEqual(c.connect(expect_success=False), 0)
        finally:
            c.close()


class AclTest(h.IntegrationTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        pw = os.path.join(cls.class_dir, "passwd")
        acl = os.path.join(cls.class_dir, "acl")
        shutil.copy(ACL, acl)
        r = run_make_passwords([pw], {var: secret for var, secret in PASSWORDS.values()})
        if r.returncode != 0:
            raise AssertionError("make-passwords.sh failed: %s" % r.stderr)
        cls.mosq = cls.class_mosquitto(auth={"password_file": pw, "acl_file": acl})

    def client(self, user, **kw):
        return self.mqtt_client(self.mosq.port, username=user, password=PASSWORDS[user][1], **kw)

    def connect_rc(self, username=None, password=None):
        c = h.MqttClient(self.mosq.port, username=username, password=password, connect=False)
        try:
            return c.connect(expect_success=False)
        finally:
            c.close()

    def assertNotDelivered(self, sub, topic, payload, wait=1.0):
        time.sleep(wait)
        got = [p for tp, p in sub.received(topic) if p == payload]
        self.assertEqual(got, [], "%r on %s was delivered although the ACL forbids it" % (
            payload, topic))

    def test_anonymous_refused(self):
        self.assertNotEqual(self.connect_rc(), 0)

    def test_wrong_password_refused(self):
        self.assertNotEqual(self.connect_rc("cloudpush-httpapi", "wrong"), 0)
        self.assertNotEqual(self.connect_rc("nobody", "bridge-secret-1"), 0)

    def test_httpapi_publishes_bridge_receives(self):
        """The HTTP API stores and numbers its pushes itself: it publishes on
        the delivery topics the bridges subscribe to."""
        bridge = self.client("cloudpush-bridge")
        self.assertNotEqual(bridge.subscribe("cloudpush/d/client/#"), REFUSED)
        self.assertNotEqual(bridge.subscribe("cloudpush/d/broadcast"), REFUSED)
        self.assertNotEqual(bridge.subscribe("cloudpush/d/batch"), REFUSED)
        api = self.client("cloudpush-httpapi")
        api.publish("cloudpush/d/client/x", b'{"msg":{"a":1}}')
        api.publish("cloudpush/d/broadcast", b'{"msg":{"b":2}}')
        api.publish("cloudpush/d/batch", b'cpb1\nx 15\n{"msg":{"c":3}}\n')
        bridge.wait_messages(1, "cloudpush/d/client/x")
        bridge.wait_messages(1, "cloudpush/d/broadcast")
        bridge.wait_messages(1, "cloudpush/d/batch")

    def test_sequencer_shares_service_messages(self):
        """A bridge's sequencer takes service messages through the shared
        subscription and republishes them on the delivery topics."""
        seq = self.client("cloudpush-bridge")
        self.assertNotEqual(seq.subscribe("$share/cloudpush-seq/cloudpush/client/+"), REFUSED)
        self.assertNotEqual(seq.subscribe("$share/cloudpush-seq/cloudpush/broadcast"), REFUSED)
        svc = self.client("cloudpush-service")
        svc.publish("cloudpush/client/s1", b'{"msg":{"s":1}}')
        svc.publish("cloudpush/broadcast", b'{"msg":{"s":2}}')
        seq.wait_messages(1, "cloudpush/client/s1")
        seq.wait_messages(1, "cloudpush/broadcast")
        bridge = self.client("cloudpush-bridge")
        bridge.subscribe("cloudpush/d/broadcast")
        bridge.subscribe("cloudpush/d/client/#")
        bridge.subscribe("cloudpush/d/batch")
        self.assertNotEqual(bridge.subscribe("cloudpush/d/resync"), REFUSED)
        seq.publish("cloudpush/d/broadcast", b'{"msg":{"s":2},"offset":1}')
        seq.publish("cloudpush/d/client/s1", b'{"msg":{"s":1},"offset":1}')
        # Many stored together go out as one batch (--bus-batch).
        seq.publish("cloudpush/d/batch", b'cpb1\ns1 26\n{"msg":{"s":3},"offset":2}\n')
        bridge.wait_messages(1, "cloudpush/d/broadcast")
        bridge.wait_messages(1, "cloudpush/d/client/s1")
        bridge.wait_messages(1, "cloudpush/d/batch")
        # A new leader announces its takeover; every bridge reads its streams.
        seq.publish("cloudpush/d/resync", b'{"leader":"cloudpush-seq-x"}')
        bridge.wait_messages(1, "cloudpush/d/resync")

    def test_bridges_keep_the_broker_identity_services_cannot_forge_it(self):
        """The sequencers name their lease after a retained id on
        sequencer/broker (docs/design-delivery.md): bridges read and write
        it; a service can neither change nor read it."""
        topic = "cloudpush/sequencer/broker"
        bridge = self.client("cloudpush-bridge")
        self.assertNotEqual(bridge.subscribe(topic), REFUSED)
        info = bridge.client.publish(topic, b"0123456789abcdef0123456789abcdef", qos=1,
                                     retain=True)
        bridge.wait_published(info)
        bridge.wait_messages(1, topic)
        svc = self.client("cloudpush-service")
        granted = svc.subscribe(topic)
        svc.publish(topic, b"forged")
        self.assertNotDelivered(bridge, topic, b"forged", 0.5)
        if granted != REFUSED:
            self.assertEqual(svc.received(topic), [], "a service read the identity")
        later = self.client("cloudpush-bridge")
        later.subscribe(topic)
        [(_, kept)] = later.wait_messages(1, topic)
        self.assertEqual(kept, b"0123456789abcdef0123456789abcdef")

    def test_httpapi_cannot_publish_documented_topics(self):
        """What arrives on client/ and broadcast is sequenced again: the API
        has no business there."""
        seq = self.client("cloudpush-bridge")
        seq.subscribe("cloudpush/client/#")
        self.client("cloudpush-httpapi").publish("cloudpush/client/h1", b'{"msg":{"h":1}}')
        self.assertNotDelivered(seq, "cloudpush/client/h1", b'{"msg":{"h":1}}', 0.5)

    def test_service_publishes_bridge_receives_and_bridge_pushes_to_client(self):
        bridge = self.client("cloudpush-bridge")
        bridge.subscribe("cloudpush/client/#")
        svc = self.client("cloudpush-service")
        svc.publish("cloudpush/client/y", b'{"msg":{"s":1}}')
        bridge.wait_messages(1, "cloudpush/client/y")
        # Services never publish on the delivery topics (only sequenced
        # envelopes belong there).
        bridge.subscribe("cloudpush/d/client/#")
        svc.publish("cloudpush/d/client/y", b'{"msg":{"forged":1}}')
        self.assertNotDelivered(bridge, "cloudpush/d/client/y", b'{"msg":{"forged":1}}', 0.5)
        # A bridge publishes WebSocket-to-WebSocket pushes to client topics.
        other = self.client("cloudpush-bridge")
        other.publish("cloudpush/client/z", b'{"msg":{"ws":1}}')
        bridge.wait_messages(1, "cloudpush/client/z")

    def test_bridge_events_reach_service(self):
        svc = self.client("cloudpush-service")
        for tp in ("cloudpush/upstream/#", "cloudpush/ack/#", "cloudpush/presence/#"):
            self.assertNotEqual(svc.subscribe(tp), REFUSED, tp)
        bridge = self.client("cloudpush-bridge")
        for tp in ("cloudpush/upstream/c1", "cloudpush/ack/c1", "cloudpush/presence/c1"):
            bridge.publish(tp, b"{}")
            svc.wait_messages(1, tp)

    def test_httpapi_cannot_subscribe_upstream(self):
        api = self.client("cloudpush-httpapi")
        granted = api.subscribe("cloudpush/upstream/#")
        bridge = self.client("cloudpush-bridge")
        bridge.publish("cloudpush/upstream/u1", b'{"secret":1}')
        if granted != REFUSED:
            self.assertNotDelivered(api, "cloudpush/upstream/u1", b'{"secret":1}')

    def test_httpapi_cannot_read_client_topics(self):
        api = self.client("cloudpush-httpapi")
        granted = api.subscribe("cloudpush/client/#")
        self.client("cloudpush-service").publish("cloudpush/client/r1", b'{"msg":{}}')
        if granted != REFUSED:
            self.assertNotDelivered(api, "cloudpush/client/r1", b'{"msg":{}}')

    def test_service_cannot_publish_presence(self):
        watcher = self.client("cloudpush-service")
        self.assertNotEqual(watcher.subscribe("cloudpush/presence/#"), REFUSED)
        svc = self.client("cloudpush-service")
        svc.publish("cloudpush/presence/x", b'{"event":"forged"}')
        # Control: a permitted publisher on the same topic is received.
        self.client("cloudpush-bridge").publish("cloudpush/presence/x", b'{"event":"real"}')
        watcher.wait_messages(1, "cloudpush/presence/x")
        self.assertNotDelivered(watcher, "cloudpush/presence/x", b'{"event":"forged"}', 0.5)

    def test_bridge_cannot_subscribe_upstream(self):
        bridge = self.client("cloudpush-bridge")
        granted = bridge.subscribe("cloudpush/upstream/#")
        self.client("cloudpush-bridge").publish("cloudpush/upstream/q", b'{"up":1}')
        if granted != REFUSED:
            self.assertNotDelivered(bridge, "cloudpush/upstream/q", b'{"up":1}')

    def test_bridge_cannot_publish_broadcast(self):
        bridge = self.client("cloudpush-bridge")
        bridge.subscribe("cloudpush/broadcast")
        self.client("cloudpush-bridge").publish("cloudpush/broadcast", b'{"msg":{"x":1}}')
        self.assertNotDelivered(bridge, "cloudpush/broadcast", b'{"msg":{"x":1}}')

    def test_wildcard_subscription_is_filtered(self):
        svc = self.client("cloudpush-service")
        granted = svc.subscribe("#")
        bridge = self.client("cloudpush-bridge")
        bridge.publish("cloudpush/client/w1", b'{"msg":{"private":1}}')
        if granted == REFUSED:
            return
        # mosquitto grants "#" but delivers only what the ACL lets it read.
        bridge.publish("cloudpush/presence/w1", b'{"event":"connect"}')
        svc.wait_messages(1, "cloudpush/presence/w1")
        self.assertNotDelivered(svc, "cloudpush/client/w1", b'{"msg":{"private":1}}', 0.3)
        self.assertEqual([tp for tp, _ in svc.received() if not tp.startswith("cloudpush/")], [])


if __name__ == "__main__":
    unittest.main()


class IdentityRefusedTest(h.IntegrationTest):
    """An ACL written before the broker's identity existed (no
    sequencer/broker line): the sequencers say so and key the lease by the
    broker URL, as before; one of them leads."""

    def test_lease_falls_back_to_the_url(self):
        pw = os.path.join(self.dir, "passwd")
        acl = os.path.join(self.dir, "acl")
        with open(ACL) as f:
            lines = [l for l in f if "sequencer/broker" not in l]
        with open(acl, "w") as f:
            f.writelines(lines)
        r = run_make_passwords([pw], {var: secret for var, secret in PASSWORDS.values()})
        self.assertEqual(r.returncode, 0, r.stderr)
        mosq = self.start_mosquitto(auth={"password_file": pw, "acl_file": acl})
        redis = self.start_redis()
        creds = ("cloudpush-bridge", PASSWORDS["cloudpush-bridge"][1])
        bridges = [self.start_bridge(mosq, bridge_id="itnoid-%s" % x, redis=redis,
                                     mqtt_credentials=creds, args=["--workers", "1"])
                   for x in "ab"]
        h.wait_until(lambda: [b.metric("cloudpush_sequencer_leader") for b in bridges].count(1)
                     == 1, h.t(15), 0.1, "one leader")
        def said(b):
            with open(b.log_path) as f:
                return "the lease is keyed by the broker URL" in f.read()
        for b in bridges:
            h.wait_until(lambda: said(b), h.t(10), 0.1, "%s: the fallback logged" % b.id)
        [key] = redis.cli("KEYS", "cloudpush:lease:sequencer:*")
        self.assertRegex(key, r"^cloudpush:lease:sequencer:[0-9a-f]{16}$")
