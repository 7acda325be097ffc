#!/usr/bin/python3
"""The targets of issue 14 over several `bench/run.sh --table` runs: each
run's value and ratio, then the median of each, so one lucky or unlucky run
on shared cores does not decide a target.

    median.py RUN_DIR...          -> Markdown on stdout
    median.py --selftest          -> checks the arithmetic on made-up runs

A ratio is taken within its own run (cloudpush and nchan measured minutes
apart on the same machine), then the ratios' median is reported; the median
of the values is shown beside it for scale.
"""
import json
import os
import statistics
import sys


def load(run_dir, name):
    path = os.path.join(run_dir, name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def ready_per_s(d):
    return d["connect"]["ready_per_s"] if d else None


def kib_per_conn(d):
    return d["rss_bytes_per_conn_after_hold"] / 1024 if d else None


def fixed_step(d):
    if not d:
        return None
    return next((s for s in d["steps"] if s["tag"] == "fixed"), None)


def p99(d):
    s = fixed_step(d)
    return s["latency"]["p99_ms"] if s else None


def lost(d):
    s = fixed_step(d)
    return s["lost"] if s else None


def best(d):
    return d["best_rate"] if d and d.get("best_rate") else None


def ratio(a, b):
    return a / b if a is not None and b else None


# (target, unit, value of a run, ratio of a run or None, the ratio that meets it,
#  True when a lower ratio is better)
TARGETS = [
    ("W1 connect direct, ready/s (ratio: / nchan, >= 1)", "/s",
     lambda r: ready_per_s(r("cp-w1-10k")),
     lambda r: ratio(ready_per_s(r("cp-w1-10k")), ready_per_s(r("nchan-w1-10k"))), 1.0, False),
    ("W1 through the balancer, ready/s (ratio: / direct, >= 0.8)", "/s",
     lambda r: ready_per_s(r("cp-w1-10k-bal")),
     lambda r: ratio(ready_per_s(r("cp-w1-10k-bal")), ready_per_s(r("cp-w1-10k"))), 0.8, False),
    ("KiB per idle connection, bridge + broker (<= 4)", "KiB",
     lambda r: kib_per_conn(r("cp-w1-10k")), None, None, True),
    ("W2 10k x 10/s direct, p99 ms (ratio: / nchan, <= 1)", "ms",
     lambda r: p99(r("cp-w2-10k-x10")),
     lambda r: ratio(p99(r("cp-w2-10k-x10")), p99(r("nchan-w2-10k-x10"))), 1.0, True),
    ("W2 through the balancer, p99 ms (ratio: / direct, <= 1.5)", "ms",
     lambda r: p99(r("cp-w2-10k-x10-bal")),
     lambda r: ratio(p99(r("cp-w2-10k-x10-bal")), p99(r("cp-w2-10k-x10"))), 1.5, True),
    ("W2 messages lost, direct + through the balancer (0)", "",
     lambda r: (lost(r("cp-w2-10k-x10")) or 0) + (lost(r("cp-w2-10k-x10-bal")) or 0),
     None, None, True),
    ("W2 saturation, publishes/s (ratio: / nchan, >= 1.5)", "/s",
     lambda r: best(r("cp-w2-5k-sat")),
     lambda r: ratio(best(r("cp-w2-5k-sat")), best(r("nchan-w2-5k-sat"))), 1.5, False),
    ("W3 HTTP, messages/s (ratio: / nchan, >= 1)", "/s",
     lambda r: best(r("cp-w3-5k-http")),
     lambda r: ratio(best(r("cp-w3-5k-http")), best(r("nchan-w3-5k-http"))), 1.0, False),
    ("W3 MQTT QoS 1, messages/s (>= 30 000)", "/s",
     lambda r: best(r("cp-w3-5k-mqtt")),
     lambda r: ratio(best(r("cp-w3-5k-mqtt")), 30000.0), 1.0, False),
]


def fmt(v):
    if v is None:
        return "-"
    if abs(v) >= 100 or float(v).is_integer():
        return f"{v:,.0f}".replace(",", " ")
    return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"


def median_or_none(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def table(run_dirs):
    readers = [(lambda name, d=d: load(d, name)) for d in run_dirs]
    head = "| target | " + " | ".join(f"run {i + 1}" for i in range(len(run_dirs)))
    head += " | median | met (median)? |"
    out = [head, "|---" * (len(run_dirs) + 3) + "|"]
    for name, _unit, value, rat, need, lower in TARGETS:
        values = [value(r) for r in readers]
        ratios = [rat(r) if rat else None for r in readers]
        cells = []
        for v, q in zip(values, ratios):
            cells.append(fmt(v) + (f" ({q:.2f}×)" if q is not None else ""))
        mv = median_or_none(values)
        mq = median_or_none(ratios)
        med = fmt(mv) + (f" ({mq:.2f}×)" if mq is not None else "")
        if rat:
            judged = mq
        elif name.startswith("KiB"):
            judged, need = mv, 4.0
        else:
            judged, need = mv, 0
        if judged is None:
            met = "-"
        else:
            met = "yes" if (judged <= need if lower else judged >= need) else "**no**"
        out.append(f"| {name} | " + " | ".join(cells) + f" | {med} | {met} |")
    return out


def describe(run_dirs):
    lines = []
    for i, d in enumerate(run_dirs):
        info = os.path.join(d, "run-info.txt")
        got = {}
        if os.path.exists(info):
            for line in open(info):
                if ":" in line:
                    k, v = line.split(":", 1)
                    got[k.strip()] = v.strip()
        lines.append(f"- run {i + 1}: {got.get('date', '?')}, git {got.get('git', '?')}, "
                     f"{got.get('elapsed', '?')}")
    return lines


def selftest():
    import tempfile

    def write(d, name, **kw):
        base = {"steps": [], "best_rate": None}
        base.update(kw)
        with open(os.path.join(d, name + ".json"), "w") as f:
            json.dump(base, f)

    dirs = []
    for i, (cp, nc) in enumerate([(10, 20), (30, 20), (25, 20)]):
        d = tempfile.mkdtemp(prefix="median-selftest-")
        dirs.append(d)
        fixed = lambda ms, lost=0: [{"tag": "fixed", "latency": {"p99_ms": ms}, "lost": lost}]
        write(d, "cp-w2-5k-sat", best_rate=cp)
        write(d, "nchan-w2-5k-sat", best_rate=nc)
        write(d, "cp-w2-10k-x10", steps=fixed(100 + 10 * i))
        write(d, "nchan-w2-10k-x10", steps=fixed(100))
        write(d, "cp-w1-10k", connect={"ready_per_s": 1000}, rss_bytes_per_conn_after_hold=4096)
    rows = "\n".join(table(dirs))
    # Saturation ratios 0.5, 1.5, 1.25: median 1.25, not met (1.5 needed).
    assert "| W2 saturation" in rows
    sat = next(l for l in rows.splitlines() if l.startswith("| W2 saturation"))
    assert "25 (1.25×) | **no** |" in sat, sat
    # p99 ratios 1.0, 1.1, 1.2: median 1.1, not met (<= 1 needed).
    w2 = next(l for l in rows.splitlines() if l.startswith("| W2 10k"))
    assert "110 (1.10×) | **no** |" in w2, w2
    kib = next(l for l in rows.splitlines() if l.startswith("| KiB"))
    assert kib.endswith("| 4 | yes |"), kib
    w3 = next(l for l in rows.splitlines() if l.startswith("| W3 HTTP"))
    assert w3.endswith("| - | - |"), w3  # no data: nothing claimed
    for d in dirs:
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
        os.rmdir(d)
    print("median.py selftest passed")
    return 0


def main(argv):
    if argv[1:] == ["--selftest"]:
        return selftest()
    if len(argv) < 2:
        sys.stderr.write(__doc__)
        return 2
    dirs = argv[1:]
    print(f"Median of {len(dirs)} `bench/run.sh --table` runs, each on freshly started servers "
          "(bench/table-median.sh). A ratio is taken within its run; the median column gives "
          "the median value and the median ratio.\n")
    print("\n".join(describe(dirs)))
    print()
    print("\n".join(table(dirs)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
