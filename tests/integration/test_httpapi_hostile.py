"""The HTTP API against hostile clients: idle and half-sent requests, too
many connections from one address, ambiguous framing, huge announced bodies
and bodies that drip. Each case checks the exact answer, that the
connection is ended when it must be, and that honest publishers and the
probes are still served."""

import json
import socket
import time
import unittest

import harness as h


def raw_exchange(port, request, timeout=5.0):
    """Sends raw bytes, reads one response. Returns (status, headers, body,
    closed): closed is True when the server ended the connection right after
    the response."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                raise AssertionError("connection closed before a response: %r" % data)
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        body = rest[:length]
        s.settimeout(1.0)
        try:
            closed = s.recv(1) == b""
        except socket.timeout:
            closed = False
        return status, headers, json.loads(body) if body else None, closed
    finally:
        s.close()


def push_request(body, extra_headers=b"", content_length=None):
    if isinstance(body, str):
        body = body.encode()
    cl = len(body) if content_length is None else content_length
    return (b"POST /api/v1/push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
            extra_headers + b"Content-Length: %d\r\n\r\n" % cl + body)


class HostileHttpTest(h.IntegrationTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mosq = cls.class_mosquitto()
        cls.bridge = cls.class_bridge(cls.mosq, bridge_id="hostile")
        # Defaults, as a user would start it.
        cls.api = cls.class_httpapi(cls.mosq, bridges=[cls.bridge])

    def honest_push(self, cid, n):
        started = time.monotonic()
        st, body, _ = self.api.push({"to": [cid], "msg": {"n": n}}, timeout=10.0)
        return st, body, time.monotonic() - started

    def test_half_sent_requests_do_not_starve_publishers_or_probes(self):
        # 16 such sockets made 9 of 11 honest pushes time out; 40 made
        # /healthz hang for 10 s.
        cid = h.uniq("starve")
        s = self.session(self.bridge.port, cid)
        idle = []
        try:
            for _ in range(40):
                c = socket.create_connection(("127.0.0.1", self.api.port), timeout=5)
                c.sendall(b"POST /api/v1/push HTTP/1.1\r\nHost: x\r\nContent-")
                idle.append(c)
            time.sleep(0.3)  # every idle socket has reached a worker
            started = time.monotonic()
            st, _ = self.api.health()
            self.assertEqual(st, 200)
            self.assertLess(time.monotonic() - started, 1.0, "/healthz was starved")
            for n in range(11):
                st, body, took = self.honest_push(cid, n)
                self.assertEqual(st, 200, body)
                self.assertLess(took, 2.0, "an honest push waited for a worker")
            self.assertEqual([s.recv()["msg"]["n"] for _ in range(11)], list(range(11)))
        finally:
            for c in idle:
                c.close()

    def test_half_sent_request_is_dropped_after_the_header_timeout(self):
        c = socket.create_connection(("127.0.0.1", self.api.port), timeout=10)
        try:
            c.sendall(b"POST /api/v1/push HTTP/1.1\r\nHost: x\r\n")
            started = time.monotonic()
            while True:  # the server answers nothing useful, then closes
                if not c.recv(4096):
                    break
            took = time.monotonic() - started
            # --header-timeout-ms defaults to 3000
            self.assertGreater(took, 2.0)
            self.assertLess(took, 6.0)
        finally:
            c.close()

    def test_conflicting_content_lengths_are_refused(self):
        body = b'{"to":["a"],"msg":{}}'
        st, hdrs, reply, closed = raw_exchange(
            self.api.port, push_request(body, b"Content-Length: 5\r\n"))
        self.assertEqual(st, 400, reply)
        self.assertEqual(reply["code"], "invalid_request")
        self.assertIn("conflicting Content-Length", reply["msg"])
        self.assertTrue(closed)
        self.assertEqual(hdrs.get("connection"), "close")
        # Two equal values are the same framing (RFC 9110 allows them).
        st, _, reply, _ = raw_exchange(
            self.api.port, push_request(body, b"Content-Length: %d\r\n" % len(body)))
        self.assertEqual(st, 200, reply)

    def test_content_length_with_transfer_encoding_is_refused(self):
        req = (b"POST /api/v1/push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n")
        st, _, reply, closed = raw_exchange(self.api.port, req)
        self.assertEqual(st, 400, reply)
        self.assertIn("both Content-Length and Transfer-Encoding", reply["msg"])
        self.assertTrue(closed)

    def test_huge_announced_body_is_refused_at_once(self):
        # 413 came only after 8 s: the server read (discarded) what was announced.
        for path in (b"/api/v1/push", b"/healthz", b"/nothing-here"):
            with self.subTest(path=path):
                req = (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                       b"\r\nContent-Length: 1000000000000000000\r\n\r\n{")
                started = time.monotonic()
                st, hdrs, reply, closed = raw_exchange(self.api.port, req)
                self.assertEqual(st, 413, reply)
                self.assertEqual(reply["code"], "body_too_large")
                self.assertTrue(closed, "the connection must end: the body is unread")
                self.assertLess(time.monotonic() - started, 1.5)

    def test_refusal_before_the_body_ends_the_connection(self):
        # 415 is answered without reading the body: keeping the connection
        # would make the server discard (or misread) the body as a request.
        body = b'{"to":["a"],"msg":{}}' + b" " * 1000
        req = (b"POST /api/v1/push HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
               b"Content-Length: %d\r\n\r\n" % (len(body) + 100000) + body)
        st, hdrs, reply, closed = raw_exchange(self.api.port, req)
        self.assertEqual(st, 415, reply)
        self.assertEqual(hdrs.get("connection"), "close")
        self.assertTrue(closed)
        # A request whose body was read keeps its connection.
        st, hdrs, reply, closed = raw_exchange(self.api.port, push_request(b'{"to":["a"],"msg":{}}'))
        self.assertEqual(st, 200, reply)
        self.assertEqual(hdrs.get("connection"), "keep-alive")
        self.assertFalse(closed)

    def test_reply_headers_say_what_the_server_does_with_the_connection(self):
        # The reply is written whole by the API (one write), so its
        # Connection header and framing are ours: check each case.
        cases = [
            (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", "keep-alive", False),
            (b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "close", True),
            (b"GET /healthz HTTP/1.0\r\n\r\n", "close", True),
            (b"GET /healthz HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", "keep-alive", False),
            (b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: TE, keep-alive \r\n\r\n",
             "keep-alive", False),
        ]
        for req, conn, closed_expected in cases:
            with self.subTest(request=req):
                st, hdrs, reply, closed = raw_exchange(self.api.port, req)
                self.assertEqual(st, 200, reply)
                self.assertEqual(hdrs.get("connection"), conn)
                self.assertEqual(closed, closed_expected)
                self.assertEqual(hdrs.get("content-type"), "application/json")
                self.assertEqual(hdrs.get("cache-control"), "no-store")
                self.assertRegex(hdrs.get("date", ""), r"^\w{3}, \d{2} \w{3} \d{4} [\d:]{8} GMT$")
                self.assertEqual(int(hdrs["content-length"]), len(json.dumps(reply, separators=(",", ":"))))
        # HEAD: the GET's headers, no body; the connection stays usable.
        s = socket.create_connection(("127.0.0.1", self.api.port), timeout=5)
        try:
            s.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            deadline = time.monotonic() + 5
            while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"}"):
                self.assertLess(time.monotonic(), deadline, data)
                chunk = s.recv(65536)
                self.assertTrue(chunk, data)
                data += chunk
            head_reply, _, get_reply = data.partition(b"\r\n\r\n")
            self.assertIn(b"Content-Length: ", head_reply)
            self.assertTrue(get_reply.startswith(b"HTTP/1.1 200 OK\r\n"), data)
        finally:
            s.close()

    def test_metrics_count_refusals(self):
        def refused(reason):
            st, _, raw = h.http_request(self.api.port, "GET", "/metrics")
            self.assertEqual(st, 200)
            return h.metric_value(raw.decode(), "cloudpush_httpapi_refused_total",
                                  {"reason": reason})
        before = refused("framing")
        raw_exchange(self.api.port, push_request(b"{}", b"Content-Length: 9\r\n"))
        self.assertEqual(refused("framing"), before + 1)


class AddressCapTest(h.IntegrationTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mosq = cls.class_mosquitto()
        cls.api = cls.class_httpapi(cls.mosq, args=["--max-connections-per-ip", "4"])

    def test_connections_over_the_cap_are_refused_and_probes_still_answer(self):
        held = []
        refused = None
        try:
            # Keep-alive connections, each holding a worker, until the cap
            # refuses one. A connection the server has not yet noticed closed
            # (e.g. of the start-up probes) still counts; it may vanish at any
            # moment, so start again until the 4 held are all ours: then the
            # count is exact for the rest of the test.
            deadline = time.monotonic() + h.t(10)
            while True:
                for _ in range(8):
                    c = socket.create_connection(("127.0.0.1", self.api.port), timeout=5)
                    c.sendall(b"GET /api/v1/config HTTP/1.1\r\nHost: x\r\n\r\n")
                    answer = c.recv(4096)
                    if b"200 OK" not in answer:
                        refused = (c, answer)
                        break
                    held.append(c)
                self.assertIsNotNone(refused, "the cap of 4 never refused")
                self.assertIn(len(held), (3, 4))
                if len(held) == 4 or time.monotonic() > deadline:
                    break
                for c in held + [refused[0]]:
                    c.close()
                held, refused = [], None
                time.sleep(0.2)
            self.assertEqual(len(held), 4, "a stale connection kept counting")
            c, answer = refused
            c.settimeout(2)
            while True:  # the whole answer, then the server's close
                more = c.recv(4096)
                if not more:
                    break
                answer += more
            c.close()
            self.assertIn(b" 429 ", answer.split(b"\r\n")[0])
            self.assertIn(b"too_many_connections_from_address", answer)
            st, hdrs, reply, closed = raw_exchange(self.api.port,
                                                   push_request(b'{"to":["a"],"msg":{}}'))
            self.assertEqual(st, 429, reply)
            self.assertEqual(reply["code"], "too_many_connections_from_address")
            self.assertTrue(closed, "a refused connection must not keep its worker")
            for path in ("/healthz", "/readyz", "/metrics"):
                st, _, _ = h.http_request(self.api.port, "GET", path)
                self.assertEqual(st, 200, path)
        finally:
            for c in held:
                c.close()
        # Closed connections are no longer counted.
        h.wait_until(lambda: self.api.push({"to": ["a"], "msg": {}})[0] == 200, h.t(5),
                     what="a push once the held connections closed")


class SlowBodyTest(h.IntegrationTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mosq = cls.class_mosquitto()
        cls.api = cls.class_httpapi(cls.mosq, args=["--header-timeout-ms", "1000"])

    def test_a_stalled_body_gets_408(self):
        started = time.monotonic()
        st, _, reply, closed = raw_exchange(
            self.api.port, push_request(b'{"to":["a"]', content_length=100), timeout=10)
        self.assertEqual(st, 408, reply)
        self.assertEqual(reply["code"], "body_timeout")
        self.assertTrue(closed)
        self.assertLess(time.monotonic() - started, 4.0)


if __name__ == "__main__":
    unittest.main()
