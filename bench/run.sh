#!/bin/bash
# Runs the benchmarks of docs/benchmarks.md: starts each system from scratch
# on loopback (cloudpush from this checkout, nginx+nchan, mosquitto with a
# WebSocket listener), drives it with bench/cloudpush-bench, and writes JSON
# plus a Markdown summary to bench/results/<mode>/ and the tables into
# docs/benchmarks.md.
#
# Usage: bench/run.sh [--quick | --smoke] [--systems LIST] [--no-docs] [--keep]
#                     [--build DIR] [--no-build]
#   --quick         small runs, under 2 minutes in all (default: the full set)
#   --workers       issue 14's W2 row (broadcast 10 000 x 10/s, one bridge direct, 100-byte
#                   messages) with the bridge's --workers 1, then --workers 2, then nchan
#   --guarantees    issue 13's cost of the delivery guarantees: W2 broadcast 10 000 x 10/s
#                   and W3 unicast through the HTTP API (highest rate with p99 <= 50 ms),
#                   cloudpush with history off (--redis=) and on (Redis streams, group
#                   commit), then nchan; 100-byte messages, each on a fresh system
#   --table         the table of issue 14, as a new user would measure it: 100-byte
#                   messages, one generator process, cloudpush direct and through the
#                   balancer (and W2 direct to the balancer's two bridges), nchan beside
#                   it (about 6 minutes)
#   --flame         a flame graph per thread: W3 unicast 5 000 through the HTTP API at a
#                   fixed rate (CLOUDPUSH_BENCH_FLAME_RATE, default 3000/s), history on, one
#                   bridge direct, while `perf record --call-graph dwarf` samples every
#                   server for 10 s; folded stacks per thread and summary.md (bench/flame.py)
#                   go to bench/results/flame/flame/. cloudpush only; about 1 minute
#   --smoke         a correctness check, not a measurement (ctest bench_smoke):
#                   tiny runs of every adapter on already built binaries; exits
#                   1 if any run lost, duplicated or misrouted a message, or a
#                   connection failed. Implies --no-build, no apt-get, --no-docs;
#                   results go to a temporary directory. Under 60 s.
#   --systems LIST  comma-separated subset of cloudpush,nchan,mosquitto-ws
#   --no-docs       do not touch docs/benchmarks.md
#   --keep          keep the temporary directory (logs, configs) afterwards
#   --build DIR     build directory (binaries in DIR/bin); as CLOUDPUSH_BENCH_BUILD
#   --no-build      use the binaries already in the build directory
# Environment:
#   CLOUDPUSH_BENCH_BUILD       build directory (default: build-bench in the checkout)
#   CLOUDPUSH_BENCH_PORT_BASE   first of the loopback ports used (default 31000;
#                               --smoke picks a free base of its own)
#   CLOUDPUSH_BENCH_PROCS       generator processes (default 1)
#   CLOUDPUSH_BENCH_SKIP_INSTALL=1  do not run apt-get (packages must be present)
#   CLOUDPUSH_BENCH_SKIP_BUILD=1    as --no-build
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
# nginx and mosquitto live in /usr/sbin, which a non-root PATH may lack.
PATH=$PATH:/usr/sbin:/sbin
MODE=full
SYSTEMS="cloudpush,nchan,mosquitto-ws"
DOCS=1
BUILD=${CLOUDPUSH_BENCH_BUILD:-$ROOT/build-bench}
SKIP_BUILD=${CLOUDPUSH_BENCH_SKIP_BUILD:-0}
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) MODE=quick ;;
    --full) MODE=full ;;
    --table) MODE=table ;;
    --workers) MODE=workers ;;
    --guarantees) MODE=guarantees ;;
    --flame) MODE=flame; SYSTEMS=cloudpush ;;
    --smoke) MODE=smoke ;;
    --systems) SYSTEMS=$2; shift ;;
    --no-docs) DOCS=0 ;;
    --keep) KEEP_RUN=1 ;;
    --build) BUILD=$2; shift ;;
    --no-build) SKIP_BUILD=1 ;;
    -h | --help) sed -n '2,/^[^#]/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

