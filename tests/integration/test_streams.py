"""Streams (issue 13): every message gets its offset, epoch and one messageId
where it enters (docs/design-delivery.md, sections 1 and 6).

Real mosquitto, redis-server, two bridges (each with its sequencer) and the
HTTP API, all on Redis. Checked: offsets identical on two sessions of one id
on two bridges; one messageId on every bridge for a service publish without
one; consecutive offsets without gaps whatever the entry (HTTP API, a
service's MQTT publish, a client's push); the broadcast stream; idempotent
retries with a publisher's messageId; the HTTP answer's fields. Then Redis
going away (live delivery goes on with offset null, stored:false) and coming
back empty, and FLUSHALL: a new epoch.

Delivery order on the bridges is not what this file checks (offsets are
compared as sets, per message)."""

import json
import re
import time
import unittest

import harness as h

EPOCH = re.compile(r"^[0-9a-f]{16}$")


def business(session, n, timeout=5.0):
    """The next n BUSINESS messages of session (other frames skipped)."""
    got = []
    deadline = time.monotonic() + h.t(timeout)
    while len(got) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("%s: %d of %d messages within %.0fs: %r" % (
                session.channel_id, len(got), n, h.t(timeout), got))
        m = session.recv(left / h.SLOW)
        if m.get("msgType") == h.MSG_BUSINESS:
            got.append(m)
    return got


def by_id(messages):
    return {m["messageId"]: m for m in messages}


