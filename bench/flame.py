#!/usr/bin/env python3
"""Per-thread flame graph data from `perf script` output.

Reads `perf script -F comm,pid,tid,ip,sym,dso` (a call graph recorded with
`perf record -g` or `--call-graph dwarf`) on stdin and writes, into OUTDIR:

  <process>.<thread>.folded   one line per distinct stack, root first,
                              frames joined by ';' (kernel ones marked
                              "_[k]"), then the sample count:
                              the input of flamegraph.pl, speedscope,
                              inferno and most flame graph viewers;
  summary.md                  per thread: its share of the samples, the
                              functions with the most samples on the CPU
                              (self), the same with the kernel's frames
                              given to the user-space function that
                              entered it (a system call's cost goes to its
                              libc wrapper), and on the stack (inclusive,
                              without the frames under nearly everything).

Threads are grouped by process id and thread name (comm); threads of one
process with the same name (a pool) are added up.

Usage: perf script -F comm,pid,tid,ip,sym,dso -i perf.data |
           bench/flame.py OUTDIR [--names PID=NAME ...] [--top N]
"""
import argparse
import collections
import os
import re
import sys

HEAD = re.compile(r"^(?P<comm>.+?)\s+(?P<pid>\d+)/(?P<tid>\d+)\s*$")
FRAME = re.compile(r"^\s+[0-9a-f]+\s+(?P<sym>.*?)\s+\((?P<dso>[^)]*)\)\s*$")


def frame_name(sym, dso):
    """The function; kernel frames end in "_[k]" (flamegraph.pl's mark)."""
    if sym in ("[unknown]", ""):
        base = os.path.basename(dso) if dso not in ("[unknown]", "") else "?"
        return "[%s]" % base
    sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
    return sym + "_[k]" if dso.startswith("[kernel") else sym


def read_samples(stream):
    """Yields (pid, comm, frames leaf first) per sample."""
    head, frames = None, []
    for line in stream:
        line = line.rstrip("\n")
        if not line.strip():
            if head:
                yield head[0], head[1], frames
            head, frames = None, []
            continue
        m = HEAD.match(line)
        if m and not line.startswith((" ", "\t")):
            if head:
                yield head[0], head[1], frames
            head, frames = (int(m.group("pid")), m.group("comm").strip()), []
            continue
        f = FRAME.match(line)
        if f and head:
            frames.append(frame_name(f.group("sym"), f.group("dso")))
    if head:
        yield head[0], head[1], frames


def safe(s):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_") or "thread"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--names", nargs="*", default=[],
                    help="PID=NAME: how to call a process in the file names and summary")
    ap.add_argument("--top", type=int, default=8)
    args = ap.parse_args()
    names = dict(x.split("=", 1) for x in args.names)
    os.makedirs(args.outdir, exist_ok=True)

    stacks = collections.defaultdict(collections.Counter)  # (proc, comm) -> folded -> n
    total = 0
    for pid, comm, frames in read_samples(sys.stdin):
        proc = names.get(str(pid), "pid%d" % pid)
        stacks[(proc, comm)][";".join(reversed(frames)) or "[no stack]"] += 1
        total += 1
    if not total:
        sys.exit("flame.py: no samples on stdin")

    out = ["# Where the CPU went, per thread", "",
           "%d samples in all. Per thread: its share of all samples, then the functions "
           "most often on the CPU (self) and on the stack (inclusive), in %% of the "
           "thread's samples. The `.folded` files beside this one are the flame graphs' "
           "data (flamegraph.pl, speedscope.app, inferno)." % total, ""]
    order = sorted(stacks, key=lambda k: -sum(stacks[k].values()))
    for proc, comm in order:
        c = stacks[(proc, comm)]
        n = sum(c.values())
        fname = "%s.%s.folded" % (safe(proc), safe(comm))
        with open(os.path.join(args.outdir, fname), "w") as f:
            for stack, k in sorted(c.items(), key=lambda x: -x[1]):
                f.write("%s %d\n" % (stack, k))
        self_c, user_c, incl_c = (collections.Counter(), collections.Counter(),
                                  collections.Counter())
        for stack, k in c.items():
            frames = stack.split(";")
            self_c[frames[-1]] += k
            user = [f for f in frames if not f.endswith("_[k]")]
            user_c[(user[-1] if user else frames[-1]) + ("" if user and user[-1] == frames[-1]
                                                         else " (in the kernel)")] += k
            for fr in set(frames):
                incl_c[fr] += k
        out.append("## %s, thread `%s`: %.1f %% of the samples (`%s`)" % (
            proc, comm, 100.0 * n / total, fname))
        out.append("")
        out.append("| self | % | self, user space | % | inclusive | % |")
        out.append("|---|---|---|---|---|---|")
        cols = [self_c.most_common(args.top), user_c.most_common(args.top),
                [x for x in incl_c.most_common() if x[1] < 0.9 * n][:args.top]]

        def cell(col, i):
            if i >= len(col):
                return "| | "
            return "| `%s` | %.1f " % (col[i][0], 100.0 * col[i][1] / n)
        for i in range(max(len(x) for x in cols)):
            out.append("".join(cell(col, i) for col in cols) + "|")
        out.append("")
    with open(os.path.join(args.outdir, "summary.md"), "w") as f:
        f.write("\n".join(out) + "\n")
    print("flame.py: %d samples, %d threads -> %s" % (total, len(order), args.outdir))


if __name__ == "__main__":
    main()
