"""Presence events and graceful shutdown (SIGTERM / SIGINT)."""

import signal
import time
import unittest

import harness as h


class PresenceTest(h.IntegrationTest):

    def test_presence_connect_and_disconnect(self):
        mosq = self.start_mosquitto()
        # One process: its count is the bridge's (test_workers has N > 1).
        bridge = self.start_bridge(mosq, bridge_id="itpres", args=["--workers", "1"])
        cid = h.uniq("pres")
        sub = self.subscriber(mosq.port, h.topic("presence", cid))
        s1 = self.session(bridge.port, cid)
        _, ev = sub.wait_json(lambda o: o.get("sessionId") == s1.session_id)
        self.assertEqual(ev.get("event"), "connect", ev)
        self.assertEqual(ev.get("channelId"), cid, ev)
        self.assertEqual(ev.get("bridge"), "itpres", ev)
        self.assertEqual(ev.get("sessions"), 1, ev)
        self.assertIsInstance(ev.get("activeTime"), int, ev)
        self.assertNotIn("reason", ev)
        self.assertNotIn("worker", ev)

        s2 = self.session(bridge.port, cid)
        _, ev = sub.wait_json(lambda o: o.get("sessionId") == s2.session_id)
        self.assertEqual(ev.get("event"), "connect", ev)
        self.assertEqual(ev.get("sessions"), 2, ev)

        s1.close()  # sends a close frame
        _, ev = sub.wait_json(lambda o: o.get("sessionId") == s1.session_id
                              and o.get("event") == "disconnect")
        self.assertEqual(ev.get("sessions"), 1, ev)
        self.assertEqual(ev.get("channelId"), cid, ev)
        self.assertEqual(ev.get("bridge"), "itpres", ev)
        self.assertIsInstance(ev.get("reason"), str, ev)

        # An abrupt TCP close (no close frame) also ends the session.
        s2.ws.sock.close()
        _, ev = sub.wait_json(lambda o: o.get("sessionId") == s2.session_id
                              and o.get("event") == "disconnect", timeout=10)
        self.assertEqual(ev.get("sessions"), 0, ev)
        h.wait_until(lambda: bridge.healthz()[1].get("connections") == 0, h.t(5),
                     what="connections == 0")


class ShutdownTest(h.IntegrationTest):

    def run_shutdown(self, sig):
        """SIGTERM drains (RECONNECT, then 1012 spread over --drain-seconds:
        test_acks_drain has the details); SIGINT closes at once with 1001.
        Raw clients: websocket-client refuses close code 1012."""
        mosq = self.start_mosquitto()
        bridge = self.start_bridge(mosq, bridge_id="itstop", args=["--drain-seconds", "2"])
        sub = self.subscriber(mosq.port, h.topic("presence", "#"))
        chans = [h.uniq("stop"), h.uniq("stop")]
        sessions = []
        for c in chans:
            ws = self.raw_ws(bridge.port, c)
            ws.channel_id = c
            ws.session_id = ws.recv_json()["sessionId"]
            sessions.append(ws)
        for s in sessions:
            sub.wait_json(lambda o, s=s: o.get("sessionId") == s.session_id
                          and o.get("event") == "connect")
        start = time.monotonic()
        bridge.proc.send_signal(sig)
        want = 1012 if sig == signal.SIGTERM else 1001
        for s in sessions:
            if sig == signal.SIGTERM:
                self.assertEqual(s.recv_json(5)["msgType"], 5)  # RECONNECT
            ev = s.recv_message(8)
            self.assertEqual(ev[:2], ("close", want), (s.channel_id, ev))
            s.send_close(want)
        for s in sessions:
            _, ev = sub.wait_json(lambda o, s=s: o.get("sessionId") == s.session_id
                                  and o.get("event") == "disconnect")
            self.assertEqual(ev.get("channelId"), s.channel_id, ev)
            self.assertEqual(ev.get("sessions"), 0, ev)
        try:
            rc = bridge.proc.wait(timeout=h.t(8))
        except Exception:  # noqa: BLE001
            self.fail("bridge still running %.1fs after signal %d" % (
                time.monotonic() - start, sig))
        self.assertEqual(rc, 0, "bridge exit code after signal %d" % sig)
        self.assertLess(time.monotonic() - start, h.t(8))

    def test_sigterm(self):
        self.run_shutdown(signal.SIGTERM)

    def test_sigint(self):
        self.run_shutdown(signal.SIGINT)

    def test_sigterm_idle_bridge_exits_fast(self):
        mosq = self.start_mosquitto()
        bridge = self.start_bridge(mosq, bridge_id="itstop2")
        start = time.monotonic()
        rc = bridge.stop(timeout=h.t(8))
        self.assertEqual(rc, 0)
        self.assertLess(time.monotonic() - start, h.t(3))

    def test_sigterm_with_unresponsive_client(self):
        """A client that never answers the close frame does not block exit
        beyond the drain and --shutdown-grace."""
        mosq = self.start_mosquitto()
        bridge = self.start_bridge(mosq, bridge_id="itstop3",
                                   args=["--shutdown-grace", "2", "--drain-seconds", "1"])
        self.raw_ws(bridge.port, h.uniq("deaf"))
        start = time.monotonic()
        rc = bridge.stop(timeout=h.t(10))
        self.assertEqual(rc, 0)
        self.assertLess(time.monotonic() - start, h.t(5))


if __name__ == "__main__":
    unittest.main()