case "$BUILD" in /*) ;; *) BUILD=$(pwd)/$BUILD ;; esac
PROCS=${CLOUDPUSH_BENCH_PROCS:-1}
PY=/usr/bin/python3
RUN=$(mktemp -d /tmp/cloudpush-bench.XXXXXX)
PIDS=$RUN/pids
touch "$PIDS"
OUT=$ROOT/bench/results/$MODE
# Quick runs wait less for a quiet machine (see --quiet-wait).
EXTRA=""
[ "$MODE" = quick ] && EXTRA="--quiet-wait 3"
if [ "$MODE" = smoke ]; then
    # Nothing is measured: no waiting for a quiet machine, no warm-up step,
    # a hard limit per generator run; results stay in the temporary directory.
    EXTRA="--quiet-wait 0 --warmup 0 --settle 0.3 --drain 10 --timeout 60"
    OUT=$RUN/results
    DOCS=0
    SKIP_BUILD=1
    CLOUDPUSH_BENCH_SKIP_INSTALL=1
fi

say() { printf '%s\n' "$*" >&2; }
T0=$SECONDS

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The ports of a base: balancer, bridges, HTTP API, nchan, redis, the bus,
# mosquitto-ws (TCP and WebSocket).
port_offsets="0 1 2 80 90 379 883 884 885"

# --smoke, without CLOUDPUSH_BENCH_PORT_BASE: the first candidate base whose
# ports are all free, below the kernel's ephemeral range (where the
# integration tests take their ports) and away from the defaults of run.sh
# (31000) and scripts/run-stack.sh (11883-19002, 21883-29002). A lock file
# per base (held on fd 9 until this script exits) keeps two smoke runs
# started at the same moment apart.
pick_port_base() {
    local b o busy
    for b in 23000 24000 25000 27000 30000; do
        exec 9>"/tmp/cloudpush-bench-ports-$b.lock" || continue
        if flock -n 9; then
            busy=""
            for o in $port_offsets; do
                port_in_use $((b + o)) && busy="$busy $((b + o))"
            done
            if [ -z "$busy" ]; then
                BASE=$b
                return 0
            fi
            say "bench/run.sh: ports$busy in use, not using port base $b"
        fi
        exec 9>&-
    done
    say "bench/run.sh: no free port base; set CLOUDPUSH_BENCH_PORT_BASE"
    rm -rf "$RUN"
    exit 1
}

if [ "$MODE" = smoke ] && [ -z "${CLOUDPUSH_BENCH_PORT_BASE:-}" ]; then
    pick_port_base
else
    BASE=${CLOUDPUSH_BENCH_PORT_BASE:-31000}
fi
P_BAL=$BASE P_BR1=$((BASE + 1)) P_BR2=$((BASE + 2)) P_HTTP=$((BASE + 80))
P_NCHAN=$((BASE + 90)) P_REDIS=$((BASE + 379)) P_MQTT=$((BASE + 883))
P_MQWS_TCP=$((BASE + 884)) P_MQWS_WS=$((BASE + 885))

# ------------------------------------------------------------ setup
install_missing() { # nginx and libnginx-mod-nchan are in install-deps.sh's TEST_PKGS
    [ "${CLOUDPUSH_BENCH_SKIP_INSTALL:-0}" = 1 ] && return 0
    "$ROOT/scripts/install-deps.sh" >/dev/null
}

build() {
    if [ "$SKIP_BUILD" = 1 ]; then
        BIN=$BUILD/bin
        BENCH=$BIN/cloudpush-bench
        local b
        for b in cloudpush-bridge cloudpush-httpapi cloudpush-balancer cloudpush-bench; do
            [ -x "$BIN/$b" ] || { say "bench/run.sh: $BIN/$b not built (--build DIR, CLOUDPUSH_BENCH_BUILD)"; exit 1; }
        done
        "$BENCH" --selftest >/dev/null
        return 0
    fi
    say "==> building into $BUILD"
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCLOUDPUSH_TESTS=OFF \
        -DCLOUDPUSH_BENCH=ON >/dev/null
    cmake --build "$BUILD" -j"$(nproc)" --target cloudpush-bridge cloudpush-httpapi \
        cloudpush-balancer cloudpush-bench >/dev/null
    BIN=$BUILD/bin
    BENCH=$BIN/cloudpush-bench
    "$BENCH" --selftest >/dev/null
}

wait_tcp() { # port seconds
    local deadline=$((SECONDS + $2))
    until port_in_use "$1"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

wait_http() { # url seconds
    local deadline=$((SECONDS + $2))
    until curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

declare -A PID # name -> pid of what start_bg started last under that name
start_bg() { # name cmd...
    local name=$1
    shift
    "$@" >"$RUN/$name.log" 2>&1 9>&- &
    echo "$! $name" >>"$PIDS"
    PID[$name]=$!
}

stop_all() {
    [ -s "$PIDS" ] || return 0
    local pid name
    tac "$PIDS" | while read -r pid name; do
        kill -0 "$pid" 2>/dev/null || continue
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    : >"$PIDS"
    sleep 0.5 # let the kernel release the listening ports
}

cleanup() {
    local rc=$? pid name
    if [ "$rc" != 0 ] && [ "$MODE" = smoke ] && [ -s "$PIDS" ]; then
        # A system did not start (or the run was interrupted): show its logs.
        while read -r pid name; do
            [ -s "$RUN/$name.log" ] || continue
            say "--- last lines of $name's log:"
            tail -15 "$RUN/$name.log" | sed 's/^/    | /' >&2
        done <"$PIDS"
        say "==> bench smoke FAILED (exit status $rc)"
    fi
    stop_all
    [ "${KEEP_RUN:-0}" = 1 ] || rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

check_ports() {
    local p
    for p in "$@"; do
        if port_in_use "$p"; then
            say "bench/run.sh: port $p on 127.0.0.1 is in use; set CLOUDPUSH_BENCH_PORT_BASE"
            exit 1
        fi
    done
}

# ------------------------------------------------------------ systems
ROOT_USER_LINE=""
[ "$(id -u)" -eq 0 ] && ROOT_USER_LINE="user root"

start_mosquitto_bus() {
    local dir=$RUN/mq.$RANDOM
    mkdir -p "$dir"
    sed "s/^listener 1883 127.0.0.1$/listener $P_MQTT 127.0.0.1/" "$ROOT/mosquitto/mosquitto.conf" \
        >"$dir/mosquitto.conf"
    echo "persistence_location $dir/" >>"$dir/mosquitto.conf"
    [ -n "$ROOT_USER_LINE" ] && echo "$ROOT_USER_LINE" >>"$dir/mosquitto.conf"
    start_bg mosquitto mosquitto -c "$dir/mosquitto.conf"
    wait_tcp "$P_MQTT" 10 || { say "mosquitto did not start"; exit 1; }
}

start_redis() {
    check_ports "$P_REDIS"
    mkdir -p "$RUN/redis"
    start_bg redis redis-server --port "$P_REDIS" --bind 127.0.0.1 --save "" --appendonly no \
        --daemonize no --dir "$RUN/redis"
    wait_tcp "$P_REDIS" 10 || { say "redis did not start"; exit 1; }
}

# cloudpush: the HTTP API and one bridge, no Redis (W1-W3); with argument 2,
# two bridges: one per core as docs/scaling.md prescribes, the counterpart of
# nchan's worker_processes auto (W2 "2 bridges"). CP_HISTORY=1: with Redis,
# so every message is stored in its stream (the delivery guarantees on).
start_cloudpush() {
    local n=${1:-1} i name redis_url=""
    check_ports "$P_MQTT" "$P_BR1" "$P_HTTP"
    [ "$n" = 2 ] && check_ports "$P_BR2"
    ulimit -n "$(ulimit -Hn)"
    start_mosquitto_bus
    SERVER_PIDS=""
    if [ "${CP_HISTORY:-0}" = 1 ]; then
        start_redis
        redis_url="redis://127.0.0.1:$P_REDIS"
        SERVER_PIDS="--pid redis=${PID[redis]}"
    fi
    for i in $(seq 1 "$n"); do
        name=bridge
        [ "$n" -gt 1 ] && name=bridge$i
        start_bg "$name" "$BIN/cloudpush-bridge" --listen "127.0.0.1:$((BASE + i))" --id "bench$i" \
            --mqtt "tcp://127.0.0.1:$P_MQTT" --redis="$redis_url" --deflate=false \
            --max-connections 20000 --log-level warn ${CP_WORKERS:+--workers "$CP_WORKERS"}
        SERVER_PIDS="$SERVER_PIDS --pid $name=${PID[$name]}"
    done
    start_bg httpapi "$BIN/cloudpush-httpapi" --listen "127.0.0.1:$P_HTTP" \
        --mqtt "tcp://127.0.0.1:$P_MQTT" --redis="$redis_url" --log-level warn
    for i in $(seq 1 "$n"); do
        wait_http "http://127.0.0.1:$((BASE + i))/healthz" 15 || { say "bridge $i not healthy"; exit 1; }
    done
    wait_http "http://127.0.0.1:$P_HTTP/readyz" 15 || { say "httpapi not ready"; exit 1; }
    SERVER_PIDS="$SERVER_PIDS --pid mosquitto=${PID[mosquitto]} --pid httpapi=${PID[httpapi]}"
    # --workers N: the master only supervises; watch each worker too.
    local master child k=0
    for i in $(seq 1 "$n"); do
        name=bridge
        [ "$n" -gt 1 ] && name=bridge$i
        master=${PID[$name]}
        for child in $(cat "/proc/$master/task/$master/children" 2>/dev/null); do
            k=$((k + 1))
            SERVER_PIDS="$SERVER_PIDS --pid $name-w$k=$child"
        done
    done
}

# cloudpush as deployed: Redis, two bridges, the balancer, the HTTP API with presence (W4).
start_cloudpush_full() {
    check_ports "$P_MQTT" "$P_BR1" "$P_BR2" "$P_HTTP" "$P_BAL" "$P_REDIS"
    ulimit -n "$(ulimit -Hn)"
    start_mosquitto_bus
    start_redis
    local r="redis://127.0.0.1:$P_REDIS"
    start_bg bridge1 "$BIN/cloudpush-bridge" --listen "127.0.0.1:$P_BR1" --id bench1 \
        --mqtt "tcp://127.0.0.1:$P_MQTT" --redis "$r" --deflate=false --max-connections 20000 \
        --log-level warn
    start_bg bridge2 "$BIN/cloudpush-bridge" --listen "127.0.0.1:$P_BR2" --id bench2 \
        --mqtt "tcp://127.0.0.1:$P_MQTT" --redis "$r" --deflate=false --max-connections 20000 \
        --log-level warn
    start_bg balancer "$BIN/cloudpush-balancer" --listen "127.0.0.1:$P_BAL" --redis "$r" \
        --log-level warn
    start_bg httpapi "$BIN/cloudpush-httpapi" --listen "127.0.0.1:$P_HTTP" \
        --mqtt "tcp://127.0.0.1:$P_MQTT" --redis "$r" --log-level warn
    wait_http "http://127.0.0.1:$P_BR1/healthz" 15 || { say "bridge1 not healthy"; exit 1; }
    wait_http "http://127.0.0.1:$P_BR2/healthz" 15 || { say "bridge2 not healthy"; exit 1; }
    wait_http "http://127.0.0.1:$P_HTTP/readyz" 15 || { say "httpapi not ready"; exit 1; }
    local deadline=$((SECONDS + 10))
    until curl -fsS --max-time 1 "http://127.0.0.1:$P_BAL/readyz" 2>/dev/null | grep -q '"bridges":2'; do
        ((SECONDS < deadline)) || { say "the balancer does not see both bridges"; exit 1; }
        sleep 0.2
    done
    SERVER_PIDS="--pid bridge1=${PID[bridge1]} --pid bridge2=${PID[bridge2]} --pid balancer=${PID[balancer]}"
    SERVER_PIDS="$SERVER_PIDS --pid httpapi=${PID[httpapi]} --pid mosquitto=${PID[mosquitto]} --pid redis=${PID[redis]}"
    # Each bridge's master only supervises: watch its workers too.
    local name child k
    for name in bridge1 bridge2; do
        k=0
        for child in $(cat "/proc/${PID[$name]}/task/${PID[$name]}/children" 2>/dev/null); do
            k=$((k + 1))
            SERVER_PIDS="$SERVER_PIDS --pid $name-w$k=$child"
        done
    done
}

start_nchan() {
    check_ports "$P_NCHAN"
    ulimit -n "$(ulimit -Hn)"
    local dir=$RUN/nchan.$RANDOM
    mkdir -p "$dir"
    local user=""
    [ -n "$ROOT_USER_LINE" ] && user="user root;"
    sed -e "s#@DIR@#$dir#g" -e "s#@PORT@#$P_NCHAN#g" -e "s#@USER@#$user#" \
        "$ROOT/bench/peers/nchan.conf.in" >"$dir/nginx.conf"
    start_bg nginx nginx -c "$dir/nginx.conf" -p "$dir/"
    wait_http "http://127.0.0.1:$P_NCHAN/nchan_status" 10 || { say "nginx did not start"; cat "$RUN/nginx.log" "$dir/error.log" >&2; exit 1; }
    SERVER_PIDS="--pid nginx-master=${PID[nginx]}"
    local w
    for w in $(pgrep -P "${PID[nginx]}"); do
        SERVER_PIDS="$SERVER_PIDS --pid nginx-worker=$w"
    done
}

start_mosquitto_ws() {
    check_ports "$P_MQWS_TCP" "$P_MQWS_WS"
    ulimit -n "$(ulimit -Hn)"
    local dir=$RUN/mqws.$RANDOM
    mkdir -p "$dir"
    sed -e "s#@TCP_PORT@#$P_MQWS_TCP#" -e "s#@WS_PORT@#$P_MQWS_WS#" -e "s#@USER@#$ROOT_USER_LINE#" \
        "$ROOT/bench/peers/mosquitto-ws.conf.in" >"$dir/mosquitto.conf"
    start_bg mosquitto_ws mosquitto -c "$dir/mosquitto.conf"
    wait_tcp "$P_MQWS_TCP" 10 || { say "mosquitto (ws) did not start"; exit 1; }
    wait_tcp "$P_MQWS_WS" 10 || { say "mosquitto ws listener did not start"; exit 1; }
    SERVER_PIDS="--pid mosquitto=${PID[mosquitto_ws]}"
}

# ------------------------------------------------------------ runs
CP_WS="ws://127.0.0.1:$P_BR1/ws?channelId={id}"
CP_PUB="http://127.0.0.1:$P_HTTP/api/v1/push"
NC_WS="ws://127.0.0.1:$P_NCHAN/sub/{id}"
NC_PUB="http://127.0.0.1:$P_NCHAN/pub/{id}"
NC_STATUS="http://127.0.0.1:$P_NCHAN/nchan_status"
MQ_WS="ws://127.0.0.1:$P_MQWS_WS/mqtt"
MQ_TCP="tcp://127.0.0.1:$P_MQWS_TCP"

# bench NAME LABEL args...: one generator run, its JSON and log in $OUT.
bench() {
    local name=$1 label=$2 rc=0
    shift 2
    say "--> $name: $label"
    # shellcheck disable=SC2086
    "$BENCH" --procs "$PROCS" --label "$label" --json "$OUT/$name.json" $SERVER_PIDS $EXTRA "$@" \
        2>"$OUT/$name.log" 9>&- || rc=$?
    if [ "$MODE" = smoke ]; then
        smoke_check "$name" "$rc"
        return 0
    fi
    if [ "$rc" != 0 ]; then
        say "    $name failed (see $OUT/$name.log)"
        tail -3 "$OUT/$name.log" >&2
    fi
    grep -E "connect:|\] rate|search:|RSS per|of a core while" "$OUT/$name.log" | sed 's/^/    /' >&2 || true
}

# ------------------------------------------------------------ smoke checks
SMOKE_FAILED=()
SMOKE_RUNS=0

# smoke_check NAME STATUS: the generator exited 0 and its JSON shows every
# connection ready and, in every step, every message delivered exactly once
# to the connection it was addressed to, nothing stale or malformed, no
# connection closed and no publish failed. Rates and latencies are not judged
# (tiny runs on a shared machine, sanitizer builds).
smoke_check() {
    local name=$1 rc=$2 why
    SMOKE_RUNS=$((SMOKE_RUNS + 1))
    why=$("$PY" - "$OUT/$name.json" <<'PYEOF'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except (OSError, ValueError) as e:
    print("no result (%s)" % e)
    sys.exit()
bad = []
c = r["connect"]
if c["ready"] != r["conns"] or c["failed"]:
    bad.append("%d of %d connections ready, %d failed%s" % (
        c["ready"], r["conns"], c["failed"],
        (" (first error: %s)" % c["first_error"]) if c["first_error"] else ""))
if c["idle_closes"]:
    bad.append("%d connections closed while idle" % c["idle_closes"])
if r.get("aborted"):
    bad.append(r["aborted"])
steps = r["steps"]
if r["workload"] != "connect" and not steps:
    bad.append("no publishing step ran")
for s in steps:
    where = "%s step at %g/s" % (s["tag"], s["rate"])
    if s["sent"] == 0 or s["sent"] != s["planned"]:
        bad.append("%s: published %d of %d" % (where, s["sent"], s["planned"]))
    if s["expected"] == 0:
        bad.append("%s: nothing expected (no connection in the step?)" % where)
    if s["received"] != s["expected"] or not s["drained"]:
        bad.append("%s: received %d of %d" % (where, s["received"], s["expected"]))
    for k in ("lost", "dups", "misrouted", "stale", "bad", "extra", "closes",
              "pub_errors", "pub_timeouts"):
        if s[k]:
            bad.append("%s: %s %d" % (where, k, s[k]))
    if s["pub_first_error"]:
        bad.append("%s: publish error: %s" % (where, s["pub_first_error"]))
print("; ".join(bad))
PYEOF
    )
    [ "$rc" = 0 ] || why="cloudpush-bench exited with status $rc${why:+; $why}"
    if [ -n "$why" ]; then
        say "    FAIL: $why"
        tail -5 "$OUT/$name.log" | sed 's/^/    | /' >&2
        SMOKE_FAILED+=("$name: $why")
    else
        grep -E "connect:|\] rate" "$OUT/$name.log" | sed 's/^/    /' >&2 || true
    fi
}

# smoke_stop: stop_all, then look for sanitizer reports in the logs of what
# was stopped (ASan/UBSan builds; a leak is reported at exit).
smoke_stop() {
    local names n
    names=$(awk '{print $2}' "$PIDS")
    stop_all
    for n in $names; do
        if grep -qE "ERROR: (Address|Leak)Sanitizer|runtime error:" "$RUN/$n.log" 2>/dev/null; then
            say "    FAIL: sanitizer report in the log of $n:"
            grep -m1 -A12 -E "ERROR: (Address|Leak)Sanitizer|runtime error:" "$RUN/$n.log" |
                sed 's/^/    | /' >&2
            SMOKE_FAILED+=("$n: sanitizer report")
        fi
    done
}

has() { [[ ",$SYSTEMS," == *",$1,"* ]]; }

best_rate() { # json -> the best passing rate, or nothing
    "$PY" -c 'import json,sys; b=json.load(open(sys.argv[1])).get("best_rate",0); print(("%g" % b) if b else "")' "$1" 2>/dev/null || true
}

# search_then_half NAME LABEL START_FN SEARCH [generator args...]: a rate search on a
# fresh system, then, on another fresh system, 10 s at half of the best rate found
# (the latency "at half load"; a search may leave an overloaded system behind).
search_then_half() {
    local name=$1 label=$2 start=$3 search=$4
    shift 4
    $start
    bench "$name" "$label" "$@" --search "$search" --refine 3
    stop_all
    local best
    best=$(best_rate "$OUT/$name.json")
    if [ -n "$best" ]; then
        local half
        half=$("$PY" -c "import sys; print('%g' % (float(sys.argv[1]) / 2))" "$best")
        $start
        bench "$name-half" "$label, at half the best rate" "$@" --rates "$half" --duration 10
        stop_all
    fi
}

# The table of issue 14: each row on a fresh system, 100-byte messages, the
# delivery guarantees on (Redis: every message stored in its stream), as
# issue 14 asks once they exist.
run_cloudpush_table() {
    local bal="ws://127.0.0.1:$P_BAL/ws?channelId={id}"
    local sz="--size 100"
    local CP_HISTORY=1 # seen by start_cloudpush (bash scoping)
    start_cloudpush
    bench cp-w1-10k "W1 connect 10k, one bridge direct" --system cloudpush --workload connect \
        --ws "$CP_WS" --conns 10000 --hold 5 --concurrency 1000
    stop_all
    start_cloudpush_full
    bench cp-w1-10k-bal "W1 connect 10k through the balancer (2 bridges)" --system cloudpush \
        --workload connect --ws "$bal" --conns 10000 --hold 5 --concurrency 1000
    stop_all
    start_cloudpush
    bench cp-w2-10k-x10 "W2 broadcast 10k x 10/s, one bridge direct" --system cloudpush \
        --workload broadcast --ws "$CP_WS" --pub-url "$CP_PUB" --conns 10000 --rates 10 \
        --duration 10 $sz --keep-going
    stop_all
    start_cloudpush_full
    bench cp-w2-10k-x10-bal "W2 broadcast 10k x 10/s through the balancer" --system cloudpush \
        --workload broadcast --ws "$bal" --pub-url "$CP_PUB" --conns 10000 --rates 10 \
        --duration 10 $sz --keep-going
    stop_all
    # The same two bridges, the generator spreading its clients over both:
    # the balancer's own share, apart from running two bridges on the cores.
    start_cloudpush_full
    bench cp-w2-10k-x10-2br "W2 broadcast 10k x 10/s, direct to the same 2 bridges" \
        --system cloudpush --workload broadcast \
        --ws "ws://127.0.0.1:$P_BR1/ws?channelId={id}" --ws "ws://127.0.0.1:$P_BR2/ws?channelId={id}" \
        --pub-url "$CP_PUB" --conns 10000 --rates 10 --duration 10 $sz --keep-going
    stop_all
    start_cloudpush
    bench cp-w2-5k-sat "W2 broadcast 5k, highest rate with p99 <= 100 ms" --system cloudpush \
        --workload broadcast --ws "$CP_WS" --pub-url "$CP_PUB" --conns 5000 --search 5:640 \
        --refine 3 --max-p99-ms 100 $sz
    stop_all
    start_cloudpush
    bench cp-w3-5k-http "W3 unicast 5k HTTP, highest rate with p99 <= 50 ms" --system cloudpush \
        --workload unicast --ws "$CP_WS" --pub-url "$CP_PUB" --conns 5000 --search 1000:64000 \
        --refine 3 --max-p99-ms 50 $sz
    stop_all
    start_cloudpush
    bench cp-w3-5k-mqtt "W3 unicast 5k via MQTT QoS 1, highest rate with p99 <= 50 ms" \
        --system cloudpush --workload unicast --publish mqtt --mqtt "tcp://127.0.0.1:$P_MQTT" \
        --pub-conns 1 --ws "$CP_WS" --conns 5000 --search 2000:128000 --refine 3 \
        --max-p99-ms 50 $sz
    stop_all
}

# Issue 14: one bridge on every core. The W2 row of the table with --workers
# 1 and 2 (nchan's row follows in run_nchan), each on a fresh system.
run_cloudpush_workers() {
    local w
    for w in 1 2; do
        CP_WORKERS=$w start_cloudpush
        bench "cp-w2-10k-x10-workers$w" "W2 broadcast 10k x 10/s, one bridge direct, --workers $w" \
            --system cloudpush --workload broadcast --ws "$CP_WS" --pub-url "$CP_PUB" \
            --conns 10000 --rates 10 --duration 10 --size 100 --keep-going
        stop_all
    done
}

# Issue 14: a flame graph per thread. W3 through the HTTP API at a fixed
# rate with history on; perf samples every server during the fixed step
# (cpu-clock: this guest has no hardware counters; DWARF call graphs: the
# binaries and libraries keep no frame pointers).
run_cloudpush_flame() {
    local rate=${CLOUDPUSH_BENCH_FLAME_RATE:-3000} name=cp-w3-5k-http-flame pids="" kv gen
    local names=()
    command -v perf >/dev/null || { say "--flame needs perf (Debian: linux-perf)"; exit 1; }
    CP_HISTORY=1 start_cloudpush
    for kv in $SERVER_PIDS; do
        case "$kv" in *=*) pids="$pids,${kv#*=}"; names+=("${kv#*=}=${kv%%=*}") ;; esac
    done
    bench "$name" "W3 unicast 5k HTTP at $rate/s, history on, under perf" --system cloudpush \
        --workload unicast --ws "$CP_WS" --pub-url "$CP_PUB" --conns 5000 --rates "$rate" \
        --duration 20 --size 100 --keep-going &
    gen=$!
    # The fixed step starts right after the warm-up's line (and a quiet wait).
    local deadline=$((SECONDS + 90))
    until grep -q "\[warmup\]" "$OUT/$name.log" 2>/dev/null || ((SECONDS > deadline)); do
        sleep 0.2
    done
    sleep 2
    perf record -F 199 --call-graph dwarf,8192 -e cpu-clock -o "$RUN/perf.data" \
        -p "${pids#,}" -- sleep 10 >"$RUN/perf.log" 2>&1 ||
        say "perf record failed: $(tail -2 "$RUN/perf.log")"
    wait "$gen" || true
    perf script -F comm,pid,tid,ip,sym,dso -i "$RUN/perf.data" 2>/dev/null |
        "$PY" "$ROOT/bench/flame.py" "$OUT/flame" --names "${names[@]}" >&2
    stop_all
}

# Issue 13: what the guarantees cost. W2 and W3 of the table with history
# off, then on (nchan's rows follow in run_nchan), each on a fresh system.
run_cloudpush_guarantees() {
    local h tag
    for h in 0 1; do
        tag=off
        [ "$h" = 1 ] && tag=on
        CP_HISTORY=$h start_cloudpush
        bench "cp-w2-10k-x10-history-$tag" "W2 broadcast 10k x 10/s, one bridge direct, history $tag" \
            --system cloudpush --workload broadcast --ws "$CP_WS" --pub-url "$CP_PUB" \
            --conns 10000 --rates 10 --duration 10 --size 100 --keep-going
        stop_all
        CP_HISTORY=$h start_cloudpush
        bench "cp-w3-5k-http-history-$tag" \
            "W3 unicast 5k HTTP, highest rate with p99 <= 50 ms, history $tag" --system cloudpush \
            --workload unicast --ws "$CP_WS" --pub-url "$CP_PUB" --conns 5000 \
            --search 1000:64000 --refine 3 --max-p99-ms 50 --size 100
        stop_all
    done
}

run_nchan_table() {
    local sz="--size 100"
    start_nchan
    bench nchan-w1-10k "W1 connect 10k" --system nchan --workload connect --ws "$NC_WS" \
        --status-url "$NC_STATUS" --conns 10000 --hold 5 --concurrency 1000
    stop_all
    start_nchan
    bench nchan-w2-10k-x10 "W2 broadcast 10k x 10/s" --system nchan --workload broadcast \
        --ws "$NC_WS" --pub-url "$NC_PUB" --status-url "$NC_STATUS" --conns 10000 --rates 10 \
        --duration 10 $sz --keep-going
    stop_all
    start_nchan
    bench nchan-w2-5k-sat "W2 broadcast 5k, highest rate with p99 <= 100 ms" --system nchan \
        --workload broadcast --ws "$NC_WS" --pub-url "$NC_PUB" --status-url "$NC_STATUS" \
        --conns 5000 --search 5:640 --refine 3 --max-p99-ms 100 $sz
    stop_all
    start_nchan
    bench nchan-w3-5k-http "W3 unicast 5k HTTP, highest rate with p99 <= 50 ms" --system nchan \
        --workload unicast --ws "$NC_WS" --pub-url "$NC_PUB" --status-url "$NC_STATUS" \
        --conns 5000 --search 1000:64000 --refine 3 --max-p99-ms 50 $sz
    stop_all
}

run_cloudpush() {
    local q=$1
    local bal="ws://127.0.0.1:$P_BAL/ws?channelId={id}"
    local br1="ws://127.0.0.1:$P_BR1/ws?channelId={id}" br2="ws://127.0.0.1:$P_BR2/ws?channelId={id}"
    if [ "$q" = table ]; then
        run_cloudpush_table
        return
    fi
    if [ "$q" = workers ]; then
        run_cloudpush_workers
        return
    fi
    if [ "$q" = guarantees ]; then
        run_cloudpush_guarantees
        return
    fi
    if [ "$q" = flame ]; then
        run_cloudpush_flame
        return
    fi
    if [ "$q" = smoke ]; then
        local mq="tcp://127.0.0.1:$P_MQTT"
        start_cloudpush
        bench cp-w1 "W1 connect+idle 50" --system cloudpush --workload connect --ws "$CP_WS" \
            --conns 50 --hold 0.5
        bench cp-w2-http "W2 broadcast 50 (HTTP sendToAll)" --system cloudpush --workload broadcast \
            --ws "$CP_WS" --pub-url "$CP_PUB" --conns 50 --rates 5 --duration 2
        bench cp-w2-mqtt "W2 broadcast 50 (MQTT cloudpush/broadcast)" --system cloudpush \
            --workload broadcast --publish mqtt --mqtt "$mq" --pub-conns 1 --ws "$CP_WS" --conns 50 \
            --rates 5 --duration 2
        bench cp-w3-http "W3 unicast 50 (HTTP)" --system cloudpush --workload unicast --ws "$CP_WS" \
            --pub-url "$CP_PUB" --conns 50 --rates 200 --duration 1
        bench cp-w3-mqtt "W3 unicast 50 (MQTT QoS 1 to the bus)" --system cloudpush --workload unicast \
            --publish mqtt --mqtt "$mq" --pub-conns 1 --ws "$CP_WS" --conns 50 --rates 200 --duration 1
        bench cp-w3-multi "W3 multi-recipient 50 (HTTP, 10 ids/request)" --system cloudpush \
            --workload multi --batch 10 --ws "$CP_WS" --pub-url "$CP_PUB" --conns 50 --rates 20 \
            --duration 1
        smoke_stop
        start_cloudpush_full
        bench cp-w4-balancer "W4 end to end via balancer 50" --system cloudpush --workload unicast \
            --ws "$bal" --pub-url "$CP_PUB" --conns 50 --rates 200 --duration 1
        bench cp-w4-direct "W4 end to end direct to 2 bridges 50" --system cloudpush \
            --workload unicast --ws "$br1" --ws "$br2" --pub-url "$CP_PUB" --conns 50 --rates 200 \
            --duration 1
        smoke_stop
        return
    fi
    if [ "$q" = quick ]; then
        start_cloudpush
        bench cp-w1-2k "W1 connect+idle 2k" --system cloudpush --workload connect --ws "$CP_WS" --conns 2000 --hold 1
        bench cp-w2-1k "W2 broadcast 1k (HTTP sendToAll)" --system cloudpush --workload broadcast \
            --ws "$CP_WS" --pub-url "$CP_PUB" --conns 1000 --rates 10,100 --duration 2 --drain 10
        bench cp-w3-http-1k "W3 unicast 1k (HTTP)" --system cloudpush --workload unicast \
            --ws "$CP_WS" --pub-url "$CP_PUB" --conns 1000 --rates 1000 --duration 2 --drain 10
        bench cp-w3-multi-1k "W3 multi-recipient 1k (HTTP, 100 ids/request)" --system cloudpush \
            --workload multi --batch 100 --ws "$CP_WS" --pub-url "$CP_PUB" --conns 1000 --rates 20 \
            --duration 2 --drain 10
        stop_all
        start_cloudpush_full
        bench cp-w4-balancer-1k "W4 end to end via balancer 1k" --system cloudpush --workload unicast \
            --ws "$bal" --pub-url "$CP_PUB" --conns 1000 --rates 500 --duration 2 --drain 10
        bench cp-w4-direct-1k "W4 end to end direct to 2 bridges 1k" --system cloudpush \
            --workload unicast --ws "$br1" --ws "$br2" --pub-url "$CP_PUB" --conns 1000 \
            --rates 500 --duration 2 --drain 10
        stop_all
        return
    fi
    local n
    for n in 1000 10000 19000; do
        start_cloudpush
        bench "cp-w1-$((n / 1000))k" "W1 connect+idle $n" --system cloudpush --workload connect \
            --ws "$CP_WS" --conns "$n" --hold 5 --concurrency 1000
        stop_all
    done
    start_cloudpush
    bench cp-w2-1k "W2 broadcast 1k (HTTP sendToAll)" --system cloudpush --workload broadcast \
        --ws "$CP_WS" --pub-url "$CP_PUB" --conns 1000 --rates 10,100 --search 100:12800 --refine 3
    stop_all
    start_cloudpush
    bench cp-w2-10k "W2 broadcast 10k (HTTP sendToAll)" --system cloudpush --workload broadcast \
        --ws "$CP_WS" --pub-url "$CP_PUB" --conns 10000 --rates 1,10 --search 2:256 --refine 3
    stop_all
    # The same with one bridge per core (half of the connections each), the
    # scaling docs/scaling.md prescribes and the counterpart of nchan's two workers.
    start_cloudpush 2
    bench cp-w2-1k-2br "W2 broadcast 1k, 2 bridges (HTTP sendToAll)" --system cloudpush \
        --workload broadcast --ws "$br1" --ws "$br2" --pub-url "$CP_PUB" --conns 1000 \
        --rates 10,100 --search 100:12800 --refine 3
    stop_all
    start_cloudpush 2
    bench cp-w2-10k-2br "W2 broadcast 10k, 2 bridges (HTTP sendToAll)" --system cloudpush \
        --workload broadcast --ws "$br1" --ws "$br2" --pub-url "$CP_PUB" --conns 10000 \
        --rates 1,10 --search 2:256 --refine 3
    stop_all
    search_then_half cp-w3-http-5k "W3 unicast 5k (HTTP, one id per request)" start_cloudpush \
        1000:64000 --system cloudpush --workload unicast --ws "$CP_WS" --pub-url "$CP_PUB" --conns 5000
    search_then_half cp-w3-mqtt-5k "W3 unicast 5k (MQTT QoS 1 straight to the bus)" start_cloudpush \
        1000:128000 --system cloudpush --workload unicast --publish mqtt \
        --mqtt "tcp://127.0.0.1:$P_MQTT" --pub-conns 1 --ws "$CP_WS" --conns 5000
    search_then_half cp-w3-multi-5k "W3 multi-recipient 5k (HTTP, 100 ids/request)" start_cloudpush \
        10:2560 --system cloudpush --workload multi --batch 100 --ws "$CP_WS" --pub-url "$CP_PUB" \
        --conns 5000
    search_then_half cp-w4-balancer-5k "W4 end to end via balancer 5k" start_cloudpush_full \
        500:64000 --system cloudpush --workload unicast --ws "$bal" --pub-url "$CP_PUB" --conns 5000
    search_then_half cp-w4-direct-5k "W4 end to end direct to 2 bridges 5k" start_cloudpush_full \
        500:64000 --system cloudpush --workload unicast --ws "$br1" --ws "$br2" --pub-url "$CP_PUB" \
        --conns 5000
}

run_nchan() {
    local q=$1
    if [ "$q" = table ]; then
        run_nchan_table
        return
    fi
    if [ "$q" = guarantees ]; then
        start_nchan
        bench nchan-w2-10k-x10 "W2 broadcast 10k x 10/s" --system nchan --workload broadcast \
            --ws "$NC_WS" --pub-url "$NC_PUB" --status-url "$NC_STATUS" --conns 10000 --rates 10 \
            --duration 10 --size 100 --keep-going
        stop_all
        start_nchan
        bench nchan-w3-5k-http "W3 unicast 5k HTTP, highest rate with p99 <= 50 ms" \
            --system nchan --workload unicast --ws "$NC_WS" --pub-url "$NC_PUB" \
            --status-url "$NC_STATUS" --conns 5000 --search 1000:64000 --refine 3 \
            --max-p99-ms 50 --size 100
        stop_all
        return
    fi
    if [ "$q" = workers ]; then
        start_nchan
        bench nchan-w2-10k-x10 "W2 broadcast 10k x 10/s" --system nchan --workload broadcast \
            --ws "$NC_WS" --pub-url "$NC_PUB" --status-url "$NC_STATUS" --conns 10000 --rates 10 \
            --duration 10 --size 100 --keep-going
        stop_all
        return
    fi
    if [ "$q" = smoke ]; then
        start_nchan
        bench nchan-w1 "W1 connect+idle 50" --system nchan --workload connect --ws "$NC_WS" \
            --status-url "$NC_STATUS" --conns 50 --hold 0.5
        bench nchan-w2 "W2 broadcast 50" --system nchan --workload broadcast --ws "$NC_WS" \
            --pub-url "$NC_PUB" --status-url "$NC_STATUS" --conns 50 --rates 5 --duration 2
        bench nchan-w3 "W3 unicast 50 (HTTP)" --system nchan --workload unicast --ws "$NC_WS" \
            --pub-url "$NC_PUB" --status-url "$NC_STATUS" --conns 50 --rates 200 --duration 1
        smoke_stop
        return
    fi
    if [ "$q" = quick ]; then
        start_nchan
        bench nchan-w1-2k "W1 connect+idle 2k" --system nchan --workload connect --ws "$NC_WS" \
            --status-url "$NC_STATUS" --conns 2000 --hold 1
        stop_all
        start_nchan
        bench nchan-w2-1k "W2 broadcast 1k" --system nchan --workload broadcast --ws "$NC_WS" \
            --pub-url "$NC_PUB" --status-url "$NC_STATUS" --conns 1000 --rates 10,100 --duration 2 \
            --drain 10
        stop_all
        return
    fi
    local n
    for n in 1000 10000 19000; do
        start_nchan
        bench "nchan-w1-$((n / 1000))k" "W1 connect+idle $n" --system nchan --workload connect \
            --ws "$NC_WS" --status-url "$NC_STATUS" --conns "$n" --hold 5 --concurrency 1000
        stop_all
    done
    start_nchan
    bench nchan-w2-1k "W2 broadcast 1k" --system nchan --workload broadcast --ws "$NC_WS" \
        --pub-url "$NC_PUB" --status-url "$NC_STATUS" --conns 1000 --rates 10,100 \
        --search 100:12800 --refine 3
    stop_all
    start_nchan
    bench nchan-w2-10k "W2 broadcast 10k" --system nchan --workload broadcast --ws "$NC_WS" \
        --pub-url "$NC_PUB" --status-url "$NC_STATUS" --conns 10000 --rates 1,10 --search 2:256 \
        --refine 3
    stop_all
    search_then_half nchan-w3-5k "W3 unicast 5k (HTTP)" start_nchan 1000:64000 --system nchan \
        --workload unicast --ws "$NC_WS" --pub-url "$NC_PUB" --status-url "$NC_STATUS" --conns 5000
}

run_mosquitto_ws() {
    local q=$1
    if [ "$q" = smoke ]; then
        start_mosquitto_ws
        bench mqws-w1 "W1 connect+idle 50" --system mosquitto-ws --workload connect --ws "$MQ_WS" \
            --conns 50 --hold 0.5
        bench mqws-w2 "W2 broadcast 50" --system mosquitto-ws --workload broadcast --ws "$MQ_WS" \
            --publish mqtt --mqtt "$MQ_TCP" --pub-conns 1 --conns 50 --rates 5 --duration 2
        bench mqws-w3 "W3 unicast 50 (MQTT QoS 1 publish)" --system mosquitto-ws --workload unicast \
            --ws "$MQ_WS" --publish mqtt --mqtt "$MQ_TCP" --pub-conns 1 --conns 50 --rates 200 \
            --duration 1
        smoke_stop
        return
    fi
    if [ "$q" = quick ]; then
        start_mosquitto_ws
        bench mqws-w1-2k "W1 connect+idle 2k" --system mosquitto-ws --workload connect --ws "$MQ_WS" \
            --conns 2000 --hold 1
        stop_all
        start_mosquitto_ws
        bench mqws-w2-1k "W2 broadcast 1k" --system mosquitto-ws --workload broadcast --ws "$MQ_WS" \
            --publish mqtt --mqtt "$MQ_TCP" --pub-conns 1 --conns 1000 --rates 10,100 --duration 2 \
            --drain 10
        stop_all
        return
    fi
    local n
    for n in 1000 10000 19000; do
        start_mosquitto_ws
        bench "mqws-w1-$((n / 1000))k" "W1 connect+idle $n" --system mosquitto-ws --workload connect \
            --ws "$MQ_WS" --conns "$n" --hold 5 --concurrency 1000
        stop_all
    done
    start_mosquitto_ws
    bench mqws-w2-1k "W2 broadcast 1k" --system mosquitto-ws --workload broadcast --ws "$MQ_WS" \
        --publish mqtt --mqtt "$MQ_TCP" --pub-conns 1 --conns 1000 --rates 10,100 \
        --search 100:12800 --refine 3
    stop_all
    start_mosquitto_ws
    bench mqws-w2-10k "W2 broadcast 10k" --system mosquitto-ws --workload broadcast --ws "$MQ_WS" \
        --publish mqtt --mqtt "$MQ_TCP" --pub-conns 1 --conns 10000 --rates 1,10 --search 2:256 \
        --refine 3
    stop_all
    search_then_half mqws-w3-5k "W3 unicast 5k (MQTT QoS 1 publish)" start_mosquitto_ws 1000:128000 \
        --system mosquitto-ws --workload unicast --ws "$MQ_WS" --publish mqtt --mqtt "$MQ_TCP" \
        --pub-conns 1 --conns 5000
}

# ------------------------------------------------------------ main
install_missing
build
if [ "$MODE" = smoke ]; then
    need() { # what the selected systems run; scripts/install-deps.sh installs all of it
        [ -e "$1" ] || command -v "$1" >/dev/null 2>&1 ||
            { say "bench/run.sh: $1 not found (scripts/install-deps.sh installs it: $2)"; exit 1; }
    }
    need curl curl
    has cloudpush && need mosquitto mosquitto && need redis-server redis-server
    has nchan && need nginx nginx && need /usr/lib/nginx/modules/ngx_nchan_module.so libnginx-mod-nchan
    has mosquitto-ws && need mosquitto mosquitto
    mkdir -p "$OUT"
    say "==> smoke run of $SYSTEMS on 127.0.0.1 ports $BASE-$((BASE + 885)), binaries in $BIN"
    has cloudpush && run_cloudpush smoke
    has nchan && run_nchan smoke
    has mosquitto-ws && run_mosquitto_ws smoke
    if [ ${#SMOKE_FAILED[@]} -gt 0 ]; then
        say "==> bench smoke FAILED (${#SMOKE_FAILED[@]} problem(s), $SMOKE_RUNS runs, $((SECONDS - T0)) s):"
        for f in "${SMOKE_FAILED[@]}"; do say "    $f"; done
        exit 1
    fi
    say "==> bench smoke passed: $SMOKE_RUNS runs, every message delivered once, in $((SECONDS - T0)) s"
    exit 0
fi
rm -rf "$OUT"
mkdir -p "$OUT"
{
    echo "command: bench/run.sh $([ "$MODE" != full ] && echo "--$MODE") --systems $SYSTEMS"
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet -- . ':!bench/results' ':!docs/benchmarks.md' 2>/dev/null || echo ' (with local changes)')"
    echo "cores: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "kernel: $(uname -r)"
    echo "fd limit: $(ulimit -Hn)"
    echo "generator processes: $PROCS"
} >"$OUT/run-info.txt"
say "==> running the $MODE set for $SYSTEMS (results: $OUT)"
has cloudpush && run_cloudpush "$MODE"
has nchan && run_nchan "$MODE"
[ "$MODE" != table ] && [ "$MODE" != workers ] && [ "$MODE" != guarantees ] && has mosquitto-ws && run_mosquitto_ws "$MODE"
echo "elapsed: $((SECONDS - T0)) s" >>"$OUT/run-info.txt"

"$PY" "$ROOT/bench/report.py" "$OUT" >"$OUT/summary.md"
if [ "$DOCS" = 1 ] && [ "$MODE" != flame ] && [ -f "$ROOT/docs/benchmarks.md" ]; then
    "$PY" "$ROOT/bench/report.py" --splice "$ROOT/docs/benchmarks.md" "$MODE" "$OUT/summary.md"
fi
say "==> done in $((SECONDS - T0)) s: $OUT/summary.md"
