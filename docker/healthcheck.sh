#!/bin/bash
# Health check of the cloudpush image (its HEALTHCHECK, and the compose
# file's healthchecks): GET PATH on the cloudpush program running in this
# container; exit 0 for an HTTP 200, 1 otherwise (the answer is printed,
# docker inspect shows it).
#
# usage: cloudpush-healthcheck [PATH]        (default /healthz)
#
#   bridge    /healthz  200 while the broker is connected
#   httpapi   /readyz   200 while the broker (and Redis, with --redis) answer;
#             /healthz  200 while the process runs
#   balancer  /healthz  200 while the process runs
#
# The address is the program's own: its --listen flag, else its
# CLOUDPUSH_LISTEN variable, else its default port; a wildcard host
# (0.0.0.0) is checked on 127.0.0.1. A program with a TLS certificate
# (--tls-cert or CLOUDPUSH_TLS_CERT) is asked over TLS (openssl s_client,
# without verifying its certificate: this only checks the answer), any other
# with bash's /dev/tcp (the slim image has no curl). The program is the
# cloudpush-* process of the container (HEALTHCHECK_PID=N names one).
set -u

path=${1:-/healthz}
case "$path" in
    /*) ;;
    *)
        echo "usage: cloudpush-healthcheck [PATH]" >&2
        exit 2
        ;;
esac

pid=${HEALTHCHECK_PID:-}
if [ -z "$pid" ]; then
    for d in /proc/[0-9]*; do
        argv0=
        IFS= read -r -d '' argv0 2>/dev/null <"$d/cmdline" || true
        case "${argv0##*/}" in
            cloudpush-bridge | cloudpush-httpapi | cloudpush-balancer)
                pid=${d#/proc/}
                break
                ;;
        esac
    done
fi
if [ -z "$pid" ] || [ ! -r "/proc/$pid/cmdline" ]; then
    echo "unhealthy: no cloudpush program runs in this container" >&2
    exit 1
fi

args=()
mapfile -d '' args 2>/dev/null <"/proc/$pid/cmdline"
if [ ${#args[@]} -eq 0 ]; then
    echo "unhealthy: process $pid is gone" >&2
    exit 1
fi
role=${args[0]##*/}
case "$role" in
    cloudpush-bridge) listen=0.0.0.0:9001 ;;
    cloudpush-httpapi) listen=0.0.0.0:8080 ;;
    cloudpush-balancer) listen=0.0.0.0:8000 ;;
    *)
        echo "unhealthy: process $pid is '${args[0]}', not a cloudpush program" >&2
        exit 1
        ;;
esac

# A flag wins over the variable, as in the programs; the last flag wins.
listen_flag='' tls_flag='' tls_flag_seen=''
for ((i = 1; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
        --listen) listen_flag=${args[i + 1]:-} ;;
        --listen=*) listen_flag=${args[i]#--listen=} ;;
        --tls-cert)
            tls_flag=${args[i + 1]:-}
            tls_flag_seen=1
            ;;
        --tls-cert=*)
            tls_flag=${args[i]#--tls-cert=}
            tls_flag_seen=1
            ;;
    esac
done
listen_env='' tls_env=''
while IFS= read -r -d '' kv; do
    case "$kv" in
        CLOUDPUSH_LISTEN=?*) listen_env=${kv#CLOUDPUSH_LISTEN=} ;;
        CLOUDPUSH_TLS_CERT=*) tls_env=${kv#CLOUDPUSH_TLS_CERT=} ;;
    esac
done 2>/dev/null <"/proc/$pid/environ"
if [ -n "$listen_flag" ]; then
    listen=$listen_flag
elif [ -n "$listen_env" ]; then
    listen=$listen_env
fi
tls=$tls_env
if [ -n "$tls_flag_seen" ]; then
    tls=$tls_flag
fi

host=${listen%:*}
port=${listen##*:}
host=${host#[}
host=${host%]}
case "$host" in
    "" | 0.0.0.0 | "*") host=127.0.0.1 ;;
    ::) host=::1 ;;
esac

printf -v request 'GET %s HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n\r\n' "$path" "$host" "$port"
if [ -n "$tls" ]; then
    if ! command -v openssl >/dev/null; then
        echo "unhealthy: $role serves TLS and openssl is not installed" >&2
        exit 1
    fi
    case "$host" in
        *:*) target="[$host]:$port" ;;
        *) target="$host:$port" ;;
    esac
    # -quiet: no certificate or session details, and wait for the server to
    # close (Connection: close) after the request.
    response=$(printf '%s' "$request" | timeout 4 openssl s_client -quiet -connect "$target" 2>/dev/null)
    scheme=https
else
    if ! { exec 3<>"/dev/tcp/$host/$port"; } 2>/dev/null; then
        echo "unhealthy: $role does not accept connections on $host:$port" >&2
        exit 1
    fi
    printf '%s' "$request" >&3
    response=$(timeout 4 cat <&3 2>/dev/null)
    exec 3<&-
    scheme=http
fi
status_line=${response%%$'\n'*}
status_line=${status_line%$'\r'}
body=${response##*$'\n'}
echo "$role $scheme://$host:$port$path: ${status_line:-no answer} ${body%$'\r'}"
case "$status_line" in
    "HTTP/1."[01]" 200"*) exit 0 ;;
    *) exit 1 ;;
esac
