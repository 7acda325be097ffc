#!/usr/bin/env python3
"""The table of bench/balancer.sh: one Markdown row per run found in the
results directory (argument), in the script's order."""
import json
import os
import sys

ROWS = ("w2-direct", "w2-bal", "w2-relay", "w1-direct", "w1-bal", "w1-relay", "hold-bal",
        "hold-relay")


def cpu(servers, key):
    """CPU per server in % of a core: a bridge's worker processes (bridge1-w1,
    ...) are added to their bridge, the relay workers to one figure."""
    order, total = [], {}
    for s in servers:
        v = s.get(key)
        if v is None:
            continue
        name = s["name"]
        if name.startswith("bridge") and "-w" in name:
            name = name.split("-w")[0]
        elif name == "relay-worker":
            name = "relay workers"
        if name not in total:
            order.append(name)
            total[name] = 0.0
        total[name] += v
    return ", ".join("%s %.0f" % (n, total[n]) for n in order
                     if n != "relay workers" or total[n] >= 0.5)


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
            cpus = cpu(s["servers"], "cpu_pct_of_core")
            busy = "%.0f %%" % s.get("machine_busy_pct", 0) if "machine_busy_pct" in s else "-"
        print("| %s | %s | %.0f | %.1f / %.1f | %s | %s | %s | %s |" % (
            r["label"], first, c["ready_per_s"], t.get("p50_ms", 0), t.get("p99_ms", 0), deliv,
            lat, cpus, busy))


main()
