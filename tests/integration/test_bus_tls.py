"""TLS between the programs and the MQTT broker (issue 15 item 12), with a
throw-away CA made by openssl: a bridge and the HTTP API connected over TLS
deliver a push; a broker certificate from another CA, or one that does not
name the host of the URL, is refused with a clear log line and the program
stays unready; client certificates for a broker that requires them; the
TLS flags are checked at start."""

import json
import os
import re
import subprocess
import time
import unittest

import harness as h

# How long a refused program is watched: several reconnect attempts.
REFUSED_FOR = 3.0


def read(path):
    with open(path, errors="replace") as f:
        return f.read()


class BusTlsTest(h.IntegrationTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ca = h.TestCA(cls.class_dir, "ca")
        cls.other_ca = h.TestCA(cls.class_dir, "other-ca")
        cert, key = cls.ca.issue("broker")
        cls.mosq = cls.class_tls_mosquitto(cls.ca.cert, cert, key, name="mosq-tls")
        cls.client_cert, cls.client_key = cls.ca.issue("cloudpush-client", names=(),
                                                       client=True)
        cls.mosq_mtls = cls.class_tls_mosquitto(cls.ca.cert, cert, key, name="mosq-mtls",
                                                require_certificate=True)

    @classmethod
    def class_tls_mosquitto(cls, *args, **kw):
        m = h.TlsMosquitto(cls.class_dir, *args, **kw)
        cls.addClassCleanup(m.stop)
        cls._class_logs.append(m.log_path)
        return m.start()

    def tls_args(self, ca=None, cert=None, key=None):
        args = ["--mqtt-ca", ca or self.ca.cert]
        if cert:
            args += ["--mqtt-cert", cert]
        if key:
            args += ["--mqtt-key", key]
        return args

    def assertRefused(self, service, log_text, what):
        """service never becomes ready, keeps running, and logs log_text."""
        deadline = time.monotonic() + h.t(REFUSED_FOR)
        while time.monotonic() < deadline:
            self.assertTrue(service.running(), "%s exited; log:\n%s" % (
                what, h.tail(service.log_path, 30)))
            try:
                st, body = service.health(timeout=1.0)
            except OSError:
                st, body = None, None  # not listening yet
            if st is not None:
                self.assertEqual(st, 503, "%s became ready: %r" % (what, body))
                self.assertIs(body.get("mqtt"), False, body)
            time.sleep(0.1)
        h.wait_until(lambda: log_text in read(service.log_path),
                     h.t(5), what="%r in the log of %s" % (log_text, what))

    def test_push_over_tls_reaches_the_websocket_client(self):
        bridge = self.start_bridge(self.mosq.tls_url("127.0.0.1", "ssl"), bridge_id="tlsbridge",
                                   args=self.tls_args())
        # The HTTP API by host name and the mqtts:// spelling: the name is
        # checked against the certificate's DNS entry, the address above
        # against its IP entry.
        api = self.start_httpapi(self.mosq.tls_url("localhost", "mqtts"),
                                 args=self.tls_args())
        cid = h.uniq("tls")
        s = self.session(bridge.port, cid)
        st, body, _ = api.push({"to": [cid], "msg": {"over": "tls"}})
        self.assertEqual(st, 200, body)
        m = s.recv()
        self.assertDelivery(m, cid, s.session_id, {"over": "tls"}, h.TRIGGER_HTTP,
                            message_id=body["data"]["messages"][0]["messageId"])
        # Both came in through the TLS listener: mosquitto logs the
        # listener's port with each new connection.
        log = read(self.mosq.log_path)
        for client in ("cloudpush-bridge-tlsbridge", "cloudpush-httpapi-"):
            ports = re.findall(r"New client connected from 127\.0\.0\.1:(\d+) as %s"
                               % re.escape(client), log)
            self.assertTrue(ports, client)
            for port in ports:
                self.assertIn("New connection from 127.0.0.1:%s on port %d"
                              % (port, self.mosq.tls_port), log)

    def test_certificate_from_another_ca_is_refused(self):
        api = self.start_httpapi(self.mosq.tls_url(), wait=False,
                                 args=self.tls_args(ca=self.other_ca.cert))
        bridge = self.start_bridge(self.mosq.tls_url(), bridge_id="wrongca", wait=False,
                                   args=self.tls_args(ca=self.other_ca.cert))
        self.assertRefused(api, "certificate verify failed", "httpapi")
        self.assertRefused(bridge, "certificate verify failed", "bridge")
        # The WebSocket door stays shut while the bus is down.
        st, _, _ = h.http_request(bridge.port, "GET", "/healthz")
        self.assertEqual(st, 503)

    def test_system_trust_store_does_not_trust_a_private_ca(self):
        # Without --mqtt-ca the system's CAs decide, and they do not know
        # the test CA.
        api = self.start_httpapi(self.mosq.tls_url(), wait=False)
        self.assertRefused(api, "certificate verify failed", "httpapi")

    def test_certificate_for_another_host_is_refused(self):
        cert, key = self.ca.issue("elsewhere", names=("DNS:broker.example",))
        mosq = h.TlsMosquitto(self.dir, self.ca.cert, cert, key, name="mosq-elsewhere")
        self.addCleanup(mosq.stop)
        self._logs.append(mosq.log_path)
        mosq.start()
        api = self.start_httpapi(mosq.tls_url("127.0.0.1"), wait=False, args=self.tls_args())
        self.assertRefused(api, "does not name the host", "httpapi by address")
        api2 = self.start_httpapi(mosq.tls_url("localhost"), name="httpapi-byname", wait=False,
                                  args=self.tls_args())
        self.assertRefused(api2, "does not name the host", "httpapi by name")
        # The handshake itself succeeded (same CA): the refusal is the host
        # name check, after which the client hangs up before CONNECT.
        self.assertNotIn("cloudpush-httpapi", read(mosq.log_path))

    def test_client_certificate_when_the_broker_requires_one(self):
        without = self.start_httpapi(self.mosq_mtls.tls_url(), name="httpapi-nocert", wait=False,
                                     args=self.tls_args())
        self.assertRefused(without, "TLS connection to %s refused: tlsv13 alert certificate "
                           "required" % self.mosq_mtls.tls_url(),
                           "httpapi without a client certificate")
        api = self.start_httpapi(self.mosq_mtls.tls_url(), name="httpapi-cert",
                                 args=self.tls_args(cert=self.client_cert, key=self.client_key))
        bridge = self.start_bridge(self.mosq_mtls.tls_url(), bridge_id="mtlsbridge",
                                   args=self.tls_args(cert=self.client_cert,
                                                      key=self.client_key))
        cid = h.uniq("mtls")
        s = self.session(bridge.port, cid)
        st, body, _ = api.push({"to": [cid], "msg": {"tls": "mutual"}})
        self.assertEqual(st, 200, body)
        self.assertEqual(s.recv()["msg"], {"tls": "mutual"})

    def run_checked(self, binary, *args):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDPUSH_")}
        return subprocess.run([binary] + list(args), capture_output=True, text=True, timeout=20,
                              env=env, stdin=subprocess.DEVNULL)

    def test_tls_flags_are_checked_at_start(self):
        missing = os.path.join(self.dir, "missing.pem")
        cases = [
            (["--mqtt", "tcp://127.0.0.1:1", "--mqtt-ca", self.ca.cert],
             "need a TLS broker URL"),
            (["--mqtt", "ssl://127.0.0.1:1", "--mqtt-ca", missing], "cannot be read"),
            (["--mqtt", "ssl://127.0.0.1:1", "--mqtt-key", self.client_key], "needs --mqtt-cert"),
            (["--mqtt", "http://127.0.0.1:1"], "must start with"),
        ]
        for binary in (h.BRIDGE_BIN, h.HTTPAPI_BIN):
            for args, message in cases:
                with self.subTest(binary=os.path.basename(binary), args=args):
                    r = self.run_checked(binary, "--listen", "127.0.0.1:%d" % h.free_port(),
                                         "--redis=", *args)
                    self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                    self.assertIn(message, r.stdout + r.stderr)
        # The same settings from the environment.
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDPUSH_")}
        env.update(CLOUDPUSH_MQTT="tcp://127.0.0.1:1", CLOUDPUSH_MQTT_CA=self.ca.cert)
        r = subprocess.run([h.HTTPAPI_BIN, "--listen", "127.0.0.1:%d" % h.free_port()],
                           capture_output=True, text=True, timeout=20, env=env,
                           stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("need a TLS broker URL", r.stdout + r.stderr)



class RedisAclUserTest(h.IntegrationTest):
    """The Redis ACL user form redis://USER:PASSWORD@host and the restricted
    ACL that docs/security.md recommends: every program works with it."""

    def documented_acl(self):
        with open(os.path.join(h.REPO, "docs", "security.md")) as f:
            [line] = [l for l in f if l.startswith("ACL SETUSER cloudpush ")]
        return line.split()

    def test_documented_acl_user_is_enough_for_every_program(self):
        redis = self.start_redis()
        acl = [("on" if w == "on" else ">acl-secret-1" if w == ">PASSWORD" else w)
               for w in self.documented_acl()]
        self.assertEqual(redis.cli(*acl), ["OK"])
        self.assertEqual(redis.cli("ACL", "SETUSER", "default", "off"), ["OK"])

        class AclRedis:
            url = "redis://cloudpush:acl-secret-1@127.0.0.1:%d/0" % redis.port

        mosq = self.start_mosquitto()
        bridge = self.start_bridge(mosq, bridge_id="aclbridge", redis=AclRedis)
        api = self.start_httpapi(mosq, redis=AclRedis)
        balancer = self.start_balancer(AclRedis)
        cid = h.uniq("acl")
        s = self.session(bridge.port, cid)
        h.wait_until(lambda: balancer.live_ids() == ["aclbridge"], h.t(10),
                     what="the balancer to see the bridge")
        gone = h.uniq("acl-gone")

        def pushed():
            st, body, _ = api.push({"to": [cid, gone], "msg": {"acl": 1}})
            return body["data"] if st == 200 and body["data"].get("offline") == [gone] else None
        data = h.wait_until(pushed, h.t(10), what="a push with the offline list from Redis")
        # The stream history's script runs under the ACL user too.
        self.assertEqual([m["stored"] for m in data["messages"]], [True, True], data)
        m = s.recv()
        self.assertEqual(m["msg"], {"acl": 1})
        self.assertIsInstance(m["offset"], int, m)
        # ... also in the bridge's sequencer (a service publishing on the bus).
        h.mqtt_publish(mosq.port, h.topic("client", cid), '{"msg":{"acl":2}}')
        for _ in range(20):  # after the pushes the wait above may have repeated
            m = s.recv()
            if m["msg"] == {"acl": 2}:
                break
        self.assertEqual(m["msg"], {"acl": 2})
        self.assertIsInstance(m["offset"], int, m)
        st, _, raw = h.http_request(api.port, "GET", "/api/v1/clients/" + cid)
        self.assertEqual(st, 200, raw)
        self.assertIs(json.loads(raw)["online"], True)
        self.assertIs(bridge.health()[1]["redis"], True)
        s.close()
        for service in (balancer, api, bridge):
            service.stop()
        for service in (balancer, api, bridge):
            self.assertNotIn("NOPERM", read(service.log_path), service.id)


if __name__ == "__main__":
    unittest.main()
