#!/bin/bash
# The balancer's benchmark (issue 14): the same two bridges measured direct
# and through the balancer, one generator process, 100-byte messages, each
# row on freshly started servers. "through the balancer" rows hand clients
# over to the (local) bridges, "relayed" rows turn that off
# (--handover-dir off) and measure the byte relay:
#   W2 broadcast 10 000 x 10/s, direct (2 bridges), handed over, relayed;
#   W1 connect 10 000, direct, handed over, relayed;
#   15 000 connections held through the balancer, the balancer under a
#   20 000-descriptor limit (prlimit), handed over and relayed.
# Results (JSON, logs, summary.md, table.md: bench/balancer_table.py) go to
# bench/results/balancer/.
#
# Usage: bench/balancer.sh [--quick] [--build DIR] [--only NAME[,NAME...]]
#   --quick   1 000 connections and 3 000 held: a check of the script, not a measurement
#   --build   build directory with bin/ (default: build)
#   --only    run only these rows (w2-direct, w2-bal, w2-relay, w1-direct, w1-bal, w1-relay,
#             hold-bal, hold-relay)
#   --keep    keep the servers' logs (the temporary directory) afterwards
# Environment: CLOUDPUSH_BENCH_PORT_BASE (default 30500: below the
# kernel's ephemeral range, away from run.sh's 31000), CLOUDPUSH_RELAY_WORKERS
# (the balancer's --relay-workers, default: one per core).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PATH=$PATH:/usr/sbin:/sbin
BUILD=$ROOT/build
QUICK=0
ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) QUICK=1 ;;
    --build) BUILD=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --keep) KEEP=1 ;;
    -h | --help) sed -n '2,/^[^#]/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/balancer.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
BIN=$BUILD/bin
BENCH=$BIN/cloudpush-bench
BASE=${CLOUDPUSH_BENCH_PORT_BASE:-30500}
P_BAL=$BASE P_BR1=$((BASE + 1)) P_BR2=$((BASE + 2)) P_HTTP=$((BASE + 80))
P_REDIS=$((BASE + 379)) P_MQTT=$((BASE + 883))
OUT=$ROOT/bench/results/balancer
RUN=$(mktemp -d /tmp/cloudpush-balbench.XXXXXX)
PIDS=$RUN/pids
mkdir -p "$OUT"
N=${CLOUDPUSH_BENCH_CONNS:-10000} HOLD=15000
[ "$QUICK" = 1 ] && N=1000 HOLD=3000

say() { printf '%s\n' "$*" >&2; }
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_tcp() {
    local deadline=$((SECONDS + $2))
    until port_in_use "$1"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}
wait_http() {
    local deadline=$((SECONDS + $2))
    until curl -fsS --max-time 1 "$1" 2>/dev/null | grep -q "${3:-}"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}
declare -A PID
start_bg() {
    local name=$1
    shift
    "$@" >"$RUN/$name.log" 2>&1 &
    echo "$! $name" >>"$PIDS"
    PID[$name]=$!
}
stop_all() {
    [ -s "$PIDS" ] || return 0
    local pid name
    tac "$PIDS" | while read -r pid name; do
        kill -TERM "$pid" 2>/dev/null || continue
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    : >"$PIDS"
}
trap 'stop_all; [ "${KEEP:-0}" = 1 ] && say "logs: $RUN" || rm -rf "$RUN"' EXIT

# Two bridges, the HTTP API, Redis and the bus; the balancer with
# prlimit's descriptor limit (its workers inherit it).
start_stack() {
    local nofile=${1:-} mode=${2:-handover}
    ulimit -n "$(ulimit -Hn)"
    local dir=$RUN/mq.$RANDOM
    mkdir -p "$dir" "$RUN/redis"
    sed "s/^listener 1883 127.0.0.1$/listener $P_MQTT 127.0.0.1/" "$ROOT/mosquitto/mosquitto.conf" \
        >"$dir/mosquitto.conf"
    echo "persistence_location $dir/" >>"$dir/mosquitto.conf"
    [ "$(id -u)" -eq 0 ] && echo "user root" >>"$dir/mosquitto.conf"
    start_bg mosquitto mosquitto -c "$dir/mosquitto.conf"
    start_bg redis redis-server --port "$P_REDIS" --bind 127.0.0.1 --save "" --appendonly no \
        --daemonize no --dir "$RUN/redis"
    wait_tcp "$P_MQTT" 10 && wait_tcp "$P_REDIS" 10 || { say "mosquitto/redis did not start"; exit 1; }
    local r="redis://127.0.0.1:$P_REDIS" i
    for i in 1 2; do
        start_bg "bridge$i" "$BIN/cloudpush-bridge" --listen "127.0.0.1:$((BASE + i))" \
            --id "balbench$i" --mqtt "tcp://127.0.0.1:$P_MQTT" --redis "$r" --deflate=false \
            --max-connections 20000 --log-level warn
    done
    start_bg httpapi "$BIN/cloudpush-httpapi" --listen "127.0.0.1:$P_HTTP" \
        --mqtt "tcp://127.0.0.1:$P_MQTT" --redis= --log-level warn
    local lim=() relay=()
    [ -n "$nofile" ] && lim=(prlimit "--nofile=$nofile:$nofile" --)
    [ "$mode" = relay ] && relay=(--handover-dir off)
    start_bg balancer "${lim[@]}" "$BIN/cloudpush-balancer" --listen "127.0.0.1:$P_BAL" \
        --redis "$r" --drain-seconds 1 --log-level info "${relay[@]}" \
        ${CLOUDPUSH_RELAY_WORKERS:+--relay-workers "$CLOUDPUSH_RELAY_WORKERS"}
    wait_http "http://127.0.0.1:$P_HTTP/readyz" 15 || { say "httpapi not ready"; exit 1; }
    # Ready: the bridge's bus is up (before that, upgrades get 503).
    for i in 1 2; do
        wait_http "http://127.0.0.1:$((BASE + i))/readyz" 15 || { say "bridge$i not ready"; exit 1; }
    done
    wait_http "http://127.0.0.1:$P_BAL/readyz" 15 '"bridges":2' ||
        { say "the balancer does not see both bridges"; cat "$RUN/balancer.log" >&2; exit 1; }
    SERVER_PIDS="--pid bridge1=${PID[bridge1]} --pid bridge2=${PID[bridge2]}"
    SERVER_PIDS="$SERVER_PIDS --pid balancer=${PID[balancer]} --pid mosquitto=${PID[mosquitto]}"
    SERVER_PIDS="$SERVER_PIDS --pid httpapi=${PID[httpapi]}"
    # A bridge serves from one worker process per core (--workers auto).
    local b w n
    for b in bridge1 bridge2; do
        sleep 0.2
        n=0
        for w in $(pgrep -P "${PID[$b]}"); do
            n=$((n + 1))
            SERVER_PIDS="$SERVER_PIDS --pid $b-w$n=$w"
        done
    done
    for i in $(pgrep -P "${PID[balancer]}"); do
        SERVER_PIDS="$SERVER_PIDS --pid relay-worker=$i"
    done
}

