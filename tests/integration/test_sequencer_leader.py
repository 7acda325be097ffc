"""One sequencer leader (docs/design-delivery.md, section 1): with Redis, the
bridge holding the sequencer lease alone takes what services publish on the
documented topics, through one well-known persistent MQTT session; the
others stand by (healthy) and take over when the lease expires (a crash)
or is given up (a clean stop). So a service's back-to-back publishes to one
channel get offsets in publish order with any number of bridges.

Real mosquitto, redis-server, two bridges, a paho publisher and WebSocket
clients. The leader is SIGKILLed between two bursts: what the service
publishes while no bridge leads waits in the leader session on the broker.
(A SIGKILL in the middle of a batch can lose what the dead leader had
received but not yet stored: Paho acknowledges a QoS 1 message before the
application sees it, docs/design-delivery.md "Acknowledging service
messages"; that window is not what this file tests.)"""

import json
import os
import signal
import socket
import sys
import threading
import time
import unittest

import harness as h

LEASE_MS = 1500


def business(session, n, timeout):
    got = []
    deadline = time.monotonic() + h.t(timeout)
    while len(got) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("%s: %d of %d messages within %.0fs; last %r" % (
                session.channel_id, len(got), n, h.t(timeout), got[-3:]))
        m = session.recv(left / h.SLOW)
        if m.get("msgType") == h.MSG_BUSINESS:
            got.append(m)
    return got


