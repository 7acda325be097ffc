"""WebSocket -> bridge: heartbeats, BUSINESS pushes between clients, client
acknowledgements, every kind of bad input, size limits, fragmented and
permessage-deflate messages."""

import asyncio
import json
import os
import time
import unittest
import zlib

import websocket
import websockets

import harness as h


class InboundTest(h.IntegrationTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mosq = cls.class_mosquitto()
        cls.bridge = cls.class_bridge(cls.mosq, bridge_id="itinbound")

    # ------------------------------------------------------------ heartbeat

    def test_heartbeat_echoes_message_id(self):
        cid = h.uniq("hb")
        s = self.session(self.bridge.port, cid)
        s.send({"msgType": 3, "messageId": "x-1"})
        ack, raw = s.recv_raw()
        h.assert_key_order(self, raw)
        self.assertEqual(ack.get("msgType"), h.MSG_HEARTBEAT_ACK, ack)
        self.assertEqual(ack.get("messageId"), "x-1", ack)
        self.assertEqual(ack.get("from"), cid, ack)
        self.assertEqual(ack.get("sessionId"), s.session_id, ack)
        self.assertEqual(ack.get("trigger"), h.TRIGGER_WEBSOCKET, ack)
        self.assertIsInstance(ack.get("activeTime"), int, ack)
        self.assertEqual(set(ack), {"activeTime", "from", "messageId", "msgType", "sessionId",
                                    "trigger"}, ack)

    def test_heartbeat_msgtype_as_string_and_generated_id(self):
        s = self.session(self.bridge.port, h.uniq("hbs"))
        s.send({"msgType": "3", "messageId": "as-string"})
        self.assertEqual(s.recv_type(h.MSG_HEARTBEAT_ACK)["messageId"], "as-string")
        s.send({"msgType": 3})
        ack = s.recv_type(h.MSG_HEARTBEAT_ACK)
        self.assertRegex(ack.get("messageId", ""), h.HEX32, ack)

    # ------------------------------------------------------------ BUSINESS

    def test_business_to_client_on_same_bridge(self):
        a, b = h.uniq("biz-a"), h.uniq("biz-b")
        up = self.subscriber(self.mosq.port, h.topic("upstream", a))
        sa = self.session(self.bridge.port, a)
        sb = self.session(self.bridge.port, b)
        body = {"text": "hi", "nested": {"list": [1, 2, 3], "u": "\u00e9\u4e2d"}}
        sa.send({"msgType": 1, "to": [b], "msg": body, "messageId": "biz-1"})
        m, raw = sb.recv_raw()
        h.assert_key_order(self, raw)
        self.assertDelivery(m, b, sb.session_id, body, h.TRIGGER_WEBSOCKET, sender=a,
                            message_id="biz-1")
        ack = sa.recv()
        self.assertEqual(ack.get("msgType"), h.MSG_BUSINESS_ACK, ack)
        self.assertEqual(ack.get("messageId"), "biz-1", ack)
        _, obj = up.wait_json(lambda o: o.get("messageId") == "biz-1", h.topic("upstream", a))
        self.assertEqual(obj.get("msg"), body, obj)
        # Nothing else arrives at the sender.
        h.ws_expect_nothing(self, sa.ws, 0.3)

    def test_business_without_message_id_gets_generated_one(self):
        a, b = h.uniq("bizg-a"), h.uniq("bizg-b")
        sa = self.session(self.bridge.port, a)
        sb = self.session(self.bridge.port, b)
        sa.send({"msgType": "1", "to": [b], "msg": {"g": 1}})
        m = sb.recv()
        self.assertDelivery(m, b, sb.session_id, {"g": 1}, h.TRIGGER_WEBSOCKET, sender=a)
        ack = sa.recv_type(h.MSG_BUSINESS_ACK)
        self.assertRegex(ack.get("messageId", ""), h.HEX32, ack)
        self.assertEqual(ack["messageId"], m["messageId"])

    def test_business_to_several_recipients(self):
        a, b, c = h.uniq("bizm-a"), h.uniq("bizm-b"), h.uniq("bizm-c")
        nobody = h.uniq("nobody")
        # The bridge's sequencer stores and numbers it, then publishes it on
        # the recipient's delivery topic.
        recip_sub = self.subscriber(self.mosq.port, h.topic("d/client", nobody))
        sa = self.session(self.bridge.port, a)
        sb = self.session(self.bridge.port, b)
        sc = self.session(self.bridge.port, c)
        sa.send({"msgType": 1, "to": [b, c, nobody], "msg": {"m": 3}, "messageId": "many"})
        self.assertDelivery(sb.recv(), b, sb.session_id, {"m": 3}, h.TRIGGER_WEBSOCKET,
                            sender=a, message_id="many")
        self.assertDelivery(sc.recv(), c, sc.session_id, {"m": 3}, h.TRIGGER_WEBSOCKET,
                            sender=a, message_id="many")
        ack = sa.recv_type(h.MSG_BUSINESS_ACK)
        self.assertEqual(ack["messageId"], "many")
        # A recipient that is not connected anywhere: still published to its
        # delivery topic (another bridge could have it).
        _, obj = recip_sub.wait_json(lambda o: o.get("messageId") == "many")
        self.assertEqual(obj.get("msg"), {"m": 3})
        self.assertEqual(obj.get("from"), a)
        self.assertIn("offset", obj)  # null here: this bridge runs without Redis

    def test_business_to_self(self):
        a = h.uniq("self")
        sa = self.session(self.bridge.port, a)
        sa.send({"msgType": 1, "to": [a], "msg": {"me": 1}, "messageId": "self-1"})
        got = [sa.recv(), sa.recv()]
        types = sorted(m["msgType"] for m in got)
        self.assertEqual(types, [h.MSG_BUSINESS, h.MSG_BUSINESS_ACK], got)
        for m in got:
            self.assertEqual(m["messageId"], "self-1", m)

    def test_client_business_ack_published_on_ack_topic(self):
        a = h.uniq("cack")
        sub = self.subscriber(self.mosq.port, h.topic("ack", a))
        sa = self.session(self.bridge.port, a)
        sa.send({"msgType": 2, "messageId": "acked-1"})
        _, obj = sub.wait_json(lambda o: o.get("messageId") == "acked-1", h.topic("ack", a))
        self.assertEqual(obj.get("sessionId"), sa.session_id, obj)
        self.assertEqual(obj.get("from"), a, obj)
        self.assertEqual(obj.get("msgType"), h.MSG_BUSINESS_ACK, obj)
        self.assertIsInstance(obj.get("activeTime"), int, obj)
        # No reply frame is required for an ack, but an error would be wrong.
        h.ws_expect_nothing(self, sa.ws, 0.3)
        sa.heartbeat()

    # ------------------------------------------------------------ bad input

    BAD_INPUTS = [
        # (description, text, messageId expected in the ERROR or None)
        ("invalid JSON", "{not json", None),
        ("truncated JSON", '{"msgType":3', None),
        ("JSON array", "[1,2,3]", None),
        ("JSON string", '"hello"', None),
        ("JSON number", "42", None),
        ("msgType missing", '{"messageId":"e-nomt","msg":{}}', "e-nomt"),
        ("msgType unknown", '{"msgType":7,"messageId":"e-7","msg":{}}', "e-7"),
        ("msgType non-numeric string", '{"msgType":"abc","messageId":"e-abc"}', "e-abc"),
        ("msgType 0 from client", '{"msgType":0,"messageId":"e-0"}', "e-0"),
        ("msgType 4 from client", '{"msgType":4,"messageId":"e-4"}', "e-4"),
        ("msgType -1 from client", '{"msgType":-1,"messageId":"e-m1"}', "e-m1"),
        ("business: to missing", '{"msgType":1,"msg":{"a":1},"messageId":"e-tomiss"}', "e-tomiss"),
        ("business: to empty", '{"msgType":1,"to":[],"msg":{"a":1},"messageId":"e-toempty"}',
         "e-toempty"),
        ("business: to not an array", '{"msgType":1,"to":"b","msg":{"a":1},"messageId":"e-tostr"}',
         "e-tostr"),
        ("business: recipient with /", '{"msgType":1,"to":["a/b"],"msg":{"a":1},"messageId":"e-sl"}',
         "e-sl"),
        ("business: recipient +", '{"msgType":1,"to":["a+"],"msg":{"a":1},"messageId":"e-plus"}',
         "e-plus"),
        ("business: recipient #", '{"msgType":1,"to":["#"],"msg":{"a":1},"messageId":"e-hash"}',
         "e-hash"),
        ("business: recipient empty", '{"msgType":1,"to":[""],"msg":{"a":1},"messageId":"e-em"}',
         "e-em"),
        ("business: recipient 129 chars",
         '{"msgType":1,"to":["%s"],"msg":{"a":1},"messageId":"e-long"}' % ("r" * 129), "e-long"),
        ("business: recipient not a string", '{"msgType":1,"to":[5],"msg":{"a":1},"messageId":"e-num"}',
         "e-num"),
        ("business: msg missing", '{"msgType":1,"to":["b"],"messageId":"e-nomsg"}', "e-nomsg"),
        ("business: msg a string", '{"msgType":1,"to":["b"],"msg":"text","messageId":"e-msgstr"}',
         "e-msgstr"),
        ("business: msg an array", '{"msgType":1,"to":["b"],"msg":[1],"messageId":"e-msgarr"}',
         "e-msgarr"),
        ("business ack without messageId", '{"msgType":2}', None),
    ]

    def test_bad_inputs_get_error_and_connection_survives(self):
        cid = h.uniq("bad")
        s = self.session(self.bridge.port, cid)
        failures = []
        for desc, text, mid in self.BAD_INPUTS:
            try:
                s.send_raw(text)
                m, raw = s.recv_raw()
                self.assertError(m, s.session_id, mid)
                h.assert_key_order(self, raw)
                s.heartbeat()
            except h.WsClosed as e:
                failures.append("%s: connection closed (%s %r)" % (desc, e.code, e.reason))
                s = self.session(self.bridge.port, cid)
            except (AssertionError, websocket.WebSocketException) as e:
                failures.append("%s: %s" % (desc, e))
                s.close()
                s = self.session(self.bridge.port, cid)
        self.assertEqual(failures, [], "\n".join(failures))

    def test_bad_recipient_publishes_nothing(self):
        a = h.uniq("badrcp")
        b = h.uniq("goodrcp")
        sub = self.subscriber(self.mosq.port, h.topic("client", "#"), h.topic("d/client", "#"),
                              h.topic("upstream", a))
        sa = self.session(self.bridge.port, a)
        sa.send({"msgType": 1, "to": [b, "x/y"], "msg": {"a": 1}, "messageId": "partial"})
        self.assertError(sa.recv(), sa.session_id, "partial")
        sa.heartbeat()
        time.sleep(0.3)
        leaked = [(tp, p) for tp, p in sub.received() if b"partial" in p]
        self.assertEqual(leaked, [], "a rejected BUSINESS was (partly) published")

    def test_binary_frame_gets_error(self):
        s = self.session(self.bridge.port, h.uniq("bin"))
        s.ws.send_binary(b'{"msgType":3,"messageId":"bin"}')
        m = s.recv()
        self.assertError(m, s.session_id)
        s.heartbeat()

    # ------------------------------------------------------------ limits

    TOO_BIG = ("cloudpush_bridge_closes_total", {"reason": "too_big"})

    def test_oversize_message_closes_1009(self):
        before = self.bridge.metric(*self.TOO_BIG)
        s = self.session(self.bridge.port, h.uniq("big"))
        s.send_raw(json.dumps({"msgType": 1, "to": ["x"], "msg": {"pad": "p" * 70000}}))
        code, reason, frames = h.ws_expect_close(s.ws, 5)
        self.assertEqual(code, 1009, (code, reason, frames))
        # Counted when the session ends (websocket-client answered the close).
        h.wait_metric_delta(self, self.bridge, *self.TOO_BIG, before, 1)

    def test_oversize_fragmented_message_closes_1009(self):
        before = self.bridge.metric(*self.TOO_BIG)
        r = self.raw_ws(self.bridge.port, h.uniq("bigfrag"))
        self.assertEqual(r.recv_json()["msgType"], h.MSG_CONNECTION)
        text = json.dumps({"msgType": 1, "to": ["x"], "msg": {"pad": "q" * 70000}})
        try:
            r.send_fragmented(text, 35)  # 2 KB fragments, 70 KB in total
        except OSError:
            pass  # closed while we were still sending
        code, reason, _, _ = r.read_until_close(5)
        self.assertEqual(code, 1009, reason)
        # The raw client never answers the close: end the session now, so the
        # count is settled before the next test reads it.
        r.close()
        h.wait_metric_delta(self, self.bridge, *self.TOO_BIG, before, 1)

    def test_message_at_the_frame_limit_is_refused_as_too_large_an_envelope(self):
        """A 65 536-byte message is within the WebSocket limit (no 1009), but
        the envelope the bridge would publish (sender, session id, time,
        offset added) is over --max-message-bytes, which every bridge
        checks: an ERROR names the size, nothing is published (the
        recipients' bridges would drop it), and the session goes on."""
        s = self.session(self.bridge.port, h.uniq("edge"))
        nobody = h.uniq("edge-rcpt")
        base = json.dumps({"msgType": 1, "to": [nobody], "messageId": "edge",
                           "msg": {"pad": ""}}, separators=(",", ":"))
        text = base.replace('"pad":""', '"pad":"%s"' % ("e" * (65536 - len(base))))
        self.assertEqual(len(text.encode()), 65536)
        s.send_raw(text)
        err = s.recv(10)
        self.assertEqual((err.get("msgType"), err.get("messageId")), (h.MSG_ERROR, "edge"), err)
        self.assertRegex(err.get("resultMsg", ""),
                         r"message too large: \d+ bytes as an envelope, the limit is 65536")
        s.send({"msgType": 3, "messageId": "still-open"})
        self.assertEqual(s.recv(10).get("messageId"), "still-open")

    def test_frames_at_header_length_boundaries(self):
        """The bridge frames what it writes itself (sessions without
        extensions): payloads of 125, 126, 65535 and 65536 bytes get the
        shortest header RFC 6455 allows (2, 4, 4 and 10 bytes) and arrive
        whole. A bridge with a one-letter id and a one-letter channel make
        a HEARTBEAT_ACK short enough for the 7-bit form."""
        bridge = self.start_bridge(self.mosq, bridge_id="i")
        r = self.raw_ws(bridge.port, "L")
        self.assertEqual(r.recv_json()["msgType"], h.MSG_CONNECTION)
        sender = self.session(bridge.port, "S")

        def recv_text():
            while True:
                fin, op, payload = r.recv_frame(10)
                if op == h.OP_TEXT:
                    self.assertTrue(fin)
                    return payload, r.last_header_len

        def heartbeat(mid):
            r.send_frame(h.OP_TEXT, json.dumps({"msgType": 3, "messageId": mid}))

        def business(mid, pad):
            sender.send({"msgType": 1, "to": ["L"], "msg": {"pad": pad}, "messageId": mid})

        # The length of each kind with the shortest content; only the
        # messageId or the pad changes a frame's length after that.
        heartbeat("0")
        ack_base = len(recv_text()[0]) - 1
        business("b0", "")
        business_base = len(recv_text()[0])
        self.assertLessEqual(ack_base + 1, 125, "HEARTBEAT_ACK too long for the 7-bit form")
        want = {}
        for size, letter in ((125, "s"), (126, "m")):
            mid = letter * (size - ack_base)
            heartbeat(mid)
            want[mid] = size
        for size in (65535, 65536):
            mid = "b%d" % size
            business(mid, "x" * (size - business_base - (len(mid) - 2)))
            want[mid] = size
        for _ in range(len(want)):
            payload, header_len = recv_text()
            m = json.loads(payload)
            size = want.pop(m["messageId"])
            self.assertEqual(len(payload), size, m["messageId"])
            self.assertEqual(header_len, 2 if size < 126 else 4 if size < 65536 else 10, size)
        self.assertEqual(want, {})

    def test_invalid_utf8_closes_1007(self):
        r = self.raw_ws(self.bridge.port, h.uniq("utf8"))
        self.assertEqual(r.recv_json()["msgType"], h.MSG_CONNECTION)
        r.send_frame(h.OP_TEXT, b'{"msgType":3,"messageId":"\xc3\x28"}')
        code, reason, _, _ = r.read_until_close(5)
        self.assertEqual(code, 1007, reason)

    def test_invalid_utf8_in_a_compressed_message_closes_1007(self):
        # The bridge's envelope parser does not check UTF-8 again: it relies
        # on libwebsockets checking every text message, compressed ones
        # after inflating them.
        r = self.raw_ws(self.bridge.port, h.uniq("utf8z"),
                        extra_headers={"Sec-WebSocket-Extensions": "permessage-deflate"})
        self.assertIn("permessage-deflate", r.headers.get("sec-websocket-extensions", ""))
        deflate = zlib.compressobj(wbits=-15)
        inflate = zlib.decompressobj(wbits=-15)

        def send_compressed(data):
            body = deflate.compress(data) + deflate.flush(zlib.Z_SYNC_FLUSH)
            r.send_frame(h.OP_TEXT, body[:-4], rsv1=True)  # without 00 00 ff ff

        def recv_inflated():
            fin, op, payload = r.recv_frame(5)
            self.assertEqual((fin, op), (True, h.OP_TEXT))
            return json.loads(inflate.decompress(payload + b"\x00\x00\xff\xff"))

        self.assertEqual(recv_inflated()["msgType"], h.MSG_CONNECTION)
        # Valid UTF-8 (two-byte "é") passes and is answered...
        send_compressed(b'{"msgType":3,"messageId":"ok-\xc3\xa9"}')
        ack = recv_inflated()
        self.assertEqual((ack["msgType"], ack["messageId"]), (h.MSG_HEARTBEAT_ACK, "ok-\u00e9"))
        # ...a broken sequence closes the connection.
        send_compressed(b'{"msgType":3,"messageId":"\xc3\x28"}')
        code, reason, _, _ = r.read_until_close(5)
        self.assertEqual(code, 1007, reason)

    # ------------------------------------------------------------ reassembly

    def test_fragmented_40k_message(self):
        a, b = h.uniq("frag-a"), h.uniq("frag-b")
        sb = self.session(self.bridge.port, b)
        ra = self.raw_ws(self.bridge.port, a)
        self.assertEqual(ra.recv_json()["msgType"], h.MSG_CONNECTION)
        blob = os.urandom(20000).hex()  # 40000 characters
        msg = {"blob": blob, "tail": "end"}
        text = json.dumps({"msgType": 1, "to": [b], "msg": msg, "messageId": "frag-40k"})
        ra.send_fragmented(text, 17)
        m = sb.recv(10)
        self.assertDelivery(m, b, sb.session_id, msg, h.TRIGGER_WEBSOCKET, sender=a,
                            message_id="frag-40k")
        ack = ra.recv_json()
        self.assertEqual(ack.get("msgType"), h.MSG_BUSINESS_ACK, ack)
        self.assertEqual(ack.get("messageId"), "frag-40k")
        # Fragments with a ping in between (control frames may interleave).
        ra.send_frame(h.OP_TEXT, '{"msgType":3,', fin=False)
        ra.send_frame(h.OP_PING, b"p")
        ra.send_frame(h.OP_CONT, '"messageId":"frag-hb"}', fin=True)
        deadline = time.monotonic() + h.t(5)
        while True:
            self.assertLess(time.monotonic(), deadline, "no heartbeat ack")
            fin, op, payload = ra.recv_frame(5)
            if op == h.OP_TEXT:
                hb = json.loads(payload)
                break
        self.assertEqual(hb.get("msgType"), h.MSG_HEARTBEAT_ACK, hb)
        self.assertEqual(hb.get("messageId"), "frag-hb")

    def test_permessage_deflate(self):
        a, b = h.uniq("defl-a"), h.uniq("defl-b")
        port = self.bridge.port
        results = {}

        async def run():
            async with websockets.connect(h.ws_url(port, a), compression="deflate",
                                          max_size=2 ** 22, open_timeout=h.t(5),
                                          close_timeout=2) as wa, \
                    websockets.connect(h.ws_url(port, b), compression="deflate",
                                       max_size=2 ** 22, open_timeout=h.t(5),
                                       close_timeout=2) as wb:
                results["extensions"] = [e.name for e in wa.extensions]
                for w in (wa, wb):
                    first = json.loads(await asyncio.wait_for(w.recv(), h.t(5)))
                    assert first["msgType"] == 0, first
                results["sid_b"] = first["sessionId"]
                got = []
                for n, size in (("3k", 3000), ("40k", 40000)):
                    # Incompressible content so the frames stay big.
                    msg = {"blob": os.urandom(size // 2).hex()}
                    text = json.dumps({"msgType": 1, "to": [b], "msg": msg, "messageId": n})
                    await wa.send(text)
                    ack = json.loads(await asyncio.wait_for(wa.recv(), h.t(5)))
                    m = json.loads(await asyncio.wait_for(wb.recv(), h.t(5)))
                    got.append((n, msg, ack, m))
                await wa.send(json.dumps({"msgType": 3, "messageId": "d-hb"}))
                results["hb"] = json.loads(await asyncio.wait_for(wa.recv(), h.t(5)))
                results["got"] = got

        asyncio.run(asyncio.wait_for(run(), h.t(30)))
        self.assertIn("permessage-deflate", results["extensions"],
                      "the bridge did not negotiate permessage-deflate")
        for n, msg, ack, m in results["got"]:
            self.assertEqual(ack.get("msgType"), h.MSG_BUSINESS_ACK, (n, ack))
            self.assertEqual(ack.get("messageId"), n)
            self.assertDelivery(m, b, results["sid_b"], msg, h.TRIGGER_WEBSOCKET, sender=a,
                                message_id=n)
        self.assertEqual(results["hb"].get("msgType"), h.MSG_HEARTBEAT_ACK, results["hb"])
        self.assertEqual(results["hb"].get("messageId"), "d-hb")


if __name__ == "__main__":
    unittest.main()
