"""Issue 14: one bridge on every core (--workers N). A master process forks
N workers that listen on the same port (SO_REUSEPORT); the bridge stays one
bridge: one id and one record in Redis, limits and /metrics for the whole,
SIGTERM drains every worker, a worker that dies is replaced. Real mosquitto,
redis-server, bridge processes and WebSocket clients."""

import json
import os
import re
import signal
import threading
import time
import unittest

import harness as h
from test_acks_drain import MSG_RECONNECT, DrainSession, read_until_close

WORKERS = ["--workers", "2"]


def worker_counts(bridge):
    text = bridge.metrics()
    return {w: h.metric_value(text, "cloudpush_bridge_worker_connections", {"worker": w})
            for w in ("1", "2")}


def worker_pids(bridge):
    """The master's children (the workers), from /proc."""
    pid = bridge.proc.pid
    with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
        return [int(p) for p in f.read().split()]


def log_text(service):
    with open(service.log_path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def broadcast(mosq, mid):
    h.mqtt_publish(mosq.port, h.topic("broadcast"), json.dumps({"messageId": mid, "msg": {"m": mid}}))


def unicast(mosq, cid, mid):
    h.mqtt_publish(mosq.port, h.topic("client", cid), json.dumps({"messageId": mid, "msg": {"m": mid}}))


class WorkersTest(h.IntegrationTest):

    def stack(self, n, bridge_id, args=()):
        mosq = self.start_mosquitto()
        redis = self.start_redis()
        bridge = self.start_bridge(mosq, bridge_id=bridge_id, redis=redis,
                                   args=WORKERS + list(args))
        # Every worker connected (healthz is 200 only then).
        h.wait_until(lambda: bridge.healthz()[1].get("workers_up") == 2, h.t(10),
                     what="both workers up")
        sessions = [self.session(bridge.port, h.uniq("%s%d-" % (bridge_id, i)))
                    for i in range(n)]
        return mosq, redis, bridge, sessions

    def wait_counts(self, bridge, redis, bridge_id, n):
        h.wait_until(lambda: bridge.metric("cloudpush_bridge_connections") == n, h.t(5),
                     what="/metrics connections == %d" % n)
        h.wait_until(lambda: redis.cli("HGET", "cloudpush:bridge:%s" % bridge_id,
                                       "connections") == [str(n)], h.t(5),
                     what="Redis connections == %d" % n)
        h.wait_until(lambda: redis.cli("HLEN", "cloudpush:bridge:%s:sessions" % bridge_id)
                     == [str(n)], h.t(5), what="Redis sessions == %d" % n)

    def test_sessions_spread_and_every_message_reaches_its_clients_once(self):
        n = 40
        mosq, redis, bridge, sessions = self.stack(n, "itwk")
        # Both workers hold sessions: the kernel spread the connections.
        counts = worker_counts(bridge)
        self.assertEqual(sum(counts.values()), n, counts)
        self.assertGreater(counts["1"], 0, counts)
        self.assertGreater(counts["2"], 0, counts)
        # The whole bridge, whichever worker answers: /metrics, /healthz, Redis.
        self.wait_counts(bridge, redis, "itwk", n)
        for _ in range(4):
            st, body = bridge.healthz()
            self.assertEqual(st, 200, body)
            self.assertEqual(body["connections"], n, body)
            self.assertEqual(body["workers"], 2, body)
        self.assertEqual(redis.cli("ZRANGE", "cloudpush:bridges", "0", "-1"), ["itwk"])
        # A broadcast reaches every client exactly once.
        broadcast(mosq, "bc-1")
        for s in sessions:
            m = s.recv_type(h.MSG_BUSINESS, timeout=h.t(5))
            self.assertEqual(m["messageId"], "bc-1")
        # A unicast reaches its client wherever it is, and only it.
        for i, s in enumerate(sessions[:10]):
            unicast(mosq, s.channel_id, "uni-%d" % i)
        for i, s in enumerate(sessions[:10]):
            m = s.recv_type(h.MSG_BUSINESS, timeout=h.t(5))
            self.assertEqual(m["messageId"], "uni-%d" % i)
        for s in sessions:
            h.ws_expect_nothing(self, s.ws, 0.05)
        # Counters are the sum over the workers (snapshots: within a second).
        h.wait_until(lambda: bridge.metric("cloudpush_bridge_connections_accepted_total") == n,
                     h.t(5), what="accepted_total summed")
        h.wait_until(lambda: bridge.metric("cloudpush_bridge_deliveries_total") == n + 10,
                     h.t(5), what="deliveries summed over workers")
        self.assertEqual(bridge.metric("cloudpush_bridge_workers"), 2)
        # Sessions that end leave the counts everywhere.
        for s in sessions[:15]:
            s.close()
        self.wait_counts(bridge, redis, "itwk", n - 15)

    def test_presence_counts_are_per_worker_and_sum_to_the_channels_sessions(self):
        n = 16
        mosq = self.start_mosquitto()
        bridge = self.start_bridge(mosq, bridge_id="itwkp", args=WORKERS)
        h.wait_until(lambda: bridge.healthz()[1].get("workers_up") == 2, h.t(10),
                     what="both workers up")
        cid = h.uniq("wkpres")
        sub = self.subscriber(mosq.port, h.topic("presence", cid))
        sessions = [self.session(bridge.port, cid) for _ in range(n)]
        last = {}

        def follow(event, count):
            # In arrival order (one worker's events are in order): each
            # worker's last count.
            def events():
                out = []
                with sub.cond:
                    msgs = list(sub.messages)
                for _, p in msgs:
                    ev = json.loads(p)
                    if ev.get("event") == event:
                        out.append(ev)
                return out
            h.wait_until(lambda: len(events()) >= count, h.t(10),
                         what="%d %s events" % (count, event))
            for ev in events():
                self.assertEqual(ev["bridge"], "itwkp", ev)
                self.assertIn(ev.get("worker"), (1, 2), ev)
                last[ev["worker"]] = ev["sessions"]

        follow("connect", n)
        # The kernel spread one channel's sessions over both workers (all 16
        # on one: 2 in 65536), and the per-worker counts add up.
        self.assertEqual(sorted(last), [1, 2], last)
        self.assertEqual(sum(last.values()), n, last)
        for s in sessions:
            s.close()
        follow("disconnect", n)
        self.assertEqual(last, {1: 0, 2: 0})

    def test_presence_events_can_be_turned_off(self):
        """--presence-events=false: sessions come and go without an event;
        a bridge with the default, on the same broker, still publishes."""
        mosq = self.start_mosquitto()
        quiet = self.start_bridge(mosq, bridge_id="itwkq", args=["--presence-events=false"])
        loud = self.start_bridge(mosq, bridge_id="itwkl")
        sub = self.subscriber(mosq.port, h.topic("presence", "+"))
        a, b = h.uniq("quiet"), h.uniq("loud")
        s = self.session(quiet.port, a)
        s.close()
        h.wait_until(lambda: quiet.metric("cloudpush_bridge_connections") == 0, h.t(10),
                     what="the quiet session to end")
        s = self.session(loud.port, b)
        s.close()
        # The loud bridge's events come after whatever the quiet one sent.
        _, ev = sub.wait_json(lambda o: o.get("event") == "disconnect")
        self.assertEqual((ev["channelId"], ev["bridge"]), (b, "itwkl"), ev)
        with sub.cond:
            got = [json.loads(p) for _, p in sub.messages]
        self.assertEqual([(e["event"], e["channelId"]) for e in got],
                         [("connect", b), ("disconnect", b)], got)

    def test_presence_qos(self):
        """Presence events go out at QoS 0 by default; with --presence-qos 1
        the broker keeps them for a service's persistent session while it
        is away, and hands them over when it comes back."""
        mosq = self.start_mosquitto()
        q0 = self.start_bridge(mosq, bridge_id="itwkp0")
        q1 = self.start_bridge(mosq, bridge_id="itwkp1", args=["--presence-qos", "1"])
        away_id = "it-away-" + os.urandom(4).hex()
        away = h.MqttClient(mosq.port, client_id=away_id, clean_session=False)
        self.assertEqual(away.subscribe(h.topic("presence", "+")), 1)
        away.close()
        live = self.subscriber(mosq.port, h.topic("presence", "+"))
        a, b = h.uniq("pq0-"), h.uniq("pq1-")
        for i, (bridge, cid) in enumerate(((q0, a), (q1, b))):
            self.session(bridge.port, cid).close()
            live.wait_messages(2 * (i + 1))  # both events, before the other bridge's
        with live.cond:
            seen = [(json.loads(p)["event"], json.loads(p)["channelId"], q)
                    for (_, p), q in zip(live.messages, live.qos)]
        self.assertEqual(seen, [("connect", a, 0), ("disconnect", a, 0),
                                ("connect", b, 1), ("disconnect", b, 1)], seen)
        # Back: what the broker kept comes first, then a marker published now.
        back = self.mqtt_client(mosq.port, client_id=away_id, clean_session=False)
        marker = h.topic("presence", h.uniq("marker-"))
        h.mqtt_publish(mosq.port, marker, b"{}")
        back.wait_messages(1, marker)
        with back.cond:
            kept = [json.loads(p).get("event", "marker") + ":" + json.loads(p).get("channelId", "")
                    for _, p in back.messages]
        self.assertEqual(kept, ["connect:" + b, "disconnect:" + b, "marker:"], kept)

    def test_port_taken_is_refused_and_a_restart_after_a_crash_waits_for_it(self):
        mosq = self.start_mosquitto()
        bridge = self.start_bridge(mosq, bridge_id="itwkport", args=WORKERS)
        sessions = [self.session(bridge.port, h.uniq("port%d-" % i)) for i in range(6)]
        # A second bridge on that port (SO_REUSEPORT would let it share)
        # is refused after its wait.
        other = h.Bridge(self.dir, mosq.url, bridge_id="itwkport2", port=bridge.port,
                         args=WORKERS)
        self._logs.append(other.log_path)
        self.addCleanup(lambda: other.stop(check=False))
        other.start(wait=False)
        self.assertEqual(other.proc.wait(h.t(15)), 1)
        with open(other.log_path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        self.assertIn("is in use: waiting up to 5 s", text)
        self.assertIn("cannot listen on 127.0.0.1:%d: the address is in use" % bridge.port, text)
        # The master SIGKILLed: its workers follow it, and a restart at once
        # (a supervisor's) comes up on the port.
        bridge.stop(sig=signal.SIGKILL, check=False)
        bridge.start()
        h.wait_until(lambda: bridge.healthz()[1].get("workers_up") == 2, h.t(10),
                     what="both workers up again")
        self.session(bridge.port, h.uniq("port-after"))
        del sessions

    def test_limits_are_the_whole_bridges(self):
        mosq = self.start_mosquitto()
        bridge = self.start_bridge(mosq, bridge_id="itwklim",
                                   args=WORKERS + ["--max-connections", "12",
                                                   "--max-connections-per-ip", "10"])
        h.wait_until(lambda: bridge.healthz()[1].get("workers_up") == 2, h.t(10),
                     what="both workers up")
        held = [self.session(bridge.port, h.uniq("lim%d-" % i)) for i in range(10)]
        counts = worker_counts(bridge)
        self.assertEqual(sum(counts.values()), 10, counts)
        # Per address: the 11th from 127.0.0.1 is refused by whichever worker.
        for _ in range(3):
            with self.assertRaises(h.HandshakeRejected) as cm:
                h.RawWs(bridge.port, h.uniq("lim-over"))
            self.assertEqual(cm.exception.status, 429, cm.exception.body)
        held[0].close()
        h.wait_until(lambda: bridge.metric("cloudpush_bridge_connections") == 9, h.t(5),
                     what="one session fewer")
        held[0] = self.session(bridge.port, h.uniq("lim-again"))
        # The bridge-wide --max-connections (trusted proxy: other addresses).
        bridge2 = self.start_bridge(mosq, bridge_id="itwkmax",
                                    args=WORKERS + ["--max-connections", "6"])
        h.wait_until(lambda: bridge2.healthz()[1].get("workers_up") == 2, h.t(10),
                     what="both workers up")
        more = [self.session(bridge2.port, h.uniq("max%d-" % i)) for i in range(6)]
        h.wait_until(lambda: bridge2.metric("cloudpush_bridge_connections") == 6, h.t(5),
                     what="6 sessions")
        for _ in range(3):
            with self.assertRaises(h.HandshakeRejected) as cm:
                h.RawWs(bridge2.port, h.uniq("max-over"))
            self.assertEqual(cm.exception.status, 503, cm.exception.body)
            self.assertEqual(json.loads(cm.exception.body)["code"], "too_many_connections")
        self.assertEqual(len(more), 6)

    def test_sigterm_drains_every_worker(self):
        n, drain = 12, 3
        mosq = self.start_mosquitto()
        redis = self.start_redis()
        bridge = self.start_bridge(mosq, bridge_id="itwkdrain", redis=redis,
                                   args=WORKERS + ["--drain-seconds", str(drain),
                                                   "--shutdown-grace", "2"])
        h.wait_until(lambda: bridge.healthz()[1].get("workers_up") == 2, h.t(10),
                     what="both workers up")
        sessions = [DrainSession(self, bridge.port, h.uniq("wkd%d-" % i)) for i in range(n)]
        counts = worker_counts(bridge)
        self.assertTrue(counts["1"] > 0 and counts["2"] > 0, counts)
        self.wait_counts(bridge, redis, "itwkdrain", n)
        results = [{} for _ in sessions]
        threads = [threading.Thread(target=read_until_close, args=(s, r, h.t(drain + 6)),
                                    daemon=True) for s, r in zip(sessions, results)]
        for th in threads:
            th.start()
        t0 = time.monotonic()
        bridge.proc.send_signal(signal.SIGTERM)
        h.wait_until(lambda: redis.cli("HGET", "cloudpush:bridge:itwkdrain", "draining")
                     == ["1"], h.t(1.5), 0.05, "draining=1 in the registry record")
        for th in threads:
            th.join(h.t(drain + 7))
        delays = []
        for s, r in zip(sessions, results):
            self.assertNotIn("error", r, r)
            self.assertTrue(r["frames"], s.channel_id)
            rec = r["frames"][0][0]
            self.assertEqual(rec.get("msgType"), MSG_RECONNECT, rec)
            self.assertEqual(r["close"][0], 1012, r)
            delays.append(rec["msg"]["delayMs"])
            self.assertLess(r["close"][2] - t0, drain + h.t(1.5))
        # Paced over the drain across the workers: interleaved, not doubled.
        self.assertEqual(len(set(delays)), n, sorted(delays))
        self.assertEqual(bridge.proc.wait(timeout=h.t(10)), 0)
        # Unregistered once, by the master.
        self.assertEqual(redis.cli("EXISTS", "cloudpush:bridge:itwkdrain"), ["0"])
        self.assertEqual(redis.cli("ZCARD", "cloudpush:bridges"), ["0"])
        log = log_text(bridge)
        self.assertIn("bridge w1 INFO draining", log)
        self.assertIn("bridge w2 INFO draining", log)
        self.assertEqual(log.count("bridge itwkdrain removed from Redis"), 1, log[-3000:])

    def test_killed_worker_is_replaced_and_the_others_keep_delivering(self):
        n = 24
        mosq, redis, bridge, sessions = self.stack(n, "itwkkill")
        self.wait_counts(bridge, redis, "itwkkill", n)
        pids = worker_pids(bridge)
        self.assertEqual(len(pids), 2, pids)
        counts = worker_counts(bridge)
        victim_pid = pids[0]
        m = re.search(r"worker w(\d) started \(pid %d\)" % victim_pid, log_text(bridge))
        self.assertTrue(m, "no start line for pid %d" % victim_pid)
        victim = m.group(1)
        survivors = n - int(counts[victim])
        self.assertGreater(int(counts[victim]), 0, counts)
        os.kill(victim_pid, signal.SIGKILL)
        h.wait_until(lambda: "worker w%s (pid %d) was killed by signal 9" % (victim, victim_pid)
                     in log_text(bridge), h.t(5), what="the master logs the death")
        # Its sessions are gone from the counts and from Redis at once.
        self.wait_counts(bridge, redis, "itwkkill", survivors)
        # The other worker's clients keep receiving (when the killed worker
        # led the sequencer, after the lease passes to another: seconds).
        broadcast(mosq, "after-kill")
        got = 0
        for s in sessions:
            try:
                m = s.recv(timeout=h.t(8) if got < survivors else 0.3)
            except Exception:  # noqa: BLE001 - the killed worker's clients: connection lost
                continue
            if m.get("msgType") == h.MSG_BUSINESS and m.get("messageId") == "after-kill":
                got += 1
        self.assertEqual(got, survivors)
        # Replaced: a new process, up again, and it takes new clients.
        h.wait_until(lambda: len(worker_pids(bridge)) == 2 and victim_pid
                     not in worker_pids(bridge), h.t(5), what="a new worker")
        h.wait_until(lambda: bridge.healthz()[1].get("workers_up") == 2, h.t(10),
                     what="both workers up again")
        self.assertEqual(bridge.metric("cloudpush_bridge_worker_restarts_total",
                                       {"worker": victim}), 1)
        fresh = [self.session(bridge.port, h.uniq("fresh%d-" % i)) for i in range(16)]
        h.wait_until(lambda: worker_counts(bridge)[victim] > 0, h.t(5),
                     what="the new worker holds sessions")
        self.wait_counts(bridge, redis, "itwkkill", survivors + len(fresh))
        broadcast(mosq, "after-restart")
        for s in fresh:
            self.assertEqual(s.recv_type(h.MSG_BUSINESS, timeout=h.t(5))["messageId"],
                             "after-restart")

    def test_sighup_reaches_every_worker(self):
        mosq = self.start_mosquitto()
        level = os.path.join(self.dir, "level")
        with open(level, "w") as f:
            f.write("info\n")
        bridge = self.start_bridge(mosq, bridge_id="itwkhup",
                                   args=WORKERS + ["--log-level-file", level])
        h.wait_until(lambda: bridge.healthz()[1].get("workers_up") == 2, h.t(10),
                     what="both workers up")
        bridge.proc.send_signal(signal.SIGHUP)
        for w in ("w1", "w2"):
            h.wait_until(lambda: re.search(r"bridge %s INFO SIGHUP" % w, log_text(bridge)),
                         h.t(5), what="%s reloads" % w)
        self.assertTrue(bridge.running())
        st, body = bridge.healthz()
        self.assertEqual(st, 200, body)


if __name__ == "__main__":
    unittest.main()