class SequencerLeaderTest(h.IntegrationTest):

    def setUp(self):
        super().setUp()
        self.mosq = self.start_mosquitto()
        self.redis = self.start_redis()
        args = ["--sequencer-lease-ms=%d" % LEASE_MS]
        self.bridges = [self.start_bridge(self.mosq, bridge_id="itlead-%s" % x, redis=self.redis,
                                          args=args) for x in "ab"]

    def leaders(self):
        return [b for b in self.bridges
                if b.returncode is None and b.metric("cloudpush_sequencer_leader") == 1]

    def one_leader(self, timeout=10):
        """The one leader, once it takes service messages: what a service
        publishes before the leader's SUBSCRIBE has no subscriber on a fresh
        broker. A probe channel's message stored in Redis proves it."""
        leader = h.wait_until(
            lambda: (lambda l: l[0] if len(l) == 1 else None)(self.leaders()),
            h.t(timeout), 0.1, "exactly one sequencer leader")
        probe = h.uniq("probe")

        def probe_stored():
            h.mqtt_publish(self.mosq.port, h.topic("client", probe), {"msg": {}})
            # (an AssertionError here: the outer wait publishes again)
            return h.wait_until(lambda: self.redis.cli("GET", "cloudpush:h:{%s}:seq" % probe)
                                not in ([], [""]), 0.5, 0.05, "the probe stored")
        h.wait_until(probe_stored, h.t(timeout), 0.1, "the leader takes service messages")
        return leader

    def publish_burst(self, publisher, cid, numbers):
        infos = [publisher.publish(h.topic("client", cid), {"msg": {"n": n}}, wait=False)
                 for n in numbers]
        for info in infos:
            publisher.wait_published(info, 20)

    def assert_in_order(self, got, first_n):
        self.assertEqual([m["msg"]["n"] for m in got], list(range(first_n, first_n + len(got))),
                         "not in publish order")
        offsets = [m["offset"] for m in got]
        self.assertEqual(offsets, list(range(offsets[0], offsets[0] + len(got))),
                         "offsets not consecutive")
        self.assertEqual(len({m["epoch"] for m in got}), 1)

    def test_standby_is_healthy_and_the_lease_is_in_redis(self):
        leader = self.one_leader()
        [standby] = [b for b in self.bridges if b is not leader]
        self.assertEqual(standby.metric("cloudpush_sequencer_leader"), 0)
        st, body = standby.health()
        self.assertEqual((st, body["sequencer"]), (200, True), body)
        # One lease per broker: cloudpush:lease:sequencer:<the broker's identity>.
        [key] = self.redis.cli("KEYS", "cloudpush:lease:sequencer:*")
        holder = self.redis.cli("GET", key)
        # The holder's token names the leading bridge (and its worker process, -wN).
        self.assertRegex(holder[0] if holder else "",
                         r"^cloudpush-seq-%s(-w\d+)?/" % leader.id)
        self.assertGreater(int(self.redis.cli("PTTL", key)[0]), 0)
        # A standby's own clients' pushes are sequenced by it, in-process.
        cid = h.uniq("standby-push")
        s = self.session(leader.port, cid)
        sender = self.session(standby.port, h.uniq("sender"))
        sender.send({"msgType": 1, "to": [cid], "msg": {"n": 1}, "messageId": "via-standby"})
        [m] = business(s, 1, 5)
        self.assertEqual((m["messageId"], m["offset"]), ("via-standby", 1), m)

    def test_publish_order_kept_across_a_leader_crash(self):
        leader = self.one_leader()
        [standby] = [b for b in self.bridges if b is not leader]
        cid = h.uniq("order")
        s = self.session(standby.port, cid)
        publisher = self.mqtt_client(self.mosq.port)
        self.publish_burst(publisher, cid, range(1, 501))
        first = business(s, 500, 30)
        self.assert_in_order(first, 1)

        leader.stop(sig=signal.SIGKILL, check=False)
        # Published while no bridge leads: queued in the leader session.
        self.publish_burst(publisher, cid, range(501, 1001))
        t0 = time.monotonic()
        rest = business(s, 500, 30)
        self.assert_in_order(first + rest, 1)
        self.assertIs(self.one_leader(), standby)
        self.assertGreaterEqual(standby.metric("cloudpush_sequencer_leader_changes_total"), 1)
        # Taken over within the lease and a tick (generous under load).
        self.assertLess(time.monotonic() - t0, h.t(LEASE_MS / 1000 * 4 + 5))

    def test_leader_killed_mid_burst_stores_and_delivers_nothing_twice(self):
        """SIGKILL while a burst of 1000 publishes is in flight. The broker
        redelivers (DUP=1, same packet id) to the next leader what the dead
        one had not acknowledged; what it had stored already gets its
        recorded messageId back and is a duplicate, not a new message. What
        Paho acknowledged but the dead leader never stored is lost (the
        documented window): counted and reported, not asserted away. What it
        stored but never published arrives as a gap the next message reveals
        (one is published after the burst)."""
        total = 1000
        leader = self.one_leader()
        [standby] = [b for b in self.bridges if b is not leader]
        cid = h.uniq("midburst")
        s = self.session(standby.port, cid)
        publisher = self.mqtt_client(self.mosq.port)
        infos, failures = [], []

        def burst():
            try:
                for n in range(1, total + 1):
                    infos.append(publisher.publish(h.topic("client", cid), {"msg": {"n": n}},
                                                   wait=False))
                    if n % 10 == 0:
                        time.sleep(0.004)  # a burst lasting ~0.5s: the kill lands inside
            except Exception as e:  # reported by the main thread
                failures.append(e)

        sender = threading.Thread(target=burst, daemon=True)
        sender.start()
        got = business(s, 100, 30)  # the leader is sequencing the burst now
        leader.stop(sig=signal.SIGKILL, check=False)
        killed_after = len(infos)
        sender.join(h.t(30))
        self.assertFalse(sender.is_alive(), "the burst did not end")
        self.assertEqual(failures, [])
        for info in infos:
            publisher.wait_published(info, 20)
        self.assertIs(self.one_leader(), standby)

        # Everything arrives within a bounded time after the takeover: read
        # until all of it came, or nothing more came for a while.
        deadline = time.monotonic() + h.t(60)
        quiet_until = time.monotonic() + h.t(8)
        while len(got) < total and time.monotonic() < min(deadline, quiet_until):
            try:
                m = s.recv(1.0 / h.SLOW)
            except Exception:  # a timeout: nothing for a second
                continue
            if m.get("msgType") == h.MSG_BUSINESS:
                got.append(m)
                quiet_until = time.monotonic() + h.t(8)

        # What the dead leader stored but never published came too, with no
        # later message to reveal it: the new leader announced the takeover
        # on d/resync and the bridge read the stream again.
        stored = [json.loads(l)["msg"]["n"]
                  for l in self.redis.cli("XRANGE", "cloudpush:h:{%s}:hist" % cid, "-", "+")
                  if l.startswith("{")]
        self.assertEqual(sorted(set(stored) - {m["msg"]["n"] for m in got}), [],
                         "stored but not delivered before any later message")
        self.assertGreaterEqual(standby.metric("cloudpush_sequencer_resyncs_total"), 1)
        self.assertGreaterEqual(standby.metric("cloudpush_bridge_bus_messages_total",
                                               {"kind": "resync"}), 1)
        # The channel goes on after the burst.
        publisher.wait_published(publisher.publish(h.topic("client", cid),
                                                   {"msg": {"n": total + 1}}, wait=False), 20)
        deadline = time.monotonic() + h.t(30)
        while (total + 1) not in [m["msg"]["n"] for m in got] and time.monotonic() < deadline:
            try:
                m = s.recv(1.0 / h.SLOW)
            except Exception:
                continue
            if m.get("msgType") == h.MSG_BUSINESS:
                got.append(m)
        self.assertIn(total + 1, [m["msg"]["n"] for m in got], "the message after the burst")
        got = [m for m in got if m["msg"]["n"] <= total]

        ns = [m["msg"]["n"] for m in got]
        offsets = [m["offset"] for m in got]
        mids = [m["messageId"] for m in got]
        self.assertEqual(len(set(ns)), len(ns), "a message delivered twice: %r" % [
            n for n in set(ns) if ns.count(n) > 1][:10])
        self.assertEqual(len(set(mids)), len(mids), "a messageId delivered twice")
        self.assertEqual(len(set(offsets)), len(offsets), "an offset delivered twice")
        self.assertEqual(ns, sorted(ns), "not in publish order")
        self.assertEqual(offsets, sorted(offsets), "offsets out of order")
        self.assertEqual(len({m["epoch"] for m in got}), 1)
        # Stored once each: the stream holds no message twice.
        stored = [json.loads(l)["msg"]["n"]
                  for l in self.redis.cli("XRANGE", "cloudpush:h:{%s}:hist" % cid, "-", "+")
                  if l.startswith("{")]
        self.assertEqual(len(set(stored)), len(stored), "a message stored twice: %r" % [
            n for n in set(stored) if stored.count(n) > 1][:10])
        self.assertEqual(sorted(set(stored) - set(ns) - {total + 1}), [],
                         "stored but not delivered")
        missing = total - len(ns)
        redelivered = standby.metric("cloudpush_sequencer_redeliveries_total")
        spilled = standby.metric("cloudpush_bridge_reorder_spilled_total")
        sys.stderr.write("\nmid-burst kill after %d publishes: %d of %d delivered, %d lost "
                         "in the acknowledge-before-processing window, %d redeliveries "
                         "recognised, %d read back after a full reorder buffer\n"
                         % (killed_after, len(ns), total, missing, redelivered, spilled))
        # The window is a batch or so, never a large part of the burst.
        self.assertLess(missing, total // 2, "lost too many: %d" % missing)

    def test_clean_stop_hands_over_before_the_lease_expires(self):
        for b in self.bridges:
            b.stop()
        long_lease = ["--sequencer-lease-ms=60000"]
        a = self.start_bridge(self.mosq, bridge_id="itlead-c", redis=self.redis,
                              args=long_lease)
        b = self.start_bridge(self.mosq, bridge_id="itlead-d", redis=self.redis,
                              args=long_lease)
        self.bridges = [a, b]
        leader = self.one_leader(10)  # the clean stops above released the lease
        [standby] = [x for x in self.bridges if x is not leader]
        cid = h.uniq("handover")
        s = self.session(standby.port, cid)
        publisher = self.mqtt_client(self.mosq.port)
        self.publish_burst(publisher, cid, range(1, 101))
        t0 = time.monotonic()
        leader.stop()
        self.publish_burst(publisher, cid, range(101, 201))
        got = business(s, 200, 30)
        self.assert_in_order(got, 1)
        self.assertIs(self.one_leader(), standby)
        self.assertLess(time.monotonic() - t0, h.t(20), "the lease was not given up")



class BlackholeProxy:
    """A TCP proxy to the broker. blackhole(links) stops passing what the
    client sends on those links (read and dropped: its PUBACKs never
    arrive) while the broker's side still reaches it; cut(links) ends them.
    Links are numbered in accept order (links() is how many so far)."""

    def __init__(self, upstream_port):
        self.upstream = upstream_port
        self.conns = []  # [down, up, hole]
        self.lock = threading.Lock()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.upstream))
            hole = threading.Event()
            with self.lock:
                self.conns.append([down, up, hole])
            threading.Thread(target=self.pump, args=(down, up, hole), daemon=True).start()
            threading.Thread(target=self.pump, args=(up, down, None), daemon=True).start()

    def pump(self, src, dst, hole):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not (hole and hole.is_set()):
                    dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def links(self):
        with self.lock:
            return len(self.conns)

    def blackhole(self, links):
        with self.lock:
            for i in links:
                self.conns[i][2].set()

    def cut(self, links):
        with self.lock:
            for i in links:
                for s in self.conns[i][:2]:
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

    def close(self):
        self.listener.close()
        self.cut(range(self.links()))


