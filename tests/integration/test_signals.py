"""Signals and probes (issue 15 item 9): SIGHUP never stops a cloudpush
process; it re-reads what comes from files (log level, API keys, the JWT
secret, the TLS certificate) and logs it. /livez answers from the event
loop whatever the broker does; /readyz says whether the process can serve
now."""

import os
import signal
import socket
import ssl
import subprocess
import time
import unittest

import harness as h
from test_security import token

SECRET_A = "first-secret-for-reload-tests-0123456789"
SECRET_B = "second-secret-for-reload-tests-987654321"


def write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)  # as an operator (or a secret manager) would


def log_count(service, text):
    with open(service.log_path, "rb") as f:
        return f.read().count(text.encode())


def log_has(service, text):
    return log_count(service, text) > 0


def hangup(service, expect, processes=1):
    """SIGHUP, then wait for the log line that says what was reloaded, from
    each of the service's processes (a bridge's workers each log it)."""
    before = log_count(service, expect)
    service.proc.send_signal(signal.SIGHUP)
    h.wait_until(lambda: log_count(service, expect) >= before + processes, h.t(5),
                 what="log: %s (x%d)" % (expect, processes))
    time.sleep(0.1)
    assert service.running(), "%s exited on SIGHUP" % service.id


def served_cert(port):
    """DER of the certificate a new TLS connection gets."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=h.t(5)) as raw:
        with ctx.wrap_socket(raw) as tls:
            return tls.getpeercert(binary_form=True)


def make_cert(directory, name):
    cert, key = os.path.join(directory, name + ".crt"), os.path.join(directory, name + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert, "-days",
                    "1", "-subj", "/CN=" + name], check=True, capture_output=True)
    with open(cert, "rb") as f:
        pem = f.read().decode()
    return cert, key, ssl.PEM_cert_to_DER_cert(pem)


class HangupTest(h.IntegrationTest):

    def test_bridge_reloads_level_and_secret(self):
        mosq = self.start_mosquitto()
        level = os.path.join(self.dir, "level")
        secret = os.path.join(self.dir, "secret")
        write(level, "info\n")
        write(secret, SECRET_A + "\n")
        bridge = self.start_bridge(mosq, bridge_id="ithup", args=[
            "--log-level-file", level, "--jwt-secret-file", secret, "--drain-seconds", "1",
            "--workers", "2"])
        cid = h.uniq("hup")
        kept = self.raw_ws(bridge.port, None, path="/ws",
                           raw_query="channelId=%s&token=%s" % (cid, token(sub=cid,
                                                                            secret=SECRET_A)))
        self.assertEqual(kept.recv_json()["msgType"], h.MSG_CONNECTION)

        write(level, "debug\n")
        write(secret, SECRET_B + "\n")
        hangup(bridge, "reload: client token keys re-read", processes=2)
        self.assertTrue(log_has(bridge, "reload: log level debug (was info)"))

        # New tokens are checked with the new secret...
        with self.assertRaises(h.HandshakeRejected) as cm:
            h.RawWs(bridge.port, path="/ws", raw_query="channelId=%s&token=%s" % (
                cid, token(sub=cid, secret=SECRET_A)))
        self.assertEqual(cm.exception.status, 401, cm.exception.body)
        fresh = self.raw_ws(bridge.port, None, path="/ws",
                            raw_query="channelId=%s-b&token=%s" % (
                                cid, token(sub=cid + "-b", secret=SECRET_B)))
        self.assertEqual(fresh.recv_json()["msgType"], h.MSG_CONNECTION)
        # ...and the session opened before the reload is still served.
        h.mqtt_publish(mosq.port, h.topic("client", cid), '{"msg":{"after":"hup"}}')
        self.assertEqual(kept.recv_json()["msg"], {"after": "hup"})

        # An unusable secret file is refused and the working secret stays.
        write(secret, "short\n")
        hangup(bridge, "the previous ones stay in use", processes=2)
        again = self.raw_ws(bridge.port, None, path="/ws",
                            raw_query="channelId=%s-c&token=%s" % (
                                cid, token(sub=cid + "-c", secret=SECRET_B)))
        self.assertEqual(again.recv_json()["msgType"], h.MSG_CONNECTION)
        bridge.stop()  # and SIGTERM still stops it cleanly (exit 0)

    def test_bridge_reloads_tls_certificate(self):
        mosq = self.start_mosquitto()
        cert, key = os.path.join(self.dir, "tls.crt"), os.path.join(self.dir, "tls.key")
        first_cert, first_key, first_der = make_cert(self.dir, "first")
        second_cert, second_key, second_der = make_cert(self.dir, "second")
        os.symlink(first_cert, cert)
        os.symlink(first_key, key)
        # Two workers: each reloads (a new connection may reach either).
        bridge = self.start_bridge(mosq, bridge_id="ithuptls", wait=False,
                                   args=["--tls-cert", cert, "--tls-key", key,
                                         "--workers", "2"])
        # Both workers, not just the first: a worker ignores SIGHUP until its
        # loop watches it.
        h.wait_until(lambda: log_count(bridge, "listening on") >= 2, h.t(10),
                     what="both workers listening")
        self.assertEqual(served_cert(bridge.port), first_der)
        os.unlink(cert)
        os.unlink(key)
        os.symlink(second_cert, cert)
        os.symlink(second_key, key)
        hangup(bridge, "reload: TLS certificate", processes=2)
        for _ in range(6):
            self.assertEqual(served_cert(bridge.port), second_der)
        # A certificate whose key does not match is refused; the one in use
        # stays and handshakes keep working.
        os.unlink(key)
        os.symlink(first_key, key)
        hangup(bridge, "are not a usable certificate and key", processes=2)
        for _ in range(6):
            self.assertEqual(served_cert(bridge.port), second_der)

    def test_balancer_survives_hangup(self):
        redis = self.start_redis()
        level = os.path.join(self.dir, "level")
        write(level, "warn")
        bal = self.start_balancer(redis, args=["--log-level-file", level])
        write(level, "info")
        hangup(bal, "reload: log level info (was warn)")
        st, body = bal.get_json("/livez")
        self.assertEqual((st, body), (200, {"status": "alive"}))
        bal.stop()

    def test_httpapi_reloads_api_keys(self):
        mosq = self.start_mosquitto()
        keys = os.path.join(self.dir, "keys")
        write(keys, "# rotated by the operator\nkey-one\n")
        api = self.start_httpapi(mosq, args=["--api-key-file", keys])
        push = {"to": ["hup-x"], "msg": {"n": 1}}

        def status(key):
            return api.push(push, headers={"Authorization": "Bearer " + key})[0]
        self.assertEqual(status("key-one"), 200)
        self.assertEqual(status("key-two"), 401)
        write(keys, "key-two\n\nkey-three\n")
        hangup(api, "reload: 2 API keys from")
        self.assertEqual(status("key-one"), 401)
        self.assertEqual(status("key-two"), 200)
        self.assertEqual(status("key-three"), 200)
        # An empty file must not turn authentication off.
        write(keys, "\n# nothing\n")
        hangup(api, "no key in the file; the keys in use stay")
        self.assertEqual(status("key-two"), 200)
        self.assertEqual(status("anything"), 401)
        api.stop()


class ProbeTest(h.IntegrationTest):

    def test_bridge_livez_and_readyz_follow_the_broker(self):
        mosq = self.start_mosquitto()
        bridge = self.start_bridge(mosq, bridge_id="itprobe")
        st, _, body = h.http_request(bridge.port, "GET", "/readyz")
        self.assertEqual(st, 200, body)
        mosq.stop()
        # Not ready without the bus, but alive: a liveness probe must not
        # restart every bridge during a broker outage.
        h.wait_until(lambda: h.http_request(bridge.port, "GET", "/readyz")[0] == 503, h.t(10),
                     what="readyz 503 without the broker")
        st, _, body = h.http_request(bridge.port, "GET", "/livez")
        self.assertEqual(st, 200, body)
        mosq.start()
        h.wait_until(lambda: h.http_request(bridge.port, "GET", "/readyz")[0] == 200, h.t(15),
                     what="readyz 200 with the broker back")

    def test_balancer_livez_without_bridges(self):
        redis = self.start_redis()
        bal = self.start_balancer(redis)
        self.assertEqual(bal.get_json("/livez"), (200, {"status": "alive"}))
        self.assertEqual(bal.get_json("/readyz")[0], 503)  # no bridge to route to


if __name__ == "__main__":
    unittest.main()
