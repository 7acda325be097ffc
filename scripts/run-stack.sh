#!/bin/bash
# Sets everything up and runs the whole cloudpush stack on this machine, on
# loopback: installs the Debian packages, builds, starts mosquitto,
# redis-server, two bridges, the balancer and the HTTP API with the demo
# console, prints how to use them, and stops everything on Ctrl-C.
#
# Usage: scripts/run-stack.sh [run|status|stop]
#   run     (default) start in the foreground; Ctrl-C stops everything
#   status  show what runs and whether each component is healthy
#   stop    stop a stack started by another shell
#
# Ports (override with the environment variables shown):
#   CLOUDPUSH_MQTT_PORT=11883   mosquitto (the bus)
#   CLOUDPUSH_BRIDGE1_PORT=19001, CLOUDPUSH_BRIDGE2_PORT=19002   bridges (WebSocket + /healthz + /metrics)
#   CLOUDPUSH_HTTP_PORT=18080   HTTP push API and demo console
#   CLOUDPUSH_REDIS_PORT=16379  redis-server (bridge registry and presence)
#   CLOUDPUSH_BALANCER_PORT=18000  balancer (route API and WebSocket entry /ws)
# Logs and state: .run/ in the checkout (CLOUDPUSH_RUN_DIR).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUN_DIR=${CLOUDPUSH_RUN_DIR:-$ROOT/.run}
LOG_DIR=$RUN_DIR/logs
MQTT_PORT=${CLOUDPUSH_MQTT_PORT:-11883}
BRIDGE_PORTS=("${CLOUDPUSH_BRIDGE1_PORT:-19001}" "${CLOUDPUSH_BRIDGE2_PORT:-19002}")
HTTP_PORT=${CLOUDPUSH_HTTP_PORT:-18080}
REDIS_PORT=${CLOUDPUSH_REDIS_PORT:-16379}
BALANCER_PORT=${CLOUDPUSH_BALANCER_PORT:-18000}
BIN=$ROOT/build/bin

say() { printf '%s\n' "$*"; }

pids_file() { echo "$RUN_DIR/pids"; }

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_http_ok() { # url seconds
    local url=$1 deadline=$((SECONDS + $2))
    while ((SECONDS < deadline)); do
        if curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}

wait_tcp() { # port seconds
    local deadline=$((SECONDS + $2))
    while ((SECONDS < deadline)); do
        port_in_use "$1" && return 0
        sleep 0.1
    done
    return 1
}

stop_all() {
    local f
    f=$(pids_file)
    [ -f "$f" ] || return 0
    # Bridges first (they close their sessions and leave the bus cleanly),
    # then the broker.
    tac "$f" | while read -r pid name; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            if kill -0 "$pid" 2>/dev/null; then
                say "  $name (pid $pid) did not stop in 5 s; killing it"
                kill -KILL "$pid" 2>/dev/null || true
            fi
            say "  stopped $name"
        fi
    done
    rm -f "$f"
}

status() {
    local f
    f=$(pids_file)
    if [ ! -f "$f" ]; then
        say "cloudpush: not running (no $f)"
        return 1
    fi
    while read -r pid name; do
        if kill -0 "$pid" 2>/dev/null; then state=running; else state=DEAD; fi
        say "  $name pid $pid: $state"
    done <"$f"
    for p in "${BRIDGE_PORTS[@]}"; do
        printf '  bridge :%s /healthz -> %s\n' "$p" \
            "$(curl -s --max-time 1 "http://127.0.0.1:$p/healthz" || echo unreachable)"
    done
    printf '  balancer :%s /healthz -> %s\n' "$BALANCER_PORT" \
        "$(curl -s --max-time 1 "http://127.0.0.1:$BALANCER_PORT/healthz" || echo unreachable)"
    printf '  httpapi :%s /readyz -> %s\n' "$HTTP_PORT" \
        "$(curl -s --max-time 1 "http://127.0.0.1:$HTTP_PORT/readyz" || echo unreachable)"
}

start_bg() { # name logfile cmd...
    local name=$1 log=$2
    shift 2
    "$@" >"$log" 2>&1 &
    echo "$! $name" >>"$(pids_file)"
}

