#!/bin/sh
# The HTTP way: push to one client with curl, then wait for the client's
# receipt (its BUSINESS_ACK) on cloudpush/ack/# with mosquitto_sub.
#
#   examples/push.sh alice '{"hello":"from curl"}'
#
# CLOUDPUSH_API (http://127.0.0.1:18080) is the HTTP API, CLOUDPUSH_API_KEY
# its key when it has one; CLOUDPUSH_MQTT_HOST / CLOUDPUSH_MQTT_PORT
# (127.0.0.1:11883) the broker, for the receipt. Exits 0 once the receipt
# came, 1 otherwise.
set -eu
to=${1:-alice}
msg=${2:-'{"hello":"from curl"}'}
api=${CLOUDPUSH_API:-http://127.0.0.1:18080}
prefix=${CLOUDPUSH_PREFIX:-cloudpush}
timeout=${CLOUDPUSH_RECEIPT_TIMEOUT:-10}
receipts=$(mktemp)
trap 'rm -f "$receipts"; [ -n "${sub:-}" ] && kill "$sub" 2>/dev/null || true' EXIT

# Listen for receipts before pushing, so none is missed.
mosquitto_sub -h "${CLOUDPUSH_MQTT_HOST:-127.0.0.1}" -p "${CLOUDPUSH_MQTT_PORT:-11883}" \
    -q 1 -t "$prefix/ack/#" -W "$timeout" >"$receipts" 2>/dev/null &
sub=$!
sleep 0.3

auth=""
[ -n "${CLOUDPUSH_API_KEY:-}" ] && auth="Authorization: Bearer $CLOUDPUSH_API_KEY"
answer=$(curl -sS -H 'Content-Type: application/json' ${auth:+-H "$auth"} \
    -d "{\"to\":[\"$to\"],\"msg\":$msg}" "$api/api/v1/push")
echo "$answer"
# The messageId the API gave this push (one recipient: the only one).
mid=$(printf '%s' "$answer" | sed -n 's/.*"messageId":"\([0-9a-f]*\)".*/\1/p')
[ -n "$mid" ] || { echo "the push was not accepted" >&2; exit 1; }

end=$(( $(date +%s) + timeout ))
while [ "$(date +%s)" -le "$end" ]; do
    if grep -q "\"messageId\":\"$mid\"" "$receipts"; then
        echo "receipt $mid $(grep "\"messageId\":\"$mid\"" "$receipts" | head -n 1)"
        exit 0
    fi
    sleep 0.1
done
echo "no receipt for $mid within $timeout s (is $to connected and acknowledging?)" >&2
exit 1
