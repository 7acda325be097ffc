#!/bin/sh
# Entrypoint of the cloudpush image: the first argument chooses the program.
#
#   bridge   [FLAGS...]   cloudpush-bridge    (the image's default CMD)
#   httpapi  [FLAGS...]   cloudpush-httpapi
#   balancer [FLAGS...]   cloudpush-balancer
#   help                  this text
#   anything else         run as a command (e.g. "sh", "cloudpush-bridge --help")
#
# Configuration comes from CLOUDPUSH_* environment variables (each program's
# --help lists them) or from flags after the program name; a flag wins over
# its variable. The program replaces this script (exec), so it receives
# SIGTERM from "docker stop" directly and shuts down cleanly.
set -eu

usage() {
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
}

if [ $# -eq 0 ]; then
    set -- bridge
fi

case "$1" in
    bridge | httpapi | balancer)
        prog="cloudpush-$1"
        shift
        exec "$prog" "$@"
        ;;
    cloudpush-bridge | cloudpush-httpapi | cloudpush-balancer)
        exec "$@"
        ;;
    help | -h | --help)
        usage
        exit 0
        ;;
    -*)
        echo "cloudpush: the first argument must be bridge, httpapi or balancer (got '$1')" >&2
        usage >&2
        exit 2
        ;;
    *)
        exec "$@"
        ;;
esac
