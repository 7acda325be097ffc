#!/usr/bin/python3
"""Turns the JSON files of one bench/run.sh run into Markdown.

    report.py RESULTS_DIR                     -> summary on stdout
    report.py --splice DOC MODE SUMMARY_MD    -> replaces the block between
        <!-- results:MODE:begin --> and <!-- results:MODE:end --> in DOC
"""
import glob
import json
import os
import sys

ORDER = ["cp-", "nchan-", "mqws-"]
SYSNAME = {"cloudpush": "cloudpush", "nchan": "nchan", "mosquitto-ws": "mosquitto-ws"}


WL_ORDER = {"connect": 0, "broadcast": 1, "unicast": 2, "multi": 3}


def sort_key(d):
    base = d["_file"]
    sys_i = next((i for i, p in enumerate(ORDER) if base.startswith(p)), len(ORDER))
    wnum = base.split("-w")[1][:1] if "-w" in base else ""
    return (sys_i, wnum, WL_ORDER.get(d["workload"], 9), d["conns"], base)


NOISY = 15.0  # % of the machine used by other processes during a step


def f0(x):
    return f"{x:,.0f}"


def f1(x):
    return f"{x:.1f}"


def lat(h, key):
    v = h.get(key, 0.0)
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def servers_cpu(step):
    parts = []
    for s in step["servers"]:
        if s["cpu_pct_of_core"] < 0.5:
            continue
        txt = f"{s['name']} {s['cpu_pct_of_core']:.0f}%"
        if s["top_thread"] and s["top_thread_pct_of_core"] < s["cpu_pct_of_core"] - 5:
            txt += f" (busiest thread {s['top_thread_pct_of_core']:.0f}%)"
        parts.append(txt)
    return ", ".join(parts) or "-"