class LostPubackTest(h.IntegrationTest):
    """The redelivery the mid-burst kill above can only hope for, made
    certain: the leader stores a service message (no messageId of its own),
    its PUBACK never reaches the broker, the leader dies. The broker sends
    the message again (DUP=1, same packet id) to the next leader, which
    finds the messageId recorded under that packet id: a duplicate with the
    stored offset, not a second message."""

    def test_redelivered_message_keeps_its_id_and_offset(self):
        mosq = self.start_mosquitto()
        redis = self.start_redis()
        proxy = BlackholeProxy(mosq.port)
        self.addCleanup(proxy.close)
        # Both through the proxy: one broker URL, so one lease.
        url = "tcp://127.0.0.1:%d" % proxy.port
        args = ["--sequencer-lease-ms=%d" % LEASE_MS, "--workers", "1"]
        first = self.start_bridge(url, bridge_id="itdup-a", redis=redis, args=args)
        h.wait_until(lambda: first.metric("cloudpush_sequencer_leader") == 1, h.t(10),
                     what="the first bridge leads")
        h.wait_until(lambda: first.health()[0] == 200, h.t(10), what="the first bridge ready")
        firsts = range(proxy.links())
        second = self.start_bridge(url, bridge_id="itdup-b", redis=redis, args=args)
        self.assertEqual(second.metric("cloudpush_sequencer_leader"), 0)
        cid = h.uniq("dup")
        s = self.session(second.port, cid)

        proxy.blackhole(firsts)
        h.mqtt_publish(mosq.port, h.topic("client", cid), {"msg": {"once": True}})
        # The leader stored it (its Redis link is direct) and recorded its
        # messageId under the packet id; its PUBACK and republish are lost.
        seq = "cloudpush:h:{%s}:seq" % cid
        h.wait_until(lambda: redis.cli("GET", seq) == ["1"], h.t(10), what="stored once")
        ids = redis.cli("HGETALL", "cloudpush:h:{%s}:ids" % cid)
        record = dict(zip(ids[0::2], ids[1::2]))
        [pid] = [f for f in record if f.startswith("p:sequencer:")]
        [mid] = [f for f in record if f.startswith("m:")]
        self.assertEqual("m:" + record[pid], mid, record)
        first.stop(sig=signal.SIGKILL, check=False)
        proxy.cut(firsts)

        # The standby leads after the lease and gets the message again.
        h.wait_until(lambda: second.metric("cloudpush_sequencer_leader") == 1,
                     h.t(LEASE_MS / 1000 * 4 + 5), what="the standby leads")
        [m] = business(s, 1, 15)
        self.assertEqual((m["msg"], m["offset"]), ({"once": True}, 1), m)
        h.wait_until(lambda: second.metric("cloudpush_sequencer_redeliveries_total") == 1,
                     h.t(5), what="counted as a redelivery")
        # Stored once, under the id the client saw.
        self.assertEqual(redis.cli("GET", seq), ["1"])
        self.assertEqual(redis.cli("XLEN", "cloudpush:h:{%s}:hist" % cid), ["1"])
        entry = redis.cli("XRANGE", "cloudpush:h:{%s}:hist" % cid, "-", "+")
        stored = json.loads(entry[-1])
        self.assertEqual(stored["messageId"], m["messageId"])
        h.ws_expect_nothing(self, s.ws, 0.5)


