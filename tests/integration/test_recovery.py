"""Issue 13, the read side on the bridge: delivery in offset order (gaps
filled from the history or reported), recovery on connect with
since/epoch and bsince/bepoch (the offline inbox with since=0), catch-up
after the broker lost messages, and what happens with Redis down. Real
mosquitto, redis-server, bridge and WebSocket clients.

The entries are played by the test itself: it writes each message into
the stream's history in Redis (the key layout of docs/redis.md, "History
streams") and publishes it with its offset and epoch on the delivery topic
(<prefix>/d/client/<id>, <prefix>/d/broadcast), as an entry does; leaving
out one of the two steps makes the bus or the history lose a message."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import threading
import time
import unittest

import websockets

import harness as h

EPOCH = "00000000e13e13e1"


class Resp:
    """A minimal Redis client (RESP over a socket): the tests only write
    and delete keys."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=h.t(5))
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"-":
            raise AssertionError("redis: %s" % rest.decode())
        if kind in (b"+", b":"):
            return rest.decode()
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.sock.recv(65536)
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data.decode()
        if kind == b"*":
            return [self._reply() for _ in range(int(rest))]
        raise AssertionError("redis: unexpected reply %r" % line)

    def pipeline(self, *commands):
        out = b""
        for cmd in commands:
            args = [str(a).encode() for a in cmd]
            out += b"*%d\r\n" % len(args)
            for a in args:
                out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)
        return [self._reply() for _ in commands]

    def close(self):
        self.sock.close()


def key(stream, part):
    return "%s:h:{%s}:%s" % (h.PREFIX, stream, part)


def envelope(offset, body, mid=None, broadcast=False, epoch=EPOCH):
    env = {"messageId": mid or "m-%d" % offset, "msg": body, "offset": offset,
           "epoch": epoch}
    if broadcast:
        env["broadcast"] = True
    return env


