#!/bin/sh
# Sets everything up and runs every test: installs the Debian packages,
# runs the suite (unit + integration) built with AddressSanitizer and
# UndefinedBehaviorSanitizer, runs the libFuzzer targets briefly, then builds
# with -Werror and runs the whole suite again; ctest's summary comes last.
#
# Usage: scripts/test.sh [--quick]   (--quick: only the plain build and suite)
set -eu

cd "$(dirname "$0")/.."
ROOT=$(pwd)
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1

"$ROOT/scripts/install-deps.sh"
echo "==> npm ci (browser test driver, Node.js publisher example)"
(cd "$ROOT/tests/browser" && npm ci --no-audit --no-fund --loglevel=error)
(cd "$ROOT/examples/node" && npm ci --no-audit --no-fund --loglevel=error)

JOBS=$(nproc 2>/dev/null || echo 2)
# ctest runs that many tests at once: every test takes free ports of its own,
# and load runs (bench_smoke) are marked RUN_SERIAL.
# Connection tests need descriptors; raise the soft limit as far as allowed.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

configure_and_build() {
    dir=$1
    shift
    echo "==> configure $dir: $*"
    cmake -S "$ROOT" -B "$ROOT/$dir" -DCLOUDPUSH_WERROR=ON "$@" >/dev/null
    echo "==> build $dir"
    cmake --build "$ROOT/$dir" -j"$JOBS"
}

status=0
if [ "$QUICK" -eq 0 ]; then
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    configure_and_build build-asan -DCMAKE_BUILD_TYPE=Debug -DCLOUDPUSH_SANITIZE=ON
    echo "==> test build-asan (ASan + UBSan)"
    (cd "$ROOT/build-asan" && ctest -j"$JOBS" --output-on-failure --timeout 300) || status=1

    configure_and_build build-fuzz -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
        -DCLOUDPUSH_SANITIZE=ON -DCLOUDPUSH_FUZZ=ON
    echo "==> fuzz smoke runs"
    (cd "$ROOT/build-fuzz" && ctest --output-on-failure -L fuzz) || status=1
    unset ASAN_OPTIONS UBSAN_OPTIONS
fi

configure_and_build build -DCMAKE_BUILD_TYPE=RelWithDebInfo
echo "==> test build"
(cd "$ROOT/build" && ctest -j"$JOBS" --output-on-failure --timeout 300) || status=1
exit $status