def connect_table(runs):
    out = [
        "| system | connections | ready | failed | time (s) | ready/s | time to ready p50 / p99 (ms) "
        "| server RSS per connection | server RSS before → after (kB) | idle server CPU | generator CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in runs:
        c = d["connect"]
        rss = "; ".join(
            f"{s['name']} {s['rss_before_kb']:,} → {s['rss_after_hold_kb']:,}" for s in d["servers"]
        )
        idle = ", ".join(
            f"{s['name']} {s.get('idle_cpu_pct_of_core', 0):.1f}%" for s in d["servers"]
        )
        fails = f0(c["failed"])
        if c["failed"] and c.get("first_error"):
            fails += f" ({c['first_error']})"
        out.append(
            f"| {d['system']} | {d['conns']:,} | {c['ready']:,} | {fails} | {c['seconds']:.2f} "
            f"| {f0(c['ready_per_s'])} | {lat(c['time_to_ready'], 'p50_ms')} / "
            f"{lat(c['time_to_ready'], 'p99_ms')} | {d['rss_bytes_per_conn_after_hold'] / 1024:.1f} KiB "
            f"| {rss} | {idle} | {d['generator']['cpu_s']:.2f} s of {d['generator']['wall_s']:.1f} s "
            f"({d['generator']['cpu_pct_of_machine']:.1f}% of the machine) |"
        )
    return out


def unit(d):
    w = d["workload"]
    if w == "broadcast":
        return "publishes/s"
    if w == "multi":
        return f"requests/s ({d['batch']} ids each)"
    return "messages/s"


def step_table(d):
    out = [
        f"| step | offered {unit(d)} | published/s | deliveries/s | lost | closes | p50 | p90 | p99 "
        "| p99.9 | max (ms) | mean first → last third (ms) | publish ack p99 (ms) "
        "| generator CPU | server CPU (% of a core) | machine busy (other processes) | result |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in d["steps"]:
        L = s["latency"]
        res = "pass" if s["pass"] else f"**fail**: {s['why']}"
        if s["tag"] == "warmup":
            res = "(warm-up, not judged) " + res
        if s.get("other_processes_pct_of_machine", 0) > NOISY:
            res += " ⚠ other processes were busy"
        lost = f0(s["lost"])
        if s["lost"]:
            lost += f" of {s['expected']:,}"
        out.append(
            f"| {s['tag']} | {f0(s['rate'])} | {f0(s['achieved_rate'])} | {f0(s['deliveries_per_s'])} "
            f"| {lost} | {s['closes']} | {lat(L, 'p50_ms')} | {lat(L, 'p90_ms')} | {lat(L, 'p99_ms')} "
            f"| {lat(L, 'p999_ms')} | {lat(L, 'max_ms')} | {s['latency_first_third_mean_ms']:.1f} → "
            f"{s['latency_last_third_mean_ms']:.1f} | {lat(s['publish_ack'], 'p99_ms')} "
            f"| {s['gen_cpu_pct_of_machine']:.0f}% of machine | {servers_cpu(s)} "
            f"| {s.get('machine_busy_pct', 0):.0f}% ({s.get('other_processes_pct_of_machine', 0):.0f}%) "
            f"| {res} |"
        )
    return out


def headline(runs, by_file):
    out = [
        "| run | system | connections | best passing rate | deliveries/s there | p50 / p99 there (ms) "
        "| half rate: p50 / p99 (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for d in runs:
        steps = [s for s in d["steps"] if s["pass"] and s["tag"] not in ("half", "warmup")]
        best = max(steps, key=lambda s: s["rate"]) if steps else None
        half = next((s for s in d["steps"] if s["tag"] == "half"), None)
        hd = by_file.get(d["_file"].replace(".json", "-half.json"))
        if hd:
            half = next((s for s in hd["steps"] if s["tag"] == "fixed"), None)
        b = f"{f0(best['rate'])} {unit(d)}" if best else "none passed"
        bd = f0(best["deliveries_per_s"]) if best else "-"
        bl = f"{lat(best['latency'], 'p50_ms')} / {lat(best['latency'], 'p99_ms')}" if best else "-"
        hl = "-"
        if half:
            hl = (f"{f0(half['rate'])}/s: {lat(half['latency'], 'p50_ms')} / "
                  f"{lat(half['latency'], 'p99_ms')}" + ("" if half["pass"] else " (failed)"))
        out.append(f"| {d['label']} | {d['system']} | {d['conns']:,} | {b} | {bd} | {bl} | {hl} |")
    return out


def fixed_table(runs):
    out = [
        "| run | system | connections | publishes/s | deliveries/s | lost | p50 | p90 | p99 | p99.9 "
        "| max (ms) | server CPU (% of a core) | result |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in runs:
        for s in d["steps"]:
            if s["tag"] != "fixed":
                continue
            L = s["latency"]
            res = "pass" if s["pass"] else f"fail: {s['why']}"
            if s.get("other_processes_pct_of_machine", 0) > NOISY:
                res += " ⚠"
            out.append(
                f"| {d['label']} | {d['system']} | {d['conns']:,} | {f0(s['rate'])} "
                f"| {f0(s['deliveries_per_s'])} | {f0(s['lost'])} | {lat(L, 'p50_ms')} "
                f"| {lat(L, 'p90_ms')} | {lat(L, 'p99_ms')} | {lat(L, 'p999_ms')} | {lat(L, 'max_ms')} "
                f"| {servers_cpu(s)} | {res} |"
            )
    return out


def summary(results_dir):
    files = glob.glob(os.path.join(results_dir, "*.json"))
    runs = [json.load(open(f)) for f in files]
    for d, f in zip(runs, files):
        d["_file"] = os.path.basename(f)
    runs.sort(key=sort_key)
    by_file = {d["_file"]: d for d in runs}
    out = []
    info = os.path.join(results_dir, "run-info.txt")
    if os.path.exists(info):
        out.append("```")
        out.extend(open(info).read().strip().splitlines())
        out.append("```")
        out.append("")
    conn = [d for d in runs if d["workload"] == "connect"]
    pub = [d for d in runs if d["workload"] != "connect"]
    if conn:
        out.append("#### W1: connect + idle")
        out.append("")
        out.extend(connect_table(conn))
        out.append("")
    if pub:
        out.append("#### Publishing workloads: the best passing rate of each run")
        out.append("")
        out.extend(headline([d for d in pub if not d["_file"].endswith("-half.json")], by_file))
        out.append("")
        bc = [d for d in pub if d["workload"] == "broadcast"]
        if bc:
            out.append("#### W2: broadcast at fixed rates")
            out.append("")
            out.extend(fixed_table(bc))
            out.append("")
        for d in pub:
            out.append(f"#### {d['system']}: {d['label']}")
            out.append("")
            out.append(f"`{d['_file']}`, {d['conns']:,} connections ({d['connect']['ready']:,} ready, "
                       f"{d['connect']['ready_per_s']:,.0f}/s), {d['duration']:.0f} s per step, "
                       f"{d['pub_conns']} publisher connection(s). Command:")
            out.append("")
            out.append(f"    {d['command']}")
            out.append("")
            out.extend(step_table(d))
            if d.get("aborted"):
                out.append("")
                out.append(f"Run {d['aborted']}.")
            g = d["generator"]
            out.append("")
            out.append(f"Generator: {g['cpu_s']:.1f} s CPU over {g['wall_s']:.1f} s "
                       f"({g['cpu_pct_of_machine']:.1f}% of the machine).")
            out.append("")
    return "\n".join(out) + "\n"


def splice(doc, mode, summary_md):
    text = open(doc).read()
    begin = f"<!-- results:{mode}:begin -->"
    end = f"<!-- results:{mode}:end -->"
    i, j = text.find(begin), text.find(end)
    if i < 0 or j < i:
        sys.stderr.write(f"report.py: no {begin} ... {end} block in {doc}; not changed\n")
        return 1
    body = open(summary_md).read()
    text = text[: i + len(begin)] + "\n" + body + text[j:]
    open(doc, "w").write(text)
    return 0


def main(argv):
    if len(argv) == 5 and argv[1] == "--splice":
        return splice(argv[2], argv[3], argv[4])
    if len(argv) == 2:
        sys.stdout.write(summary(argv[1]))
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