class StreamsTest(h.IntegrationTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mosq = cls.class_mosquitto()
        cls.redis = h.Redis(cls.class_dir)
        cls.addClassCleanup(cls.redis.stop)
        cls._class_logs.append(cls.redis.log_path)
        cls.redis.start()
        # --bus-batch 1: every sequencer batch is republished as one message on
        # d/batch, so this file checks that path end to end (the other files
        # run the default, one message each for small batches).
        cls.a = cls.class_bridge(cls.mosq, bridge_id="itstream-a", redis=cls.redis,
                                 args=("--bus-batch", "1"))
        cls.b = cls.class_bridge(cls.mosq, bridge_id="itstream-b", redis=cls.redis,
                                 args=("--bus-batch", "1"))
        cls.api = cls.class_httpapi(cls.mosq, redis=cls.redis)

    def push(self, body):
        st, resp, _ = self.api.push(body)
        self.assertEqual(st, 200, resp)
        return resp["data"]

    def pair(self, prefix):
        """Two sessions of one new channel id, one on each bridge."""
        cid = h.uniq(prefix)
        return cid, self.session(self.a.port, cid), self.session(self.b.port, cid)

    def seq_metric(self, result):
        return sum(bridge.metric("cloudpush_sequencer_messages_total", {"result": result})
                   for bridge in (self.a, self.b))

    def test_http_offsets_identical_on_two_bridges(self):
        cid, sa, sb = self.pair("same")
        answers = [self.push({"to": [cid], "msg": {"n": i}})["messages"][0] for i in range(3)]
        offsets = [m["offset"] for m in answers]
        self.assertEqual(offsets, list(range(offsets[0], offsets[0] + 3)), answers)
        got_a, got_b = by_id(business(sa, 3)), by_id(business(sb, 3))
        for ans in answers:
            ma, mb = got_a[ans["messageId"]], got_b[ans["messageId"]]
            self.assertEqual((ma["offset"], ma["epoch"]), (ans["offset"], ans["epoch"]), ma)
            self.assertEqual((mb["offset"], mb["epoch"]), (ans["offset"], ans["epoch"]), mb)
            self.assertNotIn("broadcast", ma)
            h.assert_key_order(self, json.dumps(ma))

    def test_service_publish_has_one_id_on_every_bridge(self):
        cid, sa, sb = self.pair("svc")
        for i in range(4):  # the shared subscription spreads them over both sequencers
            h.mqtt_publish(self.mosq.port, h.topic("client", cid), {"msg": {"svc": i}})
        got_a, got_b = business(sa, 4), business(sb, 4)
        self.assertEqual(set(by_id(got_a)), set(by_id(got_b)),
                         "the bridges saw different messageIds for the same publishes")
        for m in got_a:
            self.assertRegex(m["messageId"], h.HEX32)
            self.assertEqual(m["trigger"], h.TRIGGER_MQTT, m)
            other = by_id(got_b)[m["messageId"]]
            self.assertEqual((m["offset"], m["epoch"], m["msg"]),
                             (other["offset"], other["epoch"], other["msg"]))
        offsets = sorted(m["offset"] for m in got_a)
        self.assertEqual(offsets, list(range(offsets[0], offsets[0] + 4)), got_a)
        self.assertEqual(len({m["epoch"] for m in got_a}), 1, got_a)

    def test_every_entry_numbers_one_stream_without_gaps(self):
        cid, sa, sb = self.pair("mixed")
        sender = self.session(self.a.port, h.uniq("sender"))
        other = h.uniq("mixed-other")
        answers = []
        answers += self.push({"to": [cid], "msg": {"e": "http-1"}})["messages"]
        h.mqtt_publish(self.mosq.port, h.topic("client", cid), {"msg": {"e": "mqtt-1"}})
        sender.send({"msgType": 1, "to": [cid], "msg": {"e": "ws-1"}, "messageId": "ws-1"})
        answers += self.push({"to": [other, cid], "msg": {"e": "http-2"}})["messages"]
        h.mqtt_publish(self.mosq.port, h.topic("client", cid), {"msg": {"e": "mqtt-2"},
                                                                 "messageId": "mqtt-2"})
        sender.send({"msgType": 1, "to": [cid], "msg": {"e": "ws-2"}, "messageId": "ws-2"})
        got_a, got_b = business(sa, 6), business(sb, 6)
        self.assertEqual(sorted(m["msg"]["e"] for m in got_a),
                         ["http-1", "http-2", "mqtt-1", "mqtt-2", "ws-1", "ws-2"])
        offsets = sorted(m["offset"] for m in got_a)
        self.assertEqual(offsets, list(range(offsets[0], offsets[0] + 6)),
                         "a gap or a repeat in the stream: %r" % got_a)
        self.assertEqual({m["messageId"]: m["offset"] for m in got_a},
                         {m["messageId"]: m["offset"] for m in got_b})
        mine = [a for a in answers if a["to"] == cid]
        for ans in mine:
            self.assertEqual(by_id(got_a)[ans["messageId"]]["offset"], ans["offset"])
        # The other recipient has a stream of its own.
        [theirs] = [a for a in answers if a["to"] == other]
        self.assertEqual(theirs["offset"], 1, answers)
        self.assertIs(theirs["online"], False)
        # A client's push is acknowledged once stored and on the bus.
        acks = [sender.recv_type(h.MSG_BUSINESS_ACK)["messageId"] for _ in range(2)]
        self.assertEqual(sorted(acks), ["ws-1", "ws-2"])

    def test_msg_arrives_as_written_from_every_entry(self):
        """msg reaches the client byte for byte as its publisher wrote it,
        live and from the history, whatever the entry: a 64-bit id is not
        rounded through a double (cJSON printed 9007199254740993 as
        9.00719925474099e+15), spacing and number forms stay."""
        cid, sa, sb = self.pair("asis")
        sender = self.session(self.a.port, h.uniq("asis-sender"))
        texts = {
            "http": '{"id": 9007199254740993, "e":"http", "f":[1.50, -0, 1E2]}',
            "mqtt": '{ "id":12345678901234567890,"e":"mqtt" }',
            "ws": '{"e":"ws",  "id":18446744073709551615}',
        }
        st, resp, _ = self.api.push('{"to":["%s"], "msg": %s}' % (cid, texts["http"]))
        self.assertEqual(st, 200, resp)
        h.mqtt_publish(self.mosq.port, h.topic("client", cid),
                       '{"msg":%s,"messageId":"asis-mqtt"}' % texts["mqtt"])
        sender.send_raw('{"msgType":1,"to":["%s"],"messageId":"asis-ws","msg":%s}'
                        % (cid, texts["ws"]))
        for session in (sa, sb):
            raws = []
            while len(raws) < 3:
                m, raw = session.recv_raw(h.t(5))
                if m.get("msgType") == h.MSG_BUSINESS:
                    raws.append(raw)
            for entry, text in texts.items():
                self.assertEqual(sum('"msg":%s,' % text in raw for raw in raws), 1,
                                 "%s: %s not found as written in %r" % (entry, text, raws))
        # From the history (the offline inbox) as well.
        inbox = self.session(self.b.port, cid, query={"since": 0})
        raws = []
        while len(raws) < 3:
            m, raw = inbox.recv_raw(h.t(5))
            if m.get("msgType") == h.MSG_BUSINESS:
                raws.append(raw)
        for text in texts.values():
            self.assertTrue(any('"msg":%s,' % text in raw for raw in raws), raws)

    def test_concurrent_pushes_share_pipelines_and_number_without_gaps(self):
        """Group commit (httpapi/groupcommit.c): pushes of many request threads
        go to Redis together, and each stream is still numbered 1, 2, 3..."""
        import threading
        cids = [h.uniq("gc%d-" % i) for i in range(4)]
        sessions = [self.session(self.a.port, cid) for cid in cids]
        threads, per_thread = 16, 10
        text = self.api.metrics()
        p0 = h.metric_value(text, "cloudpush_httpapi_redis_pipelines_total")
        a0 = h.metric_value(text, "cloudpush_httpapi_history_appends_total")
        answers, errors = [], []
        lock = threading.Lock()

        def pusher(t):
            for i in range(per_thread):
                cid = cids[(t + i) % len(cids)]
                st, resp, _ = self.api.push({"to": [cid], "msg": {"t": t, "i": i}})
                with lock:
                    if st == 200:
                        answers.append(resp["data"]["messages"][0])
                    else:
                        errors.append((st, resp))

        workers = [threading.Thread(target=pusher, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(h.t(60))
        self.assertEqual(errors, [])
        total = threads * per_thread
        self.assertEqual(len(answers), total)
        for cid, s in zip(cids, sessions):
            mine = sorted(a["offset"] for a in answers if a["to"] == cid)
            self.assertEqual(mine, list(range(1, len(mine) + 1)), cid)
            got = business(s, len(mine), timeout=10)
            self.assertEqual(sorted(m["offset"] for m in got), mine)
        text = self.api.metrics()
        appends = h.metric_value(text, "cloudpush_httpapi_history_appends_total") - a0
        pipelines = h.metric_value(text, "cloudpush_httpapi_redis_pipelines_total") - p0
        self.assertEqual(appends, total)
        # 16 requests in flight at once: some waited for the same pipeline.
        self.assertLess(pipelines, total, "every push had a pipeline of its own")

    def test_many_recipients_go_out_as_one_batch(self):
        """--bus-batch (default 4): one push to 6 ids is one MQTT message on
        d/batch, which every worker of both bridges receives; each keeps
        the items of its own channels (common/dbatch.h). Every recipient
        gets its own message once, with the offset the answer gave."""
        on_a = [h.uniq("ba%d-" % i) for i in range(3)]
        on_b = [h.uniq("bb%d-" % i) for i in range(2)]
        offline = h.uniq("boff")
        sessions = {cid: self.session(self.a.port, cid) for cid in on_a}
        sessions.update({cid: self.session(self.b.port, cid) for cid in on_b})
        text = self.api.metrics()
        batches0 = h.metric_value(text, "cloudpush_httpapi_bus_batches_total")
        batched0 = h.metric_value(text, "cloudpush_httpapi_bus_batched_messages_total")
        elsewhere0 = self.a.metric("cloudpush_bridge_batch_items_total", {"where": "elsewhere"})
        answers = self.push({"to": on_a + on_b + [offline], "msg": {"batch": 1}})["messages"]
        self.assertEqual(len(answers), 6, answers)
        for ans in answers:
            self.assertEqual(ans["offset"], 1, ans)  # every id is a new stream
        for cid, s in sessions.items():
            [m] = business(s, 1)
            [ans] = [a for a in answers if a["to"] == cid]
            self.assertEqual((m["messageId"], m["offset"], m["epoch"], m["to"], m["msg"]),
                             (ans["messageId"], 1, ans["epoch"], [cid], {"batch": 1}), m)
        text = self.api.metrics()
        self.assertEqual(h.metric_value(text, "cloudpush_httpapi_bus_batches_total") - batches0,
                         1)
        self.assertEqual(
            h.metric_value(text, "cloudpush_httpapi_bus_batched_messages_total") - batched0, 6)
        # Bridge a's workers skipped at least b's two ids and the offline one.
        deadline = time.monotonic() + h.t(5)
        while (self.a.metric("cloudpush_bridge_batch_items_total", {"where": "elsewhere"})
               - elsewhere0 < 3 and time.monotonic() < deadline):
            time.sleep(0.05)
        self.assertGreaterEqual(
            self.a.metric("cloudpush_bridge_batch_items_total", {"where": "elsewhere"})
            - elsewhere0, 3)
        # Nothing more came: no copy through another path.
        for cid, s in sessions.items():
            s.send({"msgType": h.MSG_HEARTBEAT, "messageId": "hb-" + cid})
            self.assertEqual(s.recv_type(h.MSG_HEARTBEAT_ACK)["messageId"], "hb-" + cid)

    def test_service_burst_in_batches_keeps_each_stream_in_order(self):
        """A burst of service messages on 4 channels: the sequencer leader
        republishes each Redis batch as one d/batch message (--bus-batch 1
        here); every session gets its channel's messages once, in order,
        offsets 1..N, and nobody else's."""
        cids = [h.uniq("burst%d-" % i) for i in range(4)]
        sessions = {cid: self.session((self.a, self.b)[i % 2].port, cid)
                    for i, cid in enumerate(cids)}
        before = sum(b.metric("cloudpush_sequencer_bus_batches_total") for b in (self.a, self.b))
        per = 25
        pub = h.MqttClient(self.mosq.port)
        try:
            infos = [pub.publish(h.topic("client", cids[i % 4]),
                                 json.dumps({"msg": {"i": i // 4}}), wait=False)
                     for i in range(per * 4)]
            for info in infos:
                pub.wait_published(info)
        finally:
            pub.close()
        for cid, s in sessions.items():
            got = business(s, per, timeout=10)
            self.assertEqual([m["msg"]["i"] for m in got], list(range(per)), cid)
            self.assertEqual([m["offset"] for m in got], list(range(1, per + 1)), cid)
            self.assertEqual({tuple(m["to"]) for m in got}, {(cid,)})
        after = sum(b.metric("cloudpush_sequencer_bus_batches_total") for b in (self.a, self.b))
        self.assertGreater(after, before)
        # Fewer batches than messages: several went out in one.
        self.assertLess(after - before, per * 4)

    def test_broadcast_stream(self):
        sa = self.session(self.a.port, h.uniq("bc-a"))
        sb = self.session(self.b.port, h.uniq("bc-b"))
        [ans] = self.push({"sendToAll": True, "msg": {"bc": 1}})["messages"]
        self.assertEqual(ans["to"], "*")
        self.assertIs(ans["stored"], True)
        self.assertNotIn("online", ans)
        h.mqtt_publish(self.mosq.port, h.topic("broadcast"), {"msg": {"bc": 2}})
        got_a, got_b = business(sa, 2), business(sb, 2)
        for got in (got_a, got_b):
            for m in got:
                self.assertIs(m.get("broadcast"), True, m)
                self.assertEqual(m["epoch"], ans["epoch"], m)
            self.assertEqual(sorted(m["offset"] for m in got), [ans["offset"], ans["offset"] + 1])
        self.assertEqual({m["messageId"]: m["offset"] for m in got_a},
                         {m["messageId"]: m["offset"] for m in got_b})
        # The broadcast stream is not a channel's: a channel's own stream
        # does not move.
        cid, s1, _ = self.pair("bc-own")
        [own] = self.push({"to": [cid], "msg": {"own": 1}})["messages"]
        self.assertEqual(own["offset"], 1)

    def test_idempotent_retry(self):
        cid, sa, sb = self.pair("idem")
        off = h.uniq("idem-off")
        mid = "order-%s" % h.uniq("42")
        body = {"to": [cid, off], "msg": {"order": 42}, "messageId": mid}
        first = self.push(body)["messages"]
        self.assertEqual([(m["messageId"], m["stored"], m["duplicate"]) for m in first],
                         [(mid, True, False), (mid, True, False)], first)
        again = self.push(body)["messages"]
        self.assertEqual([(m["offset"], m["epoch"], m["duplicate"], m["stored"]) for m in again],
                         [(m["offset"], m["epoch"], True, True) for m in first], again)
        # The same msg written with other spacing is the same message (msg is
        # compared as a JSON value, though delivered as written).
        st, spaced, _ = self.api.push('{"to":["%s"], "msg": { "order" : 42 }, "messageId":"%s"}'
                                      % (cid, mid))
        self.assertEqual(st, 200, spaced)
        [dup] = spaced["data"]["messages"]
        self.assertEqual((dup["offset"], dup["duplicate"]), (first[0]["offset"], True), dup)
        # A service publishing the same messageId to the same channel.
        before = self.seq_metric("duplicate")
        h.mqtt_publish(self.mosq.port, h.topic("client", cid),
                       '{"msg":{"order":  42},"messageId":"%s"}' % mid)
        h.wait_until(lambda: self.seq_metric("duplicate") == before + 1, h.t(5),
                     what="the sequencer to see the duplicate")
        # Each session got it exactly once: the next frame is a marker.
        self.push({"to": [cid], "msg": {"marker": 1}, "messageId": mid + "-marker"})
        for s in (sa, sb):
            got = business(s, 2)
            self.assertEqual([m["messageId"] for m in got], [mid, mid + "-marker"], got)
            self.assertEqual(got[0]["offset"], first[0]["offset"])
            self.assertEqual(got[1]["offset"], first[0]["offset"] + 1)
        # The same messageId to another channel is another message.
        [new] = self.push({"to": [h.uniq("idem-new")], "msg": {}, "messageId": mid})["messages"]
        self.assertEqual((new["offset"], new["duplicate"]), (1, False))

    def test_message_id_reused_by_another_sender(self):
        """The idempotency key matches a retry only when the sender (from)
        and the payload match too: another message under a used messageId
        is a new message with a derived id (<id>~<fingerprint>), over HTTP
        ("conflict":true) and MQTT alike; it never takes the first one's
        place, and its own retries stay idempotent."""
        cid, sa, _ = self.pair("conflict")
        mid = h.uniq("shared-id")
        [one] = self.push({"to": [cid], "msg": {"a": 1}, "messageId": mid,
                           "from": "svc-a"})["messages"]
        self.assertNotIn("conflict", one)
        [two] = self.push({"to": [cid], "msg": {"b": 2}, "messageId": mid,
                           "from": "svc-b"})["messages"]
        self.assertRegex(two["messageId"], "^%s~[0-9a-f]{16}$" % re.escape(mid))
        self.assertEqual((two["offset"], two["duplicate"], two["stored"], two["conflict"]),
                         (one["offset"] + 1, False, True, True), two)
        # Its retry is a duplicate of it, under the same derived id.
        [again] = self.push({"to": [cid], "msg": {"b": 2}, "messageId": mid,
                             "from": "svc-b"})["messages"]
        self.assertEqual((again["messageId"], again["offset"], again["duplicate"]),
                         (two["messageId"], two["offset"], True), again)
        # A service reusing it on MQTT with yet another payload.
        before = self.seq_metric("sequenced")
        h.mqtt_publish(self.mosq.port, h.topic("client", cid),
                       {"msg": {"c": 3}, "messageId": mid})
        got = business(sa, 3)
        self.assertEqual([(m["messageId"] == mid, m["msg"], m["offset"]) for m in got],
                         [(True, {"a": 1}, one["offset"]), (False, {"b": 2}, two["offset"]),
                          (False, {"c": 3}, two["offset"] + 1)], got)
        self.assertRegex(got[2]["messageId"], "^%s~[0-9a-f]{16}$" % re.escape(mid))
        self.assertNotEqual(got[2]["messageId"], two["messageId"])
        h.wait_until(lambda: self.seq_metric("sequenced") == before + 1, h.t(5),
                     what="the sequenced counter")
        self.assertGreaterEqual(sum(b.metric("cloudpush_sequencer_message_id_conflicts_total")
                                    for b in (self.a, self.b)), 1)
        self.assertGreaterEqual(self.api.metric("cloudpush_httpapi_message_id_conflicts_total"),
                                1)

    def test_answer_fields(self):
        on = h.uniq("ans-on")
        s = self.session(self.a.port, on)
        off = h.uniq("ans-off")

        def registered():
            st, _, body = h.http_request(self.api.port, "GET", "/api/v1/clients/" + on)
            return st == 200 and json.loads(body)["online"]
        # The bridge writes its sessions to Redis at its next registry round.
        h.wait_until(registered, h.t(5), 0.1, "%s online in the registry" % on)
        data = self.push({"to": [on, off], "msg": {"f": 1}})
        self.assertEqual(data["offline"], [off])
        for m in data["messages"]:
            self.assertEqual(set(m), {"to", "messageId", "offset", "epoch", "stored", "duplicate",
                                      "online"}, m)
            self.assertRegex(m["epoch"], EPOCH)
            self.assertEqual((m["offset"], m["stored"], m["duplicate"]), (1, True, False))
            self.assertRegex(m["messageId"], h.HEX32)
        self.assertEqual([(m["to"], m["online"]) for m in data["messages"]],
                         [(on, True), (off, False)])
        self.assertNotEqual(data["messages"][0]["messageId"], data["messages"][1]["messageId"])
        [m] = business(s, 1)
        self.assertEqual((m["messageId"], m["offset"], m["epoch"]),
                         (data["messages"][0]["messageId"], 1, data["messages"][0]["epoch"]))
        # A messageId that is not a string of 1-128 characters is refused.
        for bad in ("", "x" * 129, 7):
            st, resp, _ = self.api.push({"to": [on], "msg": {}, "messageId": bad})
            self.assertEqual((st, resp["code"]), (400, "invalid_field"), resp)

    def test_bridge_without_a_sequencer(self):
        """--sequencer=off: the bridge takes no share of service messages, and
        its clients' pushes go to the documented topic, where the other
        bridges' sequencers number them."""
        c = self.start_bridge(self.mosq, bridge_id="itstream-c", redis=self.redis,
                              args=["--sequencer=off"])
        self.assertIsNone(c.health()[1]["sequencer"])
        self.assertNotIn("cloudpush_sequencer_", c.metrics())
        cid, sa, _ = self.pair("noseq")
        sender = self.session(c.port, h.uniq("noseq-sender"))
        sender.send({"msgType": 1, "to": [cid], "msg": {"via": "c"}, "messageId": "via-c"})
        [m] = business(sa, 1)
        self.assertEqual((m["messageId"], m["msg"]), ("via-c", {"via": "c"}))
        self.assertEqual(m["offset"], 1, m)
        self.assertEqual(sender.recv_type(h.MSG_BUSINESS_ACK)["messageId"], "via-c")
        # It still delivers what the others numbered.
        on_c = self.session(c.port, cid)
        h.mqtt_publish(self.mosq.port, h.topic("client", cid), {"msg": {"to": "all"}})
        for s in (sa, on_c):
            [m] = business(s, 1)
            self.assertEqual((m["msg"], m["offset"]), ({"to": "all"}, 2), m)

    def test_metrics(self):
        before = self.seq_metric("sequenced")
        cid, sa, _ = self.pair("met")
        h.mqtt_publish(self.mosq.port, h.topic("client", cid), {"msg": {}})
        business(sa, 1)
        h.wait_until(lambda: self.seq_metric("sequenced") == before + 1, h.t(5),
                     what="the sequenced counter")
        for bridge in (self.a, self.b):
            text = bridge.metrics()
            for name in ("cloudpush_sequencer_queue_depth",
                         "cloudpush_sequencer_queue_overflow_total",
                         "cloudpush_sequencer_redis_failures_total",
                         "cloudpush_sequencer_mqtt_connected"):
                self.assertIn("\n%s " % name, text)
            self.assertEqual(h.metric_value(text, "cloudpush_sequencer_mqtt_connected"), 1)
            self.assertIs(bridge.health()[1]["sequencer"], True)


class RedisLossTest(h.IntegrationTest):
    """Redis goes away, comes back empty, or is emptied."""

    def setUp(self):
        super().setUp()
        self.mosq = self.start_mosquitto()
        self.redis = self.start_redis()
        self.bridge = self.start_bridge(self.mosq, bridge_id="itstream-loss", redis=self.redis)
        self.api = self.start_httpapi(self.mosq, redis=self.redis)

    def push(self, cid, msg):
        st, resp, _ = self.api.push({"to": [cid], "msg": msg})
        self.assertEqual(st, 200, resp)
        return resp["data"]["messages"][0]

    def test_redis_down_then_back_empty(self):
        cid = h.uniq("loss")
        s = self.session(self.bridge.port, cid)
        first = self.push(cid, {"n": 1})
        self.assertEqual((first["offset"], first["stored"]), (1, True))
        self.assertEqual(business(s, 1)[0]["offset"], 1)

        self.redis.stop()
        # Live delivery goes on; nothing claims to be stored.
        down = self.push(cid, {"n": 2})
        self.assertEqual((down["offset"], down["stored"], down["duplicate"]), (None, False, False))
        self.assertNotIn("epoch", down)
        [m] = business(s, 1)
        self.assertEqual(m["msg"], {"n": 2})
        self.assertIsNone(m["offset"], m)
        self.assertNotIn("epoch", m)
        h.mqtt_publish(self.mosq.port, h.topic("client", cid), {"msg": {"n": 3}})
        [m] = business(s, 1)
        self.assertEqual(m["msg"], {"n": 3})
        self.assertIsNone(m["offset"], m)
        self.assertGreaterEqual(self.bridge.metric("cloudpush_sequencer_messages_total",
                                                   {"result": "unsequenced"}), 1)
        self.assertGreaterEqual(self.bridge.metric("cloudpush_sequencer_redis_failures_total"), 1)
        self.assertGreaterEqual(self.api.metric("cloudpush_httpapi_history_failures_total"), 1)

        # Back, empty (no persistence): a new epoch, from offset 1.
        back = h.Redis(self.dir, port=self.redis.port, name="redis-again")
        self.addCleanup(back.stop)
        self._logs.append(back.log_path)
        back.start()
        # The API's watcher sees Redis again within its backoff (at most 5 s):
        # until then pushes go out unstored, at once.
        deadline = time.monotonic() + h.t(15)
        while True:
            again = self.push(cid, {"n": 4})
            [m] = business(s, 1)
            if again["stored"]:
                break
            self.assertIsNone(m["offset"], m)
            self.assertLess(time.monotonic(), deadline, "the API never stored again")
            time.sleep(0.2)
        self.assertEqual((again["offset"], again["stored"]), (1, True), again)
        self.assertNotEqual(again["epoch"], first["epoch"])
        self.assertEqual((m["offset"], m["epoch"]), (1, again["epoch"]))
        # The sequencer reconnects with its backoff (at most 5 s).
        deadline = time.monotonic() + h.t(15)
        while True:
            h.mqtt_publish(self.mosq.port, h.topic("client", cid), {"msg": {"n": 5}})
            [m] = business(s, 1)
            if m["offset"] is not None:
                break
            self.assertLess(time.monotonic(), deadline, "the sequencer never stored again")
            time.sleep(0.5)
        self.assertEqual(m["epoch"], again["epoch"], m)
        self.assertGreaterEqual(m["offset"], 2)

    def test_restart_from_an_older_rdb_starts_a_new_epoch(self):
        """Redis comes back from an older snapshot: the stream's offsets went
        back (3 and 4 would be handed out again), so its epoch changes at
        the next append; what the snapshot kept stays readable."""
        import shutil
        cid = h.uniq("oldrdb")
        s = self.session(self.bridge.port, cid)
        one, two = self.push(cid, {"n": 1}), self.push(cid, {"n": 2})
        self.assertEqual(self.redis.cli("SAVE"), ["OK"])
        rdb = "%s/dump.rdb" % self.redis.dir
        shutil.copy(rdb, rdb + ".old")
        three, four = self.push(cid, {"n": 3}), self.push(cid, {"n": 4})
        self.assertEqual((three["offset"], four["offset"], four["epoch"]), (3, 4, one["epoch"]))
        self.assertEqual(self.redis.cli("SAVE"), ["OK"])
        self.redis.stop()
        shutil.copy(rdb + ".old", rdb)
        back = h.Redis(self.dir, port=self.redis.port, name="redis")
        self.addCleanup(back.stop)
        back.start()
        self.assertEqual(back.cli("GET", "cloudpush:h:{%s}:seq" % cid), ["2"])
        five = self.push(cid, {"n": 5})
        self.assertEqual(five["stored"], True, five)
        self.assertNotEqual(five["epoch"], one["epoch"], "offsets reused under the old epoch")
        self.assertEqual(five["offset"], 3)
        got = business(s, 5)
        self.assertEqual([(m["msg"]["n"], m["epoch"] == one["epoch"]) for m in got],
                         [(1, True), (2, True), (3, True), (4, True), (5, False)], got)
        self.assertEqual(got[4]["epoch"], five["epoch"])

    def test_pushes_answered_fast_while_redis_hangs(self):
        """Redis stops answering (SIGSTOP: connects still succeed, commands
        time out). The request that finds out pays the timeout; the
        following ones skip Redis at once (one shared backoff, a watcher
        probes), and storing resumes when Redis answers again."""
        import os
        import signal
        cid = h.uniq("hang")
        s = self.session(self.bridge.port, cid)
        self.assertEqual(self.push(cid, {"n": 0})["stored"], True)
        business(s, 1)
        os.kill(self.redis.proc.pid, signal.SIGSTOP)
        self.addCleanup(lambda: os.kill(self.redis.proc.pid, signal.SIGCONT))
        t0 = time.monotonic()
        first = self.push(cid, {"n": 1})
        self.assertLess(time.monotonic() - t0, h.t(6), "the first push waited too long")
        self.assertEqual((first["stored"], first["offset"]), (False, None), first)
        took = []
        for i in range(2, 12):
            t0 = time.monotonic()
            m = self.push(cid, {"n": i})
            took.append(time.monotonic() - t0)
            self.assertEqual((m["stored"], m["offset"]), (False, None), m)
            time.sleep(0.1)
        self.assertLess(max(took), h.t(1.0), "a push paid a Redis timeout: %r" % took)
        self.assertEqual([m["msg"]["n"] for m in business(s, 11)], list(range(1, 12)))
        os.kill(self.redis.proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + h.t(15)
        while not self.push(cid, {"n": "again"})["stored"]:
            self.assertLess(time.monotonic(), deadline, "the API never stored again")
            time.sleep(0.2)

    def test_flushall_starts_a_new_epoch(self):
        cid = h.uniq("flush")
        s = self.session(self.bridge.port, cid)
        one, two = self.push(cid, {"n": 1}), self.push(cid, {"n": 2})
        self.assertEqual((one["offset"], two["offset"]), (1, 2))
        self.assertEqual(one["epoch"], two["epoch"])
        self.assertEqual(self.redis.cli("FLUSHALL"), ["OK"])
        three = self.push(cid, {"n": 3})
        self.assertEqual(three["offset"], 1)
        self.assertNotEqual(three["epoch"], one["epoch"])
        got = business(s, 3)
        self.assertEqual([(m["offset"], m["epoch"]) for m in got],
                         [(1, one["epoch"]), (2, one["epoch"]), (1, three["epoch"])])
        # A service's publish continues the new epoch.
        h.mqtt_publish(self.mosq.port, h.topic("client", cid), {"msg": {"n": 4}})
        [m] = business(s, 1)
        self.assertEqual((m["offset"], m["epoch"]), (2, three["epoch"]))


class BusDownTest(h.IntegrationTest):
    """The broker goes away while Redis stays: a push is stored but cannot
    be published, so it is not reported accepted (503, listed unconfirmed
    with its offset). A retry with the same messageId, from any entry,
    publishes it with its stored offset, and every session gets it once."""

    def test_stored_while_the_bus_is_down(self):
        mosq = self.start_mosquitto()
        redis = self.start_redis()
        api = self.start_httpapi(mosq, redis=redis)
        cid = h.uniq("busdown")
        st, resp, _ = api.push({"to": [cid], "msg": {"n": 1}})
        self.assertEqual(st, 200, resp)
        mosq.stop()
        api.wait_health_status(503, h.t(10))
        st, resp, _ = api.push({"to": [cid], "msg": {"n": 2}, "messageId": "while-down"})
        self.assertEqual((st, resp["code"]), (503, "bus_unavailable"), resp)
        [m] = resp["data"]["unconfirmed"]
        self.assertEqual((m["messageId"], m["offset"], m["stored"]), ("while-down", 2, True), m)
        self.assertEqual(resp["data"]["confirmed"], [])
        mosq.restart()
        api.wait_health_status(200, h.t(15))
        # The retry is accepted with the stored offset.
        st, resp, _ = api.push({"to": [cid], "msg": {"n": 2}, "messageId": "while-down"})
        self.assertEqual(st, 200, resp)
        [m] = resp["data"]["messages"]
        self.assertEqual((m["offset"], m["duplicate"]), (2, True), m)
        st, resp, _ = api.push({"to": [cid], "msg": {"n": 3}})
        self.assertEqual(st, 200, resp)
        self.assertEqual(resp["data"]["messages"][0]["offset"], 3)

    def test_retry_of_a_lost_first_publish_is_delivered_once(self):
        """The HTTP API that stored the message has lost its broker (another
        one than the bridge's, so no bridge catch-up hides anything): the
        service's MQTT retry of that messageId is republished by the
        sequencer with the stored offset, and a later HTTP retry is
        dropped by the bridge as a repeat."""
        mosq = self.start_mosquitto()
        lost_bus = self.start_mosquitto()
        redis = self.start_redis()
        bridge = self.start_bridge(mosq, bridge_id="itstream-lost", redis=redis)
        api = self.start_httpapi(mosq, redis=redis)
        cut_off = self.start_httpapi(lost_bus, redis=redis)
        cid = h.uniq("lostpub")
        s = self.session(bridge.port, cid)
        lost_bus.stop()
        cut_off.wait_health_status(503, h.t(10))
        body = {"to": [cid], "msg": {"pay": 1}, "messageId": "lost-first"}
        st, resp, _ = cut_off.push(body)
        self.assertEqual(st, 503, resp)
        [m] = resp["data"]["unconfirmed"]
        self.assertEqual((m["offset"], m["stored"]), (1, True), m)
        before = bridge.metric("cloudpush_sequencer_messages_total", {"result": "duplicate"})
        h.mqtt_publish(mosq.port, h.topic("client", cid),
                       {"msg": {"pay": 1}, "messageId": "lost-first"})
        [got] = business(s, 1)
        self.assertEqual((got["messageId"], got["offset"], got["msg"]),
                         ("lost-first", 1, {"pay": 1}), got)
        self.assertEqual(bridge.metric("cloudpush_sequencer_messages_total",
                                       {"result": "duplicate"}), before + 1)
        # Retried once more over HTTP: published again, dropped by offset.
        st, resp, _ = api.push(body)
        self.assertEqual(st, 200, resp)
        self.assertEqual(resp["data"]["messages"][0]["duplicate"], True)
        st, resp, _ = api.push({"to": [cid], "msg": {"pay": 2}, "messageId": "marker"})
        self.assertEqual(st, 200, resp)
        [nxt] = business(s, 1)
        self.assertEqual((nxt["messageId"], nxt["offset"]), ("marker", 2), nxt)


if __name__ == "__main__":
    unittest.main()