run() {
    "$ROOT/scripts/install-deps.sh" --run-only
    say "==> building"
    cmake -S "$ROOT" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$ROOT/build" -j"$(nproc)" --target cloudpush-bridge cloudpush-httpapi \
        cloudpush-balancer >/dev/null

    if [ -f "$(pids_file)" ]; then
        say "cloudpush: a stack seems to run already (see '$0 status'); stopping it first"
        stop_all
    fi
    for p in "$MQTT_PORT" "$REDIS_PORT" "${BRIDGE_PORTS[@]}" "$BALANCER_PORT" "$HTTP_PORT"; do
        if port_in_use "$p"; then
            say "cloudpush: port $p on 127.0.0.1 is already in use."
            say "  Free it or choose other ports, e.g. CLOUDPUSH_MQTT_PORT=21883 CLOUDPUSH_BRIDGE1_PORT=29001 CLOUDPUSH_BRIDGE2_PORT=29002 CLOUDPUSH_HTTP_PORT=28080 CLOUDPUSH_REDIS_PORT=26379 CLOUDPUSH_BALANCER_PORT=28000 $0"
            exit 1
        fi
    done
    mkdir -p "$LOG_DIR" "$RUN_DIR/mosquitto" "$RUN_DIR/redis"
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    trap 'say ""; say "==> stopping"; stop_all; exit 0' INT TERM HUP
    trap 'stop_all' EXIT

    # The broker: the repository's dev config on our port, state in .run/.
    local conf=$RUN_DIR/mosquitto/mosquitto.conf
    sed "s/^listener 1883 127.0.0.1$/listener $MQTT_PORT 127.0.0.1/" \
        "$ROOT/mosquitto/mosquitto.conf" >"$conf"
    echo "persistence_location $RUN_DIR/mosquitto/" >>"$conf"
    [ "$(id -u)" -eq 0 ] && echo "user root" >>"$conf"
    start_bg mosquitto "$LOG_DIR/mosquitto.log" mosquitto -c "$conf"
    wait_tcp "$MQTT_PORT" 10 || { say "mosquitto did not start; see $LOG_DIR/mosquitto.log"; exit 1; }

    # The registry: a cache, nothing to keep across runs.
    start_bg redis "$LOG_DIR/redis.log" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
        --save "" --appendonly no --daemonize no --dir "$RUN_DIR/redis"
    wait_tcp "$REDIS_PORT" 10 || { say "redis-server did not start; see $LOG_DIR/redis.log"; exit 1; }
    local redis_url="redis://127.0.0.1:$REDIS_PORT"

    local i=1
    for p in "${BRIDGE_PORTS[@]}"; do
        start_bg "bridge$i" "$LOG_DIR/bridge$i.log" "$BIN/cloudpush-bridge" \
            --listen "127.0.0.1:$p" --id "bridge$i" --mqtt "tcp://127.0.0.1:$MQTT_PORT" \
            --redis "$redis_url" --drain-seconds 2 # stop_all waits 5 s
        i=$((i + 1))
    done
    start_bg balancer "$LOG_DIR/balancer.log" "$BIN/cloudpush-balancer" \
        --listen "127.0.0.1:$BALANCER_PORT" --redis "$redis_url"
    local bridge_urls=""
    for p in "${BRIDGE_PORTS[@]}"; do
        bridge_urls="$bridge_urls${bridge_urls:+,}ws://127.0.0.1:$p/ws"
    done
    start_bg httpapi "$LOG_DIR/httpapi.log" "$BIN/cloudpush-httpapi" \
        --listen "127.0.0.1:$HTTP_PORT" --mqtt "tcp://127.0.0.1:$MQTT_PORT" \
        --redis "$redis_url" --console-bridges "$bridge_urls" \
        --console-balancer "ws://127.0.0.1:$BALANCER_PORT/ws"
    for p in "${BRIDGE_PORTS[@]}"; do
        wait_http_ok "http://127.0.0.1:$p/healthz" 15 ||
            { say "bridge on $p is not healthy; see $LOG_DIR"; exit 1; }
    done
    wait_http_ok "http://127.0.0.1:$HTTP_PORT/readyz" 15 ||
        { say "the HTTP API is not ready; see $LOG_DIR/httpapi.log"; exit 1; }
    local deadline=$((SECONDS + 10))
    until curl -fsS --max-time 1 "http://127.0.0.1:$BALANCER_PORT/api/v1/route?channelId=probe" \
        >/dev/null 2>&1; do
        ((SECONDS < deadline)) || { say "the balancer sees no bridge; see $LOG_DIR"; exit 1; }
        sleep 0.2
    done

    cat <<INFO

cloudpush is running (logs: $LOG_DIR)
  demo console    http://127.0.0.1:$HTTP_PORT/
  push API        http://127.0.0.1:$HTTP_PORT/api/v1/push   (/healthz /readyz /metrics)
  balancer        ws://127.0.0.1:$BALANCER_PORT/ws?channelId=alice   (route API: http://127.0.0.1:$BALANCER_PORT/api/v1/route?channelId=alice)
  MQTT bus        tcp://127.0.0.1:$MQTT_PORT
  Redis           redis://127.0.0.1:$REDIS_PORT
  bridge1         ws://127.0.0.1:${BRIDGE_PORTS[0]}/ws?channelId=alice   (health: http://127.0.0.1:${BRIDGE_PORTS[0]}/healthz, metrics: /metrics)
  bridge2         ws://127.0.0.1:${BRIDGE_PORTS[1]}/ws?channelId=bob

Try it: open the console, connect as "alice", then push to alice:
  curl -s -H 'Content-Type: application/json' -d '{"to":["alice"],"msg":{"hello":"world"}}' http://127.0.0.1:$HTTP_PORT/api/v1/push
  mosquitto_pub -p $MQTT_PORT -q 1 -t cloudpush/client/alice -m '{"msg":{"hello":"from MQTT"}}'

Press Ctrl-C to stop everything.
INFO
    while true; do
        # Sleep in the background so Ctrl-C/SIGTERM are handled at once.
        sleep 2 &
        wait $! || true
        while read -r pid name; do
            if ! kill -0 "$pid" 2>/dev/null; then
                say "cloudpush: $name (pid $pid) exited; see $LOG_DIR/$name.log. Stopping."
                exit 1
            fi
        done <"$(pids_file)"
    done
}

case "${1:-run}" in
run) run ;;
status) status ;;
stop) stop_all ;;
-h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' ;;
*)
    say "usage: $0 [run|status|stop]"
    exit 2
    ;;
esac