wanted() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }
for row in w2-direct w2-bal w2-relay w1-direct w1-bal w1-relay hold-bal hold-relay; do
    wanted "$row" && rm -f "$OUT/$row".*
done

bench() {
    local name=$1 label=$2
    shift 2
    say "--> $name: $label"
    # shellcheck disable=SC2086
    "$BENCH" --label "$label" --json "$OUT/$name.json" $SERVER_PIDS "$@" 2>"$OUT/$name.log" ||
        say "    $name: the generator exited $?"
    grep -E "connect:|\] rate|RSS per|of a core while" "$OUT/$name.log" | sed 's/^/    /' >&2 || true
    curl -fsS --max-time 2 "http://127.0.0.1:$P_BAL/metrics" 2>/dev/null |
        grep -E "^cloudpush_balancer_(relays|relay_capacity|descriptor_limited_total|relay_workers|handed_to_bridge_total|handover_failed_total) " \
            >"$OUT/$name.balancer-metrics" || true
}

DIRECT=(--ws "ws://127.0.0.1:$P_BR1/ws?channelId={id}" --ws "ws://127.0.0.1:$P_BR2/ws?channelId={id}")
BAL=(--ws "ws://127.0.0.1:$P_BAL/ws?channelId={id}")
PUB=(--pub-url "http://127.0.0.1:$P_HTTP/api/v1/push")
W2=(--system cloudpush --workload broadcast --conns "$N" --rates 10 --duration 10 --size 100
    --keep-going)
W1=(--system cloudpush --workload connect --conns "$N" --hold 5 --concurrency 1000)

{
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: $(git rev-parse --short HEAD)"
    echo "cores: $(nproc) (shared with the generator and other work on this machine)"
    echo "fd limit (hard): $(ulimit -Hn)"
} >"$OUT/run-info.txt"

if wanted w2-direct; then
    start_stack
    bench w2-direct "W2 broadcast $N x 10/s, direct (2 bridges)" "${W2[@]}" "${DIRECT[@]}" "${PUB[@]}"
    stop_all
fi
if wanted w2-bal; then
    start_stack
    bench w2-bal "W2 broadcast $N x 10/s through the balancer (handed over)" "${W2[@]}" "${BAL[@]}" \
        "${PUB[@]}"
    stop_all
fi
if wanted w2-relay; then
    start_stack "" relay
    bench w2-relay "W2 broadcast $N x 10/s through the balancer (relayed)" "${W2[@]}" "${BAL[@]}" \
        "${PUB[@]}"
    stop_all
fi
if wanted w1-direct; then
    start_stack
    bench w1-direct "W1 connect $N, direct (2 bridges)" "${W1[@]}" "${DIRECT[@]}"
    stop_all
fi
if wanted w1-bal; then
    start_stack
    bench w1-bal "W1 connect $N through the balancer (handed over)" "${W1[@]}" "${BAL[@]}"
    stop_all
fi
if wanted w1-relay; then
    start_stack "" relay
    bench w1-relay "W1 connect $N through the balancer (relayed)" "${W1[@]}" "${BAL[@]}"
    stop_all
fi
if wanted hold-bal; then
    start_stack 20000
    grep -E "descriptor limit|room for" "$RUN/balancer.log" | sed 's/^/    /' >&2 || true
    bench hold-bal "$HOLD held through the balancer (handed over), 20 000-descriptor limit" \
        --system cloudpush --workload connect --conns "$HOLD" --hold 10 --concurrency 1000 "${BAL[@]}"
    stop_all
fi
if wanted hold-relay; then
    start_stack 20000 relay
    bench hold-relay "$HOLD held through the balancer (relayed), 20 000-descriptor limit" \
        --system cloudpush --workload connect --conns "$HOLD" --hold 10 --concurrency 1000 "${BAL[@]}"
    stop_all
fi
"${PY:-python3}" "$ROOT/bench/report.py" "$OUT" >"$OUT/summary.md" 2>/dev/null ||
    say "(bench/report.py could not summarise $OUT)"
"${PY:-python3}" "$ROOT/bench/balancer_table.py" "$OUT" >"$OUT/table.md"
cat "$OUT/table.md" >&2
say "==> done: $OUT"
