#!/usr/bin/env python3
"""A Python service pushing to one client over the bus, and reading the
client's receipt (its BUSINESS_ACK) from cloudpush/ack/#.

    python3 examples/publish.py alice '{"hello":"from python"}'

Needs python3-paho-mqtt (Debian). The broker is CLOUDPUSH_MQTT_HOST:
CLOUDPUSH_MQTT_PORT (127.0.0.1:11883, the local stack of scripts/run-stack.sh),
optionally with CLOUDPUSH_MQTT_USER / CLOUDPUSH_MQTT_PASSWORD (the
cloudpush-service user of mosquitto/acl in production). Exits 0 once the
receipt came, 1 when none came within CLOUDPUSH_RECEIPT_TIMEOUT seconds (10).
"""
import json
import os
import sys
import time
import uuid

import paho.mqtt.client as mqtt

host = os.environ.get("CLOUDPUSH_MQTT_HOST", "127.0.0.1")
port = int(os.environ.get("CLOUDPUSH_MQTT_PORT", "11883"))
prefix = os.environ.get("CLOUDPUSH_PREFIX", "cloudpush")
timeout = float(os.environ.get("CLOUDPUSH_RECEIPT_TIMEOUT", "10"))
to = sys.argv[1] if len(sys.argv) > 1 else "alice"
msg = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {"hello": "from python"}

# Our own messageId: the client's receipt carries it back.
message_id = uuid.uuid4().hex
done = {"receipt": None}


def on_connect(client, userdata, flags, rc):
    if rc != 0:
        sys.exit("broker refused the connection: %s" % mqtt.connack_string(rc))
    # Receipts first, so none can be missed; the push goes out on SUBACK.
    client.subscribe(prefix + "/ack/#", qos=1)


def on_subscribe(client, userdata, mid, granted_qos):
    envelope = {"messageId": message_id, "from": "billing", "msg": msg}
    client.publish("%s/client/%s" % (prefix, to), json.dumps(envelope), qos=1)
    print("pushed %s to %s" % (message_id, to))


def on_message(client, userdata, m):
    receipt = json.loads(m.payload)
    if receipt.get("messageId") == message_id:
        done["receipt"] = receipt
        client.disconnect()


client = mqtt.Client(client_id="example-publisher-" + message_id[:8], clean_session=True)
if os.environ.get("CLOUDPUSH_MQTT_USER"):
    client.username_pw_set(os.environ["CLOUDPUSH_MQTT_USER"],
                           os.environ.get("CLOUDPUSH_MQTT_PASSWORD"))
client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
client.connect(host, port, keepalive=30)
client.loop_start()
deadline = time.monotonic() + timeout
while done["receipt"] is None and time.monotonic() < deadline:
    time.sleep(0.05)
client.loop_stop()
if done["receipt"] is None:
    sys.exit("no receipt for %s within %g s (is %s connected and acknowledging?)"
             % (message_id, timeout, to))
r = done["receipt"]
print("receipt %s from %s (session %s)" % (r["messageId"], r["from"], r.get("sessionId")))
