"""The acceptance test of issue 13: nothing is lost while everything around
the clients fails.

1 000 clients connect through the balancer to two bridges, each keeping its
stream positions and reconnecting with since/epoch (bsince/bepoch for the
broadcast stream), as a real client would. A publisher pushes unicast
messages over the HTTP API at 200/s and broadcasts at 2/s for 60 s
while, one after the other:
  (a) both bridges are restarted with SIGTERM (paced drain, RECONNECT, 1012),
  (b) a bridge is SIGKILLed and started again,
  (c) mosquitto is restarted (down for 2 s).
The HTTP API sends every push inside a delivery batch (--bus-batch 1,
docs/topics.md "d/batch"), the path pushes take under load.
Then, per client: lost 0 (every offset the HTTP API answered for the
client's stream arrives, and every broadcast offset after the client's
first position), no gap in the order of first arrival, duplicates only as
exact repeats of an offset already seen (dropped by the client: counted).

A second test (d) empties Redis (a restart without persistence): every
client whose history is gone learns it, by recovered:false on its next
connect or by a new epoch on its next message. Nothing is silent.

Everything runs on loopback and every phase is bounded in time.
"""

import asyncio
import json
import os
import random
import signal
import sys
import threading
import time
import unittest
import urllib.parse

import websockets

import harness as h

CLIENTS = int(os.environ.get("CLOUDPUSH_CHAOS_CLIENTS", "1000"))
UNICAST_PER_S = 200
BROADCAST_PER_S = 2


class Client:
    """One WebSocket client with its position in both streams."""

    def __init__(self, cid):
        self.cid = cid
        self.pos = {"c": [0, None], "b": [0, None]}  # stream -> [offset, epoch]
        self.first = {}             # stream -> offset when first connected
        self.seen = {"c": [], "b": []}  # offsets in order of first arrival
        self.duplicates = 0
        self.out_of_order = []      # (stream, expected, got)
        self.unstored = 0
        self.connects = 0
        self.recovered_false = 0
        self.epoch_changes = 0
        self.gap_errors = []
        self.reconnect_msgs = 0
        self.closes = {}

    def query(self):
        q = {"channelId": self.cid}
        off, ep = self.pos["c"]
        if ep is not None:
            q.update(since=off, epoch=ep)
        boff, bep = self.pos["b"]
        if bep is not None:
            q.update(bsince=boff, bepoch=bep)
        return urllib.parse.urlencode(q)

    def on_connection(self, env):
        self.connects += 1
        if env.get("recovered") is False:
            self.recovered_false += 1
        for stream, okey, ekey in (("c", "offset", "epoch"), ("b", "boffset", "bepoch")):
            epoch = env.get(ekey)
            if self.pos[stream][1] is None and epoch is not None:
                # First position: what came before this client is not its.
                self.pos[stream] = [env.get(okey) or 0, epoch]
                self.first.setdefault(stream, env.get(okey) or 0)
            elif env.get("recovered") is False and epoch is not None:
                # Told it missed messages: start again from now.
                self.pos[stream] = [env.get(okey) or 0, epoch]

    def on_business(self, env):
        stream = "b" if env.get("broadcast") else "c"
        off = env.get("offset")
        if off is None:
            self.unstored += 1
            return
        last, epoch = self.pos[stream]
        if epoch is not None and env.get("epoch") != epoch:
            self.epoch_changes += 1
            self.pos[stream] = [off, env.get("epoch")]
            self.seen[stream].append(("epoch", env.get("epoch")))
            self.seen[stream].append(off)
            return
        if epoch is None:
            self.pos[stream][1] = env.get("epoch")
            self.first.setdefault(stream, off - 1)
        if off <= last:
            self.duplicates += 1
            return
        if off != last + 1:
            self.out_of_order.append((stream, last + 1, off))
        self.pos[stream][0] = off
        self.seen[stream].append(off)


async def run_client(c, url_base, stop, rng):
    while not stop.is_set():
        url = "%s?%s" % (url_base, c.query())
        delay = rng.uniform(0.05, 0.4)
        try:
            async with websockets.connect(url, open_timeout=h.t(10), ping_interval=None,
                                          close_timeout=2, max_size=1 << 20) as ws:
                async for raw in ws:
                    env = json.loads(raw)
                    t = env.get("msgType")
                    if t == 0:
                        c.on_connection(env)
                    elif t == 1:
                        c.on_business(env)
                    elif t == 5:
                        c.reconnect_msgs += 1
                        delay = min(((env.get("msg") or {}).get("delayMs") or 0) / 1000.0, 3.0)
                    elif t == -1 and str(env.get("resultMsg", "")).startswith("gap"):
                        c.gap_errors.append(env.get("resultMsg"))
                code = ws.close_code
        except websockets.exceptions.ConnectionClosed as e:
            code = e.code
        except (OSError, asyncio.TimeoutError, websockets.exceptions.InvalidHandshake,
                websockets.exceptions.InvalidMessage):
            code = "connect-failed"
        c.closes[code] = c.closes.get(code, 0) + 1
        if not stop.is_set():
            await asyncio.sleep(delay)