class RecoveryTest(h.IntegrationTest):

    def setUp(self):
        super().setUp()
        self.mosq = self.start_mosquitto()
        self.redis = self.start_redis()
        self.bridge = self.start_bridge(self.mosq, bridge_id="itrec", redis=self.redis)
        self.resp = Resp(self.redis.port)
        self.addCleanup(self.resp.close)
        self.pub = self.mqtt_client(self.mosq.port)

    # -- playing the entries

    def store(self, stream, offset, body, epoch=EPOCH, mid=None, broadcast=False):
        """Appends to the history as the append script does (seq, epoch,
        entry <offset>-0). Returns the envelope."""
        env = envelope(offset, body, mid, broadcast, epoch)
        self.resp.pipeline(("SET", key(stream, "epoch"), epoch),
                           ("SET", key(stream, "seq"), offset),
                           ("XADD", key(stream, "hist"), "%d-0" % offset, "e",
                            json.dumps(env)))
        return env

    def publish(self, cid, env):
        tp = h.topic("d/broadcast") if cid is None else h.topic("d/client", cid)
        self.pub.publish(tp, json.dumps(env))

    def append(self, cid, offset, body, **kw):
        """Stored and published: an entry that lost nothing."""
        env = self.store(cid if cid is not None else "*", offset, body,
                         broadcast=cid is None, **kw)
        self.publish(cid, env)
        return env

    # -- reading

    def connect(self, cid, **query):
        return self.session(self.bridge.port, cid, query=query or None)

    def business(self, s, n, timeout=5.0):
        """The next n frames, which must be BUSINESS; returns their offsets."""
        got = []
        for _ in range(n):
            m, raw = s.recv_raw(timeout)
            self.assertEqual(m.get("msgType"), h.MSG_BUSINESS, raw)
            got.append(m)
        return got

    def assert_offsets(self, msgs, offsets):
        self.assertEqual([m["offset"] for m in msgs], list(offsets))
        for m in msgs:
            self.assertEqual(m["msg"], {"n": m["offset"]})

    # -- the tests

    def test_connection_carries_the_positions(self):
        cid = h.uniq("pos")
        for i in range(1, 4):
            self.store(cid, i, {"n": i})
        self.store("*", 7, {"n": 7}, epoch="bcastepoch01", broadcast=True)
        s = self.connect(cid)
        c = s.connection
        self.assertEqual(c["offset"], 3)
        self.assertEqual(c["epoch"], EPOCH)
        self.assertEqual(c["boffset"], 7)
        self.assertEqual(c["bepoch"], "bcastepoch01")
        self.assertNotIn("recovered", c, "no recovery was asked for")
        # Nothing retained is replayed without since: the next is live.
        self.append(cid, 4, {"n": 4})
        self.assert_offsets(self.business(s, 1), [4])
        # A stream without history: offset 0 and an empty epoch.
        other = self.connect(h.uniq("empty"))
        self.assertEqual(other.connection["offset"], 0)
        self.assertEqual(other.connection["epoch"], "")

    def test_reconnect_with_since_gets_exactly_the_missed_then_live(self):
        cid = h.uniq("since")
        s = self.connect(cid)
        self.assertEqual(s.connection["offset"], 0)
        for i in range(1, 4):
            self.append(cid, i, {"n": i})
        self.assert_offsets(self.business(s, 3), [1, 2, 3])
        s.close()
        # Offline: the bus has nobody to deliver to; the history keeps them.
        for i in range(4, 7):
            self.append(cid, i, {"n": i})
        again = self.connect(cid, since=3, epoch=EPOCH)
        c = again.connection
        self.assertIs(c["recovered"], True, c)
        self.assertEqual(c["offset"], 6)
        self.assertEqual(c["epoch"], EPOCH)
        msgs = self.business(again, 3)
        self.assert_offsets(msgs, [4, 5, 6])
        self.assertEqual([m["messageId"] for m in msgs], ["m-4", "m-5", "m-6"])
        self.assertEqual(msgs[0]["to"], [cid])
        self.append(cid, 7, {"n": 7})
        self.assert_offsets(self.business(again, 1), [7])
        h.ws_expect_nothing(self, again.ws, 0.3)
        self.assertEqual(self.bridge.metric("cloudpush_bridge_recovery_total",
                                            {"result": "recovered"}), 1)

    def test_since_zero_is_the_inbox_of_an_id_that_never_connected(self):
        cid = h.uniq("inbox")
        for i in range(1, 6):
            self.store(cid, i, {"n": i})
        s = self.connect(cid, since=0)
        self.assertIs(s.connection["recovered"], True)
        self.assertEqual(s.connection["offset"], 5)
        self.assert_offsets(self.business(s, 5), range(1, 6))
        h.ws_expect_nothing(self, s.ws, 0.3)

    def test_wrong_epoch_is_not_recovered(self):
        cid = h.uniq("epoch")
        for i in range(1, 4):
            self.store(cid, i, {"n": i})
        s = self.connect(cid, since=1, epoch="0123456789abcdef")
        c = s.connection
        self.assertIs(c["recovered"], False, c)
        self.assertEqual(c["epoch"], EPOCH, "the stream's epoch, for the next reconnect")
        self.assertEqual(c["offset"], 3)
        # Since means nothing in another history: nothing is replayed, and
        # live delivery goes on from the current offset.
        self.append(cid, 4, {"n": 4})
        self.assert_offsets(self.business(s, 1), [4])
        self.assertEqual(self.bridge.metric("cloudpush_bridge_recovery_total",
                                            {"result": "not_recovered"}), 1)

    def test_since_older_than_retained_is_not_recovered(self):
        cid = h.uniq("old")
        # Offsets 1-4 were trimmed (MAXLEN): 5-7 are retained.
        for i in range(5, 8):
            self.store(cid, i, {"n": i})
        s = self.connect(cid, since=2, epoch=EPOCH)
        self.assertIs(s.connection["recovered"], False)
        # What is retained still comes, in order; the client knows 3-4 are
        # gone (recovered:false, and the first offset is not since+1).
        self.assert_offsets(self.business(s, 3), [5, 6, 7])
        # since+1 retained: recovered.
        s2 = self.connect(cid, since=4, epoch=EPOCH)
        self.assertIs(s2.connection["recovered"], True)
        self.assert_offsets(self.business(s2, 3), [5, 6, 7])

    def test_messages_published_during_recovery_are_neither_lost_nor_doubled(self):
        cid = h.uniq("during")
        backlog = 400
        pipe = []
        for i in range(1, backlog + 1):
            env = envelope(i, {"n": i})
            pipe += [("XADD", key(cid, "hist"), "%d-0" % i, "e", json.dumps(env))]
        self.resp.pipeline(("SET", key(cid, "epoch"), EPOCH), *pipe,
                           ("SET", key(cid, "seq"), backlog))
        # Live appends run while the session connects and recovers.
        live = 150
        started = threading.Event()

        def publisher():
            r = Resp(self.redis.port)
            try:
                started.set()
                for i in range(backlog + 1, backlog + live + 1):
                    env = envelope(i, {"n": i})
                    r.pipeline(("SET", key(cid, "seq"), i),
                               ("XADD", key(cid, "hist"), "%d-0" % i, "e", json.dumps(env)))
                    self.pub.publish(h.topic("d/client", cid), json.dumps(env), wait=False)
                    time.sleep(0.002)
            finally:
                r.close()

        th = threading.Thread(target=publisher, daemon=True)
        th.start()
        started.wait(h.t(5))
        s = self.connect(cid, since=0, timeout=15)
        self.assertIs(s.connection["recovered"], True)
        th.join(h.t(30))
        self.assertFalse(th.is_alive())
        got = self.business(s, backlog + live, timeout=10)
        self.assert_offsets(got, range(1, backlog + live + 1))
        h.ws_expect_nothing(self, s.ws, 0.5)

    def test_many_sessions_recover_at_once(self):
        n, per = 200, 5
        ids = [h.uniq("many-%03d" % i) for i in range(n)]
        pipe = []
        for cid in ids:
            pipe.append(("SET", key(cid, "epoch"), EPOCH))
            pipe.append(("SET", key(cid, "seq"), per))
            for i in range(1, per + 1):
                pipe.append(("XADD", key(cid, "hist"), "%d-0" % i, "e",
                             json.dumps(envelope(i, {"n": i}))))
        self.resp.pipeline(*pipe)

        async def one(cid):
            url = h.ws_url(self.bridge.port, cid, query={"since": 0, "epoch": EPOCH})
            async with websockets.connect(url, open_timeout=h.t(20)) as ws:
                first = json.loads(await asyncio.wait_for(ws.recv(), h.t(20)))
                got = [json.loads(await asyncio.wait_for(ws.recv(), h.t(20)))
                       for _ in range(per)]
                return first, got

        async def all_of_them():
            return await asyncio.gather(*(one(cid) for cid in ids))

        results = asyncio.run(all_of_them())
        for cid, (first, got) in zip(ids, results):
            self.assertEqual(first["msgType"], h.MSG_CONNECTION)
            self.assertIs(first["recovered"], True, cid)
            self.assertEqual([m["offset"] for m in got], list(range(1, per + 1)), cid)
            self.assertEqual({m["to"][0] for m in got}, {cid})

    def test_a_recovery_larger_than_the_queue_limits_is_not_a_slow_consumer(self):
        bridge = self.start_bridge(self.mosq, bridge_id="itrecq", redis=self.redis,
                                   args=["--max-queue-messages", "20",
                                         "--max-queue-bytes", "4096"])
        cid = h.uniq("bigq")
        pipe = [("SET", key(cid, "epoch"), EPOCH), ("SET", key(cid, "seq"), 300)]
        for i in range(1, 301):
            env = envelope(i, {"n": i, "pad": "x" * 200})
            pipe.append(("XADD", key(cid, "hist"), "%d-0" % i, "e", json.dumps(env)))
        self.resp.pipeline(*pipe)
        s = self.session(bridge.port, cid, query={"since": 0})
        self.assertIs(s.connection["recovered"], True)
        got = self.business(s, 300)
        self.assertEqual([m["offset"] for m in got], list(range(1, 301)))
        # The allowance ends once the backlog is written: the limits hold again.
        self.assertEqual(bridge.metric("cloudpush_bridge_closes_total",
                                       {"reason": "slow_consumer"}), 0)

    def test_ack_sessions_recover_half_their_window_at_a_time(self):
        bridge = self.start_bridge(self.mosq, bridge_id="itrecack", redis=self.redis,
                                   args=["--ack-window", "8"])
        cid = h.uniq("ackrec")
        for i in range(1, 11):
            self.store(cid, i, {"n": i})
        s = self.session(bridge.port, cid, query={"since": 0, "ack": 1})
        # 10 missed, 4 fit: recovered:false, the client asks again from 4.
        self.assertIs(s.connection["recovered"], False)
        self.assert_offsets(self.business(s, 4), [1, 2, 3, 4])
        h.ws_expect_nothing(self, s.ws, 0.3)
        s.close()
        s2 = self.session(bridge.port, cid, query={"since": 4, "epoch": EPOCH, "ack": 1})
        self.assertIs(s2.connection["recovered"], False)
        self.assert_offsets(self.business(s2, 4), [5, 6, 7, 8])

    def test_broadcast_bsince(self):
        cid = h.uniq("bc")
        for i in range(1, 5):
            self.store("*", i, {"n": i}, epoch="bepoch000000001", broadcast=True)
        s = self.connect(cid, bsince=2, bepoch="bepoch000000001")
        c = s.connection
        self.assertIs(c["recovered"], True)
        self.assertEqual(c["boffset"], 4)
        self.assertEqual(c["bepoch"], "bepoch000000001")
        msgs = self.business(s, 2)
        self.assert_offsets(msgs, [3, 4])
        for m in msgs:
            self.assertIs(m["broadcast"], True)
            self.assertEqual(m["epoch"], "bepoch000000001")
        self.append(None, 5, {"n": 5}, epoch="bepoch000000001")
        self.assert_offsets(self.business(s, 1), [5])
        # A broadcast the session recovered is not sent again live.
        self.publish(None, envelope(4, {"n": 4}, broadcast=True, epoch="bepoch000000001"))
        self.append(None, 6, {"n": 6}, epoch="bepoch000000001")
        self.assert_offsets(self.business(s, 1), [6])

    def test_gap_on_the_bus_is_filled_from_the_history_or_reported(self):
        cid = h.uniq("gap")
        s = self.connect(cid)
        self.append(cid, 1, {"n": 1})
        self.append(cid, 2, {"n": 2})
        self.store(cid, 3, {"n": 3})  # stored, but the bus lost it
        self.append(cid, 4, {"n": 4})
        self.assert_offsets(self.business(s, 4), [1, 2, 3, 4])
        self.assertGreaterEqual(self.bridge.metric("cloudpush_bridge_gap_filled_total"), 1)
        # Offset 6 reached neither the history nor the bus: reported.
        self.append(cid, 5, {"n": 5})
        self.resp.pipeline(("SET", key(cid, "seq"), 6))
        self.append(cid, 7, {"n": 7})
        self.assert_offsets(self.business(s, 1), [5])
        err = s.recv()
        self.assertEqual(err["msgType"], h.MSG_ERROR, err)
        self.assertEqual(err["resultMsg"], "gap: offsets 6..6 were lost")
        self.assertEqual(err["epoch"], EPOCH)
        self.assert_offsets(self.business(s, 1), [7])
        # A duplicate on the bus is dropped.
        self.publish(cid, envelope(7, {"n": 7}))
        self.append(cid, 8, {"n": 8})
        self.assert_offsets(self.business(s, 1), [8])
        self.assertEqual(self.bridge.metric("cloudpush_bridge_gap_total"), 1)
        self.assertGreaterEqual(self.bridge.metric("cloudpush_bridge_duplicates_dropped_total"),
                                1)

    def test_a_burst_larger_than_the_reorder_buffer_is_read_back_not_lost(self):
        # A delivery batch (after a sequencer takeover, say) brings more
        # messages behind a gap than the buffer holds: the newest are let go
        # and the gap's history read brings them back, in order.
        bridge = self.start_bridge(self.mosq, bridge_id="itrecspill", redis=self.redis,
                                   args=["--reorder-max-messages", "4",
                                         "--reorder-window-ms", "5000"])
        cid = h.uniq("spill")
        s = self.session(bridge.port, cid)
        self.append(cid, 1, {"n": 1})
        self.assert_offsets(self.business(s, 1), [1])
        self.store(cid, 2, {"n": 2})  # stored, but the bus lost it
        items = []
        for i in range(3, 31):
            raw = json.dumps(self.store(cid, i, {"n": i})).encode()
            items.append(b"%s %d\n%s\n" % (cid.encode(), len(raw), raw))
        # One batch: the bridge takes all 28 before the history can answer.
        self.pub.publish(h.topic("d/batch"), b"cpb1\n" + b"".join(items))
        self.assert_offsets(self.business(s, 29), list(range(2, 31)))
        self.assertGreaterEqual(bridge.metric("cloudpush_bridge_reorder_spilled_total"), 1)
        self.assertEqual(bridge.metric("cloudpush_bridge_gap_total"), 0)
        # The read spans the held messages too: they are not repeats.
        self.assertEqual(bridge.metric("cloudpush_bridge_duplicates_dropped_total"), 0)

    def test_new_epoch_restarts_the_stream(self):
        cid = h.uniq("newepoch")
        s = self.connect(cid)
        for i in range(1, 4):
            self.append(cid, i, {"n": i})
        self.assert_offsets(self.business(s, 3), [1, 2, 3])
        # Redis lost everything: the next append starts a new epoch at 1.
        # The bus lost that first message; the second reveals the gap,
        # which the new epoch's history fills.
        self.resp.pipeline(("FLUSHALL",))
        self.store(cid, 1, {"n": 1}, epoch="newepoch00000001")
        self.append(cid, 2, {"n": 2}, epoch="newepoch00000001")
        msgs = self.business(s, 2)
        self.assert_offsets(msgs, [1, 2])
        self.assertEqual({m["epoch"] for m in msgs}, {"newepoch00000001"})
        # A reconnect with the old epoch is told it missed messages.
        s2 = self.connect(cid, since=3, epoch=EPOCH)
        self.assertIs(s2.connection["recovered"], False)
        self.assertEqual(s2.connection["epoch"], "newepoch00000001")
        self.assertEqual(s2.connection["offset"], 2)

    def test_unknown_stream_takes_a_lower_offset_arriving_second(self):
        # The first live messages of a stream the bridge does not know yet
        # wait for its position (the greeting read it): 2 arriving before
        # 1 is no reason to drop 1 as a duplicate.
        cid = h.uniq("unknown")
        s = self.connect(cid)
        self.assertEqual(s.connection["offset"], 0)
        e1 = self.store(cid, 1, {"n": 1})
        self.append(cid, 2, {"n": 2})
        self.publish(cid, e1)
        self.assert_offsets(self.business(s, 2), [1, 2])
        h.ws_expect_nothing(self, s.ws, 0.3)
        self.assertEqual(self.bridge.metric("cloudpush_bridge_gap_total"), 0)

    def test_an_epoch_left_is_never_taken_back(self):
        cid = h.uniq("left")
        s = self.connect(cid)
        for i in range(1, 3):
            self.append(cid, i, {"n": i})
        self.assert_offsets(self.business(s, 2), [1, 2])
        self.resp.pipeline(("FLUSHALL",))
        new = "leftepoch0000001"
        self.append(cid, 1, {"n": 1}, epoch=new)
        self.assert_offsets(self.business(s, 1), [1])
        # A late message of the old epoch: dropped, the stream stays in
        # the new one (before, it flipped back and numbered from there).
        self.publish(cid, envelope(3, {"n": 3}))
        self.append(cid, 2, {"n": 2}, epoch=new)
        msgs = self.business(s, 1)
        self.assert_offsets(msgs, [2])
        self.assertEqual(msgs[0]["epoch"], new)
        h.ws_expect_nothing(self, s.ws, 0.3)

    def test_a_late_message_of_an_older_unseen_epoch_is_dropped(self):
        # The bridge learned the stream in its current epoch from the
        # history; a late message of the history before it (an epoch this
        # bridge never saw) is checked with Redis and dropped, not taken
        # for a new epoch.
        cid = h.uniq("unseen")
        cur = "currentepoch0001"
        self.store(cid, 1, {"n": 1}, epoch=cur)
        s = self.connect(cid)
        self.assertEqual((s.connection["epoch"], s.connection["offset"]), (cur, 1))
        self.publish(cid, envelope(5, {"n": 5}))  # EPOCH: the lost history
        self.append(cid, 2, {"n": 2}, epoch=cur)
        msgs = self.business(s, 1)
        self.assert_offsets(msgs, [2])
        self.assertEqual(msgs[0]["epoch"], cur)
        self.append(cid, 3, {"n": 3}, epoch=cur)
        self.assert_offsets(self.business(s, 1), [3])
        h.ws_expect_nothing(self, s.ws, 0.3)
        self.assertEqual(self.bridge.metric("cloudpush_bridge_gap_total"), 0)

    def test_a_session_floor_is_kept_under_its_epoch(self):
        # A session greeted in an epoch the bridge's stream has not reached
        # yet (its live messages are late) keeps its position there: the
        # late messages its CONNECTION covered are not sent to it.
        cid = h.uniq("floor")
        s1 = self.connect(cid)
        self.append(cid, 1, {"n": 1})
        self.assert_offsets(self.business(s1, 1), [1])
        self.resp.pipeline(("FLUSHALL",))
        new = "floorepoch000001"
        late = [self.store(cid, i, {"n": i}, epoch=new) for i in (1, 2)]
        s2 = self.connect(cid)
        self.assertEqual((s2.connection["epoch"], s2.connection["offset"]), (new, 2))
        for env in late:
            self.publish(cid, env)
        self.assert_offsets(self.business(s1, 2), [1, 2])  # s1 is in the old epoch: needs them
        self.append(cid, 3, {"n": 3}, epoch=new)
        self.assert_offsets(self.business(s2, 1), [3])
        self.assert_offsets(self.business(s1, 1), [3])

    def test_since_above_the_last_offset_is_not_recovered(self):
        # A position the stream never reached (sent without its epoch, from
        # a history that was lost): recovered:false, never a silent "true".
        cid = h.uniq("above")
        for i in range(1, 4):
            self.store(cid, i, {"n": i})
        s = self.connect(cid, since=9)
        self.assertIs(s.connection["recovered"], False, s.connection)
        self.assertEqual(s.connection["offset"], 3)
        s2 = self.connect(cid, since=3)
        self.assertIs(s2.connection["recovered"], True, s2.connection)

    def test_catch_up_after_the_broker_lost_messages(self):
        cid = h.uniq("catch")
        s = self.connect(cid)
        self.append(cid, 1, {"n": 1})
        self.assert_offsets(self.business(s, 1), [1])
        self.append(None, 1, {"n": 1}, epoch="bepochcatch00001")
        self.assert_offsets(self.business(s, 1), [1])
        # The broker dies without saving (SIGKILL): restarted, it has lost
        # the bridge's subscriptions; meanwhile entries stored 2..4 (their
        # publishes went nowhere).
        h.stop_process(self.mosq.proc, sig=signal.SIGKILL)
        self.mosq.stop()
        db = os.path.join(self.mosq.dir, "mosquitto.db")
        if os.path.exists(db):
            os.remove(db)
        for i in range(2, 5):
            self.store(cid, i, {"n": i})
        self.store("*", 2, {"n": 2}, epoch="bepochcatch00001", broadcast=True)
        self.mosq.restart()
        # The socket stayed open: the bridge reads what it missed.
        msgs = self.business(s, 4, timeout=20)
        chan = [m for m in msgs if not m.get("broadcast")]
        bcast = [m for m in msgs if m.get("broadcast")]
        self.assert_offsets(chan, [2, 3, 4])
        self.assert_offsets(bcast, [2])
        self.assertGreaterEqual(self.bridge.metric("cloudpush_bridge_catch_up_messages_total"),
                                4)
        # And live delivery goes on after the resubscription.
        self.pub = self.mqtt_client(self.mosq.port)
        self.append(cid, 5, {"n": 5})
        self.assert_offsets(self.business(s, 1, timeout=10), [5])

    def test_a_bogus_offset_does_not_poison_the_stream(self):
        # Without the broker ACL anyone may publish on d/: an offset far
        # beyond the stream must not make every later message a duplicate.
        cid = h.uniq("bogus")
        s = self.connect(cid)
        self.append(cid, 1, {"n": 1})
        self.assert_offsets(self.business(s, 1), [1])
        bogus = envelope(10 ** 12, {"n": -1})
        self.publish(cid, bogus)
        # The history does not have it: rejected, counted, never delivered.
        h.wait_until(lambda: self.bridge.metric("cloudpush_bridge_unconfirmed_offsets_total",
                                                {"result": "rejected"}) == 1,
                     h.t(10), what="the bogus offset rejected")
        for i in (2, 3):
            self.append(cid, i, {"n": i})
        self.assert_offsets(self.business(s, 2), [2, 3])
        h.ws_expect_nothing(self, s.ws, 0.3)
        self.assertEqual(self.bridge.metric("cloudpush_bridge_gap_total"), 0)
        # Redis down: nothing can confirm it; when its window ends it is
        # delivered as it is, and the stream stays where it was.
        self.resp.close()
        self.redis.stop()
        self.publish(cid, bogus)
        m = s.recv(timeout=10)
        self.assertEqual(m["offset"], 10 ** 12, m)
        self.publish(cid, envelope(4, {"n": 4}))
        self.assert_offsets(self.business(s, 1), [4])
        self.assertEqual(self.bridge.metric("cloudpush_bridge_unconfirmed_offsets_total",
                                            {"result": "delivered"}), 1)
        self.assertEqual(self.bridge.metric("cloudpush_bridge_gap_total"), 0)

    def test_catch_up_is_retried_after_redis_comes_back(self):
        # Redis and the broker both down: the bridge's catch-up after the
        # bus reconnect cannot read the history. It is retried with the
        # backoff until Redis is back, so what the broker lost arrives
        # without waiting for a later live message to show the gap.
        cid = h.uniq("retry")
        s = self.connect(cid)
        self.append(cid, 1, {"n": 1})
        self.assert_offsets(self.business(s, 1), [1])
        self.resp.close()
        self.redis.stop()
        h.stop_process(self.mosq.proc, sig=signal.SIGKILL)
        self.mosq.stop()
        db = os.path.join(self.mosq.dir, "mosquitto.db")
        if os.path.exists(db):
            os.remove(db)
        self.mosq.restart()
        h.wait_until(lambda: self.bridge.metric("cloudpush_bridge_catch_up_total") >= 2,
                     h.t(20), what="the catch-ups after the bus reconnect")
        h.ws_expect_nothing(self, s.ws, 1.0)
        # Redis back (empty, as restarted without persistence); the entries
        # stored 1..4 of the same history meanwhile, their publishes lost.
        self.redis.start()
        self.resp = Resp(self.redis.port)
        self.addCleanup(self.resp.close)
        for i in range(1, 5):
            self.store(cid, i, {"n": i})
        self.assert_offsets(self.business(s, 3, timeout=20), [2, 3, 4])
        self.assertGreaterEqual(self.bridge.metric("cloudpush_bridge_catch_up_retries_total"), 1)
        self.assertEqual(self.bridge.metric("cloudpush_bridge_gap_total"), 0)

    def test_redis_down_live_delivery_goes_on(self):
        cid = h.uniq("down")
        self.store(cid, 1, {"n": 1})
        self.redis.stop()
        s = self.connect(cid, since=0, epoch=EPOCH)
        c = s.connection
        self.assertIs(c["recovered"], False)
        self.assertNotIn("offset", c, "no position is known without Redis")
        # An entry that could not store publishes with "offset":null.
        env = {"messageId": "unstored", "msg": {"n": 0}, "offset": None}
        self.publish(cid, env)
        m = s.recv()
        self.assertEqual(m["messageId"], "unstored")
        self.assertIsNone(m["offset"])
        self.assertEqual(self.bridge.metric("cloudpush_bridge_recovery_total",
                                            {"result": "failed"}), 1)
        # Sequenced messages are delivered too (no history to check gaps
        # against: the window reports what stays missing).
        self.publish(cid, envelope(2, {"n": 2}))
        self.assert_offsets(self.business(s, 1), [2])

    def test_without_a_history_recovery_is_answered_not_recovered(self):
        # A bridge without --redis cannot recover: a client asking must
        # still be told (recovered:false), also when its channel was
        # subscribed already (greeted at once before the fix, silently).
        bare = self.start_bridge(self.mosq, bridge_id="itrecbare")
        cid = h.uniq("bare")
        for query in ({"since": 0}, {"since": 5, "epoch": EPOCH}, {"bsince": 0}):
            s = self.session(bare.port, cid, query=query)
            c = s.connection
            self.assertIs(c.get("recovered"), False, (query, c))
            self.assertNotIn("offset", c)
        s = self.session(bare.port, cid)
        self.assertNotIn("recovered", s.connection, "not asked: not answered")
        self.assertEqual(bare.metric("cloudpush_bridge_recovery_total", {"result": "failed"}), 3)

    def test_invalid_recovery_is_refused_before_the_upgrade(self):
        for query in ("since=abc", "since=-1", "since=1&epoch=bad%20epoch", "epoch=abc",
                      "bsince=1.5", "bepoch=x"):
            status, _, body = h.handshake_error(self.bridge.port,
                                                raw_query="channelId=x&" + query)
            self.assertEqual(status, 400, query)
            self.assertEqual(json.loads(body).get("code"), "invalid_recovery", query)

    def test_flags_and_metrics_are_documented(self):
        out = subprocess.run([h.BRIDGE_BIN, "--help"], capture_output=True, text=True,
                             timeout=10)
        text = out.stdout + out.stderr
        for flag in ("reorder-window-ms", "reorder-max-messages", "recovery-max-messages"):
            self.assertIn("--" + flag, text)
            self.assertIn("CLOUDPUSH_" + flag.upper().replace("-", "_"), text)
        self.connect(h.uniq("metrics"))
        metrics = self.bridge.metrics()
        for name in ("cloudpush_bridge_recovery_messages_total", "cloudpush_bridge_gap_total",
                     "cloudpush_bridge_gap_messages_total", "cloudpush_bridge_gap_fetches_total",
                     "cloudpush_bridge_gap_filled_total",
                     "cloudpush_bridge_duplicates_dropped_total",
                     "cloudpush_bridge_recovery_duplicates_dropped_total",
                     "cloudpush_bridge_catch_up_total", "cloudpush_bridge_catch_up_messages_total",
                     "cloudpush_bridge_catch_up_retries_total",
                     "cloudpush_bridge_history_busy_total", "cloudpush_bridge_history_healthy"):
            self.assertIn("\n" + name + " ", metrics, name)
        self.assertEqual(h.metric_value(metrics, "cloudpush_bridge_history_healthy"), 1)
        with open(os.path.join(os.path.dirname(__file__), "..", "..", "docs",
                               "operations.md")) as f:
            ops = f.read()
        for name in ("cloudpush_bridge_recovery_total", "cloudpush_bridge_gap_total",
                     "cloudpush_bridge_duplicates_dropped_total", "--reorder-window-ms",
                     "--recovery-max-messages", "cloudpush_bridge_catch_up_retries_total"):
            self.assertIn(name, ops)


if __name__ == "__main__":
    unittest.main()
