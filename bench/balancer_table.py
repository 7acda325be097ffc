#!/usr/bin/env python3
"""The table of bench/balancer.sh: one Markdown row per run found in the
results directory (argument), in the script's order."""
import json
import os
import sys

ROWS = ("w2-direct", "w2-bal", "w2-relay", "w1-direct", "w1-bal", "w1-relay", "hold-bal",
        "hold-relay")


def cpu(servers, key):
    parts, relay = [], 0.0
    for s in servers:
        v = s.get(key)
        if v is None:
            continue
        if s["name"] == "relay-worker":
            relay += v
        elif s["name"] in ("balancer", "bridge1", "bridge2", "mosquitto", "httpapi"):
            parts.append("%s %.0f" % (s["name"], v))
    if relay:
        parts.insert(3, "relay workers %.0f" % relay)
    return ", ".join(parts)


def main():
    d = sys.argv[1]
    print("| run | connections ready (failed) | ready/s | time to ready p50 / p99 (ms) | "
          "deliveries (lost) | latency p50 / p90 / p99 / max (ms) | CPU, % of a core | machine busy |")
    print("|---|---|---|---|---|---|---|---|")
    for name in ROWS:
        p = os.path.join(d, name + ".json")
        if not os.path.exists(p):
            continue
        r = json.load(open(p))
        c = r["connect"]
        t = c.get("time_to_ready", {})
        first = "%d (%d)" % (c["ready"], c["failed"])
        lat, deliv, cpus, busy = "-", "-", cpu(r["servers"], "connect_cpu_pct_of_core"), \
            "%.0f %%" % c.get("machine_busy_pct", 0)
        steps = [s for s in r.get("steps", []) if s.get("tag") != "warmup"]
        if steps:
            s = steps[-1]
            L = s["latency"]
            lat = "%.1f / %.1f / %.1f / %.1f" % (L["p50_ms"], L["p90_ms"], L["p99_ms"], L["max_ms"])
            deliv = "%d of %d (%d)" % (s["received"], s["expected"], s["lost"])
            cpus = ", ".join("%s %.0f" % (x["name"], x["cpu_pct_of_core"]) for x in s["servers"]
                             if x["name"] != "relay-worker")
            rw = sum(x["cpu_pct_of_core"] for x in s["servers"] if x["name"] == "relay-worker")
            if rw:
                cpus += ", relay workers %.0f" % rw
            busy = "%.0f %%" % s.get("machine_busy_pct", 0) if "machine_busy_pct" in s else "-"
        print("| %s | %s | %.0f | %.1f / %.1f | %s | %s | %s | %s |" % (
            r["label"], first, c["ready_per_s"], t.get("p50_ms", 0), t.get("p99_ms", 0), deliv,
            lat, cpus, busy))


main()