class Publisher:
    """Unicast pushes at a fixed rate (a few threads) and broadcasts; a push
    answered with anything but 200 is retried with the same messageId (the
    API is idempotent per messageId), bounded in time."""

    def __init__(self, api, clients):
        self.api = api
        self.clients = clients
        self.lock = threading.Lock()
        self.acked = {}       # (stream key) -> highest offset answered
        self.answered = 0
        self.retries = 0
        self.given_up = []
        self.stop = threading.Event()
        self.threads = []

    def _push(self, body):
        deadline = time.monotonic() + h.t(20)
        while True:
            try:
                st, ans, _ = self.api.push(body, timeout=5.0)
            except OSError:
                st, ans = 0, None
            if st == 200:
                return ans
            if time.monotonic() > deadline:
                self.given_up.append((body["messageId"], st, ans))
                return None
            with self.lock:
                self.retries += 1
            time.sleep(0.2)

    def _record(self, key, ans):
        for m in ans["data"]["messages"]:
            off = m.get("offset")
            if off is None:
                continue
            k = "b" if key == "*" else m.get("to", key)
            with self.lock:
                self.acked[k] = max(self.acked.get(k, 0), off)
                self.answered += 1

    def _unicast(self, worker, workers):
        period = workers / UNICAST_PER_S
        n = worker
        next_at = time.monotonic()
        while not self.stop.is_set():
            cid = self.clients[n % len(self.clients)].cid
            mid = "chaos-%d" % n
            ans = self._push({"to": [cid], "msg": {"n": n}, "messageId": mid})
            if ans:
                self._record(cid, ans)
            n += workers
            next_at += period
            time.sleep(max(0.0, next_at - time.monotonic()))

    def _broadcast(self):
        n = 0
        while not self.stop.is_set():
            ans = self._push({"sendToAll": True, "msg": {"b": n}, "messageId": "chaos-b-%d" % n})
            if ans:
                self._record("*", ans)
            n += 1
            self.stop.wait(1.0 / BROADCAST_PER_S)

    def start(self, workers=4):
        for w in range(workers):
            self.threads.append(threading.Thread(target=self._unicast, args=(w, workers),
                                                 daemon=True))
        self.threads.append(threading.Thread(target=self._broadcast, daemon=True))
        for th in self.threads:
            th.start()

    def finish(self):
        self.stop.set()
        for th in self.threads:
            th.join(h.t(30))


