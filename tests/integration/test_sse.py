"""Server-Sent Events (GET /sse): a raw HTTP client reads the stream from a
real bridge (mosquitto, redis-server and the HTTP API around it): the
CONNECTION first, pushes over MQTT and the HTTP API as data: lines, the
refusals as JSON, presence, heartbeats, the drain ending the stream, a slow
reader closed while its neighbours keep receiving; and the browser's own
EventSource in Debian's headless chromium (tests/browser/sse.test.mjs)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import unittest
import urllib.parse

import harness as h
from test_security import token, SECRET

BROWSER_DIR = os.path.join(h.REPO, "tests", "browser")


class SseStream:
    """A raw HTTP/1.1 client of GET /sse: the response head, then events
    parsed as the EventSource spec says (fields up to a blank line)."""

    def __init__(self, port, query, headers=None, rcvbuf=None, timeout=5.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(h.t(timeout))
        self.sock.connect(("127.0.0.1", port))
        lines = ["GET /sse%s HTTP/1.1" % (("?" + query) if query else ""),
                 "Host: 127.0.0.1:%d" % port, "Accept: text/event-stream"]
        lines += ["%s: %s" % kv for kv in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buf = b""
        self.comments = []
        head = self._read_until(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {}
        for line in header_lines:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self.body = None
        if self.status != 200:
            n = int(self.headers.get("content-length", "0"))
            while len(self.buf) < n:
                self._fill()
            self.body = json.loads(self.buf[:n])

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("the stream ended")
        self.buf += data

    def _read_until(self, sep):
        while sep not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(sep)
        return head

    def event(self, timeout=5.0):
        """The next event: a dict of its fields (data joined), comments kept
        in self.comments. Raises EOFError when the stream ends."""
        self.sock.settimeout(h.t(timeout))
        ev = {}
        while True:
            line = self._read_until(b"\n").decode()
            if line == "":
                if ev:
                    return ev
                continue
            if line.startswith(":"):
                self.comments.append(line)
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data" and "data" in ev:
                ev["data"] += "\n" + value
            else:
                ev[field] = value

    def read_for(self, seconds):
        """Reads whatever arrives for this long (comments kept in
        self.comments); returns the events."""
        events = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                self._fill()
            except socket.timeout:
                break
            while b"\n\n" in self.buf:
                block, _, self.buf = self.buf.partition(b"\n\n")
                ev = {}
                for line in block.decode().split("\n"):
                    if line.startswith(":"):
                        self.comments.append(line)
                    elif line:
                        field, _, value = line.partition(":")
                        ev[field] = value[1:] if value.startswith(" ") else value
                if ev:
                    events.append(ev)
        return events

    def envelope(self, timeout=5.0):
        """The next event with data: (parsed), skipping retry-only events."""
        while True:
            ev = self.event(timeout)
            if "data" in ev:
                ev["json"] = json.loads(ev["data"])
                return ev

    def expect_end(self, timeout=10.0):
        """Reads until the server ends the stream; returns the envelopes read."""
        got = []
        deadline = time.monotonic() + h.t(timeout)
        while time.monotonic() < deadline:
            try:
                got.append(self.envelope(timeout=max(0.1, deadline - time.monotonic())))
            except EOFError:
                return got
            except (socket.timeout, ConnectionResetError):
                break
        raise AssertionError("the stream did not end within %.0fs (read %r)" % (timeout, got))

    def close(self):
        self.sock.close()


class SseTest(h.IntegrationTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mosq = cls.class_mosquitto()
        cls.bridge = cls.class_bridge(cls.mosq, bridge_id="ssebridge",
                                      args=["--allowed-origins", "http://app.example"])

    def open(self, channel_id, query="", **kw):
        q = "channelId=" + channel_id + (("&" + query) if query else "")
        s = SseStream(self.bridge.port, q, **kw)
        self.addCleanup(s.close)
        return s

    def connected(self, channel_id, **kw):
        s = self.open(channel_id, **kw)
        self.assertEqual(s.status, 200, s.body)
        first = s.envelope()
        self.assertEqual(first["json"]["msgType"], h.MSG_CONNECTION, first)
        return s, first["json"]

    def test_connection_first_then_pushes(self):
        cid = h.uniq("sse")
        s = self.open(cid)
        self.assertEqual(s.status, 200)
        self.assertEqual(s.headers["content-type"], "text/event-stream")
        self.assertEqual(s.headers["cache-control"], "no-store")
        self.assertNotIn("content-length", s.headers)
        retry = s.event()
        self.assertIn("retry", retry, "the stream starts with a retry: hint")
        self.assertTrue(1000 <= int(retry["retry"]) <= 3000, retry)
        first = s.envelope()
        conn = first["json"]
        self.assertEqual(conn["msgType"], h.MSG_CONNECTION)
        self.assertEqual(conn["resultMsg"], "connected, channelId=" + cid)
        self.assertIn("_" + cid + "_", conn["sessionId"])
        self.assertNotIn("\n", first["data"])
        h.mqtt_publish(self.mosq.port, "cloudpush/client/" + cid,
                       json.dumps({"messageId": "m1", "msg": {"n": 1, "text": "two\nlines"}}))
        ev = s.envelope()
        self.assertEqual(ev["json"]["msgType"], h.MSG_BUSINESS)
        self.assertEqual(ev["json"]["messageId"], "m1")
        self.assertEqual(ev["json"]["msg"], {"n": 1, "text": "two\nlines"})
        self.assertEqual(ev["json"]["sessionId"], conn["sessionId"])
        self.assertEqual(ev["json"]["to"], [cid])
        self.assertNotIn("id", ev, "no offset on this build, so no id:")

    def test_offset_becomes_the_event_id(self):
        # id: is the message's position in the channel's stream (the
        # envelope's top-level offset, never one inside msg); a broadcast
        # counts another stream and gets no id:.
        redis = self.start_redis()
        bridge = self.start_bridge(self.mosq, bridge_id="sseid", redis=redis)
        api = self.start_httpapi(self.mosq, redis=redis)
        cid = h.uniq("sseid")
        s = SseStream(bridge.port, "channelId=" + cid)
        self.addCleanup(s.close)
        self.assertEqual(s.envelope()["json"]["msgType"], h.MSG_CONNECTION)
        st, body, _ = api.push({"to": [cid], "msg": {"offset": 99, "deep": {"offset": 98}}})
        self.assertEqual(st, 200, body)
        offset = body["data"]["messages"][0]["offset"]
        self.assertIsInstance(offset, int, body)
        ev = s.envelope()
        self.assertEqual(ev["json"]["offset"], offset)
        # <epoch>-<offset>: Last-Event-ID brings the epoch back.
        self.assertEqual(ev.get("id"), "%s-%d" % (ev["json"]["epoch"], offset))
        st, body, _ = api.push({"sendToAll": True, "msg": {"all": 1}})
        self.assertEqual(st, 200, body)
        ev = s.envelope()
        self.assertIs(ev["json"].get("broadcast"), True, ev["json"])
        self.assertNotIn("id", ev)

    def test_http_api_push_and_presence(self):
        redis = self.start_redis()
        bridge = self.start_bridge(self.mosq, bridge_id="ssepresence", redis=redis,
                                   args=["--registry-interval-ms", "200"])
        api = self.start_httpapi(self.mosq, redis=redis)
        cid = h.uniq("ssep")
        s = SseStream(bridge.port, "channelId=" + cid)
        self.addCleanup(s.close)
        self.assertEqual(s.envelope()["json"]["msgType"], h.MSG_CONNECTION)

        def online():
            st, _, body = h.http_request(api.port, "GET", "/api/v1/clients/" + cid)
            info = json.loads(body)
            return info if st == 200 and info.get("online") else None
        info = h.wait_until(online, h.t(10), what="the HTTP API sees the SSE client online")
        self.assertTrue(info["online"], info)
        st, body, _ = api.push({"to": [cid], "msg": {"via": "http"}})
        self.assertEqual(st, 200, body)
        ev = s.envelope()
        self.assertEqual(ev["json"]["msg"], {"via": "http"})
        self.assertEqual(ev["json"]["trigger"], h.TRIGGER_HTTP)
        self.assertEqual(bridge.metric("cloudpush_bridge_sse_connections"), 1)
        s.close()
        h.wait_until(lambda: bridge.metric("cloudpush_bridge_sse_connections") == 0, h.t(10),
                     what="the session ends with the connection")
        self.assertEqual(bridge.metric("cloudpush_bridge_closes_total", {"reason": "client"}), 1)
        h.wait_until(lambda: online() is None, h.t(10), what="offline after the stream closed")

    def test_refusals_are_json(self):
        cases = [("", 400, "missing_channel_id", None),
                 ("channelId=a%2Fb", 400, "invalid_channel_id", None),
                 ("channelId=ok&since=-1", 400, "invalid_since", None),
                 ("channelId=ok&since=12x", 400, "invalid_since", None),
                 ("channelId=ok&epoch=" + "e" * 65, 400, "invalid_epoch", None),
                 ("channelId=ok", 400, "invalid_last_event_id", {"Last-Event-ID": "abc"}),
                 ("channelId=ok", 403, "forbidden_origin", {"Origin": "http://evil.example"})]
        for query, status, code, headers in cases:
            with self.subTest(query=query, code=code):
                s = SseStream(self.bridge.port, query, headers=headers)
                s.close()
                self.assertEqual(s.status, status, s.body)
                self.assertEqual(s.headers["content-type"], "application/json")
                self.assertEqual(s.body["code"], code, s.body)
                self.assertFalse(s.body["success"])
        st, hd, body = h.http_request(self.bridge.port, "POST", "/sse?channelId=x", body="{}")
        self.assertEqual(st, 405)
        self.assertEqual(json.loads(body)["code"], "method_not_allowed")
        # A valid resume point is accepted (recovery itself arrives with the
        # stream history), and an allowed Origin gets CORS.
        s, _ = self.connected(h.uniq("sser"), query="since=5&epoch=abc-1",
                              headers={"Last-Event-ID": "9", "Origin": "http://app.example"})
        self.assertEqual(s.headers["access-control-allow-origin"], "http://app.example")

    def test_last_event_id_recovers_what_the_stream_missed(self):
        redis = self.start_redis()
        bridge = self.start_bridge(self.mosq, bridge_id="sserec", redis=redis)
        api = self.start_httpapi(self.mosq, redis=redis)
        cid = h.uniq("sserec")
        s = SseStream(bridge.port, "channelId=" + cid)
        self.addCleanup(s.close)
        self.assertEqual(s.envelope()["json"]["msgType"], h.MSG_CONNECTION)
        for i in range(3):
            st, body, _ = api.push({"to": [cid], "msg": {"i": i}})
            self.assertEqual(st, 200, body)
        seen = [s.envelope() for _ in range(3)]
        epoch = seen[-1]["json"]["epoch"]
        self.assertEqual([e.get("id") for e in seen], ["%s-%d" % (epoch, i) for i in (1, 2, 3)])
        s.close()
        for i in range(3, 5):  # while the stream is away
            st, body, _ = api.push({"to": [cid], "msg": {"i": i}})
            self.assertEqual(st, 200, body)
        # What EventSource sends when it reconnects: the last id it saw
        # (the URL it was first opened with has no epoch).
        r = SseStream(bridge.port, "channelId=%s" % cid,
                      headers={"Last-Event-ID": seen[-1]["id"]})
        self.addCleanup(r.close)
        self.assertEqual(r.status, 200, r.body)
        conn = r.envelope()["json"]
        self.assertEqual(conn["msgType"], h.MSG_CONNECTION)
        self.assertIs(conn.get("recovered"), True, conn)
        missed = [r.envelope() for _ in range(2)]
        self.assertEqual([(e.get("id"), e["json"]["msg"]["i"]) for e in missed],
                         [("%s-4" % epoch, 3), ("%s-5" % epoch, 4)])
        # A position of another epoch cannot be trusted: recovered:false.
        w = SseStream(bridge.port, "channelId=%s&epoch=other" % cid,
                      headers={"Last-Event-ID": "3"})
        self.addCleanup(w.close)
        self.assertIs(w.envelope()["json"].get("recovered"), False)
        # Redis loses the stream, which fills again past the old position:
        # EventSource's Last-Event-ID alone (the URL has no epoch) is told
        # recovered:false instead of getting the new history's 4 and 5.
        redis.cli("FLUSHALL")
        for i in range(6):
            st, body, _ = api.push({"to": [cid], "msg": {"i": 10 + i}})
            self.assertEqual(st, 200, body)
        x = SseStream(bridge.port, "channelId=%s" % cid,
                      headers={"Last-Event-ID": seen[-1]["id"]})
        self.addCleanup(x.close)
        conn = x.envelope()["json"]
        self.assertIs(conn.get("recovered"), False, conn)
        self.assertNotEqual(conn["epoch"], epoch)
        self.assertEqual(conn["offset"], 6)
        # A bare offset is still accepted: above the stream's last one, it
        # cannot be a position in it.
        y = SseStream(bridge.port, "channelId=%s" % cid, headers={"Last-Event-ID": "9"})
        self.addCleanup(y.close)
        self.assertIs(y.envelope()["json"].get("recovered"), False)

    def test_heartbeat_comments_keep_an_idle_stream_open(self):
        bridge = self.start_bridge(self.mosq, bridge_id="ssehb", args=["--idle-timeout", "2"])
        cid = h.uniq("ssehb")
        s = SseStream(bridge.port, "channelId=" + cid)
        self.addCleanup(s.close)
        self.assertEqual(s.envelope()["json"]["msgType"], h.MSG_CONNECTION)
        # Past twice the idle timeout, the client having sent nothing.
        self.assertEqual(s.read_for(h.t(4.5)), [])
        self.assertGreaterEqual(s.comments.count(": ping"), 2, s.comments)
        h.mqtt_publish(self.mosq.port, "cloudpush/client/" + cid, json.dumps({"msg": {"still": 1}}))
        self.assertEqual(s.envelope()["json"]["msg"], {"still": 1})
        self.assertEqual(bridge.metric("cloudpush_bridge_closes_total", {"reason": "idle_timeout"}),
                         0)

    def test_drain_ends_the_stream_after_reconnect(self):
        bridge = self.start_bridge(self.mosq, bridge_id="ssedrain", args=["--drain-seconds", "1"])
        s = SseStream(bridge.port, "channelId=" + h.uniq("ssed"))
        self.addCleanup(s.close)
        self.assertEqual(s.envelope()["json"]["msgType"], h.MSG_CONNECTION)
        bridge.proc.send_signal(signal.SIGTERM)
        got = s.expect_end(timeout=10)
        self.assertEqual([e["json"]["msgType"] for e in got], [5], got)
        self.assertEqual(got[0]["json"]["resultMsg"], "bridge draining")
        self.assertEqual(bridge.stop(), 0)

    def test_slow_reader_closed_neighbours_unaffected(self):
        # As test_liveness's slow consumer: 1 MB of queue per session, 8 MB
        # sent at about 5 MB/s that the slow reader never reads.
        # One sequencer on the broker (the class bridge's): two would split
        # these back-to-back service publishes between them and may number
        # them out of publish order (docs/topics.md, known limits).
        bridge = self.start_bridge(self.mosq, bridge_id="sseslow", args=[
            "--max-queue-messages", "100", "--max-queue-bytes", "1000000",
            "--sequencer=off"])
        cid = h.uniq("sses")
        slow = SseStream(bridge.port, "channelId=" + cid, rcvbuf=4096)
        self.addCleanup(slow.close)
        self.assertEqual(slow.envelope()["json"]["msgType"], h.MSG_CONNECTION)
        fast = SseStream(bridge.port, "channelId=" + cid)
        self.addCleanup(fast.close)
        self.assertEqual(fast.envelope()["json"]["msgType"], h.MSG_CONNECTION)
        ws = self.session(bridge.port, cid)
        n, blob = 400, "x" * 20000
        got = {"sse": [], "ws": []}

        def read_sse():
            for _ in range(n):
                got["sse"].append(fast.envelope(timeout=20)["json"]["msg"]["i"])

        def read_ws():
            for _ in range(n):
                got["ws"].append(ws.recv_type(h.MSG_BUSINESS, timeout=20)["msg"]["i"])
        readers = [threading.Thread(target=read_sse, daemon=True),
                   threading.Thread(target=read_ws, daemon=True)]
        for r in readers:
            r.start()
        pub = self.mqtt_client(self.mosq.port)
        for i in range(n):
            pub.publish("cloudpush/client/" + cid,
                        json.dumps({"messageId": "s%d" % i, "msg": {"i": i, "blob": blob}}))
            time.sleep(0.004)
        for r in readers:
            r.join(h.t(60))
        # The reader that does not read passed the queue
        # limits and was closed; its neighbours got everything, in order.
        self.assertEqual(got["sse"], list(range(n)))
        self.assertEqual(got["ws"], list(range(n)))
        h.wait_until(lambda: bridge.metric("cloudpush_bridge_closes_total",
                                           {"reason": "slow_consumer"}) == 1,
                     h.t(10), what="the slow SSE reader closed as a slow consumer")
        # Its connection really ends (what was buffered, then the end).
        slow.sock.settimeout(h.t(10))
        with self.assertRaises((EOFError, ConnectionResetError)):
            for _ in range(100000):
                slow._fill()


class SseBalancerTest(h.IntegrationTest):

    def test_balancer_redirects_to_a_bridge(self):
        mosq = self.start_mosquitto()
        redis = self.start_redis()
        bridge = self.start_bridge(mosq, bridge_id="sseviabal", redis=redis,
                                   args=["--registry-interval-ms", "200"])
        bal = self.start_balancer(redis)
        h.wait_until(lambda: bal.live_ids() == ["sseviabal"], h.t(10), what="balancer sees it")
        cid = h.uniq("ssebal")
        query = "channelId=%s&epoch=a-b_c&x=%s" % (cid, urllib.parse.quote("a b&c/é"))
        st, hd, body = h.http_request(bal.port, "GET", "/sse?" + query)
        self.assertEqual(st, 307, body)
        location = dict((k.lower(), v) for k, v in hd.items())["location"]
        want = "http://127.0.0.1:%d/sse?" % bridge.port
        self.assertTrue(location.startswith(want), location)
        self.assertEqual(urllib.parse.parse_qs(location[len(want):]),
                         urllib.parse.parse_qs(query))
        s = SseStream(bridge.port, location[len(want):])
        self.addCleanup(s.close)
        conn = s.envelope()["json"]
        self.assertEqual(conn["resultMsg"], "connected, channelId=" + cid)
        self.assertEqual(bal.metric("cloudpush_balancer_routes_total"), 1)


class SseAuthTest(h.IntegrationTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mosq = cls.class_mosquitto()
        cls.bridge = cls.class_bridge(cls.mosq, bridge_id="ssesecure",
                                      args=["--jwt-secret", SECRET])

    def stream(self, query, headers=None):
        s = SseStream(self.bridge.port, query, headers=headers)
        self.addCleanup(s.close)
        return s

    def test_token_refusals(self):
        for query, headers, status, code in [
                ("channelId=alice", None, 401, "unauthorized"),
                ("channelId=alice&token=garbage", None, 401, "unauthorized"),
                ("channelId=alice&token=" + token("alice", exp_in=-60), None, 401,
                 "token_expired"),
                ("channelId=alice&token=" + token("bob"), None, 403, "forbidden_channel"),
                ("channelId=alice", {"Authorization": "Bearer " + token("bob")}, 403,
                 "forbidden_channel")]:
            with self.subTest(code=code, headers=headers):
                s = self.stream(query, headers)
                self.assertEqual(s.status, status, s.body)
                self.assertEqual(s.body["code"], code, s.body)

    def test_token_in_query_or_bearer_header(self):
        for query, headers in [("token=" + token("alice"), None),
                               ("channelId=alice", {"Authorization": "Bearer " + token("alice")})]:
            with self.subTest(headers=headers):
                s = self.stream(query, headers)
                self.assertEqual(s.status, 200, s.body)
                conn = s.envelope()["json"]
                self.assertEqual(conn["resultMsg"], "connected, channelId=alice")


class SseBrowserTest(h.IntegrationTest):

    def run_page(self, via_balancer=False):
        node = shutil.which("node")
        self.assertIsNotNone(node, "node is required (scripts/install-deps.sh installs it)")
        self.assertTrue(os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")),
                        "run 'npm ci' in tests/browser (scripts/test.sh does)")
        self.assertTrue(os.access("/usr/bin/chromium", os.X_OK), "Debian chromium is required")
        mosq = self.start_mosquitto()
        redis = self.start_redis() if via_balancer else None
        bridge = self.start_bridge(mosq, bridge_id="ssebrowser", redis=redis,
                                   args=["--registry-interval-ms", "200"])
        api = self.start_httpapi(mosq)
        cid = h.uniq("ssebrowser")
        presence = self.subscriber(mosq.port, h.topic("presence", cid))
        cmd = [node, "sse.test.mjs", "http://127.0.0.1:%d" % bridge.port, cid]
        if via_balancer:
            bal = self.start_balancer(redis)
            h.wait_until(lambda: bal.live_ids() == ["ssebrowser"], h.t(10),
                         what="balancer sees the bridge")
            cmd.append("http://127.0.0.1:%d" % bal.port)
        proc = subprocess.Popen(cmd, cwd=BROWSER_DIR, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        # The page's session is open (its channel's delivery topic
        # subscribed: the bridge announces it on presence only then), then
        # two pushes. The stream counted in the metric is not enough: a
        # push before the SUBACK is dropped by the broker.
        presence.wait_json(lambda o: o.get("event") == "connect", timeout=30)
        self.assertIsNone(proc.poll(), "the page ended before its session opened")
        for i in range(2):
            st, body, _ = api.push({"to": [cmd[3]], "msg": {"n": i}})
            self.assertEqual(st, 200, body)
        out, err = proc.communicate(timeout=h.t(60))
        print(out)
        self.assertEqual(proc.returncode, 0, "browser test failed:\n%s\n%s" % (out, err))
        self.assertIn("ok - EventSource got the CONNECTION first", out)
        self.assertIn("ok - EventSource got both pushes in order", out)
        return bridge

    def test_event_source_in_chromium(self):
        self.run_page()

    def test_event_source_through_the_balancer(self):
        self.run_page(via_balancer=True)


if __name__ == "__main__":
    unittest.main()
