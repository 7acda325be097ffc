#!/bin/sh
# Installs every Debian package cloudpush needs to build, run and test.
# Idempotent: packages already present are skipped by apt; safe to run twice.
# Usage: scripts/install-deps.sh [--run-only]
set -eu

BUILD_PKGS="build-essential cmake pkg-config clang libclang-rt-14-dev \
  libpaho-mqtt-dev libwebsockets-dev libcivetweb-dev civetweb libcjson-dev \
  libhiredis-dev libssl-dev uthash-dev libcmocka-dev libsystemd-dev liburing-dev"
RUN_PKGS="mosquitto mosquitto-clients redis-server redis-tools"
# nginx + libnginx-mod-nchan: the nchan peer of the benchmarks and of their
# smoke run in ctest (bench_smoke, bench/run.sh --smoke); never part of the stack.
TEST_PKGS="python3 python3-websockets python3-websocket python3-paho-mqtt \
  valgrind iproute2 procps curl chromium docker-compose nginx libnginx-mod-nchan"

# The compiler and libraries without clang (the fuzz targets only).
BUILD_RUN_PKGS="build-essential cmake pkg-config libpaho-mqtt-dev libwebsockets-dev \
  libcivetweb-dev civetweb libcjson-dev libhiredis-dev libssl-dev uthash-dev libcmocka-dev \
  libsystemd-dev liburing-dev curl"

case "${1:-}" in
  --run-only)
    # What scripts/run-stack.sh needs: build and run, no test toolchain
    # (chromium, clang, valgrind, nginx: ~0.7 GB).
    PKGS="$BUILD_RUN_PKGS $RUN_PKGS"
    ;;
  "")
    PKGS="$BUILD_PKGS $RUN_PKGS $TEST_PKGS"
    # The browser test runs playwright-core on Node.js (18 or newer); use
    # the machine's node when there is one, Debian's otherwise.
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
      PKGS="$PKGS nodejs npm"
    fi
    ;;
  *)
    echo "usage: $0 [--run-only]" >&2
    exit 2
    ;;
esac

# Root installs directly; a user is asked for sudo only when something is
# missing (the scripts themselves are never run with sudo, so build/ and
# .run/ stay the user's).
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

missing=""
for p in $PKGS; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done

# promtool (the monitoring/ tests) ships in Debian's prometheus package;
# installing that package would also start a Prometheus server, so its files
# are unpacked into .cache/ instead (a static binary: no dependencies).
fetch_promtool() {
  dir="$(cd "$(dirname "$0")/.." && pwd)/.cache/prometheus"
  [ -x "$dir/usr/bin/promtool" ] && return 0
  echo "install-deps: unpacking promtool from the prometheus package into $dir"
  tmp=$(mktemp -d)
  if ! (cd "$tmp" && apt-get download -q prometheus >/dev/null 2>&1); then
    $SUDO apt-get update -q
    (cd "$tmp" && apt-get download -q prometheus)
  fi
  mkdir -p "$dir"
  dpkg -x "$tmp"/prometheus_*.deb "$dir"
  rm -rf "$tmp"
}

if [ -z "$missing" ]; then
  echo "install-deps: all packages present"
  [ "${1:-}" = "--run-only" ] || fetch_promtool
  exit 0
fi

echo "install-deps: installing:$missing"
if [ -n "$SUDO" ] && ! command -v sudo >/dev/null 2>&1; then
  echo "install-deps: these packages are missing and installing them needs root: run" >&2
  echo "  apt-get install --no-install-recommends$missing" >&2
  echo "as root (or install sudo), then run this again." >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
[ "${1:-}" = "--run-only" ] || fetch_promtool