class ChaosTest(h.IntegrationTest):

    def stack(self, bridge_args=()):
        self.redis = self.start_redis()
        self.mosq = self.start_mosquitto()
        common = ["--registry-interval-ms", "200", "--drain-seconds", "3",
                  "--max-connections", "20000"] + list(bridge_args)
        self.bridges = [self.start_bridge(self.mosq, bridge_id="chaos%d" % i, args=common,
                                          redis=self.redis) for i in (1, 2)]
        self.bal = self.start_balancer(self.redis, args=["--bridge-ttl-ms", "1500"])
        # --bus-batch 1: every push goes to the bridges inside a delivery
        # batch (d/batch), the path taken under load, through every failure.
        self.api = self.start_httpapi(self.mosq, redis=self.redis, args=["--bus-batch", "1"])
        h.wait_until(lambda: len(self.bal.live_ids()) == 2, h.t(10), what="two live bridges")

    def restart_bridge(self, b, sig):
        b.stop(sig=sig, check=(sig == signal.SIGTERM))
        b.start()

    def run_clients(self, clients, body, settle_s):
        """Runs every client in one asyncio loop (its own thread) while body()
        runs here; then waits up to settle_s for the streams to settle."""
        stop = asyncio.Event()
        loop = asyncio.new_event_loop()
        url = "ws://127.0.0.1:%d/ws" % self.bal.port
        rng = random.Random(13)

        async def main():
            tasks = [asyncio.ensure_future(run_client(c, url, stop, rng)) for c in clients]
            while not done.is_set():
                await asyncio.sleep(0.1)
            stop.set()
            await asyncio.wait(tasks, timeout=h.t(20))
            for task in tasks:
                task.cancel()
            # Let the library's own closing tasks end inside the loop, so
            # none is left to a loop that no longer runs.
            rest = [x for x in asyncio.all_tasks() if x is not asyncio.current_task()]
            if rest:
                await asyncio.wait(rest, timeout=5)

        done = threading.Event()
        th = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
        th.start()
        try:
            h.wait_until(lambda: all(c.connects for c in clients), h.t(60),
                         what="every client connected once")
            body()
            h.wait_until(settle_s[0], settle_s[1], interval=0.5, what="streams settled")
        finally:
            done.set()
            th.join(h.t(40))

    def test_nothing_lost_through_restarts_kills_and_broker_outage(self):
        self.stack()
        clients = [Client("chaos-%04d" % i) for i in range(CLIENTS)]
        pub = Publisher(self.api, clients)

        def body():
            pub.start()
            schedule = [
                (8, "SIGTERM bridge 1", lambda: self.restart_bridge(self.bridges[0],
                                                                     signal.SIGTERM)),
                (20, "SIGTERM bridge 2", lambda: self.restart_bridge(self.bridges[1],
                                                                      signal.SIGTERM)),
                (32, "SIGKILL bridge 1", lambda: self.restart_bridge(self.bridges[0],
                                                                      signal.SIGKILL)),
                (44, "restart mosquitto", lambda: self.mosq.restart(down_for=2.0)),
            ]
            t0 = time.monotonic()
            for at, what, act in schedule:
                time.sleep(max(0.0, t0 + at - time.monotonic()))
                h.log("chaos: %s at %.1fs" % (what, time.monotonic() - t0))
                act()
            time.sleep(max(0.0, t0 + 60 - time.monotonic()))
            pub.finish()

        def settled():
            with pub.lock:
                acked = dict(pub.acked)
            for c in clients:
                if c.pos["c"][0] < acked.get(c.cid, 0) or c.pos["b"][0] < acked.get("b", 0):
                    return False
            return True

        self.run_clients(clients, body, (settled, h.t(45)))
        self.report_and_check(clients, pub)
        # The pushes went in delivery batches (the API outlived every failure).
        self.assertGreater(h.metric_value(self.api.metrics(),
                                          "cloudpush_httpapi_bus_batched_messages_total"),
                           UNICAST_PER_S * 30)

    def report_and_check(self, clients, pub):
        with pub.lock:
            acked = dict(pub.acked)
        lost, order, dups, gaps = {}, [], 0, []
        for c in clients:
            dups += c.duplicates
            order += [(c.cid,) + o for o in c.out_of_order]
            gaps += c.gap_errors
            for stream, want in (("c", acked.get(c.cid, 0)), ("b", acked.get("b", 0))):
                start = c.first.get(stream, 0)
                got = set(x for x in c.seen[stream] if isinstance(x, int))
                missing = [o for o in range(start + 1, want + 1) if o not in got]
                if missing:
                    lost[(c.cid, stream)] = missing[:10] + (["..."] if len(missing) > 10 else [])
        closes = {}
        for c in clients:
            for k, v in c.closes.items():
                closes[k] = closes.get(k, 0) + v
        h.log("chaos: %d clients, %d pushes answered, %d retries, %d given up; %d connects; "
              "duplicates dropped %d; RECONNECT seen %d; recovered:false %d; closes %s" % (
                  len(clients), pub.answered, pub.retries, len(pub.given_up),
                  sum(c.connects for c in clients), dups,
                  sum(c.reconnect_msgs for c in clients),
                  sum(c.recovered_false for c in clients), closes))
        self.assertEqual(pub.given_up, [], "pushes never accepted")
        self.assertGreater(pub.answered, UNICAST_PER_S * 30, "the publisher barely ran")
        self.assertEqual(gaps, [], "gap errors")
        self.assertEqual(sum(c.recovered_false for c in clients), 0,
                         "recoveries refused although Redis kept the history")
        self.assertEqual(order, [], "messages out of order (client, stream, expected, got)")
        self.assertEqual(lost, {}, "lost offsets per (client, stream)")
        self.assertEqual(sum(c.unstored for c in clients), 0, "messages not stored")
        self.assertGreater(sum(c.reconnect_msgs for c in clients), 0,
                           "no RECONNECT seen from the draining bridges")

    def test_redis_emptied_nobody_is_silent(self):
        self.stack()
        clients = [Client("empty-%03d" % i) for i in range(min(CLIENTS, 100))]
        pub = Publisher(self.api, clients)

        def body():
            for i, c in enumerate(clients):  # one stored message each
                st, ans, _ = self.api.push({"to": [c.cid], "msg": {"i": i}})
                self.assertEqual(st, 200, ans)
            h.wait_until(lambda: all(c.pos["c"][0] >= 1 for c in clients), h.t(20),
                         what="first message everywhere")
            redis_port = self.redis.port
            self.redis.stop()
            self.redis = h.Redis(self.dir, port=redis_port)
            self.addCleanup(self.redis.stop)
            self.redis.start()
            # Half the clients reconnect (their bridge drains), the others
            # stay; then every client gets one more message.
            self.restart_bridge(self.bridges[0], signal.SIGTERM)
            for i, c in enumerate(clients):
                st, ans, _ = self.api.push({"to": [c.cid], "msg": {"after": i}})
                self.assertEqual(st, 200, ans)

        def told():
            return all(c.recovered_false or c.epoch_changes for c in clients)

        self.run_clients(clients, body, (told, h.t(30)))
        silent = [c.cid for c in clients if not (c.recovered_false or c.epoch_changes)]
        h.log("redis emptied: recovered:false %d, epoch changed live %d" % (
            sum(1 for c in clients if c.recovered_false),
            sum(1 for c in clients if c.epoch_changes)))
        self.assertEqual(silent, [], "clients never told that their history was lost")
        self.assertEqual(pub.given_up, [])


if __name__ == "__main__":
    unittest.main()