if __name__ == "__main__":
    unittest.main()


class BrokerIdentityTest(h.IntegrationTest):
    """One leader per broker however its URL is spelt: the lease is named
    after the broker's identity, a retained message the sequencers agree on,
    not after the URL. Here one bridge reaches the broker directly and the
    other through a TCP proxy (another URL): before, that made two leases,
    two leaders fighting for one session, and messages numbered twice."""

    def retained_id(self, mosq):
        c = self.mqtt_client(mosq.port)
        c.subscribe(h.topic("sequencer", "broker"))
        [(_, payload)] = c.wait_messages(1, timeout=h.t(10))
        c.close()
        return payload.decode()

    @staticmethod
    def log_count(service, text):
        with open(service.log_path, "rb") as f:
            return f.read().count(text.encode())

    def lease_keys(self, redis):
        return redis.cli("KEYS", "cloudpush:lease:sequencer:*")

    def test_two_urls_of_one_broker_elect_one_leader(self):
        mosq = self.start_mosquitto()
        redis = self.start_redis()
        proxy = BlackholeProxy(mosq.port)
        self.addCleanup(proxy.close)
        args = ["--sequencer-lease-ms=%d" % LEASE_MS, "--workers", "1"]
        direct = self.start_bridge(mosq, bridge_id="itid-a", redis=redis, args=args)
        proxied = self.start_bridge("tcp://127.0.0.1:%d" % proxy.port, bridge_id="itid-b",
                                    redis=redis, args=args)
        bridges = [direct, proxied]

        def leaders():
            return [b for b in bridges if b.metric("cloudpush_sequencer_leader") == 1]
        h.wait_until(lambda: len(leaders()) == 1, h.t(10), 0.1, "one leader")
        broker = self.retained_id(mosq)
        self.assertRegex(broker, r"^[0-9a-f]{32}$")
        self.assertEqual(self.lease_keys(redis), ["cloudpush:lease:sequencer:" + broker])
        for b in bridges:
            self.assertGreater(self.log_count(b, "the broker's identity is " + broker), 0, b.id)
        # Stable: several lease periods later still one leader, no change.
        changes = sum(b.metric("cloudpush_sequencer_leader_changes_total") for b in bridges)
        time.sleep(LEASE_MS / 1000 * 3)
        self.assertEqual(len(leaders()), 1)
        self.assertEqual(
            sum(b.metric("cloudpush_sequencer_leader_changes_total") for b in bridges), changes)

        # A service's messages are numbered once, in order.
        cid = h.uniq("ident")
        s = self.session(proxied.port, cid)
        publisher = self.mqtt_client(mosq.port)
        for n in range(1, 31):
            publisher.publish(h.topic("client", cid), json.dumps({"msg": {"n": n}}))
        got = business(s, 30, 15)
        self.assertEqual([m["msg"]["n"] for m in got], list(range(1, 31)))
        self.assertEqual([m["offset"] for m in got], list(range(1, 31)))
        self.assertEqual(redis.cli("GET", "cloudpush:h:{%s}:seq" % cid), ["30"])

        # A broker restarted without its store has no identity: the bridges
        # claim the one they know, and the lease stays where it was.
        claims = sum(self.log_count(b, "claiming " + broker) for b in bridges)
        mosq.stop()
        os.remove(os.path.join(mosq.dir, "mosquitto.db"))
        mosq.start()
        # A claim after the restart (the bridges reconnect with a back-off of
        # a few seconds), not the first one of the test.
        h.wait_until(lambda: sum(self.log_count(b, "claiming " + broker) for b in bridges)
                     > claims, h.t(30), 0.2, "the known identity claimed again")
        self.assertEqual(self.retained_id(mosq), broker)
        h.wait_until(lambda: len(leaders()) == 1, h.t(15), 0.2, "one leader after the restart")
        self.assertEqual(self.lease_keys(redis), ["cloudpush:lease:sequencer:" + broker])
